"""The core's closed-form VJP against its forward, measured in the same run.

Run from the repository root:

    .venv/bin/python benches/bench_vjp.py [--quick] [--json OUT]

For the shapes of the JAX benchmark (``bench_frameworks.py``), float32 data in ``[0, 1]``,
Gaussian ``delta``, scalar bounds ``(0, 1)`` and p in {1, 2, inf}, it times in turn (so that
the ratios hold on a shared machine) the compiled forward ``perturb_into`` (which also
returns the scales ``eta``) and ``perturb_vjp_into`` given that ``eta`` (no solve), both
into preallocated outputs, and prints the VJP's time as a ratio to the forward's. The
header names the CPU; the VJP's lane loops run in AVX-512 where the CPU has it.

A benchmark reports; it never fails: the exit code is 0 unless the arguments are wrong.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import numpy as np

import _report
from _timing import cpu_model, interleaved, p_label

# (rows, n, eps): the JAX benchmark's 64x3x224x224 and 128x3x32x32 as (rows, n)
CASES = ((64, 3 * 224 * 224, 50.0), (128, 3 * 32 * 32, 3.0))
PS = (2.0, 1.0, math.inf)


def bench_case(rows: int, n: int, eps: float, p: float, repeats: int) -> dict[str, Any]:
    """Forward and VJP times (seconds) of one shape and ``p``, and their ratio."""
    from clipresc import _clipresc

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (rows, n)).astype(np.float32)
    d = rng.standard_normal((rows, n)).astype(np.float32)
    if p == math.inf:
        eps = 0.1
    elif p == 1.0:
        eps = eps * math.sqrt(n) / 2
    y, eta = np.empty_like(x), np.empty(rows, dtype=np.float32)
    ybar = rng.standard_normal((rows, n)).astype(np.float32)
    xg, dg, eg = np.empty_like(x), np.empty_like(x), np.empty(rows)

    def forward() -> object:
        return _clipresc.perturb_into(x, d, 0.0, 1.0, eps, p, y, eta)

    def vjp() -> object:
        return _clipresc.perturb_vjp_into(
            x, d, 0.0, 1.0, eps, p, ybar, xg, dg, eg, None, None, eta=eta
        )

    forward()
    tf, tb = (t.median for t in interleaved([forward, vjp], repeats))
    return {"forward_s": tf, "vjp_s": tb, "ratio": tb / tf}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", metavar="OUT", help="write the medians and ratios as JSON")
    args = ap.parse_args(argv)
    import clipresc

    print(f"clipresc {clipresc.__version__}, CPU: {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"  {'rows x n, f32':<22} {'p':>4} {'forward ms':>11} {'vjp ms':>9} {'vjp/fwd':>8}")
    out: dict[str, Any] = {}
    for rows, n, eps in CASES:
        big = rows * n > 1 << 22
        repeats = (10 if big else 100) if args.quick else (40 if big else 1000)
        for p in PS:
            r = bench_case(rows, n, eps, p, repeats)
            key = f"{rows}x{n} p={p_label(p)}"
            out[key] = r
            print(
                f"  {f'{rows}x{n}':<22} {p_label(p):>4} {r['forward_s'] * 1e3:11.3f} "
                f"{r['vjp_s'] * 1e3:9.3f} {r['ratio']:8.2f}",
                flush=True,
            )
    _report.dump(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
