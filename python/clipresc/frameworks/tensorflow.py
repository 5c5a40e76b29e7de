"""TensorFlow integration: ``scale`` / ``perturb`` on tensors, differentiable, in ``tf.function``.

Both functions wrap the computation in ``tf.custom_gradient`` whose gradient is the
closed-form VJP, given the scales ``eta`` the forward found (no second solve). The work
runs in the Rust core:

* Eagerly (the default in TensorFlow 2), tensors go to the NumPy path as NumPy views
  (``Tensor.numpy()``) and the result comes back with ``tf.convert_to_tensor``; invalid
  input raises the same ``ValueError`` / ``TypeError`` as for NumPy.
* Inside ``tf.function`` (graph mode), the forward and the VJP are ``tf.numpy_function``
  ops whose outputs get the static shapes of the inputs (``eta``'s shape for ``scale``),
  so shape inference downstream works. Checks that need no data raise while tracing;
  checks of the values raise when the graph runs, as TensorFlow's
  ``tf.errors.InvalidArgumentError`` (or ``UnknownError``) carrying the NumPy path's message.

Gradients flow to ``x``, ``delta``, a tensor ``eps`` and tensor bounds (through
``tf.GradientTape`` as usual; ``tf.Variable`` arguments are read once). bfloat16 is
computed in float32. Importing this module imports TensorFlow;
:func:`clipresc.frameworks.module_for` imports it only for TensorFlow tensors.

>>> import tensorflow as tf
>>> from clipresc.frameworks import tensorflow as ctf
>>> x = tf.constant([[0.5, 0.9]], tf.float64); d = tf.ones((1, 2), tf.float64)
>>> eps = tf.constant([0.5], tf.float64)
>>> with tf.GradientTape() as tape:
...     tape.watch(eps)
...     y = ctf.perturb(x, d, eps, p=1)
...     first = y[0, 0]
>>> y.numpy().tolist(), tape.gradient(first, eps).numpy().tolist()
([[0.9, 1.0]], [1.0])
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import _call as call_args
from .. import _errors
from .._args import Axis
from . import _numpy

tf: Any = importlib.import_module("tensorflow")

__all__ = ["perturb", "scale"]


class _Config(NamedTuple):
    """Static description of one call (which bounds are tensors, and the rest)."""

    kind: str
    p: float
    lower_s: float
    upper_s: float
    has_lower: bool
    has_upper: bool
    axes: tuple[int, ...]
    unreachable: str


def _split(cfg: _Config, bounds: Sequence[Any]) -> tuple[Any, Any]:
    it = iter(bounds)
    lo = next(it) if cfg.has_lower else cfg.lower_s
    hi = next(it) if cfg.has_upper else cfg.upper_s
    return lo, hi


def _forward_host(cfg: _Config, x: Any, d: Any, e: Any, *bounds: Any) -> tuple[Any, Any, Any]:
    """The forward, the scales it used (``(rows,)``, work dtype) and the checked problem,
    both kept for the VJP."""
    lo, hi = _split(cfg, bounds)
    out, eta, prob = _numpy.forward_problem(
        cfg.kind, x, d, e, cfg.p, lo, hi, cfg.axes, cfg.unreachable
    )
    return np.asarray(out, dtype=x.dtype), eta, prob


def _forward_graph(cfg: _Config, *inputs: Any) -> list[Any]:
    """:func:`_forward_host` as a ``tf.numpy_function``: arrays only."""
    return list(_forward_host(cfg, *inputs)[:2])


def _vjp_host(
    cfg: _Config, prob: Any, g: Any, eta: Any, x: Any, d: Any, e: Any, *bounds: Any
) -> list[Any]:
    """The cotangents of the inputs. ``prob``: the forward's checked problem (eagerly), so
    that nothing is read or checked again; ``None`` inside ``tf.function``, where the
    forward and this are separate ops that exchange only tensors (the forward's ``eta``
    still spares the solve)."""
    lo, hi = _split(cfg, bounds)
    if prob is None:
        gs = _numpy.vjp(cfg.kind, x, d, e, g, cfg.p, lo, hi, cfg.axes, cfg.unreachable, eta=eta)
    else:
        gs = _numpy.vjp_of(prob, cfg.kind, x, d, e, g, lo, hi, eta=eta)
    gx, gd, ge, gl, gu = gs
    out = [gx, gd, ge]
    if cfg.has_lower:
        out.append(gl)
    if cfg.has_upper:
        out.append(gu)
    return out


def _host(t: Any) -> Any:
    return t.numpy()


def _out_shape(cfg: _Config, x: Any) -> Any:
    dims = x.shape.as_list()
    if cfg.kind == "scale":
        dims = [1 if a in cfg.axes else s for a, s in enumerate(dims)]
    return tf.TensorShape(dims)


def _differentiable(cfg: _Config) -> Any:
    fwd_host = tf.autograph.experimental.do_not_convert(functools.partial(_forward_graph, cfg))
    vjp_host = tf.autograph.experimental.do_not_convert(functools.partial(_vjp_host, cfg, None))

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def call(x: Any, d: Any, e: Any, *bounds: Any) -> Any:
        inputs = [x, d, e, *bounds]
        prob = eta_np = None
        if tf.executing_eagerly():
            y_np, eta_np, prob = _forward_host(cfg, *[_host(t) for t in inputs])
            y, eta = tf.convert_to_tensor(y_np), tf.convert_to_tensor(eta_np)
        else:
            wd = tf.float64 if x.dtype == tf.float64 else tf.float32
            y, eta = tf.numpy_function(fwd_host, inputs, Tout=[x.dtype, wd], stateful=False)
            y.set_shape(_out_shape(cfg, x))

        def grad(g: Any) -> list[Any]:
            # the forward's eta spares the VJP a second solve, its problem a second check
            if prob is not None and tf.executing_eagerly():
                host = _vjp_host(cfg, prob, _host(g), eta_np, *[_host(t) for t in inputs])
                return [tf.convert_to_tensor(c) for c in host]
            outs = tf.numpy_function(
                vjp_host,
                [g, eta, *inputs],
                Tout=[t.dtype for t in inputs],
                stateful=False,
            )
            for o, t in zip(outs, inputs):
                o.set_shape(t.shape)
            return list(outs)

        return y, grad

    return call


def _known(shape: Any) -> tuple[int, ...] | None:
    dims = shape.as_list() if shape.rank is not None else None
    if dims is None or any(s is None for s in dims):
        return None
    return tuple(int(s) for s in dims)


def _run_impl(
    kind: str, x: Any, delta: Any, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any
) -> Any:
    x = tf.convert_to_tensor(x)
    delta = tf.convert_to_tensor(delta)
    if x.shape.rank is None:
        raise _errors.unknown_rank()
    xs = _known(x.shape)
    xl, dl = tuple(x.shape.as_list()), tuple(delta.shape.as_list() if delta.shape.rank else ())
    if len(xl) != len(dl) or any(a != b for a, b in zip(xl, dl) if a is not None and b is not None):
        raise _errors.shape_mismatch(dl, xl)
    pf, mode, axes = call_args.check_meta(
        x.dtype.name, delta.dtype.name, xl, xl, p, unreachable, axis
    )
    out_dtype = x.dtype
    wd = tf.float64 if x.dtype == tf.float64 else tf.float32
    if x.dtype == tf.bfloat16:
        x = tf.cast(x, wd)
    if delta.dtype != x.dtype:
        delta = tf.cast(delta, x.dtype)
    if isinstance(eps, (tf.Tensor, tf.Variable)):
        eps = tf.convert_to_tensor(eps)
        call_args.check_eps_dtype(eps.dtype.name)
        if not eps.dtype.is_floating:
            eps = tf.cast(eps, tf.float64)
    else:
        e = np.asarray(eps)
        call_args.check_eps_dtype(str(e.dtype))
        eps = tf.constant(e.astype(np.float64))
    es = _known(eps.shape)
    if xs is not None and es is not None:
        eta_shape = tuple(1 if a in axes else s for a, s in enumerate(xs))
        rows = math.prod(s for a, s in enumerate(xs) if a not in axes)
        if not call_args.eps_fits(es, rows, eta_shape):
            raise _errors.eps_shape(rows, es)
    tensors: list[Any] = []
    scalars: list[float] = []
    for value, side in zip(call_args.split_bounds(bounds), ("lower", "upper")):
        s = call_args.scalar_side(value, side)
        if s is not None:
            scalars.append(s)
            continue
        b = tf.convert_to_tensor(value)
        bs = _known(b.shape)
        if xs is not None and bs is not None:
            call_args.check_side_array(side, b.dtype.name, bs, xs)
        b = tf.cast(b, wd) if b.dtype != wd else b
        tensors.append(tf.reshape(b, [1]) if b.shape.rank == 0 else b)
        scalars.append(0.0)
    lowers = call_args.split_bounds(bounds)
    cfg = _Config(
        kind,
        pf,
        scalars[0],
        scalars[1],
        call_args.scalar_side(lowers[0], "lower") is None,
        call_args.scalar_side(lowers[1], "upper") is None,
        axes,
        mode,
    )
    out = _differentiable(cfg)(x, delta, eps, *tensors)
    return out if out.dtype == out_dtype else tf.cast(out, out_dtype)


# plain Python at trace time: keep AutoGraph from rewriting it inside tf.function
_run = tf.autograph.experimental.do_not_convert(_run_impl)


def scale(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = (0.0, 1.0),
    axis: Axis = None,
    unreachable: str = "saturate",
) -> Any:
    """:func:`clipresc.scale` for TensorFlow tensors, differentiable, usable in ``tf.function``.

    Arguments as :func:`clipresc.scale`; ``eps`` and the bounds may be tensors (which then
    get gradients) or numbers. Returns ``eta`` as a tensor of ``x``'s dtype.

    >>> import tensorflow as tf
    >>> from clipresc.frameworks import tensorflow as ctf
    >>> x = tf.constant([[0.5, 0.9]], tf.float64)
    >>> ctf.scale(x, tf.ones_like(x), 0.5, p=1).numpy().tolist()
    [[0.4]]
    """
    return _run("scale", x, delta, eps, p, bounds, axis, unreachable)


def perturb(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = (0.0, 1.0),
    axis: Axis = None,
    unreachable: str = "saturate",
) -> Any:
    """:func:`clipresc.perturb` for TensorFlow tensors, differentiable, usable in
    ``tf.function``.

    Arguments as :func:`clipresc.perturb`; returns ``clip(x + eta * delta, lower, upper)``
    as a tensor of ``x``'s shape and dtype.

    >>> import tensorflow as tf
    >>> from clipresc.frameworks import tensorflow as ctf
    >>> x = tf.random.uniform((8, 3, 4, 4), seed=0)
    >>> d = tf.random.normal((8, 3, 4, 4), seed=1)
    >>> y = tf.function(ctf.perturb)(x, d, 1.0)
    >>> y.shape
    TensorShape([8, 3, 4, 4])
    >>> norms = tf.norm(tf.reshape(y - x, (8, -1)), axis=1)
    >>> bool(tf.reduce_all(tf.abs(norms - 1.0) < 1e-5))
    True
    """
    return _run("perturb", x, delta, eps, p, bounds, axis, unreachable)
