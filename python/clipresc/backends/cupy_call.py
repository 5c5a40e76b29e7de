"""The public calls on CuPy arrays (``clipresc.scale`` / ``perturb`` / their VJPs) through the
CUDA kernels, with the value checks inside the kernels.

A call checks on the host what needs no device data (shapes, dtypes, ``p``, ``axis``, and
the values of ``eps`` and bounds given as numbers or lists), lays the arrays out as
``(rows, n)`` views, launches the kernels with a zeroed error word
(:mod:`~clipresc.backends.gpu_checks`) and reads that word back once: **one host
synchronisation per call**. Only when the word reports a problem do the exact checks of
:func:`clipresc._prepare_xp.prepare_xp` run on the caller's arguments, so the error is the
one every other path raises (same message, count and first index). ``scale`` reads its
overflow count (``eta`` beyond the caller's dtype) in the same transfer.

In no-check mode (:func:`~clipresc.backends.gpu_checks.unchecked` or
``CLIPRESC_GPU_CHECKS=0``) nothing is read back: no host synchronisation, so the call can be
captured in a CUDA graph when ``eps`` and the bounds are numbers or device arrays and
``unreachable="saturate"``; invalid values then give unspecified results and ``scale``
does not warn about overflow.

No full-size temporaries besides the outputs: ``x`` and ``delta`` are copied only when their
rows are not contiguous or ``delta``'s dtype differs from the work dtype (and ``x`` when it
is float16), and results are cast only when the caller's dtype is not the work dtype.
Everything runs on CuPy's current stream with CuPy's allocator, or for torch CUDA tensors
on torch's current stream with torch's allocator (:func:`caller_stream`).

This module imports CuPy only inside :mod:`clipresc.backends.cupy_backend`'s functions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import _errors
from .._call import Call
from .._layout import Layout
from .._overflow import warn_eta_overflow
from .._prepare_xp import (
    arg_shapes,
    bound_pair,
    check_bound_nan,
    check_bound_shape,
    check_bound_type,
    check_eps_shape,
    check_eps_type,
    check_eps_values,
    cotangent,
    describe_arrays,
    dtype_name,
    fit_cotangents,
    is_number,
    prepare_xp,
)
from . import cupy_backend, gpu_checks

__all__ = ["forward", "vjp"]

Array = Any


@dataclass(frozen=True)
class _Rows:
    """The kernels' operands: ``(rows, n)`` data, ``eps`` and the two bounds."""

    call: Call
    x: Array
    delta: Array
    eps: float | Array
    lower: float | Array
    upper: float | Array


def _np_xp() -> Any:
    import array_api_compat.numpy as npx

    return npx


def _host_eps(eps: Any, layout: Layout) -> float | np.ndarray[Any, Any]:
    """A number, list or NumPy ``eps`` checked on the host (no device work): a number, or
    ``(rows,)`` float64 values the backend copies to the device."""
    e = np.asarray(eps, dtype=np.float64)
    check_eps_values(_np_xp(), e)
    check_eps_shape(tuple(e.shape), layout)
    if e.ndim == 0:
        return float(e)
    return np.ascontiguousarray(np.broadcast_to(e, layout.eta_shape).reshape(layout.rows))


def _eps_rows(xp: Any, eps: Any, layout: Layout) -> float | Array:
    """``eps`` for the kernels: host values checked here, a device array checked by them
    (its shape here); one value or ``(rows,)``, float64 as on the NumPy path."""
    check_eps_type(xp, eps)
    if is_number(eps) or isinstance(eps, (list, tuple)) or type(eps) is np.ndarray:
        return _host_eps(eps, layout)
    shape = tuple(int(s) for s in eps.shape)
    check_eps_shape(shape, layout)
    if len(shape) == 0 or shape == (layout.rows,):
        return eps
    return xp.reshape(xp.broadcast_to(eps, layout.eta_shape), (layout.rows,))  # O(rows)


def _bound_rows(
    xp: Any, value: Any, side: str, default: float, layout: Layout, compact: bool
) -> tuple[float | Array, Any]:
    """One side for the kernels and the value the host compares (for crossed numbers).

    An array becomes a shared ``(n,)`` row, or (``compact``, vectors on the trailing axes)
    a ``(rows or 1, n or 1)`` view the kernels broadcast themselves, else ``(rows, n)``."""
    if value is None:
        return default, default
    if isinstance(value, (bool, np.bool_)):
        raise _errors.bound_not_real(side, "bool")
    if is_number(value):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) or type(value) is np.ndarray:
        host = np.asarray(value)
        check_bound_type(_np_xp(), host, side)
        check_bound_nan(_np_xp(), host, side)
        a: Any = xp.asarray(host)  # (a host-to-device copy)
    else:
        a = value
        check_bound_type(xp, a, side)
    check_bound_shape(a, side, layout)
    shape = tuple(int(s) for s in a.shape)
    nd = len(layout.shape)
    padded_shape = (1,) * (nd - len(shape)) + shape
    padded = a.reshape(padded_shape)
    batch = [padded_shape[ax] for ax in layout.batch_axes]
    vec = [padded_shape[ax] for ax in layout.vec_axes]
    if all(s == 1 for s in batch):
        shared = layout.shared
        row = shared.to_rows_xp(xp, xp.broadcast_to(padded, shared.shape))
        return xp.reshape(row, (layout.n,)), a
    trailing = layout.perm == tuple(range(nd))
    if (
        compact
        and trailing
        and all(s == 1 for s in vec)
        and list(batch) == list(layout.batch_shape)
    ):
        return a.reshape((layout.rows, 1)), a  # one value per vector: no (rows, n) copy
    return layout.to_rows_xp(xp, xp.broadcast_to(padded, layout.shape)), a


def _rows(
    xp: Any,
    x: Array,
    delta: Array,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: Any,
    unreachable: Any,
    compact: bool,
) -> _Rows:
    """The checks that need no device values, and the kernels' operands."""
    call, lay = describe_arrays(x, delta, p, axis, unreachable)
    xr = lay.to_rows_xp(xp, x)
    if xr.dtype != call.work_dtype:  # float16: the kernels compute in float32
        xr = xp.astype(xr, call.work_dtype)
    dr = lay.to_rows_xp(xp, delta)  # (cast by the backend only when its dtype differs)
    eps_k = _eps_rows(xp, eps, lay)
    if bounds is None:
        return _Rows(call, xr, dr, eps_k, -math.inf, math.inf)
    lo_in, hi_in = bound_pair(bounds)
    lower, lo_raw = _bound_rows(xp, lo_in, "lower", -math.inf, lay, compact)
    upper, hi_raw = _bound_rows(xp, hi_in, "upper", math.inf, lay, compact)
    if is_number(lo_raw) and is_number(hi_raw) and lo_raw > hi_raw:
        raise _errors.crossed_bounds(1, ())
    return _Rows(call, xr, dr, eps_k, lower, upper)


def caller_stream(lib: str, like: Any) -> contextlib.AbstractContextManager[None]:
    """Where a call on ``lib``'s CUDA arrays runs: CuPy arrays on CuPy's current stream
    and allocator; torch CUDA tensors (converted to CuPy by DLPack) on torch's current
    stream with torch's caching allocator (:func:`clipresc.frameworks._torch_device.cupy_scope`).

    >>> with caller_stream("cupy", None):
    ...     pass
    """
    if lib != "torch":
        return contextlib.nullcontext()
    from ..frameworks import _torch_device  # (torch is loaded: the caller's tensors)

    return _torch_device.cupy_scope(cupy_backend._cupy(), like)


def _error_word() -> Array | None:
    """A zeroed error word (int32) on the current stream for a checked call, else ``None``."""
    if not gpu_checks.checks_enabled():
        return None
    cupy = cupy_backend._cupy()
    return cupy.zeros((1,), dtype=cupy.int32)


def _raise_unreachable(layout: Layout, flags: Array) -> None:
    """The ``unreachable="raise"`` error from the per-row flags (reads them: on the way to
    an exception, or in no-check mode)."""
    host = np.asarray(flags.get()).reshape(-1)
    count = int(host.sum())
    if count:
        first = int(np.argmax(host))
        raise _errors.unreachable(count, layout.rows, layout.row_index(first))


def _finish(
    word: Array | None,
    exact_checks: Callable[[], object],
    rows: _Rows,
    flags: Array | None,
    overflow: Array | None = None,
) -> int:
    """Read the error word (and the overflow count) in one transfer and act on it;
    returns the overflow count (0 when not asked for or nothing was read)."""
    lay = rows.call.layout
    assert lay is not None
    wants_raise = rows.call.unreachable == "raise" and flags is not None
    if word is None:  # no-check mode: nothing read unless the caller asked to raise
        if wants_raise:
            _raise_unreachable(lay, flags)
        return 0
    cupy = cupy_backend._cupy()
    status = word if overflow is None else cupy.concatenate((word, overflow.reshape(1)))
    host = np.asarray(status.get())  # the call's one synchronisation
    gpu_checks.settle(
        int(host[0]),
        exact_checks,
        (lambda: _raise_unreachable(lay, flags)) if wants_raise else None,
    )
    return 0 if overflow is None else int(host[1])


def forward(
    kind: str,
    xp: Any,
    x: Array,
    delta: Array,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: Any,
    unreachable: Any,
) -> Array | None:
    """``scale`` (``kind="scale"``) or ``perturb`` of CuPy arrays through the kernels;
    ``None`` for an empty batch or empty vectors (the caller's array-API path)."""
    rows = _rows(xp, x, delta, eps, p, bounds, axis, unreachable, compact=True)
    lay = rows.call.layout
    assert lay is not None
    if lay.rows == 0 or lay.n == 0:
        return None
    word = _error_word()
    y, eta, flags, _ = cupy_backend.forward_rows(
        rows.x, rows.delta, rows.eps, rows.call.p, rows.lower, rows.upper,
        want_y=kind == "perturb", err=word,
    )  # fmt: skip

    def exact() -> object:
        return prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)

    if kind == "scale":
        cast = eta if eta.dtype == x.dtype else xp.astype(eta, x.dtype)
        cupy = cupy_backend._cupy()
        count = cupy.isinf(cast).sum(dtype=cupy.int32) if word is not None else None
        overflow = _finish(word, exact, rows, flags, count)
        if overflow:
            warn_eta_overflow(overflow, lay.rows, dtype_name(x.dtype))
        return xp.reshape(cast, lay.eta_shape)
    _finish(word, exact, rows, flags)
    out = lay.from_rows_xp(xp, y)
    return out if out.dtype == x.dtype else xp.astype(out, x.dtype)


def vjp(
    kind: str,
    xp: Any,
    x: Array,
    delta: Array,
    eps: Any,
    cot: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: Any,
    unreachable: Any,
) -> dict[str, Any] | None:
    """``scale_vjp`` / ``perturb_vjp`` of CuPy arrays through the kernels (one solve: the
    forward's only when ``unreachable="raise"`` needs its flags, whose ``eta`` the VJP
    kernel then takes); ``None`` for empty arrays, as :func:`forward`."""
    rows = _rows(xp, x, delta, eps, p, bounds, axis, unreachable, compact=False)
    lay = rows.call.layout
    assert lay is not None
    if kind == "scale":
        c = xp.reshape(cotangent(xp, cot, lay.eta_shape, "etabar", rows.x), (lay.rows,))
    else:
        c = lay.to_rows_xp(xp, cotangent(xp, cot, lay.shape, "ybar", rows.x))
    if lay.rows == 0 or lay.n == 0:
        return None
    word = _error_word()
    args = (rows.x, rows.delta, rows.eps, rows.call.p, rows.lower, rows.upper)
    eta = flags = None
    if rows.call.unreachable == "raise":
        _, eta, flags, _ = cupy_backend.forward_rows(*args, want_y=False, err=word)
    fn = cupy_backend.scale_vjp_rows if kind == "scale" else cupy_backend.perturb_vjp_rows
    gx, gd, ge, gl, gu = fn(*args, c, eta, err=word)

    def exact() -> object:
        return prepare_xp(xp, x, delta, eps, p, bounds, axis, unreachable)

    _finish(word, exact, rows, flags)
    g = {"x": gx, "delta": gd, "eps": ge, "lower": gl, "upper": gu}
    return fit_cotangents(xp, g, lay, arg_shapes(eps, bounds, lay), x.dtype, delta.dtype)
