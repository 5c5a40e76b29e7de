"""The XLA FFI path of :mod:`clipresc.frameworks.jax`: traced calls run the Rust core as an
XLA custom call on CPU, on XLA's own buffers (no copies in or out, unlike
``jax.pure_callback``).

The compiled module exports the handlers as capsules (``_clipresc.jax_ffi_targets``); they
are registered here on first use, once JAX's CPU backend exists (registering a handler that
a jaxlib rejects before the backend starts keeps the backend from starting), under names
that carry clipresc's version. If anything fails (no CPU default backend, an old or future
jaxlib, the self-test disagrees), :func:`available` returns ``False`` and the caller uses
``pure_callback``; ``CLIPRESC_JAX_FFI=0`` in the environment forces that fallback.

The handlers take the vector axes trailing: :func:`forward` and :func:`vjp` transpose
around the call when ``axis`` names other axes. Under ``vmap`` the call uses
``vmap_method="broadcast_all"``: the mapped axes come first in every operand and the
handler treats them as more batch axes (one core call for the whole mapped batch).

>>> import jax, jax.numpy as jnp
>>> from clipresc.frameworks import jax as cj, _jax_ffi
>>> y = jax.jit(lambda x: cj.perturb(x, jnp.ones((1, 2)), 0.5, p=1))(jnp.array([[0.5, 0.9]]))
>>> _jax_ffi.available(), [round(float(v), 6) for v in y[0]]
(True, [0.9, 1.0])
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any

import numpy as np

from .. import __version__, _clipresc

_lock = threading.Lock()
_keys_lock = threading.Lock()
_ready: bool | None = None
_configs: dict[Any, int] = {}
_by_key: list[Any] = []


def target_name(handler: str) -> str:
    """The XLA target name of a handler: clipresc's version in it, so that two installed
    versions never share a name.

    >>> target_name("forward").startswith("clipresc_")
    True
    """
    ver = "".join(c if c.isalnum() else "_" for c in __version__)
    return f"clipresc_{ver}_{handler}"


def _ffi() -> Any:
    jax = sys.modules["jax"]
    mod = getattr(jax, "ffi", None)  # jax >= 0.5; jax.extend.ffi before (gone in 0.7)
    if mod is None or not hasattr(mod, "ffi_call"):
        mod = importlib.import_module("jax.extend.ffi")
    return mod


def available() -> bool:
    """Whether traced calls go through the XLA FFI (registering the handlers on first use).

    >>> isinstance(available(), bool)
    True
    """
    global _ready
    if _ready is None:
        with _lock:
            if _ready is None:
                _ready = _register()
    return _ready


def _register() -> bool:
    if os.environ.get("CLIPRESC_JAX_FFI", "1") == "0":
        return False
    try:
        jax = sys.modules["jax"]
        if jax.default_backend() != "cpu":  # starts the backends first
            return False
        ffi = _ffi()
        for name, capsule in _clipresc.jax_ffi_targets().items():
            ffi.register_ffi_target(target_name(name), capsule, platform="cpu")
        return _self_test_outside_traces()
    except Exception:  # any failure: the pure_callback path still works
        return False


def _self_test_outside_traces() -> bool:
    """:func:`_self_test` in a thread of its own: JAX's traces are per thread, and the
    first use usually comes while tracing the caller's function."""
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(_self_test())
        except Exception:  # reported as False: the caller falls back
            result.append(False)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join()
    return result == [True]


def _self_test() -> bool:
    """One tiny jitted call, value and gradient, against known numbers."""
    jax = sys.modules["jax"]
    jnp = sys.modules["jax.numpy"]
    from .jax import _Config

    cfg = _Config("perturb", 1.0, 0.0, 1.0, (1,), "saturate", (1, 2), (), None, None)
    x = jnp.array([[0.5, 0.9]], dtype=jnp.float32)
    d = jnp.ones((1, 2), dtype=jnp.float32)
    e = jnp.asarray(0.5, dtype=jnp.float32)

    def f(x: Any, e: Any) -> Any:
        y, eta = forward(cfg, x, d, e, None, None)
        gx, _, ge, _, _ = vjp(cfg, jnp.ones_like(y), x, d, e, None, None, eta)
        return y, eta, gx, ge

    y, eta, gx, ge = (np.asarray(a) for a in jax.jit(f)(x, e))
    # eta = eps - (1 - x1) = 0.4 (x1 saturates); y = (x0 + eta, 1): d y0 / d(x0, x1, eps) = 1
    return bool(
        np.allclose(y, [[0.9, 1.0]])
        and np.allclose(eta, [0.4])
        and np.allclose(gx, [[1.0, 1.0]])
        and np.allclose(ge, 1.0)
    )


def _key(cfg: Any) -> int:
    """A small integer naming ``cfg``, so that a failing handler can ask :func:`explain`."""
    with _keys_lock:
        k = _configs.get(cfg)
        if k is None:
            k = _configs[cfg] = len(_by_key)
            _by_key.append(cfg)
        return k


def _perm(cfg: Any) -> tuple[int, ...]:
    """``x``'s axes with the vector axes moved last."""
    nd = len(cfg.shape)
    return tuple(a for a in range(nd) if a not in cfg.axes) + tuple(cfg.axes)


def _trailing(cfg: Any, a: Any) -> Any:
    jnp = sys.modules["jax.numpy"]
    perm = _perm(cfg)
    return a if perm == tuple(range(len(perm))) else jnp.transpose(a, perm)


def _untrail(cfg: Any, a: Any) -> Any:
    jnp = sys.modules["jax.numpy"]
    perm = _perm(cfg)
    return a if perm == tuple(range(len(perm))) else jnp.transpose(a, np.argsort(perm))


def _batch_shape(cfg: Any) -> tuple[int, ...]:
    return tuple(s for a, s in enumerate(cfg.shape) if a not in cfg.axes)


def _work(a: Any) -> Any:
    jnp = sys.modules["jax.numpy"]
    return a if a.dtype in (jnp.float32, jnp.float64) else a.astype(jnp.float32)


def _side(cfg: Any, b: Any, shape: Any) -> Any:
    """An array bound as the handler takes it: one shared row ``(1, ..., 1, *vector)``
    where it is constant along the batch axes, else ``x``'s trailing layout."""
    jnp = sys.modules["jax.numpy"]
    if b is None:
        return None
    nd = len(cfg.shape)
    b = b.reshape((1,) * (nd - len(shape)) + tuple(shape))
    shared = all(b.shape[a] == 1 for a in range(nd) if a not in cfg.axes)
    to = tuple(1 if shared and a not in cfg.axes else s for a, s in enumerate(cfg.shape))
    return _trailing(cfg, jnp.broadcast_to(b, to))


def _side_grad(cfg: Any, g: Any, shape: Any) -> Any:
    """A bound's cotangent from the handler's layout back to the bound's shape."""
    if g is None:
        return None
    g = _untrail(cfg, g)
    nd = len(cfg.shape)
    padded = (1,) * (nd - len(shape)) + tuple(shape)
    axes = tuple(a for a in range(nd) if padded[a] == 1 and g.shape[a] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)


def _attrs(cfg: Any, lo: Any, hi: Any, perturb: bool) -> dict[str, Any]:
    return {
        "p": np.float64(cfg.p),
        "lower": np.float64(cfg.lower_s),
        "upper": np.float64(cfg.upper_s),
        "lower_array": np.int64(lo is not None),
        "upper_array": np.int64(hi is not None),
        "nvec": np.int64(len(cfg.axes)),
        "perturb": np.int64(perturb),
        "raise_unreachable": np.int64(cfg.unreachable == "raise"),
        "cfg": np.int64(_key(cfg)),
    }


def _operands(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> list[Any]:
    x = _work(x)
    ops = [_trailing(cfg, x), _trailing(cfg, d.astype(x.dtype)), _work(e)]
    for b, shape in ((lo, cfg.lower_shape), (hi, cfg.upper_shape)):
        if b is not None:
            ops.append(_side(cfg, b.astype(x.dtype), shape))
    return ops


def forward(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """``(out, eta)`` of one traced call: ``out`` as :func:`clipresc.scale` /
    :func:`clipresc.perturb` give it (work dtype), ``eta`` the ``(*batch,)`` scales the
    backward reuses."""
    jax = sys.modules["jax"]
    ops = _operands(cfg, x, d, e, lo, hi)
    wd = ops[0].dtype
    eta_spec = jax.ShapeDtypeStruct(_batch_shape(cfg), wd)
    perturb = cfg.kind == "perturb"
    specs = [jax.ShapeDtypeStruct(ops[0].shape, wd), eta_spec] if perturb else [eta_spec]
    call = _ffi().ffi_call(target_name("forward"), specs, vmap_method="broadcast_all")
    outs = call(*ops, **_attrs(cfg, lo, hi, perturb))
    eta = outs[-1]
    out = _untrail(cfg, outs[0]) if perturb else eta.reshape(cfg.eta_shape)
    return out, eta


def _eager(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
    return forward(cfg, x, d, e, lo, hi)[0]


_eager_jit: Any = None


def eager_forward(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
    """:func:`forward`'s output for concrete arrays, compiled once per ``cfg`` and waited
    for, so that rejected data raises here (``jax.errors.JaxRuntimeError``)."""
    global _eager_jit
    jax = sys.modules["jax"]
    if _eager_jit is None:
        _eager_jit = jax.jit(_eager, static_argnums=0)
    return _eager_jit(cfg, x, d, e, lo, hi).block_until_ready()


def vjp(
    cfg: Any, g: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any, eta: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """Cotangents ``(x, delta, eps, lower, upper)`` for the cotangent ``g`` of the output,
    given the forward's ``eta``; ``None`` for a scalar side."""
    jax = sys.modules["jax"]
    ops = _operands(cfg, x, d, e, lo, hi)
    wd = ops[0].dtype
    perturb = cfg.kind == "perturb"
    cot = _trailing(cfg, g.astype(wd)) if perturb else g.astype(wd).reshape(_batch_shape(cfg))
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in ops]
    call = _ffi().ffi_call(target_name("backward"), specs, vmap_method="broadcast_all")
    outs = list(call(*ops, eta.astype(wd), cot, **_attrs(cfg, lo, hi, perturb)))
    gx, gd, ge = _untrail(cfg, outs[0]), _untrail(cfg, outs[1]), outs[2]
    rest = iter(outs[3:])
    gl = _side_grad(cfg, next(rest), cfg.lower_shape) if lo is not None else None
    gu = _side_grad(cfg, next(rest), cfg.upper_shape) if hi is not None else None

    def cast(c: Any, like: Any) -> Any:
        return None if like is None else c.astype(like.dtype).reshape(like.shape)

    return cast(gx, x), cast(gd, d), cast(ge, e), cast(gl, lo), cast(gu, hi)


def explain(key: int, arrays: tuple[Any, ...]) -> str:
    """The NumPy path's message for the operands of a handler call that the core rejected
    (called by the handler, with copies of its operands, only on that failure).

    >>> explain(-1, ())
    'clipresc: invalid input'
    """
    if not 0 <= key < len(_by_key) or len(arrays) < 3:
        return "clipresc: invalid input"
    cfg = _by_key[key]
    from .jax import _forward_host

    x, d, e = arrays[:3]
    k = x.ndim - len(cfg.shape)
    perm = _perm(cfg)
    inv = tuple(range(k)) + tuple(k + int(a) for a in np.argsort(perm))
    bounds: list[Any] = []
    shapes: list[Any] = []
    rest = iter(arrays[3:])
    for shape in (cfg.lower_shape, cfg.upper_shape):
        if shape is not None:
            b = np.transpose(next(rest), inv)
            if b.shape[k:] == (1,) * (len(cfg.shape) - len(shape)) + tuple(shape):
                b = b.reshape(b.shape[:k] + tuple(shape))  # as given: the same indices
            bounds.append(b)
            shapes.append(tuple(b.shape[k:]))
        else:
            bounds.append(None)
            shapes.append(None)
    cfg = cfg._replace(lower_shape=shapes[0], upper_shape=shapes[1])
    try:
        _forward_host(cfg, np.transpose(x, inv), np.transpose(d, inv), e, *bounds)
    except Exception as err:
        return str(err)
    return "clipresc: invalid input"
