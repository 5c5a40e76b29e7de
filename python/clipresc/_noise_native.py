"""``clipresc.noise`` on PyTorch, JAX, TensorFlow and CuPy arrays, returned in their library.

The noise is always drawn and solved for by the NumPy path (:func:`clipresc._noise.noise_numpy`)
on a host copy or view of the input, so every library gets the same bits as NumPy for the
same seed, ``row_offset`` and compute dtype. bfloat16 input is computed in float32 (NumPy has
no bfloat16) and the result rounded to bfloat16. The result is then put back where the input
lives:

* **PyTorch:** a tensor of ``x``'s dtype and device (with ``x``'s strides, so
  ``channels_last`` stays ``channels_last``). CUDA (or other non-CPU) tensors go through the
  CPU and back: the noise is drawn on the host. The result never requires grad and has no
  graph: the noise direction is random, so there is nothing meaningful to differentiate; to
  differentiate through an exact-size perturbation use :func:`clipresc.perturb` with your
  own ``delta``.
* **JAX:** eager calls return a ``jax.Array`` with ``x``'s sharding. Under ``jax.jit`` (or
  any trace) the work runs as an XLA FFI custom call on CPU (``frameworks/_jax_noise.py``),
  else in ``jax.pure_callback`` (``vmap_method="sequential"``); either way a ``vmap`` equals
  the loop over its elements. The seed is then either static (a Python int
  or ``SeedSequence``, baked into the compiled function: every call gives the same noise,
  as a fixed ``jax.random`` key would) or a traced JAX integer scalar such as a step counter,
  which gives exactly the noise of ``seed=int(value)``. ``seed=None`` is refused under a
  trace, because a compiled function would repeat one draw forever.
* **TensorFlow:** eager tensors come back on ``x``'s device; inside ``tf.function`` the work
  runs in ``tf.numpy_function`` (``seed=None`` then draws fresh noise at every run, marked
  stateful; an int seed repeats its noise).
* **CuPy:** the array is copied to the host, and the result back to ``x``'s device.

Only the library of ``x`` is touched, through ``sys.modules``: nothing is imported here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _errors
from ._call import describe
from ._dispatch import to_numpy
from ._noise import noise_numpy, parse_row_offset, seed_sequence

__all__ = ["noise"]

_ARGS = ("x", "eps", "lower", "upper", "seed")


def _pair(bounds: Any) -> tuple[Any, Any] | None:
    """``(lower, upper)`` when ``bounds`` is a pair, else ``None`` (left to the checks)."""
    if bounds is not None and isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return bounds[0], bounds[1]
    return None


def _seed_int(seed: Any, lib: str) -> Any:
    """A concrete integer scalar array of the caller's library as a Python int; any other
    seed unchanged (validated by :func:`clipresc._noise.seed_sequence`)."""
    if seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        return seed
    shape = tuple(getattr(seed, "shape", (None,)))
    if shape != () or _dtype_kind(getattr(seed, "dtype", None)) not in ("i", "u"):
        raise _errors.bad_seed(seed, lib)
    return int(seed)


def _dtype_kind(dt: Any) -> str:
    """NumPy's kind letter of a dtype of any library ("" when unknown)."""
    dt = getattr(dt, "as_numpy_dtype", dt)  # TensorFlow
    for d in (dt, str(dt).rsplit(".", 1)[-1]):  # "torch.int64" -> "int64"
        try:
            return str(np.dtype(d).kind)
        except TypeError:
            continue
    return ""


def _host_noise(
    vals: dict[str, Any], bounds: Any, kw: dict[str, Any], out: Any = None
) -> np.ndarray[Any, Any]:
    """The NumPy path on host values ``vals`` (``x``, ``eps``, ``lower``, ``upper``, ``seed``),
    into ``out`` when given."""
    b = (vals["lower"], vals["upper"]) if _pair(bounds) is not None else bounds
    seed = vals["seed"]
    if isinstance(seed, np.ndarray):
        seed = _seed_int(seed, "NumPy")
    return noise_numpy(
        vals["x"],
        vals["eps"],
        kw["p"],
        b,
        kw["distribution"],
        seed_sequence(seed),
        kw["axis"],
        kw["row_offset"],
        kw["unreachable"],
        out=out,
    )


def _values(x: Any, eps: Any, bounds: Any, seed: Any) -> dict[str, Any]:
    lo, hi = _pair(bounds) or (None, None)
    return dict(zip(_ARGS, (x, eps, lo, hi, seed)))


def _check_static(shape: tuple[int, ...], dtype: Any, kw: dict[str, Any]) -> None:
    """The checks that need no values, at trace time (errors then name the Python line)."""
    call = describe(shape, dtype, shape, dtype, kw["p"], kw["axis"], kw["unreachable"])
    assert call.layout is not None
    parse_row_offset(kw["row_offset"], call.layout.rows)


def _callback(
    vals: dict[str, Any], dynamic: Sequence[str], bounds: Any, kw: dict[str, Any]
) -> Callable[..., np.ndarray[Any, Any]]:
    """A host function of the traced operands (``dynamic``, in order) for a callback op."""
    fixed = {k: v for k, v in vals.items() if k not in dynamic}

    def run(*args: Any) -> np.ndarray[Any, Any]:
        host = {**fixed, **{k: np.asarray(a) for k, a in zip(dynamic, args)}}
        return _host_noise(host, bounds, kw)

    return run


# --------------------------------------------------------------------------- PyTorch


def _torch(x: Any, eps: Any, bounds: Any, seed: Any, kw: dict[str, Any]) -> Any:
    torch = sys.modules["torch"]

    def host(a: Any) -> Any:
        return to_numpy(a.cpu(), "torch") if isinstance(a, torch.Tensor) else a

    t = x.detach()
    work = t.float() if t.dtype == torch.bfloat16 else t
    work = work.cpu()
    vals = {k: host(v) for k, v in _values(work, eps, bounds, _seed_int(seed, "torch")).items()}
    # x's strides (channels_last and the like): the core writes into it directly when dense
    res = torch.empty_like(work)
    _host_noise(vals, bounds, kw, out=res.numpy())
    return res.to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------- JAX


def _jax(x: Any, eps: Any, bounds: Any, seed: Any, kw: dict[str, Any]) -> Any:
    jax = sys.modules["jax"]
    jnp = sys.modules["jax.numpy"]
    out_dtype = x.dtype
    xw = x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x
    vals = _values(xw, eps, bounds, seed)
    dynamic = [k for k, v in vals.items() if isinstance(v, jax.core.Tracer)]
    if not dynamic:
        host = {k: _jax_host(v, jax, jnp) for k, v in vals.items()}
        host["seed"] = _seed_int(seed, "JAX")
        y = jax.device_put(_host_noise(host, bounds, kw), xw.sharding)
        return y if y.dtype == out_dtype else y.astype(out_dtype)
    _check_static(tuple(xw.shape), np.dtype(xw.dtype), kw)
    if seed is None:
        raise _errors.jit_needs_seed()
    if "seed" in dynamic:
        if tuple(seed.shape) != () or not jnp.issubdtype(seed.dtype, jnp.integer):
            raise _errors.traced_seed(seed)
    else:
        vals["seed"] = seed_sequence(_seed_int(seed, "JAX"))
    for k in ("x", "lower", "upper"):
        v = vals[k]
        if k in dynamic and v.dtype == jnp.bfloat16:
            vals[k] = v.astype(jnp.float32)
        elif k not in dynamic:
            vals[k] = _jax_host(v, jax, jnp)
    if "eps" not in dynamic:
        vals["eps"] = _jax_host(vals["eps"], jax, jnp)
    spec = jax.ShapeDtypeStruct(tuple(xw.shape), xw.dtype)

    def callback() -> Any:
        # no gradient flows (as for torch): zero cotangents rather than a callback without a JVP
        return jax.pure_callback(
            _callback(vals, dynamic, bounds, kw),
            spec,
            *[jax.lax.stop_gradient(vals[k]) for k in dynamic],
            vmap_method="sequential",
        )

    from .frameworks import _jax_noise  # the XLA FFI call on CPU, else callback()

    pair = (vals["lower"], vals["upper"]) if _pair(bounds) is not None else bounds
    y = _jax_noise.noise(vals["x"], vals["eps"], pair, vals["seed"], kw, callback)
    return y if y.dtype == out_dtype else y.astype(out_dtype)


def _jax_host(a: Any, jax: Any, jnp: Any) -> Any:
    if not isinstance(a, jax.Array):
        return a
    if a.dtype == jnp.bfloat16:
        a = a.astype(jnp.float32)
    return np.asarray(a)


# --------------------------------------------------------------------------- TensorFlow


def _tensorflow(x: Any, eps: Any, bounds: Any, seed: Any, kw: dict[str, Any]) -> Any:
    tf = sys.modules["tensorflow"]
    out_dtype = x.dtype
    xw = tf.cast(x, tf.float32) if x.dtype == tf.bfloat16 else x
    vals = _values(xw, eps, bounds, seed)
    tensors = (tf.Tensor, tf.Variable)

    def cast(v: Any) -> Any:
        return tf.cast(v, tf.float32) if v.dtype == tf.bfloat16 else v

    if tf.executing_eagerly():
        host = {k: cast(v).numpy() if isinstance(v, tensors) else v for k, v in vals.items()}
        host["seed"] = _seed_int(seed, "TensorFlow")
        y = _host_noise(host, bounds, kw)
        with tf.device(x.device):
            res = tf.identity(y)
        return res if res.dtype == out_dtype else tf.cast(res, out_dtype)
    _check_static(tuple(xw.shape), np.dtype(xw.dtype.as_numpy_dtype), kw)
    dynamic = [k for k, v in vals.items() if isinstance(v, tensors)]
    if "seed" in dynamic:
        raise _errors.tf_function_seed()
    vals["seed"] = seed_sequence(seed) if seed is not None else None
    for k in dynamic:
        vals[k] = cast(vals[k])
    y = tf.numpy_function(
        _callback(vals, dynamic, bounds, kw),
        [vals[k] for k in dynamic],
        Tout=xw.dtype,
        stateful=seed is None,
    )
    y.set_shape(xw.shape)
    return y if y.dtype == out_dtype else tf.cast(y, out_dtype)


# --------------------------------------------------------------------------- CuPy


def _cupy(x: Any, eps: Any, bounds: Any, seed: Any, kw: dict[str, Any]) -> Any:
    cupy = sys.modules["cupy"]

    def host(a: Any) -> Any:
        return a.get() if isinstance(a, cupy.ndarray) else a

    vals = {k: host(v) for k, v in _values(x, eps, bounds, _seed_int(seed, "CuPy")).items()}
    y = _host_noise(vals, bounds, kw)
    with x.device:
        return cupy.asarray(y)


_BY_LIBRARY = {"torch": _torch, "jax": _jax, "tensorflow": _tensorflow, "cupy": _cupy}


def noise(lib: str, x: Any, eps: Any, *, bounds: Any, seed: Any, **kw: Any) -> Any:
    """:func:`clipresc.noise` of ``x`` from library ``lib``, returned in that library;
    ``kw``: the other keyword arguments of :func:`clipresc.noise` (``p``,
    ``distribution``, ``axis``, ``row_offset``, ``unreachable``), all of them.

    >>> import numpy as np, clipresc
    >>> noise("numpy", np.zeros(2), 1.0, p=2.0, bounds=None, distribution="gaussian",
    ...       seed=0, axis=None, row_offset=0, unreachable="saturate")
    Traceback (most recent call last):
    ...
    ValueError: no native noise for numpy arrays
    """
    fn = _BY_LIBRARY.get(lib)
    if fn is None:
        raise _errors.no_native_noise(lib)
    return fn(x, eps, bounds, seed, kw)
