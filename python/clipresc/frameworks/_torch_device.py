"""PyTorch tensors on devices other than the CPU (used by :mod:`clipresc.frameworks.torch`).

The tensors are laid out as ``(rows, n)`` on their device and solved by
:mod:`clipresc.backends.cupy_backend` through DLPack for CUDA tensors when CuPy is
installed and sees a GPU, and by :mod:`clipresc.backends.generic` on the tensors
themselves otherwise. The functions also accept CPU tensors, which is how the tests run
them without a GPU.

Checks give the NumPy path's errors (same messages). On the CUDA kernels they run inside
the kernels (an error word read once per call: one host synchronisation; none in
:func:`clipresc.backends.gpu_checks.unchecked` mode), and the counting host checks run
only when the word reports a problem. The kernels' outputs come from torch's caching
allocator on torch's current stream. Elsewhere the host checks run before the solve.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import _errors
from .._layout import Layout, reduce_to
from .._prepare_xp import prepare_xp
from ..backends import generic, gpu_checks

torch: Any = importlib.import_module("torch")
_xp: Any = importlib.import_module("array_api_compat.torch")


def _rows(lay: Layout, t: Any) -> Any:
    """``t`` as ``(rows, n)``, contiguous on its device."""
    return lay.to_rows_xp(_xp, t).contiguous()


def _pad(t: Any, ndim: int) -> Any:
    return t.reshape((1,) * (ndim - t.ndim) + tuple(t.shape))


def _eps_tensor(eps: Any, x: Any) -> Any:
    """``eps`` as a float64 tensor on ``x``'s device (a number becomes 0-d)."""
    if isinstance(eps, torch.Tensor):
        return eps
    return torch.tensor(float(eps), dtype=torch.float64, device=x.device)


def _bound_rows(lay: Layout, t: Any, s: float) -> Any:
    """A bound for the row backends: a float, an ``(n,)`` row shared by all vectors, or
    ``(rows, n)``."""
    if t is None:
        return s
    pt = _pad(t, len(lay.shape))
    if all(pt.shape[a] == 1 for a in lay.batch_axes):
        return _rows(lay.shared, pt.expand(lay.shared.shape)).reshape(lay.n)
    return _rows(lay, pt.expand(lay.shape))


def _bound_back(lay: Layout, g: Any, t: Any) -> Any:
    """The cotangent of a row-layout bound (``(n,)`` or ``(rows, n)``) in ``t``'s shape."""
    full = lay.bound_from_rows_xp(_xp, g)
    return reduce_to(_xp, full, tuple(t.shape)).to(t.dtype)


def _cupy_for(x: Any) -> Any:
    """``(cupy, cupy_backend)`` for a CUDA tensor when CuPy can run it, else ``None``."""
    if x.device.type != "cuda":
        return None
    try:
        cupy = importlib.import_module("cupy")
        if not cupy.cuda.is_available():
            return None
        from ..backends import cupy_backend
    except Exception:  # CuPy missing or built for another CUDA
        return None
    return cupy, cupy_backend


def _torch_allocator(cupy: Any, device: Any) -> Any:
    """A CuPy allocator that takes memory from torch's caching allocator (on torch's
    current stream): each block is a uint8 tensor that the CuPy array keeps alive."""

    def alloc(size: int) -> Any:
        t = torch.empty((size,), dtype=torch.uint8, device=device)
        mem = cupy.cuda.UnownedMemory(t.data_ptr(), size, t)
        return cupy.cuda.MemoryPointer(mem, 0)

    return alloc


@contextlib.contextmanager
def cupy_scope(cupy: Any, x: Any) -> Iterator[None]:
    """CuPy work on ``x``'s device, on torch's current stream (wrapped as a CuPy
    ``ExternalStream``) and with CuPy's allocations made by torch's caching allocator:
    kernels and outputs ordered with the caller's torch work, as torch ops would be."""
    stream = torch.cuda.current_stream(x.device)
    with (
        cupy.cuda.Device(x.device.index or 0),
        cupy.cuda.ExternalStream(stream.cuda_stream),
        cupy.cuda.using_allocator(_torch_allocator(cupy, x.device)),
    ):
        yield


def _run_cupy(cp: Any, x: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with tensors converted to CuPy (DLPack) in
    :func:`cupy_scope`; the results back as tensors."""
    cupy, _ = cp

    def conv(a: Any) -> Any:
        return cupy.from_dlpack(a) if isinstance(a, torch.Tensor) else a

    with cupy_scope(cupy, x):
        out = fn(*[conv(a) for a in args], **{k: conv(v) for k, v in kwargs.items()})

    def back(a: Any) -> Any:
        return None if a is None else torch.from_dlpack(a)

    return tuple(back(a) for a in out)


def kernel_scale_rows(x: Any) -> Callable[..., tuple[Any, Any]] | None:
    """The CUDA kernels' per-row ``eta`` solver for rows of tensors on ``x``'s device (on
    torch's stream, with torch's allocator; no value checks), or ``None`` where CuPy cannot
    run them."""
    cp = _cupy_for(x)
    if cp is None:
        return None

    def scale_rows(xr: Any, dr: Any, eps: Any, p: float, lower: Any, upper: Any) -> Any:
        eta, flag = _run_cupy(cp, xr, cp[1].scale_rows, xr, dr, eps, p, lower, upper)
        return eta, flag

    return scale_rows


def _check(
    x: Any,
    delta: Any,
    eps: Any,
    lower: Any,
    upper: Any,
    lo: float,
    hi: float,
    p: float,
    axis: Sequence[int],
) -> None:
    """The exact checks every array-API path makes (:func:`clipresc._prepare_xp.prepare_xp`:
    same messages, counts and first indices); raises on the first problem."""
    bounds = (lo if lower is None else lower, hi if upper is None else upper)
    prepare_xp(_xp, x, delta, eps, p, bounds, tuple(axis), "saturate")


def _raise_unreachable(lay: Layout, flag: Any, unreachable: str) -> None:
    if unreachable != "raise":
        return
    count = int(flag.sum())
    if count:
        first = int(torch.nonzero(flag)[0, 0])
        raise _errors.unreachable(count, lay.rows, lay.row_index(first))


def _eps_rows(lay: Layout, eps: Any) -> Any:
    """``eps`` as ``(rows,)`` without checking its values (a number stays a number: the
    kernels take it as an argument, with no copy to the device)."""
    if not isinstance(eps, torch.Tensor):
        return float(eps)
    if eps.ndim == 1 and eps.shape[0] == lay.rows:
        return eps
    return eps.broadcast_to(lay.eta_shape).reshape(lay.rows)


def _row_operands(
    lay: Layout,
    x: Any,
    delta: Any,
    eps: Any,
    lower: Any,
    upper: Any,
    lo: float,
    hi: float,
    wd: Any,
) -> tuple[Any, ...]:
    """``(x, delta, eps, lower, upper)`` as rows, ``x`` and ``delta`` converted to ``wd``
    (``None``: kept in their dtype)."""
    xr, dr = _rows(lay, x), _rows(lay, delta)
    if wd is not None:
        xr, dr = xr.to(wd), dr.to(wd)
    return xr, dr, _eps_rows(lay, eps), _bound_rows(lay, lower, lo), _bound_rows(lay, upper, hi)


def _kernel_rows(
    lay: Layout, x: Any, delta: Any, eps: Any, lower: Any, upper: Any, lo: float, hi: float
) -> tuple[Any, ...]:
    """The row operands for the CUDA kernels (which check the values themselves), in the
    work dtype (float16 / bfloat16 widened to float32)."""
    wd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return _row_operands(lay, x, delta, eps, lower, upper, lo, hi, wd)


def _error_word(x: Any) -> Any:
    """A zeroed error word on ``x``'s device for a checked launch, else ``None``."""
    if not gpu_checks.checks_enabled():
        return None
    return torch.zeros((1,), dtype=torch.int32, device=x.device)


def forward_eta(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    lower: Any,
    upper: Any,
    lower_s: float,
    upper_s: float,
    p: float,
    axis: Sequence[int],
    unreachable: str,
) -> tuple[Any, Any]:
    """:func:`forward` and the scales it used (``eta``'s shape, in the work dtype)."""
    lay = Layout.of(tuple(x.shape), tuple(axis))
    wd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    cp = _cupy_for(x)
    if cp is not None and lay.rows > 0 and lay.n > 0:
        # (a number eps stays a number: no host-to-device copy, which CUDA graphs forbid)
        rows = _kernel_rows(lay, x, delta, eps, lower, upper, lower_s, upper_s)
        err = _error_word(x)
        y, eta, flag, _ = _run_cupy(
            cp, x, cp[1].forward_rows, *rows[:3], p, *rows[3:], want_y=kind == "perturb", err=err
        )
        if err is not None:
            gpu_checks.settle(
                int(err.item()),  # the call's one synchronisation
                lambda: _check(x, delta, eps, lower, upper, lower_s, upper_s, p, axis),
                lambda: _raise_unreachable(lay, flag, unreachable),
            )
        else:
            _raise_unreachable(lay, flag, unreachable)
    else:
        eps = _eps_tensor(eps, x)
        _check(x, delta, eps, lower, upper, lower_s, upper_s, p, axis)
        xr, dr, er, lr, ur = _row_operands(lay, x, delta, eps, lower, upper, lower_s, upper_s, None)
        y, eta, flag = generic.perturb_rows(xr, dr, er, p, lr, ur)
        _raise_unreachable(lay, flag, unreachable)
    eta_w = eta.to(wd).reshape(lay.eta_shape).contiguous()
    if kind == "scale":
        return eta.to(x.dtype).reshape(lay.eta_shape).contiguous(), eta_w
    return lay.from_rows_xp(_xp, y.to(x.dtype)).contiguous(), eta_w


def forward(kind: str, *args: Any) -> Any:
    """``scale`` / ``perturb`` of tensors on their own device: :func:`forward_eta`'s
    arguments (the op's), its first result."""
    return forward_eta(kind, *args)[0]


def vjp(
    kind: str,
    grad: Any,
    x: Any,
    delta: Any,
    eps: Any,
    lower: Any,
    upper: Any,
    lower_s: float,
    upper_s: float,
    p: float,
    axis: Sequence[int],
    unreachable: str,
    eta: Any = None,
) -> tuple[Any, Any, Any, Any, Any]:
    """Cotangents ``(x, delta, eps, lower, upper)`` (bounds ``None`` when not tensors).

    ``eta``, the scales from :func:`forward_eta`, spares both paths their solve (the CUDA
    kernel and the array-API one).
    """
    eps_arg = eps
    eps = _eps_tensor(eps, x)  # (the cotangent of eps is a tensor whatever eps was)
    lay = Layout.of(tuple(x.shape), tuple(axis))
    cp = _cupy_for(x)
    if kind == "scale":
        cot = grad.reshape(lay.rows)
    else:
        cot = _rows(lay, grad)
    if cp is not None and lay.rows > 0 and lay.n > 0:
        wd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xr, dr, er, lr, ur = _kernel_rows(lay, x, delta, eps_arg, lower, upper, lower_s, upper_s)
        fn = cp[1].scale_vjp_rows if kind == "scale" else cp[1].perturb_vjp_rows
        err = _error_word(x)
        # the forward's eta (work dtype) spares the kernel its solve
        eta_k = _given_eta(eta, wd, lay.rows)
        gx, gd, ge, gl, gu = _run_cupy(
            cp, x, fn, xr, dr, er, p, lr, ur, cot.to(wd).contiguous(), eta_k, err=err
        )
        if err is not None:
            gpu_checks.settle(
                int(err.item()),  # the call's one synchronisation
                lambda: _check(x, delta, eps, lower, upper, lower_s, upper_s, p, axis),
            )
    else:
        _check(x, delta, eps, lower, upper, lower_s, upper_s, p, axis)
        xr, dr, er, lr, ur = _row_operands(lay, x, delta, eps, lower, upper, lower_s, upper_s, None)
        eta = _given_eta(eta, xr.dtype, lay.rows)
        if eta is None:
            eta, _ = generic.scale_rows(xr, dr, er, p, lr, ur)
        fn = generic.scale_vjp_rows if kind == "scale" else generic.perturb_vjp_rows
        out = fn(xr, dr, er, p, lr, ur, eta, cot)
        gx, gd, ge, gl, gu = out["x"], out["delta"], out["eps"], out["lower"], out["upper"]
    return (
        lay.from_rows_xp(_xp, gx).to(x.dtype).contiguous(),
        lay.from_rows_xp(_xp, gd).to(delta.dtype).contiguous(),
        _eps_back(lay, ge, eps),
        None if lower is None else _bound_back(lay, gl, lower).contiguous(),
        None if upper is None else _bound_back(lay, gu, upper).contiguous(),
    )


def _given_eta(eta: Any, dtype: Any, rows: int) -> Any:
    """The forward's ``eta`` as ``(rows,)`` when it is usable (the work dtype, one value
    per row), else ``None`` (the backend then solves once)."""
    if eta is None or eta.dtype != dtype or eta.numel() != rows:
        return None
    return eta.reshape(rows).contiguous()


def _eps_back(lay: Layout, ge: Any, eps: Any) -> Any:
    """The ``(rows,)`` cotangent of ``eps`` in ``eps``'s own shape and dtype."""
    if eps.ndim == 1 and eps.shape[0] == lay.rows:
        g = ge.reshape(lay.rows)
    else:
        g = reduce_to(_xp, ge.reshape(lay.eta_shape), tuple(eps.shape))
    return g.to(eps.dtype).contiguous()
