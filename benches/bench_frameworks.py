"""Benchmark of the framework integrations (PyTorch, JAX) against the NumPy path.

Run from the repository root:

    .venv/bin/python benches/bench_frameworks.py [--quick] [--eps EPS] [--json OUT]

0. The header names the CPU model.
1. Per-call overhead on a tiny input (1 x 10, float32, L2): ``clipresc.perturb`` on NumPy
   (and the compiled call it makes, alone), ``clipresc.frameworks.torch.perturb`` (eager,
   no grad; with ``x`` requiring grad; forward + backward), the JAX function eagerly and
   jitted.
2. Throughput at 64 x 3 x 224 x 224 float32 (L2, eps = 50 unless ``--eps``, bounds (0, 1)):
   the NumPy path; torch CPU forward; torch forward + backward (gradients to x, delta and
   eps); the same computed with plain torch ops as the naive rescale-then-clip
   (``eta = eps / ||delta||``, then ``clamp``) forward and forward + backward; jitted JAX on
   CPU.
3. Per-call overhead of the public ``clipresc.perturb`` (dispatch included) on 1 x 10
   arrays of each library (NumPy, torch, torch with grad, a ``torch.compile``d call, JAX,
   TensorFlow).
4. A ``torch.compile``d training step (inductor, ``fullgraph=True``) with
   ``clipresc.perturb`` inside against the same step with the naive rescale-then-clip; the
   ratio is reported.

The NumPy path, the torch forward and the torch forward + backward are timed in turn (one
call of each per round), so their ratios hold on a shared machine. Prints medians and
ratios and a targets block (torch forward within 1.2x of the NumPy path; torch forward +
backward at most 3x the forward). A benchmark reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

import _report
import _support  # noqa: F401  (tests/ on sys.path)
from _timing import Timing, cpu_model, interleaved, measure
from support.workloads import image_and_noise

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyTorch's PyPI wheel bundles Triton, whose LLVM aborts TensorFlow's in one process (see the
# README); inductor's CPU code needs no Triton
if importlib.util.find_spec("tensorflow") is not None and "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]

BIG = (64, 3, 224, 224)
EPS = 50.0


def _row(name: str, t: Timing, ref: Timing | None = None, unit: str = "ms") -> dict[str, Any]:
    scale = 1e6 if unit == "us" else 1e3
    ratio = t.median / ref.median if ref is not None else None
    rtxt = f"{ratio:7.2f}x" if ratio is not None else "        "
    print(f"  {name:<44} {t.median * scale:10.2f} {unit}  {rtxt}  ({t.repeats} runs)")
    return {"name": name, "median_s": t.median, "ratio": ratio, "repeats": t.repeats}


def _per_call(quick: bool) -> Callable[[Callable[[], object]], Timing]:
    """The timer of the per-call overhead rows: many repeats of a tiny call."""
    budget = 0.3 if quick else 1.0

    def m(fn: Callable[[], object]) -> Timing:
        return measure(fn, warmup=20, min_repeats=200, max_repeats=20000, budget_s=budget)

    return m


def bench_tiny(quick: bool) -> dict[str, Any]:
    import clipresc

    m = _per_call(quick)
    x, d = image_and_noise((1, 10), np.float32, seed=0)

    print("per-call overhead, 1 x 10 float32 (median per call):")
    out: dict[str, Any] = {}
    ref = m(lambda: clipresc.perturb(x, d, 0.5))
    out["numpy"] = _row("numpy  clipresc.perturb", ref, unit="us")
    # the compiled call alone, with the arguments the API hands it: the rest is Python
    y, eta = np.empty_like(x), np.empty(1, np.float32)
    core = m(lambda: clipresc._clipresc.perturb_into(x, d, 0.0, 1.0, 0.5, 2.0, y, eta))
    out["core"] = _row("numpy  compiled perturb_into alone", core, ref, "us")
    try:
        import torch

        from clipresc.frameworks import torch as ct

        tx, td = torch.from_numpy(x), torch.from_numpy(d)
        out["torch"] = _row(
            "torch  frameworks.torch.perturb", m(lambda: ct.perturb(tx, td, 0.5)), ref, "us"
        )
        txg = tx.clone().requires_grad_()
        ct.perturb(txg, td, 0.5)  # the first operator call imports torch's dispatch machinery
        out["torch_grad"] = _row(
            "torch  perturb, x requires_grad (forward)",
            m(lambda: ct.perturb(txg, td, 0.5)),
            ref,
            "us",
        )
        teg = torch.tensor([0.5], requires_grad=True)
        tg = torch.ones(1, 10)

        def tiny_fwd_bwd() -> None:
            y = ct.perturb(txg, td, teg)
            torch.autograd.grad(y, (txg, teg), tg)

        out["torch_fwd_bwd"] = _row(
            "torch  perturb forward + backward (x, eps)", m(tiny_fwd_bwd), ref, "us"
        )
    except ImportError:
        print("  torch not installed")
    try:
        import jax
        import jax.numpy as jnp

        from clipresc.frameworks import jax as cj

        jx, jd = jnp.asarray(x), jnp.asarray(d)
        out["jax_eager"] = _row(
            "jax    frameworks.jax.perturb (eager)",
            m(lambda: cj.perturb(jx, jd, 0.5).block_until_ready()),
            ref,
            "us",
        )
        f = jax.jit(lambda a, b: cj.perturb(a, b, 0.5))
        out["jax_jit"] = _row(
            "jax    jitted (XLA FFI on CPU)", m(lambda: f(jx, jd).block_until_ready()), ref, "us"
        )
    except ImportError:
        print("  jax not installed")
    return out


def bench_big(quick: bool, eps: float) -> dict[str, Any]:
    import clipresc

    budget = 1.0 if quick else 3.0
    x, d = image_and_noise(BIG, np.float32, seed=1)

    def m(fn: Callable[[], object]) -> Timing:
        return measure(fn, warmup=1, min_repeats=3, max_repeats=30, budget_s=budget)

    print(f"\nthroughput, {'x'.join(map(str, BIG))} float32, L2, eps={eps} (median per call):")
    out: dict[str, Any] = {}
    try:
        import torch

        from clipresc.frameworks import torch as ct
    except ImportError:
        ref = m(lambda: clipresc.perturb(x, d, eps))
        out["numpy"] = _row("numpy  clipresc.perturb", ref)
        print("  torch not installed")
    else:
        tx, td = torch.from_numpy(x), torch.from_numpy(d)
        xg = tx.clone().requires_grad_()
        dg = td.clone().requires_grad_()
        eg = torch.full((BIG[0],), eps, requires_grad=True)
        g = torch.ones(BIG)

        def fwd_bwd() -> None:
            y = ct.perturb(xg, dg, eg)
            torch.autograd.grad(y, (xg, dg, eg), g)

        # the rows that the targets compare are timed in turn
        ref, fwd, fb = interleaved(
            [lambda: clipresc.perturb(x, d, eps), lambda: ct.perturb(tx, td, eps), fwd_bwd],
            repeats=6 if quick else 15,
        )
        out["numpy"] = _row("numpy  clipresc.perturb", ref)
        out["torch_fwd"] = _row("torch  forward", fwd, ref)
        out["torch_fwd_bwd"] = _row("torch  forward + backward (x, delta, eps)", fb, fwd)

        def naive(a: Any, b: Any, e: Any) -> Any:
            norm = b.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
            return torch.clamp(a + (e.reshape(-1, 1, 1, 1) / norm) * b, 0.0, 1.0)

        out["naive_fwd"] = _row(
            "torch  naive rescale+clip forward", m(lambda: naive(tx, td, eg.detach())), fwd
        )

        def naive_fwd_bwd() -> None:
            y = naive(xg, dg, eg)
            torch.autograd.grad(y, (xg, dg, eg), g)

        out["naive_fwd_bwd"] = _row(
            "torch  naive rescale+clip forward + backward", m(naive_fwd_bwd), fwd
        )
    try:
        import jax
        import jax.numpy as jnp

        from clipresc.frameworks import jax as cj
    except ImportError:
        print("  jax not installed")
    else:
        jx, jd = jnp.asarray(x), jnp.asarray(d)
        f = jax.jit(lambda a, b: cj.perturb(a, b, eps))
        out["jax_jit"] = _row(
            "jax    jitted forward", m(lambda: f(jx, jd).block_until_ready()), ref
        )
        gf = jax.jit(jax.grad(lambda a, b: cj.perturb(a, b, eps).sum(), argnums=(0, 1)))
        out["jax_jit_grad"] = _row(
            "jax    jitted forward + backward", m(lambda: jax.block_until_ready(gf(jx, jd))), ref
        )
    return out


def bench_tiny_top_level(quick: bool) -> dict[str, Any]:
    """Per-call overhead of the public ``clipresc.perturb`` (dispatch included) on each
    library's 1 x 10 float32 arrays, and of a ``torch.compile``d call."""
    import clipresc

    m = _per_call(quick)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, 10)).astype(np.float32)
    d = rng.standard_normal((1, 10)).astype(np.float32)

    print("\nper-call overhead of clipresc.perturb itself, 1 x 10 float32 (median per call):")
    out: dict[str, Any] = {}
    ref = m(lambda: clipresc.perturb(x, d, 0.5))
    out["numpy"] = _row("numpy       clipresc.perturb", ref, unit="us")
    try:
        import torch
    except ImportError:
        print("  torch not installed")
    else:
        tx, td = torch.from_numpy(x), torch.from_numpy(d)
        out["torch"] = _row(
            "torch       clipresc.perturb", m(lambda: clipresc.perturb(tx, td, 0.5)), ref, "us"
        )
        txg = tx.clone().requires_grad_()
        out["torch_grad"] = _row(
            "torch       clipresc.perturb, x requires_grad",
            m(lambda: clipresc.perturb(txg, td, 0.5)),
            ref,
            "us",
        )
        compiled = torch.compile(lambda a, b: clipresc.perturb(a, b, 0.5), fullgraph=True)
        compiled(tx, td)
        out["torch_compiled"] = _row(
            "torch       torch.compile(fullgraph) call", m(lambda: compiled(tx, td)), ref, "us"
        )
    try:
        import jax.numpy as jnp
    except ImportError:
        print("  jax not installed")
    else:
        jx, jd = jnp.asarray(x), jnp.asarray(d)
        out["jax"] = _row(
            "jax         clipresc.perturb (eager)",
            m(lambda: clipresc.perturb(jx, jd, 0.5).block_until_ready()),
            ref,
            "us",
        )
    try:
        import tensorflow as tf
    except ImportError:
        print("  tensorflow not installed")
    else:
        fx, fd = tf.constant(x), tf.constant(d)
        out["tensorflow"] = _row(
            "tensorflow  clipresc.perturb (eager)",
            m(lambda: clipresc.perturb(fx, fd, 0.5)),
            ref,
            "us",
        )
    return out


def bench_compiled_step(quick: bool) -> dict[str, Any]:
    """A ``torch.compile``d (inductor, fullgraph) training step with ``clipresc.perturb``
    inside against the same step with the naive rescale-then-clip, timed in turn.

    Step: ``x_adv = perturb(x, delta, eps)`` (L2, eps 2, bounds (0, 1)), a small CNN,
    cross-entropy, gradients to the weights and to ``delta`` (as in adversarial training),
    an SGD update of the weights. 128 x 3 x 32 x 32 float32 (32 with ``--quick``).
    """
    try:
        import torch
    except ImportError:
        print("\n  torch not installed")
        return {}
    import clipresc

    batch = 32 if quick else 128
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32)
    labels = torch.randint(0, 10, (batch,))
    delta = torch.randn(batch, 3, 32, 32, requires_grad=True)

    def model() -> Any:
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 10),
        )

    def naive(a: Any, b: Any, eps: float) -> Any:
        norm = b.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return torch.clamp(a + (eps / norm) * b, 0.0, 1.0)

    def make_step(perturb: Callable[..., Any]) -> Callable[[], object]:
        net = model()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)

        @torch.compile(fullgraph=True)
        def loss_fn(a: Any, b: Any) -> Any:
            return torch.nn.functional.cross_entropy(net(perturb(a, b, 2.0)), labels)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            delta.grad = None
            loss_fn(x, delta).backward()
            opt.step()

        return step

    print(
        f"\ntorch.compile'd training step (inductor, fullgraph), {batch}x3x32x32 float32, "
        "gradients to the weights and delta (median per step):"
    )
    t0 = time.perf_counter()
    ours, base = make_step(clipresc.perturb), make_step(naive)
    ours(), base()  # compile both
    print(f"  (compiling both steps took {time.perf_counter() - t0:.1f} s)")
    t_ours, t_base = interleaved([ours, base], repeats=20 if quick else 60)
    out = {
        "naive": _row("naive rescale-then-clip step", t_base),
        "clipresc": _row("clipresc.perturb step (ratio vs naive)", t_ours, t_base),
    }
    return out


# --------------------------------------------------------------------------- JAX (XLA FFI)

JAX_CASES = ((BIG, EPS), ((128, 3, 32, 32), 3.0))
JAX_TARGETS: tuple[tuple[str, str, str, str, float | None], ...] = (
    ("jit perturb / numpy, 64x3x224x224 <= 1.3", "64x3x224x224", "jit", "numpy", 1.3),
    ("jit perturb / numpy, 128x3x32x32 <= 2", "128x3x32x32", "jit", "numpy", 2.0),
    ("jit value_and_grad / jit forward <= 3 (224)", "64x3x224x224", "jit_vag", "jit", 3.0),
    ("jit value_and_grad / jit forward <= 3 (32)", "128x3x32x32", "jit_vag", "jit", 3.0),
    ("eager jax / numpy, 64x3x224x224 <= 1.3", "64x3x224x224", "eager", "numpy", 1.3),
    ("eager jax / numpy, 128x3x32x32 <= 1.3", "128x3x32x32", "eager", "numpy", 1.3),
    ("jit noise / numpy noise, 64x3x224x224", "64x3x224x224", "jit_noise", "numpy_noise", None),
    ("jit noise / numpy noise, 128x3x32x32", "128x3x32x32", "jit_noise", "numpy_noise", None),
    ("jit value_and_grad / naive one (224)", "64x3x224x224", "jit_vag", "naive_vag", None),
    ("jit value_and_grad / naive one (32)", "128x3x32x32", "jit_vag", "naive_vag", None),
    ("jit project p=2 / numpy project (224)", "64x3x224x224", "jit_project", "numpy_project", None),
    ("jit project p=2 / numpy project (32)", "128x3x32x32", "jit_project", "numpy_project", None),
    ("jit project p=2 / pure_callback (224)", "64x3x224x224", "jit_project", "cb_project", None),
    ("jit project p=2 / pure_callback (32)", "128x3x32x32", "jit_project", "cb_project", None),
)


#: The rows that run the old pure_callback path, for comparison only.
_CALLBACK_ROWS = frozenset({"callback", "callback_vag", "cb_project"})


def _interleaved_apart(
    rows: dict[str, tuple[str, Callable[[], Any]]], apart: frozenset[str], repeats: int
) -> dict[str, Any]:
    """Times of ``rows`` (name -> (label, call)), the rows named in ``apart`` timed in a
    group of their own. A ``pure_callback`` call leaves JAX's host-callback machinery
    (its threads and the GIL hand-over) busy for a while after it returns: timed in turn
    with it, every other row pays for it (at 1x10 the eager call went from 18 to 68 us,
    NumPy from 7 to 24 us), which no program that uses only the FFI path would see."""
    names = [k for k in rows if k not in apart]
    times = interleaved([rows[k][1] for k in names], repeats=repeats)
    got = dict(zip(names, times))
    rest = [k for k in rows if k in apart]
    if rest:
        got.update(zip(rest, interleaved([rows[k][1] for k in rest], repeats=repeats)))
    return {k: got[k] for k in rows}


def _jax_callback_jit(fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    """``fn`` compiled ahead of time for ``args`` with the FFI switched off: the
    pure_callback path, for comparison. JAX's trace caches are cleared around it, so that
    no other ``jit`` of ``fn`` reuses this trace."""
    import jax

    from clipresc.frameworks import _jax_ffi

    jax.clear_caches()
    real = _jax_ffi.available
    _jax_ffi.available = lambda: False  # type: ignore[assignment]
    try:
        compiled = jax.jit(fn).lower(*args).compile()
    finally:
        _jax_ffi.available = real  # type: ignore[assignment]
        jax.clear_caches()
    return compiled  # type: ignore[no-any-return]


def _bench_jax_case(shape: tuple[int, ...], eps: float, quick: bool) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import clipresc
    from clipresc.frameworks import jax as cj

    name = "x".join(map(str, shape))
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, shape).astype(np.float32)
    d = rng.standard_normal(shape).astype(np.float32)
    jx, jd = jnp.asarray(x), jnp.asarray(d)

    def fwd(a: Any, b: Any, eps: float = eps) -> Any:
        return cj.perturb(a, b, eps)

    def loss(a: Any, b: Any) -> Any:
        return fwd(a, b).sum()

    def naive(a: Any, b: Any, eps: float = eps) -> Any:
        norm = jnp.linalg.norm(b.reshape(b.shape[0], -1), axis=1)
        return jnp.clip(a + (eps / norm).reshape(-1, 1, 1, 1) * b, 0.0, 1.0)

    jit_f = jax.jit(fwd)
    jit_vag = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    cb_f = _jax_callback_jit(fwd, jx, jd)
    cb_vag = _jax_callback_jit(jax.value_and_grad(loss, argnums=(0, 1)), jx, jd)
    naive_f = jax.jit(naive)
    jit_noise = jax.jit(lambda a, s: clipresc.noise(a, eps, seed=s))
    seed = jnp.int32(0)
    naive_vag = jax.jit(jax.value_and_grad(lambda a, b: naive(a, b).sum(), argnums=(0, 1)))
    z = x + d  # outside the ball: the projection is on its boundary
    jz = jnp.asarray(z)
    jit_project = jax.jit(lambda a, b: clipresc.project(a, b, eps, p=2))
    cb_project = _jax_callback_jit(lambda a, b: clipresc.project(a, b, eps, p=2), jx, jz)
    rows = {
        "numpy": ("numpy  clipresc.perturb", lambda: clipresc.perturb(x, d, eps)),
        "eager": ("jax    eager perturb", lambda: fwd(jx, jd).block_until_ready()),
        "jit": ("jax    jit perturb (XLA FFI)", lambda: jit_f(jx, jd).block_until_ready()),
        "jit_vag": (
            "jax    jit value_and_grad (x, delta) (XLA FFI)",
            lambda: jax.block_until_ready(jit_vag(jx, jd)),
        ),
        "callback": (
            "jax    jit perturb (pure_callback)",
            lambda: cb_f(jx, jd).block_until_ready(),
        ),
        "callback_vag": (
            "jax    jit value_and_grad (pure_callback)",
            lambda: jax.block_until_ready(cb_vag(jx, jd)),
        ),
        "naive": (
            "jax    jit naive rescale+clip",
            lambda: naive_f(jx, jd).block_until_ready(),
        ),
        "naive_vag": (
            "jax    jit naive rescale+clip value_and_grad",
            lambda: jax.block_until_ready(naive_vag(jx, jd)),
        ),
        "numpy_noise": (
            "numpy  clipresc.noise (seed 0)",
            lambda: clipresc.noise(x, eps, seed=0),
        ),
        "jit_noise": (
            "jax    jit clipresc.noise, traced seed (XLA FFI)",
            lambda: jit_noise(jx, seed).block_until_ready(),
        ),
        "numpy_project": (
            "numpy  clipresc.project p=2",
            lambda: clipresc.project(x, z, eps, p=2),
        ),
        "jit_project": (
            "jax    jit clipresc.project p=2 (XLA FFI)",
            lambda: jit_project(jx, jz).block_until_ready(),
        ),
        "cb_project": (
            "jax    jit clipresc.project p=2 (pure_callback)",
            lambda: cb_project(jx, jz).block_until_ready(),
        ),
    }
    big = shape == BIG
    repeats = (5 if quick else 15) if big else 40
    got = _interleaved_apart(rows, _CALLBACK_ROWS, repeats)
    print(f"  {name} float32, L2, eps={eps} (median per call; ratio to numpy):")
    res = {k: _row(label, got[k], got["numpy"]) for k, (label, _) in rows.items()}
    return res


def bench_jax(quick: bool) -> dict[str, Any]:
    """JAX on CPU: the NumPy path, eager JAX, jitted forward and value_and_grad through the
    XLA FFI handlers (and through pure_callback), a naive jitted rescale-then-clip; the
    rows of one shape are timed in turn, so their ratios hold on a shared machine."""
    import clipresc

    try:
        import jax
        import jax.numpy as jnp

        from clipresc.frameworks import _jax_ffi
        from clipresc.frameworks import jax as cj
    except ImportError:
        print("\nJAX: not installed")
        return {}
    print(
        f"\nJAX {jax.__version__} on CPU, XLA FFI handlers: "
        f"{'yes' if _jax_ffi.available() else 'no (pure_callback)'}; CPU: {cpu_model()}"
    )
    out: dict[str, Any] = {}
    for shape, eps in JAX_CASES:
        out["x".join(map(str, shape))] = _bench_jax_case(shape, eps, quick)
    print("  1x10 float32 (per-call overhead; ratio to numpy):")
    x1 = np.random.default_rng(0).uniform(0, 1, (1, 10)).astype(np.float32)
    d1 = np.random.default_rng(1).standard_normal((1, 10)).astype(np.float32)
    j1, k1 = jnp.asarray(x1), jnp.asarray(d1)
    f1 = jax.jit(lambda a, b: cj.perturb(a, b, 0.5))
    c1 = _jax_callback_jit(lambda a, b: cj.perturb(a, b, 0.5), j1, k1)
    tiny_rows = {
        "numpy": ("numpy  clipresc.perturb", lambda: clipresc.perturb(x1, d1, 0.5)),
        "eager": ("jax    eager perturb", lambda: cj.perturb(j1, k1, 0.5).block_until_ready()),
        "jit": ("jax    jit perturb (XLA FFI)", lambda: f1(j1, k1).block_until_ready()),
        "callback": ("jax    jit perturb (pure_callback)", lambda: c1(j1, k1).block_until_ready()),
    }
    got = _interleaved_apart(tiny_rows, _CALLBACK_ROWS, 300 if quick else 2000)
    out["1x10"] = {
        k: _row(label, got[k], got["numpy"], "us") for k, (label, _) in tiny_rows.items()
    }
    print("  targets:")
    res: dict[str, Any] = {}
    for label, case, a, b, limit in JAX_TARGETS:
        r = out[case][a]["median_s"] / out[case][b]["median_s"]
        if limit is None:  # reported, no target
            print(f"    {label:<46} {r:6.2f}")
            res[label] = {"ratio": r}
            continue
        verdict = "PASS" if r <= limit else "MISS"
        print(f"    {label:<46} {r:6.2f}  {verdict}")
        res[label] = {"ratio": r, "pass": r <= limit}
    out["targets"] = res
    return out


def targets(big: dict[str, Any]) -> dict[str, Any]:
    print("\ntargets:")
    res: dict[str, Any] = {}
    checks = [
        ("torch forward / numpy <= 1.2", "torch_fwd", "numpy", 1.2),
        ("torch forward+backward / forward <= 3", "torch_fwd_bwd", "torch_fwd", 3.0),
    ]
    for label, a, b, limit in checks:
        if a in big and b in big:
            r = big[a]["median_s"] / big[b]["median_s"]
            verdict = "PASS" if r <= limit else "MISS"
            print(f"  {label:<42} {r:6.2f}  {verdict}")
            res[label] = {"ratio": r, "pass": r <= limit}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter time budgets")
    ap.add_argument("--eps", type=float, default=EPS, help=f"eps of the large case ({EPS})")
    ap.add_argument("--json", metavar="OUT", help="write the medians and ratios as JSON")
    args = ap.parse_args(argv)
    import clipresc

    print(
        f"clipresc {clipresc.__version__}, Python {platform.python_version()}, "
        f"{cpu_model()}, {os.cpu_count()} CPUs, Rust VJP: "
        f"{'yes' if hasattr(clipresc, 'perturb_vjp') else 'no (array-API VJP on NumPy)'}"
    )
    tiny = bench_tiny(args.quick)
    tiny_top = bench_tiny_top_level(args.quick)
    step = bench_compiled_step(args.quick)
    big = bench_big(args.quick, args.eps)
    res = {"tiny": tiny, "tiny_top_level": tiny_top, "compiled_step": step, "big": big}
    res["targets"] = targets(big)
    res["jax"] = bench_jax(args.quick)
    _report.dump(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
