"""The prepared check for a lent GPU machine: one command, a report, at most 6 minutes.

    python3 benches/gpu_check.py --wheels WHEELS --out REPORT_DIR [--dry-run]

(``make gpu-check WHEELS=... OUT=...``.) Run from the root of the working tree on a
machine with Python 3.12, torch (CUDA), cupy-cuda13x, jax (CUDA), numpy, pytest and
hypothesis installed and no network. ``WHEELS`` is a folder holding the clipresc abi3
wheel from ``make wheel`` and any pure-Python test dependency the machine lacks
(``make gpu-wheels`` fills ``dist/gpu-wheels``); everything in it is installed with
``pip --no-index --no-deps --target`` into ``REPORT_DIR/site`` and put first on the path,
so nothing outside the report folder changes.

Steps, each with its own time limit inside the overall budget (``--budget``, 330 s):

1. environment: Python, the GPU libraries' versions, the CUDA devices (``nvidia-smi -L``),
2. ``pytest -m gpu tests/gpu`` (the CuPy kernels against the bisection oracle and finite
   differences; the public CuPy path captured in a CUDA graph in no-check mode, which
   proves it makes no host synchronisation, and refused by capture in checked mode),
3. ``pytest -m gpu tests/test_torch_cuda.py tests/test_jax_gpu.py`` (torch autograd on
   CUDA against the CPU, errors checked inside the kernels, CUDA-graph capture in
   no-check mode, a non-default stream, torch's allocator, a batch of more than 2^31
   elements, JAX GPU arrays),
4. ``benches/bench_gpu.py --quick`` on 64x3x224x224, 1024x3x32x32, 128x3x32x32 and
   1x10^7 (p in {1, 2, inf}; perturb, scale and the VJP against CuPy ``x + d`` and the
   Rust core).

Writes ``REPORT_DIR/report.json`` and ``REPORT_DIR/report.txt`` (and each step's full
output as ``REPORT_DIR/<step>.log``). The exit code is 0 when every step passed, 1 when
one failed or ran out of time, 2 when no CUDA device was found.
``--dry-run`` does everything but run the steps (they are listed as ``planned``);
``--devices`` replaces the device query (tests use it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Step", "main", "plan", "render_text", "run_step"]

#: Seconds the whole check may take (the machine allows 6 minutes; setup and copying
#: the report back need the rest).
BUDGET_S = 330.0
QUICK_WORKLOADS = ("64x3x224x224", "1024x3x32x32", "128x3x32x32", "1x10^7")
#: The gpu-marked tests outside tests/gpu (named, so that collecting the rest of the suite
#: cannot fail on a library the GPU machine lacks).
FRAMEWORK_GPU_TESTS = ("tests/test_torch_cuda.py", "tests/test_jax_gpu.py")
LIBRARIES = ("numpy", "torch", "cupy", "jax", "jaxlib", "pytest", "hypothesis", "clipresc")


@dataclass
class Step:
    """One command of the check and what became of it."""

    name: str
    argv: list[str]
    limit_s: float
    status: str = "planned"  # planned | passed | failed | timeout | skipped
    rc: int | None = None
    seconds: float = 0.0
    tail: str = ""
    notes: list[str] = field(default_factory=list)


def plan(python: str, out: Path) -> list[Step]:
    """The steps in order, with their share of the budget."""
    bench = [python, "benches/bench_gpu.py", "--quick", "--json", str(out / "bench.json")]
    for w in QUICK_WORKLOADS:
        bench += ["--workload", w]
    pytest = [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs"]
    return [
        Step("pytest-gpu-kernels", [*pytest, "tests/gpu"], 90.0),
        Step("pytest-gpu-frameworks", [*pytest, *FRAMEWORK_GPU_TESTS], 110.0),
        Step("bench-gpu-quick", bench, 120.0),
    ]


def run_step(step: Step, env: dict[str, str], log: Path, remaining_s: float) -> None:
    """Run ``step`` with a limit of its own share or what is left of the budget."""
    limit = min(step.limit_s, remaining_s)
    if limit < 1:
        step.status = "skipped"
        step.notes.append("no time left in the budget")
        return
    t0 = time.perf_counter()
    with log.open("w") as fh:
        try:
            proc = subprocess.run(
                step.argv, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=limit
            )
            step.rc = proc.returncode
            step.status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            step.status = "timeout"
            step.notes.append(f"stopped after {limit:.0f} s")
    step.seconds = time.perf_counter() - t0
    step.tail = log.read_text(errors="replace")[-4000:]


def _version(name: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return "not installed"


def devices() -> list[str]:
    """The CUDA devices ``nvidia-smi -L`` lists (empty without a driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def install_wheels(wheels: Path, site: Path, python: str) -> list[str]:
    """Install every wheel in ``wheels`` into ``site`` (no index, no dependencies)."""
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    if not any(Path(w).name.startswith("clipresc-") for w in found):
        raise SystemExit(f"gpu_check: no clipresc wheel in {wheels} (run `make gpu-wheels`)")
    cmd = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site)]
    subprocess.run([*cmd, *found], check=True, stdout=subprocess.DEVNULL)
    return [Path(w).name for w in found]


def render_text(report: dict[str, object]) -> str:
    """The human-readable report."""
    lines = [
        "clipresc GPU check",
        f"  started {report['started']}, {report['seconds']:.0f} s, result: {report['result']}",
        f"  python {report['python']}, {report['platform']}",
        "  devices: " + ("; ".join(report["devices"]) or "none found"),  # type: ignore[arg-type]
        "  libraries: " + ", ".join(f"{k} {v}" for k, v in report["libraries"].items()),  # type: ignore[attr-defined]
        "  wheels: " + (", ".join(report["wheels"]) or "none"),  # type: ignore[arg-type]
        "",
    ]
    for s in report["steps"]:  # type: ignore[attr-defined]
        lines.append(f"{s['status']:8s} {s['name']:24s} {s['seconds']:6.1f} s  rc={s['rc']}")
        for note in s["notes"]:
            lines.append(f"         {note}")
        if s["tail"]:
            tail = s["tail"].rstrip().splitlines()[-15:]
            lines += ["         | " + t for t in tail]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="report folder (created)")
    ap.add_argument("--wheels", type=Path, help="folder of wheels to install first")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps")
    ap.add_argument("--dry-run", action="store_true", help="plan and report, run nothing")
    ap.add_argument("--devices", help="a ';'-separated device list instead of nvidia-smi")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    env = dict(os.environ)
    wheels: list[str] = []
    if args.wheels is not None:
        if not args.wheels.is_dir():
            ap.error(f"--wheels {args.wheels} is not a folder")
        site = out / "site"
        if not args.dry_run:
            wheels = install_wheels(args.wheels, site, python)
        else:
            wheels = sorted(w.name for w in args.wheels.glob("*.whl"))
        env["PYTHONPATH"] = str(site) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    devs = [d for d in args.devices.split(";") if d] if args.devices is not None else devices()
    steps = plan(python, out)
    if not devs:
        for s in steps:
            s.status = "skipped"
            s.notes.append("no CUDA device")
    elif not args.dry_run:
        for s in steps:
            remaining = args.budget - (time.perf_counter() - t_start)
            run_step(s, env, out / f"{s.name}.log", remaining)
    ran = [s for s in steps if s.status not in ("planned", "skipped")]
    result = (
        "dry run"
        if args.dry_run
        else "no device"
        if not devs
        else "passed"
        if ran and all(s.status == "passed" for s in ran)
        else "failed"
    )
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "seconds": time.perf_counter() - t_start,
        "result": result,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": devs,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "wheels": wheels,
        "budget_s": args.budget,
        "steps": [asdict(s) for s in steps],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    text = render_text(report)
    (out / "report.txt").write_text(text)
    print(text, end="")
    return {"passed": 0, "dry run": 0, "no device": 2}.get(result, 1)


if __name__ == "__main__":
    sys.exit(main())
