"""Argument checking shared by every backend: dtypes, axes, ``p``, ``unreachable``, and how
lists of Python ints are read.

Every check raises with a message that names the argument and says what is wrong.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np

from . import _errors

Unreachable = Literal["saturate", "raise"]
UNREACHABLE_MODES: tuple[str, ...] = ("saturate", "raise")


def _python_numbers(value: Any) -> bool:
    """Whether every leaf of the nested lists or tuples ``value`` is a Python int or float."""
    if isinstance(value, (list, tuple)):
        return all(_python_numbers(v) for v in value)
    return type(value) is int or type(value) is float


def float_lists(value: Any) -> Any:
    """``value``, except that (nested) lists or tuples of Python ints become lists of floats.

    NumPy's float functions read such lists as float64 (``np.sqrt([1, 2])``), and so does
    clipresc for ``x`` and ``delta``. Arrays of an integer dtype (NumPy's, a framework's, or
    lists of them) are left as they are and refused later: converting a uint8 image
    silently would keep its 0..255 range against the default bounds (0, 1).

    >>> float_lists([[1, 2]]), float_lists((1, 2.5)), float_lists([True, False])
    ([[1.0, 2.0]], (1, 2.5), [True, False])
    """
    if not isinstance(value, (list, tuple)):
        return value
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):  # ragged or not numbers: the later checks say what
        return value
    if kind in "iu" and _python_numbers(value):
        return np.asarray(value, dtype=np.float64).tolist()
    return value


def check_real_dtype(dtype: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` is float16, float32 or float64.

    >>> check_real_dtype(np.dtype("float32"), "x")
    >>> check_real_dtype(np.dtype("bool"), "x")
    Traceback (most recent call last):
    ...
    TypeError: x must be a real floating-point array; got dtype bool
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise _errors.not_float(name, str(dt))
    if dt.itemsize > 8:
        raise _errors.too_wide(name, str(dt))


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
        raise _errors.p_not_real(p)
    pf = float(p)
    if math.isnan(pf) or pf <= 0:
        raise _errors.p_not_positive(p)
    return pf


def parse_unreachable(unreachable: Any) -> Unreachable:
    """Validate the ``unreachable`` mode.

    >>> parse_unreachable("raise")
    'raise'
    """
    if unreachable not in UNREACHABLE_MODES:
        raise _errors.bad_unreachable(unreachable)
    return unreachable  # type: ignore[no-any-return]


Axis = Union[int, Sequence[int], Literal["all"], None]
"""The ``axis`` argument: ``None`` (every axis but the first), an axis, several, or ``"all"``."""


def vector_axes(axis: Axis, ndim: int) -> tuple[int, ...]:
    """Normalise ``axis`` to a sorted tuple of non-negative axes forming one vector.

    The default is every axis but the first (axis 0 is the batch); a 1-D input is one vector.
    ``"all"``: the whole array is one vector (one example, e.g. inside ``vmap``).

    >>> vector_axes(None, 4), vector_axes(-1, 3), vector_axes((0, 2), 3), vector_axes(None, 1)
    ((1, 2, 3), (2,), (0, 2), (0,))
    >>> vector_axes("all", 3)
    (0, 1, 2)
    """
    if ndim == 0:
        raise _errors.no_dimensions()
    if axis is None:
        return tuple(range(1, ndim)) if ndim > 1 else (0,)
    if isinstance(axis, str):
        if axis != "all":
            raise _errors.axis_not_int(axis)
        return tuple(range(ndim))
    raw = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    if not raw:
        raise _errors.no_axis()
    out = []
    for a in raw:
        try:
            ai = operator.index(a)
        except TypeError:
            raise _errors.axis_not_int(axis) from None
        if not -ndim <= ai < ndim:
            raise _errors.axis_out_of_range(ai, ndim)
        out.append(ai % ndim)
    if len(set(out)) != len(out):
        raise _errors.axis_duplicates(axis)
    return tuple(sorted(out))
