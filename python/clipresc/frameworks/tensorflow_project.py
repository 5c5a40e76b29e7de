"""TensorFlow ``custom_gradient`` for :func:`clipresc.project`: the forward and the
closed-form VJP run in the Rust core on the host through ``tf.numpy_function`` (eager and
inside ``tf.function``). Gradients flow to ``x``, ``z`` and ``eps``; bounds get none.

>>> import tensorflow as tf, clipresc
>>> x = tf.constant([[0.5, 0.9]]); z = tf.constant([[2.0, 0.9]])
>>> [round(float(v), 6) for v in clipresc.project(x, z, 0.25, p=1)[0]]
[0.75, 0.9]
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .. import _project

tf: Any = importlib.import_module("tensorflow")


def _host_bounds(bounds: Any) -> Any:
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return tuple(b.numpy() if hasattr(b, "numpy") else b for b in bounds)
    return bounds


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on tensors, differentiable in ``x``, ``z`` and ``eps``."""
    pf = _project.check_project_p(p)
    hb = _host_bounds(bounds)
    x = tf.convert_to_tensor(x)
    z = tf.convert_to_tensor(z, dtype=x.dtype)
    e = tf.convert_to_tensor(eps, dtype=x.dtype)

    def fwd_host(xa: Any, za: Any, ea: Any) -> Any:
        return np.asarray(_project.project_numpy(xa, za, ea, pf, hb, axis), dtype=xa.dtype)

    def vjp_host(xa: Any, za: Any, ea: Any, ga: Any, prob: Any = None) -> Any:
        if prob is None:
            prob = _project.prepare_project(xa, za, ea, pf, hb, axis)[0]
        out = _project.project_vjp_of(prob, za.dtype, ea, ga)
        return (
            np.asarray(out["x"], dtype=xa.dtype),
            np.asarray(out["z"], dtype=xa.dtype),
            np.asarray(out["eps"], dtype=ea.dtype).reshape(ea.shape),
        )

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def call(xt: Any, zt: Any, et: Any) -> Any:
        prob = None
        if tf.executing_eagerly():  # the backward takes the problem checked here
            prob = _project.prepare_project(xt.numpy(), zt.numpy(), et.numpy(), pf, hb, axis)[0]
            y = tf.convert_to_tensor(np.asarray(_project.project_of(prob), dtype=prob.dtype))
        else:
            y = tf.numpy_function(fwd_host, [xt, zt, et], xt.dtype, stateful=False)
            y = tf.ensure_shape(y, xt.shape)

        def grad(g: Any) -> Any:
            if prob is not None and tf.executing_eagerly():
                host = (xt.numpy(), zt.numpy(), et.numpy(), g.numpy())
                return [tf.convert_to_tensor(c) for c in vjp_host(*host, prob=prob)]
            gx, gz, ge = tf.numpy_function(
                vjp_host, [xt, zt, et, g], [xt.dtype, xt.dtype, et.dtype], stateful=False
            )
            return tf.ensure_shape(gx, xt.shape), tf.ensure_shape(gz, xt.shape), ge

        return y, grad

    return call(x, z, e)


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on tensors (eager)."""
    pf = _project.check_project_p(p)

    def host(a: Any) -> Any:
        return a.numpy() if hasattr(a, "numpy") else a

    out = _project.project_vjp_numpy(
        host(x), host(z), host(eps), host(ybar), pf, _host_bounds(bounds), axis
    )
    return {k: tf.convert_to_tensor(v) for k, v in out.items()}
