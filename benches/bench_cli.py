"""The ``clipresc`` command on a 2 GiB ``.npy`` file: throughput and peak memory.

Run from the repository root (needs about 8 GiB of free disk in the temporary directory):

    .venv/bin/python benches/bench_cli.py [--gib 2.0] [--dir DIR] [--keep]

It writes a float32 file of shape (B, 3, 224, 224) in [0, 1] (and a Gaussian DELTA of the
same shape), then runs, each in a fresh process:

1. an I/O floor: a chunked NumPy copy of IN to another file (read + write, 32 MiB chunks);
2. ``clipresc noise IN OUT --eps 50 --seed 0`` (default chunking);
3. ``clipresc perturb IN DELTA OUT --eps 50``;
4. ``clipresc noise`` with ``--workers 2`` (a local Dask cluster), when distributed is there.

For each it reports wall time, throughput (input bytes per second) and the peak resident
set size of the process (``ru_maxrss`` of the child, the figure ``/usr/bin/time -v`` shows).
The files are in the page cache after being written, so this measures the compute path, not
the disk. A benchmark reports; it never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _support  # noqa: F401  (tests/ on sys.path)
from support.workloads import write_npy_rows

ROW = (3, 224, 224)
RUNNER = (
    "import resource, subprocess, sys, time;"
    "t = time.perf_counter(); r = subprocess.run(sys.argv[1:]);"
    "dt = time.perf_counter() - t;"
    "print(r.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
COPY = """
import sys, numpy as np
a = np.load(sys.argv[1], mmap_mode="r")
o = np.lib.format.open_memmap(sys.argv[2], mode="w+", dtype=a.dtype, shape=a.shape)
step = max(1, (32 << 20) // (a[0].nbytes))
for i in range(0, len(a), step):
    src = np.memmap(sys.argv[1], dtype=a.dtype, mode="r", offset=a.offset + i * a[0].nbytes,
                    shape=(min(step, len(a) - i),) + a.shape[1:])
    o[i:i + len(src)] = src
    o.flush()
    del src
"""


def measure(cmd: list[str]) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS in MiB) of ``cmd`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, *cmd], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="size of IN in GiB")
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--json", help="write the results as JSON to this path")
    args = ap.parse_args()
    script = Path(sys.executable).parent / "clipresc"
    if not script.exists():
        print("the clipresc console script is not installed (maturin develop)", file=sys.stderr)
        return 0
    row_bytes = 4 * int(np.prod(ROW))
    rows = int(args.gib * 2**30) // row_bytes
    d = Path(tempfile.mkdtemp(prefix="clipresc-bench-cli-", dir=args.dir))
    results = []
    try:
        t0 = time.perf_counter()
        write_npy_rows(d / "x.npy", (rows, *ROW), "x", 0)
        write_npy_rows(d / "d.npy", (rows, *ROW), "delta", 1)
        nbytes = rows * row_bytes
        print(
            f"IN: {rows}x3x224x224 float32 = {nbytes / 2**30:.2f} GiB "
            f"(written in {time.perf_counter() - t0:.1f} s), {os.cpu_count()} CPUs",
            file=sys.stderr,
        )

        def noise_cmd(out: str, *extra: str) -> list[str]:
            return [
                str(script),
                "noise",
                "x.npy",
                out,
                "--eps",
                "50",
                "--seed",
                "0",
                "-q",
                "--force",
                *extra,
            ]

        runs = [
            ("I/O floor: chunked NumPy copy", [sys.executable, "-c", COPY, "x.npy", "c.npy"]),
            (
                "clipresc noise",
                noise_cmd("y.npy"),
            ),
            (
                "clipresc perturb",
                [str(script), "perturb", "x.npy", "d.npy", "z.npy", "--eps", "50", "-q", "--force"],
            ),
        ]
        try:
            import distributed  # noqa: F401

            runs.append(
                (
                    "clipresc noise --workers 2 (Dask)",
                    noise_cmd("w.npy", "--workers", "2"),
                )
            )
        except ImportError:
            pass
        cwd = os.getcwd()
        os.chdir(d)
        try:
            for name, cmd in runs:
                code, wall, rss = measure(cmd)
                results.append(
                    {
                        "run": name,
                        "exit": code,
                        "wall_s": wall,
                        "throughput_mib_s": nbytes / 2**20 / wall,
                        "peak_rss_mib": rss,
                    }
                )
                print(
                    f"{name:36s} exit {code} {wall:7.2f} s {nbytes / 2**20 / wall:8.0f} MiB/s "
                    f"peak RSS {rss:7.0f} MiB",
                    file=sys.stderr,
                )
        finally:
            os.chdir(cwd)
        if (d / "w.npy").exists():
            same = np.array_equal(
                np.load(d / "w.npy", mmap_mode="r")[:8], np.load(d / "y.npy", mmap_mode="r")[:8]
            )
            print(f"Dask output equals local output (first rows): {same}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"\nclipresc CLI on a {nbytes / 2**30:.2f} GiB float32 file ({os.cpu_count()} CPUs)")
    print(f"{'run':36s} {'wall s':>8s} {'MiB/s':>8s} {'peak RSS MiB':>13s}")
    for r in results:
        print(
            f"{r['run']:36s} {r['wall_s']:8.2f} {r['throughput_mib_s']:8.0f} "
            f"{r['peak_rss_mib']:13.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"bytes": nbytes, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
