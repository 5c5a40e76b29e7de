"""The warning for scales beyond the range of the caller's dtype."""

from __future__ import annotations

import os
import sys
import warnings

from ._errors import eta_overflow_message

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package (the user's call)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def warn_eta_overflow(count: int, rows: int, dtype_name: str) -> None:
    """Warn that ``count`` of ``rows`` scales overflow ``dtype_name`` (returned as inf).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_eta_overflow(1, 4, "float16")
    >>> print(w[0].message)  # doctest: +ELLIPSIS
    eta exceeds the range of float16 for 1 of 4 vectors and is returned as inf...
    """
    if count == 0:
        return
    warnings.warn(
        eta_overflow_message(count, rows, dtype_name),
        RuntimeWarning,
        stacklevel=_caller_stacklevel(),
    )
