"""The XLA FFI path of ``clipresc.frameworks.jax`` (``_jax_ffi``): what ``tests/test_jax.py``
does not reach: ``vmap`` over array bounds and per-row ``eps`` (groups of rows in the
handler), float16, malformed calls, and the fallback to ``pure_callback``."""

from __future__ import annotations

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
from clipresc.frameworks import _jax_ffi  # noqa: E402
from clipresc.frameworks import jax as cj  # noqa: E402
from support.jax_x64 import x64  # noqa: E402


@pytest.fixture(autouse=True)
def ffi() -> None:
    assert _jax_ffi.available(), "the XLA FFI handlers did not register"


def _problem(b: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 0.9, (b, 4, 2, 3))
    d = rng.standard_normal((b, 4, 2, 3))
    lo = rng.uniform(0.0, 0.1, (b, 2, 3))  # per vmapped element, shared by its 4 rows
    hi = rng.uniform(0.9, 1.0, (b, 1, 1, 3))
    eps = rng.uniform(0.2, 0.6, (b, 4))  # per vmapped element and row
    return x, d, lo, hi, eps


def test_vmap_over_bounds_and_eps_matches_each_element() -> None:
    """Batched array bounds and per-row eps reach the handler as groups of rows; values and
    gradients equal separate NumPy-path / eager calls per vmapped element."""
    x, d, lo, hi, eps = _problem()
    with x64():

        def f(x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
            return cj.perturb(x, d, e, p=3.0, bounds=(lo, hi))

        def loss(*a: Any) -> Any:
            return jnp.sum(f(*a) * jnp.cos(a[0]))

        args = tuple(jnp.asarray(a) for a in (x, d, eps, lo, hi))
        y = jax.jit(jax.vmap(f))(*args)
        grads = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2, 3, 4))))(*args)
        for i in range(x.shape[0]):
            want = clipresc.perturb(x[i], d[i], eps[i], p=3.0, bounds=(lo[i], hi[i]))
            np.testing.assert_array_equal(np.asarray(y[i]), want)
            # eager grad: the NumPy path
            one = jax.grad(loss, argnums=(0, 1, 2, 3, 4))(*(a[i] for a in args))
            for g, w in zip(grads, one):
                assert g[i].shape == w.shape
                np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w), rtol=1e-12, atol=1e-14)


def test_vmap_scalar_eps_per_element_with_nontrailing_axis() -> None:
    x, d, _, _, _ = _problem()
    e = np.array([0.3, 0.5, 0.7])
    with x64():
        f = jax.jit(jax.vmap(lambda x, d, e: cj.scale(x, d, e, p=1.0, axis=(0, 2))))
        eta = f(jnp.asarray(x), jnp.asarray(d), jnp.asarray(e))
        for i in range(3):
            want = clipresc.scale(x[i], d[i], e[i], p=1.0, axis=(0, 2))
            np.testing.assert_array_equal(np.asarray(eta[i]), want)


def test_float16_matches_numpy_path() -> None:
    x, d, _, _, _ = _problem()
    x16, d16 = x.astype(np.float16), d.astype(np.float16)
    y = jax.jit(lambda x, d: cj.perturb(x, d, 0.4))(jnp.asarray(x16), jnp.asarray(d16))
    assert y.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(y), clipresc.perturb(x16, d16, 0.4))


def test_data_errors_under_vmap_carry_the_numpy_message() -> None:
    x, d, _, _, _ = _problem()
    x[1, 2, 0, 1] = np.nan
    try:
        clipresc.perturb(x, d, 0.5, axis=(1, 2, 3))
    except ValueError as e:
        msg = str(e)
    with pytest.raises(jax.errors.JaxRuntimeError) as info:
        jax.jit(jax.vmap(lambda x, d: cj.perturb(x, d, 0.5, axis=(0, 1, 2))))(
            jnp.asarray(x), jnp.asarray(d)
        )
    assert msg in str(info.value)


def test_malformed_call_is_an_xla_error() -> None:
    """A call without the attributes the handler needs fails cleanly (no crash)."""
    x = jnp.ones((2, 3), dtype=jnp.float32)
    spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    call = _jax_ffi._ffi().ffi_call(_jax_ffi.target_name("forward"), [spec])
    with pytest.raises(jax.errors.JaxRuntimeError, match="clipresc FFI call: missing"):
        jax.block_until_ready(jax.jit(lambda x: call(x, x, x[0, 0]))(x))


def test_failed_registration_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("no handlers")

    monkeypatch.setattr(_clipresc, "jax_ffi_targets", broken)
    assert _jax_ffi._register() is False


def test_env_switch_forces_pure_callback() -> None:
    code = (
        "import jax, jax.numpy as jnp, numpy as np, clipresc\n"
        "from clipresc.frameworks import jax as cj, _jax_ffi\n"
        "x = np.full((2, 3), 0.5, np.float32); d = np.ones((2, 3), np.float32)\n"
        "y = jax.jit(lambda x, d: cj.perturb(x, d, 0.3))(jnp.asarray(x), jnp.asarray(d))\n"
        "assert np.array_equal(np.asarray(y), clipresc.perturb(x, d, 0.3))\n"
        "print(_jax_ffi.available(), clipresc._clipresc.jax_ffi_calls())\n"
    )
    env = dict(os.environ, CLIPRESC_JAX_FFI="0")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "(0,", "0)"]


def test_subnormals_are_kept_as_on_the_numpy_path() -> None:
    """XLA's CPU threads flush subnormals to zero; the handlers compute with IEEE
    subnormals, so the bits equal the NumPy path's (found by test_fuzz_api)."""
    tiny = np.float32(1.4e-45)
    x = np.array([[-0.0, tiny, 3 * tiny, 0.5], [tiny, -0.0, 0.25, 0.0]], dtype=np.float32)
    d = np.array([[0.0, 0.0, 0.0, 0.0], [tiny, 2 * tiny, 0.0, -tiny]], dtype=np.float32)
    for eps in (0.0, 1e-44):
        y = jax.jit(lambda x, d, e=eps: cj.perturb(x, d, e, p=1.0))(jnp.asarray(x), jnp.asarray(d))
        want = clipresc.perturb(x, d, eps, p=1.0)
        assert np.asarray(y).tobytes() == want.tobytes()


@pytest.mark.parametrize("kind", ["scale", "perturb"])
@pytest.mark.parametrize("eps", [0.1, 0.7, 1.3, np.float64(2.0 / 3.0)])
def test_eager_keeps_a_float64_eps(kind: str, eps: float) -> None:
    """An eager float32 call takes the FFI with ``eps`` as float64 bits, not rounded to
    float32 as a JAX operand would be with 64-bit types off: the bits equal the NumPy path's
    (with a rounded eps 0.7 changes 116 of 2400 outputs), and per-row NumPy eps too."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, (8, 300)).astype(np.float32)
    d = rng.standard_normal((8, 300)).astype(np.float32)
    fn = getattr(clipresc, kind)
    before = _clipresc.jax_ffi_calls()[0]
    got = np.asarray(getattr(cj, kind)(jnp.asarray(x), jnp.asarray(d), eps))
    assert _clipresc.jax_ffi_calls()[0] == before + 1  # the FFI ran, not NumPy
    np.testing.assert_array_equal(got, fn(x, d, eps))
    rows = np.full(8, float(eps)) * np.linspace(0.5, 1.5, 8)
    got = np.asarray(getattr(cj, kind)(jnp.asarray(x), jnp.asarray(d), rows))
    np.testing.assert_array_equal(got, fn(x, d, rows))


def test_eager_calls_parse_plain_arguments_once() -> None:
    """A repeated eager call with plain arguments reuses its parsed description; whatever
    differs in the key (shape, p, bounds, axis) is parsed again and gives its own result,
    and a traced or non-plain call never enters the cache."""
    rng = np.random.default_rng(12)
    x = rng.uniform(0, 1, (4, 6)).astype(np.float32)
    d = rng.standard_normal((4, 6)).astype(np.float32)
    jx, jd = jnp.asarray(x), jnp.asarray(d)
    cj._PLAIN_CALLS.clear()
    calls = [
        ((jx, jd, 0.5), {}, (x, d, 0.5), {}),
        ((jx, jd, 0.25), {}, (x, d, 0.25), {}),
        ((jx, jd, 0.5), {"p": 1}, (x, d, 0.5), {"p": 1}),
        ((jx, jd, 0.5), {"bounds": (-0.5, 1.5)}, (x, d, 0.5), {"bounds": (-0.5, 1.5)}),
        ((jx, jd, 0.5), {"axis": 0}, (x, d, 0.5), {"axis": 0}),
        ((jx[:2], jd[:2], 0.5), {}, (x[:2], d[:2], 0.5), {}),
    ]
    for _ in range(2):
        for jargs, jkw, nargs, nkw in calls:
            got = np.asarray(cj.perturb(*jargs, **jkw))
            np.testing.assert_array_equal(got, clipresc.perturb(*nargs, **nkw))
    assert len(cj._PLAIN_CALLS) == 5  # eps is not part of the description
    jax.jit(lambda a, b: cj.perturb(a, b, 0.5, p=3))(jx, jd)
    cj.perturb(jx, jd, 0.5, bounds=(jnp.zeros(6), 1.0))
    cj.perturb(jx, jd, jnp.float32(0.5), p=3)
    assert len(cj._PLAIN_CALLS) == 5
    # values are still checked per call, with the NumPy path's messages
    bad_x = x.copy()
    bad_x[1, 2] = np.nan
    for args in ((jx, jd, -1.0), (jnp.asarray(bad_x), jd, 0.5)):
        with pytest.raises(ValueError) as numpy_error:
            clipresc.perturb(*(np.asarray(a) for a in args[:2]), args[2])
        with pytest.raises(ValueError) as jax_error:
            cj.perturb(*args)
        assert str(jax_error.value) == str(numpy_error.value)


def test_eager_ffi_takes_float_arrays_only() -> None:
    """The eager FFI call is offered float32 / float64 data alone: not bfloat16 or integer
    arrays, nor values without a dtype (a NumPy dtype compares equal to ``None`` and to a
    dtype's name, so the check must not be a bare membership test)."""
    usable = [jnp.zeros(2, jnp.float32), np.zeros(2, np.float32), np.zeros(2)]
    unusable = [jnp.zeros(2, jnp.bfloat16), jnp.zeros(2, jnp.int32), None, "float32", 1.0]
    assert [_jax_ffi.eager_usable(a) for a in usable] == [True] * 3
    assert [_jax_ffi.eager_usable(a) for a in unusable] == [False] * 5
