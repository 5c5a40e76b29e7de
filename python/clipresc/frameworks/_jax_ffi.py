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

import functools
import importlib
import inspect
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
        jax.devices("cpu")  # starts the CPU backend first (whatever the default backend)
        ffi = _ffi()
        for name, capsule in _clipresc.jax_ffi_targets().items():
            ffi.register_ffi_target(target_name(name), capsule, platform="cpu")
        return _self_test_outside_traces()
    except Exception:  # any failure: the pure_callback path still works
        return False


def _cpu_default() -> bool:
    return bool(sys.modules["jax"].default_backend() == "cpu")


def select(ffi_fn: Any, fallback_fn: Any, cfg: Any, *ops: Any) -> Any:
    """``ffi_fn(cfg, *ops)`` (traced operands) where the computation runs on CPU and the
    handlers are registered, else ``fallback_fn(cfg, *ops)`` (``pure_callback``). With a
    default backend other than CPU the choice is made per compiled platform
    (``jax.lax.platform_dependent``): a function jitted onto CPU arrays takes the FFI call,
    one on GPU arrays the callback.

    >>> select(lambda c, a: "ffi", lambda c, a: "callback", None, 1.0) in ("ffi", "callback")
    True
    """
    if not available():
        return fallback_fn(cfg, *ops)
    if _cpu_default():
        return ffi_fn(cfg, *ops)
    jax = sys.modules["jax"]
    return jax.lax.platform_dependent(
        *ops,
        cpu=functools.partial(ffi_fn, cfg),
        default=functools.partial(fallback_fn, cfg),
    )


# NumPy dtypes, not JAX's scalar types: comparing a dtype with a type converts the type
# first, which costs a microsecond per comparison on every eager call (and a dtype equals
# None or a name, hence the isinstance test before it)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def eager_usable(x: Any, *rest: Any) -> bool:
    """Whether an eager call on these concrete operands can take the FFI call: ``x`` is
    float32 / float64 and every ``jax.Array`` among them lives on the CPU.

    >>> import jax.numpy as jnp
    >>> eager_usable(jnp.zeros(2, jnp.int32))
    False
    """
    dt = getattr(x, "dtype", None)
    if not isinstance(dt, np.dtype) or dt not in _FLOAT_DTYPES or not available():
        return False
    array = sys.modules["jax"].Array
    for a in (x, *rest):
        if isinstance(a, array) and not _on_cpu(a.sharding):
            return False
    return True


@functools.lru_cache(maxsize=256)
def _on_cpu(sharding: Any) -> bool:
    return all(d.platform == "cpu" for d in sharding.device_set)


_eager_jits: dict[Any, Any] = {}


def eager(fn: Any, cfg: Any, *ops: Any) -> Any:
    """``fn(cfg, *ops)`` (:func:`forward`, :func:`vjp`) on concrete arrays, compiled once per
    ``cfg`` and waited for, so that rejected data raises here (``jax.errors.JaxRuntimeError``).

    One jitted function per ``(fn, cfg)``, with ``cfg`` bound rather than a static argument:
    JAX's dispatch then hashes and compares no Python object per call (tens of microseconds
    at 128x3x32x32, against the forward's few hundred).
    """
    jax = sys.modules["jax"]
    key = (fn, cfg)
    jitted = _eager_jits.get(key)
    if jitted is None:
        if len(_eager_jits) >= 256:  # many configurations: drop the oldest
            _eager_jits.pop(next(iter(_eager_jits)))
        jitted = _eager_jits.setdefault(key, jax.jit(functools.partial(fn, cfg)))
    out = jitted(*ops)
    # an array's own method: jax.block_until_ready walks a pytree first
    return out.block_until_ready() if isinstance(out, jax.Array) else jax.block_until_ready(out)


def forward_out(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
    """:func:`forward`'s output alone (for eager calls: no array for ``eta``)."""
    return forward(cfg, x, d, e, lo, hi)[0]


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
    x = np.array([[0.5, 0.9]], dtype=np.float32)
    d = np.ones((1, 2), dtype=np.float32)
    e = np.float32(0.5)

    def f(x: Any, e: Any) -> Any:
        y, eta = forward(cfg, x, d, e, None, None)
        gx, _, ge, _, _ = vjp(cfg, jnp.ones_like(y), x, d, e, None, None, eta)
        return y, eta, gx, ge

    cpu = jax.devices("cpu")[0]
    x, e = jax.device_put(x, cpu), jax.device_put(e, cpu)
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


def _eps_operand(e: Any) -> Any:
    """``eps`` as the handler's operand: the bit words of :func:`exact_eps` as they are,
    else in the work dtype."""
    return e if e.dtype == np.uint32 else _work(e)


def exact_eps(e: Any) -> Any:
    """A NumPy ``eps`` (the eager path's, a number or an array) as the bits of its float64
    values: ``uint32`` words, two per value, low word first, on the default device. JAX would
    otherwise round a float64 operand to float32 with its 64-bit types off, and an eager call
    would then differ from the NumPy path in the last bits. Scalars are cached, so a loop
    with one ``eps`` moves nothing to the device per call.

    >>> import numpy as np
    >>> w = np.asarray(exact_eps(np.asarray(0.1)))
    >>> w.dtype, w.shape, float(w.view(np.float64)[0]) == 0.1
    (dtype('uint32'), (2,), True)
    """
    if not isinstance(e, np.ndarray) or e.dtype.kind != "f":
        return e
    if e.ndim == 0:
        return _scalar_eps_bits(float(e))
    words = np.ascontiguousarray(e, dtype="<f8").view("<u4").reshape(*e.shape, 2)
    return sys.modules["jax.numpy"].asarray(words)


@functools.lru_cache(maxsize=64)
def _scalar_eps_bits(value: float) -> Any:
    return sys.modules["jax.numpy"].asarray(np.asarray([value], dtype="<f8").view("<u4"))


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


def _static_eps(e: Any) -> float | None:
    """A scalar ``eps`` known at trace time (a Python or NumPy number): passed to the handler
    as a float64 attribute, so that it keeps its precision with JAX's 64-bit types off (an
    operand would be rounded to float32)."""
    jax = sys.modules["jax"]
    if isinstance(e, jax.core.Tracer) or np.ndim(e) != 0:
        return None
    return float(np.asarray(e))


def _attrs(cfg: Any, e: Any, lo: Any, hi: Any, perturb: bool) -> dict[str, Any]:
    eps = _static_eps(e)
    return {
        "p": np.float64(cfg.p),
        "lower": np.float64(cfg.lower_s),
        "upper": np.float64(cfg.upper_s),
        "lower_array": np.int64(lo is not None),
        "upper_array": np.int64(hi is not None),
        "eps_static": np.int64(eps is not None),
        "eps": np.float64(0.0 if eps is None else eps),
        "nvec": np.int64(len(cfg.axes)),
        "perturb": np.int64(perturb),
        "raise_unreachable": np.int64(cfg.unreachable == "raise"),
        "cfg": np.int64(_key((cfg, eps))),
    }


def _operands(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> list[Any]:
    """The handler's operands: ``x``, ``delta`` (vector axes trailing), ``eps`` unless
    static, the array bounds."""
    x = _work(x)
    ops = [_trailing(cfg, x), _trailing(cfg, d.astype(x.dtype))]
    if _static_eps(e) is None:
        ops.append(_eps_operand(e))
    for b, shape in ((lo, cfg.lower_shape), (hi, cfg.upper_shape)):
        if b is not None:
            ops.append(_side(cfg, b.astype(x.dtype), shape))
    return ops


def forward(cfg: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """``(out, eta)`` of one traced call: ``out`` as :func:`clipresc.scale` /
    :func:`clipresc.perturb` give it (``x``'s dtype), ``eta`` the scales (``eta_shape``) the
    backward reuses."""
    jax = sys.modules["jax"]
    ops = _operands(cfg, x, d, e, lo, hi)
    wd = ops[0].dtype
    eta_spec = jax.ShapeDtypeStruct(_batch_shape(cfg), wd)
    perturb = cfg.kind == "perturb"
    specs = [jax.ShapeDtypeStruct(ops[0].shape, wd), eta_spec] if perturb else [eta_spec]
    call = _ffi().ffi_call(target_name("forward"), specs, vmap_method="broadcast_all")
    outs = call(*ops, **_attrs(cfg, e, lo, hi, perturb))
    eta = outs[-1].reshape(cfg.eta_shape)
    out = _untrail(cfg, outs[0]).astype(x.dtype) if perturb else eta
    return out, eta


# Whether the backward asks XLA for `x`'s cotangent in the incoming cotangent's buffer (off
# only to compare).
ALIAS = True


@functools.lru_cache(maxsize=1)
def _can_alias() -> bool:
    """Whether ``ffi_call`` takes ``input_output_aliases`` (jax >= 0.5; older versions would
    take it for an attribute)."""
    return "input_output_aliases" in inspect.signature(_ffi().ffi_call).parameters


def vjp(
    cfg: Any, g: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any, eta: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """Cotangents ``(x, delta, eps, lower, upper)`` for the cotangent ``g`` of the output,
    given the forward's ``eta``; ``None`` for a scalar side.

    XLA materialises ``g`` (for a loss ``y.sum()``, a broadcast of ones) and gives custom
    calls fresh output buffers, whose first touch (page faults) costs more than the compute
    at 64x3x224x224. So ``perturb``'s backward writes the cotangent of ``x`` over ``g``'s
    buffer (``input_output_aliases``; the core reads each element of ``g`` just before it
    overwrites it, and XLA copies ``g`` first where it is still needed). Aliasing the
    cotangent of ``delta`` to the forward's output does not pay: XLA copies that output
    whenever the loss reads it too, since nothing orders the loss before the backward."""
    jax = sys.modules["jax"]
    ops = _operands(cfg, x, d, e, lo, hi)
    wd = ops[0].dtype
    perturb = cfg.kind == "perturb"
    cot = _trailing(cfg, g.astype(wd)) if perturb else g.astype(wd).reshape(_batch_shape(cfg))
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in ops]
    eta = eta.astype(wd).reshape(_batch_shape(cfg))
    args = [*ops, eta, cot]
    kw = {}
    if perturb and ALIAS and _can_alias():
        kw["input_output_aliases"] = {len(args) - 1: 0}
    call = _ffi().ffi_call(target_name("backward"), specs, vmap_method="broadcast_all", **kw)
    rest = iter(call(*args, **_attrs(cfg, e, lo, hi, perturb)))
    gx, gd = _untrail(cfg, next(rest)), _untrail(cfg, next(rest))
    # a static eps is a constant: its cotangent (never used) is zero
    ge = next(rest) if _static_eps(e) is None else sys.modules["jax.numpy"].zeros(())
    gl = _side_grad(cfg, next(rest), cfg.lower_shape) if lo is not None else None
    gu = _side_grad(cfg, next(rest), cfg.upper_shape) if hi is not None else None

    def cast(c: Any, like: Any) -> Any:
        return None if like is None else c.astype(like.dtype).reshape(like.shape)

    return cast(gx, x), cast(gd, d), cast(ge, e), cast(gl, lo), cast(gu, hi)


def noise(ncfg: Any, x: Any, e: Any, lo: Any, hi: Any, seeds: Any) -> Any:
    """The noisy ``x`` of one traced :func:`clipresc.noise` call (work dtype), given the
    seeds operand (key words, or traced integers): see ``frameworks/_jax_noise.py``."""
    jax = sys.modules["jax"]
    cfg = ncfg.call
    ops = _operands(cfg, x, x, e, lo, hi)
    wd = ops[0].dtype
    specs = [
        jax.ShapeDtypeStruct(ops[0].shape, wd),
        jax.ShapeDtypeStruct(_batch_shape(cfg), wd),
    ]
    attrs = _attrs(cfg, e, lo, hi, True)
    attrs.update(
        cfg=np.int64(_key((ncfg, _static_eps(e)))),
        distribution=np.int64(_NOISE_ORDER.index(ncfg.distribution)),
        row_offset=np.uint64(ncfg.row_offset),
        seed_is_key=np.int64(ncfg.seed_is_key),
    )
    call = _ffi().ffi_call(target_name("noise"), specs, vmap_method="broadcast_all")
    y, _ = call(*ops, seeds, **attrs)
    return _untrail(cfg, y)


# the order of clipresc_core::Distribution::ALL, which the noise handler indexes
_NOISE_ORDER = ("gaussian", "uniform", "laplace", "rademacher")


def explain(key: int, arrays: tuple[Any, ...]) -> str:
    """The NumPy path's message for the operands of a handler call that the core rejected
    (called by the handler, with copies of its operands, only on that failure).

    >>> explain(-1, ())
    'clipresc: invalid input'
    """
    if not 0 <= key < len(_by_key) or len(arrays) < 3:
        return "clipresc: invalid input"
    cfg, eps = _by_key[key]
    if eps is not None:  # a static eps: not among the operands
        arrays = (*arrays[:2], np.asarray(eps), *arrays[2:])
    elif arrays[2].dtype.kind in "iu":  # exact_eps's bit words (the handler widens them)
        words = np.ascontiguousarray(arrays[2], dtype="<u4")
        arrays = (*arrays[:2], words.view("<f8").reshape(words.shape[:-1]), *arrays[3:])
    from .jax import _forward_host

    call = getattr(cfg, "call", cfg)  # a noise call's config holds the _Config
    x, d, e = arrays[:3]
    k = x.ndim - len(call.shape)
    perm = _perm(call)
    inv = tuple(range(k)) + tuple(k + int(a) for a in np.argsort(perm))
    if call is not cfg:
        from ._jax_noise import explain as explain_noise

        return explain_noise(cfg, arrays, inv, k)
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
    if cfg.kind == "project":
        from ._jax_project_ffi import explain as explain_project

        return explain_project(cfg, np.transpose(x, inv), np.transpose(d, inv), e, *bounds)
    try:
        _forward_host(cfg, np.transpose(x, inv), np.transpose(d, inv), e, *bounds)
    except Exception as err:
        return str(err)
    return "clipresc: invalid input"
