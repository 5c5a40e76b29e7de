"""Property tests of clipresc.scale / clipresc.perturb against the independent oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clipresc
from support.checks import (
    TOL,
    check_eta,
    check_perturb,
    examples,
    expected_raise_message,
    reference,
)
from support.strategies import Case, cases, compute_dtype, to_2d


def _call(fn, case: Case, **kw):
    return fn(case.x, case.delta, case.eps, **case.kwargs(), **kw)


@settings(max_examples=examples(200))
@given(cases())
def test_scale_and_perturb_match_oracle(case: Case):
    eta = _call(clipresc.scale, case)
    ref = check_eta(case, eta)
    y = _call(clipresc.perturb, case)
    check_perturb(case, eta, y, ref)
    # repeated calls are bitwise identical
    assert np.array_equal(y, _call(clipresc.perturb, case))
    assert np.array_equal(eta, _call(clipresc.scale, case))


@settings(max_examples=examples(100))
@given(cases(with_axis=True, min_ndim=2))
def test_axis_variants_match_oracle(case: Case):
    eta = _call(clipresc.scale, case)
    ref = check_eta(case, eta)
    y = _call(clipresc.perturb, case)
    check_perturb(case, eta, y, ref)


@settings(max_examples=examples(100))
@given(cases(with_axis=True, min_ndim=2))
def test_axis_equals_moving_axes_by_hand(case: Case):
    """scale(x, axis=a) == scale of the (B, n) array built by moving the axes by hand."""
    va = case.vec_axes
    lo, hi = case.lower_upper()
    x2 = to_2d(case.x, va)
    d2 = to_2d(case.delta, va)
    e2 = case.eps_rows()
    bounds2 = None
    if case.bounds is not None:
        bounds2 = (to_2d(lo.astype(case.dtype), va), to_2d(hi.astype(case.dtype), va))
    eta = _call(clipresc.scale, case)
    eta2 = clipresc.scale(x2, d2, e2, p=case.p, bounds=bounds2)
    assert eta2.shape == (x2.shape[0], 1)
    got = to_2d(eta, va).reshape(-1)
    tol = TOL[compute_dtype(case.dtype)]
    np.testing.assert_allclose(
        got, eta2.reshape(-1), rtol=10 * tol["r"], atol=0, err_msg=repr(case)
    )
    y = _call(clipresc.perturb, case)
    y2 = clipresc.perturb(x2, d2, e2, p=case.p, bounds=bounds2)
    fin = np.finfo(case.dtype)
    np.testing.assert_allclose(
        to_2d(y, va),
        y2,
        rtol=4 * float(fin.eps) + 10 * tol["r"],
        atol=4 * float(fin.tiny),
        err_msg=repr(case),
    )


@settings(max_examples=examples(100))
@given(cases())
def test_unreachable_raise(case: Case):
    ref = reference(case)
    msg = expected_raise_message(ref)
    if msg is not None:
        with pytest.raises(ValueError, match=msg):
            _call(clipresc.scale, case, unreachable="raise")
        with pytest.raises(ValueError, match=msg):
            _call(clipresc.perturb, case, unreachable="raise")
    elif not ref.unreach.any() and not ref.ambiguous.any():
        eta = _call(clipresc.scale, case, unreachable="raise")
        eta_s = _call(clipresc.scale, case)
        assert np.array_equal(eta, eta_s)
        y = _call(clipresc.perturb, case, unreachable="raise")
        assert np.array_equal(y, _call(clipresc.perturb, case))
    else:
        # ambiguous (eps at the largest size within rounding, or all-zero delta with
        # eps > 0): either outcome is acceptable, but an answer must match "saturate"
        try:
            eta = _call(clipresc.scale, case, unreachable="raise")
        except ValueError as exc:
            assert "eps exceeds the largest reachable size" in str(exc)
        else:
            assert np.array_equal(eta, _call(clipresc.scale, case))


@settings(max_examples=examples(100))
@given(cases(dtypes=(np.float16,), max_vec=64))
def test_float16_computed_in_float32(case: Case):
    """float16 in -> float16 out, equal to the float32 computation cast back."""
    eta = _call(clipresc.scale, case)
    y = _call(clipresc.perturb, case)
    assert eta.dtype == np.float16 and eta.shape == case.eta_shape
    assert y.dtype == np.float16 and y.shape == case.x.shape
    c32 = Case(
        x=case.x.astype(np.float32),
        delta=case.delta.astype(np.float16).astype(np.float32),
        eps=case.eps,
        p=case.p,
        bounds=_bounds_as(case.bounds, np.float32),
        axis=case.axis,
    )
    eta32 = _call(clipresc.scale, c32)
    y32 = _call(clipresc.perturb, c32)
    np.testing.assert_array_equal(eta, eta32.astype(np.float16), err_msg=repr(case))
    np.testing.assert_array_equal(y, y32.astype(np.float16), err_msg=repr(case))
    check_perturb(case, eta32.astype(np.float32), y)  # shape/bounds/consistency in f16


def _bounds_as(bounds, dtype):
    if bounds is None:
        return None
    return tuple(b.astype(dtype) if isinstance(b, np.ndarray) else b for b in bounds)


@settings(max_examples=examples(60))
@given(cases(dtypes=(np.float32,)), st.sampled_from(["f64", "f32"]))
def test_delta_cast_to_x_dtype(case: Case, ddt: str):
    """delta of another dtype is cast to x's dtype first."""
    d = case.delta.astype(np.float64 if ddt == "f64" else np.float32)
    eta = clipresc.scale(case.x, d, case.eps, **case.kwargs())
    eta_c = clipresc.scale(case.x, d.astype(np.float32), case.eps, **case.kwargs())
    assert eta.dtype == np.float32
    np.testing.assert_array_equal(eta, eta_c)


@settings(max_examples=examples(60))
@given(cases(dtypes=(np.float64,), bounds_kinds=("unit", "wide", "lower_only", "elementwise")))
def test_eps_formats_agree(case: Case):
    """Scalar eps == the same value given per vector, as (B,) and as eta.shape."""
    e = case.eps_rows()
    eta_b = clipresc.scale(case.x, case.delta, e, **case.kwargs())
    eta_s = clipresc.scale(case.x, case.delta, case.reshape_rows(e), **case.kwargs())
    np.testing.assert_array_equal(eta_b, eta_s)
    if np.all(e == e[0]):
        eta_1 = clipresc.scale(case.x, case.delta, float(e[0]), **case.kwargs())
        np.testing.assert_array_equal(eta_b, eta_1)


@settings(max_examples=examples(60))
@given(
    cases(dtypes=(np.float64, np.float32), bounds_kinds=("unit", "wide", "elementwise")),
    st.sampled_from([1e-12, 1e-6, 1e6, 1e12]),
)
def test_delta_scale_invariance(case: Case, c: float):
    """eta(x, c*delta) == eta(x, delta) / c (exact math): checks against under/overflow
    of |delta|^p. Scale factors are restricted so c*delta stays a normal number."""
    if case.dtype == np.float32:
        c = math.sqrt(c) if abs(math.log10(c)) > 6 else c
        c = min(max(c, 1e-3), 1e3)
    d = case.delta.astype(case.dtype) * case.dtype.type(c)
    if not np.all(np.isfinite(d)):
        return
    scaled = Case(x=case.x, delta=d, eps=case.eps, p=case.p, bounds=case.bounds)
    eta = _call(clipresc.scale, scaled)
    check_eta(scaled, eta)


def test_scale_returns_fresh_arrays():
    x = np.full((2, 5), 0.5)
    d = np.ones((2, 5))
    a = clipresc.scale(x, d, 0.1)
    b = clipresc.perturb(x, d, 0.1)
    assert not np.shares_memory(a, x) and not np.shares_memory(b, x)
    assert not np.shares_memory(b, d)
    assert a.flags.writeable and b.flags.writeable
