"""Count the package's Python function calls made by one ``perturb``.

Run from the repository root:

    .venv/bin/python benches/bench_calls.py [--json OUT]

A call counts when ``sys.setprofile`` reports a ``"call"`` event whose code object's file
lies inside the ``clipresc`` package directory (compiled functions and other libraries do
not count). Each case is run once untimed first, so that imports and caches made on first
use are not counted. The cases:

- NumPy: ``clipresc.perturb`` on a 1 x 10 float32 batch (L2, bounds (0, 1));
- torch forward: ``clipresc.frameworks.torch.perturb`` with ``x`` requiring grad;
- torch backward: ``y.sum().backward()`` on that result.

The counts are reported against the targets of issue 17 (NumPy <= 15, torch forward <= 40,
torch backward <= 30), together with the median per-call time of the NumPy and torch
forward calls. A benchmark reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
from types import FrameType
from typing import Any, Callable

import numpy as np

import _support  # noqa: F401  (tests/ on sys.path)
from _timing import cpu_model, measure
from support.workloads import image_and_noise

TARGETS = {"numpy": 15, "torch forward": 40, "torch backward": 30}


def count_calls(fn: Callable[[], object], package_dir: str) -> tuple[int, collections.Counter[str]]:
    """The number of package calls ``fn()`` makes, and the count per ``file:function``."""
    per_function: collections.Counter[str] = collections.Counter()
    prefix = package_dir.rstrip(os.sep) + os.sep

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(prefix):
            name = os.path.relpath(frame.f_code.co_filename, package_dir)
            per_function[f"{name}:{frame.f_code.co_name}"] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(per_function.values()), per_function


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--verbose", action="store_true", help="list the calls per function")
    args = ap.parse_args()

    import clipresc

    package_dir = os.path.dirname(os.path.abspath(clipresc.__file__))
    print(f"# CPU: {cpu_model()}; Python {platform.python_version()}; package {package_dir}")
    x, d = image_and_noise((1, 10), np.float32, seed=0)

    cases: dict[str, Callable[[], object]] = {"numpy": lambda: clipresc.perturb(x, d, 0.5)}
    timed: dict[str, Callable[[], object]] = dict(cases)
    try:
        import torch

        from clipresc.frameworks import torch as ctorch
    except ImportError:
        torch = None
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        td = torch.from_numpy(d)
        state: dict[str, Any] = {}

        def forward() -> object:
            state["y"] = ctorch.perturb(tx, td, 0.5)
            return state["y"]

        def backward() -> object:
            state["y"].sum().backward()
            return tx.grad

        cases["torch forward"] = forward
        cases["torch backward"] = backward
        txn = torch.from_numpy(x)
        timed["torch"] = lambda: ctorch.perturb(txn, td, 0.5)

    results: dict[str, Any] = {"cpu": cpu_model(), "calls": {}, "median_us": {}}
    print(f"{'case':<16} {'calls':>6} {'target':>7}")
    for name, fn in cases.items():
        if name == "torch backward":
            forward()
            backward()  # warm-up
            forward()
        else:
            fn()  # warm-up: first-use imports and caches are not counted
        total, per_function = count_calls(fn, package_dir)
        results["calls"][name] = total
        mark = "ok" if total <= TARGETS[name] else "above"
        print(f"{name:<16} {total:>6} {TARGETS[name]:>7}  {mark}")
        if args.verbose:
            for key, n in per_function.most_common():
                print(f"    {n:4d}  {key}")
    print("\nper-call time, 1 x 10 float32, L2 (median)")
    for name, fn in timed.items():
        t = measure(fn, warmup=20, min_repeats=200, max_repeats=20000, budget_s=1.0)
        results["median_us"][name] = t.median * 1e6
        print(f"  {name:<14} {t.median * 1e6:8.2f} us  ({t.repeats} runs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
