"""Which backend computes a call, decided by the library the caller's arrays come from.

==========================  ==============================  ===============================
arrays                      ``scale`` / ``perturb``         ``scale_vjp`` / ``perturb_vjp``
==========================  ==============================  ===============================
NumPy, lists, numbers       Rust core                       Rust core
PyTorch, JAX, TensorFlow    :mod:`clipresc.frameworks`      CPU: Rust core through
                            (autograd, jit)                 zero-copy DLPack/NumPy views;
                                                            CUDA: CuPy kernels; traced or
                                                            elsewhere: array API
array-api-strict (CPU),     Rust core through               same
other DLPack CPU arrays     ``np.from_dlpack``
CuPy                        CuPy kernels if a GPU is there, same
                            else the array API
Dask (NumPy may join)       ``backends.dask_backend``       array API
anything else               ``backends.generic``            same
two libraries in one call   ``TypeError``                   ``TypeError``
==========================  ==============================  ===============================

Results come back in the caller's library, device and dtype. No library is imported here
that the caller has not imported already (families are told apart with array-api-compat's
``is_*_array`` helpers and ``sys.modules``); CuPy is imported only for CuPy arrays or CUDA
tensors.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import sys
from collections.abc import Sequence
from typing import Any, Callable

import array_api_compat
import numpy as np

from . import frameworks
from ._args import float_lists
from ._overflow import warn_eta_overflow
from ._prepare import check_out, prepare
from ._prepare_xp import (
    XProblem,
    arg_shapes,
    cotangent,
    fit_cotangents,
    from_rows,
    prepare_xp,
    raise_unreachable,
    to_bool,
)
from .backends import generic, numpy_backend

__all__ = ["family_of", "perturb", "perturb_vjp", "route", "scale", "scale_vjp"]

_FRAMEWORKS = ("torch", "jax", "tensorflow")


# --------------------------------------------------------------------------- families


def family_of(a: Any) -> str | None:
    """The library an argument comes from, or ``None`` for values that fit any library
    (``None``, Python and NumPy numbers, 0-d NumPy arrays, lists and tuples).

    >>> family_of(np.zeros(3)), family_of(np.float32(1)), family_of([1.0]), family_of(None)
    ('numpy', None, None, None)
    """
    if type(a) is np.ndarray:  # the common cases first: the ABC checks below cost more
        return None if a.ndim == 0 else "numpy"
    if a is None or type(a) is float:
        return None
    if isinstance(a, (numbers.Number, np.generic, list, tuple)):
        return None
    if isinstance(a, np.ndarray):
        return None if a.ndim == 0 else "numpy"
    if array_api_compat.is_torch_array(a):
        return "torch"
    if array_api_compat.is_jax_array(a):
        return "jax"
    if array_api_compat.is_cupy_array(a):
        return "cupy"
    if array_api_compat.is_dask_array(a):
        return "dask"
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(a, (tf.Tensor, tf.Variable)):
        return "tensorflow"
    return type(a).__module__.split(".")[0]


def _named_arrays(x: Any, delta: Any, eps: Any, bounds: Any, **more: Any) -> dict[str, Any]:
    named = {"x": x, "delta": delta, "eps": eps, **more}
    if (
        bounds is not None
        and not isinstance(bounds, (str, bytes))
        and isinstance(bounds, Sequence)
        and len(bounds) == 2
    ):
        named["lower"], named["upper"] = bounds[0], bounds[1]
    return named


def _family(named: dict[str, Any]) -> tuple[str, Any]:
    """The one family of the array arguments and an array of it (``"numpy"`` if none)."""
    fams = {name: family_of(v) for name, v in named.items()}
    for name, f in fams.items():
        if f == "torch" or f == "tensorflow":  # sparse, nested, ragged: a clear TypeError
            frameworks.check_layout(name, named[name], f)
    present = {f for f in fams.values() if f is not None}
    if present == {"dask", "numpy"}:  # Dask arrays are made of NumPy chunks
        present = {"dask"}
    if len(present) > 1:
        which = ", ".join(f"{name}: {f}" for name, f in fams.items() if f is not None)
        raise TypeError(
            f"clipresc got arrays of different libraries in one call ({which}); "
            "pass every array argument from one library"
        )
    if not present:
        return "numpy", None
    fam = present.pop()
    first = next(v for name, v in named.items() if fams[name] == fam)
    return fam, first


@functools.cache
def _gpu_ready() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        cupy = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def _is_tracer(a: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(a, jax.core.Tracer)


def _on_cpu(a: Any, fam: str) -> bool:
    """Whether ``a`` is a concrete array whose memory NumPy can view."""
    if fam == "jax":
        return not _is_tracer(a) and all(d.platform == "cpu" for d in a.devices())
    if fam == "torch":
        return bool(a.device.type == "cpu")
    if fam == "tensorflow":
        return bool(hasattr(a, "numpy") and "GPU" not in str(getattr(a, "device", "")))
    if fam == "array_api_strict":
        return "CPU" in str(a.device)
    try:
        kind, _ = a.__dlpack_device__()
    except Exception:
        return False
    return int(kind) == 1  # kDLCPU


def _is_cuda(a: Any, fam: str) -> bool:
    return fam == "cupy" or (fam == "torch" and a.device.type == "cuda")


def route(named: dict[str, Any], vjp: bool) -> tuple[str, str]:
    """``(family, path)`` for a call: path is ``"numpy"``, ``"framework"``, ``"cpu"``
    (NumPy views into the Rust core), ``"cupy"``, ``"dask"`` or ``"generic"``.

    >>> route({"x": np.zeros(2), "delta": [1.0, 2.0]}, vjp=False)
    ('numpy', 'numpy')
    """
    fam, first = _family(named)
    if fam == "numpy":
        return fam, "numpy"
    if fam == "dask":
        return fam, "generic" if vjp else "dask"
    arrays = [v for v in named.values() if family_of(v) is not None]
    if not vjp and fam in _FRAMEWORKS and frameworks.module_for(first) is not None:
        return fam, "framework"
    if all(_is_cuda(a, fam) for a in arrays) and _gpu_ready():
        return fam, "cupy"
    if all(_on_cpu(a, fam) for a in arrays):
        return fam, "cpu"
    return fam, "generic"


# --------------------------------------------------------------------------- conversions


def _to_numpy(a: Any, fam: str) -> Any:
    """A NumPy view of a CPU array (no copy where the memory allows); values pass through."""
    if family_of(a) is None:
        return a
    if fam == "tensorflow":
        return a.numpy()
    if fam == "torch":
        t = a.detach().resolve_conj().resolve_neg()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.from_dlpack(a)


def _from_numpy(r: Any, fam: str, like: Any, dtype: Any = None) -> Any:
    """The NumPy result ``r`` as an array of ``like``'s library and device (in ``dtype``)."""
    if r is None:
        return None
    if fam == "torch":
        torch = sys.modules["torch"]
        t = torch.from_numpy(np.require(r, requirements=["W"]))
        return t if dtype is None or t.dtype == dtype else t.to(dtype)
    if fam == "tensorflow":
        tf = sys.modules["tensorflow"]
        t = tf.convert_to_tensor(r)
        return t if dtype is None or t.dtype == dtype else tf.cast(t, dtype)
    xp = array_api_compat.array_namespace(like)
    try:
        out = xp.asarray(r, device=array_api_compat.device(like))
    except TypeError:
        out = xp.asarray(r)
    return out if dtype is None or out.dtype == dtype else xp.astype(out, dtype)


def _is_float_array(a: Any, fam: str) -> bool:
    if fam == "torch":
        return bool(a.dtype.is_floating_point)
    if fam == "tensorflow":
        return bool(a.dtype.is_floating)
    xp = array_api_compat.array_namespace(a)
    return bool(xp.isdtype(a.dtype, "real floating"))


def _convert_args(
    fam: str, x: Any, delta: Any, eps: Any, bounds: Any, conv: Callable[[Any, str], Any]
) -> tuple[Any, Any, Any, Any]:
    if (
        bounds is not None
        and not isinstance(bounds, (str, bytes))
        and isinstance(bounds, Sequence)
        and len(bounds) == 2
    ):
        bounds = (conv(bounds[0], fam), conv(bounds[1], fam))
    return conv(x, fam), conv(delta, fam), conv(eps, fam), bounds


def _to_cupy(a: Any, fam: str) -> Any:
    if family_of(a) is None or fam == "cupy":
        return a
    return importlib.import_module("cupy").from_dlpack(a)


def _from_cupy(r: Any, fam: str, like: Any) -> Any:
    if r is None or fam == "cupy":
        return r
    return sys.modules["torch"].from_dlpack(r)


# --------------------------------------------------------------------------- forward


def _forward(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
    out: Any = None,
) -> Any:
    traced = frameworks.compiling_module(x)
    if traced is not None and out is None:  # torch.compile: no untraceable dispatch
        fn = traced.scale if kind == "scale" else traced.perturb
        return fn(x, delta, eps, p=p, bounds=bounds, axis=axis, unreachable=unreachable)
    x, delta = float_lists(x), float_lists(delta)
    named = _named_arrays(x, delta, eps, bounds)
    fam, path = route(named, vjp=False)
    if out is not None and path != "numpy":
        raise TypeError(f"out is supported for NumPy inputs only; got {fam or path} arrays")
    if path == "numpy":
        prob = prepare(x, delta, eps, p, bounds, axis, unreachable, core_checks_bounds=True)
        if kind == "scale":
            return numpy_backend.scale(prob)
        if out is not None:
            read = [("x", x), ("delta", delta), ("lower", prob.lower), ("upper", prob.upper)]
            check_out(out, prob, read)
        return numpy_backend.perturb(prob, out)
    if path == "dask":
        from .backends import dask_backend

        fn = dask_backend.scale if kind == "scale" else dask_backend.perturb
        return fn(x, delta, eps, p, bounds, axis, unreachable)
    if path == "framework":
        mod = frameworks.module_for(_family(named)[1])
        assert mod is not None
        fn = mod.scale if kind == "scale" else mod.perturb
        return fn(x, delta, eps, p=p, bounds=bounds, axis=axis, unreachable=unreachable)
    if path == "cpu":
        xn, dn, en, bn = _convert_args(fam, x, delta, eps, bounds, _to_numpy)
        prob = prepare(xn, dn, en, p, bn, axis, unreachable, core_checks_bounds=True)
        out = numpy_backend.scale(prob) if kind == "scale" else numpy_backend.perturb(prob)
        return _from_numpy(out, fam, x, x.dtype)
    if path == "cupy":
        from .backends import cupy_backend

        xc, dc, ec, bc = _convert_args(fam, x, delta, eps, bounds, _to_cupy)
        xp = array_api_compat.array_namespace(xc)
        return _from_cupy(
            _forward_xp(kind, xp, cupy_backend, xc, dc, ec, p, bc, axis, unreachable), fam, x
        )
    xp = array_api_compat.array_namespace(*[v for v in named.values() if family_of(v)])
    return _forward_xp(kind, xp, generic, x, delta, eps, p, bounds, axis, unreachable)


def _forward_xp(
    kind: str,
    xp: Any,
    backend: Any,
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> Any:
    prob = prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)
    if kind == "scale":
        eta, flags = backend.scale_rows(
            prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper
        )
        raise_unreachable(xp, prob, flags)
        cast = xp.astype(eta, prob.dtype)
        overflow = _count_concrete(xp, xp.isinf(cast))
        if overflow:
            warn_eta_overflow(overflow, prob.layout.rows, str(prob.dtype).rsplit(".", 1)[-1])
        return xp.reshape(cast, prob.layout.eta_shape)
    y, _, flags = backend.perturb_rows(prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)
    raise_unreachable(xp, prob, flags)
    return xp.astype(from_rows(xp, y, prob.layout), prob.dtype)


def _count_concrete(xp: Any, mask: Any) -> int:
    """How many entries of ``mask`` are set; 0 when it has no values yet (tracers)."""
    if not to_bool(xp.any(mask)):
        return 0
    return int(xp.sum(xp.astype(mask, xp.int64)))


def scale(x: Any, delta: Any, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any) -> Any:
    """:func:`clipresc.scale` for arrays of any supported library."""
    return _forward("scale", x, delta, eps, p, bounds, axis, unreachable)


def perturb(
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
    out: Any = None,
) -> Any:
    """:func:`clipresc.perturb` for arrays of any supported library."""
    return _forward("perturb", x, delta, eps, p, bounds, axis, unreachable, out)


# --------------------------------------------------------------------------- gradients


def _vjp_numpy(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    """The VJP of NumPy inputs through the Rust core (results as NumPy arrays)."""
    npx = array_api_compat.array_namespace(np.empty(0))
    xa, da = np.asarray(x), np.asarray(delta)
    prob = prepare(xa, da, eps, p, bounds, axis, unreachable)
    lay = prob.layout
    shapes = arg_shapes(eps, bounds, lay)
    if kind == "scale":
        c = cotangent(npx, cot, lay.eta_shape, "etabar", prob.x)
        cot_rows = np.reshape(c, (lay.rows,))
    else:
        c = cotangent(npx, cot, lay.shape, "ybar", prob.x)
        cot_rows = lay.to_rows(c, prob.x.dtype)
    g = numpy_backend.vjp_rows(
        prob, kind, cot_rows, shapes.lower is not None, shapes.upper is not None
    )
    return fit_cotangents(npx, g, lay, shapes, prob.dtype, da.dtype)


def _vjp_xp(
    kind: str,
    xp: Any,
    backend: Any,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    """The VJP on the caller's arrays: the array-API implementation or the CuPy kernels."""
    prob: XProblem = prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)
    lay = prob.layout
    args = (prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)
    if kind == "scale":
        c = xp.reshape(cotangent(xp, cot, lay.eta_shape, "etabar", prob.x), (lay.rows,))
    else:
        from ._prepare_xp import to_rows

        c = to_rows(xp, cotangent(xp, cot, lay.shape, "ybar", prob.x), lay)
    if backend is generic:
        eta, flags = generic.scale_rows(*args)
        raise_unreachable(xp, prob, flags)
        fn = generic.scale_vjp_rows if kind == "scale" else generic.perturb_vjp_rows
        g = fn(*args, eta, c)
    else:
        _, flags = backend.scale_rows(*args)
        raise_unreachable(xp, prob, flags)
        fn = backend.scale_vjp_rows if kind == "scale" else backend.perturb_vjp_rows
        xg, dg, eg, lg, ug = fn(*args, c)
        g = {"x": xg, "delta": dg, "eps": eg, "lower": lg, "upper": ug}
    return fit_cotangents(xp, g, lay, prob.shapes, prob.dtype, prob.delta_dtype)


def _vjp(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    cot_name = "etabar" if kind == "scale" else "ybar"
    x, delta = float_lists(x), float_lists(delta)
    named = _named_arrays(x, delta, eps, bounds, **{cot_name: cot})
    fam, path = route(named, vjp=True)
    if path == "numpy":
        return _vjp_numpy(kind, x, delta, eps, cot, p, bounds, axis, unreachable)
    if path == "cpu":
        xn, dn, en, bn = _convert_args(fam, x, delta, eps, bounds, _to_numpy)
        out = _vjp_numpy(kind, xn, dn, en, _to_numpy(cot, fam), p, bn, axis, unreachable)
        likes: dict[str, Any] = {"x": x, "delta": delta, "eps": eps}
        if bn is not None:
            likes["lower"], likes["upper"] = bounds[0], bounds[1]
        res: dict[str, Any] = {}
        for k, v in out.items():
            like: Any = likes.get(k)
            dtype = like.dtype if family_of(like) and _is_float_array(like, fam) else None
            res[k] = _from_numpy(v, fam, x, dtype)
        return res
    if path == "cupy":
        from .backends import cupy_backend

        xc, dc, ec, bc = _convert_args(fam, x, delta, eps, bounds, _to_cupy)
        xp = array_api_compat.array_namespace(xc)
        out = _vjp_xp(
            kind, xp, cupy_backend, xc, dc, ec, _to_cupy(cot, fam), p, bc, axis, unreachable
        )
        return {k: _from_cupy(v, fam, x) for k, v in out.items()}
    xp = array_api_compat.array_namespace(*[v for v in named.values() if family_of(v)])
    return _vjp_xp(kind, xp, generic, x, delta, eps, cot, p, bounds, axis, unreachable)


def scale_vjp(
    x: Any,
    delta: Any,
    eps: Any,
    etabar: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    """:func:`clipresc.scale_vjp` for arrays of any supported library."""
    return _vjp("scale", x, delta, eps, etabar, p, bounds, axis, unreachable)


def perturb_vjp(
    x: Any,
    delta: Any,
    eps: Any,
    ybar: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    """:func:`clipresc.perturb_vjp` for arrays of any supported library."""
    return _vjp("perturb", x, delta, eps, ybar, p, bounds, axis, unreachable)
