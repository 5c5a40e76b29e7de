"""Per-example use: ``axis="all"`` (the whole array is one vector) in every library, a
per-example function under ``jax.vmap`` equal to the batched call, and the early errors for
framework inputs clipresc does not take (a traced ``p``, sparse or ragged TF tensors); plus
``tf.function`` calling the public functions without AutoGraph converting them."""

from __future__ import annotations

import functools
import importlib
import io
import logging
import math
import re
from typing import Any

import numpy as np
import pytest

import clipresc
from support.framework_cases import achieved_size


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (4, 3, 5, 6))
    d = rng.standard_normal(x.shape)
    return x, d, np.array([0.5, 2.0, 1.0, 3.5])


# --------------------------------------------------------------------------- axis="all"


@pytest.mark.parametrize(("p", "eps"), [(1.0, 4.0), (2.0, 1.3), (math.inf, 0.04)])
def test_axis_all_is_one_vector(p: float, eps: float) -> None:
    x, d, _ = _problem()
    one = x[1]
    y = clipresc.perturb(one, d[1], eps, p=p, axis="all")
    np.testing.assert_allclose(achieved_size(one, y, p, (0, 1, 2)), eps, rtol=1e-12)
    assert np.array_equal(y, clipresc.perturb(one, d[1], eps, p=p, axis=(0, 1, 2)))
    eta = clipresc.scale(one, d[1], eps, p=p, axis="all")
    assert eta.shape == (1, 1, 1)
    # the default on one unbatched image: each channel is a vector (kept, documented)
    y_default = clipresc.perturb(one, d[1], eps, p=p)
    np.testing.assert_allclose(achieved_size(one, y_default, p, (1, 2)), eps, rtol=1e-12)


def test_axis_all_noise_and_vjp() -> None:
    x, d, _ = _problem(1)
    y = clipresc.noise(x[0], 0.8, seed=3, axis="all")
    np.testing.assert_allclose(achieved_size(x[0], y, 2.0, (0, 1, 2)), 0.8, rtol=1e-5)
    g = clipresc.perturb_vjp(x[0], d[0], 0.8, np.ones_like(x[0]), axis="all")
    want = clipresc.perturb_vjp(x[:1], d[:1], 0.8, np.ones_like(x[:1]))
    np.testing.assert_array_equal(g["x"], want["x"][0])


@pytest.mark.parametrize("lib", ["dask", "array_api_strict", "torch", "jax", "tensorflow"])
def test_axis_all_in_every_library(lib: str) -> None:
    """axis='all' gives the NumPy path's values in every library (noise: its bits)."""
    x, d, _ = _problem(4)
    x, d = x[0].astype(np.float32), d[0].astype(np.float32)
    want = clipresc.perturb(x, d, 0.9, axis="all")
    want_noise = clipresc.noise(x, 0.9, seed=2, axis="all")
    mod = pytest.importorskip("dask.array" if lib == "dask" else lib)
    convert: dict[str, Any] = {
        "dask": lambda a: mod.from_array(a, chunks=2),
        "array_api_strict": lambda a: mod.asarray(a),
        "torch": lambda a: mod.from_numpy(a),
        "jax": lambda a: importlib.import_module("jax.numpy").asarray(a),
        "tensorflow": lambda a: mod.constant(a),
    }
    conv = convert[lib]

    def back(a: Any) -> Any:
        a = a.compute() if lib == "dask" else a
        return np.asarray(a.numpy() if lib in ("torch", "tensorflow") else a)

    y = clipresc.perturb(conv(x), conv(d), 0.9, axis="all")
    np.testing.assert_allclose(back(y), want, rtol=1e-6, atol=1e-7)
    if lib != "array_api_strict":  # noise returns the libraries it takes
        n = clipresc.noise(conv(x), 0.9, seed=2, axis="all")
        np.testing.assert_array_equal(back(n), want_noise)


@pytest.mark.parametrize("bad", ["al", "ALL", "batch"])
def test_axis_other_strings_refused(bad: str) -> None:
    x, d, _ = _problem()
    with pytest.raises(TypeError, match=r"axis must be an int or a tuple of ints \(or None"):
        clipresc.perturb(x, d, 1.0, axis=bad)


# --------------------------------------------------------------------------- JAX


@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_jax_vmap_per_example_equals_batched(fn: str) -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x, d, eps = _problem(2)
    xs, ds, es = jnp.asarray(x, jnp.float32), jnp.asarray(d, jnp.float32), jnp.asarray(eps)
    f = getattr(clipresc, fn)
    batched = np.asarray(f(xs, ds, es.astype(jnp.float32), p=3.0))
    per_example = jax.vmap(lambda a, b, e: f(a, b, e, p=3.0, axis="all"))
    np.testing.assert_array_equal(np.asarray(per_example(xs, ds, es.astype(jnp.float32))), batched)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(per_example)(xs, ds, es.astype(jnp.float32))), batched
    )


def test_jax_traced_p_is_refused_with_hint() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x, d, _ = _problem()
    xs, ds = jnp.asarray(x), jnp.asarray(d)
    traced = jax.jit(lambda a, b, p: clipresc.perturb(a, b, 0.5, p=p))
    pattern = r"p must be a real number; got .*Tracer; p must be a static Python number.*static_argnums / static_argnames.*functools.partial"  # noqa: E501
    with pytest.raises(TypeError, match=pattern):
        traced(xs, ds, 2.0)
    with pytest.raises(TypeError, match=pattern):
        jax.jit(lambda a, p: clipresc.noise(a, 0.5, p=p, seed=0))(xs, 2.0)
    # the fixes the message names work and give the eager values
    static = jax.jit(lambda a, b, p: clipresc.perturb(a, b, 0.5, p=p), static_argnums=2)
    bound = jax.jit(functools.partial(lambda a, b, p: clipresc.perturb(a, b, 0.5, p=p), p=2.0))
    want = np.asarray(clipresc.perturb(xs, ds, 0.5, p=2.0))
    np.testing.assert_array_equal(np.asarray(static(xs, ds, 2.0)), want)
    np.testing.assert_array_equal(np.asarray(bound(xs, ds)), want)


# --------------------------------------------------------------------------- TensorFlow


def test_tf_function_runs_public_functions_unconverted() -> None:
    """AutoGraph calls clipresc's functions as they are (no conversion of the dispatch, no
    'could not transform' warning) and the graph gives the eager values."""
    tf = pytest.importorskip("tensorflow")
    x, d, _ = _problem(3)
    xt, dt = tf.constant(x, tf.float32), tf.constant(d, tf.float32)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    tf.autograph.set_verbosity(3)
    try:

        @tf.function
        def step(a: Any, b: Any) -> Any:
            n = clipresc.noise(a, 0.4, seed=1)
            return clipresc.perturb(a, b, 0.5, axis="all") + clipresc.scale(a, b, 0.5) + n

        got = step(xt, dt).numpy()
    finally:
        tf.autograph.set_verbosity(0)
        logger.removeHandler(handler)
        logger.setLevel(level)
    log = buf.getvalue()
    for name in ("perturb", "scale", "noise"):  # cached when an earlier test allowed it
        allowed = rf"(Permanently allowed: <function {name} .*AutoGraph artifact|Allowlisted <function {name} .*: from cache)"  # noqa: E501
        assert re.search(allowed, log), name
    # AutoGraph looks at each public function once and lets it run: nothing inside converted
    converted = set(re.findall(r"^Converted call: <function (\S+) at", log, re.M))
    assert {c.rsplit(".", 1)[-1] for c in converted} == {"step", "perturb", "scale", "noise"}
    assert "could not transform" not in log
    want = (
        clipresc.perturb(xt, dt, 0.5, axis="all")
        + clipresc.scale(xt, dt, 0.5)
        + clipresc.noise(xt, 0.4, seed=1)
    )
    np.testing.assert_array_equal(got, want.numpy())


def test_tf_sparse_and_ragged_refused() -> None:
    tf = pytest.importorskip("tensorflow")
    x = tf.constant([[0.2, 0.4], [0.6, 0.8]])
    sparse = tf.sparse.from_dense(x)
    ragged = tf.ragged.constant([[0.2, 0.4], [0.6]])
    for call in (
        lambda: clipresc.perturb(sparse, sparse, 0.5),
        lambda: clipresc.noise(sparse, 0.5, seed=0),
    ):
        with pytest.raises(TypeError, match=r"x is a tf.SparseTensor; .*tf.sparse.to_dense\(x\)"):
            call()
    for call in (
        lambda: clipresc.scale(ragged, ragged, 0.5),
        lambda: clipresc.noise(ragged, 0.5, seed=0),
    ):
        with pytest.raises(TypeError, match=r"x is a tf.RaggedTensor; .*axis='all'"):
            call()
    with pytest.raises(TypeError, match=r"p must be a real number; got .*; p must be a static"):
        tf.function(lambda a: clipresc.perturb(a, a, 0.5, p=tf.constant(2.0)))(x)
