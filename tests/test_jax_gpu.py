"""JAX arrays on a GPU (``pytest -m gpu``; skipped without a JAX GPU device).

Oracle: the same call on NumPy copies (the Rust core) and JAX's gradient on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")


def _gpus() -> list:
    try:
        return list(jax.devices("gpu"))
    except RuntimeError:
        return []


# (the device query runs in the test, not at collection: initialising JAX's backends
# registers a fork handler that other test files' subprocesses would trip over)
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_gpu() -> None:
    if not _gpus():
        pytest.skip("needs a JAX GPU device")


import jax.numpy as jnp  # noqa: E402

import clipresc  # noqa: E402
from clipresc.frameworks import jax as cj  # noqa: E402


@pytest.mark.parametrize("p", (1.0, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_jax_gpu_arrays_match_the_core(p: float) -> None:
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, (16, 3, 32, 32)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    eps = 5.0 if p != math.inf else 0.05
    gpu = _gpus()[0]
    xg, dg = jax.device_put(x, gpu), jax.device_put(d, gpu)
    y = cj.perturb(xg, dg, eps, p=p)
    assert gpu in y.devices()
    want = clipresc.perturb(x, d, eps, p=p)
    np.testing.assert_allclose(np.asarray(y), want, rtol=2e-6, atol=2e-6)

    def loss(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
        return jnp.sum(cj.perturb(a, b, eps, p=p) * jnp.arange(a.size).reshape(a.shape) / a.size)

    g_gpu = jax.jit(jax.grad(loss, argnums=(0, 1)))(xg, dg)
    cpu = jax.devices("cpu")[0]
    g_cpu = jax.jit(jax.grad(loss, argnums=(0, 1)))(jax.device_put(x, cpu), jax.device_put(d, cpu))
    for a, b in zip(g_gpu, g_cpu):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
