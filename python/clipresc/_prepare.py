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
from ._messages import counted

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
        raise TypeError(f"eps must be a real number or array of real numbers; got dtype {e.dtype}")
    e = e.astype(np.float64, copy=False)
    for bad, what in ((np.isnan(e) | (e < 0), "negative or NaN"), (np.isinf(e), "infinite")):
        if bad.any():
            raise ValueError(
                f"eps has {counted(int(bad.sum()), what + ' value')}; "
                f"first at index {_first_index(bad)}"
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
            f"eps must be a scalar or hold one value per vector ({counted(rows, 'vector')}); "
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
    if a.ndim == 0:
        _check_nan(a, side)
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


def _check_nan(a: np.ndarray[Any, Any], side: str) -> None:
    nan = np.isnan(a)
    if nan.any():
        raise ValueError(
            f"bounds: {side} has {counted(int(nan.sum()), 'NaN value')}; "
            f"first at index {_first_index(nan)}"
        )


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
        raise ValueError(
            f"bounds: lower > upper at {counted(int(crossed.sum()), 'position')}; "
            f"first at index {_first_index(crossed)}"
        )


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
    if type(bounds) is tuple and len(bounds) == 2:
        lo, hi = bounds
        # two valid floats (the default (0.0, 1.0) among them): nothing to convert
        if type(lo) is float and type(hi) is float and lo <= hi:
            return lo, hi
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError("bounds must be a (lower, upper) pair or None")
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
    axis: int | Sequence[int] | None,
    unreachable: Any,
    core_checks_bounds: bool = False,
    delta_name: str = "delta",
) -> Problem:
    """Check every argument and lay the data out for the core.

    ``core_checks_bounds``: the problem goes to a core entry point whose first pass rejects
    x outside its bounds (``scale``, ``perturb``): per-element bound arrays are then not
    checked here (see :attr:`Problem.unchecked_bounds`). ``delta_name``: what messages call
    the second array (``"z"`` for :func:`clipresc.project`).
    """
    xa = np.asarray(x)
    da = np.asarray(delta)
    check_real_dtype(xa.dtype, "x")
    check_real_dtype(da.dtype, delta_name)
    pf = parse_p(p)
    mode = parse_unreachable(unreachable)
    if xa.shape != da.shape:
        raise ValueError(
            f"{delta_name} must have the same shape as x; got {da.shape} and {xa.shape}"
        )
    layout = Layout.of(xa.shape, vector_axes(axis, xa.ndim))
    wd = work_dtype(xa.dtype)
    eps_rows = parse_eps(eps, layout)
    deferred: list[np.ndarray[Any, Any]] | None = [] if core_checks_bounds else None
    lower, upper = parse_bounds(bounds, layout, wd, deferred)
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
        unchecked_bounds=(deferred[0], deferred[1]) if deferred else None,
    )


def check_out(out: Any, prob: Problem, inputs: Sequence[tuple[str, Any]]) -> None:
    """Raise unless ``out`` can receive the result laid out as ``prob``: a writeable NumPy
    array of ``x``'s shape and dtype that shares no memory with any of ``inputs`` (the
    arrays the core reads, as ``(name, array)``; ``prob.x`` is checked as ``x``)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array; got {type(out).__name__}")
    shape = prob.layout.shape
    if out.shape != shape:
        raise ValueError(f"out must have x's shape {shape}; got {out.shape}")
    if out.dtype != prob.dtype:
        raise TypeError(f"out must have x's dtype {prob.dtype}; got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable; got a read-only array")
    for name, arr in [("x", prob.x), *inputs]:
        if isinstance(arr, np.ndarray) and np.may_share_memory(out, arr):
            raise ValueError(f"out must not overlap {name}")
