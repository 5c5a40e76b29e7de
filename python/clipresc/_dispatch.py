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

Results come back in the caller's library, device and dtype. The library of each argument
is found by :mod:`clipresc._libraries` (which imports none); the row backends by
:func:`clipresc.backends.row_backend`. Every path starts from the same checks
(:func:`clipresc._call.describe`).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable

import numpy as np

from . import _errors
from ._args import float_lists
from ._call import number_bounds
from ._libraries import (
    FRAMEWORKS,
    arguments,
    compiling_torch_module,
    framework_module,
    gpu_ready,
    is_cuda,
    library_of,
    library_of_call,
    on_cpu,
)
from ._overflow import warn_eta_overflow
from ._prepare import check_out, prepare
from ._prepare_xp import (
    arg_shapes,
    cotangent,
    fit_cotangents,
    prepare_xp,
    raise_unreachable,
    to_bool,
)
from .backends import row_backend
from .backends.interface import RowBackend

__all__ = ["forward", "route", "vjp"]


def route(named: dict[str, Any], vjp: bool) -> tuple[str, str]:
    """``(library, path)`` for a call: path is ``"numpy"``, ``"framework"``, ``"cpu"``
    (NumPy views into the Rust core), ``"cupy"``, ``"dask"`` or ``"generic"``.

    >>> route({"x": np.zeros(2), "delta": [1.0, 2.0]}, vjp=False)
    ('numpy', 'numpy')
    """
    lib, _, arrays = library_of_call(named)
    return lib, _path(lib, arrays, vjp)


def _path(lib: str, arrays: list[Any], vjp: bool) -> str:
    if lib == "numpy":
        return "numpy"
    if lib == "dask":
        return "generic" if vjp else "dask"
    if not vjp and lib in FRAMEWORKS:
        return "framework"
    if all(is_cuda(a, lib) for a in arrays) and gpu_ready():
        return "cupy"
    if all(on_cpu(a, lib) for a in arrays):
        return "cpu"
    return "generic"


# --------------------------------------------------------------------------- conversions


def to_numpy(a: Any, lib: str) -> Any:
    """A NumPy view of a CPU array of ``lib`` (no copy where the memory allows; float32 for
    a bfloat16 tensor); values pass through.

    >>> to_numpy(np.ones(2), "numpy").tolist(), to_numpy(0.5, "torch")
    ([1.0, 1.0], 0.5)"""
    if library_of(a) is None:
        return a
    if lib == "tensorflow":
        return a.numpy()
    if lib == "torch":
        t = a.detach().resolve_conj().resolve_neg()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.from_dlpack(a)


def _from_numpy(r: Any, lib: str, like: Any, dtype: Any = None) -> Any:
    """The NumPy result ``r`` as an array of ``like``'s library and device (in ``dtype``)."""
    if r is None:
        return None
    if lib == "torch":
        torch = sys.modules["torch"]
        t = torch.from_numpy(np.require(r, requirements=["W"]))
        return t if dtype is None or t.dtype == dtype else t.to(dtype)
    if lib == "tensorflow":
        tf = sys.modules["tensorflow"]
        t = tf.convert_to_tensor(r)
        return t if dtype is None or t.dtype == dtype else tf.cast(t, dtype)
    import array_api_compat  # the array-API path only: NumPy calls never import it

    xp = array_api_compat.array_namespace(like)
    try:
        out = xp.asarray(r, device=array_api_compat.device(like))
    except TypeError:
        out = xp.asarray(r)
    return out if dtype is None or out.dtype == dtype else xp.astype(out, dtype)


def _is_float_array(a: Any, lib: str) -> bool:
    if lib == "torch":
        return bool(a.dtype.is_floating_point)
    if lib == "tensorflow":
        return bool(a.dtype.is_floating)
    import array_api_compat

    xp = array_api_compat.array_namespace(a)
    return bool(xp.isdtype(a.dtype, "real floating"))


def _to_cupy(a: Any, lib: str) -> Any:
    if library_of(a) is None or lib == "cupy":
        return a
    return importlib.import_module("cupy").from_dlpack(a)


def _from_cupy(r: Any, lib: str) -> Any:
    if r is None or lib == "cupy":
        return r
    return sys.modules["torch"].from_dlpack(r)


_CONVERT: dict[str, tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]] = {
    "cpu": (to_numpy, lambda r, lib: r),
    "cupy": (_to_cupy, _from_cupy),
    "generic": (lambda a, lib: a, lambda r, lib: r),
}
"""Per path: how an argument goes in, and how a result of the row backend comes out."""


def _convert_args(
    lib: str, x: Any, delta: Any, eps: Any, bounds: Any, conv: Callable[[Any, str], Any]
) -> tuple[Any, Any, Any, Any]:
    named = arguments(x, delta, eps, bounds)
    if "lower" in named:
        bounds = (conv(named["lower"], lib), conv(named["upper"], lib))
    return conv(x, lib), conv(delta, lib), conv(eps, lib), bounds


# --------------------------------------------------------------------------- forward


def _is_plain_numpy(x: Any, delta: Any, eps: Any, bounds: Any) -> bool:
    """NumPy ``x`` and ``delta``, a number or NumPy ``eps`` and number bounds: the common
    call, routed without asking every argument for its library."""
    return (
        type(x) is np.ndarray
        and type(delta) is np.ndarray
        and (type(eps) is float or type(eps) is np.ndarray)
        and (bounds is None or number_bounds(bounds))
    )


def forward(
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
    """:func:`clipresc.scale` (``kind="scale"``) or :func:`clipresc.perturb` for arrays of
    any supported library."""
    if _is_plain_numpy(x, delta, eps, bounds):
        lib, path = "numpy", "numpy"
    else:
        traced = compiling_torch_module(x)
        if traced is not None and out is None:  # torch.compile: no untraceable dispatch
            fn = traced.scale if kind == "scale" else traced.perturb
            return fn(x, delta, eps, p=p, bounds=bounds, axis=axis, unreachable=unreachable)
        x, delta = float_lists(x), float_lists(delta)
        lib, _, arrays = library_of_call(arguments(x, delta, eps, bounds))
        path = _path(lib, arrays, vjp=False)
    if out is not None and path != "numpy":
        raise _errors.out_numpy_only(lib or path)
    if path == "numpy":
        core = row_backend("numpy")
        prob = prepare(x, delta, eps, p, bounds, axis, unreachable, core_checks_bounds=True)
        if kind == "scale":
            return core.scale(prob)
        if out is not None:
            read = [("x", x), ("delta", delta), ("lower", prob.lower), ("upper", prob.upper)]
            check_out(out, prob, read)
        return core.perturb(prob, out)
    if path == "dask":
        from .backends import dask_backend  # plans the blocks of row_backend("dask")

        return dask_backend.forward(kind, x, delta, eps, p, bounds, axis, unreachable)
    if path == "framework":
        mod = framework_module(lib)
        assert mod is not None
        fn = mod.scale if kind == "scale" else mod.perturb
        return fn(x, delta, eps, p=p, bounds=bounds, axis=axis, unreachable=unreachable)
    if path == "cpu":
        xn, dn, en, bn = _convert_args(lib, x, delta, eps, bounds, to_numpy)
        prob = prepare(xn, dn, en, p, bn, axis, unreachable, core_checks_bounds=True)
        core = row_backend("cpu")
        res = core.scale(prob) if kind == "scale" else core.perturb(prob)
        return _from_numpy(res, lib, x, x.dtype)
    to, back = _CONVERT[path]
    xc, dc, ec, bc = _convert_args(lib, x, delta, eps, bounds, to)
    xp = _namespace(xc, dc, ec, *(bc or ()))
    if path == "cupy":
        from .backends import cupy_call  # the checks inside the kernels: one sync

        res = cupy_call.forward(kind, xp, xc, dc, ec, p, bc, axis, unreachable)
        if res is not None:
            return back(res, lib)
    res = _forward_rows(kind, xp, row_backend(path), xc, dc, ec, p, bc, axis, unreachable)
    return back(res, lib)


def _forward_rows(
    kind: str,
    xp: Any,
    backend: RowBackend,
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> Any:
    prob = prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)
    args = (prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)
    if kind == "scale":
        eta, flags = backend.scale_rows(*args)
        raise_unreachable(xp, prob, flags)
        cast = xp.astype(eta, prob.dtype)
        overflow = _count_concrete(xp, xp.isinf(cast))
        if overflow:
            warn_eta_overflow(overflow, prob.layout.rows, str(prob.dtype).rsplit(".", 1)[-1])
        return xp.reshape(cast, prob.layout.eta_shape)
    y, _, flags = backend.perturb_rows(*args)
    raise_unreachable(xp, prob, flags)
    return xp.astype(prob.layout.from_rows_xp(xp, y), prob.dtype)


def _count_concrete(xp: Any, mask: Any) -> int:
    """How many entries of ``mask`` are set; 0 when it has no values yet (tracers)."""
    if not to_bool(xp.any(mask)):
        return 0
    return int(xp.sum(xp.astype(mask, xp.int64)))


# --------------------------------------------------------------------------- gradients


def _namespace(*args: Any) -> Any:
    """The array-API namespace of the arrays among ``args`` (imported on first use: a
    NumPy ``scale`` or ``perturb`` never needs it)."""
    import array_api_compat

    return array_api_compat.array_namespace(*[a for a in args if library_of(a)])


@functools.cache
def _numpy_namespace() -> Any:
    """NumPy as an array-API namespace."""
    return _namespace(np.empty(0))


def _vjp_rows(
    kind: str,
    path: str,
    xp: Any,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any]:
    """The VJP through the backend of ``path``, in ``xp``'s arrays. The Rust core
    (``numpy``, ``cpu``) takes the prepared problem whole and solves inside its VJP; another
    row backend solves once for ``eta`` (whose flags answer ``unreachable="raise"``), then
    gives that ``eta`` to its VJP, unless it derives its own
    (:attr:`~clipresc.backends.interface.RowBackend.NEEDS_ETA` false) and no flags are
    needed."""
    if path in ("numpy", "cpu"):
        da = np.asarray(delta)
        prob: Any = prepare(np.asarray(x), da, eps, p, bounds, axis, unreachable)
        shapes, delta_dtype = arg_shapes(eps, bounds, prob.layout), da.dtype
    else:
        prob = prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)
        shapes, delta_dtype = prob.shapes, prob.delta_dtype
    lay = prob.layout
    if kind == "scale":
        c = xp.reshape(cotangent(xp, cot, lay.eta_shape, "etabar", prob.x), (lay.rows,))
    else:
        c = lay.to_rows_xp(xp, cotangent(xp, cot, lay.shape, "ybar", prob.x))
    if path in ("numpy", "cpu"):
        want = (shapes.lower is not None, shapes.upper is not None)
        g = row_backend("numpy").vjp_rows(prob, kind, c, *want)
    else:
        backend = row_backend(path)
        args = (prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)
        eta = None
        if backend.NEEDS_ETA or prob.unreachable == "raise":
            eta, flags = backend.scale_rows(*args)
            raise_unreachable(xp, prob, flags)
        fn = backend.scale_vjp_rows if kind == "scale" else backend.perturb_vjp_rows
        g = fn(*args, eta, c)
    return fit_cotangents(xp, g, lay, shapes, prob.dtype, delta_dtype)


def vjp(
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
    """:func:`clipresc.scale_vjp` (``kind="scale"``) or :func:`clipresc.perturb_vjp` for
    arrays of any supported library."""
    cot_name = "etabar" if kind == "scale" else "ybar"
    x, delta = float_lists(x), float_lists(delta)
    named = arguments(x, delta, eps, bounds, **{cot_name: cot})
    lib, path = route(named, vjp=True)
    if path == "numpy":
        return _vjp_rows(
            kind, path, _numpy_namespace(), x, delta, eps, cot, p, bounds, axis, unreachable
        )
    if path == "cpu":
        xn, dn, en, bn = _convert_args(lib, x, delta, eps, bounds, to_numpy)
        cn = to_numpy(cot, lib)
        out = _vjp_rows(kind, path, _numpy_namespace(), xn, dn, en, cn, p, bn, axis, unreachable)
        likes: dict[str, Any] = {"x": x, "delta": delta, "eps": eps}
        if bn is not None:
            likes["lower"], likes["upper"] = bounds[0], bounds[1]
        res: dict[str, Any] = {}
        for k, v in out.items():
            like: Any = likes.get(k)
            dtype = like.dtype if library_of(like) and _is_float_array(like, lib) else None
            res[k] = _from_numpy(v, lib, x, dtype)
        return res
    to, back = _CONVERT[path]
    xc, dc, ec, bc = _convert_args(lib, x, delta, eps, bounds, to)
    cc = to(cot, lib)
    xp = _namespace(xc, dc, ec, cc, *(bc or ()))
    if path == "cupy":
        from .backends import cupy_call

        with cupy_call.caller_stream(lib, x):  # torch tensors: torch's stream and allocator
            got = cupy_call.vjp(kind, xp, xc, dc, ec, cc, p, bc, axis, unreachable)
        if got is not None:
            return {k: back(v, lib) for k, v in got.items()}
    out = _vjp_rows(kind, path, xp, xc, dc, ec, cc, p, bc, axis, unreachable)
    return {k: back(v, lib) for k, v in out.items()}
