"""JAX integration: ``scale`` / ``perturb`` on ``jax.Array``, under ``jit``, ``grad``, ``vmap``.

Both functions are ``jax.custom_vjp`` functions whose backward is the closed-form VJP,
fed the scales ``eta`` that the forward found (a residual), so it does not solve again.
The work runs in the Rust core on the host:

* Concrete arrays (eager calls, and the forward and backward rules under an eager
  ``jax.grad`` / ``jax.vjp``) go to the NumPy path through zero-copy NumPy views
  (``np.asarray`` of a CPU ``jax.Array``), so invalid input raises the same ``ValueError`` /
  ``TypeError`` as for NumPy. An eager float32 / float64 ``scale`` / ``perturb`` runs the
  compiled XLA FFI call instead where it is available (``frameworks/_jax_ffi.py``): the result is
  then XLA's own buffer, not a copy; data it rejects goes to the NumPy path for the error.
* Traced arrays (under ``jit``, ``vmap`` or a traced gradient) go through the XLA FFI
  handlers on CPU (``frameworks/_jax_ffi.py``), which run the Rust core on XLA's buffers without
  copying; where they are not available, through ``jax.pure_callback`` as follows.
  ``jax.pure_callback`` runs with ``vmap_method="broadcast_all"``: under ``vmap`` the callback
  receives every operand with the mapped axes in front, and treats those axes as more
  batch axes of one call into the core (one parallel Rust pass over the whole mapped
  batch, instead of one Python-level call per mapped element as ``"sequential"`` would
  make). ``"broadcast_all"`` rather than ``"expand_dims"`` keeps every operand's leading
  axes equal, which the core's ``(rows, n)`` layout needs anyway (it copies broadcast
  operands into rows). Checks that need no data (dtypes, shapes, ``axis``, ``p``,
  ``bounds``' form) raise at trace time as usual; checks of the values (NaN, ``x``
  outside its bounds, negative ``eps``, ``unreachable="raise"``) run in the callback,
  where JAX reports them as a ``jax.errors.JaxRuntimeError`` whose message contains the
  NumPy path's message.

Gradients flow to ``x``, ``delta``, an array ``eps`` and array bounds. bfloat16 is computed
in float32. Importing this module imports JAX; :func:`clipresc.frameworks.module_for`
imports it only for JAX arrays.

>>> import jax, jax.numpy as jnp
>>> from clipresc.frameworks import jax as cj
>>> x = jnp.array([[0.5, 0.9]]); d = jnp.ones((1, 2))
>>> [round(float(v), 6) for v in cj.perturb(x, d, 0.5, p=1)[0]]
[0.9, 1.0]
>>> float(jax.grad(lambda e: cj.perturb(x, d, e, p=1)[0, 0])(0.5))
1.0
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
from . import _jax_ffi, _jax_vjp, _numpy

jax: Any = importlib.import_module("jax")
jnp: Any = importlib.import_module("jax.numpy")

__all__ = ["perturb", "scale"]

VMAP_METHOD = "broadcast_all"


class _Config(NamedTuple):
    """Static (hashable) description of one call."""

    kind: str
    p: float
    lower_s: float
    upper_s: float
    axes: tuple[int, ...]
    unreachable: str
    shape: tuple[int, ...]  # x's shape (without vmapped axes)
    eps_shape: tuple[int, ...]
    lower_shape: tuple[int, ...] | None
    upper_shape: tuple[int, ...] | None

    @property
    def eta_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.axes else s for a, s in enumerate(self.shape))

    @property
    def rows(self) -> int:
        return math.prod(s for a, s in enumerate(self.shape) if a not in self.axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.eta_shape if self.kind == "scale" else self.shape


def _host(a: Any) -> Any:
    return None if a is None else np.asarray(a)


def _to_jax(a: Any, like: Any) -> Any:
    """A host result as a ``jax.Array`` on the device of ``like`` (``jax.device_put`` copies a
    large array about twice as fast as ``jnp.asarray``)."""
    devices = like.devices() if isinstance(like, jax.Array) else ()
    return jax.device_put(a, next(iter(devices)) if len(devices) == 1 else None)


def _side(a: Any, s: float) -> Any:
    return s if a is None else a


class _Lead:
    """Operands as the callback gets them, with ``k`` leading (vmapped) axes, reshaped
    so that the NumPy path sees one problem with the leading axes as more batch axes."""

    def __init__(self, cfg: _Config, x: Any) -> None:
        self.cfg = cfg
        self.k = x.ndim - len(cfg.shape)
        self.lead = tuple(x.shape[: self.k])
        self.axes = tuple(a + self.k for a in cfg.axes)

    def _pad(self, a: Any, shape: tuple[int, ...]) -> Any:
        nd = len(self.cfg.shape)
        return a.reshape(self.lead + (1,) * (nd - len(shape)) + shape)

    def eps(self, e: Any) -> Any:
        cfg = self.cfg
        if self.k == 0:
            return e
        if len(cfg.eps_shape) == 1 and cfg.eps_shape[0] == cfg.rows:
            return e.reshape(self.lead + cfg.eta_shape)
        return self._pad(e, cfg.eps_shape)

    def bound(self, b: Any, shape: tuple[int, ...] | None) -> Any:
        if b is None or self.k == 0 or shape is None:
            return b
        return self._pad(b, shape)

    def sides(self, lo: Any, hi: Any) -> tuple[Any, Any]:
        """The bounds as :mod:`._numpy` takes them: arrays, or the static numbers."""
        cfg = self.cfg
        return (
            _side(self.bound(lo, cfg.lower_shape), cfg.lower_s),
            _side(self.bound(hi, cfg.upper_shape), cfg.upper_s),
        )


def _forward_host(cfg: _Config, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
    """The forward on NumPy arrays (possibly with leading vmapped axes)."""
    return _forward_eta_host(cfg, x, d, e, lo, hi)[0]


def _forward_eta_host(cfg: _Config, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """The forward and the scales it used (``eta``'s shape with any leading vmapped axes,
    in the work dtype): the backward's residual, sparing it a second solve."""
    x, d, e, lo, hi = (_host(a) for a in (x, d, e, lo, hi))
    ld = _Lead(cfg, x)
    out, eta, _ = _numpy.forward_problem(
        cfg.kind, x, d, ld.eps(e), cfg.p, *ld.sides(lo, hi), ld.axes, cfg.unreachable
    )
    return np.asarray(out, dtype=x.dtype), eta.reshape(ld.lead + cfg.eta_shape)


def _vjp_host(
    cfg: _Config, g: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any, eta: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """The VJP on NumPy arrays; cotangents in the shapes and dtypes of the operands."""
    g, x, d, e, lo, hi, eta = (_host(a) for a in (g, x, d, e, lo, hi, eta))
    ld = _Lead(cfg, x)
    gx, gd, ge, gl, gu = _numpy.vjp(
        cfg.kind, x, d, ld.eps(e), g, cfg.p, *ld.sides(lo, hi), ld.axes, cfg.unreachable, eta=eta
    )

    def fit(c: Any, like: Any) -> Any:
        return None if like is None else np.asarray(c, dtype=like.dtype).reshape(like.shape)

    return fit(gx, x), fit(gd, d), fit(ge, e), fit(gl, lo), fit(gu, hi)


def _callback_forward_eta(
    cfg: _Config, x: Any, d: Any, e: Any, lo: Any, hi: Any
) -> tuple[Any, Any]:
    """:func:`_forward_eta_host` on traced operands through ``jax.pure_callback``."""
    wd = np.float64 if np.dtype(x.dtype) == np.float64 else np.float32
    specs = (
        jax.ShapeDtypeStruct(cfg.out_shape, x.dtype),
        jax.ShapeDtypeStruct(cfg.eta_shape, wd),
    )
    fn = functools.partial(_forward_eta_host, cfg)
    out, eta = _jax_vjp.host_callback(fn, specs, x, d, e, lo, hi, vmap_method=VMAP_METHOD)
    return out, eta


def _callback_vjp(
    cfg: _Config, g: Any, x: Any, d: Any, e: Any, lo: Any, hi: Any, eta: Any
) -> tuple[Any, ...]:
    """:func:`_vjp_host` on traced operands through ``jax.pure_callback``."""

    def spec(a: Any) -> Any:
        return None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)

    specs = (spec(x), spec(d), spec(e), spec(lo), spec(hi))
    fn = functools.partial(_vjp_host, cfg)
    ops = (g, x, d, e, lo, hi, eta)
    return tuple(_jax_vjp.host_callback(fn, specs, *ops, vmap_method=VMAP_METHOD))


def _forward(cfg: _Config, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> Any:
    """The output of an eager call (concrete arrays, nothing to differentiate)."""
    if _jax_ffi.eager_usable(x, d, e, lo, hi):
        try:  # the compiled FFI call: no copy of the result into a jax.Array
            ops = (x, d, _jax_ffi.exact_eps(e), lo, hi)
            return _jax_ffi.eager(_jax_ffi.forward_out, cfg, *ops)
        # rejected data (XLA raises an invalid-argument status as ValueError, other ones as
        # JaxRuntimeError): the NumPy path below raises its own error, without XLA's prefix
        except (jax.errors.JaxRuntimeError, ValueError):
            pass
    out = _forward_host(cfg, _host(x), _host(d), _host(e), _host(lo), _host(hi))
    return _to_jax(out, x)


def _forward_eta(cfg: _Config, x: Any, d: Any, e: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """:func:`_forward` and the scales it used (the backward's residual)."""
    ops = (x, d, e, lo, hi)
    if _jax_vjp.is_traced(*ops):
        return _jax_ffi.select(_jax_ffi.forward, _callback_forward_eta, cfg, *ops)  # type: ignore[no-any-return]
    # the forward rule of an eager jax.grad / jax.vjp: the NumPy path on zero-copy views
    out, eta = _forward_eta_host(cfg, *(_host(a) for a in ops))
    return _to_jax(out, x), _to_jax(eta, x)


def _vjp(cfg: _Config, g: Any, ops: tuple[Any, ...], eta: Any) -> tuple[Any, ...]:
    """Cotangents of ``ops`` = ``(x, delta, eps, lower, upper)`` given the forward's ``eta``."""
    args = (g, *ops, eta)
    if _jax_vjp.is_traced(*args):
        return _jax_ffi.select(_jax_ffi.vjp, _callback_vjp, cfg, *args)  # type: ignore[no-any-return]
    host = _vjp_host(cfg, *(_host(a) for a in args))
    return tuple(None if c is None else _to_jax(c, ops[0]) for c in host)


_call = _jax_vjp.custom_vjp(_forward_eta, _vjp)


def _as_jax(a: Any) -> Any:
    """``jnp.asarray(a)``, skipped for a ``jax.Array`` (each call is an eager dispatch)."""
    return a if isinstance(a, jax.Array) else jnp.asarray(a)


def _dtype_name(dt: Any) -> str:
    name = _DTYPE_NAMES.get(dt)
    if name is None:  # str(np.dtype) costs microseconds, and every call asks
        name = str(np.dtype(dt)) if np.dtype(dt).kind != "V" else str(dt)
        _DTYPE_NAMES[dt] = name
    return name


_DTYPE_NAMES: dict[Any, str] = {}


class Parsed(NamedTuple):
    """One call's static description and its operands in the work dtype."""

    cfg: _Config
    x: Any
    delta: Any
    eps: Any
    lower: Any
    upper: Any
    out_dtype: Any


def parse(
    kind: str, x: Any, delta: Any, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any
) -> Parsed:
    """Check the arguments that need no data (raising as the NumPy path does) and describe
    the call; ``kind`` is ``"scale"``, ``"perturb"`` or ``"noise"`` (``delta`` is ``x``).

    >>> import jax.numpy as jnp
    >>> parse("perturb", jnp.zeros((2, 3)), jnp.ones((2, 3)), 1.0, 2, None, None, "raise").cfg.rows
    2
    """
    if not hasattr(x, "dtype") or not hasattr(delta, "dtype"):
        x, delta = jnp.asarray(x), jnp.asarray(delta)
    pf, mode, axes = call_args.check_meta(
        _dtype_name(x.dtype),
        _dtype_name(delta.dtype),
        tuple(x.shape),
        tuple(delta.shape),
        p,
        unreachable,
        axis,
    )
    out_dtype = x.dtype
    wd = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    x = jnp.asarray(x, dtype=wd) if x.dtype == jnp.bfloat16 else _as_jax(x)
    delta = (
        delta
        if isinstance(delta, jax.Array) and delta.dtype == x.dtype
        else (jnp.asarray(delta, dtype=x.dtype))
    )
    if not hasattr(eps, "dtype") or isinstance(eps, np.generic):  # NumPy scalars stay NumPy
        eps = np.asarray(eps)
    call_args.check_eps_dtype(_dtype_name(eps.dtype))
    if not jnp.issubdtype(eps.dtype, jnp.floating):
        eps = jnp.asarray(eps, dtype=jnp.result_type(float))
    eps = eps if isinstance(eps, np.ndarray) else _as_jax(eps)  # NumPy: converted where used
    eta_shape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    rows = math.prod(s for a, s in enumerate(x.shape) if a not in axes)
    if not call_args.eps_fits(tuple(eps.shape), rows, eta_shape):
        raise _errors.eps_shape(rows, tuple(eps.shape))
    arrays: list[Any] = []
    scalars: list[float] = []
    shapes: list[Any] = []
    for value, side in zip(call_args.split_bounds(bounds), ("lower", "upper")):
        s = call_args.scalar_side(value, side)
        if s is not None:
            arrays.append(None)
            scalars.append(s)
            shapes.append(None)
            continue
        if not hasattr(value, "dtype"):
            value = np.asarray(value)
        call_args.check_side_array(side, _dtype_name(value.dtype), tuple(value.shape), x.shape)
        b = jnp.asarray(value, dtype=wd)
        b = b.reshape(1) if b.ndim == 0 else b
        arrays.append(b)
        scalars.append(0.0)
        shapes.append(tuple(b.shape))
    cfg = _Config(
        kind,
        pf,
        scalars[0],
        scalars[1],
        axes,
        mode,
        tuple(x.shape),
        tuple(eps.shape),
        shapes[0],
        shapes[1],
    )
    return Parsed(cfg, x, delta, eps, arrays[0], arrays[1], out_dtype)


#: The parsed description of recent eager calls with plain arguments (see :func:`_plain_key`).
_PLAIN_CALLS: dict[Any, _Config] = {}
_NUMBER = (float, int)


def _plain_key(
    kind: str, x: Any, delta: Any, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any
) -> Any:
    """A key for :data:`_PLAIN_CALLS`, or ``None`` unless the call is eager and plain:
    concrete ``jax.Array`` operands of one float32 / float64 dtype, and numbers for ``eps``,
    ``p`` and the bounds. Such a call's description depends only on the key, so it is parsed
    once: an eager call costs one dispatch, not a parse (at 128x3x32x32 the parse, run with
    caches cold from the previous call's data, costs about a tenth of the call)."""
    if type(eps) not in _NUMBER or type(p) not in _NUMBER or not _concrete(x, delta):
        return None
    if bounds is not None and not (
        type(bounds) is tuple
        and len(bounds) == 2
        and type(bounds[0]) in _NUMBER
        and type(bounds[1]) in _NUMBER
    ):
        return None
    dt = x.dtype
    if dt != delta.dtype or dt not in (jnp.float32, jnp.float64):
        return None
    try:
        key = (kind, dt, x.shape, delta.shape, p, bounds, axis, unreachable)
        hash(key)
    except TypeError:  # an unhashable axis: parse it every time
        return None
    return key


#: The classes of the concrete (not traced) ``jax.Array`` operands seen so far.
_CONCRETE_TYPES: set[type] = set()


def _concrete(*arrays: Any) -> bool:
    """Whether every one of ``arrays`` is a concrete ``jax.Array`` (not a tracer)."""
    for a in arrays:
        t = type(a)
        if t not in _CONCRETE_TYPES:
            if not isinstance(a, jax.Array) or isinstance(a, jax.core.Tracer):
                return False
            _CONCRETE_TYPES.add(t)
    return True


def _run(
    kind: str, x: Any, delta: Any, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any
) -> Any:
    key = _plain_key(kind, x, delta, eps, p, bounds, axis, unreachable)
    cfg = None if key is None else _PLAIN_CALLS.get(key)
    if cfg is not None:  # parsed before: the same checks passed, the same description
        return _forward(cfg, x, delta, np.asarray(eps, dtype=np.float64), None, None)
    cfg, *ops, out_dtype = parse(kind, x, delta, eps, p, bounds, axis, unreachable)
    if key is not None:
        if len(_PLAIN_CALLS) >= 256:  # many configurations: drop the oldest
            _PLAIN_CALLS.pop(next(iter(_PLAIN_CALLS)))
        _PLAIN_CALLS[key] = cfg
    if _jax_vjp.is_traced(*ops):
        out = _call(cfg, *ops)
    else:  # concrete arrays, nothing to differentiate: skip the custom_vjp machinery
        out = _forward(cfg, *ops)
    return out if out.dtype == out_dtype else out.astype(out_dtype)


def scale(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = (0.0, 1.0),
    axis: Axis = None,
    unreachable: str = "saturate",
) -> Any:
    """:func:`clipresc.scale` for JAX arrays: usable under ``jit``, ``grad`` and ``vmap``.

    Arguments as :func:`clipresc.scale`; ``eps`` and the bounds may be JAX arrays (which
    then get gradients) or numbers. Returns ``eta`` as a ``jax.Array`` of ``x``'s dtype.

    >>> import jax, jax.numpy as jnp
    >>> from clipresc.frameworks import jax as cj
    >>> x = jnp.array([[0.5, 0.9]]); d = jnp.ones((1, 2))
    >>> eta = jax.jit(lambda x: cj.scale(x, d, 0.5, p=1))(x)
    >>> eta.shape, eta.dtype, round(float(eta[0, 0]), 6)
    ((1, 1), dtype('float32'), 0.4)
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
    """:func:`clipresc.perturb` for JAX arrays: usable under ``jit``, ``grad`` and ``vmap``.

    Arguments as :func:`clipresc.perturb`; returns ``clip(x + eta * delta, lower, upper)``
    as a ``jax.Array`` of ``x``'s shape and dtype.

    >>> import jax, jax.numpy as jnp
    >>> from clipresc.frameworks import jax as cj
    >>> kx, kd = jax.random.split(jax.random.key(0))
    >>> x = jax.random.uniform(kx, (8, 3, 4, 4)); d = jax.random.normal(kd, x.shape)
    >>> y = jax.jit(cj.perturb)(x, d, 1.0)
    >>> bool(jnp.allclose(jnp.linalg.norm((y - x).reshape(8, -1), axis=1), 1.0, rtol=1e-5))
    True
    >>> g = jax.grad(lambda x: cj.perturb(x, d, 1.0).sum())(x)
    >>> g.shape
    (8, 3, 4, 4)
    """
    return _run("perturb", x, delta, eps, p, bounds, axis, unreachable)
