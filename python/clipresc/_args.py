"""Argument checking shared by every backend: dtypes, axes, ``p``, ``unreachable``.

Every check raises with a message that names the argument and says what is wrong.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Unreachable = Literal["saturate", "raise"]
UNREACHABLE_MODES: tuple[str, ...] = ("saturate", "raise")


def check_real_dtype(dtype: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` is float16, float32 or float64.

    >>> check_real_dtype(np.dtype("float32"), "x")
    >>> check_real_dtype(np.dtype("int64"), "x")
    Traceback (most recent call last):
    ...
    TypeError: x must be a real floating-point array; got dtype int64
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"{name} must be a real floating-point array; got dtype {dt}")
    if dt.itemsize > 8:
        raise TypeError(f"{name} has dtype {dt}; clipresc supports float16, float32 and float64")


def work_dtype(dtype: Any) -> np.dtype[Any]:
    """The dtype the core computes in: float64 for float64 input, float32 otherwise.

    >>> work_dtype(np.float16)
    dtype('float32')
    """
    dt = np.dtype(dtype)
    return np.dtype(np.float64) if dt.itemsize == 8 else np.dtype(np.float32)


def parse_p(p: Any) -> float:
    """Validate the norm exponent: any real ``p > 0`` or ``inf``.

    >>> parse_p(2), parse_p(float("inf"))
    (2.0, inf)
    """
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number; got {type(p).__name__}")
    pf = float(p)
    if math.isnan(pf) or pf <= 0:
        raise ValueError(f"p must be a positive number or inf; got {p!r}")
    return pf


def parse_unreachable(unreachable: Any) -> Unreachable:
    """Validate the ``unreachable`` mode.

    >>> parse_unreachable("raise")
    'raise'
    """
    if unreachable not in UNREACHABLE_MODES:
        raise ValueError(f"unreachable must be 'saturate' or 'raise'; got {unreachable!r}")
    return unreachable  # type: ignore[no-any-return]


def vector_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Normalise ``axis`` to a sorted tuple of non-negative axes forming one vector.

    The default is every axis but the first (axis 0 is the batch); a 1-D input is one vector.

    >>> vector_axes(None, 4), vector_axes(-1, 3), vector_axes((0, 2), 3), vector_axes(None, 1)
    ((1, 2, 3), (2,), (0, 2), (0,))
    """
    if ndim == 0:
        raise ValueError("x must have at least one dimension")
    if axis is None:
        return tuple(range(1, ndim)) if ndim > 1 else (0,)
    raw = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    if not raw:
        raise ValueError("axis must name at least one axis")
    out = []
    for a in raw:
        try:
            ai = operator.index(a)
        except TypeError:
            raise TypeError(f"axis must be an int or a tuple of ints; got {axis!r}") from None
        if not -ndim <= ai < ndim:
            raise ValueError(f"axis {ai} is out of range for x with {ndim} dimensions")
        out.append(ai % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis contains duplicates: {axis!r}")
    return tuple(sorted(out))
