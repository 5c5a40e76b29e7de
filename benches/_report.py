"""The command line and the printed report shared by the workload benchmarks
(``bench_core.py`` on the CPU, ``bench_gpu.py`` on CUDA): the options, the choice of
workloads, the table grouped by workload, the PASS/MISS block and the JSON file; and
:func:`dump`, the ``--json`` file of the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, TypeVar

from _timing import fmt

W = TypeVar("W")


def parser(description: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options every workload benchmark takes: ``--quick``, ``--json``, ``--seed`` and
    ``--workload`` (repeatable)."""
    ap = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", metavar="OUT", help="write all medians and ratios as JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workload", action="append", metavar="SUBSTR", help="only workloads matching (repeatable)"
    )
    return ap


def chosen(workloads: Sequence[W], patterns: list[str] | None, name: Callable[[W], str]) -> list[W]:
    """The workloads whose name contains one of ``patterns`` (all without any)."""
    return [wl for wl in workloads if not patterns or any(s in name(wl) for s in patterns)]


def print_table(
    rows: list[dict[str, Any]], head: str, line: Callable[[dict[str, Any], list[str]], str]
) -> None:
    """``head``, a rule, then ``line(row, notes)`` per row, a blank line between workloads.
    ``notes`` starts with the row's error and the benchmark appends its own; the row's
    ``note`` comes last."""
    print(head)
    print("-" * len(head) + "-" * 24)
    last = None
    for r in rows:
        if last is not None and r["workload"] != last:
            print()
        last = r["workload"]
        notes = [f"ERROR {r['error']}"] if r.get("error") else []
        text = line(r, notes)
        print(text + "; ".join(notes + ([r["note"]] if r.get("note") else [])))


def print_targets(targets: list[dict[str, Any]], none_text: str, t_start: float) -> float:
    """The PASS/MISS block and the total time since ``t_start`` (returned, seconds)."""
    print("\ntargets")
    if not targets:
        print(f"  ({none_text}: no targets checked)")
    for t in targets:
        print(f"  {t['status']:4s}  {t['target']:60s} {fmt(t['value'], '.2f')}")
    elapsed = time.perf_counter() - t_start
    n_pass = sum(t["status"] == "PASS" for t in targets)
    print(f"\n{n_pass}/{len(targets)} targets met; total time {elapsed:.0f} s")
    return elapsed


def write_json(path: str | None, meta: dict[str, Any], elapsed: float, **parts: Any) -> None:
    """``{"meta": meta (with elapsed_s), **parts}`` to ``path`` when one was asked for."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta["elapsed_s"] = elapsed
    out.write_text(json.dumps({"meta": meta, **parts}, indent=1, default=float) + "\n")
    print(f"wrote {out}")


def dump(path: str | None, data: Any) -> None:
    """``data`` as indented JSON to ``path`` when one was asked for."""
    if path:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=2)
