"""TensorFlow integration (``clipresc.frameworks.tensorflow``): values eagerly and in
``tf.function`` (static output shapes), gradients against ``tf.test.compute_gradient`` in
float64, and errors."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import clipresc  # noqa: E402
from clipresc.frameworks import tensorflow as ctf  # noqa: E402
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


def C(a: Any) -> Any:
    return tf.constant(a)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("case", value_cases(), ids=lambda c: c.name)
def test_values_match_numpy(case: Any, mode: str) -> None:
    kw = kwargs_in(case.kwargs, C)

    def f(x: Any, d: Any, e: Any) -> Any:
        return ctf.perturb(x, d, e, **kw), ctf.scale(x, d, e, **kw)

    g = tf.function(f) if mode == "function" else f
    y, eta = g(C(case.x), C(case.delta), eps_in(case.eps, C))
    assert y.dtype == tf.float64 and tuple(y.shape) == case.x.shape
    want_eta = clipresc.scale(case.x, case.delta, case.eps, **case.kwargs)
    assert tuple(eta.shape) == want_eta.shape
    np.testing.assert_array_equal(
        y.numpy(), clipresc.perturb(case.x, case.delta, case.eps, **case.kwargs)
    )
    np.testing.assert_array_equal(eta.numpy(), want_eta)
    check_size(case, y.numpy(), rtol=1e-9)


def test_static_shapes_in_graph() -> None:
    """Shape inference sees the outputs' shapes (and keeps unknown batch sizes unknown)."""
    shapes = {}

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 4], tf.float32)] * 2)
    def f(x: Any, d: Any) -> Any:
        y = ctf.perturb(x, d, 1.0)
        eta = ctf.scale(x, d, 1.0)
        shapes["y"], shapes["eta"] = y.shape.as_list(), eta.shape.as_list()
        return y

    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 4)).astype(np.float32)
    d = np.ones_like(x)
    y = f(C(x), C(d))
    assert shapes == {"y": [None, 3, 4], "eta": [None, 1, 1]}
    np.testing.assert_array_equal(y.numpy(), clipresc.perturb(x, d, 1.0))


def test_float32_half_and_variable() -> None:
    case = value_cases(np.float32)[0]
    y = ctf.perturb(tf.Variable(case.x), C(case.delta), case.eps)
    assert y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), clipresc.perturb(case.x, case.delta, case.eps))
    for dt in (tf.float16, tf.bfloat16):
        yh = ctf.perturb(tf.cast(case.x, dt), tf.cast(case.delta, dt), case.eps)
        assert yh.dtype == dt
        np.testing.assert_allclose(tf.cast(yh, tf.float32).numpy(), y.numpy(), atol=2e-2)


def test_module_for() -> None:
    from clipresc import frameworks

    assert frameworks.module_for(tf.zeros(2)) is ctf
    assert frameworks.framework_of(tf.Variable(tf.zeros(2))) == "tensorflow"


# --------------------------------------------------------------------------- gradients


def _assert_jacobians(f: Any, args: list[Any]) -> None:
    theoretical, numerical = tf.test.compute_gradient(f, args, delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", P_GRAD)
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_compute_gradient(fn: str, p: float) -> None:
    x, d, eps = (C(a) for a in grad_problem())
    f = getattr(ctf, fn)
    _assert_jacobians(lambda a, b, c: f(a, b, c, p=p), [x, d, eps])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_compute_gradient_function_bounds_axis(p: float) -> None:
    """Inside tf.function (the VJP runs as a numpy_function), with tensor bounds."""
    x, d, _ = (C(a) for a in grad_problem(1))
    lo, hi = (C(b) for b in grad_bounds())

    @tf.function
    def f(a: Any, b: Any, c: Any, lo: Any, hi: Any) -> Any:
        return ctf.perturb(a, b, c, p=p, bounds=(lo, hi), axis=(0, 2))

    _assert_jacobians(f, [x, d, tf.constant(0.6, tf.float64), lo, hi])


def test_gradient_tape_matches_eager_in_function() -> None:
    x, d, eps = (C(a) for a in grad_problem(2))

    def grads(a: Any, b: Any, c: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch([a, b, c])
            loss = tf.reduce_sum(ctf.perturb(a, b, c) ** 2)
        return tape.gradient(loss, [a, b, c])

    for g, w in zip(tf.function(grads)(x, d, eps), grads(x, d, eps)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_backward_does_not_solve_again(monkeypatch: pytest.MonkeyPatch, fn: str, mode: str) -> None:
    """The gradient gets the forward's eta: one solve for forward + backward."""
    x, d, eps = (C(a) for a in grad_problem(5))

    def grads(a: Any, b: Any, c: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch([a, b, c])
            loss = tf.reduce_sum(getattr(ctf, fn)(a, b, c, p=3.0) ** 2)
        return tape.gradient(loss, [a, b, c])

    want = grads(x, d, eps)
    run = tf.function(grads) if mode == "function" else grads
    if mode == "function":
        run.get_concrete_function(x, d, eps)  # trace outside the spy
    seen = spy_core(monkeypatch)
    got = run(x, d, eps)
    assert seen == {"solves": [f"{fn}_into"], "vjp_eta": [True]}
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_eager_backward_reuses_the_forwards_problem(
    monkeypatch: pytest.MonkeyPatch, fn: str
) -> None:
    """Eagerly, the arguments are checked and laid out once: the gradient takes the
    forward's problem instead of preparing the call again."""
    from clipresc.frameworks import _numpy

    x, d, eps = (C(a) for a in grad_problem(6))
    lo = C(np.full(x.shape[1:], -0.5))

    def grads(a: Any, b: Any, c: Any, lo: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch([a, b, c, lo])
            loss = tf.reduce_sum(getattr(ctf, fn)(a, b, c, p=3.0, bounds=(lo, 1.5)) ** 2)
        return tape.gradient(loss, [a, b, c, lo])

    want = tf.function(grads)(x, d, eps, lo)  # prepares in the forward and the backward op
    prepared: list[Any] = []
    real = _numpy.prepare

    def spy(*args: Any, **kw: Any) -> Any:
        prepared.append(args[0].shape)
        return real(*args, **kw)

    monkeypatch.setattr(_numpy, "prepare", spy)
    got = grads(x, d, eps, lo)
    assert prepared == [tuple(x.shape)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", bad_cases(), ids=lambda b: b.name)
def test_errors_match_numpy(bad: Any) -> None:
    """Eager calls raise the NumPy path's exception; in tf.function, checks that need no
    data raise the same while tracing, value checks raise TensorFlow's error carrying the
    same message when the graph runs."""
    msg = numpy_message(bad)
    x, d, e, kw = C(bad.x), C(bad.delta), eps_in(bad.eps, C), kwargs_in(bad.kwargs, C)
    with pytest.raises(bad.exc) as info:
        ctf.perturb(x, d, e, **kw)
    assert str(info.value) == msg
    fn = tf.function(lambda x, d, e: ctf.perturb(x, d, e, **kw))
    if bad.data:
        with pytest.raises(tf.errors.OpError) as oinfo:
            fn(x, d, e)
        assert msg in str(oinfo.value)
    else:  # tf.function prefixes the message with the user-code trace
        with pytest.raises(bad.exc) as info:
            fn(x, d, e)
        assert msg in str(info.value)
