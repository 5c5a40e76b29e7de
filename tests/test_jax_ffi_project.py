"""``clipresc.project`` under ``jax.jit`` / ``vmap`` / ``grad`` through the XLA FFI handlers
(``frameworks/_jax_project_ffi.py``): bit-for-bit equal to the NumPy path, gradients equal to
:func:`clipresc.project_vjp` and to finite differences, one core call under ``vmap``, the
callback path unused, and the ``pure_callback`` fallback with ``CLIPRESC_JAX_FFI=0``."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import clipresc  # noqa: E402
from clipresc import _clipresc  # noqa: E402
from clipresc.frameworks import _jax_ffi, jax_project  # noqa: E402
from support.fd import central_diff  # noqa: E402
from support.jax_x64 import x64  # noqa: E402

PS = (1.0, 2.0, math.inf)


@pytest.fixture(autouse=True)
def ffi_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handlers are registered, and the ``pure_callback`` path fails if anything
    reaches it: every traced call below must take the FFI."""
    assert _jax_ffi.available(), "the XLA FFI handlers did not register"

    def no_callback(*_: Any, **__: Any) -> Any:
        raise AssertionError("the pure_callback path ran under jit")

    for host_fn in ("_forward_host", "_vjp_host"):  # what every callback runs
        monkeypatch.setattr(jax_project, host_fn, no_callback)


def _case(dtype: Any, b: int = 3, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``x`` inside per-element bounds, ``z`` far enough out that box and ball both bind."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0.0, 0.2, (b, 3, 2, 2))
    hi = rng.uniform(0.8, 1.0, (b, 3, 2, 2))
    x = rng.uniform(lo, hi)
    z = x + 0.6 * rng.standard_normal(x.shape)
    eps = rng.uniform(0.1, 0.8, b)
    return tuple(a.astype(dtype) for a in (x, z, lo, hi, eps))


def _calls() -> tuple[int, int]:
    return tuple(_clipresc.jax_ffi_project_calls())  # type: ignore[return-value]


def _jb(bounds: Any) -> Any:
    """``bounds`` with its arrays as JAX arrays (one library per call)."""
    if bounds is None:
        return None
    return tuple(jnp.asarray(b) if isinstance(b, np.ndarray) else b for b in bounds)


def _bounds_cases(lo: np.ndarray, hi: np.ndarray) -> list[tuple[str, Any]]:
    return [
        ("scalar", (0.0, 1.0)),
        ("none", None),
        ("one-sided", (None, 1.0)),
        ("per-element", (lo, hi)),
        (
            "per-channel",
            (lo.min(axis=(0, 2, 3))[:, None, None], hi.max(axis=(0, 2, 3))[:, None, None]),
        ),
    ]


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_equals_numpy_path_bit_for_bit(p: float, dtype: Any) -> None:
    x, z, lo, hi, eps = _case(dtype)
    with x64():
        for name, bounds in _bounds_cases(lo, hi):
            for e in (0.35, eps, eps[:, None, None, None]):
                want = clipresc.project(x, z, e, p=p, bounds=bounds)
                before = _calls()[0]
                fn = jax.jit(
                    lambda x, z, e, b=bounds: clipresc.project(x, z, e, p=p, bounds=_jb(b))
                )
                e_arg = jnp.asarray(e) if np.ndim(e) else e
                y = fn(jnp.asarray(x), jnp.asarray(z), e_arg)
                assert _calls()[0] == before + 1, name
                assert y.dtype == dtype
                np.testing.assert_array_equal(
                    np.asarray(y), want, err_msg=f"{name} eps {np.shape(e)}"
                )


@pytest.mark.parametrize("p", PS)
def test_jit_float32_without_x64_keeps_a_static_eps_in_float64(p: float) -> None:
    """A Python ``eps`` reaches the handler as a float64 attribute, as it reaches the core
    on the NumPy path (an operand would be rounded to float32 with 64-bit types off)."""
    x, z, lo, hi, _ = _case(np.float32, seed=1)
    y = jax.jit(lambda x, z: clipresc.project(x, z, 0.3, p=p, bounds=_jb((lo, hi))))(x, z)
    np.testing.assert_array_equal(np.asarray(y), clipresc.project(x, z, 0.3, p=p, bounds=(lo, hi)))


def test_axis_not_trailing_and_float16() -> None:
    x, z, *_ = _case(np.float64, b=4)
    e6 = np.linspace(0.2, 0.7, 6)  # one per vector: axes 1 and 3 are the batch (3 x 2)
    with x64():
        y = jax.jit(lambda x, z, e: clipresc.project(x, z, e, p=1.0, axis=(0, 2)))(
            jnp.asarray(x), jnp.asarray(z), jnp.asarray(e6)
        )
        np.testing.assert_array_equal(np.asarray(y), clipresc.project(x, z, e6, p=1.0, axis=(0, 2)))
    x16, z16 = x.astype(np.float16), z.astype(np.float16)
    y16 = jax.jit(lambda x, z: clipresc.project(x, z, 0.5))(jnp.asarray(x16), jnp.asarray(z16))
    assert y16.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(y16), clipresc.project(x16, z16, 0.5))


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_grad_equals_project_vjp(p: float, dtype: Any) -> None:
    x, z, lo, hi, eps = _case(dtype, seed=2)
    w = np.cos(np.arange(x.size, dtype=dtype)).reshape(x.shape)
    with x64():
        for bounds in ((lo, hi), (0.0, 1.0)):

            def loss(a: Any, b: Any, e: Any, bounds: Any = bounds) -> Any:
                return jnp.sum(clipresc.project(a, b, e, p=p, bounds=_jb(bounds)) * w)

            before = _calls()[1]
            g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
                jnp.asarray(x), jnp.asarray(z), jnp.asarray(eps)
            )
            assert _calls()[1] == before + 1
            want = clipresc.project_vjp(x, z, eps, w, p=p, bounds=bounds)
            for got, key in zip(g, ("x", "z", "eps")):
                assert got.dtype == dtype
                np.testing.assert_array_equal(np.asarray(got), want[key], err_msg=key)


@pytest.mark.parametrize("p", PS)
def test_jit_grad_matches_finite_differences(p: float) -> None:
    """Away from kinks (generic data) the gradient is the derivative: central differences of
    the NumPy path in float64, for ``x``, ``z`` and per-row ``eps``."""
    x, z, lo, hi, eps = _case(np.float64, b=2, seed=5)
    w = np.sin(np.arange(x.size, dtype=np.float64)).reshape(x.shape) + 1.5

    def loss_np(a: Any, b: Any, e: Any) -> float:
        return float(np.sum(clipresc.project(a, b, e, p=p, bounds=(lo, hi)) * w))

    with x64():
        g = jax.jit(
            jax.grad(
                lambda a, b, e: jnp.sum(clipresc.project(a, b, e, p=p, bounds=_jb((lo, hi))) * w),
                argnums=(0, 1, 2),
            )
        )(jnp.asarray(x), jnp.asarray(z), jnp.asarray(eps))
    for i, got in enumerate(g):
        fd = central_diff(loss_np, (x, z, eps), i, h=1e-7)
        np.testing.assert_allclose(np.asarray(got), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", PS)
def test_vmap_is_one_handler_call_equal_to_the_batched_call(p: float) -> None:
    """``vmap`` over a leading axis (with per-element bounds and eps) runs one core call
    for the whole mapped batch and equals the NumPy path on the stacked problem; its
    gradients equal project_vjp of the stacked problem."""
    x, z, lo, hi, eps = _case(np.float64, b=4, seed=3)
    xs, zs = x.reshape(2, 2, 3, 2, 2), z.reshape(2, 2, 3, 2, 2)
    los, his, es = lo.reshape(xs.shape), hi.reshape(xs.shape), eps.reshape(2, 2)
    w = np.cos(np.arange(x.size, dtype=np.float64)).reshape(xs.shape)
    with x64():

        def f(x: Any, z: Any, e: Any, lo: Any, hi: Any) -> Any:
            return clipresc.project(x, z, e, p=p, bounds=(lo, hi))

        args = tuple(jnp.asarray(a) for a in (xs, zs, es, los, his))
        before = _calls()
        y = jax.jit(jax.vmap(f))(*args)
        assert _calls()[0] == before[0] + 1
        np.testing.assert_array_equal(
            np.asarray(y).reshape(x.shape), clipresc.project(x, z, eps, p=p, bounds=(lo, hi))
        )
        # a scalar eps shared by the mapped elements
        y = jax.jit(jax.vmap(lambda x, z: clipresc.project(x, z, 0.4, p=p)))(*args[:2])
        np.testing.assert_array_equal(
            np.asarray(y).reshape(x.shape), clipresc.project(x, z, 0.4, p=p)
        )
        # a traced scalar eps per mapped element (groups of rows in the handler): the
        # stacked problem with that eps on each mapped element's rows (a batch passes each
        # row's answer on to the next row, so per-element calls may differ in the last bit)
        e2 = jnp.asarray([0.3, 0.6])
        y = jax.jit(jax.vmap(lambda x, z, e: clipresc.project(x, z, e, p=p)))(*args[:2], e2)
        rows_each = xs.shape[1]
        want = clipresc.project(x, z, np.repeat(np.asarray(e2), rows_each), p=p)
        np.testing.assert_array_equal(np.asarray(y).reshape(x.shape), want)

        def loss(*a: Any) -> Any:
            return jnp.sum(jax.vmap(f)(*a) * w)

        g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
        assert _calls()[1] == before[1] + 1
        want = clipresc.project_vjp(x, z, eps, w.reshape(x.shape), p=p, bounds=(lo, hi))
        for got, key in zip(g, ("x", "z", "eps")):
            np.testing.assert_array_equal(np.asarray(got).reshape(want[key].shape), want[key])


@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_takes_the_forward_multipliers(p: float, dtype: Any) -> None:
    """The forward hands each row's multiplier to the backward (a residual of uint32
    pairs, so also without 64-bit JAX types): a jitted grad searches each row once (the
    core's count of searched rows), also under ``vmap``, and its gradients are bitwise
    those of ``project_vjp``, which searches again."""
    x, z, lo, hi, eps = _case(dtype, b=4, seed=7)
    w = np.cos(np.arange(x.size)).reshape(x.shape).astype(dtype)

    def loss(a: Any, b: Any, e: Any) -> Any:
        return jnp.sum(clipresc.project(a, b, e, p=p, bounds=_jb((lo, hi))) * w)

    want = clipresc.project_vjp(x, z, eps, w, p=p, bounds=(lo, hi))
    # without 64-bit JAX types too where the data allows
    modes = [x64] if dtype == np.float64 else [contextlib.nullcontext, x64]
    for mode in modes:
        with mode():
            args = tuple(jnp.asarray(a) for a in (x, z, eps))
            before = _clipresc.project_searches()
            g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
            assert _clipresc.project_searches() - before == 4, "the backward searched again"
            for got, key in zip(g, ("x", "z", "eps")):
                assert got.dtype == dtype
                np.testing.assert_array_equal(np.asarray(got), want[key], err_msg=key)
            # per-example gradients: the mapped axis is one core call's batch
            xs, zs, ws = (a.reshape(2, 2, 3, 2, 2) for a in (x, z, w))

            def one(a: Any, b: Any, e: Any, c: Any) -> Any:
                return jnp.sum(clipresc.project(a, b, e, p=p, bounds=(0.0, 1.0)) * c)

            es = eps.reshape(2, 2)
            before = _clipresc.project_searches()
            gv = jax.jit(jax.vmap(jax.grad(one, argnums=(0, 1, 2))))(xs, zs, es, ws)
            assert _clipresc.project_searches() - before == 4
            wv = clipresc.project_vjp(x, z, eps, w, p=p, bounds=(0.0, 1.0))
            for got, key in zip(gv, ("x", "z", "eps")):
                np.testing.assert_array_equal(
                    np.asarray(got).reshape(wv[key].shape), wv[key], err_msg=key
                )


def test_data_errors_carry_the_numpy_message() -> None:
    x, z, lo, hi, _ = _case(np.float32)
    x[1, 2, 0, 1] = np.nan
    with pytest.raises(ValueError) as np_err:
        clipresc.project(x, z, 0.5, bounds=(lo, hi))
    with pytest.raises(jax.errors.JaxRuntimeError) as info:
        jax.jit(lambda x, z: clipresc.project(x, z, 0.5, bounds=_jb((lo, hi))))(x, z)
    assert str(np_err.value) in str(info.value)
    # under vmap: the mapped axis is one more batch axis of the message's indices
    with pytest.raises(ValueError) as np_err:
        clipresc.project(x, z, 0.5, bounds=(lo[0], hi[0]), axis=(1, 2, 3))
    with pytest.raises(jax.errors.JaxRuntimeError) as info:
        jax.jit(jax.vmap(lambda x, z: clipresc.project(x, z, 0.5, bounds=_jb((lo[0], hi[0])))))(
            x, z
        )
    assert str(np_err.value) in str(info.value)


def test_env_switch_forces_pure_callback() -> None:
    code = (
        "import jax, jax.numpy as jnp, numpy as np, clipresc\n"
        "from clipresc.frameworks import _jax_ffi\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.uniform(0.2, 0.8, (3, 5)); z = x + rng.standard_normal((3, 5))\n"
        "for p in (1, 2, np.inf):\n"
        "    y = jax.jit(lambda x, z: clipresc.project(x, z, 0.5, p=p))(x, z)\n"
        "    assert np.allclose(np.asarray(y), clipresc.project(x, z, 0.5, p=p), atol=1e-6)\n"
        "print(_jax_ffi.available(), clipresc._clipresc.jax_ffi_project_calls())\n"
    )
    env = dict(os.environ, CLIPRESC_JAX_FFI="0")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "(0,", "0)"]


@pytest.mark.parametrize("p", PS)
def test_eager_grad_in_a_python_float_eps(p: float) -> None:
    """An eager ``jax.grad`` traces only the differentiated operands: the handlers run op by
    op, and ``eps`` given as a Python float gets the summed per-row cotangent."""
    x, z, lo, hi, _ = _case(np.float64, seed=4)
    w = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape)
    with x64():
        jx, jz = jnp.asarray(x), jnp.asarray(z)
        ge = jax.grad(
            lambda e: jnp.sum(clipresc.project(jx, jz, e, p=p, bounds=_jb((lo, hi))) * w)
        )(0.45)
    want = clipresc.project_vjp(x, z, 0.45, w, p=p, bounds=(lo, hi))["eps"]
    np.testing.assert_allclose(float(ge), float(want), rtol=1e-12)
