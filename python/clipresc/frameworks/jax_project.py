"""JAX ``custom_vjp`` for :func:`clipresc.project` (the plumbing of ``frameworks/_jax_vjp.py``,
shared with :mod:`clipresc.frameworks.jax`): the forward and the closed-form VJP run in the
Rust core. Traced calls (``jit``, ``vmap``, a traced ``grad``) on CPU run it as an XLA FFI
custom call on XLA's buffers (``frameworks/_jax_project_ffi.py``; under ``vmap`` one core
call for the whole mapped batch). Eager calls, and traced ones where the FFI is not
available (``CLIPRESC_JAX_FFI=0``, another platform), run it on the host through
``jax.pure_callback`` (under ``vmap`` once per mapped element). Value checks (NaN,
``x`` outside its bounds, negative ``eps``) run in the callback, where JAX reports them as
a runtime error containing the NumPy path's message. Gradients flow to ``x``, ``z`` and
``eps``; bounds get none.

>>> import jax, jax.numpy as jnp, clipresc
>>> x = jnp.array([[0.5, 0.9]]); z = jnp.array([[2.0, 0.9]])
>>> [round(float(v), 6) for v in clipresc.project(x, z, 0.25, p=1)[0]]
[0.75, 0.9]
>>> float(jax.grad(lambda e: clipresc.project(x, z, e, p=1)[0, 0])(0.25))
1.0
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, NamedTuple

import numpy as np

from .. import _errors, _project
from . import _jax_ffi, _jax_project_ffi, _jax_vjp
from . import jax as _cj

jax: Any = importlib.import_module("jax")
jnp: Any = importlib.import_module("jax.numpy")


def _sides(bounds: Any) -> tuple[Any, Any] | None:
    if bounds is None:
        return None
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return (bounds[0], bounds[1])
    raise _errors.bounds_not_pair()


def _as_operand(v: Any, inf: float) -> Any:
    return jnp.asarray(inf if v is None else v)


class _Config(NamedTuple):
    """The static part of one call."""

    p: float
    axis: Any
    boxed: bool


def _bounds_of(cfg: _Config, lo: Any, hi: Any) -> Any:
    return (np.asarray(lo), np.asarray(hi)) if cfg.boxed else None


def _forward_host(cfg: _Config, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> Any:
    y = _project.project_numpy(
        np.asarray(x), np.asarray(z), np.asarray(e), cfg.p, _bounds_of(cfg, lo, hi), cfg.axis
    )
    return np.asarray(y, dtype=np.asarray(x).dtype)


def _vjp_host(cfg: _Config, x: Any, z: Any, e: Any, lo: Any, hi: Any, g: Any) -> Any:
    x, z, e, g = (np.asarray(a) for a in (x, z, e, g))
    out = _project.project_vjp_numpy(x, z, e, g, cfg.p, _bounds_of(cfg, lo, hi), cfg.axis)
    return (
        np.asarray(out["x"], dtype=x.dtype),
        np.asarray(out["z"], dtype=x.dtype),
        np.asarray(out["eps"], dtype=e.dtype).reshape(e.shape),
    )


def _forward(cfg: _Config, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, None]:
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    fn = functools.partial(_forward_host, cfg)
    return _jax_vjp.host_callback(fn, spec, x, z, e, lo, hi, vmap_method=_VMAP), None


def _vjp(cfg: _Config, g: Any, ops: tuple[Any, ...], res: None) -> tuple[Any, ...]:
    x, z, e, lo, hi = ops
    specs = (
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        jax.ShapeDtypeStruct(e.shape, e.dtype),
    )
    fn = functools.partial(_vjp_host, cfg)
    gx, gz, ge = _jax_vjp.host_callback(fn, specs, x, z, e, lo, hi, g, vmap_method=_VMAP)
    return gx, gz, ge, jnp.zeros_like(lo), jnp.zeros_like(hi)  # bounds get no gradient


_VMAP = "sequential"
_call = _jax_vjp.custom_vjp(_forward, _vjp)


def _callback_config(call: Any, lo: Any, hi: Any) -> tuple[_Config, Any, Any]:
    """The ``pure_callback`` path's configuration and bound operands for a traced call
    (``_jax_project_ffi.Call``): the fallback of the FFI path."""
    cfg = call.cfg
    open_box = lo is None and hi is None and cfg.lower_s == -np.inf and cfg.upper_s == np.inf
    old = _Config(cfg.p, cfg.axes, not open_box)
    return (
        old,
        _as_operand(cfg.lower_s if lo is None else lo, -np.inf),
        _as_operand(cfg.upper_s if hi is None else hi, np.inf),
    )


def _callback_forward(cfg: Any, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """The FFI forward's outputs from the callback path: no multipliers (unknown)."""
    old, lo_op, hi_op = _callback_config(cfg, lo, hi)
    return _forward(old, x, z, e, lo_op, hi_op)[0], _jax_project_ffi.unknown_mult(cfg.cfg)


def _callback_vjp(
    cfg: Any, g: Any, x: Any, z: Any, e: Any, lo: Any, hi: Any, mult: Any = None
) -> tuple[Any, ...]:
    old, lo_op, hi_op = _callback_config(cfg, lo, hi)
    gx, gz, ge, _, _ = _vjp(old, g, (x, z, jnp.asarray(e), lo_op, hi_op), None)
    zero = jnp.zeros_like
    return gx, gz, ge, None if lo is None else zero(lo), None if hi is None else zero(hi)


def _traced_forward(cfg: Any, x: Any, z: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """The projection and, as the residual, its multipliers (see ``_jax_project_ffi``)."""
    ops = (x, z, e, lo, hi)
    y, mult = _jax_ffi.select(_jax_project_ffi.forward, _callback_forward, cfg, *ops)
    return y, mult


def _traced_vjp(cfg: Any, g: Any, ops: tuple[Any, ...], mult: Any) -> tuple[Any, ...]:
    return _jax_ffi.select(_jax_project_ffi.vjp, _callback_vjp, cfg, g, *ops, mult)  # type: ignore[no-any-return]


# traced calls: the XLA FFI handlers on CPU, else the callback path above
_traced_call = _jax_vjp.custom_vjp(_traced_forward, _traced_vjp)


def _traced(x: Any, z: Any, eps: Any, p: float, bounds: Any, axis: Any) -> Any:
    """A traced call described as ``perturb``'s (``z`` as ``delta``), or ``None`` where
    that description rejects the arguments: the callback path then raises the NumPy
    path's error for them."""
    try:
        parsed = _cj.parse("project", x, z, eps, p, bounds, axis, "saturate")
    except (ValueError, TypeError):
        return None
    cfg, xw, zw, e, lo, hi, out_dtype = parsed
    call = _jax_project_ffi.Call(cfg, _jax_ffi._static_eps(e))
    y = _traced_call(call, xw, zw, e, lo, hi)
    return y if y.dtype == out_dtype else y.astype(out_dtype)


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on JAX arrays, differentiable in ``x``, ``z`` and ``eps``."""
    pf = _project.check_project_p(p)
    sides = _sides(bounds)
    if _jax_vjp.is_traced(x, z, eps, *(sides or ())):
        y = _traced(x, z, eps, pf, bounds, axis)
        if y is not None:
            return y
    x, z = jnp.asarray(x), jnp.asarray(z)
    lo, hi = (-np.inf, np.inf) if sides is None else sides
    e = jnp.asarray(eps, dtype=x.dtype if jnp.ndim(eps) == 0 else None)
    ax = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    cfg = _Config(pf, ax, sides is not None)
    return _call(cfg, x, z, e, _as_operand(lo, -np.inf), _as_operand(hi, np.inf))


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on JAX arrays."""
    _, pull = jax.vjp(lambda a, b, e: project(a, b, e, p, bounds, axis), x, z, jnp.asarray(eps))
    gx, gz, ge = pull(jnp.broadcast_to(jnp.asarray(ybar, dtype=jnp.asarray(x).dtype), x.shape))
    return {"x": gx, "z": gz, "eps": ge}
