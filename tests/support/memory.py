"""For the tests of the ``out=`` paths: how much memory a call allocates, and the refused
``out`` arguments."""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

import numpy as np


def peak_traced_bytes(fn: Callable[[], object]) -> int:
    """The peak of the memory Python's allocators (NumPy's included) hand out during
    ``fn()``.

    >>> peak_traced_bytes(lambda: bytearray(1 << 20)) >= 1 << 20
    True
    """
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def out_argument_cases(second: str) -> list[tuple[Callable[..., Any], type, str]]:
    """``(make_out, exception, message)`` for the ``out=`` argument errors of a call on a
    ``(3, 4)`` float32 ``x`` whose second array is named ``second`` and whose lower bound
    is an array: ``make_out(x, second_array, lower)`` builds the refused ``out``.

    >>> [m for _, _, m in out_argument_cases("z")][-2:]
    ['out must not overlap z', 'out must not overlap lower']
    """
    return [
        (lambda x, a, lo: x.tolist(), TypeError, "out must be a NumPy array; got list"),
        (
            lambda x, a, lo: np.empty((2, 3), np.float32),
            ValueError,
            r"out must have x's shape \(3, 4\)",
        ),
        (
            lambda x, a, lo: np.empty((3, 4), np.float64),
            TypeError,
            "out must have x's dtype float32",
        ),
        (lambda x, a, lo: x, ValueError, "out must not overlap x"),
        (lambda x, a, lo: a, ValueError, f"out must not overlap {second}"),
        (lambda x, a, lo: a[::-1], ValueError, f"out must not overlap {second}"),
        (lambda x, a, lo: lo, ValueError, "out must not overlap lower"),
    ]
