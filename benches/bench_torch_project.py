"""Benchmark of ``clipresc.project`` on PyTorch tensors against the NumPy path.

Run from the repository root:

    .venv/bin/python benches/bench_torch_project.py [--quick]

0. The header names the CPU model.
1. Per-call overhead on 1 x 10 float32 (p = 2): ``clipresc.project`` on NumPy arrays, on
   tensors (no grad; forward + backward), and a ``torch.compile``d call.
2. 128 x 3 x 32 x 32 float32 (images, ``z = x + 0.05 noise``, eps = 1, bounds (0, 1)) for
   p in {1, 2, inf}: the NumPy path (``project``, and ``project`` + ``project_vjp``), the
   tensor forward, forward + backward (x, z, eps) under autograd and under
   ``torch.func.grad``, ``torch.func.vmap`` of a per-example function, and a
   ``torch.compile``d (inductor, ``fullgraph``) forward + backward.
3. The array-API path (what CUDA tensors take), run on CPU tensors: its backward with the
   forward's residual against the same backward solving again.

Ratios are against the row named in brackets, measured in the same run. A benchmark
reports; it never fails.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

import numpy as np

import _support  # noqa: F401  (tests/ on sys.path)
from _timing import Timing, cpu_model, measure, p_label
from support.workloads import image_and_noise

SHAPE = (128, 3, 32, 32)


def _m(fn: Callable[[], object], quick: bool) -> Timing:
    return measure(fn, warmup=2, min_repeats=3, max_repeats=200, budget_s=0.3 if quick else 1.0)


def _print(name: str, t: Timing, ref: Timing | None = None, ref_name: str = "") -> None:
    ratio = f"  {t.median / ref.median:6.2f}x [{ref_name}]" if ref is not None else ""
    print(f"  {name:<44s} {t.median * 1e3:9.3f} ms{ratio}")


def bench_tiny(torch: Any, clipresc: Any, quick: bool) -> None:
    print("\nper call, 1 x 10 float32, p = 2 (median):")
    x, d = image_and_noise((1, 10), np.float32, seed=0)
    z = x + 0.3 * d
    tx, tz = torch.from_numpy(x), torch.from_numpy(z)
    zg = tz.clone().requires_grad_()
    ref = _m(lambda: clipresc.project(x, z, 0.5), quick)
    _print("numpy   project", ref)
    _print(
        "torch   project (no grad)", _m(lambda: clipresc.project(tx, tz, 0.5), quick), ref, "numpy"
    )

    def fwd_bwd() -> None:
        torch.autograd.grad(clipresc.project(tx, zg, 0.5).sum(), (zg,))

    _print("torch   forward + backward", _m(fwd_bwd, quick), ref, "numpy")
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: clipresc.project(a, b, 0.5), fullgraph=True)
    _print("torch   compiled call (inductor)", _m(lambda: compiled(tx, tz), quick), ref, "numpy")


def bench_images(torch: Any, clipresc: Any, quick: bool) -> None:
    x, d = image_and_noise(SHAPE, np.float32, seed=1)
    z = x + np.float32(0.05) * d
    for p in (1.0, 2.0, math.inf):
        print(f"\n{'x'.join(map(str, SHAPE))} float32, p = {p_label(p)}, eps = 1 (median):")
        _images_p(torch, clipresc, x, z, p, quick)


def _images_p(torch: Any, clipresc: Any, x: Any, z: Any, p: float, quick: bool) -> None:
    g = np.ones_like(x)
    tx, tz, tg = torch.from_numpy(x), torch.from_numpy(z), torch.from_numpy(g)
    xg, zg = tx.clone().requires_grad_(), tz.clone().requires_grad_()
    eg = torch.ones(SHAPE[0], requires_grad=True)
    e = torch.ones(SHAPE[0])
    ref = _m(lambda: clipresc.project(x, z, 1.0, p=p), quick)
    _print("numpy   project", ref)

    def np_both() -> None:
        clipresc.project(x, z, 1.0, p=p)
        clipresc.project_vjp(x, z, 1.0, g, p=p)

    both = _m(np_both, quick)
    _print("numpy   project + project_vjp", both, ref, "numpy project")
    fwd = _m(lambda: clipresc.project(tx, tz, 1.0, p=p), quick)
    _print("torch   forward", fwd, ref, "numpy project")

    def fwd_bwd() -> None:
        torch.autograd.grad(clipresc.project(xg, zg, eg, p=p), (xg, zg, eg), tg)

    _print("torch   forward + backward (x, z, eps)", _m(fwd_bwd, quick), both, "numpy both")
    grad = torch.func.grad(lambda a, b, c: clipresc.project(a, b, c, p=p).sum(), (0, 1, 2))
    _print("torch   torch.func.grad", _m(lambda: grad(tx, tz, e), quick), both, "numpy both")
    per_example = torch.func.vmap(lambda a, b: clipresc.project(a, b, 1.0, p=p, axis="all"))
    _print("torch   vmap per example", _m(lambda: per_example(tx, tz), quick), fwd, "fwd")
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: clipresc.project(a, b, c, p=p).sum(), fullgraph=True)

    def compiled_step() -> None:
        torch.autograd.grad(compiled(xg, zg, eg), (xg, zg, eg))

    _print("torch   compiled forward + backward", _m(compiled_step, quick), both, "numpy both")


def bench_array_api_path(torch: Any, clipresc: Any, quick: bool) -> None:
    from clipresc.backends import generic_project

    x, d = image_and_noise(SHAPE, np.float32, seed=2)
    tx, tz = torch.from_numpy(x), torch.from_numpy(x + np.float32(0.05) * d)
    g = torch.ones(SHAPE)
    bounds = (0.0, 1.0)
    print("\narray-API path (CUDA tensors' path) on CPU tensors, backward (median):")
    for p in (1.0, 2.0, math.inf):
        _, residual = generic_project.project_residual(tx, tz, 1.0, p, bounds, None)
        again = _m(lambda p=p: generic_project.project_vjp(tx, tz, 1.0, g, p, bounds, None), quick)
        reuse = _m(
            lambda p=p, r=residual: generic_project.project_vjp(tx, tz, 1.0, g, p, bounds, None, r),
            quick,
        )
        _print(f"p = {p_label(p)}: solving again", again)
        _print(f"p = {p_label(p)}: with the forward's residual", reuse, again, "solving again")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing budgets")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch not installed")
        return 0
    import clipresc

    print(f"clipresc.project on PyTorch tensors; CPU: {cpu_model()}; torch {torch.__version__}")
    print(f"threads: torch {torch.get_num_threads()}; python {sys.version.split()[0]}")
    bench_tiny(torch, clipresc, args.quick)
    bench_images(torch, clipresc, args.quick)
    bench_array_api_path(torch, clipresc, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
