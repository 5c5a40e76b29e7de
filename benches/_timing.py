"""Small helpers shared by the benchmarks: the median of N repeats after warm-up, and the
table and log formatting (``p_label``, ``fmt``, ``log``).

The repeat count adapts to a time budget: at least ``min_repeats`` timed calls, then more
until ``budget_s`` of timed calls have been spent or ``max_repeats`` is reached. A call
that is slow on its own (warm-up longer than ``slow_call_s``) is timed only
``min_repeats_slow`` times so that very slow baselines stay affordable.
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass
class Timing:
    """Result of one measurement; times in seconds."""

    median: float
    min: float
    max: float
    repeats: int
    warmup: int
    samples: list[float] = field(repr=False, default_factory=list)

    @property
    def median_ms(self) -> float:
        return self.median * 1e3

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["median_ms"] = self.median_ms
        d["samples"] = [round(s, 9) for s in self.samples]
        return d


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    min_repeats: int = 3,
    max_repeats: int = 100,
    budget_s: float = 1.0,
    slow_call_s: float = 2.0,
    min_repeats_slow: int = 1,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then an adaptive number of timed calls.

    The garbage collector is disabled while timing (and restored afterwards).
    """
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        slowest_warm = 0.0
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            slowest_warm = max(slowest_warm, time.perf_counter() - t0)
        if slowest_warm > slow_call_s:
            min_repeats = min(min_repeats, min_repeats_slow)
            max_repeats = min(max_repeats, min_repeats)
        samples: list[float] = []
        spent = 0.0
        while len(samples) < max_repeats and (len(samples) < min_repeats or spent < budget_s):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            samples.append(dt)
            spent += dt
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(
        median=statistics.median(samples),
        min=min(samples),
        max=max(samples),
        repeats=len(samples),
        warmup=warmup,
        samples=samples,
    )


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[Timing]:
    """Time the calls in turn, ``repeats`` rounds after one warm-up round, so that their
    ratios are taken under the same load (the machine may be shared)."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for fn, out in zip(fns, samples):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [
        Timing(statistics.median(v), min(v), max(v), len(v), warmup=1, samples=v) for v in samples
    ]


def p_label(p: float) -> str:
    """``p`` for a table: ``inf`` or the shortest float text."""
    return "inf" if math.isinf(p) else f"{p:g}"


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def fmt(v: float | None, spec: str) -> str:
    """``v`` formatted with ``spec``, or ``-`` right-aligned in its width when missing."""
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return format("-", f">{width or 1}s") if v is None else format(v, spec)


def cpu_model() -> str:
    """The CPU's model name for every benchmark's header, with its family, model and widest
    vector extension (a VM may report a bare "AMD EPYC": family and model then tell the
    generation); Linux reads ``/proc/cpuinfo``, elsewhere the platform's answer."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info = fh.read().splitlines()
    except OSError:
        info = []
    fields: dict[str, str] = {}  # the first processor's fields
    for line in info:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"{fields['model name']} (family {fields.get('cpu family', '?')}, model "
        f"{fields.get('model', '?')}; {simd})"
    )
