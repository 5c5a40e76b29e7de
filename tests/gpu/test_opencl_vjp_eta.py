"""The VJP kernel given the forward's ``eta`` (no solve) on a CPU OpenCL device.

Two oracles: the VJP kernel that solves each row itself (held to finite differences by
``test_opencl_exec.py``), which a given float64 ``eta`` from the forward must reproduce
bit for bit, since the kernel then recovers the breakpoint index and the unreachable flag
in its sums pass instead of the solve; and the pure array-API VJP
(``clipresc.backends.generic``) evaluated at a deliberately different ``eta``, which shows
that the given value is the one the kernel uses.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue, reduced

from support.gpu_cases import BOUND_KINDS, make_case

cl = import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402

P_VALUES = (0.5, 1.0, 2.0, math.inf) if not reduced() else (2.0, math.inf)
NAMES = ("x", "delta", "eps", "lower", "upper")


@pytest.fixture(scope="module")
def queue() -> Any:
    return opencl_queue()


def _same(got: Any, ref: Any, what: str) -> None:
    for name, g, r in zip(NAMES, got, ref):
        if g is None or r is None:
            assert (g is None) == (r is None), f"{what} {name}"
            continue
        np.testing.assert_array_equal(g, r, err_msg=f"{what} {name}")


@pytest.mark.parametrize("n", (9, 600))
@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_given_eta_reproduces_the_solving_vjp(queue: Any, p: float, kind: str, n: int) -> None:
    """make_case's rows cover moderate and heavy clipping, unreachable eps, eps = 0 and an
    all-zero delta: the cases in which k and the flag decide the eta part."""
    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), n, 41])
    x, d, eps, lower, upper = make_case(rng, n, np.float64, kind, p)
    eta, _ = ob.scale_rows(x, d, eps, p, lower, upper, queue=queue)
    ybar = rng.normal(size=x.shape)
    etabar = rng.normal(size=x.shape[0])
    args = (x, d, eps, p, lower, upper)
    _same(
        ob.perturb_vjp_rows(*args, ybar, queue=queue, eta=eta),
        ob.perturb_vjp_rows(*args, ybar, queue=queue),
        "perturb",
    )
    _same(
        ob.scale_vjp_rows(*args, etabar, queue=queue, eta=eta),
        ob.scale_vjp_rows(*args, etabar, queue=queue),
        "scale",
    )


def test_given_eta_inf_eps_zero_and_no_candidate(queue: Any) -> None:
    """p = inf corner cases of the recovered index: eps = 0 with and without an element
    that has room (k = -1 then: epsbar 0), and an unreachable row (k = arg-max (s, a))."""
    x = np.array([[1.0, 0.0, 0.5], [1.0, 1.0, 0.0], [0.5, 0.9, 0.2]])
    d = np.array([[1.0, -2.0, 3.0], [2.0, 1.0, -1.0], [1.0, 2.0, -0.5]])
    eps = np.array([0.0, 0.0, 0.7])  # row 2: largest room 0.5 < 0.7, unreachable
    etabar = np.array([1.0, 1.0, 1.0])
    eta, flags = ob.scale_rows(x, d, eps, math.inf, 0.0, 1.0, queue=queue)
    assert flags.tolist() == [False, False, True]
    given = ob.scale_vjp_rows(x, d, eps, math.inf, 0.0, 1.0, etabar, queue=queue, eta=eta)
    solved = ob.scale_vjp_rows(x, d, eps, math.inf, 0.0, 1.0, etabar, queue=queue)
    _same(given, solved, "scale")
    assert given[2][1] == 0.0  # no room anywhere in row 1: no eps derivative
    assert given[2][0] == pytest.approx(1.0 / 3.0)  # row 0: 1 / max |d| over s > 0


@pytest.mark.parametrize("p", (1.0, 2.0, 3.0), ids=lambda p: f"p{p}")
def test_given_eta_is_the_one_used(queue: Any, p: float) -> None:
    """(Finite p: for p = inf the kernel finds eta in the one pass that recovering the
    breakpoint index takes anyway, so it does not read a given one.)"""
    from clipresc.backends import generic

    rng = np.random.default_rng([int(min(p, 99)), 43])
    x, d, eps, lower, upper = make_case(rng, 300, np.float64, "full", p)
    eta, _ = ob.scale_rows(x, d, eps, p, lower, upper, queue=queue)
    other = eta * 0.75  # another saturated set: gradients that differ from eta's
    ybar = rng.normal(size=x.shape)
    got = ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue, eta=other)
    ref = generic.perturb_vjp_rows(x, d, eps, p, lower, upper, other, ybar)
    at_eta = ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, queue=queue)
    assert not np.allclose(got[0], at_eta[0])
    for name, g in zip(NAMES, got):
        r = ref[name]
        if g is None or r is None:
            assert (g is None) == (r is None), name
            continue
        np.testing.assert_allclose(g, np.asarray(r), rtol=1e-9, atol=1e-12, err_msg=name)


def test_given_eta_float32(queue: Any) -> None:
    """float32 data: on reachable rows the kernel reads the saturated set at the
    forward's float32 eta, like the generic backend (both take the eta they are given);
    on the unreachable row (eta = the largest breakpoint, which float32 rounds down) it
    recovers the exact value and matches the solving VJP bit for bit."""
    from clipresc.backends import generic

    rng = np.random.default_rng(44)
    x, d, eps, lower, upper = make_case(rng, 257, np.float32, "scalar", 2.0)
    eta, flags = ob.scale_rows(x, d, eps, 2.0, lower, upper, queue=queue)
    assert flags.tolist() == [False, False, True, False, False, False]
    ybar = rng.normal(size=x.shape).astype(np.float32)
    got = ob.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, ybar, queue=queue, eta=eta)
    ref = generic.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, eta, ybar)
    solved = ob.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, ybar, queue=queue)
    ok = ~flags
    for name, g, sv in zip(NAMES[:3], got[:3], solved[:3]):
        assert g.dtype == np.float32
        r = np.asarray(ref[name])
        np.testing.assert_allclose(g[ok], r[ok], rtol=2e-5, atol=2e-6, err_msg=name)
        np.testing.assert_array_equal(g[~ok], sv[~ok], err_msg=name)
