"""Turning the caller's NumPy arguments into the core's ``(rows, n)`` problem, with checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ._args import (
    Unreachable,
    check_real_dtype,
    parse_p,
    parse_unreachable,
    vector_axes,
    work_dtype,
)
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


def _first_index(mask: np.ndarray[Any, Any]) -> tuple[int, ...]:
    flat = int(np.flatnonzero(mask.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape)) if mask.ndim else ()


def parse_eps(eps: Any, layout: Layout) -> float | np.ndarray[Any, Any]:
    """A scalar, or one float64 per row. Checks sign, NaN, infinity and length."""
    e = np.asarray(eps)
    if e.dtype.kind not in "fiu":
        raise TypeError(f"eps must be a real number or array of real numbers; got dtype {e.dtype}")
    e = e.astype(np.float64, copy=False)
    for bad, what in ((np.isnan(e) | (e < 0), "negative or NaN"), (np.isinf(e), "infinite")):
        if bad.any():
            raise ValueError(
                f"eps has {int(bad.sum())} {what} values; first at index {_first_index(bad)}"
            )
    if e.ndim == 0:
        return float(e)
    rows = layout.rows
    if e.ndim == 1 and e.shape[0] == rows:
        return np.require(e, np.float64, ["C", "A"])
    try:
        full = np.broadcast_to(e, layout.eta_shape)
    except ValueError:
        raise ValueError(
            f"eps must be a scalar or hold one value per vector ({rows} vectors); "
            f"got shape {e.shape}"
        ) from None
    return np.require(full.reshape(rows), np.float64, ["C", "A"])


def _parse_side(
    value: Any, side: str, default: float, layout: Layout, dtype: np.dtype[Any]
) -> tuple[BoundRows, np.ndarray[Any, Any]]:
    """One side of the box in the core's form, and the caller's values (for checks)."""
    if value is None:
        return default, np.asarray(default)
    a = np.asarray(value)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"bounds: {side} must be real; got dtype {a.dtype}")
    nan = np.isnan(a)
    if nan.any():
        raise ValueError(
            f"bounds: {side} has {int(nan.sum())} NaN values; first at index {_first_index(nan)}"
        )
    if a.ndim == 0:
        return float(a), a
    nd = len(layout.shape)
    try:
        fits = a.ndim <= nd and np.broadcast_shapes(a.shape, layout.shape) == layout.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"bounds: {side} of shape {a.shape} does not broadcast to x's shape {layout.shape}"
        )
    padded = a.reshape((1,) * (nd - a.ndim) + a.shape)
    if all(padded.shape[ax] == 1 for ax in layout.batch_axes):
        one = tuple(1 if ax in layout.batch_axes else s for ax, s in enumerate(layout.shape))
        shared = Layout.of(one, layout.vec_axes)
        return shared.to_rows(np.broadcast_to(padded, one), dtype)[0], a
    return layout.to_rows(np.broadcast_to(padded, layout.shape), dtype), a


def parse_bounds(
    bounds: Sequence[Any] | None, layout: Layout, dtype: np.dtype[Any]
) -> tuple[BoundRows, BoundRows]:
    """``(lower, upper)`` as floats, shared ``(n,)`` rows or full ``(rows, n)`` arrays."""
    if bounds is None:
        return -math.inf, math.inf
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError("bounds must be a (lower, upper) pair or None")
    lo, lo_raw = _parse_side(bounds[0], "lower", -math.inf, layout, dtype)
    hi, hi_raw = _parse_side(bounds[1], "upper", math.inf, layout, dtype)
    crossed = np.asarray(lo_raw > hi_raw) if lo_raw.ndim or hi_raw.ndim else lo_raw > hi_raw
    crossed = np.asarray(crossed)
    if crossed.any():
        raise ValueError(
            f"bounds: lower > upper at {int(crossed.sum())} positions; "
            f"first at index {_first_index(crossed)}"
        )
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
    axis: int | Sequence[int] | None,
    unreachable: Any,
) -> Problem:
    """Check every argument and lay the data out for the core."""
    xa = np.asarray(x)
    da = np.asarray(delta)
    check_real_dtype(xa.dtype, "x")
    check_real_dtype(da.dtype, "delta")
    pf = parse_p(p)
    mode = parse_unreachable(unreachable)
    if xa.shape != da.shape:
        raise ValueError(f"delta must have the same shape as x; got {da.shape} and {xa.shape}")
    layout = Layout.of(xa.shape, vector_axes(axis, xa.ndim))
    wd = work_dtype(xa.dtype)
    eps_rows = parse_eps(eps, layout)
    lower, upper = parse_bounds(bounds, layout, wd)
    return Problem(
        layout=layout,
        dtype=xa.dtype,
        x=layout.to_rows(xa, wd),
        delta=layout.to_rows(_as_dtype(da, xa.dtype.newbyteorder("=")), wd),
        eps=eps_rows,
        p=pf,
        lower=lower,
        upper=upper,
        unreachable=mode,
    )
