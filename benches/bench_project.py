"""CPU benchmark of ``clipresc.project`` against the memory floor and NumPy baselines.

Run from the repository root:

    .venv/bin/python benches/bench_project.py [--quick] [--p 2 [--p 1 ...]] [--shape 64x3x32x32 ...]

For 64x3x224x224 and 1024x3x32x32 float32 (``--quick``: 8x3x224x224 and 256x3x32x32), with
``z`` a PGD-like step from ``x`` and ``eps`` half the clipped size of ``z - x`` (so that the
ball constrains every vector), it times (median of adaptive repeats after warm-up):

1. the memory floor ``np.add(x, z, out=o)`` (NumPy, one thread);
2. ``clipresc.project`` for p in {1, 2, inf}, as for ``perturb`` in ``bench_core``: with
   ``out=`` against that floor, and allocating its result against the allocating floor
   ``np.add(x, z)`` (targets for both: <= 1.5x for p = 2, <= 2x for p = 1); the allocating
   call is also shown against the ``out=`` floor;
3. p = 1: a NumPy transcription of the sort-based L1 projection onto the ball and [0, 1] of
   AutoAttack's L1-APGD ("Mind the box", Croce & Hein 2021), written here from the
   algorithm's description (sort the 2n breakpoints, cumulative sums of the slopes, search
   for the segment, interpolate), checked first against the exact high-precision oracle
   of ``tests/project_oracle.py`` on its kind of input; the ratio of its time to ours;
4. p = 2: project-then-clip (``clip(x + min(1, eps / ||d||) d)``), its time and how much
   farther from ``z`` its result is than the exact projection.

``--p`` times only the given p (and only their comparisons: the sort-based L1 with p = 1,
project-then-clip with p = 2). ``--shape`` times other shapes instead (float32, the first
axis the batch), without target checks: the targets are for the two shapes above. A
benchmark reports; it never fails.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

from _timing import measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import clipresc
from project_oracle import bisect_project


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def l1_sorted(x: np.ndarray, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Projection of ``z`` onto ``{||y - x||_1 <= eps} ∩ [0, 1]`` by sorting every row.

    Per element the move towards ``z`` is ``min(max(|d| - lam, 0), s)`` (``d = z - x``,
    ``s`` the room to the box): a ramp with breakpoints ``|d| - s`` (it starts moving) and
    ``|d|`` (it stops). Sorting all 2n breakpoints, the total move at each breakpoint follows
    from cumulative sums of the slope; a search finds the segment where it crosses ``eps``.
    """
    rows, n = x.shape
    d = (z - x).astype(np.float64)
    b = np.abs(d)
    s = np.where(d > 0, 1.0 - x, x).astype(np.float64)
    inside = np.minimum(b, s).sum(axis=1) <= eps
    start = np.maximum(b - s, 0.0)
    pts = np.concatenate([start, b], axis=1)
    # slope change when passing each breakpoint from the right (lam decreasing): +1 at
    # |d| (the element starts to count), -1 at max(|d| - s, 0) (it saturates)
    step = np.concatenate([-np.ones((rows, n)), np.ones((rows, n))], axis=1)
    order = np.argsort(-pts, axis=1, kind="stable")
    sp = np.take_along_axis(pts, order, axis=1)
    slope = np.cumsum(np.take_along_axis(step, order, axis=1), axis=1)
    # h at each sorted breakpoint, walking from the largest lam (h = 0) downwards
    gaps = np.concatenate([np.zeros((rows, 1)), sp[:, :-1] - sp[:, 1:]], axis=1)
    prev_slope = np.concatenate([np.zeros((rows, 1)), slope[:, :-1]], axis=1)
    h = np.cumsum(gaps * prev_slope, axis=1)
    k = np.argmax(h >= eps[:, None], axis=1)
    k = np.maximum(k, 1)
    r = np.arange(rows)
    lam = sp[r, k] + (h[r, k] - eps) / np.where(slope[r, k - 1] > 0, slope[r, k - 1], 1.0)
    lam = np.where(inside, 0.0, lam)[:, None]
    moved = np.sign(d) * np.minimum(np.maximum(b - lam, 0.0), s)
    return (x + moved).astype(x.dtype)


def check_transcription(rng: np.random.Generator) -> float:
    """Largest deviation of :func:`l1_sorted` from the exact oracle on [0, 1] images."""
    x = rng.uniform(0, 1, (6, 40))
    z = x + rng.standard_normal(x.shape)
    eps = rng.uniform(0.1, 5.0, 6)
    got = l1_sorted(x, z, eps)
    want = np.stack(
        [bisect_project(x[i], z[i], np.zeros(40), np.ones(40), eps[i], 1) for i in range(6)]
    )
    return float(np.abs(got - want).max())


def bench_shape(
    shape: tuple[int, ...], rng: np.random.Generator, ps: tuple[float, ...] = (1.0, 2.0, math.inf)
) -> list[tuple[str, str, float, float]]:
    """Times one workload and prints its rows; returns its target checks."""
    targets = []
    x = rng.uniform(0, 1, shape).astype(np.float32)
    z = (x + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    rows = shape[0]
    x2, z2 = x.reshape(rows, -1), z.reshape(rows, -1)
    cz = np.clip(z2, 0, 1) - x2
    o = np.empty_like(x)
    floor = measure(lambda: np.add(x, z, out=o)).median
    floor_alloc = measure(lambda: np.add(x, z)).median
    name = "x".join(map(str, shape))
    print(
        f"\n--- {name} float32; floors np.add(x, z, out=o): {floor * 1e3:.2f} ms, "
        f"allocating np.add(x, z): {floor_alloc * 1e3:.2f} ms"
    )
    times: dict[float, float] = {}
    limits = {2.0: 1.5, 1.0: 2.0}
    for p in ps:
        eps = 0.5 * np.linalg.norm(cz, ord=p, axis=1)
        t = measure(functools.partial(clipresc.project, x, z, eps, p=p, out=o)).median
        t_alloc = measure(functools.partial(clipresc.project, x, z, eps, p=p)).median
        times[p] = t_alloc
        print(
            f"project p={p:g}: out= {t * 1e3:8.2f} ms {t / floor:5.2f}x floor; "
            f"allocating {t_alloc * 1e3:8.2f} ms {t_alloc / floor_alloc:5.2f}x allocating floor "
            f"({t_alloc / floor:5.2f}x out= floor)"
        )
        if p in limits:
            lim = limits[p]
            targets.append((name, f"p={p:g} out= <= {lim:g}x", t / floor, lim))
            targets.append((name, f"p={p:g} alloc <= {lim:g}x", t_alloc / floor_alloc, lim))
    if 1.0 in times:
        _compare_sorted(x2, z2, cz, times[1.0])
    if 2.0 in times:
        _compare_clip(x2, z2, cz, floor)
    return targets


def _compare_sorted(x2: np.ndarray, z2: np.ndarray, cz: np.ndarray, t_ours: float) -> None:
    """The sort-based L1 projection's time against ours, and their largest difference."""
    eps1 = 0.5 * np.abs(cz).sum(axis=1)
    t_sort = measure(lambda: l1_sorted(x2, z2, eps1), max_repeats=5).median
    y_sort = l1_sorted(x2, z2, eps1)
    y_ours = clipresc.project(x2, z2, eps1, p=1)
    print(
        f"p=1 sort-based (AutoAttack-style, NumPy): {t_sort * 1e3:8.2f} ms "
        f"= {t_sort / t_ours:.1f}x clipresc.project; "
        f"max |diff| {np.abs(y_sort - y_ours).max():.1e}"
    )


def _compare_clip(x2: np.ndarray, z2: np.ndarray, cz: np.ndarray, floor: float) -> None:
    """Project-then-clip's time, and how much farther from ``z`` its result is."""
    eps2 = 0.5 * np.linalg.norm(cz, axis=1)

    def naive() -> np.ndarray:
        d = z2 - x2
        nrm = np.linalg.norm(d, axis=1, keepdims=True)
        return np.clip(x2 + d * np.minimum(1.0, eps2[:, None] / nrm), 0, 1)

    t_naive = measure(naive).median
    y_naive = naive()
    y_exact = clipresc.project(x2, z2, eps2, p=2)
    dn = np.linalg.norm(y_naive - z2, axis=1)
    de = np.linalg.norm(y_exact - z2, axis=1)
    print(
        f"p=2 project-then-clip: {t_naive * 1e3:8.2f} ms ({t_naive / floor:.2f}x floor); "
        f"distance to z: exact {de.mean():.4f}, project-then-clip {dn.mean():.4f} "
        f"(+{100 * (dn / de - 1).mean():.2f}% on average, max +{100 * (dn / de - 1).max():.2f}%)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--p", type=float, action="append", help="time only this p (repeatable; default 1, 2, inf)"
    )
    ap.add_argument(
        "--shape",
        action="append",
        help="time this shape instead, e.g. 64x3x32x32 (repeatable; no target checks)",
    )
    args = ap.parse_args()
    ps = tuple(args.p) if args.p else (1.0, 2.0, math.inf)
    shapes: list[tuple[int, ...]] = (
        [(8, 3, 224, 224), (256, 3, 32, 32)]
        if args.quick
        else [
            (64, 3, 224, 224),
            (1024, 3, 32, 32),
        ]
    )
    if args.shape:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shape]
    print(f"clipresc.project benchmark; CPU: {cpu_model()}, {os.cpu_count()} CPUs")
    rng = np.random.default_rng(0)
    diff = check_transcription(rng)  # always: it draws from `rng`, which makes the data
    if 1.0 in ps:
        print(f"sort-based L1 transcription vs exact oracle: max |diff| = {diff:.2e}")
    targets: list[tuple[str, str, float, float]] = []
    for shape in shapes:
        targets += bench_shape(shape, rng, ps)
    if args.shape:
        return
    print("\ntargets:")
    for name, what, ratio, limit in targets:
        print(f"  {name:>16} {what:>20}: {ratio:5.2f}x  {'PASS' if ratio <= limit else 'MISS'}")


if __name__ == "__main__":
    main()
