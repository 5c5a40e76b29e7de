"""GPU kernel sources (package data) and the host-side helpers shared by the GPU backends.

``clipresc.cu`` is written in the portable dialect of ``dialect.h``: the same text builds
as CUDA with NVRTC (CuPy backend) and as OpenCL C (OpenCL backend, ``-DCLIPRESC_OPENCL``).
Nothing here imports an array library; the helpers only look at shapes and Python scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .. import _errors

__all__ = [
    "BLOCK",
    "DEFAULT_L2_BYTES",
    "ERR_BITS",
    "KERNEL_NAMES",
    "L2_FRACTION",
    "ROWINFO",
    "SPLIT_KERNELS",
    "Operand",
    "SplitPlan",
    "bound_grad_args",
    "bound_operand",
    "build_defines",
    "eps_operand",
    "kernel_source",
    "norm_mode",
    "optional",
    "real_name",
    "row_group",
    "split_forward",
    "split_plan",
    "split_vjp",
    "vjp_args",
]

#: Threads per block (work-items per work-group) the kernels are built and launched with.
BLOCK = 256
#: Doubles per row in the rowinfo scratch written by ``clipresc_vjp``.
ROWINFO = 6
#: The kernels that spread long rows over many blocks (see :func:`split_forward`).
SPLIT_KERNELS = (
    "clipresc_split_start",
    "clipresc_split_pass",
    "clipresc_split_step",
    "clipresc_split_finish",
    "clipresc_split_apply",
    "clipresc_split_vjp_sums",
    "clipresc_split_vjp_coeffs",
    "clipresc_split_vjp_apply",
)
#: Every kernel defined in ``clipresc.cu``.
KERNEL_NAMES = ("clipresc_forward", "clipresc_vjp", "clipresc_bound_grad_shared", *SPLIT_KERNELS)

#: Bits of the error word the kernels OR into when asked to check (``CR_ERR_*`` in
#: ``clipresc.cu``), in the order the NumPy path checks (the host reruns the exact checks
#: for the message when the word is not 0).
ERR_BITS = {
    "eps negative or NaN": 1,
    "eps infinite": 2,
    "lower NaN": 4,
    "upper NaN": 8,
    "lower > upper": 16,
    "x non-finite": 32,
    "delta non-finite": 64,
    "x outside bounds": 128,
    "unreachable": 256,
}

_INCLUDE = '#include "dialect.h"'


def kernel_source() -> str:
    """The kernel source with ``dialect.h`` inlined (ready for NVRTC or an OpenCL build)."""
    pkg = resources.files(__name__)
    header = pkg.joinpath("dialect.h").read_text(encoding="utf-8")
    body = pkg.joinpath("clipresc.cu").read_text(encoding="utf-8")
    if _INCLUDE not in body:  # pragma: no cover - guards against editing mistakes
        raise _errors.kernel_source_broken()
    return body.replace(_INCLUDE, header, 1)


def real_name(itemsize: int) -> str:
    """C name of the element type for a float array with this item size (4 or 8)."""
    if itemsize == 4:
        return "float"
    if itemsize == 8:
        return "double"
    raise _errors.kernel_itemsize(itemsize)


def build_defines(real: str, *, opencl: bool = False, block: int = BLOCK) -> tuple[str, ...]:
    """Preprocessor options selecting the element type, block size and dialect."""
    opts = [f"-DREAL={real}", f"-DCLIPRESC_BLOCK={block}"]
    if opencl:
        opts.append("-DCLIPRESC_OPENCL")
    return tuple(opts)


def norm_mode(p: float) -> tuple[float, int]:
    """``(p, pm)`` for the kernels: pm is 1 or 2 for the fast paths, 3 for inf, else 0."""
    p = float(p)
    if math.isnan(p) or p <= 0.0:
        raise _errors.p_not_positive(p)
    if math.isinf(p):
        return 0.0, 3
    if p == 1.0:
        return p, 1
    if p == 2.0:
        return p, 2
    return p, 0


@dataclass(frozen=True)
class Operand:
    """A kernel operand that is a scalar or an array broadcast to ``(B, n)`` (or ``(B,)``).

    ``array`` is ``None`` for a scalar (``value`` is then used). Otherwise it is the
    C-contiguous array itself and ``rs`` / ``es`` are its row / element strides in
    elements (0 along a broadcast axis). ``grad`` says how its cotangent is produced:
    ``"none"`` (scalar), ``"full"`` (written per element by ``clipresc_vjp``),
    ``"shared"`` (one value per column, ``clipresc_bound_grad_shared``) or ``"reduce"``
    (computed per element, then summed over the broadcast axes by the host library).
    """

    array: Any
    value: float
    rs: int
    es: int
    grad: str
    shape2d: tuple[int, int]


def bound_operand(bound: Any, B: int, n: int, *, default: float, name: str) -> Operand:
    """Describe one side of the box. ``bound`` is ``None``, a real scalar or an array
    (anything with ``shape``; the caller makes it C-contiguous of the right dtype) whose
    shape broadcasts to ``(B, n)`` with at most two dimensions."""
    if bound is None:
        return Operand(None, default, 0, 0, "none", (1, 1))
    shape = getattr(bound, "shape", None)
    if shape is None:
        return Operand(None, float(bound), 0, 0, "none", (1, 1))
    shape = tuple(int(s) for s in shape)
    if len(shape) > 2:
        raise _errors.bound_shape(name, shape, (B, n))
    s2 = (1,) * (2 - len(shape)) + shape
    if s2[0] not in (1, B) or s2[1] not in (1, n):
        raise _errors.bound_shape(name, shape, (B, n))
    rs = s2[1] if s2[0] > 1 else 0
    es = 1 if s2[1] > 1 else 0
    if s2[1] == n and s2[0] == B:
        grad = "full"
    elif s2[1] == n and n > 1:
        grad = "shared"
    else:
        grad = "reduce"
    return Operand(bound, 0.0, rs, es, grad, (s2[0], s2[1]))


def eps_operand(eps: Any, B: int) -> Operand:
    """Describe ``eps``: a real scalar, or an array of 1 or ``B`` float64 values."""
    shape = getattr(eps, "shape", None)
    if shape is None:
        return Operand(None, float(eps), 0, 0, "none", (1, 1))
    size = math.prod(int(s) for s in shape)
    if size not in (1, B):
        raise _errors.eps_shape(B, tuple(shape))
    return Operand(eps, 0.0, 0, 1 if size > 1 else 0, "none", (size, 1))


# --------------------------------------------------------------------------- launch arguments


def optional(a: Any, buf: Any, dummy: Any) -> tuple[Any, Any]:
    """An optional kernel operand as ``(buffer, flag)``: ``buf(a)`` and 1, or ``dummy`` and 0
    when ``a`` is ``None`` (the kernel then neither reads nor writes it).

    >>> optional(None, id, "dummy")
    ('dummy', np.int32(0))
    """
    import numpy as np

    return (dummy, np.int32(0)) if a is None else (buf(a), np.int32(1))


def vjp_args(
    common: tuple[Any, ...],
    out: tuple[Any, Any, Any],
    ybar: Any,
    etabar: Any,
    lbar: Any,
    ubar: Any,
    rowinfo: Any,
    eta: Any,
    err: Any,
    check: bool,
    buf: Any,
    dummy: Any,
) -> tuple[Any, ...]:
    """The arguments of ``clipresc_vjp`` after the launch geometry: the operands common to
    every kernel, the cotangents given (``ybar`` or ``etabar``), ``out`` = ``(xbar, dbar,
    epsbar)``, the optional outputs (full bound cotangents, the shared pass's ``rowinfo``),
    the forward's ``eta`` when known (the kernel then does not solve), and the error word
    ``err`` with whether the kernel checks the values (``check``). ``buf`` turns an array
    into what the launcher takes (CuPy: the array, OpenCL: its buffer); ``dummy`` stands for
    a missing operand."""
    import numpy as np

    return (
        *common,
        *optional(ybar, buf, dummy),
        *optional(etabar, buf, dummy),
        *(buf(a) for a in out),
        *optional(lbar, buf, dummy),
        *optional(ubar, buf, dummy),
        *optional(rowinfo, buf, dummy),
        *optional(eta, buf, dummy),
        dummy if err is None else buf(err),
        np.int32(check),
    )


def bound_grad_args(
    common: tuple[Any, ...],
    ybar: Any,
    rowinfo: Any,
    lshared: Any,
    ushared: Any,
    buf: Any,
    dummy: Any,
) -> tuple[Any, ...]:
    """The arguments of ``clipresc_bound_grad_shared`` after the launch geometry (as in
    :func:`vjp_args`): the shared ``(n,)`` bound cotangents from ``clipresc_vjp``'s
    ``rowinfo``."""
    return (
        *common,
        *optional(ybar, buf, dummy),
        buf(rowinfo),
        *optional(lshared, buf, dummy),
        *optional(ushared, buf, dummy),
    )


# --------------------------------------------------------------------------- rows over many blocks

#: Scratch sizes of the split kernels (``CR_*_BYTES`` and ``CR_CAND`` in ``clipresc.cu``,
#: which checks them at compile time).
_STATE_BYTES, _PART_BYTES, _CAND_BYTES, _CAND = 512, 72, 16, 512
#: Shortest segment of a split row: the histogram a segment writes and the step reads
#: (8 KiB) stays a few percent of the segment's own bytes.
SPLIT_MIN_SEGMENT = 32768
#: (pass, step) rounds launched before the one-block finish: typical data needs 2 (3 for
#: very long rows), the tests' adversarial input 3 to 4.
SPLIT_ROUNDS = 4


@dataclass(frozen=True)
class SplitPlan:
    """``groups`` segments of ``seg`` elements per row (``seg`` a multiple of
    :data:`BLOCK`; the last segment may be shorter)."""

    groups: int
    seg: int


def split_plan(B: int, n: int, blocks: int) -> SplitPlan | None:
    """How to spread rows over blocks so that about ``blocks`` are busy (the device's
    multiprocessors times the blocks each holds), or ``None`` when one block per row
    already fills that many or the rows are too short to cut.

    >>> split_plan(1, 10_000_000, 528)
    SplitPlan(groups=303, seg=33024)
    >>> split_plan(64, 150528, 528)
    SplitPlan(groups=4, seg=37632)
    >>> split_plan(1024, 3072, 528) is None
    True
    """
    if B <= 0 or B >= blocks or n < 2 * SPLIT_MIN_SEGMENT:
        return None
    groups = min(-(-blocks // B), n // SPLIT_MIN_SEGMENT)
    if groups < 2:
        return None
    per_group = -(-n // groups)
    seg = -(-per_group // BLOCK) * BLOCK
    return SplitPlan(-(-n // seg), seg)


#: Share of the device's L2 cache that the ``x`` and ``d`` of the rows one launch keeps in
#: flight may fill: the rest is for the outputs, bounds and other streams' data.
L2_FRACTION = 0.5
#: L2 size assumed when the device does not report one (bytes): A100's 40 MiB; H100 has
#: 50 MiB, H200 60 MiB, so the default is on the safe side for the GPUs the plan targets.
DEFAULT_L2_BYTES = 40 * 2**20


def row_group(B: int, n: int, itemsize: int, blocks: int, l2_bytes: int) -> int:
    """Rows per launch so that a row's later passes find its ``x`` and ``d`` in L2.

    A launch keeps ``min(B, blocks)`` rows in flight (one block per row), or all ``B``
    rows when the rows are split (every pass streams the whole batch before the next).
    When those rows' ``x`` and ``d`` exceed :data:`L2_FRACTION` of ``l2_bytes``, the
    batch runs in groups of rows that fit (at least one row; each group launched, and so
    split, on its own), else in one launch (``B``).

    >>> row_group(64, 150528, 4, 528, 50 * 2**20)  # 64 x 3x224x224 f32 on an H100
    21
    >>> row_group(1024, 3072, 4, 528, 50 * 2**20)  # short rows: one launch
    1024
    >>> row_group(1, 10_000_000, 4, 528, 50 * 2**20)  # one row: nothing to group
    1
    """
    row_bytes = 2 * n * itemsize
    budget = int(L2_FRACTION * l2_bytes)
    in_flight = B if split_plan(B, n, blocks) is not None else min(B, blocks)
    if B <= 1 or in_flight * row_bytes <= budget:
        return max(B, 0)
    return max(1, min(B, budget // max(row_bytes, 1)))


def split_forward(
    launch: Any,
    scratch: Any,
    common: tuple[Any, ...],
    plan: SplitPlan,
    B: int,
    eta: Any,
    flag: Any,
    y: Any,
    passes: Any,
    err: Any,
    check: bool,
    dummy: Any,
    extra: tuple[Any, ...] = (),
) -> None:
    """Launch the split forward: the fixed sequence of ``clipresc_split_*`` kernels (no
    host synchronisation; rounds over rows already solved return at once).

    ``launch(name, groups, *args)`` launches a kernel with ``groups`` blocks of
    :data:`BLOCK` threads on the caller's queue / stream; ``scratch(nbytes, zero)``
    returns a device buffer (zeroed when ``zero``), as the launcher takes it. ``common``
    are the operands every kernel starts with; ``eta`` / ``flag`` / ``passes`` / ``y`` the
    outputs (``None``: not wanted, ``eta`` and ``flag`` always), ``err`` the error word
    (``None``: no check). ``extra`` is appended to every launch (the traffic counters).
    """
    import numpy as np

    states = _split_solve(
        launch, scratch, common, plan, B, (eta, flag, passes), err, check, True, dummy, extra
    )
    if y is not None:
        G, S = np.int64(plan.groups), np.int64(plan.seg)
        launch("clipresc_split_apply", B * plan.groups, *common, states, G, S, y, *extra)


def _split_solve(
    launch: Any,
    scratch: Any,
    common: tuple[Any, ...],
    plan: SplitPlan,
    B: int,
    outs: tuple[Any, Any, Any],
    err: Any,
    check: bool,
    row_checks: bool,
    dummy: Any,
    extra: tuple[Any, ...],
) -> Any:
    """The split solve (arguments as in :func:`split_forward`; ``outs`` is ``(eta, flag,
    passes)``, ``passes`` may be ``None``): returns the buffer of the rows' final states,
    which :func:`split_vjp` and ``clipresc_split_apply`` read. ``check`` validates the
    elements in the first pass; ``row_checks`` adds each row's eps and unreachable bits
    (the forward's, not the backward's)."""
    import numpy as np

    g, seg = plan.groups, plan.seg
    eta, flag, passes = outs
    states = scratch(B * _STATE_BYTES, False)
    parts = scratch(B * g * _PART_BYTES, False)
    hists = scratch(B * g * 4 * BLOCK * 8, False)
    cands = scratch(B * g * _CAND * _CAND_BYTES, False)
    ncand = scratch(B * g * 4, False)
    G, S = np.int64(g), np.int64(seg)
    err_arg = dummy if err is None else err
    on = np.int32(check and err is not None)
    launch("clipresc_split_start", B, *common, states, *extra)
    for _ in range(SPLIT_ROUNDS):
        launch(
            "clipresc_split_pass", B * g, *common, states, parts, hists, cands, ncand, G, S,
            err_arg, on, *extra,
        )  # fmt: skip
        launch("clipresc_split_step", B, *common, states, parts, hists, cands, ncand, G, *extra)
    launch(
        "clipresc_split_finish", B, *common, states, eta, flag,
        dummy if passes is None else passes, np.int32(passes is not None), err_arg, on,
        np.int32(row_checks and bool(on)), *extra,
    )  # fmt: skip
    return states


def split_vjp(
    launch: Any,
    scratch: Any,
    common: tuple[Any, ...],
    plan: SplitPlan,
    B: int,
    cot: tuple[Any, Any],
    eta: Any,
    out: tuple[Any, Any, Any],
    bounds: tuple[Any, Any],
    rowinfo: Any,
    err: Any,
    check: bool,
    dummy: Any,
    extra: tuple[Any, ...] = (),
) -> None:
    """Launch the split backward: the sums over each segment, the per-row coefficients
    (written to ``rowinfo``, ``B x ROWINFO`` float64, as ``clipresc_vjp`` writes them for
    ``clipresc_bound_grad_shared``), the cotangents.

    ``eta`` is the forward's ``(B,)`` scales (finite p; the sums pass recovers the
    breakpoint index at it), or ``None``: the rows are solved first with the split
    solve, whose final states (eta in float64, breakpoint index, unreachable flag) the
    backward then reads, as the one-block ``clipresc_vjp`` does after its own solve. The
    backends pass ``None`` for p = inf, where the solve is one or two arg-max passes.
    ``cot`` is ``(ybar, etabar)`` (either may be ``None``), ``out`` is ``(xbar, dbar,
    epsbar)``, ``bounds`` the full ``(B, n)`` bound cotangents ``(lbar, ubar)`` or
    ``None``; the rest as in :func:`split_forward` (``check``: the element and eps bits,
    never the unreachable one).
    """
    import numpy as np

    g, seg = plan.groups, plan.seg
    check = check and err is not None
    states = dummy
    if eta is None:
        # (the solve checks the elements in its first pass: the sums pass need not)
        outs = (scratch(B * 8, False), scratch(B, False), None)
        states = _split_solve(
            launch, scratch, common, plan, B, outs, err, check, False, dummy, extra
        )
    parts = scratch(B * g * _PART_BYTES, False)
    G, S = np.int64(g), np.int64(seg)
    ybar, etabar = cot
    xbar, dbar, epsbar = out
    lbar, ubar = bounds
    yb = (dummy if ybar is None else ybar, np.int32(ybar is not None))
    err_arg = dummy if err is None else err
    solved = (dummy if eta is None else eta, states, np.int32(eta is None))
    launch(
        "clipresc_split_vjp_sums", B * g, *common, *yb, *solved, parts, G, S, err_arg,
        np.int32(check and eta is not None), *extra,
    )  # fmt: skip
    launch(
        "clipresc_split_vjp_coeffs", B, *common, dummy if etabar is None else etabar,
        np.int32(etabar is not None), *solved, parts, G, rowinfo, epsbar, err_arg,
        np.int32(check), *extra,
    )  # fmt: skip
    launch(
        "clipresc_split_vjp_apply", B * g, *common, *yb, rowinfo, G, S, xbar, dbar,
        dummy if lbar is None else lbar, np.int32(lbar is not None),
        dummy if ubar is None else ubar, np.int32(ubar is not None), *extra,
    )  # fmt: skip
