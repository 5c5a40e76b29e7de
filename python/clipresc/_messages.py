"""Counts in messages: every "N things" in an error or warning text is built here, so that
one thing is never "1 things"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` followed by ``noun``, in the plural (``plural``, else ``noun + "s"``) unless
    ``n`` is 1.

    >>> counted(1, "non-finite value"), counted(3, "value"), counted(0, "position")
    ('1 non-finite value', '3 values', '0 positions')
    >>> counted(1, "dimension"), counted(2, "axis", "axes")
    ('1 dimension', '2 axes')
    """
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
