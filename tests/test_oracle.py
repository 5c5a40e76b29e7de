"""Self-checks of the test oracle (no clipresc involved): closed forms, hand-worked
examples, and agreement of the two independent solvers (sort-and-walk vs bisection)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from support import oracle
from support.checks import examples
from support.strategies import P_SPECIAL, Case, cases


@pytest.mark.parametrize("p", [*P_SPECIAL, 0.31, 4.9])
@pytest.mark.parametrize("precise", [True, False])
def test_no_clipping_is_naive(p, precise):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (4, 50))
    d = rng.normal(size=(4, 50)) * 1e-3
    eps = np.array([0.01, 0.002, 0.0, 0.005])
    eta = oracle.oracle_eta(x, d, eps, p, precise=precise)
    nrm = oracle.lp_size(d, p)
    np.testing.assert_allclose(eta, eps / nrm, rtol=4e-16 * (1 + 1 / p))
    eta = oracle.oracle_eta(x, d, eps, p, None, None, precise=precise)
    np.testing.assert_allclose(eta, eps / nrm, rtol=4e-16 * (1 + 1 / p))


def test_hand_examples():
    x = np.array([[0.5, 0.9]])
    d = np.array([[1.0, 1.0]])
    assert oracle.oracle_eta(x, d, 0.5, 1.0)[0] == pytest.approx(0.4, rel=1e-15)
    # unreachable: max key
    x = np.array([[0.5, 0.25, 1.0, 0.5]])
    d = np.array([[1.0, -0.125, 2.0, -2.0]])
    for p in (0.5, 1.0, 2.0, 3.0):
        assert oracle.oracle_eta(x, d, 10.0, p)[0] == 2.0
    # p = inf
    x = np.array([[0.0, 0.0, 0.5]])
    d = np.array([[1.0, 4.0, 1.0]])
    assert oracle.oracle_eta(x, d, 2.0, math.inf)[0] == 0.25
    assert oracle.oracle_eta(x, d, 0.5, math.inf)[0] == 0.125
    x = np.array([[0.5, -1.0]])
    d = np.array([[2.0, 1.0]])
    assert oracle.oracle_eta(x, d, 0.5, math.inf, -1.0, 1.0)[0] == 0.25
    # tie: p = 1, keys [0.5, 1], g(0.5) = 0.75
    x = np.array([[0.5, 0.5]])
    d = np.array([[1.0, 0.5]])
    assert oracle.oracle_eta(x, d, 0.75, 1.0)[0] == 0.5
    # nothing movable / eps 0
    assert oracle.oracle_eta(x, np.zeros_like(d), 1.0, 2.0)[0] == 0.0
    assert oracle.oracle_eta(x, d, 0.0, 2.0)[0] == 0.0
    # stuck elements only
    assert oracle.oracle_eta(np.array([[1.0, 0.0]]), np.array([[1.0, -1.0]]), 1.0, 2.0)[0] == 0.0


@settings(max_examples=examples(100))
@given(cases(dtypes=(np.float64,)))
def test_oracle_solvers_agree(case: Case):
    x2, d2, e, lo, hi = case.as_2d()
    a = oracle.oracle_eta(x2, d2, e, case.p, lo, hi, precise=True)
    b = oracle.oracle_eta(x2, d2, e, case.p, lo, hi, precise=False)
    c = oracle.bisect_eta(x2, d2, e, case.p, lo, hi)
    lo_b, _, hi_b, ms = oracle.oracle_eta_bracket(x2, d2, e, case.p, lo, hi, rel_T=1e-12)
    tol = 1e-13
    for other in (b, c):
        ok = (other >= lo_b * (1 - tol)) & (other <= hi_b * (1 + tol))
        assert ok.all(), (case, a, other, lo_b, hi_b)
    # achieved size at the oracle's eta
    size = oracle.achieved_size(x2, d2, a, case.p, lo, hi)
    movable = (d2 != 0).any(axis=1)
    reach = movable & (e < ms * (1 - 1e-9))
    np.testing.assert_allclose(size[reach], e[reach], rtol=1e-14 * (1 + 1 / case.p))
    unreach = movable & (e > ms * (1 + 1e-9))
    np.testing.assert_allclose(size[unreach], ms[unreach], rtol=1e-14 * (1 + 1 / case.p))
