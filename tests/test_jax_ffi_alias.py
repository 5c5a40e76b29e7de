"""The XLA FFI backward of ``perturb`` writing its outputs over its inputs' buffers
(``input_output_aliases``, ``_jax_ffi.vjp``): the gradients are bitwise those of the
unaliased call and agree with the closed form (NumPy path) and finite differences, and
inputs that are still needed afterwards (a cotangent passed in, the forward's output) are
left intact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import clipresc  # noqa: E402
from clipresc import _clipresc  # noqa: E402
from clipresc.frameworks import _jax_ffi  # noqa: E402
from clipresc.frameworks import jax as cj  # noqa: E402
from support.jax_x64 import x64  # noqa: E402


@pytest.fixture(autouse=True)
def ffi() -> Iterator[None]:
    assert _jax_ffi.available(), "the XLA FFI handlers did not register"
    yield
    jax.clear_caches()


def _both(fn: Any, *args: Any) -> tuple[Any, Any, int]:
    """``jax.jit(fn)(*args)`` with and without aliasing, and the in-place backward calls the
    aliased run made."""
    out = []
    in_place = 0
    for alias in (False, True):
        jax.clear_caches()
        _jax_ffi.ALIAS = alias
        try:
            before = _clipresc.jax_ffi_in_place_calls()
            res = jax.block_until_ready(jax.jit(fn)(*args))
            if alias:
                in_place = _clipresc.jax_ffi_in_place_calls() - before
            out.append(jax.tree_util.tree_map(np.asarray, res))
        finally:
            _jax_ffi.ALIAS = True
    return out[0], out[1], in_place


def _bits_equal(a: Any, b: Any) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        u.dtype == v.dtype and u.tobytes() == v.tobytes() for u, v in zip(la, lb)
    )


def _problem(dtype: Any, shape: tuple[int, ...] = (5, 3, 4, 4), seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, shape).astype(dtype)
    d = rng.standard_normal(shape).astype(dtype)
    return x, d


CASES = {
    "l2": dict(p=2.0),
    "l1 axis 1": dict(p=1.0, axis=1),
    "linf": dict(p=np.inf),
    "l3 array bounds": dict(p=3.0, bounds="arrays"),
    "l2 per-row eps": dict(p=2.0, eps="rows"),
}


def _kwargs(case: dict[str, Any], x: np.ndarray) -> tuple[Any, dict[str, Any]]:
    kw = {k: v for k, v in case.items() if k not in ("bounds", "eps")}
    eps: Any = 0.9
    if case.get("eps") == "rows":
        eps = jnp.asarray(np.linspace(0.3, 1.2, x.shape[0]).astype(x.dtype))
    if case.get("bounds") == "arrays":
        lo = jnp.asarray(np.full(x.shape, 0.01, x.dtype))  # one per element
        hi = jnp.asarray(np.full(x.shape[1:], 0.97, x.dtype))  # shared by the rows
        kw["bounds"] = (lo, hi)
    return eps, kw


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_aliased_backward_is_bitwise_the_unaliased_one(name: str, dtype: str) -> None:
    with x64():
        x, d = _problem(np.dtype(dtype))
        eps, kw = _kwargs(CASES[name], x)
        w = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)

        def loss(x: Any, d: Any, eps: Any) -> Any:
            return (cj.perturb(x, d, eps, **kw) * w).sum()

        argnums = (0, 1, 2) if CASES[name].get("eps") == "rows" else (0, 1)
        vag = jax.value_and_grad(loss, argnums=argnums)
        plain, aliased, in_place = _both(vag, jnp.asarray(x), jnp.asarray(d), eps)
        assert _bits_equal(plain, aliased)
        if _jax_ffi._can_alias():
            assert in_place == 1
        # the closed form on the NumPy path
        bounds = kw.get("bounds", (0.0, 1.0))
        want = clipresc.perturb_vjp(
            x,
            d,
            np.asarray(eps),
            w,
            p=kw["p"],
            bounds=tuple(np.asarray(b) for b in bounds),
            axis=kw.get("axis"),
        )
        tol = 1e-5 if dtype == "float32" else 1e-12
        grads = aliased[1]
        np.testing.assert_allclose(grads[0], want["x"], rtol=tol, atol=tol)
        np.testing.assert_allclose(grads[1], want["delta"], rtol=tol, atol=tol)
        if len(grads) == 3:
            np.testing.assert_allclose(grads[2], want["eps"], rtol=tol, atol=tol)


def test_aliased_gradient_matches_finite_differences() -> None:
    with x64():
        x, d = _problem(np.float64, (3, 2, 3, 3), seed=4)
        w = np.random.default_rng(5).standard_normal(x.shape)

        def f(x: Any, d: Any) -> Any:
            return (cj.perturb(x, d, 0.7, p=1.5) * w).sum()

        _, aliased, _ = _both(jax.value_and_grad(f, argnums=(0, 1)), x, d)
        gx, gd = aliased[1]
        h = 1e-6
        rng = np.random.default_rng(6)
        for _ in range(6):
            v, u = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
            fd = (float(f(x + h * v, d + h * u)) - float(f(x - h * v, d - h * u))) / (2 * h)
            np.testing.assert_allclose(np.sum(gx * v) + np.sum(gd * u), fd, rtol=1e-6, atol=1e-8)


def test_inputs_still_needed_are_left_intact() -> None:
    """The cotangent is a caller's array (``jax.vjp`` under ``jit``) and the forward's output
    is returned too: XLA must copy them before the backward overwrites them."""
    with x64():  # (eps's cotangent is float64: no truncation warning)
        _inputs_still_needed()


def _inputs_still_needed() -> None:
    x, d = _problem(np.float32, seed=7)
    g = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
    jx, jd, jg = jnp.asarray(x), jnp.asarray(d), jnp.asarray(g)

    def f(x: Any, d: Any, g: Any) -> Any:
        y, pull = jax.vjp(lambda x, d: cj.perturb(x, d, 0.9), x, d)
        gx, gd = pull(g)
        return y, g * 1.0, gx, gd

    plain, aliased, _in_place = _both(f, jx, jd, jg)
    assert _bits_equal(plain, aliased)
    y = jax.jit(lambda x, d: cj.perturb(x, d, 0.9))(jx, jd)
    np.testing.assert_array_equal(aliased[0], np.asarray(y))
    np.testing.assert_allclose(aliased[0], clipresc.perturb(x, d, 0.9), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(aliased[1], g)
    np.testing.assert_array_equal(np.asarray(jg), g)
    want = clipresc.perturb_vjp(x, d, 0.9, g)
    np.testing.assert_allclose(aliased[2], want["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aliased[3], want["delta"], rtol=1e-5, atol=1e-6)


def test_vmap_of_the_aliased_gradient_is_the_loop() -> None:
    x, d = _problem(np.float32, (2, 4, 3, 5), seed=9)
    eps = jnp.asarray([0.4, 0.8], jnp.float32)

    def g(x: Any, d: Any, e: Any) -> Any:
        return jax.grad(lambda x, d: (cj.perturb(x, d, e) ** 2).sum(), argnums=(0, 1))(x, d)

    plain, aliased, _ = _both(jax.vmap(g), jnp.asarray(x), jnp.asarray(d), eps)
    assert _bits_equal(plain, aliased)
    for i in range(2):
        gx, gd = (np.asarray(a) for a in jax.jit(g)(x[i], d[i], eps[i]))
        np.testing.assert_allclose(aliased[0][i], gx, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(aliased[1][i], gd, rtol=1e-6, atol=1e-7)
