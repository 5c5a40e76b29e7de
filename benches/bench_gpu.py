"""GPU benchmark: the CuPy kernels against a plain CuPy ``x + d`` and against the Rust core.

Run from the repository root on a machine with a CUDA device and CuPy:

    .venv/bin/python benches/bench_gpu.py [--quick] [--json OUT] [--workload SUBSTR]

Without CuPy or without a CUDA device it says so and exits 0 at once.

For each workload (the core's 64x3x224x224 f32, 1024x3x32x32 f32, 4096x784 f64 with the
same eps as ``bench_core.py``; also 128x3x32x32 f32 and one vector of 10^7 f32; bounds
(0, 1)) and p in {1, 2, inf} it times, on (B, n) device arrays:

1. the floor: a plain CuPy elementwise ``x + d`` of the same arrays (allocates its
   output, like ``perturb``), measured before and after the workload; the smaller median
   is used,
2. ``cupy_backend.perturb_rows`` (fused solve and apply), ``cupy_backend.scale_rows`` and
   the backward ``cupy_backend.perturb_vjp_rows`` given the forward's eta,
3. the public ``clipresc.perturb`` / ``clipresc.scale`` on the CuPy arrays in their
   original shape, when they accept CuPy arrays (otherwise the row says why not),
4. the same ``clipresc.perturb`` / ``clipresc.scale`` on NumPy arrays (the Rust core on
   the CPU), and the CPU floor ``np.add(x, d, out=o)``.

GPU work is timed with CUDA events recorded on the current stream around each call (the
"device ms" column; median of adaptive repeats after warm-up, see ``_timing.py``); the
wall time of the same calls, which ends with a synchronisation of the end event, is shown
beside it. Ratios are against the CuPy floor's device time. A short accuracy check
compares the GPU results with the Rust core. The targets block checks perturb <= 1.5x
the CuPy floor at 64x3x224x224 f32 (PASS/MISS). A benchmark reports; it never fails:
the exit code is 0 unless the arguments are wrong.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import _report
import _support  # noqa: F401  (tests/ on sys.path)
from _timing import Timing, fmt, log, measure, p_label
from support.workloads import WORKLOADS, Workload, image_and_noise

PS = (1.0, 2.0, math.inf)
BOUNDS = (0.0, 1.0)
TARGET_WORKLOAD = "64x3x224x224 f32"
TARGET_RATIO = 1.5


GPU_WORKLOADS = (
    *WORKLOADS,
    Workload("128x3x32x32 f32", (128, 3, 32, 32), np.float32, 10.0),
    Workload("1x10^7 f32", (1, 10_000_000), np.float32, 400.0, image=False),
)
"""The core benchmark's workloads, a small training batch and one long vector."""


@dataclass(frozen=True)
class Settings:
    budget_s: float
    min_repeats: int
    max_repeats: int
    warmup: int


QUICK = Settings(0.3, 5, 200, 2)
FULL = Settings(1.5, 10, 2000, 3)


def find_cuda() -> tuple[Any, str]:
    """``(cupy, description)`` when a CUDA device is usable, else ``(None, reason)``."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, no device
        return None, f"no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "no CUDA device (getDeviceCount() == 0)"
    try:
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        desc = f"device {dev.id}: {name}, compute capability {dev.compute_capability}"
    except Exception as exc:
        return None, f"CUDA device not usable ({type(exc).__name__}: {exc})"
    return cupy, desc


class Bench:
    def __init__(self, settings: Settings, cupy: Any, clipresc: Any, backend: Any) -> None:
        self.s = settings
        self.cupy = cupy
        self.clipresc = clipresc
        self.cb = backend
        self.rows: list[dict[str, Any]] = []
        self.accuracy: list[dict[str, Any]] = []
        self.count = 0

    # -- timing ------------------------------------------------------------------------
    def gpu_time(self, fn: Callable[[], object]) -> tuple[Timing, float]:
        """Wall timing of ``fn`` (ending with the end event's synchronisation) and the
        median device time between CUDA events recorded around it."""
        cupy = self.cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        device_s: list[float] = []

        def call() -> None:
            start.record()
            fn()
            end.record()
            end.synchronize()
            device_s.append(cupy.cuda.get_elapsed_time(start, end) * 1e-3)

        cupy.cuda.Device().synchronize()
        wall = measure(
            call,
            warmup=self.s.warmup,
            min_repeats=self.s.min_repeats,
            max_repeats=self.s.max_repeats,
            budget_s=self.s.budget_s,
        )
        timed = device_s[self.s.warmup :]
        return wall, float(np.median(timed))

    def cpu_time(self, fn: Callable[[], object]) -> Timing:
        return measure(
            fn,
            warmup=1,
            min_repeats=3,
            max_repeats=100,
            budget_s=self.s.budget_s,
            slow_call_s=5.0,
            min_repeats_slow=2,
        )

    # -- recording ---------------------------------------------------------------------
    def record(
        self,
        wl: Workload,
        p: float | None,
        method: str,
        *,
        where: str,
        device_s: float | None = None,
        wall: Timing | None = None,
        note: str = "",
        error: str | None = None,
    ) -> dict[str, Any]:
        self.count += 1
        main_s = device_s if device_s is not None else (wall.median if wall else None)
        row: dict[str, Any] = {
            "workload": wl.name,
            "p": None if p is None else p_label(p),
            "method": method,
            "where": where,
            "median_ms": None if main_s is None else main_s * 1e3,
            "wall_ms": None if wall is None else wall.median * 1e3,
            "repeats": None if wall is None else wall.repeats,
            "timing": None if wall is None else wall.as_dict(),
            "note": note,
            "error": error,
        }
        self.rows.append(row)
        plabel = "-" if p is None else p_label(p)
        head = f"[{self.count:3d}] {wl.name:18s} p={plabel:3s} {method}"
        if error is not None:
            log(f"{head}: ERROR {error}")
        elif row["median_ms"] is None:
            log(f"{head}: skipped {note}")
        else:
            log(f"{head}: {row['median_ms']:.3f} ms ({row['repeats']} reps) {note}".rstrip())
        return row

    def timed_gpu(
        self, wl: Workload, p: float | None, method: str, fn: Callable[[], object]
    ) -> dict[str, Any]:
        try:
            wall, dev = self.gpu_time(fn)
        except Exception as exc:  # a benchmark reports, it does not fail
            return self.record(wl, p, method, where="gpu", error=f"{type(exc).__name__}: {exc}")
        return self.record(wl, p, method, where="gpu", device_s=dev, wall=wall)

    def timed_cpu(
        self, wl: Workload, p: float | None, method: str, fn: Callable[[], object]
    ) -> dict[str, Any]:
        try:
            wall = self.cpu_time(fn)
        except Exception as exc:
            return self.record(wl, p, method, where="cpu", error=f"{type(exc).__name__}: {exc}")
        return self.record(wl, p, method, where="cpu", wall=wall)

    # -- one workload ------------------------------------------------------------------
    def public_accepts_cupy(self, xg: Any, dg: Any, eps: float) -> str | None:
        """``None`` if ``clipresc.perturb`` / ``scale`` take CuPy arrays and return CuPy
        arrays, else the reason why not."""
        cupy = self.cupy
        try:
            y = self.clipresc.perturb(xg[:1], dg[:1], eps, p=2.0, bounds=BOUNDS)
            eta = self.clipresc.scale(xg[:1], dg[:1], eps, p=2.0, bounds=BOUNDS)
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not isinstance(y, cupy.ndarray) or not isinstance(eta, cupy.ndarray):
            return f"returned {type(y).__name__} / {type(eta).__name__}, not cupy.ndarray"
        return None

    def run_workload(self, wl: Workload, seed: int) -> None:
        cupy, cb, cr = self.cupy, self.cb, self.clipresc
        t0 = time.perf_counter()
        x, d = image_and_noise(wl.shape, wl.dtype, seed)
        o = np.empty_like(x)
        xg = cupy.asarray(x)  # original shape (public API)
        dg = cupy.asarray(d)
        x2 = xg.reshape(wl.batch, wl.n)  # (B, n) views for the backend and the floor
        d2 = dg.reshape(wl.batch, wl.n)
        cupy.cuda.Device().synchronize()
        mib = x.nbytes / 2**20
        log(
            f"--- {wl.name}: eps {wl.eps}, {mib:.1f} MiB per array, ready in "
            f"{time.perf_counter() - t0:.1f} s"
        )

        floor1 = self.timed_gpu(wl, None, "cupy x + d (floor)", lambda: x2 + d2)

        public_msg = self.public_accepts_cupy(xg, dg, wl.eps)
        for p in PS:
            self.timed_gpu(
                wl, p, "cupy_backend.perturb_rows", lambda p=p: cb.perturb_rows(x2, d2, wl.eps, p)
            )
            self.timed_gpu(
                wl, p, "cupy_backend.scale_rows", lambda p=p: cb.scale_rows(x2, d2, wl.eps, p)
            )
            # the backward given the forward's eta (no solve), cotangent ybar = d
            _, eta_f, _ = cb.perturb_rows(x2, d2, wl.eps, p)
            self.timed_gpu(
                wl,
                p,
                "cupy_backend.perturb_vjp_rows (eta given)",
                lambda p=p, eta_f=eta_f: cb.perturb_vjp_rows(
                    x2, d2, wl.eps, p, 0.0, 1.0, d2, eta_f
                ),
            )
            for name in ("perturb", "scale"):
                method = f"clipresc.{name} (cupy)"
                if public_msg is not None:
                    self.record(wl, p, method, where="gpu", note=f"not on CuPy: {public_msg}")
                    continue
                fn = getattr(cr, name)
                self.timed_gpu(
                    wl,
                    p,
                    method,
                    lambda p=p, fn=fn: fn(xg, dg, wl.eps, p=p, bounds=BOUNDS),
                )
            self.accuracy_check(wl, p, x, d, x2, d2)

        floor2 = self.timed_gpu(wl, None, "cupy x + d (floor) again", lambda: x2 + d2)
        meds = [r["median_ms"] for r in (floor1, floor2) if r["median_ms"] is not None]
        floor_ms = min(meds) if meds else None
        if floor_ms is not None:
            gbps = 3 * x.nbytes / (floor_ms * 1e-3) / 1e9
            log(f"--- {wl.name}: CuPy floor {floor_ms:.3f} ms ({gbps:.0f} GB/s effective)")

        # the Rust core on the CPU, NumPy arrays
        cpu_floor = self.timed_cpu(wl, None, "cpu np.add(out=) floor", lambda: np.add(x, d, out=o))
        for p in PS:
            self.timed_cpu(
                wl,
                p,
                "cpu clipresc.perturb (numpy)",
                lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=BOUNDS),
            )
            self.timed_cpu(
                wl,
                p,
                "cpu clipresc.scale (numpy)",
                lambda p=p: cr.scale(x, d, wl.eps, p=p, bounds=BOUNDS),
            )

        for r in self.rows:
            if r["workload"] != wl.name or r["median_ms"] is None:
                continue
            if floor_ms is not None:
                r["ratio_floor"] = r["median_ms"] / floor_ms
            if cpu_floor["median_ms"] is not None and r["where"] == "cpu":
                r["ratio_cpu_floor"] = r["median_ms"] / cpu_floor["median_ms"]
        for p in PS:
            for name, gpu_method in (
                ("perturb", "cupy_backend.perturb_rows"),
                ("scale", "cupy_backend.scale_rows"),
            ):
                g = self.find(wl.name, p, gpu_method)
                c = self.find(wl.name, p, f"cpu clipresc.{name} (numpy)")
                if g and c and g["median_ms"] and c["median_ms"]:
                    g["speedup_vs_core"] = c["median_ms"] / g["median_ms"]
        log(f"--- {wl.name}: done in {time.perf_counter() - t0:.1f} s")

    def accuracy_check(
        self, wl: Workload, p: float, x: np.ndarray, d: np.ndarray, x2: Any, d2: Any
    ) -> None:
        """GPU perturb_rows against the Rust core on the same data."""
        cupy = self.cupy
        rec: dict[str, Any] = {"workload": wl.name, "p": p_label(p)}
        try:
            y, eta, flag = self.cb.perturb_rows(x2, d2, wl.eps, p)
            yh = cupy.asnumpy(y)
            etah = cupy.asnumpy(eta).astype(np.float64)
            ref_y = np.asarray(self.clipresc.perturb(x, d, wl.eps, p=p, bounds=BOUNDS))
            ref_eta = np.asarray(self.clipresc.scale(x, d, wl.eps, p=p, bounds=BOUNDS))
            ref_eta = ref_eta.reshape(-1).astype(np.float64)
            denom = np.maximum(np.abs(ref_eta), np.finfo(np.float64).tiny)
            rec["eta_max_rel_diff"] = float(np.max(np.abs(etah - ref_eta) / denom))
            rec["y_max_abs_diff"] = float(
                np.max(np.abs(yh.astype(np.float64) - ref_y.reshape(yh.shape)))
            )
            rec["unreachable_rows"] = int(cupy.asnumpy(flag).sum())
            rec["rows"] = wl.batch
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        self.accuracy.append(rec)

    def find(self, workload: str, p: float | None, method: str) -> dict[str, Any] | None:
        pl = None if p is None else p_label(p)
        for r in self.rows:
            if r["workload"] == workload and r["p"] == pl and r["method"] == method:
                return r
        return None

    def targets(self, workloads: list[Workload]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for wl in workloads:
            if wl.name != TARGET_WORKLOAD:
                continue
            for p in PS:
                r = self.find(wl.name, p, "cupy_backend.perturb_rows")
                value = None if r is None else r.get("ratio_floor")
                status = "n/a" if value is None else ("PASS" if value <= TARGET_RATIO else "MISS")
                out.append(
                    {
                        "target": f"{wl.name} p={p_label(p)} perturb <= {TARGET_RATIO}x CuPy x + d",
                        "value": value,
                        "limit": TARGET_RATIO,
                        "status": status,
                    }
                )
        return out


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'workload':18s} {'p':>3s}  {'method':30s} {'device ms':>10s} {'wall ms':>10s} "
        f"{'x floor':>8s}  notes"
    )

    def line(r: dict[str, Any], notes: list[str]) -> str:
        if "speedup_vs_core" in r:
            notes.append(f"Rust core time / this: {r['speedup_vs_core']:.3g}x")
        if "ratio_cpu_floor" in r:
            notes.append(f"{r['ratio_cpu_floor']:.2f}x CPU floor")
        dev = r["median_ms"] if r["where"] == "gpu" else None
        return (
            f"{r['workload']:18s} {r['p'] or '-':>3s}  {r['method']:30s} "
            f"{fmt(dev, '10.3f')} {fmt(r['wall_ms'], '10.3f')} "
            f"{fmt(r.get('ratio_floor'), '8.2f')}  "
        )

    _report.print_table(rows, head, line)


def main(argv: list[str] | None = None) -> int:
    args = _report.parser(__doc__, "shorter time budgets").parse_args(argv)

    cupy, desc = find_cuda()
    if cupy is None:
        print(f"bench_gpu: {desc}; nothing to benchmark (needs CuPy and a CUDA device).")
        return 0

    import clipresc
    from clipresc.backends import cupy_backend

    settings = QUICK if args.quick else FULL
    workloads = _report.chosen(GPU_WORKLOADS, args.workload, lambda wl: wl.name)
    t_start = time.perf_counter()
    try:
        nvrtc = ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())
    except Exception as exc:
        nvrtc = f"? ({type(exc).__name__})"
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "seed": args.seed,
        "device": desc,
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "nvrtc": nvrtc,
        "clipresc": getattr(clipresc, "__version__", "?"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(f"clipresc bench_gpu ({meta['mode']} mode)")
    print(f"  {desc}")
    print(
        f"  CuPy {meta['cupy']}, CUDA runtime {meta['cuda_runtime']}, driver "
        f"{meta['cuda_driver']}, NVRTC {nvrtc}; clipresc {meta['clipresc']}, "
        f"numpy {np.__version__}, python {meta['python']}"
    )

    # compile outside the timings (NVRTC, once per device and dtype)
    t0 = time.perf_counter()
    for dt in sorted({np.dtype(wl.dtype) for wl in workloads}, key=str):
        xs = cupy.full((2, 300), 0.5, dtype=dt)
        cupy_backend.perturb_rows(xs, xs, 0.1, 2.0)
    cupy.cuda.Device().synchronize()
    print(f"  kernels compiled and loaded in {time.perf_counter() - t0:.2f} s\n", flush=True)

    bench = Bench(settings, cupy, clipresc, cupy_backend)
    for wl in workloads:
        bench.run_workload(wl, args.seed)
        cupy.get_default_memory_pool().free_all_blocks()  # the workload's arrays are gone
    targets = bench.targets(workloads)

    print_table(bench.rows)
    print(
        "\ndevice ms = median time between CUDA events around one call; wall ms = the same "
        "calls timed on the host (launch + sync);\nx floor = device ms / CuPy `x + d` device ms; "
        "cpu rows: wall time of the Rust core on NumPy arrays"
    )
    if bench.accuracy:
        print("\naccuracy (GPU perturb_rows vs the Rust core, same data)")
        for a in bench.accuracy:
            if "error" in a:
                print(f"  {a['workload']:18s} p={a['p']:3s} ERROR {a['error']}")
                continue
            print(
                f"  {a['workload']:18s} p={a['p']:3s} eta max rel diff "
                f"{a['eta_max_rel_diff']:.1e}, y max abs diff {a['y_max_abs_diff']:.1e}, "
                f"{a['unreachable_rows']}/{a['rows']} rows unreachable"
            )

    elapsed = _report.print_targets(targets, f"workload {TARGET_WORKLOAD} not run", t_start)
    _report.write_json(
        args.json, meta, elapsed, results=bench.rows, accuracy=bench.accuracy, targets=targets
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
