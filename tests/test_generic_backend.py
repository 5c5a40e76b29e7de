"""Tests of the pure array-API backend (``clipresc.backends.generic``).

The forward is checked against an independent float64 oracle written here: the achieved
post-clip size ``||clip(x + eta d, l, u) - x||_p`` (evaluated as the clipped step
``clip(eta d, l - x, u - x)``, which is the same number without cancellation) must equal
``eps`` to 1e-12 relative, and ``eta`` must match a bisection on that size; saturating
values of unreachable rows are computed by brute force. The VJPs are checked against
central finite differences in float64. Everything runs on NumPy and array-api-strict
(also pinned to the 2023.12 and 2022.12 standards, which lack ``take_along_axis`` /
``cumulative_sum``), and under ``jax.jit`` when JAX is installed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import oracle
from clipresc.backends import generic as G
from fd import central_diff, one_sided_diff

P_FWD = [0.5, 1.0, 2.0, 3.0, math.inf]
P_GRAD = [0.7, 1.0, 2.0, 3.0, math.inf]
BOUND_KINDS = ["scalar", "elem_n", "elem_bn", "lower_only", "upper_only", "none", "mixed_inf"]


# --------------------------------------------------------------------------- namespaces


@dataclass
class NS:
    name: str
    conv: Callable[[np.ndarray], Any]

    def arr(self, a: np.ndarray) -> Any:
        return self.conv(np.asarray(a))

    def bound(self, b: Any) -> Any:
        return b if isinstance(b, float) else self.arr(b)


def _strict_ns(version: str | None) -> Iterator[NS]:
    strict = pytest.importorskip("array_api_strict")
    ctx = (
        strict.ArrayAPIStrictFlags(api_version=version)
        if version is not None
        else contextlib.nullcontext()
    )
    with ctx:
        yield NS(f"strict-{version}", strict.asarray)


@pytest.fixture(params=["numpy", "strict", "strict-2023.12", "strict-2022.12"])
def ns(request: pytest.FixtureRequest) -> Iterator[NS]:
    if request.param == "numpy":
        yield NS("numpy", np.asarray)
    else:
        version = request.param.partition("-")[2] or None
        yield from _strict_ns(version)


@pytest.fixture(params=["numpy", "strict"])
def ns2(request: pytest.FixtureRequest) -> Iterator[NS]:
    if request.param == "numpy":
        yield NS("numpy", np.asarray)
    else:
        yield from _strict_ns(None)


def namespaces() -> Iterator[NS]:
    """NumPy, then array-api-strict (if installed) at each standard version tested."""
    yield NS("numpy", np.asarray)
    try:
        import array_api_strict  # noqa: F401
    except ImportError:
        return
    for version in (None, "2023.12", "2022.12"):
        yield from _strict_ns(version)


def to_np(a: Any) -> np.ndarray:
    return np.asarray(a)


# --------------------------------------------------------------------------- oracle


def full(b: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(b, dtype=np.float64), shape)


def rooms(x: np.ndarray, d: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    lo, hi = full(lo, x.shape), full(hi, x.shape)
    with np.errstate(invalid="ignore"):
        s = np.where(d > 0, hi - x, x - lo)
    return np.where(d != 0, s, 0.0)


def achieved(x: np.ndarray, d: np.ndarray, eta: np.ndarray, lo: Any, hi: Any, p: float) -> Any:
    """``||clip(x + eta d, lo, hi) - x||_p`` per row, in float64."""
    lo, hi = full(lo, x.shape), full(hi, x.shape)
    step = np.abs(np.clip(np.asarray(eta, np.float64)[:, None] * d, lo - x, hi - x))
    if math.isinf(p):
        return step.max(axis=1)
    return (step**p).sum(axis=1) ** (1.0 / p)


def max_size(x: np.ndarray, d: np.ndarray, lo: Any, hi: Any, p: float) -> np.ndarray:
    s = rooms(x, d, lo, hi)
    if math.isinf(p):
        return s.max(axis=1)
    return (s**p).sum(axis=1) ** (1.0 / p)


def saturating_eta(x: np.ndarray, d: np.ndarray, lo: Any, hi: Any, p: float) -> np.ndarray:
    """Brute-force saturating eta (contract): finite p: max s_i/|d_i|; inf: see contract."""
    s = rooms(x, d, lo, hi)
    out = np.zeros(x.shape[0])
    for r in range(x.shape[0]):
        mov = [i for i in range(x.shape[1]) if d[r, i] != 0]
        if not mov:
            continue
        if math.isinf(p):
            smax = max(s[r, i] for i in mov)
            out[r] = min(s[r, i] / abs(d[r, i]) for i in mov if s[r, i] == smax)
        else:
            out[r] = max(s[r, i] / abs(d[r, i]) for i in mov)
    return out


# --------------------------------------------------------------------------- data


def make_bounds(rng: np.random.Generator, kind: str, b: int, n: int) -> tuple[Any, Any, np.ndarray]:
    """(lower, upper, x) with lower <= x <= upper; Python floats for scalar bounds."""
    u = rng.uniform(size=(b, n))
    if kind == "scalar":
        return 0.0, 1.0, u
    if kind in ("elem_n", "elem_bn"):
        shape = (n,) if kind == "elem_n" else (b, n)
        lo = -rng.uniform(0.1, 1.0, size=shape)
        hi = rng.uniform(0.5, 2.0, size=shape)
        return lo, hi, lo + u * (hi - lo)
    if kind == "lower_only":
        return 0.0, math.inf, 2 * u
    if kind == "upper_only":
        return -math.inf, 1.0, 2 * u - 1
    if kind == "none":
        return -math.inf, math.inf, 2 * u - 1
    if kind == "mixed_inf":
        lo = np.where(rng.uniform(size=n) < 0.3, -np.inf, -rng.uniform(0.1, 1.0, size=n))
        hi = np.where(rng.uniform(size=n) < 0.3, np.inf, rng.uniform(0.5, 2.0, size=n))
        return lo, hi, np.clip(2 * u - 1, lo, hi)
    raise AssertionError(kind)


@dataclass
class Case:
    x: np.ndarray
    d: np.ndarray
    eps: np.ndarray
    lo: Any
    hi: Any
    zero_rows: np.ndarray  # bool (B,)
    unreachable: np.ndarray  # bool (B,), rows built to be unreachable


def make_case(kind: str, p: float, seed: int, b: int = 10, n: int = 24) -> Case:
    rng = np.random.default_rng(seed)
    lo, hi, x = make_bounds(rng, kind, b, n)
    d = rng.standard_normal((b, n))
    d[rng.uniform(size=(b, n)) < 0.15] = 0.0
    d[0] = 0.0  # an all-zero direction
    # a few elements exactly on a bound (zero room when delta points there)
    lo_f, hi_f = full(lo, x.shape), full(hi, x.shape)
    for r in range(2, b):
        for i in rng.choice(n, size=3, replace=False):
            if np.isfinite(hi_f[r, i]) and rng.uniform() < 0.5:
                x[r, i] = hi_f[r, i]
            elif np.isfinite(lo_f[r, i]):
                x[r, i] = lo_f[r, i]
    # the last row moves only towards finite bounds, so its size is bounded
    last = b - 1
    toward_hi = np.isfinite(hi_f[last]) & (rng.uniform(size=n) < 0.5)
    toward_lo = np.isfinite(lo_f[last]) & ~toward_hi
    d[last] = np.where(toward_hi, np.abs(d[last]), np.where(toward_lo, -np.abs(d[last]), 0.0))
    size = max_size(x, d, lo, hi, p)
    fracs = [0.5, 0.0, 0.03, 0.2, 0.5, 0.8, 0.95, 0.999, 0.6]
    eps = np.empty(b)
    unreachable = np.zeros(b, dtype=bool)
    for r in range(b - 1):
        if np.isfinite(size[r]):
            eps[r] = fracs[r] * size[r]
        else:  # infinite room: any eps is reachable
            one = slice(r, r + 1)
            unit = achieved(x[one], d[one], np.ones(1), lo_f[one], hi_f[one], p)[0]
            eps[r] = fracs[r] * 3.0 * unit
    if np.isfinite(size[last]) and size[last] > 0:
        eps[last] = 1.5 * size[last]
        unreachable[last] = True
    else:
        eps[last] = 0.3
    return Case(x, d, eps, lo, hi, ~np.any(d != 0, axis=1), unreachable)


def check_forward(case: Case, p: float, eta: np.ndarray, mask: np.ndarray, rtol: float) -> None:
    x, d, eps, lo, hi = case.x, case.d, case.eps, case.lo, case.hi
    b = x.shape[0]
    assert eta.shape == (b,) and mask.shape == (b,) and mask.dtype == np.bool_
    assert np.all(np.isfinite(eta)) and np.all(eta >= 0)
    trivial = case.zero_rows | (eps == 0)
    np.testing.assert_array_equal(eta[trivial], 0.0)
    assert not mask[trivial].any()
    np.testing.assert_array_equal(mask, case.unreachable & ~trivial)
    sat = saturating_eta(x, d, lo, hi, p)
    np.testing.assert_allclose(eta[mask], sat[mask], rtol=1e-14)
    reach = ~mask & ~trivial
    lo_r, hi_r = full(lo, x.shape)[reach], full(hi, x.shape)[reach]
    got = achieved(x[reach], d[reach], eta[reach], lo_r, hi_r, p)
    np.testing.assert_allclose(got, eps[reach], rtol=rtol, atol=0)
    ref = oracle.bisect_eta(x[reach], d[reach], eps[reach], p, lo_r, hi_r)
    np.testing.assert_allclose(eta[reach], ref, rtol=1e3 * rtol, atol=0)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("p", P_FWD)
def test_scale_rows_matches_oracle(ns: NS, p: float, kind: str) -> None:
    for seed in range(3):
        case = make_case(kind, p, seed)
        eta, mask = G.scale_rows(
            ns.arr(case.x),
            ns.arr(case.d),
            ns.arr(case.eps),
            p,
            ns.bound(case.lo),
            ns.bound(case.hi),
        )
        assert str(eta.dtype).endswith("float64")
        check_forward(case, p, to_np(eta), to_np(mask), rtol=1e-12)


@pytest.mark.parametrize("kind", ["scalar", "elem_bn", "mixed_inf"])
@pytest.mark.parametrize("p", P_FWD)
def test_perturb_rows(ns: NS, p: float, kind: str) -> None:
    case = make_case(kind, p, seed=7)
    args = (
        ns.arr(case.x),
        ns.arr(case.d),
        ns.arr(case.eps),
        p,
        ns.bound(case.lo),
        ns.bound(case.hi),
    )
    y, eta, mask = (to_np(a) for a in G.perturb_rows(*args))
    eta2, mask2 = (to_np(a) for a in G.scale_rows(*args))
    np.testing.assert_array_equal(eta, eta2)
    np.testing.assert_array_equal(mask, mask2)
    lo, hi = full(case.lo, y.shape), full(case.hi, y.shape)
    assert np.all((lo <= y) & (y <= hi))
    np.testing.assert_allclose(
        y, np.clip(case.x + eta[:, None] * case.d, lo, hi), rtol=0, atol=1e-15
    )
    diff = np.abs(y - case.x)
    size = diff.max(axis=1) if math.isinf(p) else (diff**p).sum(axis=1) ** (1 / p)
    reach = ~mask
    np.testing.assert_allclose(size[reach], case.eps[reach], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("p", P_FWD)
def test_float32_is_rounded_float64(p: float) -> None:
    case = make_case("elem_n", p, seed=3)
    x32, d32, e32 = (a.astype(np.float32) for a in (case.x, case.d, case.eps))
    lo32, hi32 = case.lo.astype(np.float32), case.hi.astype(np.float32)
    eta32, m32 = G.scale_rows(x32, d32, e32, p, lo32, hi32)
    up = (a.astype(np.float64) for a in (x32, d32, e32))
    eta64, m64 = G.scale_rows(*up, p, lo32.astype(np.float64), hi32.astype(np.float64))
    assert eta32.dtype == np.float32
    np.testing.assert_array_equal(eta32, eta64.astype(np.float32))
    np.testing.assert_array_equal(m32, m64)
    y32, _, _ = G.perturb_rows(x32, d32, e32, p, lo32, hi32)
    assert y32.dtype == np.float32


@pytest.mark.parametrize("p", P_FWD)
def test_edge_rows(ns: NS, p: float) -> None:
    # row 0: zero direction, eps > 0; row 1: eps = 0 with zero room on some elements;
    # row 2: every movable element has zero room (largest size 0, eps > 0: unreachable);
    # row 3: eps exactly the largest size; row 4: ties between keys
    x = np.array(
        [
            [0.2, 0.5, 0.7, 0.9],
            [1.0, 0.5, 0.0, 0.3],
            [1.0, 0.5, 0.0, 1.0],
            [0.2, 0.5, 0.7, 0.9],
            [0.5, 0.5, 0.75, 0.25],
        ]
    )
    d = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, -1.0, 0.0],
            [2.0, 0.0, -1.0, 1.0],
            [1.0, -2.0, 0.5, 1.0],
            [1.0, -1.0, 0.5, -0.5],
        ]
    )
    eps = np.array([0.7, 0.0, 0.1, 0.0, 0.0])
    eps[3] = max_size(x[3:4], d[3:4], 0.0, 1.0, p)[0]
    eps[4] = 0.5 * max_size(x[4:5], d[4:5], 0.0, 1.0, p)[0]
    eta, mask = (to_np(a) for a in G.scale_rows(ns.arr(x), ns.arr(d), ns.arr(eps), p, 0.0, 1.0))
    assert eta[0] == 0 and not mask[0]
    assert eta[1] == 0 and not mask[1]
    assert eta[2] == 0 and mask[2]
    sat = saturating_eta(x[3:4], d[3:4], 0.0, 1.0, p)[0]
    np.testing.assert_allclose(eta[3], sat, rtol=1e-12)  # the flag may go either way here
    np.testing.assert_allclose(
        achieved(x[4:5], d[4:5], eta[4:5], 0.0, 1.0, p), eps[4:5], rtol=1e-12
    )
    assert not mask[4]


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
@pytest.mark.parametrize("p", [2.0, math.inf])
def test_empty_shapes(ns: NS, p: float, shape: tuple[int, int]) -> None:
    x = ns.arr(np.full(shape, 0.5))
    eps = ns.arr(np.full(shape[0], 0.1))
    lo = ns.arr(np.zeros(shape[1]))
    eta, mask = G.scale_rows(x, x, eps, p, lo, 1.0)
    assert eta.shape == (shape[0],) and not np.any(to_np(mask))
    np.testing.assert_array_equal(to_np(eta), 0.0)
    y, _, _ = G.perturb_rows(x, x, eps, p, lo, 1.0)
    assert y.shape == shape
    g = G.perturb_vjp_rows(x, x, eps, p, lo, 1.0, eta, x)
    assert g["x"].shape == shape and g["eps"].shape == (shape[0],)
    assert g["lower"].shape == (shape[1],) and g["upper"] is None


def test_ties_count_as_saturated() -> None:
    # p = 1 with exactly representable data: elements 0 and 1 both have key 0.09375 and
    # eps is chosen so that the solution is exactly that key
    x = np.array([[0.5, 0.5, 0.5, 0.5]])
    d = np.array([[4.0, -4.0, 1.0, 1.0]])
    lo = np.array([0.0, 0.125, 0.0, -np.inf])
    hi = np.array([0.875, 1.0, 0.875, np.inf])
    # at eta = 0.09375: elements 0, 1 reach their bounds (0.375 each), 2 and 3 move 0.09375
    eps = np.array([0.9375])
    eta, mask = G.scale_rows(x, d, eps, 1.0, lo, hi)
    assert eta[0] == 0.09375 and not mask[0]
    g = G.scale_vjp_rows(x, d, eps, 1.0, lo, hi, eta, np.ones(1))
    # ties saturated: elements 0, 1 are in S (x gradient), only 2, 3 get delta gradient
    assert g["x"][0, 0] == 0.5 and g["x"][0, 1] == -0.5
    assert g["delta"][0, 0] == 0 and g["delta"][0, 1] == 0
    assert g["eps"][0] == 0.5  # the right derivative: M = |d_2| + |d_3|


# --------------------------------------------------------------------------- jax


def _jax_jit(
    fns: tuple[Callable[..., Any], ...], p: float, lo: Any, hi: Any, *arrays: Any
) -> tuple[Any, ...]:
    """Call every ``fn(x, d, eps, p, lo, hi, *extra)`` inside one ``jax.jit``.

    Array bounds are traced arguments, Python-number bounds are static.
    """
    import jax

    lo_arr = not isinstance(lo, float)
    hi_arr = not isinstance(hi, float)

    def f(*a: Any) -> tuple[Any, ...]:
        rest = list(a[3:])
        lo_ = rest.pop(0) if lo_arr else lo
        hi_ = rest.pop(0) if hi_arr else hi
        return tuple(fn(a[0], a[1], a[2], p, lo_, hi_, *rest) for fn in fns)

    bounds = [b for b, is_arr in ((lo, lo_arr), (hi, hi_arr)) if is_arr]
    return jax.jit(f)(*arrays[:3], *bounds, *arrays[3:])  # type: ignore[no-any-return]


# Each jit compile costs about a second, so the JAX tests use fewer combinations.
JAX_KINDS = ["scalar", "elem_bn", "mixed_inf"]


@pytest.mark.parametrize("kind", JAX_KINDS)
@pytest.mark.parametrize("p", P_FWD)
def test_jax_jit_float64(p: float, kind: str) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    with jax.enable_x64(True):
        case = make_case(kind, p, seed=11)
        conv = NS("jax", jnp.asarray)
        (eta, mask), (_, eta2, mask2) = _jax_jit(
            (G.scale_rows, G.perturb_rows), p, conv.bound(case.lo), conv.bound(case.hi),
            conv.arr(case.x), conv.arr(case.d), conv.arr(case.eps),
        )  # fmt: skip
        assert eta.dtype == jnp.float64
    check_forward(case, p, to_np(eta), to_np(mask), rtol=1e-12)
    np.testing.assert_array_equal(to_np(eta2), to_np(eta))
    np.testing.assert_array_equal(to_np(mask2), to_np(mask))


@pytest.mark.parametrize("p", P_FWD)
def test_jax_jit_float32(p: float) -> None:
    """Without x64 JAX has no float64: the backend then works in float32."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    if jax.config.jax_enable_x64:
        pytest.skip("x64 enabled globally")
    case = make_case("mixed_inf", p, seed=5)
    x, d, eps, lo, hi = (
        np.asarray(a, dtype=np.float32).astype(np.float64)
        for a in (case.x, case.d, case.eps, case.lo, case.hi)
    )
    conv = NS("jax32", lambda a: jnp.asarray(a, dtype=jnp.float32))
    ((eta, mask),) = _jax_jit(
        (G.scale_rows,), p, conv.arr(lo), conv.arr(hi), conv.arr(x), conv.arr(d), conv.arr(eps)
    )
    assert eta.dtype == jnp.float32
    eta64, mask64 = G.scale_rows(x, d, eps, p, lo, hi)
    np.testing.assert_array_equal(to_np(mask), mask64)
    np.testing.assert_allclose(to_np(eta), eta64, rtol=2e-4, atol=0)


# --------------------------------------------------------------------------- gradients


def grad_case(kind: str, p: float, seed: int) -> Case:
    """A case with x strictly inside its bounds and every element clear of breakpoints."""
    for attempt in range(200):
        rng = np.random.default_rng(1000 * seed + attempt)
        b, n = 5, 7
        lo, hi, _ = make_bounds(rng, kind, b, n)
        lo_f, hi_f = full(lo, (b, n)), full(hi, (b, n))
        a = np.where(np.isfinite(lo_f), lo_f, -1.0)
        z = np.where(np.isfinite(hi_f), hi_f, 1.0)
        x = a + rng.uniform(0.1, 0.9, size=(b, n)) * (z - a)
        d = rng.standard_normal((b, n))
        d = np.where(np.abs(d) < 0.1, 0.1 * np.sign(d), d)
        d[1, 2] = 0.0  # a resting element
        last = b - 1  # unreachable row: every element moves towards a finite bound
        if not np.all(np.isfinite(lo_f[last]) | np.isfinite(hi_f[last])):
            continue  # (a zero entry there would be a discontinuity for delta)
        up = np.isfinite(hi_f[last]) & ((d[last] > 0) | ~np.isfinite(lo_f[last]))
        d[last] = np.where(up, np.abs(d[last]), -np.abs(d[last]))
        size = max_size(x, d, lo, hi, p)
        fr = np.array([0.35, 0.6, 0.85, 0.5, 0.0])
        inf_room = ~np.isfinite(size)
        eps = np.where(inf_room, 1.5 * fr, fr * np.where(inf_room, 1.0, size))
        unreachable = np.zeros(b, dtype=bool)
        if np.isfinite(size[last]) and size[last] > 0:
            eps[last] = 1.3 * size[last]
            unreachable[last] = True
        else:
            eps[last] = 0.4
        case = Case(x, d, eps, lo, hi, ~np.any(d != 0, axis=1), unreachable)
        if case.zero_rows.any():
            continue
        eta, _ = G.scale_rows(x, d, eps, p, lo, hi)
        s = rooms(x, d, lo, hi)
        mov = d != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            key = np.where(mov, s / np.abs(d), np.inf)
        gap = np.abs(key - eta[:, None]) / eta[:, None]
        gap = np.where(mov & np.isfinite(key) & ~unreachable[:, None], gap, np.inf)
        ok = gap.min() > 1e-3
        if math.isinf(p):  # also keep s away from eps
            sgap = np.where(mov & np.isfinite(s), np.abs(s - eps[:, None]), np.inf)
            ok = ok and sgap.min() > 1e-3
        # unreachable row: a unique deciding element (largest key, or largest room for inf)
        deciding = s[last] if math.isinf(p) else key[last]
        k = np.sort(np.where(mov[last], deciding, -np.inf))
        ok = ok and (not unreachable[last] or k[-1] - k[-2] > 1e-3 * k[-1])
        if ok:
            return case
    raise AssertionError("no well-separated case found")


def _loss_fns(
    ns: NS, case: Case, p: float, etabar: np.ndarray, ybar: np.ndarray
) -> tuple[Callable[..., float], Callable[..., float]]:
    def scale_loss(x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> float:
        eta, _ = G.scale_rows(ns.arr(x), ns.arr(d), ns.arr(eps), p, ns.bound(lo), ns.bound(hi))
        return float(np.sum(etabar * to_np(eta)))

    def perturb_loss(x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> float:
        y, _, _ = G.perturb_rows(ns.arr(x), ns.arr(d), ns.arr(eps), p, ns.bound(lo), ns.bound(hi))
        return float(np.sum(ybar * to_np(y)))

    return scale_loss, perturb_loss


def assert_grad_close(got: Any, want: np.ndarray, what: str) -> None:
    got = to_np(got)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got)), what
    err = np.linalg.norm(got - want)
    assert err <= 1e-6 * np.linalg.norm(want) + 1e-9, f"{what}: {got} vs {want}"


@pytest.mark.parametrize("kind", ["scalar", "elem_n", "elem_bn", "lower_only", "mixed_inf"])
@pytest.mark.parametrize("p", P_GRAD)
def test_vjp_matches_finite_differences(p: float, kind: str) -> None:
    case = grad_case(kind, p, seed=1)
    rng = np.random.default_rng(2)
    b, n = case.x.shape
    etabar = rng.standard_normal(b)
    ybar = rng.standard_normal((b, n))
    # finite differences of the NumPy forward (the other namespaces' forwards are checked
    # against the oracle above); the VJPs are then evaluated on every namespace
    scale_loss, perturb_loss = _loss_fns(NS("numpy", np.asarray), case, p, etabar, ybar)
    args = [case.x, case.d, case.eps, case.lo, case.hi]
    names = ["x", "delta", "eps", "lower", "upper"]
    want_s, want_p = {}, {}
    for i, name in enumerate(names):
        if i < 3 or not isinstance(args[i], float):
            want_s[name] = central_diff(scale_loss, args, i)
            want_p[name] = central_diff(perturb_loss, args, i)
    for ns in namespaces():
        xs = [ns.arr(case.x), ns.arr(case.d), ns.arr(case.eps), p]
        bounds = [ns.bound(case.lo), ns.bound(case.hi)]
        eta, mask = G.scale_rows(*xs, *bounds)
        np.testing.assert_array_equal(to_np(mask), case.unreachable)
        _, eta_p, _ = G.perturb_rows(*xs, *bounds)
        gs = G.scale_vjp_rows(*xs, *bounds, eta, ns.arr(etabar))
        gp = G.perturb_vjp_rows(*xs, *bounds, eta_p, ns.arr(ybar))
        for name in names:
            if name not in want_s:
                assert gs[name] is None and gp[name] is None
                continue
            assert_grad_close(gs[name], want_s[name], f"{ns.name} scale {name}")
            want = want_p[name].copy()
            if name == "delta" and p <= 1:
                # at the resting element d[1, 2] = 0, y_j = x_j + eta(d_j) d_j with
                # eta(h) - eta(0) ~ |h|^p: the derivative is eta, but central differences
                # converge only like h^p there (p <= 1), so check that entry exactly
                got = to_np(gp[name])[1, 2]
                np.testing.assert_allclose(got, ybar[1, 2] * to_np(eta_p)[1], rtol=1e-14)
                want[1, 2] = got
            assert_grad_close(gp[name], want, f"{ns.name} perturb {name}")


@pytest.mark.parametrize("p", P_GRAD)
def test_vjp_at_eps_zero(ns2: NS, p: float) -> None:
    x = np.array([[0.3, 1.0, 0.5, 0.0, 0.8], [0.2, 0.4, 0.6, 0.8, 0.9]])
    d = np.array([[1.0, 2.0, -0.5, -1.0, 0.0], [0.5, -1.5, 1.0, 2.0, -0.7]])
    eps = np.zeros(2)
    lo, hi = np.zeros(5), np.ones(5)
    xs = [ns2.arr(x), ns2.arr(d), ns2.arr(eps), p, ns2.arr(lo), ns2.arr(hi)]
    eta, _ = G.scale_rows(*xs)
    g = G.scale_vjp_rows(*xs, eta, ns2.arr(np.ones(2)))
    movable = (d != 0) & (rooms(x, d, lo, hi) > 0)
    want = np.where(movable, np.abs(d), 0.0).max(axis=1) ** -1.0 if math.isinf(p) else (
        (np.where(movable, np.abs(d), 0.0) ** p).sum(axis=1) ** (-1.0 / p)
    )  # fmt: skip
    np.testing.assert_allclose(to_np(g["eps"]), want, rtol=1e-14)

    def loss(e: np.ndarray) -> float:
        eta_e, _ = G.scale_rows(xs[0], xs[1], ns2.arr(e), p, xs[4], xs[5])
        return float(np.sum(to_np(eta_e)))

    np.testing.assert_allclose(to_np(g["eps"]), one_sided_diff(loss, [eps], 0), rtol=1e-6)
    for name in ("x", "delta", "lower", "upper"):
        np.testing.assert_array_equal(to_np(g[name]), 0.0)
    ybar = np.ones_like(x)
    gp = G.perturb_vjp_rows(*xs, eta, ns2.arr(ybar))
    for name in ("x", "delta", "eps", "lower", "upper"):
        assert np.all(np.isfinite(to_np(gp[name])))


@pytest.mark.parametrize("p", [0.5, 0.7])
def test_vjp_zero_room_p_below_one(p: float) -> None:
    # element 1 sits on its upper bound and points at it: s = 0, s^(p-1) = inf
    x = np.array([[0.3, 1.0, 0.5, 0.4]])
    d = np.array([[1.0, 1.0, -0.5, 0.7]])
    eps = np.array([0.4])
    lo, hi = np.zeros(4), np.ones(4)
    eta, _ = G.scale_rows(x, d, eps, p, lo, hi)
    g = G.scale_vjp_rows(x, d, eps, p, lo, hi, eta, np.ones(1))
    gp = G.perturb_vjp_rows(x, d, eps, p, lo, hi, eta, np.ones((1, 4)))
    for gg in (g, gp):
        for name in ("x", "delta", "eps", "lower", "upper"):
            assert np.all(np.isfinite(gg[name])), name
    assert g["x"][0, 1] == 0 and g["upper"][1] == 0 and g["lower"][1] == 0
    # the rest still agrees with finite differences (element 1's x/upper excluded: there
    # the function is only one-sided, with infinite slope)

    def loss(xx: np.ndarray, dd: np.ndarray, ee: np.ndarray) -> float:
        return float(G.scale_rows(xx, dd, ee, p, lo, hi)[0].sum())

    fx = central_diff(loss, [x, d, eps], 0)
    np.testing.assert_allclose(g["x"][0, [0, 2, 3]], fx[0, [0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(
        g["delta"], central_diff(loss, [x, d, eps], 1), rtol=1e-6, atol=1e-12
    )
    np.testing.assert_allclose(g["eps"], central_diff(loss, [x, d, eps], 2), rtol=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_vjp_breakpoint_is_right_derivative(p: float) -> None:
    # eta passed exactly on element 0's breakpoint: it counts as saturated, so the
    # gradient is the one-sided derivative for increasing eps (and increasing x_0).
    x = np.array([[0.7, 0.2, 0.4, 0.5]])
    d = np.array([[1.0, 0.8, -0.6, 0.3]])
    lo, hi = 0.0, 1.0
    eta0 = np.array([(1.0 - 0.7) / 1.0])
    eps = achieved(x, d, eta0, lo, hi, p)
    g = G.scale_vjp_rows(x, d, eps, p, lo, hi, eta0, np.ones(1))

    def loss(xx: np.ndarray, ee: np.ndarray) -> float:
        return float(G.scale_rows(xx, d, ee, p, lo, hi)[0].sum())

    right_eps = one_sided_diff(loss, [x, eps], 1, h=1e-8)
    np.testing.assert_allclose(g["eps"], right_eps, rtol=1e-5)

    def loss_x0(x0: np.ndarray) -> float:
        return loss(np.concatenate([x0, x[:, 1:]], axis=1), eps)

    right_x0 = one_sided_diff(loss_x0, [x[:, :1]], 0, h=1e-8)
    np.testing.assert_allclose(g["x"][:, :1], right_x0, rtol=1e-5)
    assert g["x"][0, 0] > 0 and g["delta"][0, 0] == 0


def test_vjp_unreachable_follows_last_element() -> None:
    x = np.array([[0.5, 0.25, 0.75, 0.5]])
    d = np.array([[1.0, -0.125, 0.125, 0.0]])  # keys 0.5, 2.0, 2.0 (first index wins)
    eps = np.array([10.0])
    for p in (0.7, 2.0):
        eta, mask = G.scale_rows(x, d, eps, p, 0.0, 1.0)
        assert mask[0] and eta[0] == 2.0
        g = G.scale_vjp_rows(x, d, eps, p, 0.0, 1.0, eta, np.ones(1))
        assert g["eps"][0] == 0
        np.testing.assert_array_equal(g["x"], [[0.0, 8.0, 0.0, 0.0]])
        np.testing.assert_array_equal(g["delta"], [[0.0, 16.0, 0.0, 0.0]])
        lo = np.zeros((1, 4))
        g = G.scale_vjp_rows(x, d, eps, p, lo, 1.0, eta, np.ones(1))
        assert g["lower"].shape == (1, 4) and g["upper"] is None
        np.testing.assert_array_equal(g["lower"], [[0.0, -8.0, 0.0, 0.0]])
        # perturb: every movable element sits on its bound, so etabar = 0
        gp = G.perturb_vjp_rows(x, d, eps, p, lo, 1.0, eta, np.ones((1, 4)))
        np.testing.assert_array_equal(gp["x"], [[0.0, 0.0, 0.0, 1.0]])
        np.testing.assert_array_equal(gp["lower"], [[0.0, 1.0, 0.0, 0.0]])


def test_vjp_p_inf_reachable_only_eps_and_delta_k() -> None:
    x = np.array([[0.5, 0.2, 0.9, 0.5]])
    d = np.array([[1.0, -3.0, 4.0, 2.0]])
    eps = np.array([0.15])  # element 2 (room 0.1) cannot take it; element 1 (|d| = 3) decides
    lo, hi = np.zeros(4), np.ones(4)
    eta, mask = G.scale_rows(x, d, eps, math.inf, lo, hi)
    assert not mask[0]
    np.testing.assert_allclose(eta, [0.05], rtol=1e-15)
    g = G.scale_vjp_rows(x, d, eps, math.inf, lo, hi, eta, np.ones(1))
    np.testing.assert_array_equal(g["x"], 0.0)
    np.testing.assert_array_equal(g["lower"], 0.0)
    np.testing.assert_array_equal(g["upper"], 0.0)
    np.testing.assert_allclose(g["delta"], [[0.0, 0.05 / 3.0, 0.0, 0.0]], rtol=1e-14)
    np.testing.assert_allclose(g["eps"], [1 / 3.0], rtol=1e-14)


@pytest.mark.parametrize("p", P_GRAD)
def test_vjp_zero_rows_and_bound_shapes(p: float) -> None:
    x = np.full((3, 4), 0.5)
    d = np.zeros((3, 4))
    d[1] = [1.0, -1.0, 0.5, 0.0]
    eps = np.array([0.3, 0.2, 0.0])
    lo = np.zeros((1, 4))
    hi = np.ones(4)
    eta, _ = G.scale_rows(x, d, eps, p, lo, hi)
    for g in (
        G.scale_vjp_rows(x, d, eps, p, lo, hi, eta, np.ones(3)),
        G.perturb_vjp_rows(x, d, eps, p, lo, hi, eta, np.ones((3, 4))),
    ):
        assert g["lower"].shape == (1, 4) and g["upper"].shape == (4,)
        assert g["x"].shape == (3, 4) and g["delta"].shape == (3, 4) and g["eps"].shape == (3,)
        assert g["eps"][0] == 0 and np.all(np.isfinite(g["eps"]))
    gs = G.scale_vjp_rows(x, d, eps, p, lo, hi, eta, np.ones(3))
    np.testing.assert_array_equal(gs["x"][0], 0.0)
    np.testing.assert_array_equal(gs["delta"][0], 0.0)


@pytest.mark.parametrize("kind", ["scalar", "elem_bn"])
@pytest.mark.parametrize("p", P_GRAD)
def test_jax_jit_vjp(p: float, kind: str) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    case = grad_case(kind, p, seed=3)
    rng = np.random.default_rng(4)
    b, n = case.x.shape
    etabar = rng.standard_normal(b)
    ybar = rng.standard_normal((b, n))
    eta_np, _ = G.scale_rows(case.x, case.d, case.eps, p, case.lo, case.hi)
    want_s = G.scale_vjp_rows(case.x, case.d, case.eps, p, case.lo, case.hi, eta_np, etabar)
    want_p = G.perturb_vjp_rows(case.x, case.d, case.eps, p, case.lo, case.hi, eta_np, ybar)

    def both(x: Any, d: Any, e: Any, p_: float, lo: Any, hi: Any, *rest: Any) -> Any:
        eta, eb, yb = rest
        return (
            G.scale_vjp_rows(x, d, e, p_, lo, hi, eta, eb),
            G.perturb_vjp_rows(x, d, e, p_, lo, hi, eta, yb),
        )

    with jax.enable_x64(True):
        conv = NS("jax", jnp.asarray)
        ((got_s, got_p),) = _jax_jit(
            (both,), p, conv.bound(case.lo), conv.bound(case.hi),
            conv.arr(case.x), conv.arr(case.d), conv.arr(case.eps),
            conv.arr(eta_np), conv.arr(etabar), conv.arr(ybar),
        )  # fmt: skip
    for got, want in ((got_s, want_s), (got_p, want_p)):
        for name in ("x", "delta", "eps", "lower", "upper"):
            if want[name] is None:
                assert got[name] is None
            else:
                np.testing.assert_allclose(to_np(got[name]), want[name], rtol=1e-12, atol=1e-14)
