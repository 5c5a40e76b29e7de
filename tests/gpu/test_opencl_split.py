"""Rows spread over many blocks (``clipresc_split_*``, :func:`clipresc.kernels.split_forward`)
on a CPU OpenCL device: each row cut into segments of a few blocks' worth, against the
float64 bisection oracle (``support/gpu_cases.py``) and the one-block kernel, with the
error word, rows that the fixed rounds leave to the one-block finish, and the adversarial
chain."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue, reduced

from support.gpu_cases import BOUND_KINDS, adversarial_row, bisect_eta, make_case, rooms

cl = import_pyopencl()

import clipresc.kernels as kernels  # noqa: E402
from clipresc.backends import opencl_backend as ob  # noqa: E402
from clipresc.kernels import ERR_BITS, SplitPlan, split_plan  # noqa: E402

#: Under CLIPRESC_KERNEL_TESTS=reduced (the Oclgrind check, ~40x slower than PoCL) fewer
#: p values, bound kinds and dtypes: every split kernel and each way through the sequence
#: (forward, backward given eta, backward solving; finite p and inf) still runs.
P_VALUES = (2.0, math.inf) if reduced() else (0.5, 1.0, 2.0, 3.0, math.inf)
P_FINITE = tuple(p for p in P_VALUES if not math.isinf(p))
KINDS = ("full", "half_inf") if reduced() else BOUND_KINDS
DTYPES = (np.float64,) if reduced() else (np.float32, np.float64)
MAX_PASSES = 1 + 8 + 66


@pytest.fixture(scope="module")
def queue() -> Any:
    return opencl_queue()


def _plan(n: int, seg: int) -> SplitPlan:
    return SplitPlan(-(-n // seg), seg)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_split_rows_match_oracle(queue: Any, p: float, dtype: Any, kind: str) -> None:
    """make_case's six rows (moderate / heavy clipping, unreachable, eps = 0, zero delta,
    light clipping), 5000 elements in 5 segments, the last one short."""
    n = 5000
    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), np.dtype(dtype).itemsize])
    x, d, eps, lower, upper = make_case(rng, n, dtype, kind, p)
    res = ob.forward_rows(
        x, d, eps, p, lower, upper, want_passes=True, queue=queue, split=_plan(n, 1024)
    )
    eta_ref, unreach_ref = bisect_eta(x, d, eps, p, lower, upper)
    np.testing.assert_array_equal(res.unreachable, unreach_ref)
    rtol = 2e-6 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(res.eta.astype(np.float64), eta_ref, rtol=rtol, atol=0)
    assert res.eta[3] == 0 and res.eta[4] == 0
    assert res.passes is not None and res.passes.max() <= MAX_PASSES
    # the apply: the same y as the one-block kernel's for the same eta
    one = ob.forward_rows(x, d, eps, p, lower, upper, want_passes=True, queue=queue, split=False)
    np.testing.assert_array_equal(res.passes, one.passes)
    np.testing.assert_allclose(res.eta, one.eta, rtol=rtol, atol=0)
    s, a, mv = rooms(x, d, lower, upper)
    lo = np.broadcast_to(-np.inf if lower is None else lower, x.shape).astype(np.float64)
    hi = np.broadcast_to(np.inf if upper is None else upper, x.shape).astype(np.float64)
    eta64 = res.eta.astype(np.float64)[:, None]
    y_ref = np.where(
        mv & (s <= eta64 * a),
        np.where(d > 0, hi, lo),
        np.clip(x.astype(np.float64) + eta64 * d.astype(np.float64), lo, hi),
    )
    assert res.y is not None
    # (the kernel applies its float64 eta, rounded to float32 in res.eta; the OpenCL
    # compiler may contract x + eta d)
    tol = 4e-7 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(res.y, y_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("rounds", (0, 2) if reduced() else (0, 1, 2))
@pytest.mark.parametrize(
    "p", (2.0, math.inf) if reduced() else (1.0, 2.0, math.inf), ids=lambda p: f"p{p}"
)
def test_rows_left_to_the_finish(queue: Any, p: float, rounds: int, monkeypatch: Any) -> None:
    """With fewer (pass, step) rounds than the rows need, the one-block finish completes
    them from the state the rounds left (0 rounds: the whole solve, first pass included,
    in as many passes as the one-block kernel; with rounds, segments of 512 keep every
    element as a candidate and the steps finish from them: no more passes)."""
    monkeypatch.setattr(kernels, "SPLIT_ROUNDS", rounds)
    rng = np.random.default_rng(rounds)
    n = 6000
    x = rng.random((3, n))
    d = rng.standard_normal((3, n))
    s, _, _ = rooms(x, d, 0.0, 1.0)
    eps = s.max(axis=1) / 3 if math.isinf(p) else (s**p).sum(axis=1) ** (1 / p) / 3
    res = ob.forward_rows(x, d, eps, p, want_passes=True, queue=queue, split=_plan(n, 512))
    one = ob.forward_rows(x, d, eps, p, want_passes=True, queue=queue, split=False)
    assert res.passes is not None and one.passes is not None
    if rounds == 0:
        np.testing.assert_array_equal(res.passes, one.passes)
    else:
        assert (res.passes <= one.passes).all()
    eta_ref, _ = bisect_eta(x, d, eps, p, 0.0, 1.0)
    np.testing.assert_allclose(res.eta, eta_ref, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("p", (2.0,) if reduced() else (1.0, 2.0), ids=lambda p: f"p{p}")
def test_long_row_finishes_from_the_segments_candidates(queue: Any, p: float, dtype: Any) -> None:
    """A row long enough that its crossing bin holds more elements than shared memory: the
    one-block kernel bins that bin again in a third pass, the split step does the same
    from the candidates its segments kept (every element of the bin, a few dozen each)
    and finishes in 2 passes; eta agrees with the bisection oracle and the one-block
    kernel, the same bits twice, and the fused apply matches."""
    n = 400_000
    rng = np.random.default_rng([int(p), np.dtype(dtype).itemsize, 12])
    x = rng.random((1, n)).astype(dtype)
    d = rng.standard_normal((1, n)).astype(dtype)
    s, _, _ = rooms(x, d, 0.0, 1.0)
    eps = (s**p).sum(axis=1) ** (1 / p) / 3
    plan = _plan(n, 12_544)
    one = ob.forward_rows(x, d, eps, p, want_passes=True, queue=queue, split=False)
    res = ob.forward_rows(x, d, eps, p, want_passes=True, queue=queue, split=plan)
    assert one.passes is not None and res.passes is not None
    assert one.passes[0] == 3 and res.passes[0] == 2
    eta_ref, _ = bisect_eta(x, d, eps, p, 0.0, 1.0)
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(res.eta, eta_ref, rtol=rtol)
    np.testing.assert_allclose(res.eta, one.eta, rtol=rtol)
    again = ob.forward_rows(x, d, eps, p, want_passes=True, queue=queue, split=plan)
    np.testing.assert_array_equal(again.eta, res.eta)
    np.testing.assert_array_equal(again.y, res.y)
    assert res.y is not None and one.y is not None
    tol = 4e-7 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(res.y, one.y, rtol=tol, atol=tol)


@pytest.mark.parametrize("p", P_FINITE, ids=lambda p: f"p{p}")
def test_split_adversarial_chain(queue: Any, p: float) -> None:
    x, d, eps, lower, upper, _ = adversarial_row(p, K=40, n_background=3000)
    res = ob.forward_rows(
        x[None, :], d[None, :], eps, p, lower, upper, want_passes=True, queue=queue,
        split=_plan(x.size, 256),
    )  # fmt: skip
    assert res.passes is not None and res.passes[0] <= 5
    s, a, mv = rooms(x[None, :], d[None, :], 0.0, 1.0)
    terms = np.minimum(float(res.eta[0]) * a[mv], s[mv]) ** p
    assert abs(math.fsum(terms.tolist()) - eps**p) / eps**p < 1e-14


@pytest.mark.parametrize(
    "p", (2.0, math.inf) if reduced() else (1.0, 2.0, math.inf), ids=lambda p: f"p{p}"
)
def test_split_error_word(queue: Any, p: float) -> None:
    """Element checks run in the segments' first pass, eps and unreachable in the finish."""
    rng = np.random.default_rng(4)
    n = 3000
    x, d, eps, lo, hi = make_case(rng, n, np.float64, "full", p)
    eps = eps.copy()
    x[1, 2999] = np.nan  # in the last segment
    d[5, 1500] = np.inf
    eps[3] = -1.0
    err = np.zeros(1, np.int32)
    ob.forward_rows(x, d, eps, p, lo, hi, queue=queue, err=err, split=_plan(n, 1024))
    want = ERR_BITS["x non-finite"] | ERR_BITS["delta non-finite"]
    want |= ERR_BITS["eps negative or NaN"]
    assert int(err[0]) & ~ERR_BITS["unreachable"] == want
    one = np.zeros(1, np.int32)
    ob.forward_rows(x, d, eps, p, lo, hi, queue=queue, err=one, split=False)
    assert int(err[0]) == int(one[0])


def test_split_is_deterministic(queue: Any) -> None:
    """The segments' partials are merged in a fixed order and the candidates sorted: the
    same call gives the same bits; and every row's result is that row's alone."""
    rng = np.random.default_rng(8)
    n = 9000
    x = rng.random((4, n))
    d = rng.standard_normal((4, n))
    eps = (np.where(d > 0, 1 - x, x) ** 2).sum(axis=1) ** 0.5 / 3
    plan = _plan(n, 768)
    a = ob.forward_rows(x, d, eps, 2.0, queue=queue, split=plan)
    b = ob.forward_rows(x, d, eps, 2.0, queue=queue, split=plan)
    np.testing.assert_array_equal(a.eta, b.eta)
    c = ob.forward_rows(x[2:3], d[2:3], eps[2:3], 2.0, queue=queue, split=plan)
    assert c.eta[0] == a.eta[2]


def _assert_cotangents_close(got: Any, want: Any, rel: float) -> None:
    """Each cotangent within ``rel`` of the largest of the reference's (``None`` alike)."""
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        scale = max(float(np.abs(w).max()), 1e-300)
        np.testing.assert_allclose(g, w, rtol=0, atol=rel * scale)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", P_FINITE, ids=lambda p: f"p{p}")
def test_split_backward_matches_one_block(queue: Any, p: float, kind: str) -> None:
    """The split backward given the forward's eta (sums per segment, coefficients per
    row, cotangents per segment) against the one-block kernel, whose VJP the other tests
    hold to finite differences: equal to summation rounding, for perturb and scale, with
    per-element, shared and one-sided bounds; and the error word's element and eps bits."""
    rng = np.random.default_rng([int(p * 10), len(kind)])
    n = 5000
    x, d, eps, lower, upper = make_case(rng, n, np.float64, kind, p)
    eta = ob.forward_rows(x, d, eps, p, lower, upper, queue=queue, split=False).eta
    ybar = rng.standard_normal(x.shape)
    etabar = rng.standard_normal(x.shape[0])
    plan = _plan(n, 1024)
    for split_out, one_out in (
        (
            ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue, eta=eta, split=plan),
            ob.perturb_vjp_rows(
                x, d, eps, p, lower, upper, ybar, queue=queue, eta=eta, split=False
            ),
        ),
        (
            ob.scale_vjp_rows(x, d, eps, p, lower, upper, etabar, queue=queue, eta=eta, split=plan),
            ob.scale_vjp_rows(
                x, d, eps, p, lower, upper, etabar, queue=queue, eta=eta, split=False
            ),
        ),
    ):
        _assert_cotangents_close(split_out, one_out, 1e-14)
    x[1, 4000] = np.nan
    eps = eps.copy()
    eps[0] = -1.0
    err = np.zeros(1, np.int32)
    ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue, eta=eta, err=err, split=plan)
    assert int(err[0]) == ERR_BITS["x non-finite"] | ERR_BITS["eps negative or NaN"]


def _launched(monkeypatch: Any) -> list[str]:
    """The names of the split sequences' launches from now on."""
    names: list[str] = []
    make = ob._launcher

    def recording(queue: Any, kernels: Any) -> Any:
        launch = make(queue, kernels)

        def rec(name: str, groups: int, *args: Any) -> None:
            names.append(name)
            launch(name, groups, *args)

        return rec

    monkeypatch.setattr(ob, "_launcher", recording)
    return names


@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=["f32", "f64"])
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_split_backward_solves_its_eta(queue: Any, p: float, dtype: Any, monkeypatch: Any) -> None:
    """Without the forward's eta (and for p = inf always, as clipresc_vjp), the split
    backward solves the rows with the split kernels first and reads the solve's final
    states (eta in float64, breakpoint index, unreachable flag): the one-block solving
    VJP's results to summation rounding, and the generic array-API VJP at the bisection
    oracle's eta; for p = inf the scale VJP (no sums over ybar) bit for bit, the solve
    being exact there (eta = eps / |delta_k|)."""
    from clipresc.backends import generic

    rng = np.random.default_rng([int(min(p, 99) * 10), 5, np.dtype(dtype).itemsize])
    n = 5000
    x, d, eps, lower, upper = make_case(rng, n, dtype, "full", p)
    ybar = rng.standard_normal(x.shape).astype(dtype)
    etabar = rng.standard_normal(x.shape[0]).astype(dtype)
    plan = _plan(n, 1024)
    args = (x, d, eps, p, lower, upper)
    names = _launched(monkeypatch)
    err = np.zeros(1, np.int32)
    got = ob.perturb_vjp_rows(*args, ybar, queue=queue, split=plan, err=err)
    assert names[0] == "clipresc_split_start" and "clipresc_split_vjp_sums" in names
    assert int(err[0]) == 0  # (make_case's row 2 is unreachable: not the backward's bit)
    want = ob.perturb_vjp_rows(*args, ybar, queue=queue, split=False)
    rel = 1e-12 if dtype == np.float64 else 2e-6
    _assert_cotangents_close(got, want, rel)
    got_s = ob.scale_vjp_rows(*args, etabar, queue=queue, split=plan)
    want_s = ob.scale_vjp_rows(*args, etabar, queue=queue, split=False)
    if math.isinf(p):
        for g, w in zip(got_s, want_s):
            assert (g is None) == (w is None)
            if g is not None:
                np.testing.assert_array_equal(g, w)
    else:
        _assert_cotangents_close(got_s, want_s, rel)
    if dtype == np.float64:
        eta_ref, _ = bisect_eta(x, d, eps, p, lower, upper)
        ref = generic.perturb_vjp_rows(x, d, eps, p, lower, upper, eta_ref, ybar)
        for name, g in zip(("x", "delta", "eps", "lower", "upper"), got):
            r = ref[name]
            assert (g is None) == (r is None), name
            if g is not None:
                scale = max(float(np.abs(np.asarray(r)).max()), 1e-300)
                np.testing.assert_allclose(g, np.asarray(r), rtol=0, atol=1e-9 * scale)
    x = x.copy()
    x[2, 10] = np.nan
    ob.perturb_vjp_rows(x, *args[1:], ybar, queue=queue, split=plan, err=err)
    assert int(err[0]) == ERR_BITS["x non-finite"]


@pytest.mark.parametrize("rounds", (0,) if reduced() else (0, 1))
def test_split_backward_rows_left_to_the_finish(queue: Any, rounds: int, monkeypatch: Any) -> None:
    """The backward's split solve with too few rounds: the finish completes the rows and
    its element checks still report (0 rounds: the first pass runs in the finish)."""
    monkeypatch.setattr(kernels, "SPLIT_ROUNDS", rounds)
    rng = np.random.default_rng([rounds, 6])
    n = 3000
    x, d, eps, lower, upper = make_case(rng, n, np.float64, "scalar", 2.0)
    ybar = rng.standard_normal(x.shape)
    err = np.zeros(1, np.int32)
    got = ob.perturb_vjp_rows(
        x, d, eps, 2.0, lower, upper, ybar, queue=queue, split=_plan(n, 512), err=err
    )
    want = ob.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, ybar, queue=queue, split=False)
    _assert_cotangents_close(got, want, 1e-12)
    assert int(err[0]) == 0
    d = d.copy()
    d[4, 2999] = np.inf
    ob.perturb_vjp_rows(
        x, d, eps, 2.0, lower, upper, ybar, queue=queue, split=_plan(n, 512), err=err
    )
    assert int(err[0]) == ERR_BITS["delta non-finite"]


def test_split_plan_policy() -> None:
    """Split only when one block per row leaves blocks idle and segments stay long; the
    segments cover the row."""
    assert split_plan(200, 10**6, 528) is not None
    assert split_plan(600, 10**6, 528) is None  # the batch fills the blocks
    assert split_plan(1, 60_000, 528) is None  # too short to cut
    for B, n in ((1, 10**7), (3, 123_457), (64, 150528), (100, 2 * 10**6)):
        plan = split_plan(B, n, 528)
        assert plan is not None and plan.seg % kernels.BLOCK == 0
        assert (plan.groups - 1) * plan.seg < n <= plan.groups * plan.seg
        assert plan.seg >= kernels.SPLIT_MIN_SEGMENT
        assert B * plan.groups <= 528 + B
