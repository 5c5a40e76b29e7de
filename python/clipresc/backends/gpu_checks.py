"""Validation on the GPU paths: whether it runs, and what the kernels' error word means.

The CUDA kernels validate their inputs inside their first pass and OR the problems they
find into a one-element int32 error word (``clipresc.kernels.ERR_BITS``); the caller reads
that word once per call (one host synchronisation). When it is not 0 the exact host-side
checks run again to build the error the NumPy path raises (same message, count and first
index): that costs more synchronisations, but only on the way to an exception.

No-check mode (inside :func:`unchecked`, or with the environment variable
``CLIPRESC_GPU_CHECKS=0``) launches the kernels without the word and reads nothing back,
so a call makes no host synchronisation and can be captured in a CUDA graph. Invalid
inputs (NaN, infinities, x outside its bounds, negative eps) then give unspecified
results instead of an exception. ``unreachable="raise"`` still needs the per-row flags,
so it still synchronises: use ``"saturate"`` inside graphs.

>>> checks_enabled()
True
>>> with unchecked():
...     checks_enabled()
False
>>> problems(ERR_BITS["x non-finite"] | ERR_BITS["unreachable"])
['x non-finite', 'unreachable']
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator

from ..kernels import ERR_BITS

__all__ = ["ENV", "ERR_BITS", "checks_enabled", "problems", "settle", "unchecked"]

#: Environment variable that turns the GPU checks off when set to ``0``.
ENV = "CLIPRESC_GPU_CHECKS"

_UNCHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "clipresc_unchecked", default=False
)
_DATA_BITS = sum(v for k, v in ERR_BITS.items() if k != "unreachable")


def checks_enabled() -> bool:
    """Whether GPU calls validate values (and so synchronise once per call)."""
    return not _UNCHECKED.get() and os.environ.get(ENV, "1") != "0"


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Run the GPU paths without value checks and without host synchronisation."""
    token = _UNCHECKED.set(True)
    try:
        yield
    finally:
        _UNCHECKED.reset(token)


def problems(word: int) -> list[str]:
    """The names of the bits set in an error word, in ``ERR_BITS`` order."""
    return [name for name, bit in ERR_BITS.items() if word & bit]


def settle(
    word: int,
    exact_checks: Callable[[], object],
    raise_unreachable: Callable[[], object] | None = None,
) -> None:
    """Act on an error word read back from the kernels.

    Data problems: ``exact_checks()`` (the host-side checks, which raise the NumPy path's
    error) runs; if it finds nothing the word and the checks disagree, a bug reported as
    ``RuntimeError``. The unreachable bit: ``raise_unreachable()`` runs when given (the
    caller passes it for ``unreachable="raise"``).

    >>> settle(0, lambda: 1 / 0)  # nothing reported: the host checks do not run
    >>> settle(ERR_BITS["eps infinite"], lambda: None)
    Traceback (most recent call last):
    ...
    RuntimeError: the GPU kernels reported ['eps infinite'] but the host checks found nothing
    """
    if word & _DATA_BITS:
        exact_checks()
        raise RuntimeError(
            f"the GPU kernels reported {problems(word & _DATA_BITS)} but the host checks "
            "found nothing"
        )
    if word & ERR_BITS["unreachable"] and raise_unreachable is not None:
        raise_unreachable()
