"""What one call asks for, understood once for every array library.

:func:`describe` runs the checks that need no data (the dtypes of ``x`` and ``delta``,
``p``, ``unreachable``, the shapes, ``axis``) in one order and returns a :class:`Call`:
the layout of the vectors, the dtypes, ``p`` and the mode. Every backend and framework
starts from it; they differ only in how they convert and check their arrays. The result
is cached per argument tuple, so a loop of calls on arrays of one shape pays for the
checks once.

``split_bounds`` and :func:`arg_shapes` read the ``bounds`` argument and the shapes the
cotangents of ``eps`` and the bounds must take, for every library alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import _errors
from ._args import Unreachable, check_real_dtype, parse_p, parse_unreachable, vector_axes
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
) -> Call:
    xd = _check_dtype(x_dtype, "x", numpy)
    dd = _check_dtype(delta_dtype, "delta", numpy)
    pf = parse_p(p)
    mode = parse_unreachable(unreachable)
    xs, ds = tuple(x_shape), tuple(delta_shape)
    if xs != ds:
        raise _errors.shape_mismatch(ds, xs)
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
    axis: int | Sequence[int] | None,
    unreachable: Any,
    numpy: bool = True,
) -> Call:
    """Check the arguments that need no data and describe the call.

    ``x_dtype`` / ``delta_dtype``: NumPy dtypes, or any library's dtype (then ``numpy``
    is ``False``, and bfloat16 is accepted). Raises with the messages of
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
            x_shape, x_dtype, delta_shape, delta_dtype, (type(p), p), axis, unreachable, numpy
        )
    except TypeError:
        # unhashable (a list axis), or the TypeError of a check: run it uncached
        return _describe(x_shape, x_dtype, delta_shape, delta_dtype, p, axis, unreachable, numpy)


@functools.lru_cache(maxsize=512)
def _describe_cached(
    xs: Shape, xd: Any, ds: Shape, dd: Any, typed_p: tuple[type, Any], *rest: Any
) -> Call:
    """:func:`_describe`, cached; ``p`` comes as ``(type, value)``."""
    return _describe(xs, xd, ds, dd, typed_p[1], *rest)


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


def eps_fits(shape: tuple[int, ...], layout: Layout) -> bool:
    """Whether an ``eps`` of ``shape`` is a scalar or holds one value per vector.

    >>> lay = Layout.of((3, 2), (1,))
    >>> eps_fits((3,), lay), eps_fits((2,), lay), eps_fits((3, 1), lay)
    (True, False, True)
    """
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == layout.rows):
        return True
    return fits(shape, layout.eta_shape)


def shared_shape(layout: Layout) -> tuple[int, ...]:
    """The shape of a bound shared by every vector: ``x``'s with the batch axes at 1.

    >>> shared_shape(Layout.of((4, 2, 3), (1, 2)))
    (1, 2, 3)
    """
    return tuple(1 if a in layout.batch_axes else s for a, s in enumerate(layout.shape))


def rows_of(shape: Shape, axes: tuple[int, ...]) -> int:
    """The number of vectors of an ``x`` of ``shape`` with vector axes ``axes``."""
    return math.prod(int(s or 0) for a, s in enumerate(shape) if a not in axes)
