"""CPU benchmark of the clipresc core against a memory floor and NumPy baselines.

Run from the repository root:

    .venv/bin/python benches/bench_core.py [--quick] [--json OUT] [--workload SUBSTR]

For each workload and p in {1, 2, inf} it times (median of adaptive repeats after warm-up):

1. the memory floor ``np.add(x, d, out=o)`` (single-threaded NumPy, measured once per
   workload, before and after, the smaller median is used),
2. naive NumPy rescale-then-clip (eta = eps/||d||_p, then clip),
3. the paper's sort-based L2 algorithm in NumPy (``paper_reference.py``; p = 2 only;
   ``--quick`` times it on a sub-batch and scales per vector), and as a diagnostic the
   same algorithm with the published code's operations (fancy indexing, concatenation),
4. ``clipresc.scale`` and 5. ``clipresc.perturb`` with scalar bounds (0, 1), allocating its
   result and with ``out=`` (a preallocated result, as the floor has), plus diagnostic rows:
   the compiled ``scale_into`` alone (2-D views, preallocated output, none of the
   Python-side checks) and an allocating ``np.add(x, d)``,
6. ``perturb`` with per-element bounds arrays (allocating and ``out=``) and (image
   workloads) per-channel bounds,
7. ``scale`` on the Newton adversary (``clipresc._clipresc.newton_adversary``) tiled to the
   workload's shape, compared per element with ``scale`` on the typical input.
8. ``perturb out=`` for the other p (0.5, 1.5, 3), ``scale`` and ``perturb out=`` (p = 2)
   with 1 and 2 threads (a fresh process each: the scaling table), and one 10^7-element
   f32 vector against the same elements as a batch.

Every time is also given as a ratio to the allocating ``np.add(x, d)`` ("x alloc"), the
machine's other floor; the header names the CPU. The targets are those of issue 20.

It prints a table and a "targets" block (PASS/MISS). A benchmark reports; it never fails:
the exit code is 0 unless the arguments are wrong.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import _report
import _support  # noqa: F401  (tests/ on sys.path)
import paper_reference
from _timing import Timing, cpu_model, fmt, log, measure, p_label
from support.threads import run_with_threads
from support.workloads import WORKLOADS, Workload, image_and_noise

PS = (1.0, 2.0, math.inf)
OTHER_PS = (0.5, 1.5, 3.0)  # timed with perturb out= only (issue 20's "other p" target)
BOUNDS = (0.0, 1.0)
PUBLISHED = "sort-based, published ops"


@dataclass(frozen=True)
class Settings:
    budget_s: float  # timed seconds per measurement (after min_repeats)
    min_repeats: int
    max_repeats: int
    paper_sub_elems: int | None  # None: the paper's algorithm runs on the full batch
    paper_min_repeats: int
    adversary_limit_s: float  # projected seconds per call above which we extrapolate


QUICK = Settings(0.3, 3, 40, 1 << 21, 2, 5.0)
FULL = Settings(2.0, 5, 200, None, 3, 60.0)


def naive_rescale_clip(x: np.ndarray, d: np.ndarray, eps: float, p: float) -> np.ndarray:
    b = x.shape[0]
    norms = np.linalg.norm(d.reshape(b, -1), ord=p, axis=1)
    eta = (eps / norms).astype(x.dtype, copy=False).reshape((b,) + (1,) * (x.ndim - 1))
    return np.clip(x + eta * d, BOUNDS[0], BOUNDS[1])


class Bench:
    def __init__(self, settings: Settings, clipresc: Any, core: Any) -> None:
        self.s = settings
        self.clipresc = clipresc
        self.core = core
        self.rows: list[dict[str, Any]] = []
        self.accuracy: list[dict[str, Any]] = []
        self.scaling: list[dict[str, Any]] = []
        self.long_vector: dict[str, Any] | None = None
        self.count = 0

    # -- recording -----------------------------------------------------------------
    def record(
        self,
        wl: Workload,
        p: float | None,
        method: str,
        timing: Timing | None,
        *,
        median_s: float | None = None,
        note: str = "",
        error: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        self.count += 1
        if timing is not None and median_s is None:
            median_s = timing.median
        row: dict[str, Any] = {
            "workload": wl.name,
            "p": None if p is None else p_label(p),
            "method": method,
            "median_ms": None if median_s is None else median_s * 1e3,
            "repeats": None if timing is None else timing.repeats,
            "timing": None if timing is None else timing.as_dict(),
            "note": note,
            "error": error,
            **extra,
        }
        self.rows.append(row)
        plabel = "-" if p is None else p_label(p)
        if error is not None:
            log(f"[{self.count:3d}] {wl.name:18s} p={plabel:3s} {method}: ERROR {error}")
        else:
            reps = "" if timing is None else f" ({timing.repeats} reps)"
            log(
                f"[{self.count:3d}] {wl.name:18s} p={plabel:3s} {method}: "
                f"{row['median_ms']:.3f} ms{reps} {note}".rstrip()
            )
        return row

    def timed(
        self,
        wl: Workload,
        p: float | None,
        method: str,
        fn: Callable[[], object],
        repeats_factor: int = 1,
        **kw: Any,
    ) -> dict[str, Any]:
        try:
            t = measure(
                fn,
                min_repeats=self.s.min_repeats,
                max_repeats=self.s.max_repeats * repeats_factor,
                budget_s=self.s.budget_s,
                slow_call_s=5.0,
                min_repeats_slow=2,
            )
        except Exception as exc:  # a benchmark reports, it does not fail
            return self.record(wl, p, method, None, error=f"{type(exc).__name__}: {exc}")
        return self.record(wl, p, method, t, **kw)

    # -- one workload ----------------------------------------------------------------
    def run_workload(self, wl: Workload, seed: int) -> None:
        t0 = time.perf_counter()
        x, d = image_and_noise(wl.shape, wl.dtype, seed)
        o = np.empty_like(x)
        log(f"--- {wl.name}: eps {wl.eps}, data ready in {time.perf_counter() - t0:.1f} s")

        floor1 = self.timed(wl, None, "floor np.add(out=)", lambda: np.add(x, d, out=o), 4)
        # diagnostic: what allocating (and page-faulting) a result costs the same add
        self.timed(wl, None, "np.add allocating (diag)", lambda: np.add(x, d), 4)

        for p in PS:
            self.timed(wl, p, "naive rescale+clip", lambda p=p: naive_rescale_clip(x, d, wl.eps, p))

        self.paper(wl, x, d)

        if self.clipresc is not None:
            self.clipresc_methods(wl, x, d)

        floor2 = self.timed(wl, None, "floor np.add(out=) again", lambda: np.add(x, d, out=o), 4)
        meds = [r["median_ms"] for r in (floor1, floor2) if r["median_ms"] is not None]
        floor_ms = min(meds)
        alloc = self.find(wl.name, None, "np.add allocating (diag)")
        for r in self.rows:
            if r["workload"] == wl.name and r["median_ms"] is not None:
                r["ratio_floor"] = r["median_ms"] / floor_ms
                if alloc is not None:
                    r["ratio_alloc_floor"] = r["median_ms"] / alloc["median_ms"]
        log(f"--- {wl.name}: done in {time.perf_counter() - t0:.1f} s")

    def paper(self, wl: Workload, x: np.ndarray, d: np.ndarray) -> None:
        sub = wl.batch
        if self.s.paper_sub_elems is not None:
            sub = max(1, min(wl.batch, self.s.paper_sub_elems // wl.n))
        xs, ds = x[:sub], d[:sub]
        scale = wl.batch / sub
        note = "" if sub == wl.batch else f"[{sub} of {wl.batch} rows, scaled x{scale:.1f}]"
        # the transcription (the baseline of the target) and, as a diagnostic, the same
        # algorithm with the published code's operations
        for method, algo in (
            ("sort-based (paper) eta", paper_reference.l2_clipping_aware_rescaling),
            (PUBLISHED, paper_reference.l2_clipping_aware_rescaling_as_published),
        ):

            def fn(algo: Any = algo) -> object:
                return algo(xs, ds, wl.eps, *BOUNDS)

            try:
                t = measure(
                    fn,
                    min_repeats=self.s.paper_min_repeats,
                    max_repeats=max(self.s.paper_min_repeats, 10),
                    budget_s=min(self.s.budget_s, 1.0),
                    slow_call_s=1.0,
                    min_repeats_slow=self.s.paper_min_repeats,
                )
            except MemoryError as exc:
                self.record(wl, 2.0, method, None, error=repr(exc))
                continue
            self.record(wl, 2.0, method, t, median_s=t.median * scale, note=note, paper_rows=sub)

    def clipresc_methods(self, wl: Workload, x: np.ndarray, d: np.ndarray) -> None:
        cr = self.clipresc
        dt = wl.dtype
        lo_el, hi_el = np.zeros(wl.shape, dt), np.ones(wl.shape, dt)
        lo_ch, hi_ch = np.zeros((3, 1, 1), dt), np.ones((3, 1, 1), dt)
        x2, d2 = x.reshape(wl.batch, -1), d.reshape(wl.batch, -1)
        eta_rows = np.empty(wl.batch, dtype=dt)
        y_out = np.empty_like(x)  # the floor's `out=` counterpart: no result allocated per call
        for p in PS:
            self.timed(
                wl, p, "clipresc.scale", lambda p=p: cr.scale(x, d, wl.eps, p=p, bounds=BOUNDS)
            )
            self.timed(
                wl, p, "clipresc.perturb", lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=BOUNDS)
            )
            self.timed(
                wl,
                p,
                "perturb out=",
                lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=BOUNDS, out=y_out),
            )
            if hasattr(self.core, "scale_into"):  # diagnostic: the compiled core alone
                self.timed(
                    wl,
                    p,
                    "core scale_into (diag)",
                    lambda p=p: self.core.scale_into(x2, d2, *BOUNDS, wl.eps, p, eta_rows),
                )
            self.timed(
                wl,
                p,
                "perturb elem bounds",
                lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=(lo_el, hi_el)),
            )
            self.timed(
                wl,
                p,
                "perturb elem bounds out=",
                lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=(lo_el, hi_el), out=y_out),
            )
            if wl.image:
                self.timed(
                    wl,
                    p,
                    "perturb chan bounds",
                    lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=(lo_ch, hi_ch)),
                )
            self.check_accuracy(wl, x, d, p)
        for p in OTHER_PS:
            self.timed(
                wl,
                p,
                "perturb out=",
                lambda p=p: cr.perturb(x, d, wl.eps, p=p, bounds=BOUNDS, out=y_out),
            )
        for p in PS:
            self.adversary(wl, p)

    def check_accuracy(
        self,
        wl: Workload,
        x: np.ndarray,
        d: np.ndarray,
        p: float,
        eps: float | None = None,
        label: str | None = None,
        compare_paper: bool = True,
    ) -> None:
        """Achieved post-clip size of ``perturb`` on the first rows (and eta vs the paper).

        The paper's code clamps delta^2 at 1e-20, so its eta is wrong for tiny deltas such
        as the adversary's; there only the achieved size is checked.
        """
        eps = wl.eps if eps is None else eps
        k = min(4, x.shape[0])
        xs, ds = x[:k], d[:k]
        entry: dict[str, Any] = {"workload": label or wl.name, "p": p_label(p), "rows": k}
        try:
            y = np.asarray(self.clipresc.perturb(xs, ds, eps, p=p, bounds=BOUNDS))
            x64 = xs.reshape(k, -1).astype(np.float64)
            d64 = ds.reshape(k, -1).astype(np.float64)
            size = np.linalg.norm(y.reshape(k, -1).astype(np.float64) - x64, ord=p, axis=1)
            # the largest reachable size: every movable element at its bound
            room = np.where(d64 > 0, BOUNDS[1] - x64, x64 - BOUNDS[0]) * (d64 != 0)
            target = np.minimum(eps, np.linalg.norm(room, ord=p, axis=1))
            entry["unreachable_rows"] = int(np.sum(target < eps))
            entry["max_rel_err_size"] = float(np.max(np.abs(size - target) / target))
            if p == 2.0 and compare_paper:
                eta = np.asarray(self.clipresc.scale(xs, ds, eps, p=p, bounds=BOUNDS))
                ref = paper_reference.l2_clipping_aware_rescaling(x64, d64, eps, *BOUNDS)
                rel = np.abs(eta.reshape(-1) - ref.reshape(-1)) / ref.reshape(-1)
                rel = rel[target == eps]  # unreachable rows: any maximiser is right
                entry["max_rel_diff_eta_vs_paper_f64"] = float(np.max(rel, initial=0.0))
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        self.accuracy.append(entry)

    def adversary(self, wl: Workload, p: float) -> None:
        cr, core = self.clipresc, self.core
        method = "scale adversarial"
        try:
            xa, da, eps_a = core.newton_adversary(wl.n, p)
            xa, da = np.asarray(xa, dtype=np.float64), np.asarray(da, dtype=np.float64)
        except Exception as exc:
            self.record(wl, p, method, None, error=f"newton_adversary: {type(exc).__name__}: {exc}")
            return
        eps_a = float(eps_a)
        bad = [
            f"{name} has {int(np.sum(~ok))} values that are non-finite or outside [0, 1]"
            for name, arr, ok in (
                ("x", xa, np.isfinite(xa) & (xa >= 0) & (xa <= 1)),
                ("delta", da, np.isfinite(da)),
            )
            if not ok.all()
        ]
        if bad:
            msg = f"newton_adversary({wl.n}, {p_label(p)}) is invalid: " + "; ".join(bad)
            self.record(wl, p, method, None, error=msg)
            return
        rows = (wl.batch, wl.n)
        xb = np.ascontiguousarray(np.broadcast_to(np.asarray(xa, wl.dtype), rows)).reshape(wl.shape)
        db = np.ascontiguousarray(np.broadcast_to(np.asarray(da, wl.dtype), rows)).reshape(wl.shape)
        extra: dict[str, Any] = {"eps": eps_a}
        # Probe sub-batches first (1, 8, 64, ... rows): an unguarded O(n^2) Newton would
        # take far too long on the full batch. If the projected full-batch time is over the
        # limit, time a sub-batch and scale per vector instead.
        k, t_k = 1, 0.0
        try:
            while True:
                xs, ds = xb[:k], db[:k]
                t0 = time.perf_counter()
                cr.scale(xs, ds, eps_a, p=p, bounds=BOUNDS)
                t_k = time.perf_counter() - t0
                projected = t_k * wl.batch / k
                if k == wl.batch or projected <= self.s.adversary_limit_s or t_k > 0.5:
                    break
                k = min(wl.batch, k * 8)
        except Exception as exc:
            self.record(wl, p, method, None, error=f"{type(exc).__name__}: {exc}")
            return
        if projected <= self.s.adversary_limit_s:
            k = wl.batch
        xs, ds = xb[:k], db[:k]
        if k == wl.batch:
            row = self.timed(
                wl, p, method, lambda: cr.scale(xs, ds, eps_a, p=p, bounds=BOUNDS), **extra
            )
        else:
            t = measure(
                lambda: cr.scale(xs, ds, eps_a, p=p, bounds=BOUNDS),
                warmup=0,
                min_repeats=1,
                max_repeats=3,
                budget_s=self.s.adversary_limit_s,
            )
            row = self.record(
                wl,
                p,
                method,
                t,
                median_s=t.median * wl.batch / k,
                note=f"[{k} of {wl.batch} rows, scaled x{wl.batch / k:.1f}]",
                adversary_rows=k,
                **extra,
            )
        typical = self.find(wl.name, p, "clipresc.scale")
        if typical is not None and row["median_ms"] is not None:
            row["vs_typical"] = row["median_ms"] / typical["median_ms"]
        self.check_accuracy(
            wl, xb, db, p, eps=eps_a, label=f"{wl.name} adversary", compare_paper=False
        )

    def thread_scaling(self, workloads: list[Workload], seed: int) -> None:
        """Times scale and perturb out= (p = 2) with 1 and 2 threads, each in a fresh process
        (rayon reads RAYON_NUM_THREADS once, when its pool starts)."""
        for wl in workloads:
            per_threads: dict[int, dict[str, float]] = {}
            for threads in (1, 2):
                code = _SCALING_PROBE.format(
                    shape=wl.shape,
                    dtype=np.dtype(wl.dtype).name,
                    eps=wl.eps,
                    seed=seed,
                    budget=self.s.budget_s,
                )
                try:
                    done = run_with_threads(code, threads, [str(Path(__file__).parent)])
                    done.check_returncode()
                    per_threads[threads] = json.loads(done.stdout)
                except (subprocess.SubprocessError, ValueError) as exc:
                    log(f"thread scaling {wl.name}: {type(exc).__name__}: {exc}")
                    break
            if len(per_threads) < 2:
                continue
            floor = per_threads[1]["floor"]
            for method in ("scale", "perturb out="):
                one, two = per_threads[1][method], per_threads[2][method]
                self.scaling.append(
                    {
                        "workload": wl.name,
                        "method": f"p=2 {method}",
                        "one_thread_ms": one * 1e3,
                        "two_threads_ms": two * 1e3,
                        "speedup": one / two,
                        "one_thread_x_floor": one / floor,
                    }
                )

    def long_vs_batch(self, seed: int) -> None:
        """scale (f32, p = 2) of one 10^7-element vector against the same elements as a
        batch of 1000 rows."""
        cr = self.clipresc
        rng = np.random.default_rng(seed)
        n = 10**7
        x = rng.random((1, n), dtype=np.float32)
        d = rng.standard_normal((1, n), dtype=np.float32)
        eps = 50.0 * math.sqrt(n / 150528)
        xb, db = x.reshape(1000, n // 1000), d.reshape(1000, n // 1000)
        eps_b = eps / math.sqrt(1000)

        def kw_measure(fn: Callable[[], object]) -> Timing:
            return measure(
                fn, min_repeats=self.s.min_repeats, max_repeats=50, budget_s=self.s.budget_s
            )

        one = kw_measure(lambda: cr.scale(x, d, eps, p=2.0, bounds=BOUNDS))
        batch = kw_measure(lambda: cr.scale(xb, db, eps_b, p=2.0, bounds=BOUNDS))
        self.long_vector = {
            "one_vector_ms": one.median * 1e3,
            "batch_ms": batch.median * 1e3,
            "ratio": one.median / batch.median,
        }

    def find(self, workload: str, p: float | None, method: str) -> dict[str, Any] | None:
        plabel = None if p is None else p_label(p)
        for r in self.rows:
            if r["workload"] == workload and r["p"] == plabel and r["method"] == method:
                return r if r["median_ms"] is not None else None
        return None

    # -- report ------------------------------------------------------------------------
    def add_speedups(self) -> None:
        for r in self.rows:
            if r["method"] != "sort-based (paper) eta" or r["median_ms"] is None:
                continue
            for m, key in (
                ("clipresc.perturb", "speedup_perturb"),
                ("clipresc.scale", "speedup_scale"),
            ):
                other = self.find(r["workload"], 2.0, m)
                if other is not None:
                    r[key] = r["median_ms"] / other["median_ms"]

    def targets(self, workloads: list[Workload]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def check(
            name: str, value: float | None, limit: float, higher_is_better: bool = False
        ) -> None:
            if value is None:
                status = "n/a"
            elif higher_is_better:
                status = "PASS" if value >= limit else "MISS"
            else:
                status = "PASS" if value <= limit else "MISS"
            out.append({"target": name, "value": value, "limit": limit, "status": status})

        def ratio(wl: Workload, p: float, method: str) -> float | None:
            r = self.find(wl.name, p, method)
            return None if r is None else r.get("ratio_floor")

        def alloc_ratio(wl: Workload, p: float, method: str) -> float | None:
            r = self.find(wl.name, p, method)
            return None if r is None else r.get("ratio_alloc_floor")

        # issue 20's targets: ratios to the floor np.add(x, d, out=o) measured in this run
        # (allocating perturb against the allocating np.add(x, d))
        for wl in workloads:
            w = wl.name
            check(f"{w} p=2 scale <= 1.0x floor", ratio(wl, 2.0, "clipresc.scale"), 1.0)
            check(f"{w} p=2 perturb out= <= 1.3x floor", ratio(wl, 2.0, "perturb out="), 1.3)
            check(
                f"{w} p=2 perturb <= 1.3x np.add allocating",
                alloc_ratio(wl, 2.0, "clipresc.perturb"),
                1.3,
            )
            for p in (1.0, math.inf):
                check(
                    f"{w} p={p_label(p)} perturb out= <= 1.8x floor",
                    ratio(wl, p, "perturb out="),
                    1.8,
                )
            for p in PS:
                check(
                    f"{w} p={p_label(p)} perturb elem bounds out= <= 1.8x floor",
                    ratio(wl, p, "perturb elem bounds out="),
                    1.8,
                )
            for p in OTHER_PS:
                check(
                    f"{w} p={p_label(p)} perturb out= <= 2.5x floor",
                    ratio(wl, p, "perturb out="),
                    2.5,
                )
            for p in PS:
                r = self.find(w, p, "scale adversarial")
                check(
                    f"{w} p={p_label(p)} adversarial per-element <= 8x typical",
                    None if r is None else r.get("vs_typical"),
                    8.0,
                )
        for sc in self.scaling:
            if sc["one_thread_x_floor"] > 1.5:
                check(
                    f"{sc['workload']} {sc['method']} 2 threads >= 1.7x 1 thread",
                    sc["speedup"],
                    1.7,
                    higher_is_better=True,
                )
        if self.long_vector is not None:
            check(
                "1x10^7 f32 scale p=2 <= 1.3x the same elements as a batch",
                self.long_vector["ratio"],
                1.3,
            )
        return out


# Run in a fresh process per thread count: prints the medians (s) of the floor, scale and
# perturb out= (p = 2) on one workload as JSON.
_SCALING_PROBE = """
import json, numpy as np, clipresc
from _timing import measure
rng = np.random.default_rng({seed})
x = rng.random({shape}, dtype="{dtype}"); d = rng.standard_normal({shape}, dtype="{dtype}")
o = np.empty_like(x)
kw = dict(min_repeats=3, max_repeats=100, budget_s={budget})
out = dict(
    floor=measure(lambda: np.add(x, d, out=o), **kw).median,
    scale=measure(lambda: clipresc.scale(x, d, {eps}, p=2.0, bounds=(0.0, 1.0)), **kw).median,
)
out["perturb out="] = measure(
    lambda: clipresc.perturb(x, d, {eps}, p=2.0, bounds=(0.0, 1.0), out=o), **kw
).median
print(json.dumps(out))
"""


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'workload':18s} {'p':>3s}  {'method':26s} {'median ms':>11s} {'x floor':>9s} "
        f"{'x alloc':>8s}  notes"
    )

    def line(r: dict[str, Any], notes: list[str]) -> str:
        if "speedup_perturb" in r:
            notes.append(f"perturb {r['speedup_perturb']:.3g}x faster")
        if "speedup_scale" in r:
            notes.append(f"scale {r['speedup_scale']:.3g}x faster")
        if "vs_typical" in r:
            notes.append(f"{r['vs_typical']:.2f}x typical per element")
        return (
            f"{r['workload']:18s} {r['p'] or '-':>3s}  {r['method']:26s} "
            f"{fmt(r['median_ms'], '11.3f')} {fmt(r.get('ratio_floor'), '9.2f')} "
            f"{fmt(r.get('ratio_alloc_floor'), '8.2f')}  "
        )

    _report.print_table(rows, head, line)


def main(argv: list[str] | None = None) -> int:
    args = _report.parser(__doc__, "fewer repeats, sub-batch baseline").parse_args(argv)
    settings = QUICK if args.quick else FULL
    workloads = _report.chosen(WORKLOADS, args.workload, lambda wl: wl.name)

    t_start = time.perf_counter()
    try:
        import clipresc
        from clipresc import _clipresc as core
    except ImportError as exc:
        clipresc, core = None, None
        clipresc_msg = f"NOT IMPORTABLE ({exc}); timing the NumPy baselines only"
    else:
        clipresc_msg = f"{getattr(clipresc, '__version__', '?')} ({Path(clipresc.__file__).parent})"

    rayon = os.environ.get("RAYON_NUM_THREADS")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    threads = int(rayon) if rayon and rayon.isdigit() and int(rayon) > 0 else None
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "seed": args.seed,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "clipresc": clipresc_msg,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "RAYON_NUM_THREADS": rayon,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": affinity,
        "threads": threads if threads is not None else (affinity or os.cpu_count()),
    }
    print(f"clipresc bench_core ({meta['mode']} mode)")
    print(f"  clipresc: {clipresc_msg}")
    print(f"  CPU: {meta['cpu_model']}")
    print(f"  numpy {np.__version__}, python {meta['python']}, {meta['platform']}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load is not None:
        meta["loadavg_start"] = load
        busy = load[0] > 0.5
        print(
            f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            + ("  (WARNING: the machine is busy; timings will be noisy)" if busy else "")
        )
    print(
        f"  threads: RAYON_NUM_THREADS={rayon or 'unset'}, os.cpu_count()={os.cpu_count()}, "
        f"affinity={affinity} -> clipresc uses {meta['threads']}"
    )
    print(
        "  note: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS do not matter here:"
        " no timed op uses BLAS;\n        NumPy runs every baseline (floor included)"
        " single-threaded, clipresc uses its own rayon pool."
    )

    worst = paper_reference.self_check(verbose=False)
    meta["paper_reference_self_check_max_rel_err"] = worst
    print(
        f"  paper_reference vs bisection (f64): max rel err {worst:.1e} "
        f"{'OK' if worst < 1e-9 else 'MISMATCH'}"
    )
    print(flush=True)

    bench = Bench(settings, clipresc, core)
    for wl in workloads:
        bench.run_workload(wl, args.seed)
    if clipresc is not None:
        bench.thread_scaling(workloads, args.seed)
        bench.long_vs_batch(args.seed)
    bench.add_speedups()
    targets = bench.targets(workloads) if clipresc is not None else []

    print_table(bench.rows)
    print()
    print(
        "floor = single-threaded NumPy np.add(x, d, out=o); sort-based = paper's algorithm,"
        " eta only (perturb also applies)"
    )
    if bench.accuracy:
        print("\naccuracy (first rows; post-clip size vs eps, eta vs paper algorithm in f64)")
        for a in bench.accuracy:
            parts = [f"{k} {v:.1e}" for k, v in a.items() if isinstance(v, float)]
            if a.get("unreachable_rows"):
                parts.append(f"{a['unreachable_rows']}/{a['rows']} rows unreachable (saturated)")
            if "error" in a:
                parts.append(f"ERROR {a['error']}")
            print(f"  {a['workload']:28s} p={a['p']:3s} " + ", ".join(parts))

    if bench.scaling:
        print("\nthread scaling (p = 2; each thread count in a fresh process)")
        print(
            f"  {'workload':18s} {'method':18s} {'1 thread ms':>12s} {'2 threads ms':>13s}"
            f" {'speedup':>8s} {'1 thread x floor':>17s}"
        )
        for sc in bench.scaling:
            print(
                f"  {sc['workload']:18s} {sc['method']:18s} {sc['one_thread_ms']:12.3f} "
                f"{sc['two_threads_ms']:13.3f} {sc['speedup']:8.2f} "
                f"{sc['one_thread_x_floor']:17.2f}"
            )
    if bench.long_vector is not None:
        lv = bench.long_vector
        print(
            f"\none 10^7-element f32 vector: scale p=2 {lv['one_vector_ms']:.3f} ms; the same "
            f"elements as 1000 rows {lv['batch_ms']:.3f} ms; ratio {lv['ratio']:.2f}"
        )

    elapsed = _report.print_targets(targets, "clipresc not importable", t_start)
    if hasattr(os, "getloadavg"):
        meta["loadavg_end"] = os.getloadavg()
        print("load average at the end: " + " ".join(f"{v:.2f}" for v in meta["loadavg_end"]))

    _report.write_json(
        args.json,
        meta,
        elapsed,
        results=bench.rows,
        accuracy=bench.accuracy,
        targets=targets,
        thread_scaling=bench.scaling,
        long_vector=bench.long_vector,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
