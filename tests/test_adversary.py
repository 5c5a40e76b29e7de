"""The Newton worst case: the safeguard must bound the work and keep the answer exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clipresc
from clipresc import _clipresc
from support import oracle
from support.checks import assert_eta_in_bracket, check_eta, check_perturb, examples
from support.strategies import Case

P_FINITE = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0]


def _k_chain(n: int, p: float) -> int:
    """Number of chain elements the adversary places (see rust/core/src/adversary.rs):
    only used to decide whether plain Newton would exceed the pass limit."""
    k_max = int(min(max((120.0 * p - 27.0) // 2.0, 1.0), 40.0))
    return min(k_max, n - 1)


@pytest.mark.parametrize("p", P_FINITE)
@pytest.mark.parametrize("n", [2, 16, 100, 4096])
def test_adversary_shape(n, p):
    x, d, eps = _clipresc.newton_adversary(n, p)
    assert x.dtype == np.float64 and d.dtype == np.float64
    assert x.shape == (n,) and d.shape == (n,)
    assert np.all((x >= 0) & (x <= 1)) and np.all(np.isfinite(d)) and eps > 0
    # eps is reachable (strictly below the largest size)
    ms = oracle.max_size(x[None], d[None], p, 0.0, 1.0)[0]
    assert eps < ms


@pytest.mark.parametrize("p", P_FINITE)
@pytest.mark.parametrize("n", [64, 1000, 100_000])
def test_plain_newton_is_slow_on_adversary(n, p):
    """Without the safeguard (a huge pass limit) Newton fixes one element per pass."""
    x, d, eps = _clipresc.newton_adversary(n, p)
    k = _k_chain(n, p)
    [(eta, passes, used)] = _clipresc.solve_stats(
        x[None], d[None], eps, p, 0.0, 1.0, max_newton_passes=10_000
    )
    assert not used
    assert passes >= k, (passes, k)
    # the adversary is ill-conditioned by design (condition numbers up to ~1e9): compare
    # with the oracle bracket, not with a fixed relative tolerance
    assert_eta_in_bracket(x[None], d[None], eps, p, [eta])


@pytest.mark.parametrize("p", P_FINITE)
@pytest.mark.parametrize("n", [64, 1000, 100_000])
def test_safeguard_bounds_passes_on_adversary(n, p):
    x, d, eps = _clipresc.newton_adversary(n, p)
    k = _k_chain(n, p)
    [(eta, passes, used)] = _clipresc.solve_stats(x[None], d[None], eps, p, 0.0, 1.0)
    assert passes <= 16
    if k + 1 > 4:
        assert used, "the default pass limit (4) must trigger the safeguard"
    assert_eta_in_bracket(x[None], d[None], eps, p, [eta])
    eta_pub = clipresc.scale(x, d, eps, p=p)
    assert eta_pub.shape == (1,)
    assert_eta_in_bracket(x[None], d[None], eps, p, eta_pub)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 8, 16])
def test_any_pass_limit_gives_the_same_answer(limit):
    x, d, eps = _clipresc.newton_adversary(2000, 2.0)
    [(eta, passes, used)] = _clipresc.solve_stats(
        x[None], d[None], eps, 2.0, 0.0, 1.0, max_newton_passes=limit
    )
    assert used
    assert passes <= max(limit, 16)
    assert_eta_in_bracket(x[None], d[None], eps, 2.0, [eta])


def test_solve_stats_batch_rows_independent():
    rng = np.random.default_rng(3)
    xa, da, eps = _clipresc.newton_adversary(512, 2.0)
    xr = rng.uniform(0, 1, 512)
    dr = rng.normal(size=512)
    x2 = np.stack([xr, xa, xr, xa])
    d2 = np.stack([dr, da, dr, da])
    stats = _clipresc.solve_stats(x2, d2, eps, 2.0, 0.0, 1.0)
    assert len(stats) == 4
    assert stats[0] == stats[2] and stats[1] == stats[3]
    assert stats[1][2] and stats[1][1] <= 16
    assert_eta_in_bracket(x2, d2, eps, 2.0, [s[0] for s in stats])


@settings(max_examples=examples(40))
@given(
    n=st.integers(2, 3000),
    p=st.one_of(st.sampled_from(P_FINITE), st.floats(0.3, 5.0)),
    dtype=st.sampled_from([np.float32, np.float64]),
    mirror=st.booleans(),
    permute=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    batch_with_random=st.booleans(),
)
def test_adversary_property(n, p, dtype, mirror, permute, seed, batch_with_random):
    x, d, eps = _clipresc.newton_adversary(n, p)
    rng = np.random.default_rng(seed)
    if mirror:  # move towards the upper bound instead
        x, d = 1.0 - x, -d
    if permute:
        perm = rng.permutation(n)
        x, d = x[perm], d[perm]
    x2, d2 = x[None], d[None]
    if batch_with_random:
        xr = rng.uniform(0, 1, (2, n))
        xr[:, ::3] = 0.0
        x2 = np.concatenate([xr[:1], x2, xr[1:]])
        d2 = np.concatenate([rng.normal(size=(1, n)), d2, rng.normal(size=(1, n))])
    if dtype == np.float64 and not mirror and not permute:
        stats = _clipresc.solve_stats(np.ascontiguousarray(x2), d2, eps, p, 0.0, 1.0)
        assert all(s[1] <= 16 for s in stats)
        k = _k_chain(n, p)
        row = 1 if batch_with_random else 0
        if k + 1 > 8:
            assert stats[row][2]
    case = Case(x=x2.astype(dtype), delta=d2.astype(dtype), eps=eps, p=p, bounds=(0.0, 1.0))
    eta = clipresc.scale(case.x, case.delta, eps, p=p)
    ref = check_eta(case, eta)
    y = clipresc.perturb(case.x, case.delta, eps, p=p)
    check_perturb(case, eta, y, ref)
