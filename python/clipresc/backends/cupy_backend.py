"""CuPy backend: the kernels of ``clipresc/kernels/clipresc.cu`` through ``cupy.RawModule``.

Functions work on 2-D ``(B, n)`` CuPy arrays (one vector per row; ``x`` and ``delta`` are
made C-contiguous if they are not). ``eps`` is a scalar or ``B`` values; each bound is
``None`` (unbounded), a scalar, or a CuPy array broadcastable to ``(B, n)`` with at most two
dimensions (``(n,)`` shares one bound vector across the batch).

Kernels are compiled lazily with NVRTC on first use, once per device and element type
(``@cupy.memoize(for_each_device=True)``), and launched on the current stream. Nothing
synchronises with the host; besides the outputs, the only allocations are O(B) (a device
copy of a host ``eps`` array, the per-row scratch of the VJP for bounds shared along the
batch), or O(B x segments) when long rows are split over blocks (about 16.5 KB per segment
of at least 32768 elements).

Importing this module does not import CuPy (it is imported inside the functions).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable

from clipresc import _errors
from clipresc.kernels import (
    BLOCK,
    DEFAULT_L2_BYTES,
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
    row_group,
    split_forward,
    split_plan,
    split_vjp,
    vjp_args,
)

__all__ = [
    "FMA_OPTIONS",
    "forward_rows",
    "get_kernel",
    "nvrtc_options",
    "perturb_rows",
    "perturb_vjp_rows",
    "scale_rows",
    "scale_vjp_rows",
]

#: Most blocks launched for the per-row kernels (they loop over further rows).
_MAX_BLOCKS = 1 << 20


#: The FMA policy. NVRTC contracts ``a + b * c`` into one fused multiply-add by default; the
#: OpenCL build (``-cl-opt-disable`` / PoCL without ``-cl-mad-enable``) and the Rust core
#: round the product and the sum separately. ``--fmad=false`` keeps the CUDA build to the
#: same operation order, so for p in {1, 2, inf} (no ``pow``) GPU results equal the ones
#: the CPU tests check, bit for bit where the operations are the same. Only ``pow`` (general
#: p) keeps libdevice's own explicit FMAs: that path agrees with the CPU to a tolerance.
FMA_OPTIONS = ("--fmad=false",)


def nvrtc_options(real: str, arch: str | None = None) -> tuple[str, ...]:
    """NVRTC options for building the kernels for element type ``real`` ('float' or
    'double'); ``arch`` (e.g. ``"compute_80"``) is added as ``-arch=...`` when given.

    >>> nvrtc_options("float", "compute_90")
    ('-arch=compute_90', '-DREAL=float', '-DCLIPRESC_BLOCK=256', '--std=c++14', '--fmad=false')
    """
    opts = (*build_defines(real), "--std=c++14", *FMA_OPTIONS)
    if arch is not None:
        opts = (f"-arch={arch}", *opts)
    return opts


def _cupy() -> Any:
    """The cupy module, imported on first use (``importlib`` keeps type checkers off
    CuPy's untyped package)."""
    return importlib.import_module("cupy")


def _build_module(real: str) -> Any:
    return _cupy().RawModule(code=kernel_source(), options=nvrtc_options(real))


@functools.cache
def _module_factory() -> Callable[[str], Any]:
    # One compiled module per (device, element type):
    # _build_module wrapped in @cupy.memoize(for_each_device=True).
    factory: Callable[[str], Any] = _cupy().memoize(for_each_device=True)(_build_module)
    return factory


def get_kernel(name: str, real: str) -> Any:
    """The ``cupy.RawKernel`` ``name`` for element type ``real`` on the current device."""
    return _module_factory()(real).get_function(name)


def _prepare(x: Any, d: Any, eps: Any, p: float, lower: Any, upper: Any) -> dict[str, Any]:
    cupy = _cupy()
    import numpy as np

    if x.ndim != 2:
        raise _errors.rows_not_2d(x.shape)
    if x.dtype.kind != "f":
        raise _errors.rows_not_float(x.dtype)
    real = real_name(x.dtype.itemsize)
    x = cupy.ascontiguousarray(x)
    d = cupy.ascontiguousarray(d, dtype=x.dtype)
    if d.shape != x.shape:
        raise _errors.shape_mismatch(d.shape, x.shape)
    B, n = (int(s) for s in x.shape)

    if isinstance(eps, cupy.ndarray):
        eps_op = eps_operand(cupy.ascontiguousarray(eps.reshape(-1), dtype=cupy.float64), B)
    elif np.ndim(eps) > 0:  # host sequence: one small copy to the device
        eps_op = eps_operand(cupy.asarray(np.asarray(eps, dtype=np.float64).reshape(-1)), B)
    else:
        eps_op = eps_operand(float(eps), B)

    def side(bound: Any, default: float, name: str) -> Operand:
        if isinstance(bound, cupy.ndarray):
            # (ascontiguousarray makes 0-d arrays 1-d: keep the caller's shape)
            bound = cupy.ascontiguousarray(bound, dtype=x.dtype).reshape(bound.shape)
        elif bound is not None and np.ndim(bound) > 0:
            bound = cupy.asarray(np.asarray(bound, dtype=x.dtype))
        return bound_operand(bound, B, n, default=default, name=name)

    pp, pm = norm_mode(p)
    return {
        "x": x,
        "d": d,
        "B": B,
        "n": n,
        "real": real,
        "eps": eps_op,
        "lo": side(lower, float("-inf"), "lower"),
        "hi": side(upper, float("inf"), "upper"),
        "p": pp,
        "pm": pm,
    }


def _common(pr: dict[str, Any]) -> tuple[Any, ...]:
    import numpy as np

    x = pr["x"]

    def ptr(op: Operand) -> Any:
        return x if op.array is None else op.array

    eps, lo, hi = pr["eps"], pr["lo"], pr["hi"]
    return (
        x,
        pr["d"],
        ptr(eps),
        np.int64(eps.es),
        np.int32(eps.array is not None),
        np.float64(eps.value),
        ptr(lo),
        np.int64(lo.rs),
        np.int64(lo.es),
        np.int32(lo.array is not None),
        np.float64(lo.value),
        ptr(hi),
        np.int64(hi.rs),
        np.int64(hi.es),
        np.int32(hi.array is not None),
        np.float64(hi.value),
        np.int64(pr["B"]),
        np.int64(pr["n"]),
        np.float64(pr["p"]),
        np.int32(pr["pm"]),
    )


@functools.cache
def _multiprocessors(device_id: int) -> int:
    return int(_cupy().cuda.Device(device_id).attributes["MultiProcessorCount"])


@functools.cache
def _l2_bytes(device_id: int) -> int:
    """The device's L2 size (``kernels.DEFAULT_L2_BYTES`` when it does not say)."""
    size = _cupy().cuda.Device(device_id).attributes.get("L2CacheSize", 0)
    return int(size) if size else DEFAULT_L2_BYTES


def _blocks() -> int:
    """Blocks resident at once: four blocks of 256 threads per multiprocessor (what the
    64-register cap allows)."""
    return 4 * _multiprocessors(int(_cupy().cuda.Device().id))


def _split_plan(B: int, n: int, split: SplitPlan | bool | None) -> SplitPlan | None:
    if split is None or split is True:
        return split_plan(B, n, _blocks())
    return split if isinstance(split, SplitPlan) else None


def _row_group(pr: dict[str, Any], split: SplitPlan | bool | None) -> int:
    """Rows per launch (``kernels.row_group``: a group's x and d fit the L2 share); all
    rows when the caller fixed the plan."""
    B = int(pr["B"])
    if not (split is None or split is True):
        return B
    dev = int(_cupy().cuda.Device().id)
    return row_group(B, pr["n"], pr["x"].dtype.itemsize, _blocks(), _l2_bytes(dev))


def _rows_of(pr: dict[str, Any], r0: int, r1: int) -> dict[str, Any]:
    """The operands of rows ``r0:r1`` (views: arrays along rows start ``r0`` rows in)."""

    def from_row(op: Operand, stride: int) -> Operand:
        if op.array is None or stride == 0:
            return op
        return dataclasses.replace(op, array=op.array.reshape(-1)[r0 * stride :])

    return {
        **pr,
        "x": pr["x"][r0:r1],
        "d": pr["d"][r0:r1],
        "B": r1 - r0,
        "eps": from_row(pr["eps"], pr["eps"].es),
        "lo": from_row(pr["lo"], pr["lo"].rs),
        "hi": from_row(pr["hi"], pr["hi"].rs),
    }


def _launcher(real: str) -> Callable[..., None]:
    """``launch(name, groups, *args)`` for the split sequences (current stream)."""

    def launch(name: str, groups: int, *args: Any) -> None:
        get_kernel(name, real)((max(1, min(groups, _MAX_BLOCKS)),), (BLOCK,), args)

    return launch


def _scratch(nbytes: int, zero: bool) -> Any:
    """Split-kernel scratch from the current allocator (torch's, for torch callers)."""
    cupy = _cupy()
    return (cupy.zeros if zero else cupy.empty)((max(nbytes, 8),), dtype=cupy.uint8)


def _split_forward(
    pr: dict[str, Any], plan: SplitPlan, eta: Any, flag: Any, y: Any, passes: Any, err: Any
) -> None:
    """:func:`clipresc.kernels.split_forward` on the current stream; scratch from CuPy's
    pool (O(B x segments) bytes)."""
    split_forward(
        _launcher(pr["real"]), _scratch, _common(pr), plan, pr["B"], eta, flag, y, passes,
        err, err is not None, pr["x"],
    )  # fmt: skip


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
    err: Any = None,
    split: SplitPlan | bool | None = None,
) -> tuple[Any | None, Any, Any, Any | None]:
    """Solve every row and optionally apply ``y = clip(x + eta * d, lower, upper)``.

    Returns ``(y or None, eta, unreachable, passes or None)``: ``eta`` (B,) in x's dtype,
    ``unreachable`` a (B,) bool mask (eps above the largest reachable size; eta is then the
    saturating scale), ``passes`` (B,) int32 passes over each row.

    ``err``, a zeroed one-element int32 CuPy array, makes the kernel validate its inputs
    (NaN / inf, x outside the bounds, crossed bounds, eps) in its first pass and OR the
    ``kernels.ERR_BITS`` it finds (and the unreachable bit) into it, on the stream: the
    caller reads it when it wants (one synchronisation), or never (CUDA graphs).

    ``split``: ``None`` spreads each row over several blocks when
    ``kernels.split_plan`` says so for this device (a batch too small to
    fill it, long rows), ``False`` never, a ``kernels.SplitPlan`` as given.
    """
    cupy = _cupy()
    import numpy as np

    pr = _prepare(x, d, eps, p, lower, upper)
    B, n, xx = pr["B"], pr["n"], pr["x"]
    eta = cupy.empty((B,), dtype=xx.dtype)
    flag = cupy.empty((B,), dtype=cupy.bool_)
    y = cupy.empty((B, n), dtype=xx.dtype) if want_y else None
    passes = cupy.empty((B,), dtype=cupy.int32) if want_passes else None
    rows = _row_group(pr, split) if B > 0 and n > 0 else B
    for r0 in range(0, B, max(rows, 1)):  # row groups whose x and d fit the L2 share
        r1 = min(B, r0 + rows)
        g = pr if rows >= B else _rows_of(pr, r0, r1)
        y_g = None if y is None else y[r0:r1]
        passes_g = None if passes is None else passes[r0:r1]
        plan = _split_plan(r1 - r0, n, split)
        if n > 0 and plan is not None:
            _split_forward(g, plan, eta[r0:r1], flag[r0:r1], y_g, passes_g, err)
            continue
        kernel = get_kernel("clipresc_forward", pr["real"])
        kernel(
            (min(r1 - r0, _MAX_BLOCKS),),
            (BLOCK,),
            (
                *_common(g),
                eta[r0:r1],
                flag[r0:r1],
                y_g if y_g is not None else xx,
                np.int32(want_y),
                passes_g if passes_g is not None else xx,
                np.int32(want_passes),
                err if err is not None else xx,
                np.int32(err is not None),
            ),
        )
    return y, eta, flag, passes


def scale_rows(
    x: Any, d: Any, eps: Any, p: float, lower: Any = 0.0, upper: Any = 1.0
) -> tuple[Any, Any]:
    """Per-row scale ``eta`` with ``||clip(x + eta d, lower, upper) - x||_p = eps``.

    Returns ``(eta, unreachable_mask)``, both CuPy arrays of shape ``(B,)``.
    """
    _, eta, flag, _ = forward_rows(x, d, eps, p, lower, upper, want_y=False)
    return eta, flag


def perturb_rows(
    x: Any, d: Any, eps: Any, p: float, lower: Any = 0.0, upper: Any = 1.0
) -> tuple[Any, Any, Any]:
    """Fused solve and apply. Returns ``(y, eta, unreachable_mask)``."""
    y, eta, flag, _ = forward_rows(x, d, eps, p, lower, upper, want_y=True)
    return y, eta, flag


def _finish_bound_grad(op: Operand, full: Any, shared: Any) -> Any | None:
    if op.array is None:
        return None
    shape = op.array.shape
    if op.grad == "shared":
        return shared.reshape(shape)
    if op.grad == "reduce":
        axes = tuple(ax for ax in (0, 1) if op.shape2d[ax] == 1)
        full = full.sum(axis=axes, keepdims=True)
    return full.reshape(shape)


def _vjp(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    ybar: Any,
    etabar: Any,
    eta: Any = None,
    err: Any = None,
    split: SplitPlan | bool | None = None,
) -> tuple[Any, Any, Any, Any | None, Any | None]:
    cupy = _cupy()

    pr = _prepare(x, d, eps, p, lower, upper)
    B, n, xx = pr["B"], pr["n"], pr["x"]
    dt = xx.dtype
    lo, hi = pr["lo"], pr["hi"]
    if ybar is not None:
        ybar = cupy.ascontiguousarray(ybar, dtype=dt)
        if ybar.shape != xx.shape:
            raise _errors.ybar_rows_shape(xx.shape, ybar.shape)
    if etabar is not None:
        etabar = cupy.ascontiguousarray(cupy.broadcast_to(cupy.asarray(etabar, dtype=dt), (B,)))
    if eta is not None:
        eta = cupy.ascontiguousarray(cupy.asarray(eta, dtype=dt).reshape(B))

    xbar = cupy.empty((B, n), dtype=dt)
    dbar = cupy.empty((B, n), dtype=dt)
    epsbar = cupy.empty((B,), dtype=dt)
    lbar = cupy.empty((B, n), dtype=dt) if lo.grad in ("full", "reduce") else None
    ubar = cupy.empty((B, n), dtype=dt) if hi.grad in ("full", "reduce") else None
    lshared = cupy.empty((n,), dtype=dt) if lo.grad == "shared" else None
    ushared = cupy.empty((n,), dtype=dt) if hi.grad == "shared" else None
    need_info = lshared is not None or ushared is not None
    rows = _row_group(pr, split) if B > 0 and n > 0 else max(B, 1)
    groups = [(r0, min(B, r0 + rows)) for r0 in range(0, B, rows)]
    plans = [_split_plan(r1 - r0, n, split) if n > 0 else None for r0, r1 in groups]
    split_any = any(plan is not None for plan in plans)
    rowinfo = cupy.empty((B * ROWINFO,), dtype=cupy.float64) if need_info or split_any else None
    common = _common(pr)
    same = (lambda a: a), xx
    one = len(groups) == 1
    for (r0, r1), plan in zip(groups, plans):  # row groups whose x and d fit the L2 share

        def part(a: Any, width: int = 1, r0: int = r0, r1: int = r1) -> Any:
            """Rows r0:r1 of a per-row array (``None`` stays ``None``)."""
            return a if one or a is None else a[r0 * width : r1 * width]

        g = pr if one else _rows_of(pr, r0, r1)
        outs = (part(xbar), part(dbar), part(epsbar))
        info_g, eta_g = part(rowinfo, ROWINFO), part(eta)
        if plan is not None:
            # (without the forward's eta, or with p = inf as in clipresc_vjp, the split
            # backward solves the rows first)
            split_vjp(
                _launcher(pr["real"]), _scratch, _common(g), plan, r1 - r0,
                (part(ybar), part(etabar)), eta_g if pr["pm"] != 3 else None, outs,
                (part(lbar), part(ubar)), info_g, err, err is not None, xx,
            )  # fmt: skip
            continue
        get_kernel("clipresc_vjp", pr["real"])(
            (min(r1 - r0, _MAX_BLOCKS),),
            (BLOCK,),
            vjp_args(
                _common(g), outs, part(ybar), part(etabar), part(lbar), part(ubar), info_g,
                eta_g, err, err is not None, *same,
            ),
        )  # fmt: skip
    if B > 0:
        if need_info and n > 0:
            blocks = max(1, min((n + BLOCK - 1) // BLOCK, _MAX_BLOCKS))
            get_kernel("clipresc_bound_grad_shared", pr["real"])(
                (blocks,),
                (BLOCK,),
                bound_grad_args(common, ybar, rowinfo, lshared, ushared, *same),
            )
    else:
        for a in (lbar, ubar, lshared, ushared):
            if a is not None:
                a.fill(0)
    return (
        xbar,
        dbar,
        epsbar,
        _finish_bound_grad(lo, lbar, lshared),
        _finish_bound_grad(hi, ubar, ushared),
    )


def perturb_vjp_rows(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    ybar: Any,
    eta: Any = None,
    err: Any = None,
    split: SplitPlan | bool | None = None,
) -> tuple[Any, Any, Any, Any | None, Any | None]:
    """Closed-form VJP of ``perturb`` for the cotangent ``ybar`` of ``y`` (shape ``(B, n)``).

    ``eta`` is the forward's ``(B,)`` scales: given, the kernel solves nothing (it reads
    the saturated set at that ``eta``); ``None``, it solves each row once first. ``err``
    as in :func:`forward_rows` (all bits but the unreachable one); ``split`` too (without
    ``eta``, or with p = inf, the split backward solves the rows with the split kernels
    first).
    Returns ``(xbar, deltabar, epsbar, lbar, ubar)``: ``epsbar`` has shape ``(B,)``;
    ``lbar`` / ``ubar`` have the shape of the array bound they belong to, or are ``None``
    for scalar / missing bounds.
    """
    return _vjp(x, d, eps, p, lower, upper, ybar, None, eta, err, split)


def scale_vjp_rows(
    x: Any,
    d: Any,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    etabar: Any,
    eta: Any = None,
    err: Any = None,
    split: SplitPlan | bool | None = None,
) -> tuple[Any, Any, Any, Any | None, Any | None]:
    """Closed-form VJP of ``scale`` for the cotangent ``etabar`` of ``eta`` (shape ``(B,)``).

    ``eta``, ``err`` and the result as :func:`perturb_vjp_rows`.
    """
    return _vjp(x, d, eps, p, lower, upper, None, etabar, eta, err, split)
