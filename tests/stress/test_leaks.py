"""Resident memory stays flat over a million small calls and a thousand large ones."""

from __future__ import annotations

import gc
import os
from typing import Any, Callable

import numpy as np

import clipresc

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def _calls_small() -> list[tuple[str, Callable[[], Any]]]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 32)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    eps = np.array([0.5, 1.0, 2.0, 10.0])
    lo, hi = np.zeros(32, np.float32), np.ones(32, np.float32)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("scale", lambda: clipresc.scale(x, d, eps)),
        ("perturb", lambda: clipresc.perturb(x, d, 1.0, p=1.0, bounds=(lo, hi))),
        ("perturb-inf", lambda: clipresc.perturb(x, d, 0.1, p=np.inf)),
        ("scale-raise", lambda: _raises(lambda: clipresc.scale(x, d, 100.0, unreachable="raise"))),
        ("error", lambda: _raises(lambda: clipresc.scale(x, d, -1.0))),
    ]
    if hasattr(clipresc, "noise"):
        calls.append(("noise", lambda: clipresc.noise(x, 1.0, seed=1)))
    if hasattr(clipresc, "scale_vjp"):
        calls.append(("scale_vjp", lambda: clipresc.scale_vjp(x, d, 1.0, 1.0)))
    return calls


def _raises(f: Callable[[], Any]) -> None:
    try:
        f()
    except ValueError:
        return
    raise AssertionError("expected ValueError")


def _track(name: str, f: Callable[[], Any], n: int, warm: int, checkpoints: int) -> list[float]:
    for _ in range(warm):
        f()
    gc.collect()
    samples = [rss_mib()]
    step = n // checkpoints
    for _ in range(checkpoints):
        for _ in range(step):
            f()
        gc.collect()
        samples.append(rss_mib())
    return samples


def test_a_million_small_calls(report: Any) -> None:
    calls = _calls_small()
    total = 1_000_000
    per = total // len(calls)
    growth = {}
    start = rss_mib()
    for name, f in calls:
        s = _track(name, f, per, warm=2000, checkpoints=10)
        growth[name] = round(s[-1] - s[0], 2)
        # a leak of 8 bytes per call would add more than 1 MiB here
        assert s[-1] - s[0] < 4.0, f"{name}: RSS grew {s[-1] - s[0]:.1f} MiB over {per} calls: {s}"
    report(
        "a_million_small_calls",
        calls=per * len(calls),
        per_function=per,
        rss_start_mib=round(start, 1),
        rss_end_mib=round(rss_mib(), 1),
        growth_mib=growth,
    )


def test_a_thousand_large_calls(report: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (16, 3, 224, 224)).astype(np.float32)  # 9.6 MB per array
    d = rng.standard_normal(x.shape).astype(np.float32)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("perturb", lambda: clipresc.perturb(x, d, 10.0)),
        ("scale", lambda: clipresc.scale(x, d, 10.0, p=1.0)),
    ]
    if hasattr(clipresc, "noise"):
        calls.append(("noise", lambda: clipresc.noise(x, 10.0, seed=2)))
    if hasattr(clipresc, "perturb_vjp"):
        calls.append(("perturb_vjp", lambda: clipresc.perturb_vjp(x, d, 10.0, d)))
    per = max(1000 // len(calls), 250)
    growth = {}
    for name, f in calls:
        s = _track(name, f, per, warm=10, checkpoints=5)
        growth[name] = round(s[-1] - s[0], 2)
        # less than one array's worth (9.2 MiB) of growth over the run
        assert s[-1] - s[0] < 8.0, f"{name}: RSS grew {s[-1] - s[0]:.1f} MiB: {s}"
    report(
        "a_thousand_large_calls",
        calls=per * len(calls),
        array_mib=round(x.nbytes / 2**20, 1),
        rss_end_mib=round(rss_mib(), 1),
        growth_mib=growth,
    )
