"""Global-memory traffic of the GPU kernels per element, counted in an instrumented build.

    .venv/bin/python benches/bench_traffic.py [--full] [--json OUT]

The kernels are built as OpenCL C with ``-DCLIPRESC_COUNT_TRAFFIC`` (see
``kernels/dialect.h``): each block adds the bytes its row loops read and write, so the
count follows the kernels' real control flow (passes made on this data) and is the same on
any device. It runs on the OpenCL CPU device the tests use (PoCL). Reported per element of
x: bytes read, written and in total, for ``perturb`` (forward solve + fused apply),
``scale`` (solve only) and the backward given the forward's eta, against a counted
``x + d`` kernel of the same arrays (2 loads and 1 store per element).

Workloads, scaled down in the batch (the count per element depends on the rows, not on
their number): 64x3x224x224 as 4 rows of 150528, 1024x3x32x32 as 64 rows of 3072 (``--full``:
16 and 1024 rows), and one long row spread over many blocks as the CuPy backend would on a
132-multiprocessor GPU (the split kernels, their scratch included; 2 x 10^6 elements,
``--full``: 10^7; the backward split too), float32, bounds (0, 1); p in
{1, 2, inf}; typical data (x uniform,
delta normal, eps a third of the largest reachable size) and, for p in {1, 2}, the
adversarial chain of ``tests/support/gpu_cases.py`` (plain Newton fixes one element per pass)
padded to the row length. Targets (issue 19): perturb <= 2.5x the bytes of ``x + d`` for
p in {1, 2} on typical data, <= 6x on the adversarial input; printed as PASS / MISS. A
benchmark reports; it never fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' support package
sys.path.insert(0, str(ROOT / "benches"))

from _timing import cpu_model  # noqa: E402

PS = (1.0, 2.0, math.inf)
TYPICAL_TARGET = 2.5
ADVERSARIAL_TARGET = 6.0

_XPD = """
__kernel void xpd(__global const REAL* x, __global const REAL* d, __global REAL* y, long N,
                  __global long* cr_traffic) {
    long i = get_global_id(0);
    if (i < N) y[i] = x[i] + d[i];
    if (get_local_id(0) == 0) {
        long first = (long)get_group_id(0) * get_local_size(0);
        long cnt = N - first < (long)get_local_size(0) ? N - first : (long)get_local_size(0);
        cr_traffic[2 * get_group_id(0)] += 2 * cnt * sizeof(REAL);
        cr_traffic[2 * get_group_id(0) + 1] += cnt * sizeof(REAL);
    }
}
"""


class Counter:
    """The counting build of the kernels on one queue, and launches that return bytes."""

    def __init__(self, queue: Any, real: str = "float") -> None:
        import pyopencl as cl

        from clipresc.kernels import KERNEL_NAMES, build_defines, kernel_source

        self.queue = queue
        opts = [*build_defines(real, opencl=True), "-DCLIPRESC_COUNT_TRAFFIC"]
        platforms = " ".join(d.platform.name for d in queue.context.devices)
        if "Portable Computing Language" in platforms or "Oclgrind" in platforms:
            opts.append("-cl-opt-disable")  # as the backend builds it there
        prg = cl.Program(queue.context, kernel_source()).build(options=opts)
        self.k = {name: cl.Kernel(prg, name) for name in KERNEL_NAMES}
        self.prg = prg
        xpd = cl.Program(queue.context, _XPD).build(options=[f"-DREAL={real}"])
        self.xpd = cl.Kernel(xpd, "xpd")

    def _traffic(self, groups: int) -> Any:
        import pyopencl.array as cla

        return cla.zeros(self.queue, (2 * groups,), np.int64)

    @staticmethod
    def _sum(tr: Any) -> tuple[int, int]:
        t = tr.get().reshape(-1, 2)
        return int(t[:, 0].sum()), int(t[:, 1].sum())

    def x_plus_d(self, x: np.ndarray, d: np.ndarray) -> tuple[int, int]:
        import pyopencl.array as cla

        q = self.queue
        xd, dd = cla.to_device(q, x.ravel()), cla.to_device(q, d.ravel())
        y = cla.empty_like(xd)
        block = 256
        groups = (x.size + block - 1) // block
        tr = self._traffic(groups)
        self.xpd(
            q, (groups * block,), (block,), xd.data, dd.data, y.data, np.int64(x.size), tr.data
        )
        return self._sum(tr)

    def forward(
        self, x: np.ndarray, d: np.ndarray, eps: Any, p: float, want_y: bool
    ) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Bytes (read, written), eta and the passes per row."""
        import pyopencl.array as cla

        from clipresc.backends import opencl_backend as ob
        from clipresc.kernels import BLOCK

        q = self.queue
        pr = ob._prepare(x, d, eps, p, 0.0, 1.0)
        dev = ob._Device(q, pr)
        groups = ob._row_groups(pr.B)
        eta = cla.empty(q, (pr.B,), pr.x.dtype)
        flag = cla.empty(q, (pr.B,), np.uint8)
        y = cla.empty(q, (pr.B, pr.n), pr.x.dtype)
        passes = cla.empty(q, (pr.B,), np.int32)
        tr = self._traffic(groups)
        self.k["clipresc_forward"](
            q, (groups * BLOCK,), (BLOCK,), *dev.common(), eta.data, flag.data, y.data,
            np.int32(want_y), passes.data, np.int32(1), dev.dummy, np.int32(0), tr.data,
        )  # fmt: skip
        rd, wr = self._sum(tr)
        return rd, wr - 4 * pr.B, eta.get(), passes.get()  # (the passes output: not counted)

    def split_forward(
        self, x: np.ndarray, d: np.ndarray, eps: Any, p: float, want_y: bool, plan: Any
    ) -> tuple[int, int, np.ndarray, np.ndarray]:
        """As :meth:`forward`, with each row spread over ``plan.groups`` blocks (the
        split kernels' scratch traffic included)."""
        import pyopencl.array as cla

        from clipresc.backends import opencl_backend as ob

        q = self.queue
        pr = ob._prepare(x, d, eps, p, 0.0, 1.0)
        dev = ob._Device(q, pr)
        eta = cla.empty(q, (pr.B,), pr.x.dtype)
        flag = cla.empty(q, (pr.B,), np.uint8)
        y = cla.empty(q, (pr.B, pr.n), pr.x.dtype) if want_y else None
        passes = cla.empty(q, (pr.B,), np.int32)
        tr = self._traffic(pr.B * plan.groups)
        ob._split_forward(
            q, dev, plan, eta, flag, y, passes, dev.dummy, False, (tr.data,), self.k
        )  # fmt: skip
        rd, wr = self._sum(tr)
        return rd, wr - 4 * pr.B, eta.get(), passes.get()  # (the passes output: not counted)

    def split_vjp(
        self, x: np.ndarray, d: np.ndarray, eps: Any, p: float, eta: Any, plan: Any
    ) -> tuple[int, int]:
        """As :meth:`vjp`, with each row spread over ``plan.groups`` blocks (``eta``
        ``None``: the split solve first, as for p = inf)."""
        import pyopencl.array as cla

        from clipresc.backends import opencl_backend as ob
        from clipresc.kernels import BLOCK, ROWINFO, split_vjp

        q = self.queue
        pr = ob._prepare(x, d, eps, p, 0.0, 1.0)
        dev = ob._Device(q, pr)
        ybar = cla.to_device(q, np.ones_like(pr.x))
        eta_d = None if eta is None else cla.to_device(q, np.asarray(eta, pr.x.dtype)).data
        xbar, dbar = cla.empty_like(ybar), cla.empty_like(ybar)
        epsbar = cla.empty(q, (pr.B,), pr.x.dtype)
        rowinfo = cla.empty(q, (pr.B * ROWINFO,), np.float64)
        tr = self._traffic(pr.B * plan.groups)

        def launch(name: str, groups: int, *args: Any) -> None:
            self.k[name](q, (groups * BLOCK,), (BLOCK,), *args)

        split_vjp(
            launch, ob._scratcher(q), dev.common(), plan, pr.B, (ybar.data, None), eta_d,
            (xbar.data, dbar.data, epsbar.data), (None, None), rowinfo.data, None, False,
            dev.dummy, (tr.data,),
        )  # fmt: skip
        rd, wr = self._sum(tr)
        return rd, wr - 8 * ROWINFO * pr.B  # (the rowinfo scratch: counted as the parts are)

    def vjp(
        self, x: np.ndarray, d: np.ndarray, eps: Any, p: float, eta: np.ndarray
    ) -> tuple[int, int]:
        import pyopencl.array as cla

        from clipresc.backends import opencl_backend as ob
        from clipresc.kernels import BLOCK

        q = self.queue
        pr = ob._prepare(x, d, eps, p, 0.0, 1.0)
        dev = ob._Device(q, pr)
        groups = ob._row_groups(pr.B)
        ybar = cla.to_device(q, np.ones_like(pr.x))
        eta_d = cla.to_device(q, np.asarray(eta, pr.x.dtype))
        xbar, dbar = cla.empty_like(ybar), cla.empty_like(ybar)
        epsbar = cla.empty(q, (pr.B,), pr.x.dtype)
        tr = self._traffic(groups)
        self.k["clipresc_vjp"](
            q, (groups * BLOCK,), (BLOCK,), *dev.common(), ybar.data, np.int32(1), dev.dummy,
            np.int32(0), xbar.data, dbar.data, epsbar.data, dev.dummy, np.int32(0), dev.dummy,
            np.int32(0), dev.dummy, np.int32(0), eta_d.data, np.int32(1), dev.dummy,
            np.int32(0), tr.data,
        )  # fmt: skip
        return self._sum(tr)


def typical(rows: int, n: int, p: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, n), dtype=np.float32)
    d = rng.standard_normal((rows, n), dtype=np.float32)
    s = np.where(d > 0, 1.0 - x, x).astype(np.float64)
    top = s.max(axis=1) if math.isinf(p) else (s**p).sum(axis=1) ** (1.0 / p)
    return x, d, top / 3.0


def adversarial(rows: int, n: int, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from support.gpu_cases import adversarial_row

    x1, d1, eps, _, _, _ = adversarial_row(p, K=40, n_background=max(n - 40, 1))
    x = np.tile(x1[:n].astype(np.float32), (rows, 1))
    d = np.tile(d1[:n].astype(np.float32), (rows, 1))
    return x, d, np.full(rows, eps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="more rows (same per-element counts)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    try:
        from clipresc.backends import opencl_backend as ob

        queue = ob.default_queue()
    except Exception as exc:
        print(f"bench_traffic: no OpenCL device ({type(exc).__name__}: {exc}); nothing to count")
        return 0
    from clipresc.kernels import split_plan

    counter = Counter(queue)
    shapes = (
        ("64x3x224x224", 16 if args.full else 4, 3 * 224 * 224),
        ("1024x3x32x32", 1024 if args.full else 64, 3 * 32 * 32),
        # one long row over many blocks, cut as on a 132-SM GPU (4 blocks per SM)
        ("1x10^7 split", 1, 10**7 if args.full else 2 * 10**6),
    )
    print("clipresc bench_traffic: global-memory bytes per element, counted (OpenCL build)")
    print(f"  device: {ob.default_device_description()}; host {cpu_model()}")
    print(f"  {'workload':14s} {'data':11s} {'p':>3s} {'kernel':9s} {'read':>6s} {'write':>6s}"
          f" {'total':>6s} {'x x+d':>6s} {'passes':>6s}")  # fmt: skip
    rows_out: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for name, rows, n in shapes:
        for p in PS:
            kinds = ("typical", "adversarial") if not math.isinf(p) else ("typical",)
            for kind in kinds:
                if kind == "typical":
                    x, d, eps = typical(rows, n, p, seed=rows + n)
                else:
                    x, d, eps = adversarial(rows, n, p)
                el = x.size
                base = sum(counter.x_plus_d(x, d)) / el
                res: dict[str, tuple[int, int]] = {}
                plan = split_plan(rows, n, 4 * 132) if "split" in name else None
                if plan is not None:
                    rd, wr, eta, passes = counter.split_forward(x, d, eps, p, True, plan)
                    res["perturb"] = (rd, wr)
                    rd, wr, _, _ = counter.split_forward(x, d, eps, p, False, plan)
                    res["scale"] = (rd, wr)
                else:
                    rd, wr, eta, passes = counter.forward(x, d, eps, p, want_y=True)
                    res["perturb"] = (rd, wr)
                    rd, wr, _, _ = counter.forward(x, d, eps, p, want_y=False)
                    res["scale"] = (rd, wr)
                if plan is not None:
                    # (p = inf: the split backward solves, as the one-block kernel does)
                    eta_in = None if math.isinf(p) else eta
                    res["vjp"] = counter.split_vjp(x, d, eps, p, eta_in, plan)
                else:
                    res["vjp"] = counter.vjp(x, d, eps, p, eta)
                for kern, (rd, wr) in res.items():
                    tot = (rd + wr) / el
                    row = {
                        "workload": name, "rows": rows, "n": n, "data": kind,
                        "p": "inf" if math.isinf(p) else p, "kernel": kern,
                        "read_per_el": rd / el, "write_per_el": wr / el, "total_per_el": tot,
                        "x_plus_d_per_el": base, "ratio": tot / base,
                        "passes_mean": float(passes.mean()),
                    }  # fmt: skip
                    rows_out.append(row)
                    print(
                        f"  {name:14s} {kind:11s} {row['p']!s:>3s} {kern:9s} {rd / el:6.1f} "
                        f"{wr / el:6.1f} {tot:6.1f} {tot / base:6.2f} {passes.mean():6.1f}"
                    )
                    if kern == "perturb" and not math.isinf(p):
                        lim = TYPICAL_TARGET if kind == "typical" else ADVERSARIAL_TARGET
                        targets.append({
                            "target": f"perturb {name} p={p:g} {kind} <= {lim}x x+d bytes",
                            "value": tot / base,
                            "status": "PASS" if tot / base <= lim else "MISS",
                        })  # fmt: skip
    print("\n  x + d: 2 loads + 1 store per element (12 B in float32), counted the same way")
    print("\ntargets")
    for t in targets:
        print(f"  {t['status']:4s}  {t['target']:55s} {t['value']:.2f}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"results": rows_out, "targets": targets}, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYOPENCL_NO_CACHE", "1")
    sys.exit(main())
