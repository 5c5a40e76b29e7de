"""Argument checks and the core's ``(rows, n)`` layout for arrays of any array-API namespace.

The counterpart of :mod:`clipresc._prepare` for arrays that stay in their own library (the
pure array-API backend, CuPy): the same checks in the same order with the same messages.
Checks that need only shapes and dtypes always run; checks of the values (NaN, infinity,
``x`` outside its bounds, negative ``eps``, ``lower > upper``) run when the namespace can
give concrete values and are skipped for traced arrays (e.g. under ``jax.jit``), where
nothing can be raised about data that does not exist yet.

Only shape arithmetic uses NumPy; the arrays themselves are handled through ``xp``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _errors
from ._args import Unreachable
from ._call import Call, describe, eps_fits, fits
from ._layout import Layout, reduce_to

Array = Any


def dtype_name(dt: Any) -> str:
    """A dtype's plain name, as NumPy spells it (``torch.float32`` -> ``float32``).

    >>> dtype_name(np.dtype("int64"))
    'int64'
    """
    return str(dt).rsplit(".", 1)[-1]


def is_number(v: Any) -> bool:
    """A Python or NumPy real number (not ``bool``), as opposed to an array.

    >>> is_number(1.5), is_number(np.float32(2)), is_number(True), is_number(np.ones(2))
    (True, True, False, False)
    """
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def to_bool(v: Any) -> bool | None:
    """``bool(v)`` for a concrete 0-d array; ``None`` when there is no value (tracers)."""
    try:
        return bool(v)
    except Exception:  # jax's ConcretizationTypeError and friends
        return None


def _count_first(
    xp: Any, mask: Array, index: Callable[[int], tuple[int, ...]]
) -> tuple[int, tuple[int, ...]]:
    count = int(xp.sum(xp.astype(mask, xp.int64)))
    flat = xp.reshape(mask, (-1,))
    first = int(xp.argmax(xp.astype(flat, xp.int32)))
    return count, index(first)


def _raise_if(
    xp: Any,
    mask: Array,
    error: Callable[[int, tuple[int, ...]], ValueError],
    index: Callable[[int], tuple[int, ...]] | None = None,
) -> None:
    """Raise ``error(count, first_index)`` when ``mask`` has a true entry."""
    if not to_bool(xp.any(mask)):
        return
    shape = tuple(mask.shape)

    def c_index(flat: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()

    count, first = _count_first(xp, mask, index or c_index)
    raise error(count, first)


@dataclass(frozen=True)
class ArgShapes:
    """What the cotangents must look like: the caller's ``eps`` and bounds."""

    eps: tuple[int, ...] | None
    """``eps``'s shape, ``None`` for a Python number."""
    eps_per_row: bool
    """``eps`` is 1-D with one value per vector (no broadcasting)."""
    eps_dtype: Any
    lower: tuple[int, ...] | None
    """An array bound's shape; ``None`` for a number or ``None`` (no cotangent)."""
    lower_dtype: Any
    upper: tuple[int, ...] | None
    upper_dtype: Any


def arg_shapes(eps: Any, bounds: Any, layout: Layout) -> ArgShapes:
    """The shapes and dtypes of the caller's ``eps`` and array bounds (after the checks)."""

    def meta(v: Any) -> tuple[tuple[int, ...] | None, Any]:
        if v is None or is_number(v) or isinstance(v, (list, tuple)):
            if isinstance(v, (list, tuple)):
                a = np.asarray(v)
                return tuple(a.shape), None
            return None, None
        return tuple(int(s) for s in v.shape), getattr(v, "dtype", None)

    es, edt = meta(eps)
    lo, lodt = meta(bounds[0]) if bounds is not None else (None, None)
    hi, hidt = meta(bounds[1]) if bounds is not None else (None, None)
    per_row = es is not None and len(es) == 1 and es[0] == layout.rows
    return ArgShapes(es, per_row, edt, lo, lodt, hi, hidt)


@dataclass
class XProblem:
    """Checked inputs in the core's layout, in the caller's namespace."""

    xp: Any
    layout: Layout
    dtype: Any
    """The caller's dtype of ``x`` (results come back in it)."""
    delta_dtype: Any
    x: Array
    """``(rows, n)`` in x's dtype."""
    delta: Array
    """``(rows, n)`` in x's dtype."""
    eps: Array
    """``(rows,)`` in x's dtype."""
    p: float
    lower: float | Array
    """A float (``+-inf`` for none), a shared ``(n,)`` or a full ``(rows, n)`` array."""
    upper: float | Array
    unreachable: Unreachable
    shapes: ArgShapes


def check_eps_type(xp: Any, eps: Any) -> None:
    """``TypeError`` unless ``eps`` is a number, a list or a real array (no values read)."""
    if is_number(eps) or isinstance(eps, (list, tuple)):
        return
    if not (hasattr(eps, "shape") and hasattr(eps, "dtype")):
        raise _errors.eps_not_real(str(type(eps)))
    if not xp.isdtype(eps.dtype, ("real floating", "integral")):
        raise _errors.eps_not_real(f"dtype {dtype_name(eps.dtype)}")


def check_eps_values(xp: Any, e: Array) -> None:
    """The value checks of ``eps`` in the NumPy path's order (negative or NaN, infinite)."""
    _raise_if(xp, (e < 0) | (e != e), _errors.negative_eps)
    _raise_if(
        xp,
        (e == math.inf) | (e == -math.inf),
        _errors.infinite_eps,
    )


def check_eps_shape(shape: tuple[int, ...], layout: Layout) -> None:
    """``eps`` has one value, one per vector, or a shape that broadcasts to ``eta``'s."""
    if not eps_fits(shape, layout.rows, layout.eta_shape):
        raise _errors.eps_shape(layout.rows, shape)


def _parse_eps(xp: Any, eps: Any, layout: Layout, like: Array) -> Array:
    check_eps_type(xp, eps)
    if is_number(eps) or isinstance(eps, (list, tuple)):
        e = xp.asarray(np.asarray(eps, dtype=np.float64), device=_device(like))
    else:
        e = eps
    check_eps_values(xp, e)
    rows = layout.rows
    shape = tuple(int(s) for s in e.shape)
    check_eps_shape(shape, layout)
    if len(shape) == 0:
        return xp.broadcast_to(xp.astype(e, like.dtype), (rows,))
    if len(shape) == 1 and shape[0] == rows:
        return xp.astype(e, like.dtype)
    full = xp.broadcast_to(xp.astype(e, like.dtype), layout.eta_shape)
    return xp.reshape(full, (rows,))


def _device(a: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(a)


def check_bound_type(xp: Any, a: Array, side: str) -> None:
    """``TypeError`` unless the array bound ``a`` is real (no values read)."""
    if not xp.isdtype(a.dtype, ("real floating", "integral")):
        raise _errors.bound_not_real(side, dtype_name(a.dtype))


def check_bound_nan(xp: Any, a: Array, side: str) -> None:
    """The value check of an array bound: no NaN."""
    _raise_if(xp, a != a, lambda c, i: _errors.bad_values(f"bounds: {side}", "NaN", c, i))


def check_bound_shape(a: Array, side: str, layout: Layout) -> None:
    """An array bound's shape broadcasts to ``x``'s."""
    shape = tuple(int(s) for s in a.shape)
    if not fits(shape, layout.shape):
        raise _errors.bound_shape(side, shape, layout.shape)


def _parse_side(
    xp: Any, value: Any, side: str, default: float, layout: Layout, like: Array
) -> tuple[float | Array, Array | float]:
    """One side in the core's form, and the caller's values (for the crossing check)."""
    if value is None:
        return default, default
    if is_number(value):
        return float(value), float(value)
    if isinstance(value, (bool, np.bool_)):
        raise _errors.bound_not_real(side, "bool")
    a = value
    if isinstance(value, (list, tuple)):
        a = xp.asarray(np.asarray(value), device=_device(like))
    check_bound_type(xp, a, side)
    check_bound_nan(xp, a, side)
    check_bound_shape(a, side, layout)
    shape = tuple(int(s) for s in a.shape)
    nd = len(layout.shape)
    aw = xp.astype(a, like.dtype)
    padded = xp.reshape(aw, (1,) * (nd - len(shape)) + shape)
    if all(padded.shape[ax] == 1 for ax in layout.batch_axes):
        shared = layout.shared
        row = shared.to_rows_xp(xp, xp.broadcast_to(padded, shared.shape))
        return xp.reshape(row, (layout.n,)), a
    return layout.to_rows_xp(xp, xp.broadcast_to(padded, layout.shape)), a


def describe_arrays(
    x: Array, delta: Array, p: Any, axis: int | Sequence[int] | None, unreachable: Any
) -> tuple[Call, Layout]:
    """The checks of a call on arrays that read no values (:func:`clipresc._call.describe`)
    and its layout.

    >>> import numpy as np
    >>> describe_arrays(np.zeros((2, 3)), np.ones((2, 3)), 2.0, None, "saturate")[1].rows
    2
    """
    xs, ds = tuple(int(s) for s in x.shape), tuple(int(s) for s in delta.shape)
    call = describe(xs, x.dtype, ds, delta.dtype, p, axis, unreachable, numpy=False)
    assert call.layout is not None
    return call, call.layout


def bound_pair(bounds: Any) -> tuple[Any, Any]:
    """``(lower, upper)`` of a ``bounds`` argument that is not ``None``.

    >>> bound_pair((0.0, 1.0))
    (0.0, 1.0)
    """
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise _errors.bounds_not_pair()
    return bounds[0], bounds[1]


def prepare_xp(
    xp: Any,
    x: Array,
    delta: Array,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: int | Sequence[int] | None,
    unreachable: Any,
) -> XProblem:
    """Check every argument (values where concrete) and lay the data out as ``(rows, n)``."""
    call, layout = describe_arrays(x, delta, p, axis, unreachable)
    xr = layout.to_rows_xp(xp, x)
    dr = xp.astype(layout.to_rows_xp(xp, delta), x.dtype)
    eps_rows = _parse_eps(xp, eps, layout, x)
    if bounds is None:
        lower: float | Array = -math.inf
        upper: float | Array = math.inf
        lo_raw: Any = -math.inf
        hi_raw: Any = math.inf
    else:
        lo_in, hi_in = bound_pair(bounds)
        lower, lo_raw = _parse_side(xp, lo_in, "lower", -math.inf, layout, x)
        upper, hi_raw = _parse_side(xp, hi_in, "upper", math.inf, layout, x)
    if is_number(lo_raw) and is_number(hi_raw):
        if lo_raw > hi_raw:
            raise _errors.crossed_bounds(1, ())
    else:
        _raise_if(xp, lo_raw > hi_raw, _errors.crossed_bounds)
    # the core's checks, reported in its order and the caller's coordinates
    rows_index = layout.index_of
    for name, a in (("x", xr), ("delta", dr)):

        def nonfinite(c: int, i: tuple[int, ...], name: str = name) -> ValueError:
            return _errors.bad_values(name, "non-finite", c, i)

        _raise_if(xp, ~xp.isfinite(a), nonfinite, rows_index)
    outside = (xr < lower) | (xr > upper)
    _raise_if(xp, outside, _errors.outside_bounds, rows_index)
    return XProblem(
        xp=xp,
        layout=layout,
        dtype=x.dtype,
        delta_dtype=delta.dtype,
        x=xr,
        delta=dr,
        eps=eps_rows,
        p=call.p,
        lower=lower,
        upper=upper,
        unreachable=call.unreachable,
        shapes=arg_shapes(eps, bounds, layout),
    )


def raise_unreachable(xp: Any, prob: XProblem, flags: Array) -> None:
    """The ``unreachable="raise"`` error, when values are concrete and some row falls short."""
    if prob.unreachable != "raise" or not to_bool(xp.any(flags)):
        return
    count = int(xp.sum(xp.astype(flags, xp.int64)))
    first = int(xp.argmax(xp.astype(flags, xp.int32)))
    raise _errors.unreachable(count, prob.layout.rows, prob.layout.row_index(first))


def cotangent(xp: Any, cot: Any, shape: tuple[int, ...], what: str, like: Array) -> Array:
    """``etabar`` / ``ybar`` broadcast to ``shape`` (eta's or x's), in ``like``'s dtype."""
    if is_number(cot) or isinstance(cot, (list, tuple)):
        c = xp.asarray(np.asarray(cot, dtype=np.float64), device=_device(like))
    else:
        c = cot
        if not xp.isdtype(c.dtype, ("real floating", "integral")):
            raise _errors.cotangent_not_real(what, dtype_name(c.dtype))
    cs = tuple(int(s) for s in c.shape)
    try:
        ok = len(cs) <= len(shape) and np.broadcast_shapes(cs, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise _errors.cotangent_shape(what, cs, shape)
    return xp.broadcast_to(xp.astype(c, like.dtype, copy=False), shape)


def _float_dtype(xp: Any, dt: Any, default: Any) -> Any:
    return dt if dt is not None and xp.isdtype(dt, "real floating") else default


def fit_cotangents(
    xp: Any,
    g: dict[str, Any],
    layout: Layout,
    shapes: ArgShapes,
    x_dtype: Any,
    delta_dtype: Any,
) -> dict[str, Any]:
    """Cotangents in the core's layout (``x``/``delta`` ``(rows, n)``, ``eps`` ``(rows,)``,
    each bound ``(n,)``, ``(rows, n)`` or ``None``) in the shapes and dtypes of the caller's
    arguments: ``eps``'s cotangent has ``eps``'s shape (0-d for a number), an array bound's
    the bound's shape, and a number bound gets ``None``."""
    out: dict[str, Any] = {
        "x": xp.astype(layout.from_rows_xp(xp, g["x"]), x_dtype, copy=False),
        "delta": xp.astype(layout.from_rows_xp(xp, g["delta"]), delta_dtype, copy=False),
    }
    e = g["eps"]
    if shapes.eps is None or shapes.eps == ():
        eg = xp.asarray(xp.sum(e))  # (NumPy's sum gives a scalar, not a 0-d array)
    elif shapes.eps_per_row:
        eg = e
    else:
        eg = reduce_to(xp, xp.reshape(e, layout.eta_shape), shapes.eps)
    out["eps"] = xp.astype(eg, _float_dtype(xp, shapes.eps_dtype, x_dtype), copy=False)
    for side, shape, dt in (
        ("lower", shapes.lower, shapes.lower_dtype),
        ("upper", shapes.upper, shapes.upper_dtype),
    ):
        gs = g.get(side)
        if shape is None or gs is None:
            out[side] = None
            continue
        full = layout.bound_from_rows_xp(xp, gs)
        out[side] = xp.astype(reduce_to(xp, full, shape), _float_dtype(xp, dt, x_dtype), copy=False)
    return out
