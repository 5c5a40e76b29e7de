"""``clipresc.noise`` on PyTorch, JAX, TensorFlow and CuPy arrays (issue 18, part 4).

The reference is the NumPy path: for the same seed every library must return the same bits
(bfloat16: the float32 result rounded), in its own array type, device and dtype. CuPy runs
against a stand-in module (no GPU here) that records the host-to-device round trip.
"""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest

import clipresc


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def ref(x: np.ndarray, eps: Any = 1.5, **kw: Any) -> np.ndarray:
    return clipresc.noise(x, eps, **{"seed": 3, **kw})


def l2_sizes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = y.astype(np.float64) - x.astype(np.float64)
    return np.linalg.norm(d.reshape(len(x), -1), axis=1)


# --------------------------------------------------------------------------- PyTorch


def test_torch_same_bits_dtype_and_type() -> None:
    torch = pytest.importorskip("torch")
    xn = images((4, 3, 8, 8))
    for dt, npdt in ((torch.float32, np.float32), (torch.float64, np.float64)):
        x = torch.from_numpy(xn.astype(npdt))
        y = clipresc.noise(x, 1.5, seed=3, distribution="laplace")
        assert isinstance(y, torch.Tensor) and y.dtype == dt and y.device == x.device
        np.testing.assert_array_equal(y.numpy(), ref(xn.astype(npdt), distribution="laplace"))
        np.testing.assert_allclose(l2_sizes(xn, y.numpy()), 1.5, rtol=1e-5)
    h = clipresc.noise(torch.from_numpy(xn.astype(np.float16)), 1.5, seed=3)
    np.testing.assert_array_equal(h.numpy(), ref(xn.astype(np.float16)))
    b = clipresc.noise(torch.from_numpy(xn).bfloat16(), 1.5, seed=3)
    assert b.dtype == torch.bfloat16
    want = torch.from_numpy(ref(torch.from_numpy(xn).bfloat16().float().numpy())).bfloat16()
    assert torch.equal(b, want)


def test_torch_requires_grad_is_detached() -> None:
    torch = pytest.importorskip("torch")
    xn = images((2, 3, 4, 4))
    x = torch.from_numpy(xn.copy()).requires_grad_()
    y = clipresc.noise(x, 1.5, seed=3)
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), ref(xn))
    eps = torch.tensor([1.0, 2.0], requires_grad=True)
    y2 = clipresc.noise(x * 1.0, eps, seed=3)  # a non-leaf input, an eps with grad
    np.testing.assert_array_equal(y2.numpy(), ref(xn, np.array([1.0, 2.0])))


def test_torch_array_arguments_and_seed_tensor() -> None:
    torch = pytest.importorskip("torch")
    xn = images((3, 3, 4, 4))
    lo = np.array([0.0, 0.1, 0.2], np.float32).reshape(3, 1, 1)
    xn = np.clip(xn, lo, 1.0)
    y = clipresc.noise(
        torch.from_numpy(xn),
        torch.tensor([0.5, 1.0, 1.5]),
        bounds=(torch.from_numpy(lo), 1.0),
        seed=torch.tensor(3),
    )
    np.testing.assert_array_equal(y.numpy(), ref(xn, np.array([0.5, 1.0, 1.5]), bounds=(lo, 1.0)))
    with pytest.raises(ValueError, match="seed must be None, a non-negative int"):
        clipresc.noise(torch.from_numpy(xn), 1.0, seed=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="seed must be None, a non-negative int"):
        clipresc.noise(torch.from_numpy(xn), 1.0, seed=torch.tensor(-1))


def test_torch_keeps_the_memory_format() -> None:
    torch = pytest.importorskip("torch")
    xn = images((2, 3, 5, 5))
    x = torch.from_numpy(xn).to(memory_format=torch.channels_last)
    y = clipresc.noise(x, 1.5, seed=3)
    assert y.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(y.numpy(), ref(xn))
    xt = torch.from_numpy(xn).transpose(0, 3)  # a non-dense view: any strides come back right
    np.testing.assert_array_equal(
        clipresc.noise(xt, 1.5, seed=3, axis=0).numpy(), ref(xt.numpy(), axis=0)
    )


def test_torch_errors_name_the_argument() -> None:
    torch = pytest.importorskip("torch")
    x = torch.rand(2, 6)
    with pytest.raises(TypeError, match="out is supported for NumPy inputs only; got torch"):
        clipresc.noise(x, 1.0, out=np.empty((2, 6), np.float32))
    with pytest.raises(TypeError, match="x must be a real floating-point array; got dtype int64"):
        clipresc.noise(torch.zeros(2, 3, dtype=torch.int64), 1.0)
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match=r"different libraries in one call \(x: torch, eps: jax"):
        clipresc.noise(x, jnp.ones(2))


# --------------------------------------------------------------------------- JAX


def test_jax_eager_same_bits_and_device() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    xn = images((4, 3, 8, 8))
    x = jnp.asarray(xn)
    y = clipresc.noise(x, 1.5, seed=3)
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32 and y.devices() == x.devices()
    np.testing.assert_array_equal(np.asarray(y), ref(xn))
    np.testing.assert_array_equal(np.asarray(clipresc.noise(x, 1.5, seed=jnp.uint32(3))), ref(xn))
    b = clipresc.noise(x.astype(jnp.bfloat16), 1.5, seed=3)
    want = ref(np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32)))
    assert b.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(b), np.asarray(jnp.asarray(want).astype(b.dtype)))


def test_jax_jit_static_and_traced_seeds() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    xn = images((4, 3, 8, 8))
    x = jnp.asarray(xn)
    static = jax.jit(lambda x: clipresc.noise(x, 1.5, seed=3))
    np.testing.assert_array_equal(np.asarray(static(x)), ref(xn))
    np.testing.assert_array_equal(np.asarray(static(x)), ref(xn))  # a static seed repeats
    traced = jax.jit(lambda x, s, e: clipresc.noise(x, e, seed=s, distribution="uniform"))
    eps = np.linspace(0.5, 2.0, 4)
    for s in (3, 4):
        got = traced(x, jnp.int32(s), jnp.asarray(eps, jnp.float32))
        np.testing.assert_array_equal(
            np.asarray(got), ref(xn, eps.astype(np.float32), seed=s, distribution="uniform")
        )
    # vmap is the loop over its elements (each element's rows numbered from 0)
    xs = jnp.stack([x, x[::-1]])
    v = jax.vmap(lambda xi, s: clipresc.noise(xi, 1.5, seed=s))(xs, jnp.array([3, 5]))
    np.testing.assert_array_equal(np.asarray(v[0]), ref(xn))
    np.testing.assert_array_equal(np.asarray(v[1]), ref(xn[::-1].copy(), seed=5))


def test_jax_trace_errors_and_no_gradient() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(images((2, 6)))
    with pytest.raises(ValueError, match=r"under jax.jit .* needs a seed"):
        jax.jit(lambda x: clipresc.noise(x, 1.0))(x)
    with pytest.raises(ValueError, match="p must be a positive number or inf"):
        jax.jit(lambda x: clipresc.noise(x, 1.0, p=-1.0, seed=0))(x)
    with pytest.raises(ValueError, match="a traced seed must be a JAX integer scalar"):
        jax.jit(lambda x, s: clipresc.noise(x, 1.0, seed=s))(x, jnp.float32(1))
    # value checks run in the callback: JAX wraps the NumPy path's message
    with pytest.raises(jax.errors.JaxRuntimeError, match="eps has 1 negative or NaN value;"):
        jax.jit(lambda x, e: clipresc.noise(x, e, seed=0))(x, jnp.array([1.0, -1.0]))
    g = jax.grad(lambda x: clipresc.noise(x, 1.0, seed=0).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), np.zeros((2, 6), np.float32))


# --------------------------------------------------------------------------- TensorFlow


def test_tensorflow_eager_and_tf_function() -> None:
    tf = pytest.importorskip("tensorflow")
    xn = images((4, 3, 8, 8))
    x = tf.constant(xn)
    y = clipresc.noise(x, 1.5, seed=3)
    assert isinstance(y, tf.Tensor) and y.dtype == tf.float32 and y.device == x.device
    np.testing.assert_array_equal(y.numpy(), ref(xn))
    v = clipresc.noise(tf.Variable(xn), tf.fill((4,), 1.5), seed=tf.constant(3))
    np.testing.assert_array_equal(v.numpy(), ref(xn))
    b = clipresc.noise(tf.cast(x, tf.bfloat16), 1.5, seed=3)
    want = tf.cast(ref(tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()), tf.bfloat16)
    assert b.dtype == tf.bfloat16 and np.array_equal(b.numpy(), want.numpy())
    f = tf.function(lambda x: clipresc.noise(x, 1.5, seed=3))
    fy = f(x)
    assert fy.shape == x.shape
    np.testing.assert_array_equal(fy.numpy(), ref(xn))
    fresh = tf.function(lambda x: clipresc.noise(x, 1.5))
    a, c = fresh(x).numpy(), fresh(x).numpy()
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(l2_sizes(xn, a), 1.5, rtol=1e-5)


# --------------------------------------------------------------------------- CuPy


def _fake_cupy() -> types.ModuleType:
    """A stand-in ``cupy``: arrays wrap NumPy arrays and remember the device they live on."""
    mod = types.ModuleType("cupy")
    current: list[int] = [0]

    class Device:
        def __init__(self, i: int) -> None:
            self.id = i

        def __enter__(self) -> Device:
            current.append(self.id)
            return self

        def __exit__(self, *exc: Any) -> None:
            current.pop()

    class ndarray:  # the name array-api-compat looks for
        __module__ = "cupy"

        def __init__(self, a: np.ndarray, dev: int) -> None:
            self.a, self.device = a, Device(dev)
            self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim

        def get(self) -> np.ndarray:
            return self.a.copy()

    def asarray(a: Any) -> ndarray:
        return ndarray(np.array(a), current[-1])

    mod.ndarray, mod.asarray, mod.Device = ndarray, asarray, Device  # type: ignore[attr-defined]
    return mod


def test_cupy_round_trip_through_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    xn = images((3, 2, 4, 4))
    x = cupy.ndarray(xn, 1)  # type: ignore[attr-defined]
    eps = cupy.ndarray(np.array([0.5, 1.0, 1.5]), 1)  # type: ignore[attr-defined]
    y = clipresc.noise(x, eps, seed=3)
    assert isinstance(y, cupy.ndarray) and y.device.id == 1  # type: ignore[attr-defined]
    np.testing.assert_array_equal(y.a, ref(xn, np.array([0.5, 1.0, 1.5])))


# --------------------------------------------------------------------------- imports


def test_each_library_imports_only_itself() -> None:
    code = (
        "import sys, numpy as np, torch, clipresc\n"
        "clipresc.noise(np.full((2, 3), 0.5), 0.5, seed=0)\n"
        "y = clipresc.noise(torch.full((2, 3), 0.5), 0.5, seed=0)\n"
        "assert isinstance(y, torch.Tensor)\n"
        "bad = {'jax', 'tensorflow', 'cupy', 'dask'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
