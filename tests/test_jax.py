"""JAX integration (``clipresc.frameworks.jax``): values eagerly and under ``jit`` and
``vmap``, gradients (``jax.test_util.check_grads`` in float64, also under ``jit`` and
``vmap``), and errors. Every test runs twice: traced calls through the XLA FFI handlers,
then through the ``pure_callback`` fallback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import clipresc  # noqa: E402
from clipresc import _clipresc  # noqa: E402
from clipresc.frameworks import _jax_ffi  # noqa: E402
from clipresc.frameworks import jax as cj  # noqa: E402
from support.framework_cases import (  # noqa: E402
    P_GRAD,
    bad_cases,
    check_size,
    eps_in,
    grad_bounds,
    grad_problem,
    kwargs_in,
    numpy_message,
    spy_core,
    value_cases,
)
from support.jax_x64 import x64  # noqa: E402


@pytest.fixture(autouse=True, params=["ffi", "callback"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which path traced calls take; ``jit`` caches are cleared so that no trace of the
    other path is reused."""
    jax.clear_caches()
    if request.param == "callback":
        monkeypatch.setattr(_jax_ffi, "available", lambda: False)
    else:
        assert _jax_ffi.available(), "the XLA FFI handlers did not register"
    yield request.param
    jax.clear_caches()


def J(a: Any) -> Any:
    return jnp.asarray(a)


def jkwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs_in(kwargs, J)


def jeps(e: Any) -> Any:
    return eps_in(e, J)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("case", value_cases(), ids=lambda c: c.name)
def test_values_match_numpy(case: Any, mode: str) -> None:
    with x64():
        kw = jkwargs(case.kwargs)

        def f(x: Any, d: Any, e: Any) -> Any:
            return cj.perturb(x, d, e, **kw), cj.scale(x, d, e, **kw)

        g = jax.jit(f) if mode == "jit" else f
        y, eta = g(J(case.x), J(case.delta), jeps(case.eps))
        assert y.dtype == jnp.float64 and y.shape == case.x.shape
        np.testing.assert_array_equal(
            np.asarray(y), clipresc.perturb(case.x, case.delta, case.eps, **case.kwargs)
        )
        np.testing.assert_array_equal(
            np.asarray(eta), clipresc.scale(case.x, case.delta, case.eps, **case.kwargs)
        )
        check_size(case, np.asarray(y), rtol=1e-9)


def test_float32_default_and_bfloat16() -> None:
    case = value_cases(np.float32)[0]
    y = jax.jit(lambda x, d: cj.perturb(x, d, case.eps))(J(case.x), J(case.delta))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), clipresc.perturb(case.x, case.delta, case.eps))
    yb = cj.perturb(J(case.x).astype(jnp.bfloat16), J(case.delta).astype(jnp.bfloat16), 2.0)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, dtype=np.float32), np.asarray(y), atol=2e-2)


def test_vmap_batches_into_one_problem() -> None:
    """vmap over x/delta, over eps alone, and nested: equal to separate calls."""
    with x64():
        case = value_cases()[1]
        xs = np.stack([case.x, case.x * 0.5])
        ds = np.stack([case.delta, -case.delta])
        f = jax.vmap(lambda x, d: cj.perturb(x, d, J(case.eps), p=1.0))
        got = np.asarray(jax.jit(f)(J(xs), J(ds)))
        for i in range(2):
            want = clipresc.perturb(xs[i], ds[i], case.eps, p=1.0)
            np.testing.assert_array_equal(got[i], want)
        e = np.array([0.5, 1.0, 2.0])
        eta = jax.vmap(lambda e: cj.scale(J(case.x), J(case.delta), e))(J(e))
        assert eta.shape == (3, 4, 1, 1, 1)
        for i in range(3):
            np.testing.assert_array_equal(
                np.asarray(eta[i]), clipresc.scale(case.x, case.delta, e[i])
            )
        nested = jax.vmap(jax.vmap(lambda x, d: cj.perturb(x, d, 0.3)))(J(xs), J(ds))
        want = clipresc.perturb(xs[1, 2], ds[1, 2], 0.3)
        np.testing.assert_array_equal(np.asarray(nested[1, 2]), want)


def test_module_for() -> None:
    from clipresc import frameworks

    assert frameworks.module_for(jnp.zeros(2)) is cj


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("p", P_GRAD)
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_check_grads(fn: str, p: float) -> None:
    with x64():
        x, d, eps = (J(a) for a in grad_problem())
        f = getattr(cj, fn)
        check_grads(lambda a, b, c: f(a, b, c, p=p), (x, d, eps), order=1, modes=["rev"])
        check_grads(jax.jit(lambda a, b, c: f(a, b, c, p=p)), (x, d, eps), order=1, modes=["rev"])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_check_grads_array_bounds_axis(p: float) -> None:
    with x64():
        x, d, _ = (J(a) for a in grad_problem(1))
        lo, hi = (J(b) for b in grad_bounds())
        eps = J(0.6)

        def f(a: Any, b: Any, c: Any, lo: Any, hi: Any) -> Any:
            return cj.perturb(a, b, c, p=p, bounds=(lo, hi), axis=(0, 2))

        check_grads(jax.jit(f), (x, d, eps, lo, hi), order=1, modes=["rev"])


def test_grad_under_vmap() -> None:
    with x64():
        x, d, eps = grad_problem(2)
        xs = J(np.stack([x, x * 0.9]))
        ds = J(np.stack([d, d]))

        def loss(a: Any, b: Any, c: Any) -> Any:
            return jnp.sum(cj.perturb(a, b, c) ** 2)

        got = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(0, 0, None)))(
            xs, ds, J(eps)
        )
        for i in range(2):
            want = jax.grad(loss, argnums=(0, 1, 2))(xs[i], ds[i], J(eps))
            for g, w in zip(got, want):
                np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_backward_does_not_solve_again(
    monkeypatch: pytest.MonkeyPatch, fn: str, mode: str, path: str
) -> None:
    """The VJP gets the forward's eta (a residual): one solve for forward + backward (the
    FFI handlers count their calls; a VJP handler call never solves)."""
    with x64():
        x, d, eps = (J(a) for a in grad_problem(5))

        def loss(a: Any, b: Any, c: Any) -> Any:
            return jnp.sum(getattr(cj, fn)(a, b, c, p=3.0) ** 2)

        g = jax.grad(loss, argnums=(0, 1, 2))
        want = g(x, d, eps)
        seen = spy_core(monkeypatch)
        calls = _clipresc.jax_ffi_calls()
        if mode == "vmap":
            got = jax.jit(jax.vmap(g, in_axes=(0, None, None)))(jnp.stack([x, x]), d, eps)
            got = tuple(a[1] for a in got)
        else:
            got = (jax.jit(g) if mode == "jit" else g)(x, d, eps)
        if path == "ffi" and mode != "eager":
            assert seen == {"solves": [], "vjp_eta": []}
            assert np.subtract(_clipresc.jax_ffi_calls(), calls).tolist() == [1, 1]
        else:
            assert seen == {"solves": [f"{fn}_into"], "vjp_eta": [True]}
        for a, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", bad_cases(), ids=lambda b: b.name)
def test_errors_match_numpy(bad: Any) -> None:
    """Eager calls raise the NumPy path's exception; under jit, checks that need no data
    raise the same at trace time, and value checks surface as a JaxRuntimeError carrying
    the same message."""
    msg = numpy_message(bad)
    with x64():
        x, d, e, kw = J(bad.x), J(bad.delta), jeps(bad.eps), jkwargs(bad.kwargs)
        with pytest.raises(bad.exc) as info:
            cj.perturb(x, d, e, **kw)
        assert str(info.value) == msg
        jitted = jax.jit(lambda x, d, e: cj.perturb(x, d, e, **kw))
        if bad.data:
            with pytest.raises(jax.errors.JaxRuntimeError, match=_escape(msg)):
                jitted(x, d, e)
        else:
            with pytest.raises(bad.exc) as info:
                jitted(x, d, e)
            assert str(info.value) == msg


def _escape(msg: str) -> str:
    import re

    return re.escape(msg)
