"""OpenCL backend: the CUDA kernels of ``clipresc/kernels/clipresc.cu`` built as OpenCL C.

The same source that CuPy compiles with NVRTC is built here with ``-DCLIPRESC_OPENCL``
(see ``kernels/dialect.h``) and run through :mod:`pyopencl` on any OpenCL device with
``cl_khr_fp64``. Its main use is executing the real GPU kernel logic (barriers, shared
memory reductions, the safeguarded solve) on a CPU in CI, via the PoCL CPU device
(Debian's ``pocl-opencl-icd``) or the Oclgrind simulator.

All functions take and return numpy arrays on 2-D C-contiguous ``(B, n)`` data (one vector
per row); they copy to the device and back. ``eps`` is a scalar or ``B`` values; each
bound is ``None`` (unbounded), a scalar, or an array broadcastable to ``(B, n)`` with at
most two dimensions (``(n,)`` shares one bound vector across the batch). Pass ``queue`` to
choose the device; by default :func:`clipresc.backends.opencl_device.select_device` picks
one (``CLIPRESC_OPENCL_DEVICE`` names it; otherwise PoCL's CPU device is preferred).

Importing this module does not import pyopencl.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np

from clipresc import _errors
from clipresc.kernels import (
    BLOCK,
    KERNEL_NAMES,
    ROWINFO,
    Operand,
    SplitPlan,
    bound_grad_args,
    bound_operand,
    build_defines,
    eps_operand,
    kernel_source,
    norm_mode,
    real_name,
    split_forward,
    split_plan,
    split_vjp,
    vjp_args,
)

__all__ = [
    "ForwardResult",
    "default_device_description",
    "default_queue",
    "forward_rows",
    "perturb_rows",
    "perturb_vjp_rows",
    "scale_rows",
    "scale_vjp_rows",
]

#: Most work-groups launched for the per-row kernels (they loop over further rows).
_MAX_GROUPS = 1 << 16

_lock = threading.Lock()
_queue: Any = None
_device_text: str | None = None
_programs: dict[tuple[int, str], dict[str, Any]] = {}
#: On Oclgrind only: every device buffer this module allocates, kept for the life of the
#: process. Oclgrind's uninitialised-value checker keeps one shadow buffer per buffer
#: index and never frees it (its allocation hooks are not implemented up to 26.03), while
#: Oclgrind hands the index of a freed buffer to the next allocation: a new buffer that a
#: kernel writes and a later kernel reads (the split kernels' scratch, rowinfo) inherits
#: the stale shadow, sized for the old buffer, so that reads past the old size report
#: "uninitialized value" however the kernels wrote it, and reads within it are clean
#: whatever they did. With no buffer ever freed, each new one gets a fresh index and a
#: poisoned shadow of its own size at its first kernel: an exact check.
#: (``tests/gpu/test_opencl_split.py::test_oclgrind_stale_shadow`` shows the artefact.)
_retained: list[Any] = []


def _is_oclgrind(queue: Any) -> bool:
    return any("Oclgrind" in d.platform.name for d in queue.context.devices)


def _allocator(queue: Any) -> Any:
    """The ``allocator`` for ``pyopencl.array`` on ``queue``: ``None`` (pyopencl's
    default), or on Oclgrind one whose buffers are never freed (see ``_retained``)."""
    import pyopencl as cl

    if not _is_oclgrind(queue):
        return None

    def alloc(nbytes: int) -> Any:
        buf = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, max(nbytes, 8))
        _retained.append(buf)
        return buf

    return alloc


def _to_device(queue: Any, a: np.ndarray) -> Any:
    import pyopencl.array as cla

    return cla.to_device(queue, a, allocator=_allocator(queue))


def _empty(queue: Any, shape: Any, dtype: Any) -> Any:
    import pyopencl.array as cla

    return cla.empty(queue, shape, dtype, allocator=_allocator(queue))


class ForwardResult(NamedTuple):
    """Outputs of :func:`forward_rows`."""

    y: np.ndarray | None
    eta: np.ndarray
    unreachable: np.ndarray
    passes: np.ndarray | None


def default_queue() -> Any:
    """A command queue on the device :func:`.opencl_device.select_device` picks (cached).

    Raises ``RuntimeError`` saying what to install when no usable device exists.
    """
    global _queue, _device_text
    with _lock:
        if _queue is None:
            import pyopencl as cl

            from clipresc.backends.opencl_device import select_device

            chosen = select_device()
            _queue = cl.CommandQueue(cl.Context([chosen.device]))
            _device_text = chosen.description
        return _queue


def default_device_description() -> str | None:
    """Which device :func:`default_queue` chose (``None`` before its first call)."""
    return _device_text


def _kernels(queue: Any, real: str) -> dict[str, Any]:
    """The built kernels for this queue's context and element type (cached)."""
    import pyopencl as cl

    key = (queue.context.int_ptr, real)
    with _lock:
        kernels = _programs.get(key)
        if kernels is None:
            options = list(build_defines(real, opencl=True))
            platforms = " ".join(d.platform.name for d in queue.context.devices)
            if "Portable Computing Language" in platforms or "Oclgrind" in platforms:
                # PoCL's work-group compiler aborts ("Could not find a dominating
                # alternative variable") on some optimised forms of the barrier loops;
                # unoptimised front-end IR avoids that and also builds much faster.
                # Oclgrind needs an explicit optimisation level, and its race and
                # uninitialised-value checkers report false positives on optimised code.
                options.append("-cl-opt-disable")
            prg = cl.Program(queue.context, kernel_source()).build(options=options)
            kernels = {name: cl.Kernel(prg, name) for name in KERNEL_NAMES}
            _programs[key] = kernels
        return kernels


class _Prepared(NamedTuple):
    x: np.ndarray
    d: np.ndarray
    B: int
    n: int
    eps: Operand
    lo: Operand
    hi: Operand
    p: float
    pm: int


def _prepare(x: Any, d: Any, eps: Any, p: float, lower: Any, upper: Any) -> _Prepared:
    x = np.asarray(x)
    if x.ndim != 2:
        raise _errors.rows_not_2d(x.shape)
    x = np.ascontiguousarray(x)
    real_name(x.dtype.itemsize)
    if x.dtype.kind != "f":
        raise _errors.rows_not_float(x.dtype)
    d = np.ascontiguousarray(np.asarray(d, dtype=x.dtype))
    if d.shape != x.shape:
        raise _errors.shape_mismatch(d.shape, x.shape)
    B, n = x.shape
    if np.ndim(eps) == 0 and not isinstance(eps, np.ndarray):
        eps_op = eps_operand(float(eps), B)
    else:
        eps_op = eps_operand(np.ascontiguousarray(np.asarray(eps, dtype=np.float64)), B)

    def side(bound: Any, default: float, name: str) -> Operand:
        if bound is not None and (isinstance(bound, np.ndarray) or np.ndim(bound) > 0):
            shape = np.shape(bound)  # (ascontiguousarray makes 0-d arrays 1-d)
            bound = np.ascontiguousarray(np.asarray(bound, dtype=x.dtype)).reshape(shape)
        return bound_operand(bound, B, n, default=default, name=name)

    lo = side(lower, -np.inf, "lower")
    hi = side(upper, np.inf, "upper")
    pp, pm = norm_mode(p)
    return _Prepared(x, d, B, n, eps_op, lo, hi, pp, pm)


class _Device:
    """Device copies of the inputs and the common kernel arguments."""

    def __init__(self, queue: Any, pr: _Prepared) -> None:
        self.queue = queue
        self.pr = pr
        self.x = _to_device(queue, pr.x)
        self.d = _to_device(queue, pr.d)
        dummy = self.x.data

        def buf(op: Operand) -> Any:
            if op.array is None:
                return dummy
            return _to_device(queue, np.ascontiguousarray(op.array).reshape(-1)).data

        self.eps_buf = buf(pr.eps)
        self.lo_buf = buf(pr.lo)
        self.hi_buf = buf(pr.hi)
        self.dummy = dummy

    def common(self) -> tuple[Any, ...]:
        pr = self.pr
        return (
            self.x.data,
            self.d.data,
            self.eps_buf,
            np.int64(pr.eps.es),
            np.int32(pr.eps.array is not None),
            np.float64(pr.eps.value),
            self.lo_buf,
            np.int64(pr.lo.rs),
            np.int64(pr.lo.es),
            np.int32(pr.lo.array is not None),
            np.float64(pr.lo.value),
            self.hi_buf,
            np.int64(pr.hi.rs),
            np.int64(pr.hi.es),
            np.int32(pr.hi.array is not None),
            np.float64(pr.hi.value),
            np.int64(pr.B),
            np.int64(pr.n),
            np.float64(pr.p),
            np.int32(pr.pm),
        )


def _error_word(queue: Any, err: np.ndarray | None) -> Any:
    """The device copy of the caller's error word (a zero word when there is none)."""
    word = np.zeros(1, np.int32) if err is None else np.asarray(err, np.int32).reshape(1)
    return _to_device(queue, word)


def _read_error_word(err_d: Any, err: np.ndarray | None) -> None:
    if err is not None:
        err[...] = err_d.get().reshape(np.shape(err))


def _row_groups(B: int) -> int:
    return max(1, min(B, _MAX_GROUPS))


def _empty_forward(pr: _Prepared, want_y: bool, want_passes: bool) -> ForwardResult:
    """B == 0 or n == 0 (OpenCL has no zero-size buffers): nothing moves, eta = 0."""
    eta = np.zeros(pr.B, dtype=pr.x.dtype)
    mask = np.zeros(pr.B, dtype=bool)
    y = pr.x.copy() if want_y else None
    passes = np.ones(pr.B, dtype=np.int32) if want_passes else None
    return ForwardResult(y, eta, mask, passes)


def _split_plan(queue: Any, pr: _Prepared, split: SplitPlan | bool | None) -> SplitPlan | None:
    if split is None or split is True:
        blocks = 4 * int(queue.device.max_compute_units)
        return split_plan(pr.B, pr.n, blocks)
    return split if isinstance(split, SplitPlan) else None


def _split_forward(
    queue: Any,
    dev: _Device,
    plan: SplitPlan,
    eta: Any,
    flag: Any,
    y: Any,
    passes: Any,
    err_d: Any,
    check: bool,
    extra: tuple[Any, ...] = (),
    kernels: dict[str, Any] | None = None,
) -> None:
    """:func:`clipresc.kernels.split_forward` on an OpenCL queue (``kernels``: another
    build of them, e.g. the traffic-counting one, whose extra arguments are ``extra``)."""
    if kernels is None:
        kernels = _kernels(queue, real_name(dev.pr.x.dtype.itemsize))

    def data(a: Any) -> Any:
        return None if a is None else a.data

    split_forward(
        _launcher(queue, kernels), _scratcher(queue), dev.common(), plan, dev.pr.B, eta.data,
        flag.data, data(y), data(passes), err_d.data if check else None, check, dev.dummy,
        extra,
    )  # fmt: skip


def _launcher(queue: Any, kernels: dict[str, Any]) -> Any:
    """``launch(name, groups, *args)`` of the split sequences on ``queue``."""

    def launch(name: str, groups: int, *args: Any) -> None:
        g = max(1, min(groups, _MAX_GROUPS))
        kernels[name](queue, (g * BLOCK,), (BLOCK,), *args)

    return launch


def _scratcher(queue: Any) -> Any:
    """``scratch(nbytes, zero)`` of the split sequences: a new buffer on ``queue``'s
    context, zeroed when asked."""
    import pyopencl as cl

    keep = _is_oclgrind(queue)

    def scratch(nbytes: int, zero: bool) -> Any:
        flags = cl.mem_flags.READ_WRITE
        if not zero:
            buf = cl.Buffer(queue.context, flags, max(nbytes, 8))
        else:
            # (a copy of zeros rather than a fill: Oclgrind counts it as initialised)
            host = np.zeros(max(nbytes, 8), np.uint8)
            buf = cl.Buffer(queue.context, flags | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
        if keep:
            _retained.append(buf)
        return buf

    return scratch


def forward_rows(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any = 0.0,
    upper: Any = 1.0,
    *,
    want_y: bool = True,
    want_passes: bool = False,
    queue: Any = None,
    err: np.ndarray | None = None,
    split: SplitPlan | bool | None = None,
) -> ForwardResult:
    """Solve every row and optionally apply: ``y = clip(x + eta * d, lower, upper)``.

    Returns ``(y or None, eta, unreachable, passes or None)``; ``eta`` has x's dtype,
    ``unreachable`` is a bool mask (eps above the largest reachable size; eta is then the
    saturating scale), ``passes`` counts the passes the kernel made over each row.
    ``err``, a one-element int32 array, makes the kernel validate its inputs and OR the
    ``kernels.ERR_BITS`` it finds into ``err[0]``. ``split`` spreads each row over several
    blocks (:func:`clipresc.kernels.split_forward`): ``None`` when
    ``kernels.split_plan`` says so for the device (as the CuPy backend
    decides), ``False`` never, or the ``kernels.SplitPlan`` to use.
    """
    pr = _prepare(x, d, eps, p, lower, upper)
    if pr.B == 0 or pr.n == 0:
        return _empty_forward(pr, want_y, want_passes)
    queue = queue if queue is not None else default_queue()
    k = _kernels(queue, real_name(pr.x.dtype.itemsize))["clipresc_forward"]
    dev = _Device(queue, pr)
    eta = _empty(queue, (pr.B,), pr.x.dtype)
    flag = _empty(queue, (pr.B,), np.uint8)
    y = _empty(queue, (pr.B, pr.n), pr.x.dtype) if want_y else None
    passes = _empty(queue, (pr.B,), np.int32) if want_passes else None
    groups = _row_groups(pr.B)
    err_d = _error_word(queue, err)
    plan = _split_plan(queue, pr, split)
    if plan is not None:
        _split_forward(queue, dev, plan, eta, flag, y, passes, err_d, err is not None)
    else:
        k(
            queue,
            (groups * BLOCK,),
            (BLOCK,),
            *dev.common(),
            eta.data,
            flag.data,
            y.data if y is not None else dev.dummy,
            np.int32(want_y),
            passes.data if passes is not None else dev.dummy,
            np.int32(want_passes),
            err_d.data,
            np.int32(err is not None),
        )
    _read_error_word(err_d, err)
    return ForwardResult(
        y.get() if y is not None else None,
        eta.get(),
        flag.get().astype(bool),
        passes.get() if passes is not None else None,
    )


def scale_rows(
    x: Any, d: Any, eps: Any, p: float, lower: Any = 0.0, upper: Any = 1.0, *, queue: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row scale ``eta`` with ``||clip(x + eta d, lower, upper) - x||_p = eps``.

    Returns ``(eta, unreachable_mask)``, both of shape ``(B,)``.
    """
    r = forward_rows(x, d, eps, p, lower, upper, want_y=False, queue=queue)
    return r.eta, r.unreachable


def perturb_rows(
    x: Any, d: Any, eps: Any, p: float, lower: Any = 0.0, upper: Any = 1.0, *, queue: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused solve and apply. Returns ``(y, eta, unreachable_mask)``."""
    r = forward_rows(x, d, eps, p, lower, upper, want_y=True, queue=queue)
    assert r.y is not None
    return r.y, r.eta, r.unreachable


def _vjp(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    ybar: Any,
    etabar: Any,
    queue: Any,
    eta: Any = None,
    err: np.ndarray | None = None,
    split: SplitPlan | bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    pr = _prepare(x, d, eps, p, lower, upper)
    dt = pr.x.dtype
    if pr.B == 0 or pr.n == 0:
        z = np.zeros_like(pr.x)
        return (
            z,
            z.copy(),
            np.zeros(pr.B, dtype=dt),
            _zero_bound_grad(pr.lo, dt),
            _zero_bound_grad(pr.hi, dt),
        )
    queue = queue if queue is not None else default_queue()
    kernels = _kernels(queue, real_name(dt.itemsize))
    dev = _Device(queue, pr)
    ybar_d = None
    if ybar is not None:
        ybar_h = np.ascontiguousarray(np.asarray(ybar, dtype=dt))
        if ybar_h.shape != pr.x.shape:
            raise _errors.ybar_rows_shape(pr.x.shape, ybar_h.shape)
        ybar_d = _to_device(queue, ybar_h)
    etabar_d = None
    if etabar is not None:
        etabar_h = np.ascontiguousarray(np.broadcast_to(np.asarray(etabar, dtype=dt), (pr.B,)))
        etabar_d = _to_device(queue, etabar_h)
    eta_d = None
    if eta is not None:
        eta_d = _to_device(queue, np.ascontiguousarray(np.asarray(eta, dtype=dt).reshape(pr.B)))

    xbar = _empty(queue, (pr.B, pr.n), dt)
    dbar = _empty(queue, (pr.B, pr.n), dt)
    epsbar = _empty(queue, (pr.B,), dt)
    lfull = pr.lo.grad in ("full", "reduce")
    ufull = pr.hi.grad in ("full", "reduce")
    lbar = _empty(queue, (pr.B, pr.n), dt) if lfull else None
    ubar = _empty(queue, (pr.B, pr.n), dt) if ufull else None
    need_info = pr.lo.grad == "shared" or pr.hi.grad == "shared"
    plan = _split_plan(queue, pr, split)
    rowinfo = (
        _empty(queue, (pr.B * ROWINFO,), np.float64) if need_info or plan is not None else None
    )
    data = (lambda a: a.data), dev.dummy
    err_d = _error_word(queue, err)
    if plan is not None:
        assert rowinfo is not None

        def opt(a: Any) -> Any:
            return None if a is None else a.data

        # (without the forward's eta, or with p = inf as in clipresc_vjp, the split
        # backward solves the rows first)
        eta_s = opt(eta_d) if pr.pm != 3 else None
        split_vjp(
            _launcher(queue, kernels), _scratcher(queue), dev.common(), plan, pr.B,
            (opt(ybar_d), opt(etabar_d)), eta_s, (xbar.data, dbar.data, epsbar.data),
            (opt(lbar), opt(ubar)), rowinfo.data, err_d.data if err is not None else None,
            err is not None, dev.dummy,
        )  # fmt: skip
    else:
        kernels["clipresc_vjp"](
            queue,
            (_row_groups(pr.B) * BLOCK,),
            (BLOCK,),
            *vjp_args(
                dev.common(),
                (xbar, dbar, epsbar),
                ybar_d,
                etabar_d,
                lbar,
                ubar,
                rowinfo,
                eta_d,
                err_d,
                err is not None,
                *data,
            ),
        )
    _read_error_word(err_d, err)
    lshared = _empty(queue, (pr.n,), dt) if pr.lo.grad == "shared" else None
    ushared = _empty(queue, (pr.n,), dt) if pr.hi.grad == "shared" else None
    if need_info:
        groups = max(1, min((pr.n + BLOCK - 1) // BLOCK, _MAX_GROUPS))
        kernels["clipresc_bound_grad_shared"](
            queue,
            (groups * BLOCK,),
            (BLOCK,),
            *bound_grad_args(dev.common(), ybar_d, rowinfo, lshared, ushared, *data),
        )
    return (
        xbar.get(),
        dbar.get(),
        epsbar.get(),
        _finish_bound_grad(pr.lo, lbar, lshared),
        _finish_bound_grad(pr.hi, ubar, ushared),
    )


def _zero_bound_grad(op: Operand, dt: np.dtype) -> np.ndarray | None:
    if op.array is None:
        return None
    return np.zeros(np.shape(op.array), dtype=dt)


def _finish_bound_grad(op: Operand, full: Any, shared: Any) -> np.ndarray | None:
    """The cotangent of one bound in the bound's own shape (None for a scalar bound)."""
    if op.array is None:
        return None
    shape = np.shape(op.array)
    if op.grad == "shared":
        return np.asarray(shared.get()).reshape(shape)
    g = np.asarray(full.get())
    if op.grad == "reduce":
        axes = tuple(ax for ax in (0, 1) if op.shape2d[ax] == 1)
        g = g.sum(axis=axes, keepdims=True, dtype=np.float64).astype(g.dtype)
    return g.reshape(shape)


def perturb_vjp_rows(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    ybar: Any,
    *,
    queue: Any = None,
    eta: Any = None,
    err: np.ndarray | None = None,
    split: SplitPlan | bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Closed-form VJP of ``perturb`` for the cotangent ``ybar`` of ``y`` (shape ``(B, n)``).

    Returns ``(xbar, deltabar, epsbar, lbar, ubar)``: ``epsbar`` has shape ``(B,)``;
    ``lbar`` / ``ubar`` have the shape of the array bound they belong to, or are ``None``
    for scalar / missing bounds. ``eta``, the forward's ``(B,)`` scales, spares the
    kernel its solve (it reads the saturated set at that ``eta``); ``err`` as in
    :func:`forward_rows` (the unreachable bit excepted). ``split`` as in
    :func:`forward_rows` (without ``eta``, or with p = inf, the split backward solves the
    rows with the split kernels first).
    """
    return _vjp(x, d, eps, p, lower, upper, ybar, None, queue, eta, err, split)


def scale_vjp_rows(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    etabar: Any,
    *,
    queue: Any = None,
    eta: Any = None,
    err: np.ndarray | None = None,
    split: SplitPlan | bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Closed-form VJP of ``scale`` for the cotangent ``etabar`` of ``eta`` (shape ``(B,)``).

    Returns ``(xbar, deltabar, epsbar, lbar, ubar)`` as :func:`perturb_vjp_rows`.
    """
    return _vjp(x, d, eps, p, lower, upper, None, etabar, queue, eta, err, split)
