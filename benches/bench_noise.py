"""Benchmark of ``clipresc.noise`` (seeded noise at an exact size, fused) against the memory
floor and the unfused NumPy way of doing the same.

Run from the repository root:

    .venv/bin/python benches/bench_noise.py [--quick] [--json OUT]

Workload: 64x3x224x224 float32 images in [0, 1], eps = 50 (L2) / 0.03 (L-inf). Timed
(median of adaptive repeats after warm-up):

1. the memory floor ``np.add(x, d, out=o)`` (single-threaded NumPy; measured before and
   after, the smaller median is used), as in ``bench_core.py``;
2. ``clipresc.noise`` for each distribution at p = 2, and Gaussian at p = 1 and inf
   (the public call: argument checks, allocation of the result), and Gaussian p = 2 with
   ``out=`` a preallocated array (what the floor does: no result to allocate);
3. diagnostics: the compiled ``noise_into`` alone into a preallocated output, and the raw
   noise alone (``sample_into``, preallocated);
4. the unfused alternative: NumPy's ``standard_normal`` (float32) then ``clipresc.perturb``,
   and naive rescale-then-clip of the same NumPy noise (which misses eps).

It prints a table and a "targets" block (PASS/MISS; target: Gaussian p = 2 noise within 3x
the floor). A benchmark reports; it never fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable

import numpy as np

import _support  # noqa: F401  (tests/ on sys.path)
from _timing import Timing, cpu_model, log, measure
from support.workloads import image_and_noise

SHAPE = (64, 3, 224, 224)
EPS = {2.0: 50.0, 1.0: 5000.0, math.inf: 0.03}
TARGET_RATIO = 3.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short time budget per measurement")
    ap.add_argument("--json", help="write the results as JSON to this path")
    args = ap.parse_args()
    budget, min_rep = (0.3, 3) if args.quick else (2.0, 5)

    import clipresc
    from clipresc import _clipresc

    x, d = image_and_noise(SHAPE, np.float32, seed=0)
    o = np.empty_like(x)
    x2 = x.reshape(SHAPE[0], -1)
    y2 = np.empty_like(x2)
    eta = np.empty(SHAPE[0], dtype=np.float32)
    key = bytes(32)
    rows: list[dict[str, Any]] = []

    def timed(name: str, fn: Callable[[], object]) -> Timing:
        t = measure(fn, min_repeats=min_rep, max_repeats=200, budget_s=budget)
        rows.append({"method": name, "median_ms": t.median_ms, "timing": t.as_dict()})
        log(f"{name:44s} {t.median_ms:9.3f} ms ({t.repeats} reps)")
        return t

    log(f"--- {'x'.join(map(str, SHAPE))} float32, {os.cpu_count()} CPUs")
    f1 = timed("floor np.add(out=)", lambda: np.add(x, d, out=o))
    for dist in ("gaussian", "uniform", "laplace", "rademacher"):
        timed(
            f"clipresc.noise {dist} p=2",
            lambda dist=dist: clipresc.noise(x, EPS[2.0], distribution=dist, seed=1),
        )
    buf = np.empty_like(x)
    timed(
        "clipresc.noise gaussian p=2 out=",
        lambda: clipresc.noise(x, EPS[2.0], seed=1, out=buf),
    )
    for p in (1.0, math.inf):
        timed(
            f"clipresc.noise gaussian p={p:g}", lambda p=p: clipresc.noise(x, EPS[p], p=p, seed=1)
        )
    timed(
        "core noise_into gaussian p=2 (diag)",
        lambda: _clipresc.noise_into(x2, 0.0, 1.0, EPS[2.0], 2.0, "gaussian", key, 0, y2, eta),
    )
    timed("core sample_into gaussian (diag)", lambda: _clipresc.sample_into("gaussian", key, 0, y2))
    timed(
        "core sample_into rademacher (diag)",
        lambda: _clipresc.sample_into("rademacher", key, 0, y2),
    )

    def unfused() -> object:
        n = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
        return clipresc.perturb(x, n, EPS[2.0])

    def naive() -> object:
        n = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
        norms = np.linalg.norm(n.reshape(SHAPE[0], -1), axis=1).reshape(-1, 1, 1, 1)
        return np.clip(x + (EPS[2.0] / norms).astype(np.float32) * n, 0, 1)

    timed("numpy standard_normal + clipresc.perturb", unfused)
    timed("numpy standard_normal + naive rescale/clip", naive)
    f2 = timed("floor np.add(out=) again", lambda: np.add(x, d, out=o))
    floor = min(f1.median_ms, f2.median_ms)

    # exactness of what was timed
    y = clipresc.noise(x, EPS[2.0], seed=1)
    sizes = np.linalg.norm((y.astype(np.float64) - x).reshape(SHAPE[0], -1), axis=1)
    rel = float(np.max(np.abs(sizes - EPS[2.0]) / EPS[2.0]))

    print(
        f"\nclipresc.noise, {'x'.join(map(str, SHAPE))} float32, {os.cpu_count()} CPUs "
        f"({cpu_model()})"
    )
    print(f"{'method':44s} {'median ms':>10s} {'x floor':>8s}")
    for r in rows:
        r["ratio_floor"] = r["median_ms"] / floor
        print(f"{r['method']:44s} {r['median_ms']:10.3f} {r['ratio_floor']:8.2f}")
    print(f"\nmax relative error of the L2 size after clipping: {rel:.1e}")
    print("\ntargets")
    for name in ("clipresc.noise gaussian p=2", "clipresc.noise gaussian p=2 out="):
        r = next(r for r in rows if r["method"] == name)
        verdict = "PASS" if r["ratio_floor"] <= TARGET_RATIO else "MISS"
        print(f"  {name[9:]:28s} <= {TARGET_RATIO:g}x floor: {r['ratio_floor']:.2f}x {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "shape": SHAPE,
                    "cpus": os.cpu_count(),
                    "floor_ms": floor,
                    "max_rel_err_size": rel,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
