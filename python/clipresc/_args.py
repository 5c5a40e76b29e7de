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

from ._messages import counted

Unreachable = Literal["saturate", "raise"]
UNREACHABLE_MODES: tuple[str, ...] = ("saturate", "raise")


# 8- and 16-bit images: how to bring them to floats, and the bounds that then apply
_IMAGE_SCALE = {"uint8": ("8-bit", "255"), "uint16": ("16-bit", "65535")}


def not_float_message(name: str, dtype_name: str, cli: bool = False) -> str:
    """The message for ``name`` (``x`` or ``delta``) of a dtype that is not a real float; for
    integer dtypes it says how to convert (with ``cli``, in the command line's terms).

    >>> not_float_message("x", "uint8")  # doctest: +NORMALIZE_WHITESPACE
    'x must be a real floating-point array; got dtype uint8 (for 8-bit images, use
    x.astype(np.float32) / 255 with bounds=(0, 1), or x.astype(np.float32) with
    bounds=(0, 255))'
    >>> not_float_message("delta", "int64")  # doctest: +NORMALIZE_WHITESPACE
    'delta must be a real floating-point array; got dtype int64 (convert it first, e.g.
    delta.astype(np.float32): integer arrays are not converted implicitly)'
    """
    msg = f"{name} must be a real floating-point array; got dtype {dtype_name}"
    if name == "x" and dtype_name in _IMAGE_SCALE:
        bits, top = _IMAGE_SCALE[dtype_name]
        if cli:
            return (
                f"{msg} (save {bits} images as float32: x.astype(np.float32) / {top} "
                f"with --bounds 0 1, or x.astype(np.float32) with --bounds 0 {top})"
            )
        return (
            f"{msg} (for {bits} images, use x.astype(np.float32) / {top} with bounds=(0, 1), "
            f"or x.astype(np.float32) with bounds=(0, {top}))"
        )
    if dtype_name.startswith(("int", "uint")):
        if cli:
            return f"{msg} (save it as float32 or float64, e.g. {name}.astype(np.float32))"
        return (
            f"{msg} (convert it first, e.g. {name}.astype(np.float32): integer arrays are not "
            "converted implicitly)"
        )
    return msg


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
        raise TypeError(not_float_message(name, str(dt)))
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
        raise TypeError(f"p must be a real number; got {type(p).__name__}{_static_p_hint(p)}")
    pf = float(p)
    if math.isnan(pf) or pf <= 0:
        raise ValueError(f"p must be a positive number or inf; got {p!r}")
    return pf


def _static_p_hint(p: Any) -> str:
    """For an array ``p`` (a tracer above all), why it must be a Python number and how."""
    if not hasattr(p, "shape"):
        return ""
    hint = (
        "; p must be a static Python number (e.g. 2.0 or math.inf): it selects the "
        "algorithm, so it cannot be an array or a traced value"
    )
    if "Tracer" in type(p).__name__:
        return (
            f"{hint}. Under jax.jit mark it static (static_argnums / static_argnames) or "
            "bind it with functools.partial"
        )
    return f"{hint}; pass float(p), or under tf.function / torch.compile a Python number"


def parse_unreachable(unreachable: Any) -> Unreachable:
    """Validate the ``unreachable`` mode.

    >>> parse_unreachable("raise")
    'raise'
    """
    if unreachable not in UNREACHABLE_MODES:
        raise ValueError(f"unreachable must be 'saturate' or 'raise'; got {unreachable!r}")
    return unreachable  # type: ignore[no-any-return]


_AXIS_TYPE = "axis must be an int or a tuple of ints (or None, or 'all': one vector); got {axis!r}"

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
        raise ValueError("x must have at least one dimension")
    if axis is None:
        return tuple(range(1, ndim)) if ndim > 1 else (0,)
    if isinstance(axis, str):
        if axis != "all":
            raise TypeError(_AXIS_TYPE.format(axis=axis))
        return tuple(range(ndim))
    raw = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    if not raw:
        raise ValueError("axis must name at least one axis")
    out = []
    for a in raw:
        try:
            ai = operator.index(a)
        except TypeError:
            raise TypeError(_AXIS_TYPE.format(axis=axis)) from None
        if not -ndim <= ai < ndim:
            raise ValueError(f"axis {ai} is out of range for x with {counted(ndim, 'dimension')}")
        out.append(ai % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis contains duplicates: {axis!r}")
    return tuple(sorted(out))
