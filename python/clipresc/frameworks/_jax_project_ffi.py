"""The XLA FFI path of :mod:`clipresc.frameworks.jax_project`: a traced ``project`` (under
``jit``, ``vmap``, a traced ``grad``) runs the Rust core as an XLA custom call on CPU, on XLA's
own buffers, forward and VJP alike (``_clipresc.jax_ffi_targets()``'s ``"project"`` and
``"project_vjp"``, registered with the others by ``frameworks/_jax_ffi.py``).

A call is described by :func:`clipresc.frameworks.jax.parse`'s configuration (``kind``
``"project"``, ``z`` in the direction's place), so the operands reach the handlers exactly as
``perturb``'s do: vector axes trailing, a static scalar ``eps`` as a float64 attribute, array
bounds as operands, and under ``vmap`` (``vmap_method="broadcast_all"``) the mapped axes as
more batch axes of one core call. The forward also returns each row's multiplier, the bits
of a float64 as two uint32 words (so it needs no 64-bit JAX types), which :func:`vjp` hands
back to the core: the backward searches no row again. The handler returns one ``eps``
cotangent per row; :func:`vjp` sums them to ``eps``'s shape. Where the FFI is not available (or
``CLIPRESC_JAX_FFI=0``), or on a platform other than CPU, :func:`select` takes the
``pure_callback`` path of ``jax_project``.

>>> import jax, jax.numpy as jnp, clipresc
>>> from clipresc import _clipresc
>>> before = _clipresc.jax_ffi_project_calls()[0]
>>> y = jax.jit(lambda z: clipresc.project(jnp.array([[0.5, 0.9]]), z, 0.25, p=1))(
...     jnp.array([[2.0, 0.9]]))
>>> [round(float(v), 6) for v in y[0]], _clipresc.jax_ffi_project_calls()[0] > before
([0.75, 0.9], True)
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np

from . import _jax_ffi


class Call(NamedTuple):
    """The static part of one traced call: :func:`clipresc.frameworks.jax.parse`'s
    configuration (``kind="project"``, ``z`` as its ``delta``) and a scalar ``eps`` known
    at trace time (``None`` for an array or traced ``eps``), kept here because
    ``jax.custom_vjp`` turns every operand into a tracer: the handler gets it as a float64
    attribute, so it is not rounded to float32 with JAX's 64-bit types off."""

    cfg: Any
    eps: float | None


def _static(call: Call, e: Any) -> Any:
    return e if call.eps is None else np.float64(call.eps)


def mult_spec(cfg: Any) -> Any:
    """The multipliers' shape and dtype: per row, a float64's bits as two uint32 words."""
    jax, jnp = sys.modules["jax"], sys.modules["jax.numpy"]
    return jax.ShapeDtypeStruct((*_jax_ffi._batch_shape(cfg), 2), jnp.uint32)


def unknown_mult(cfg: Any) -> Any:
    """Multipliers that say "unknown" (NaN) for every row: the backward searches again."""
    jnp = sys.modules["jax.numpy"]
    nan = np.frombuffer(np.float64(np.nan).tobytes(), dtype=np.uint32)
    return jnp.broadcast_to(jnp.asarray(nan), mult_spec(cfg).shape)


def forward(call: Call, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """The projection of one traced call, in ``x``'s dtype, and its multipliers (the
    residual :func:`vjp` takes)."""
    jax = sys.modules["jax"]
    cfg, e = call.cfg, _static(call, e)
    ops = _jax_ffi._operands(cfg, x, z, e, lo, hi)
    spec = jax.ShapeDtypeStruct(ops[0].shape, ops[0].dtype)
    fn = _jax_ffi._ffi().ffi_call(
        _jax_ffi.target_name("project"), [spec, mult_spec(cfg)], vmap_method="broadcast_all"
    )
    y, mult = fn(*ops, **_jax_ffi._attrs(cfg, e, lo, hi, False))
    return _jax_ffi._untrail(cfg, y).astype(x.dtype), mult


def _eps_grad(cfg: Any, per_row: Any, e: Any) -> Any:
    """One cotangent per row (``x``'s batch axes) summed to the shape of ``eps``."""
    e = sys.modules["jax.numpy"].asarray(e)  # a residual may be a typed Python scalar
    g = per_row.reshape(cfg.eta_shape)
    if e.ndim == 0:
        return g.sum().astype(e.dtype)
    if e.ndim == 1 and e.shape[0] == cfg.rows:
        return g.reshape(e.shape).astype(e.dtype)
    nd = len(cfg.shape)
    padded = (1,) * (nd - e.ndim) + tuple(e.shape)
    axes = tuple(a for a in range(nd) if padded[a] == 1 and g.shape[a] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(e.shape).astype(e.dtype)


def vjp(
    call: Call, g: Any, x: Any, z: Any, e: Any, lo: Any, hi: Any, mult: Any = None
) -> tuple[Any, ...]:
    """Cotangents ``(x, z, eps, lower, upper)`` for the cotangent ``g`` of the projection,
    given the forward's multipliers ``mult`` (from :func:`forward`; ``None``: search
    again); the bounds get zeros (``None`` for a scalar side), a static ``eps`` zero."""
    jax = sys.modules["jax"]
    jnp = sys.modules["jax.numpy"]
    cfg, e_op, e = call.cfg, e, _static(call, e)
    ops = _jax_ffi._operands(cfg, x, z, e, lo, hi)
    wd = ops[0].dtype
    cot = _jax_ffi._trailing(cfg, g.astype(wd))
    specs = [
        jax.ShapeDtypeStruct(ops[0].shape, wd),
        jax.ShapeDtypeStruct(ops[0].shape, wd),
        jax.ShapeDtypeStruct(_jax_ffi._batch_shape(cfg), wd),
    ]
    fn = _jax_ffi._ffi().ffi_call(
        _jax_ffi.target_name("project_vjp"), specs, vmap_method="broadcast_all"
    )
    given = () if mult is None else (mult,)
    gx, gz, ge = fn(*ops, cot, *given, **_jax_ffi._attrs(cfg, e, lo, hi, False))
    gx = _jax_ffi._untrail(cfg, gx).astype(x.dtype)
    gz = _jax_ffi._untrail(cfg, gz).astype(z.dtype)

    def zeros(b: Any) -> Any:
        return None if b is None else jnp.zeros_like(b)

    ge = jnp.zeros_like(e_op) if call.eps is not None else _eps_grad(cfg, ge, e_op)
    return gx, gz, ge, zeros(lo), zeros(hi)


def explain(cfg: Any, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> str:
    """The NumPy path's message for a projection the handler rejected: the operands in the
    caller's layout, with any vmapped axes in front (from ``_jax_ffi.explain``)."""
    from .. import _project
    from .jax import _Lead, _side

    ld = _Lead(cfg, x)
    lower = _side(ld.bound(lo, cfg.lower_shape), cfg.lower_s)
    upper = _side(ld.bound(hi, cfg.upper_shape), cfg.upper_s)
    try:
        e = e if np.ndim(e) == 0 else ld.eps(e)  # a static eps: one value for all
        _project.project_numpy(x, z, e, cfg.p, (lower, upper), ld.axes)
    except Exception as err:
        return str(err)
    return "clipresc: invalid input"
