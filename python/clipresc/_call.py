"""What one call asks for, understood once for every array library.

:func:`describe` runs the checks that need no data (the dtypes of ``x`` and ``delta``,
``p``, ``unreachable``, the shapes, ``axis``) in one order and returns a :class:`Call`:
the layout of the vectors, the dtypes, ``p`` and the mode. Every backend and framework
starts from it; they differ only in how they convert and check their arrays. The result
is cached per argument tuple, so a loop of calls on arrays of one shape pays for the
checks once.

The other functions check ``eps`` and ``bounds`` as far as their metadata allow (dtype,
shape, number or array), for every library alike; the checks of their values belong to
the path that holds the values (:mod:`clipresc._prepare`, :mod:`clipresc._prepare_xp`).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import _errors
from ._args import Axis, Unreachable, check_real_dtype, parse_p, parse_unreachable, vector_axes
from ._layout import Layout

Shape = tuple[Union[int, None], ...]


@dataclass(frozen=True)
class Call:
    """The checked description of a call: no arrays, only what they are.

    ``layout`` is ``None`` when some size of ``x`` is not known yet (TensorFlow graphs).

    >>> c = describe((2, 3), "float32", (2, 3), "float32", 2, None, "saturate")
    >>> c.layout.rows, c.layout.n, c.p, c.unreachable, c.work_dtype
    (2, 3, 2.0, 'saturate', dtype('float32'))
    """

    ndim: int
    vec_axes: tuple[int, ...]
    layout: Layout | None
    x_dtype: str
    """The caller's dtype of ``x``, spelled as NumPy does (``float32``, ``bfloat16``)."""
    delta_dtype: str
    p: float
    unreachable: Unreachable
    work_dtype: np.dtype[Any]
    """The dtype the core computes in: float64 for float64 ``x``, float32 otherwise."""


_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def dtype_name(dt: Any) -> str:
    """A dtype's plain name as NumPy spells it (``torch.float32`` and TensorFlow's
    ``tf.float32`` -> ``float32``).

    >>> dtype_name(np.dtype(">f4")), dtype_name("float64")
    ('float32', 'float64')
    """
    if isinstance(dt, np.dtype):
        return dt.name
    name = getattr(dt, "name", None)
    if isinstance(name, str):
        return name
    return str(dt).rsplit(".", 1)[-1]


def _check_dtype(dt: Any, what: str, numpy: bool) -> str:
    """The dtype's name; ``TypeError`` unless it is float16/32/64 (or, outside NumPy,
    bfloat16, which the frameworks compute in float32)."""
    name = dtype_name(dt)
    if name == "bfloat16" and not numpy:
        return name
    if isinstance(dt, np.dtype):
        check_real_dtype(dt, what)
        return name
    try:
        npdt = np.dtype(name)
    except TypeError:
        raise _errors.not_float(what, name) from None
    check_real_dtype(npdt, what)
    return name


def _describe(
    x_shape: Shape,
    x_dtype: Any,
    delta_shape: Shape,
    delta_dtype: Any,
    p: Any,
    axis: Any,
    unreachable: Any,
    numpy: bool,
    delta_name: str = "delta",
) -> Call:
    xd = _check_dtype(x_dtype, "x", numpy)
    dd = _check_dtype(delta_dtype, delta_name, numpy)
    pf = parse_p(p)
    mode = parse_unreachable(unreachable)
    xs, ds = tuple(x_shape), tuple(delta_shape)
    if xs != ds:
        raise _errors.shape_mismatch(ds, xs, delta_name)
    axes = vector_axes(axis, len(xs))
    known = all(s is not None for s in xs)
    layout = Layout.of(xs, axes) if known else None  # type: ignore[arg-type]
    return Call(len(xs), axes, layout, xd, dd, pf, mode, _F64 if xd == "float64" else _F32)


def describe(
    x_shape: Shape,
    x_dtype: Any,
    delta_shape: Shape,
    delta_dtype: Any,
    p: Any,
    axis: Axis,
    unreachable: Any,
    numpy: bool = True,
    delta_name: str = "delta",
) -> Call:
    """Check the arguments that need no data and describe the call.

    ``x_dtype`` / ``delta_dtype``: NumPy dtypes, or any library's dtype (then ``numpy``
    is ``False``, and bfloat16 is accepted). ``delta_name``: what messages call the second
    array (``"z"`` for :func:`clipresc.project`). Raises with the messages of
    :mod:`clipresc._errors`, in this order: dtype of ``x``, of ``delta``, ``p``,
    ``unreachable``, the shapes, ``axis``.

    >>> describe((4,), "float64", (4,), "float64", float("inf"), None, "raise").vec_axes
    (0,)
    >>> describe((2, 3), "float32", (3, 2), "float32", 2, None, "saturate")
    Traceback (most recent call last):
    ...
    ValueError: delta must have the same shape as x; got (3, 2) and (2, 3)
    """
    try:
        # the type of p is part of the key: True == 1, but a bool p is refused
        return _describe_cached(
            x_shape,
            x_dtype,
            delta_shape,
            delta_dtype,
            (type(p), p),
            axis,
            unreachable,
            numpy,
            delta_name,
        )
    except TypeError:
        # unhashable (a list axis), or the TypeError of a check: run it uncached
        return _describe(
            x_shape, x_dtype, delta_shape, delta_dtype, p, axis, unreachable, numpy, delta_name
        )


@functools.lru_cache(maxsize=512)
def _describe_cached(
    xs: Shape, xd: Any, ds: Shape, dd: Any, typed_p: tuple[type, Any], *rest: Any
) -> Call:
    """:func:`_describe`, cached; ``p`` comes as ``(type, value)``."""
    return _describe(xs, xd, ds, dd, typed_p[1], *rest)


def number_bounds(bounds: Any) -> bool:
    """Whether ``bounds`` is a tuple of two Python floats, the common call: nothing to
    convert or check.

    >>> number_bounds((0.0, 1.0)), number_bounds((0, 1)), number_bounds(None)
    (True, False, False)
    """
    return (
        type(bounds) is tuple
        and len(bounds) == 2
        and type(bounds[0]) is float
        and type(bounds[1]) is float
    )


def split_bounds(bounds: Any) -> tuple[Any, Any]:
    """``(lower, upper)`` of a ``bounds`` argument (``None`` sides for ``bounds=None``).

    >>> split_bounds(None), split_bounds((0, None))
    ((None, None), (0, None))
    """
    if bounds is None:
        return None, None
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise _errors.bounds_not_pair()
    return bounds[0], bounds[1]


def check_meta(
    x_dtype: str,
    d_dtype: str,
    x_shape: tuple[int, ...],
    d_shape: tuple[int, ...],
    p: Any,
    unreachable: Any,
    axis: Any,
) -> tuple[float, str, tuple[int, ...]]:
    """The checks that need no data, in the NumPy path's order; returns ``(p, mode, axes)``.

    >>> check_meta("float32", "float32", (2, 3), (2, 3), 2, "saturate", None)
    (2.0, 'saturate', (1,))
    """
    call = describe(
        tuple(x_shape), x_dtype, tuple(d_shape), d_dtype, p, axis, unreachable, numpy=False
    )
    return call.p, str(call.unreachable), call.vec_axes


def scalar_side(value: Any, side: str) -> float | None:
    """``value`` as a float when it is ``None`` (``-inf``/``+inf``) or a Python/NumPy real
    number or 0-d NumPy array; ``None`` when it is an array (of any framework).

    >>> scalar_side(None, "lower"), scalar_side(1, "upper"), scalar_side(np.zeros(3), "upper")
    (-inf, 1.0, None)
    """
    if value is None:
        return -math.inf if side == "lower" else math.inf
    if isinstance(value, (bool, np.bool_)):
        raise _errors.bound_not_real(side, "bool")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        if value.dtype.kind not in "fiu":
            raise _errors.bound_not_real(side, str(value.dtype))
        return float(value)
    return None


def check_side_array(side: str, dtype_name: str, shape: tuple[int, ...], x_shape: Any) -> None:
    """Dtype and broadcast checks of an array bound (messages as the NumPy path).

    >>> check_side_array("lower", "float32", (4,), (2, 3))
    Traceback (most recent call last):
    ...
    ValueError: bounds: lower of shape (4,) does not broadcast to x's shape (2, 3)
    """
    if dtype_name != "bfloat16":
        try:
            kind: str = np.dtype(dtype_name).kind
        except TypeError:
            kind = "?"
        if kind not in "fiu":
            raise _errors.bound_not_real(side, dtype_name)
    xs = tuple(int(s) for s in x_shape)
    bs = tuple(int(s) for s in shape)
    if not fits(bs, xs):
        raise _errors.bound_shape(side, bs, xs)


def check_eps_dtype(dtype_name: str) -> None:
    """Reject non-real ``eps`` arrays like the NumPy path.

    >>> check_eps_dtype("complex64")
    Traceback (most recent call last):
    ...
    TypeError: eps must be a real number or array of real numbers; got dtype complex64
    """
    if dtype_name == "bfloat16":
        return
    try:
        kind: str = np.dtype(dtype_name).kind
    except TypeError:
        kind = "?"
    if kind not in "fiu":
        raise _errors.eps_not_real(f"dtype {dtype_name}")


def fits(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` (no more dimensions).

    >>> fits((3,), (2, 3)), fits((2,), (2, 3)), fits((1, 2, 3), (2, 3))
    (True, False, False)
    """
    if len(shape) > len(target):
        return False
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def eps_fits(shape: tuple[int, ...], rows: int, eta_shape: tuple[int, ...]) -> bool:
    """Whether an ``eps`` of ``shape`` is a scalar or holds one value per vector.

    >>> eps_fits((3,), 3, (3, 1)), eps_fits((2,), 3, (3, 1)), eps_fits((3, 1), 3, (3, 1))
    (True, False, True)
    """
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == rows):
        return True
    return fits(shape, eta_shape)
