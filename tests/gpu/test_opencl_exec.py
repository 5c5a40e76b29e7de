"""Execute the GPU kernels (the same source CuPy compiles) as OpenCL C on a CPU device.

Needs ``pyopencl`` and an OpenCL device with float64, e.g. Debian's PoCL CPU device
(``pocl-opencl-icd``, which ``make test`` installs); ``_opencl_env`` says what happens
without one (skipped under plain pytest, a failure under ``make test``). Results are compared
with an independent float64 bisection oracle (``_gpu_oracle.py``), the VJP kernels with
central finite differences of the forward kernel in float64, and (when built) with the
Rust core's ``clipresc.scale``.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _gpu_oracle import (
    BOUND_KINDS,
    adversarial_row,
    bisect_eta,
    make_case,
    rooms,
    size_pow,
)
from _opencl_env import import_pyopencl, opencl_queue, reduced

cl = import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402

P_VALUES = (0.5, 1.0, 2.0, 3.0, math.inf)
DTYPES = (np.float32, np.float64)
#: Under CLIPRESC_KERNEL_TESTS=reduced (the Oclgrind check, ~40x slower than PoCL) the
#: forward runs on one length below and one above a block; otherwise on all edge lengths.
LENGTHS = (1, 257) if reduced() else (1, 7, 255, 256, 257, 5000)
#: passes over a row the kernel may ever make (totals + 8 Newton + 66 bisection).
MAX_PASSES = 1 + 8 + 66


@pytest.fixture(scope="module")
def queue() -> Any:
    return opencl_queue()


def _rtol(dtype: Any) -> float:
    return 2e-6 if dtype == np.float32 else 1e-10


# ------------------------------------------------------------------------- forward


@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_forward_matches_oracle(queue: Any, p: float, dtype: Any, n: int, kind: str) -> None:
    rng = np.random.default_rng([int(min(p, 99) * 10), n, len(kind), np.dtype(dtype).itemsize])
    x, d, eps, lower, upper = make_case(rng, n, dtype, kind, p)
    res = ob.forward_rows(x, d, eps, p, lower, upper, want_y=True, want_passes=True, queue=queue)
    eta_ref, unreach_ref = bisect_eta(x, d, eps, p, lower, upper)

    assert res.eta.dtype == dtype and res.y is not None and res.y.dtype == dtype
    np.testing.assert_array_equal(res.unreachable, unreach_ref)
    np.testing.assert_allclose(res.eta.astype(np.float64), eta_ref, rtol=_rtol(dtype), atol=0)
    assert res.eta[3] == 0 and res.eta[4] == 0  # eps = 0, all-zero delta
    assert res.passes is not None and res.passes.max() <= MAX_PASSES

    # fused apply: y = clip(x + eta d, l, u) with the kernel's (double) eta
    s, a, mv = rooms(x, d, lower, upper)
    lo = np.broadcast_to(-np.inf if lower is None else lower, x.shape).astype(np.float64)
    hi = np.broadcast_to(np.inf if upper is None else upper, x.shape).astype(np.float64)
    y_ref = np.clip(x.astype(np.float64) + eta_ref[:, None] * d.astype(np.float64), lo, hi)
    tol = 4e-7 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(res.y.astype(np.float64), y_ref, rtol=tol, atol=tol)
    if dtype == np.float64:
        # achieved size equals eps on reachable rows
        sz = size_pow(s, a, mv, res.eta.astype(np.float64), p)
        target = np.where(unreach_ref, np.nan, eps if math.isinf(p) else eps**p)
        ok = ~unreach_ref & (eps > 0) & mv.any(axis=1)
        np.testing.assert_allclose(sz[ok], target[ok], rtol=1e-10)

    # scale_rows / perturb_rows agree with forward_rows
    eta2, m2 = ob.scale_rows(x, d, eps, p, lower, upper, queue=queue)
    np.testing.assert_array_equal(eta2, res.eta)
    np.testing.assert_array_equal(m2, res.unreachable)
    y3, eta3, _ = ob.perturb_rows(x, d, eps, p, lower, upper, queue=queue)
    np.testing.assert_array_equal(y3, res.y)
    np.testing.assert_array_equal(eta3, res.eta)


def _backward_error(x: np.ndarray, d: np.ndarray, eps: float, p: float, eta: float) -> float:
    """|achieved^p - eps^p| / eps^p for one row, summed exactly (math.fsum)."""
    s, a, mv = rooms(x[None, :], d[None, :], 0.0, 1.0)
    terms = np.minimum(eta * a[mv], s[mv]) ** p
    return abs(math.fsum(terms.tolist()) - eps**p) / eps**p


@pytest.mark.parametrize("p", (0.5, 1.0, 2.0, 3.0), ids=lambda p: f"p{p}")
def test_adversarial_chain_is_bounded_and_exact(queue: Any, p: float) -> None:
    K = 40
    x, d, eps, lower, upper, newton = adversarial_row(p, K=K)
    # the construction really is adversarial for plain Newton
    assert newton == K + 1
    res = ob.forward_rows(
        x[None, :], d[None, :], eps, p, lower, upper, want_passes=True, queue=queue
    )
    assert not res.unreachable[0]
    assert res.passes is not None
    assert res.passes[0] <= MAX_PASSES
    assert res.passes[0] < newton  # the safeguard beat plain Newton
    # The chain is badly conditioned (eps^p - C is ~1e-14 eps^p at the solution), so eta
    # itself is only defined to a few digits by float64 inputs: check that the achieved
    # size is eps to rounding (backward error), like the bisection oracle's answer.
    eta_ref, _ = bisect_eta(x[None, :], d[None, :], eps, p, lower, upper)
    assert _backward_error(x, d, eps, p, float(eta_ref[0])) < 1e-14
    assert _backward_error(x, d, eps, p, float(res.eta[0])) < 1e-14


@pytest.mark.parametrize("p", (0.5, 1.0, 2.0, 3.0), ids=lambda p: f"p{p}")
def test_adversarial_chain_short_is_exact(queue: Any, p: float) -> None:
    """A shorter, well-conditioned chain: more passes than Newton's budget, exact eta."""
    K = 12
    x, d, eps, lower, upper, newton = adversarial_row(p, K=K)
    assert newton == K + 1
    res = ob.forward_rows(
        x[None, :], d[None, :], eps, p, lower, upper, want_passes=True, queue=queue
    )
    eta_ref, _ = bisect_eta(x[None, :], d[None, :], eps, p, lower, upper)
    np.testing.assert_allclose(res.eta, eta_ref, rtol=1e-9)
    assert res.passes is not None and res.passes[0] <= MAX_PASSES


@pytest.mark.parametrize("p", (0.5, 1.0, 2.0, 3.0), ids=lambda p: f"p{p}")
def test_adversarial_chain_float32(queue: Any, p: float) -> None:
    x, d, eps, lower, upper, _ = adversarial_row(p, K=12, dtype=np.float32)
    res = ob.forward_rows(
        x[None, :], d[None, :], eps, p, lower, upper, want_passes=True, queue=queue
    )
    eta_ref, _ = bisect_eta(x[None, :], d[None, :], eps, p, lower, upper)
    np.testing.assert_allclose(res.eta.astype(np.float64), eta_ref, rtol=2e-6)
    assert res.passes is not None and res.passes[0] <= MAX_PASSES


def test_many_rows_and_scalar_eps(queue: Any) -> None:
    """More rows than one launch wave, a scalar eps and a (B, 1) per-row bound."""
    rng = np.random.default_rng(7)
    B, n = 300, 33
    x = rng.uniform(0.1, 0.9, (B, n))
    d = rng.normal(size=(B, n))
    upper = rng.uniform(0.9, 1.0, (B, 1))
    eta, mask = ob.scale_rows(x, d, 0.7, 2.0, 0.0, upper, queue=queue)
    eta_ref, mask_ref = bisect_eta(x, d, 0.7, 2.0, 0.0, upper)
    np.testing.assert_allclose(eta, eta_ref, rtol=1e-10)
    np.testing.assert_array_equal(mask, mask_ref)


def test_ties_count_as_saturated(queue: Any) -> None:
    # eps chosen so that the solution lands exactly on element 0's breakpoint
    x = np.array([[0.5, 0.0, 0.0, 0.0]])
    d = np.array([[1.0, 1.0, 1.0, 1.0]])  # keys: 0.5, 1, 1, 1
    eps = 0.5 * 4**0.5  # eta = 0.5: all four move by 0.5 -> size 1.0
    res = ob.forward_rows(x, d, eps, 2.0, 0.0, 1.0, queue=queue)
    assert res.eta[0] == 0.5 and not res.unreachable[0]
    assert res.y is not None and res.y[0, 0] == 1.0  # saturated element sits on the bound
    # p = inf tie: eps equal to the room of the element with the largest |d|
    eta, _ = ob.scale_rows(np.array([[0.75, 0.0]]), np.array([[2.0, 1.0]]), 0.25, math.inf)
    assert eta[0] == 0.125


def test_no_room_and_zero_delta(queue: Any) -> None:
    # movable elements without room: unreachable for eps > 0, eta 0; zero delta: not flagged
    x = np.array([[1.0, 1.0, 0.5], [0.2, 0.3, 0.4]])
    d = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    for p in (2.0, math.inf):
        eta, mask = ob.scale_rows(x, d, 0.1, p, 0.0, 1.0, queue=queue)
        np.testing.assert_array_equal(eta, [0.0, 0.0])
        np.testing.assert_array_equal(mask, [True, False])


def test_vjp_eps_zero_inf_uses_movable_elements(queue: Any) -> None:
    # p = inf, eps = 0: eta = eps / max{|d_i| : s_i > 0} for small eps > 0
    x = np.array([[1.0, 0.5, 0.5]])
    d = np.array([[4.0, 2.0, -1.0]])  # element 0 has no room
    _, _, eb, _, _ = ob.scale_vjp_rows(x, d, 0.0, math.inf, 0.0, 1.0, 1.0, queue=queue)
    assert eb[0] == 0.5
    eta, mask = ob.scale_rows(x, d, 0.0, math.inf, 0.0, 1.0, queue=queue)
    assert eta[0] == 0.0 and not mask[0]


def test_infinite_bounds_never_saturate(queue: Any) -> None:
    x = np.zeros((1, 3))
    d = np.array([[1.0, 2.0, -1.0]])
    eta, mask = ob.scale_rows(x, d, 10.0, 2.0, None, None, queue=queue)
    assert not mask[0]
    np.testing.assert_allclose(eta[0], 10.0 / math.sqrt(6.0), rtol=1e-14)
    eta, mask = ob.scale_rows(x, d, 10.0, math.inf, None, None, queue=queue)
    assert eta[0] == 5.0 and not mask[0]


def test_empty_inputs(queue: Any) -> None:
    eta, mask = ob.scale_rows(np.zeros((0, 5)), np.zeros((0, 5)), 1.0, 2.0, queue=queue)
    assert eta.shape == (0,) and mask.shape == (0,)
    eta, mask = ob.scale_rows(np.zeros((2, 0)), np.zeros((2, 0)), [1.0, 0.0], 2.0, queue=queue)
    np.testing.assert_array_equal(eta, [0.0, 0.0])
    np.testing.assert_array_equal(mask, [False, False])


# ------------------------------------------------------------------------- Rust core


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("kind", BOUND_KINDS)
def test_matches_rust_core(queue: Any, p: float, kind: str) -> None:
    from clipresc import scale

    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        x, d, eps, lower, upper = make_case(rng, 300, dtype, kind, p)
        eta, _ = ob.scale_rows(x, d, eps, p, lower, upper, queue=queue)
        ref = np.asarray(scale(x, d, eps, p=p, bounds=(lower, upper))).reshape(-1)
        np.testing.assert_allclose(eta, ref, rtol=4e-6 if dtype == np.float32 else 1e-12)


# ------------------------------------------------------------------------- VJP


def _vjp_case(
    rng: np.random.Generator, n: int, kind: str, p: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """float64 data for finite differences: 4 rows (moderate and heavy clipping,
    unreachable, eps = 0), x away from its bounds, a zero entry of delta."""
    x, d, eps, lower, upper = make_case(rng, n, np.float64, kind, p)
    keep = [0, 1, 2, 3]
    x, d, eps = x[keep], d[keep], eps[keep]
    if isinstance(lower, np.ndarray) and lower.ndim == 2:
        lower = lower[keep]
    if isinstance(upper, np.ndarray) and upper.ndim == 2:
        upper = upper[keep]
    return x, d, eps, lower, upper


# The finite differences evaluate the forward once or twice per input element. Under
# CLIPRESC_KERNEL_TESTS=reduced (Oclgrind, where one launch takes seconds) they evaluate
# the Rust core's forward instead, which test_matches_rust_core holds to the kernels; the
# VJP kernel under test still runs on the same data and is held to the same tolerances.
_FD_ON_CORE = reduced()


def _perturb_loss(queue: Any, p: float, ybar: np.ndarray) -> Any:
    def f(x: np.ndarray, d: np.ndarray, eps: np.ndarray, lo: Any, hi: Any) -> float:
        if _FD_ON_CORE:
            from clipresc import perturb

            y = np.asarray(perturb(x, d, eps, p=p, bounds=(lo, hi)))
        else:
            y, _, _ = ob.perturb_rows(x, d, eps, p, lo, hi, queue=queue)
        return float((ybar * y).sum())

    return f


def _scale_loss(queue: Any, p: float, etabar: np.ndarray) -> Any:
    def f(x: np.ndarray, d: np.ndarray, eps: np.ndarray, lo: Any, hi: Any) -> float:
        if _FD_ON_CORE:
            from clipresc import scale

            eta = np.asarray(scale(x, d, eps, p=p, bounds=(lo, hi))).reshape(-1)
        else:
            eta, _ = ob.scale_rows(x, d, eps, p, lo, hi, queue=queue)
        return float((etabar * eta).sum())

    return f


def _fd_grads(f: Any, args: list[Any], h: float = 1e-6) -> list[Any]:
    """Central differences of f(*args) w.r.t. every array argument (None for scalars);
    the eps argument (index 2) uses a forward difference where eps == 0."""
    grads: list[Any] = []
    for which, arg in enumerate(args):
        if not isinstance(arg, np.ndarray):
            grads.append(None)
            continue
        g = np.zeros_like(arg, dtype=np.float64)
        for idx in np.ndindex(arg.shape):
            if not np.isfinite(arg[idx]):
                continue
            call = list(args)
            if which == 2 and arg[idx] == 0:
                plus = arg.copy()
                plus[idx] += h
                call[which] = plus
                g[idx] = (f(*call) - f(*args)) / h
                continue
            plus, minus = arg.copy(), arg.copy()
            plus[idx] += h
            minus[idx] -= h
            call[which] = plus
            fp = f(*call)
            call[which] = minus
            g[idx] = (fp - f(*call)) / (2 * h)
        grads.append(g)
    return grads


def _check(analytic: Any, fd: Any, what: str) -> None:
    if fd is None:
        assert analytic is None, what
        return
    assert analytic is not None, what
    np.testing.assert_allclose(analytic, fd, rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_vjp_against_finite_differences(queue: Any, p: float, kind: str) -> None:
    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), 3])
    x, d, eps, lower, upper = _vjp_case(rng, 6, kind, p)
    args = [x, d, eps, lower, upper]
    names = ("x", "delta", "eps", "lower", "upper")

    ybar = rng.normal(size=x.shape)
    got = list(ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue))
    fd = _fd_grads(_perturb_loss(queue, p, ybar), args)
    if p < 1:
        # eta ~ eta0 + O(|delta_j|^p) around delta_j = 0: the finite difference of
        # y_j = x_j + eta * delta_j is off by O(h^p) there; the kernel gives ybar_j * eta0.
        zero = d == 0
        got[1] = np.where(zero, 0.0, got[1])
        fd[1] = np.where(zero, 0.0, fd[1])
    for name, g, r in zip(names, got, fd):
        _check(g, r, f"perturb {name}")

    etabar = rng.normal(size=x.shape[0])
    got = list(ob.scale_vjp_rows(x, d, eps, p, lower, upper, etabar, queue=queue))
    fd = _fd_grads(_scale_loss(queue, p, etabar), args)
    for name, g, r in zip(names, got, fd):
        _check(g, r, f"scale {name}")


@pytest.mark.parametrize("kind", ("full", "shared"))
@pytest.mark.parametrize("p", (0.7, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_vjp_directional_long_rows(queue: Any, p: float, kind: str) -> None:
    """Rows longer than a block: one random direction through every input at once."""
    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), 5])
    x, d, eps, lower, upper = _vjp_case(rng, 600, kind, p)
    x, d, eps = x[:3], d[:3], eps[:3]  # reachable rows and the unreachable one
    if lower.ndim == 2:
        lower, upper = lower[:3], upper[:3]
    ybar = rng.normal(size=x.shape)
    etabar = rng.normal(size=x.shape[0])
    args = [x, d, eps, lower, upper]
    dirs = [rng.normal(size=a.shape) * 1e-2 for a in args]
    dirs[2] = dirs[2] * eps  # keep eps positive
    for a, v in zip(args[3:], dirs[3:]):
        v[~np.isfinite(a)] = 0.0
    h = 1e-5

    def moved(t: float) -> list[Any]:
        return [a + t * v for a, v in zip(args, dirs)]

    for loss, got in (
        (_perturb_loss(queue, p, ybar), ob.perturb_vjp_rows(*args[:2], eps, p, lower, upper, ybar)),
        (_scale_loss(queue, p, etabar), ob.scale_vjp_rows(*args[:2], eps, p, lower, upper, etabar)),
    ):
        fd = (loss(*moved(h)) - loss(*moved(-h))) / (2 * h)
        an = sum(float((g * v).sum()) for g, v in zip(got, dirs))
        assert an == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_vjp_zero_rows_and_float32(queue: Any) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 0.9, (3, 9))
    d = rng.normal(size=(3, 9))
    d[1] = 0.0
    eps = np.array([0.3, 0.3, 0.0])
    ybar = rng.normal(size=x.shape)
    xb, db, eb, lb, ub = ob.perturb_vjp_rows(x, d, eps, 2.0, 0.0, 1.0, ybar, queue=queue)
    assert lb is None and ub is None
    np.testing.assert_array_equal(xb[1], ybar[1])  # zero delta: y = x
    np.testing.assert_array_equal(db[1], 0.0)  # ... and eta = 0
    assert eb[1] == 0.0
    np.testing.assert_array_equal(xb[2], ybar[2])  # eps = 0: eta = 0
    # eps = 0: the right derivative M^(-1/p) * sum(ybar * d)
    assert eb[2] == pytest.approx((ybar[2] * d[2]).sum() / np.sqrt((d[2] ** 2).sum()))
    got32 = ob.perturb_vjp_rows(
        x.astype(np.float32), d.astype(np.float32), eps, 2.0, 0.0, 1.0, ybar, queue=queue
    )
    got64 = ob.perturb_vjp_rows(
        x.astype(np.float32).astype(np.float64),
        d.astype(np.float32).astype(np.float64),
        eps,
        2.0,
        0.0,
        1.0,
        ybar.astype(np.float32).astype(np.float64),
        queue=queue,
    )
    for a, b in zip(got32[:3], got64[:3]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_vjp_matches_generic_backend(queue: Any, p: float, kind: str) -> None:
    """Same conventions as the pure array-API VJP (clipresc.backends.generic)."""
    from clipresc.backends import generic

    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), 23])
    x, d, eps, lower, upper = make_case(rng, 300, np.float64, kind, p)
    upper_g = math.inf if upper is None else upper
    ybar = rng.normal(size=x.shape)
    etabar = rng.normal(size=x.shape[0])
    eta, _ = ob.scale_rows(x, d, eps, p, lower, upper, queue=queue)
    names = ("x", "delta", "eps", "lower", "upper")
    for got, ref in (
        (
            ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue),
            generic.perturb_vjp_rows(x, d, eps, p, lower, upper_g, eta, ybar),
        ),
        (
            ob.scale_vjp_rows(x, d, eps, p, lower, upper, etabar, queue=queue),
            generic.scale_vjp_rows(x, d, eps, p, lower, upper_g, eta, etabar),
        ),
    ):
        for name, g in zip(names, got):
            r = ref[name]
            if g is None or r is None:
                assert (g is None) == (r is None), name
                continue
            np.testing.assert_allclose(g, np.asarray(r), rtol=1e-9, atol=1e-12, err_msg=name)
