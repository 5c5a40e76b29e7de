"""``clipresc.noise`` under ``jax.jit`` / ``vmap`` through the XLA FFI handler ``noise``: the
bits of the NumPy path for static and traced seeds (the handler derives NumPy's
``SeedSequence`` key from a traced integer, checked here against NumPy over the integer
range), array bounds, per-row ``eps``, another ``axis``, float64 / float16, ``vmap``, the
exact size against an independent norm, errors, and the choice of path by platform."""

from __future__ import annotations

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
from support.oracle import lp_size  # noqa: E402


@pytest.fixture(autouse=True)
def ffi() -> None:
    assert _jax_ffi.available(), "the XLA FFI handlers did not register"
    jax.clear_caches()


def images(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 0.95, shape).astype(dtype)


def _lowered(f: Any, *args: Any) -> str:
    return str(f.lower(*args).as_text())


def test_traced_seed_is_a_custom_call_not_a_callback() -> None:
    x = jnp.asarray(images((2, 6)))
    f = jax.jit(lambda x, s: clipresc.noise(x, 0.5, seed=s))
    text = _lowered(f, x, jnp.int32(1))
    assert _jax_ffi.target_name("noise") in text and "callback" not in text


@pytest.mark.parametrize("dist", ["gaussian", "uniform", "laplace", "rademacher"])
def test_traced_seeds_over_the_integer_range_match_numpy(dist: str) -> None:
    """The handler's SeedSequence key against NumPy's, for 32- and 64-bit seeds."""
    xn = images((3, 2, 5))
    x = jnp.asarray(xn)
    seeds32 = [0, 1, 2, 255, 65536, 2**31 - 1]
    seeds_u32 = [2**31, 2**32 - 1]
    seeds64 = [2**32, 2**32 + 1, 2**40 + 12345, 2**63 - 1]
    f = jax.jit(lambda x, s: clipresc.noise(x, 0.4, seed=s, distribution=dist))
    for s in seeds32:
        got = np.asarray(f(x, jnp.int32(s)))
        np.testing.assert_array_equal(got, clipresc.noise(xn, 0.4, seed=s, distribution=dist))
    for s in seeds_u32:
        got = np.asarray(f(x, jnp.uint32(s)))
        np.testing.assert_array_equal(got, clipresc.noise(xn, 0.4, seed=s, distribution=dist))
    with x64():
        g = jax.jit(lambda x, s: clipresc.noise(x, 0.4, seed=s, distribution=dist))
        for s in seeds64:
            got = np.asarray(g(x, jnp.int64(s)))
            want = clipresc.noise(xn, 0.4, seed=s, distribution=dist)
            np.testing.assert_array_equal(got, want)
        big = 2**64 - 1
        got = np.asarray(g(x, jnp.uint64(big)))
        np.testing.assert_array_equal(got, clipresc.noise(xn, 0.4, seed=big, distribution=dist))


def test_static_seed_sequence_bounds_eps_axis_offset() -> None:
    """A static SeedSequence (spawned: its key is computed in Python), array bounds, per-row
    eps, a non-trailing axis and row_offset; the size of each row against lp_size."""
    rng = np.random.default_rng(1)
    xn = images((4, 3, 5), seed=2)
    lo = rng.uniform(0.0, 0.04, (3, 1)).astype(np.float32)
    hi = np.float32(1.0)
    eps = np.linspace(0.1, 0.4, 3).astype(np.float32)  # one per row along axis 1
    seq = np.random.SeedSequence(9, spawn_key=(4,))
    kw: dict[str, Any] = {"p": 1.5, "axis": (0, 2), "row_offset": 7, "distribution": "laplace"}

    def f(x: Any, e: Any, lo: Any) -> Any:
        return clipresc.noise(x, e, bounds=(lo, hi), seed=seq, **kw)

    got = np.asarray(jax.jit(f)(jnp.asarray(xn), jnp.asarray(eps), jnp.asarray(lo)))
    want = clipresc.noise(xn, eps, bounds=(lo, hi), seed=seq, **kw)
    np.testing.assert_array_equal(got, want)
    rows = np.moveaxis(got - xn, 1, 0).reshape(3, -1)
    np.testing.assert_allclose(lp_size(rows.astype(np.float64), 1.5), eps, rtol=1e-4)
    assert (got >= np.broadcast_to(lo[None], got.shape)).all() and (got <= 1.0).all()


def test_float64_and_float16() -> None:
    xn = images((3, 7), np.float64)
    with x64():
        got = jax.jit(lambda x, s: clipresc.noise(x, 0.3, seed=s))(jnp.asarray(xn), 5)
        assert got.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(got), clipresc.noise(xn, 0.3, seed=5))
    h = xn.astype(np.float16)
    got = jax.jit(lambda x: clipresc.noise(x, 0.3, seed=5))(jnp.asarray(h))
    assert got.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(got), clipresc.noise(h, 0.3, seed=5))


def test_vmap_over_seeds_eps_and_bounds_is_the_loop() -> None:
    """Each mapped element gets its own key and streams from row_offset, as a loop would."""
    xn = images((3, 4, 6), seed=4)
    eps = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.2, 0.3], [0.2, 0.2, 0.2, 0.2]], np.float32)
    up = np.array([0.97, 0.98, 0.99], np.float32)
    seeds = np.array([3, 0, 2**31 - 1], np.int32)

    def one(x: Any, e: Any, u: Any, s: Any) -> Any:
        return clipresc.noise(x, e, bounds=(0.0, u), seed=s, row_offset=2)

    got = jax.jit(jax.vmap(one))(*(jnp.asarray(a) for a in (xn, eps, up, seeds)))
    for i in range(3):
        want = clipresc.noise(xn[i], eps[i], bounds=(0.0, up[i]), seed=int(seeds[i]), row_offset=2)
        np.testing.assert_array_equal(np.asarray(got[i]), want)
    # a static seed under vmap: every element its own call with that seed
    st = jax.vmap(lambda x: clipresc.noise(x, 0.2, seed=11))(jnp.asarray(xn))
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(st[i]), clipresc.noise(xn[i], 0.2, seed=11))


def test_data_errors_carry_the_numpy_message() -> None:
    x = jnp.asarray(images((2, 6)))
    f = jax.jit(lambda x, s: clipresc.noise(x, 1.0, seed=s))
    with pytest.raises(ValueError) as want:
        clipresc.noise(np.asarray(x), 1.0, seed=-1)
    with pytest.raises(Exception, match="seed must be None, a non-negative int") as err:
        f(x, jnp.int32(-1)).block_until_ready()
    assert str(want.value) in str(err.value)
    bad = np.asarray(x).copy()
    bad[1, 2] = 1.5
    with pytest.raises(ValueError) as want:
        clipresc.noise(bad, 1.0, seed=0)
    with pytest.raises(jax.errors.JaxRuntimeError) as err:
        f(jnp.asarray(bad), jnp.int32(0)).block_until_ready()
    assert str(want.value) in str(err.value)


def test_no_gradient() -> None:
    x = jnp.asarray(images((2, 6)))
    g = jax.jit(jax.grad(lambda x, s: clipresc.noise(x, 1.0, seed=s).sum()))(x, jnp.int32(2))
    np.testing.assert_array_equal(np.asarray(g), np.zeros((2, 6), np.float32))


def test_platform_dependent_selection_takes_the_ffi_on_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With another default backend, traced calls choose by the compiled platform
    (``jax.lax.platform_dependent``): a CPU computation still runs the handlers, and gives
    the NumPy path's values and gradients."""
    monkeypatch.setattr(_jax_ffi, "_cpu_default", lambda: False)
    xn = images((3, 8), np.float32, seed=5)
    dn = np.random.default_rng(6).standard_normal((3, 8)).astype(np.float32)
    x, d = jnp.asarray(xn), jnp.asarray(dn)
    calls = _clipresc.jax_ffi_calls()
    y, (gx, ge) = jax.jit(
        jax.value_and_grad(lambda x, e: cj.perturb(x, d, e).sum(), argnums=(0, 1))
    )(x, jnp.float32(0.5))
    assert np.subtract(_clipresc.jax_ffi_calls(), calls).tolist() == [1, 1]
    np.testing.assert_allclose(float(y), clipresc.perturb(xn, dn, 0.5).sum(), rtol=1e-6)
    want = clipresc.perturb_vjp(xn, dn, 0.5, np.ones_like(xn))
    np.testing.assert_allclose(np.asarray(gx), want["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(ge), float(want["eps"]), rtol=1e-5)
    n = jax.jit(lambda x, s: clipresc.noise(x, 0.5, seed=s))(x, jnp.int32(4))
    np.testing.assert_array_equal(np.asarray(n), clipresc.noise(xn, 0.5, seed=4))
