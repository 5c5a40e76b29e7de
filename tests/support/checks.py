"""Shared assertions: compare clipresc results for a :class:`strategies.Case` with the oracle."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from hypothesis import settings

from . import oracle
from .strategies import Case, compute_dtype, to_2d

# Tolerances per compute dtype.
#   rel_T:  relative perturbation of T = eps^p (and of every term of g) the implementation
#           may make; eta must lie in the oracle bracket for T*(1 -+ rel_T).
#   r:      extra relative slack on eta for its final rounding / t^(1/p).
#   size:   relative tolerance of the achieved size (before the rounding of y is added).
#   margin: eps within this relative distance of the largest size is "ambiguous"
#           (reachable or not depends on rounding).
TOL = {
    np.dtype(np.float64): {"rel_T": 1e-12, "r": 1e-13, "size": 1e-12, "margin": 1e-9},
    np.dtype(np.float32): {"rel_T": 1e-5, "r": 1e-6, "size": 1e-5, "margin": 1e-4},
}


def examples(n: int) -> int:
    """``n`` examples normally; the profile's count when it is larger (the fuzz profile)."""
    return max(n, settings.default.max_examples) if settings.default.max_examples >= 1000 else n


@dataclass
class Ref:
    x2: np.ndarray
    d2: np.ndarray
    eps: np.ndarray
    lo2: np.ndarray
    hi2: np.ndarray
    eta_lo: np.ndarray
    eta: np.ndarray
    eta_hi: np.ndarray
    max_size: np.ndarray
    movable: np.ndarray
    reach: np.ndarray  # clearly reachable (or eps == 0, or nothing movable)
    unreach: np.ndarray  # clearly above the largest size (some element movable)
    ambiguous: np.ndarray  # neither (eps ~ max size, or eps > 0 with an all-zero delta)


def reference(case: Case) -> Ref:
    x2, d2, e, lo2, hi2 = case.as_2d()
    tol = TOL[compute_dtype(case.dtype)]
    lo, mid, hi, ms = oracle.oracle_eta_bracket(x2, d2, e, case.p, lo2, hi2, rel_T=tol["rel_T"])
    movable = (d2 != 0).any(axis=1)
    m = tol["margin"]
    with np.errstate(invalid="ignore", over="ignore"):
        reach = (e == 0) | (movable & (e <= ms * (1 - m)))
        unreach = movable & (e > 0) & (e >= ms * (1 + m)) & np.isfinite(ms)
    # nothing reachable at all: eps > 0 with max size 0 (all movable elements stuck)
    unreach |= movable & (e > 0) & (ms == 0)
    ambiguous = ~(reach | unreach)
    return Ref(x2, d2, e, lo2, hi2, lo, mid, hi, ms, movable, reach, unreach, ambiguous)


def _fmt(case: Case, i: int, ref: Ref, got) -> str:
    return (
        f"{case!r}\nvector {i}: eta={got!r} oracle={ref.eta[i]!r} bracket=[{ref.eta_lo[i]!r}, "
        f"{ref.eta_hi[i]!r}] eps={ref.eps[i]!r} max_size={ref.max_size[i]!r}"
    )


def check_eta(case: Case, eta: np.ndarray, ref: Ref | None = None) -> Ref:
    """eta has the right type/shape/dtype and lies in the oracle bracket."""
    ref = reference(case) if ref is None else ref
    assert isinstance(eta, np.ndarray), type(eta)
    assert eta.dtype == case.dtype.newbyteorder("="), (eta.dtype, case.dtype)
    assert eta.shape == case.eta_shape, (eta.shape, case.eta_shape)
    got = to_2d(eta.astype(np.float64), case.vec_axes).reshape(-1)
    assert np.all(np.isfinite(got)), (case, got)
    tol = TOL[compute_dtype(case.dtype)]
    r = tol["r"]
    zero = (ref.eps == 0) | ~ref.movable
    for i in np.flatnonzero(zero):
        assert got[i] == 0.0, _fmt(case, i, ref, got[i])
    ok = (got >= ref.eta_lo * (1 - r)) & (got <= ref.eta_hi * (1 + r))
    # an eta beyond the saturating one is never right, whatever the rounding
    for i in np.flatnonzero(~ok):
        raise AssertionError("eta outside the oracle bracket: " + _fmt(case, i, ref, got[i]))
    return ref


def expected_perturb(case: Case, eta: np.ndarray) -> np.ndarray:
    """clip(x + eta*delta, lower, upper) in the compute dtype, cast back to x's dtype."""
    cd = compute_dtype(case.dtype)
    x = case.x.astype(cd)
    d = case.delta.astype(case.dtype).astype(cd)
    y = x + eta.astype(cd) * d
    lo, hi = case.lower_upper()
    y = np.minimum(np.maximum(y, lo.astype(cd)), hi.astype(cd))
    return y.astype(case.dtype)


def check_perturb(case: Case, eta: np.ndarray, y: np.ndarray, ref: Ref | None = None) -> Ref:
    """y is clip(x + eta*delta) (to 2 ulps), inside the bounds, unchanged where delta == 0,
    and has the requested size (reachable) or the largest size (unreachable)."""
    ref = reference(case) if ref is None else ref
    assert isinstance(y, np.ndarray)
    assert y.dtype == case.dtype.newbyteorder("="), (y.dtype, case.dtype)
    assert y.shape == case.x.shape
    lo, hi = case.lower_upper()
    y64 = y.astype(np.float64)
    x64 = case.x.astype(np.float64)
    d = case.delta.astype(case.dtype)
    assert np.all(y64 >= lo) and np.all(y64 <= hi), f"y outside bounds: {case!r}"
    assert np.array_equal(y[d == 0], case.x[d == 0]), f"y moved where delta == 0: {case!r}"
    stuck = (d == 0) | (np.where(d > 0, hi - x64, x64 - lo) == 0)
    assert np.array_equal(y64[stuck], x64[stuck]), f"y moved an element with no room: {case!r}"
    moved = y64 != x64
    assert np.all(np.sign(y64 - x64)[moved] == np.sign(d.astype(np.float64))[moved]), case
    exp = expected_perturb(case, eta).astype(np.float64)
    fin = np.finfo(compute_dtype(case.dtype))
    ulp = np.maximum(np.abs(exp), np.abs(y64)) * float(fin.eps) + float(fin.smallest_subnormal)
    bad = np.abs(y64 - exp) > 2 * ulp
    if case.dtype == np.float16:
        bad = np.abs(y64 - exp) > 2 * (np.abs(exp) * 2.0**-10 + 2.0**-24)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"perturb != clip(x + eta*delta) at {idx}: {y64[idx]!r} vs {exp[idx]!r}\n{case!r}"
        )
    if case.dtype == np.float16:
        return ref
    # achieved size
    y2 = to_2d(y64, case.vec_axes)
    size = oracle.lp_size(y2 - ref.x2, case.p)
    tol = TOL[compute_dtype(case.dtype)]
    target = np.where(ref.unreach, ref.max_size, ref.eps)
    rb = oracle.size_rounding_bound(
        y2, ref.x2, ref.d2, case.p, case.dtype, ref.lo2, ref.hi2, target
    )
    check = ref.reach | ref.unreach
    check &= ref.movable
    err = np.abs(size - target)
    allowed = tol["size"] * target + 2 * rb
    for i in np.flatnonzero(check & (err > allowed)):
        raise AssertionError(
            f"achieved size {size[i]!r} != target {target[i]!r} (error {err[i]:.3g} > "
            f"{allowed[i]:.3g}; unreachable={bool(ref.unreach[i])})\n" + _fmt(case, i, ref, None)
        )
    # the same in exact arithmetic from eta alone (no rounding of y)
    eta2 = to_2d(eta.astype(np.float64), case.vec_axes).reshape(-1)
    a_size = oracle.achieved_size(ref.x2, ref.d2, eta2, case.p, ref.lo2, ref.hi2)
    p = case.p
    slack = tol["size"] + (0 if math.isinf(p) else tol["rel_T"] / p) + 4 * float(fin.eps)
    rel = np.abs(a_size - target) / np.where(target > 0, target, 1.0)
    for i in np.flatnonzero(check & (rel > slack)):
        raise AssertionError(
            f"size at returned eta {a_size[i]!r} != target {target[i]!r} (rel {rel[i]:.3g})\n"
            + _fmt(case, i, ref, eta2[i])
        )
    return ref


def expected_raise_message(ref: Ref) -> str | None:
    """Regex for the unreachable="raise" error when it is unambiguous, else None."""
    if ref.ambiguous.any():
        return None
    if not ref.unreach.any():
        return None
    count = int(ref.unreach.sum())
    first = int(np.flatnonzero(ref.unreach)[0])
    b = ref.unreach.size
    vectors = "1 vector" if b == 1 else f"{b} vectors"
    return re.escape(
        f"eps exceeds the largest reachable size for {count} of {vectors}; first: vector {first}"
    )


def assert_eta_in_bracket(x2, d2, eps, p, eta_rows, dtype=np.float64, lower=0.0, upper=1.0):
    """eta (one per row of the float64 2-D problem) lies in the oracle bracket for the
    tolerances of ``dtype`` (robust to ill-conditioning, see oracle_eta_bracket)."""
    tol = TOL[compute_dtype(dtype)]
    lo, mid, hi, _ = oracle.oracle_eta_bracket(x2, d2, eps, p, lower, upper, rel_T=tol["rel_T"])
    eta_rows = np.asarray(eta_rows, dtype=np.float64).reshape(-1)
    r = tol["r"]
    bad = ~((eta_rows >= lo * (1 - r)) & (eta_rows <= hi * (1 + r)))
    for i in np.flatnonzero(bad):
        raise AssertionError(
            f"row {i}: eta {eta_rows[i]!r} outside [{lo[i]!r}, {hi[i]!r}] (oracle {mid[i]!r})"
        )
