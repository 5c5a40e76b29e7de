"""Turning the caller's NumPy arguments into the core's ``(rows, n)`` problem, with checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import _errors
from ._args import Axis, Unreachable
from ._call import describe, number_bounds
from ._layout import Layout

BoundRows = Union[float, "np.ndarray[Any, Any]"]


@dataclass
class Problem:
    """Checked inputs in the core's layout."""

    layout: Layout
    dtype: np.dtype[Any]
    """The caller's dtype (results are returned in it)."""
    x: np.ndarray[Any, Any]
    delta: np.ndarray[Any, Any]
    eps: float | np.ndarray[Any, Any]
    p: float
    lower: BoundRows
    upper: BoundRows
    unreachable: Unreachable
    unchecked_bounds: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
    """The caller's bound arrays when their values (NaN, lower > upper) are still unchecked:
    left to the core's first pass, which rejects every such element as x outside its bounds;
    :func:`check_bound_values` then names the real cause."""


def _first_index(mask: np.ndarray[Any, Any]) -> tuple[int, ...]:
    flat = int(np.flatnonzero(mask.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape)) if mask.ndim else ()


def parse_eps(eps: Any, layout: Layout) -> float | np.ndarray[Any, Any]:
    """A scalar, or one float64 per row. Checks sign, NaN, infinity and length."""
    if type(eps) is float and 0.0 <= eps < math.inf:  # the common case, kept cheap
        return eps
    e = np.asarray(eps)
    if e.dtype.kind not in "fiu":
        raise _errors.eps_not_real(f"dtype {e.dtype}")
    e = e.astype(np.float64, copy=False)
    for bad, what in ((np.isnan(e) | (e < 0), "negative or NaN"), (np.isinf(e), "infinite")):
        if bad.any():
            raise _errors.bad_values("eps", what, int(bad.sum()), _first_index(bad))
    if e.ndim == 0:
        return float(e)
    rows = layout.rows
    if e.ndim == 1 and e.shape[0] == rows:
        return np.require(e, np.float64, ["C", "A"])
    try:
        full = np.broadcast_to(e, layout.eta_shape)
    except ValueError:
        raise _errors.eps_shape(rows, e.shape) from None
    return np.require(full.reshape(rows), np.float64, ["C", "A"])


def _parse_side(
    value: Any, side: str, default: float, layout: Layout, dtype: np.dtype[Any]
) -> tuple[BoundRows, np.ndarray[Any, Any]]:
    """One side of the box in the core's form, and the caller's values (for checks)."""
    if value is None:
        return default, np.asarray(default)
    a = np.asarray(value)
    if a.dtype.kind not in "fiu":
        raise _errors.bound_not_real(side, str(a.dtype))
    if a.ndim == 0:
        _check_nan(a, side)
        return float(a), a
    if a.shape == layout.shape and layout.rows > 1:  # one per element: kept cheap
        return layout.to_rows(a, dtype), a
    nd = len(layout.shape)
    try:
        fits = a.ndim <= nd and np.broadcast_shapes(a.shape, layout.shape) == layout.shape
    except ValueError:
        fits = False
    if not fits:
        raise _errors.bound_shape(side, a.shape, layout.shape)
    padded = a.reshape((1,) * (nd - a.ndim) + a.shape)
    if all(padded.shape[ax] == 1 for ax in layout.batch_axes):
        shared = layout.shared
        return shared.to_rows(np.broadcast_to(padded, shared.shape), dtype)[0], a
    return layout.to_rows(np.broadcast_to(padded, layout.shape), dtype), a


def _check_nan(a: np.ndarray[Any, Any], side: str) -> None:
    nan = np.isnan(a)
    if nan.any():
        raise _errors.bad_values(f"bounds: {side}", "NaN", int(nan.sum()), _first_index(nan))


def check_bound_values(lo_raw: np.ndarray[Any, Any], hi_raw: np.ndarray[Any, Any]) -> None:
    """Raise ``ValueError`` for NaN bounds or ``lower > upper`` (the caller's arrays).

    >>> import numpy as np
    >>> check_bound_values(np.zeros(3), np.array([1.0, -1.0, 1.0]))
    Traceback (most recent call last):
    ValueError: bounds: lower > upper at 1 position; first at index (1,)
    """
    _check_nan(lo_raw, "lower")
    _check_nan(hi_raw, "upper")
    crossed = np.asarray(lo_raw > hi_raw)
    if crossed.any():
        raise _errors.crossed_bounds(int(crossed.sum()), _first_index(crossed))


def parse_bounds(
    bounds: Sequence[Any] | None,
    layout: Layout,
    dtype: np.dtype[Any],
    defer: list[np.ndarray[Any, Any]] | None = None,
) -> tuple[BoundRows, BoundRows]:
    """``(lower, upper)`` as floats, shared ``(n,)`` rows or full ``(rows, n)`` arrays.

    With ``defer`` (a list), the value checks of bound arrays that hold one value per
    element of the batch (the costly case: two more passes over x-sized arrays) are left to
    the caller: the two raw arrays are appended to ``defer`` for :func:`check_bound_values`.
    """
    if bounds is None:
        return -math.inf, math.inf
    if number_bounds(bounds) and bounds[0] <= bounds[1]:  # (0.0, 1.0) among them
        return bounds[0], bounds[1]
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise _errors.bounds_not_pair()
    lo, lo_raw = _parse_side(bounds[0], "lower", -math.inf, layout, dtype)
    hi, hi_raw = _parse_side(bounds[1], "upper", math.inf, layout, dtype)
    full = any(isinstance(v, np.ndarray) and v.ndim == 2 for v in (lo, hi))
    if defer is not None and full:
        defer += [lo_raw, hi_raw]
    else:
        check_bound_values(lo_raw, hi_raw)
    return lo, hi


def _as_dtype(a: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """``a`` rounded to ``dtype`` first (delta takes x's dtype), overflow left to validation."""
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def prepare(
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: Axis,
    unreachable: Any,
    core_checks_bounds: bool = False,
    delta_name: str = "delta",
) -> Problem:
    """Check every argument and lay the data out for the core.

    The checks that need no data are :func:`clipresc._call.describe`'s; this adds those
    of the values of ``eps`` and the bounds. ``core_checks_bounds``: the problem goes to a
    core entry point whose first pass rejects x outside its bounds (``scale``,
    ``perturb``): per-element bound arrays are then not checked here (see
    :attr:`Problem.unchecked_bounds`). ``delta_name``: what messages call the second array
    (``"z"`` for :func:`clipresc.project`).
    """
    xa = x if type(x) is np.ndarray else np.asarray(x)
    da = xa if delta is x else delta if type(delta) is np.ndarray else np.asarray(delta)
    call = describe(
        xa.shape, xa.dtype, da.shape, da.dtype, p, axis, unreachable, delta_name=delta_name
    )
    layout = call.layout
    assert layout is not None
    wd = call.work_dtype
    if type(eps) is float and 0.0 <= eps < math.inf:  # the common cases, kept cheap
        eps_rows: float | np.ndarray[Any, Any] = eps
    else:
        eps_rows = parse_eps(eps, layout)
    deferred: list[np.ndarray[Any, Any]] | None = [] if core_checks_bounds else None
    lower: BoundRows
    upper: BoundRows
    # number_bounds(bounds), spelled out: this runs on every NumPy call, where a function
    # call is a visible part of the time
    if (
        type(bounds) is tuple
        and len(bounds) == 2
        and type(bounds[0]) is float
        and type(bounds[1]) is float
        and bounds[0] <= bounds[1]
    ):
        lower, upper = bounds
    else:
        lower, upper = parse_bounds(bounds, layout, wd, deferred)
    if layout.is_trailing and xa.dtype == wd and xa.flags.c_contiguous and xa.flags.aligned:
        xr = xa.reshape(layout.rows, layout.n)  # a view: the common case, kept cheap
    else:
        xr = layout.to_rows(xa, wd)
    if delta is x:  # noise: the core draws the direction, delta is only a placeholder
        dr = xr
    else:
        if da.dtype != xa.dtype or not da.dtype.isnative:  # rounded to x's dtype first
            da = _as_dtype(da, xa.dtype.newbyteorder("="))
        if layout.is_trailing and da.dtype == wd and da.flags.c_contiguous and da.flags.aligned:
            dr = da.reshape(layout.rows, layout.n)
        else:
            dr = layout.to_rows(da, wd)
    return Problem(
        layout,
        xa.dtype,
        xr,
        dr,
        eps_rows,
        call.p,
        lower,
        upper,
        call.unreachable,
        (deferred[0], deferred[1]) if deferred else None,
    )


def check_out(out: Any, prob: Problem, inputs: Sequence[tuple[str, Any]]) -> None:
    """Raise unless ``out`` can receive the result laid out as ``prob``: a writeable NumPy
    array of ``x``'s shape and dtype that shares no memory with any of ``inputs`` (the
    arrays the core reads, as ``(name, array)``; ``prob.x`` is checked as ``x``)."""
    if not isinstance(out, np.ndarray):
        raise _errors.out_not_numpy(out)
    shape = prob.layout.shape
    if out.shape != shape:
        raise _errors.out_shape(shape, out.shape)
    if out.dtype != prob.dtype:
        raise _errors.out_dtype(prob.dtype, out.dtype)
    if not out.flags.writeable:
        raise _errors.out_read_only()
    for name, arr in [("x", prob.x), *inputs]:
        if isinstance(arr, np.ndarray) and np.may_share_memory(out, arr):
            raise _errors.out_overlaps(name)
