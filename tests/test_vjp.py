"""``clipresc.scale_vjp`` / ``clipresc.perturb_vjp`` on NumPy arrays (the Rust closed form).

Oracles: central finite differences of the public forward functions in float64 (p in
{0.7, 1, 2, 3, inf}, per-element, per-channel and one-sided bounds, reachable and
unreachable ``eps``, non-trailing vector axes), a one-sided difference at ``eps = 0``,
hand-derived values on tiny inputs, and the array-API implementation
(:mod:`clipresc.backends.generic`) for the Rust-vs-generic comparison.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import clipresc
from clipresc import _clipresc
from clipresc.backends import generic
from support.fd import central_diff, one_sided_diff

PS = [0.7, 1.0, 2.0, 3.0, math.inf]
KEYS = ("x", "delta", "eps", "lower", "upper")


def problem(
    seed: int, shape: tuple[int, ...] = (3, 2, 4), bounds: str = "element"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """x strictly inside its box, directions bounded away from 0, bounds of the given kind."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(shape)
    d = np.where(np.abs(d) < 0.2, np.sign(d) * 0.2 + d, d)
    if bounds == "element":
        lo = -rng.uniform(0.0, 0.4, shape)
        hi = 1.0 + rng.uniform(0.0, 0.4, shape)
    elif bounds == "channel":  # shared by every vector, broadcast along the last axis
        lo = -rng.uniform(0.0, 0.4, (*shape[1:-1], 1))
        hi = 1.0 + rng.uniform(0.0, 0.4, (*shape[1:-1], 1))
    elif bounds == "lower-only":
        lo, hi = -rng.uniform(0.0, 0.4, shape), None
    else:
        lo, hi = 0.0, 1.0
    x = rng.uniform(0.05, 0.95, shape)
    return x, d, np.array([0.0]), lo, hi


def max_size(x: np.ndarray, d: np.ndarray, lo: Any, hi: Any, p: float, axes: Any) -> np.ndarray:
    lo_b = np.broadcast_to(-np.inf if lo is None else lo, x.shape)
    hi_b = np.broadcast_to(np.inf if hi is None else hi, x.shape)
    s = np.where(d > 0, hi_b - x, np.where(d < 0, x - lo_b, 0.0))
    if math.isinf(p):
        return np.max(s, axis=axes)
    return np.sum(s**p, axis=axes) ** (1.0 / p)


def objective(kind: str, cot: np.ndarray, p: float, axis: Any) -> Callable[..., float]:
    """``sum(cot * f(x, delta, eps, lower, upper))`` for f = scale or perturb."""

    def f(x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> float:
        fn = clipresc.scale if kind == "scale" else clipresc.perturb
        return float(np.sum(cot * fn(x, d, eps, p=p, bounds=(lo, hi), axis=axis)))

    return f


def check_fd(
    kind: str, x: Any, d: Any, eps: Any, lo: Any, hi: Any, p: float, axis: Any, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    out_shape = clipresc.scale(x, d, eps, p=p, bounds=(lo, hi), axis=axis).shape
    cot = rng.standard_normal(out_shape if kind == "scale" else x.shape)
    fn = clipresc.scale_vjp if kind == "scale" else clipresc.perturb_vjp
    g = fn(x, d, eps, cot, p=p, bounds=(lo, hi), axis=axis)
    f = objective(kind, cot, p, axis)
    args = [x, d, np.asarray(eps, dtype=np.float64), lo, hi]
    for i, key in enumerate(KEYS):
        if args[i] is None or (np.ndim(args[i]) == 0 and key in ("lower", "upper")):
            assert g[key] is None, key
            continue
        want = central_diff(f, args, i, h=1e-7)
        got = np.asarray(g[key])
        assert got.shape == np.shape(args[i]), key
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale, err_msg=f"{key}")


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("kind", ["scale", "perturb"])
@pytest.mark.parametrize("bounds", ["element", "channel", "lower-only", "scalar"])
@pytest.mark.parametrize("frac", [0.3, 0.8, 1.6])
def test_matches_central_differences(p: float, kind: str, bounds: str, frac: float) -> None:
    x, d, _, lo, hi = problem(7, bounds=bounds)
    if hi is None:  # infinite room upwards: any size is reachable
        eps = np.full(3, frac)
    else:
        eps = frac * max_size(x, d, lo, hi, p, (1, 2))
    check_fd(kind, x, d, eps, lo, hi, p, None, seed=int(frac * 10))


@pytest.mark.parametrize("p", PS)
def test_non_trailing_axes_and_broadcast_eps(p: float) -> None:
    # vectors along axes (0, 2), eps of shape (1, 2, 1) broadcast to eta's shape
    x, d, _, lo, hi = problem(3, shape=(4, 2, 3))
    eps = (0.6 * max_size(x, d, lo, hi, p, (0, 2))).reshape(1, 2, 1)
    for kind in ("scale", "perturb"):
        check_fd(kind, x, d, eps, lo, hi, p, (0, 2), seed=1)


@pytest.mark.parametrize("p", PS)
def test_eps_zero_is_finite_and_one_sided(p: float) -> None:
    x, d, _, lo, hi = problem(11, bounds="element")
    x[0, 0, 0] = hi[0, 0, 0] if d[0, 0, 0] > 0 else lo[0, 0, 0]  # no room: saturated at once
    eps = np.zeros(3)
    g = clipresc.scale_vjp(x, d, eps, np.ones((3, 1, 1)), p=p, bounds=(lo, hi))
    assert np.all(np.isfinite(g["eps"]))

    def f(e: np.ndarray) -> float:
        return float(np.sum(clipresc.scale(x, d, e, p=p, bounds=(lo, hi))))

    right = one_sided_diff(f, [eps], 0, h=1e-9)
    np.testing.assert_allclose(g["eps"], right, rtol=1e-6)
    for key in ("x", "delta", "lower", "upper"):
        assert not np.any(g[key]), key


def test_hand_derived_values() -> None:
    # p = 1: eta = eps - (1 - 0.9) once the second element saturates
    x = np.array([[0.5, 0.9]])
    d = np.array([[1.0, 1.0]])
    g = clipresc.scale_vjp(x, d, 0.5, 1.0, p=1, bounds=(0.0, np.ones(2)))
    assert float(g["eps"]) == 1.0
    np.testing.assert_allclose(g["x"], [[0.0, 1.0]])
    np.testing.assert_allclose(g["delta"], [[-0.4, 0.0]])
    np.testing.assert_allclose(g["upper"], [0.0, -1.0])
    assert g["lower"] is None
    # p = 2, nothing saturates: eta = eps / ||d||, d eta / d d = -eta d / ||d||^2
    d2 = np.array([[0.1, 0.2]])
    g = clipresc.scale_vjp(x, d2, 0.05, 1.0)
    eta = 0.05 / np.linalg.norm(d2)
    np.testing.assert_allclose(g["delta"], -eta * d2 / np.sum(d2**2))
    np.testing.assert_allclose(g["eps"], 1 / np.linalg.norm(d2))
    # p = inf: eta = eps / max|d| over elements with room >= eps; only eps and that d move
    g = clipresc.scale_vjp(x, np.array([[1.0, -3.0]]), 0.2, 1.0, p=math.inf)
    np.testing.assert_allclose(g["eps"], 1 / 3)
    np.testing.assert_allclose(g["delta"], [[0.0, 0.2 / 9]])
    assert not np.any(g["x"])


def test_unreachable_follows_the_last_element() -> None:
    x = np.array([[0.5, 0.9, 0.2]])
    d = np.array([[1.0, 2.0, -0.5]])  # keys 0.5, 0.05, 0.4: element 0 saturates last
    g = clipresc.scale_vjp(x, d, 10.0, 1.0, p=2, bounds=(np.zeros(3), np.ones(3)))
    assert float(g["eps"]) == 0.0
    np.testing.assert_allclose(g["x"], [[-1.0, 0.0, 0.0]])  # eta = (1 - x0) / d0
    np.testing.assert_allclose(g["delta"], [[-0.5, 0.0, 0.0]])
    np.testing.assert_allclose(g["upper"], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="eps exceeds the largest reachable size for 1 of 1"):
        clipresc.scale_vjp(x, d, 10.0, 1.0, unreachable="raise")


def test_dtypes_and_shapes() -> None:
    x, d, _, lo, hi = problem(5, bounds="channel")
    eps32 = np.array([0.3, 0.2, 0.4], dtype=np.float32)
    for dt in (np.float16, np.float32, np.float64):
        g = clipresc.perturb_vjp(
            x.astype(dt), d.astype(dt), eps32, np.ones(x.shape, dt), bounds=(lo, hi)
        )
        assert g["x"].dtype == dt and g["delta"].dtype == dt
        assert g["eps"].dtype == np.float32 and g["eps"].shape == (3,)
        assert g["lower"].shape == lo.shape and g["lower"].dtype == np.float64
        x64, d64 = x.astype(dt).astype(np.float64), d.astype(dt).astype(np.float64)
        ref = clipresc.perturb_vjp(x64, d64, eps32.astype(np.float64), 1.0, bounds=(lo, hi))
        tol = {np.float16: 5e-2, np.float32: 1e-4, np.float64: 1e-12}[dt]
        for key in KEYS:
            t = max(tol, 1e-6) if key == "eps" else tol  # eps's cotangent is float32
            np.testing.assert_allclose(
                np.asarray(g[key], np.float64), ref[key], rtol=t, atol=t, err_msg=key
            )
    # a scalar eps gets a 0-d cotangent, a 0-d array bound a 0-d one (the sum)
    g = clipresc.scale_vjp(x, d, 0.3, 1.0, bounds=(np.asarray(-0.1), 1.2))
    assert g["eps"].shape == () and g["lower"].shape == () and g["upper"] is None


def test_errors_match_the_forward() -> None:
    x, d, _, _, _ = problem(2)
    bad = x.copy()
    bad[1, 0, 2] = 1.5
    with pytest.raises(
        ValueError, match=r"x has 1 value outside bounds; first at index \(1, 0, 2\)"
    ):
        clipresc.scale_vjp(bad, d, 0.3, 1.0)
    with pytest.raises(ValueError, match="etabar of shape"):
        clipresc.scale_vjp(x, d, 0.3, np.ones(5))
    with pytest.raises(ValueError, match="ybar of shape"):
        clipresc.perturb_vjp(x, d, 0.3, np.ones((3, 1, 5)))
    with pytest.raises(TypeError, match="x must be a real floating-point array"):
        clipresc.perturb_vjp(x.astype(int), d, 0.3, 1.0)


@pytest.mark.parametrize("p", PS)
def test_rust_equals_generic(p: float) -> None:
    # rows with saturation, unreachable eps, eps = 0, zero directions, x on its bounds
    rng = np.random.default_rng(int(10 * p) if math.isfinite(p) else 99)
    rows, n = 8, 33
    x = rng.uniform(0, 1, (rows, n))
    d = rng.standard_normal((rows, n))
    d[2, :5] = 0.0
    d[3] = 0.0
    x[4, :4] = [0.0, 1.0, 0.0, 1.0]
    lo = -rng.uniform(0, 0.3, n)
    hi = 1 + rng.uniform(0, 0.3, (rows, n))
    x[5, 0], d[5, 0] = hi[5, 0], 1.0
    eps = rng.uniform(0.1, 2.0, rows)
    eps[6] = 50.0
    eps[7] = 0.0
    eta = np.empty(rows)
    _clipresc.scale_into(x, d, lo, hi, eps, p, eta)
    for kind in ("scale", "perturb"):
        cot = rng.standard_normal(rows if kind == "scale" else (rows, n))
        xg, dg, eg = np.empty_like(x), np.empty_like(x), np.empty(rows)
        lg, ug = np.empty(n), np.empty((rows, n))
        fn = _clipresc.scale_vjp_into if kind == "scale" else _clipresc.perturb_vjp_into
        fn(x, d, lo, hi, eps, p, cot, xg, dg, eg, lg, ug)
        gfn = generic.scale_vjp_rows if kind == "scale" else generic.perturb_vjp_rows
        want = gfn(x, d, eps, p, lo, hi, eta, cot)
        for key, got in zip(KEYS, (xg, dg, eg, lg, ug)):
            np.testing.assert_allclose(got, want[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_given_eta_skips_the_solve() -> None:
    rng = np.random.default_rng(4)
    x, d = rng.uniform(0, 1, (5, 20)), rng.standard_normal((5, 20))
    eta = np.empty(5)
    _clipresc.scale_into(x, d, 0.0, 1.0, 1.0, 3.0, eta)
    outs = []
    for given in (None, eta):
        xg, dg, eg = np.empty_like(x), np.empty_like(x), np.empty(5)
        _clipresc.perturb_vjp_into(x, d, 0.0, 1.0, 1.0, 3.0, np.ones_like(x), xg, dg, eg, eta=given)
        outs.append((xg, dg, eg))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
