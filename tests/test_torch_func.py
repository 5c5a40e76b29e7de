"""PyTorch beyond eager autograd: ``torch.compile(fullgraph=True)`` on the top-level
functions, ``torch.func`` (grad, vjp, jacrev, vmap with a batching rule), the double-backward
error, ``channels_last`` and ``meta`` tensors, and inputs clipresc refuses (sparse, nested)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clipresc  # noqa: E402
from clipresc.frameworks import torch as ct  # noqa: E402
from support.fd import central_diff  # noqa: E402
from support.framework_cases import achieved_size, grad_bounds, grad_problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _inputs(seed: int = 0) -> tuple[Any, Any, Any]:
    x, d, eps = grad_problem(seed)
    return torch.from_numpy(x), torch.from_numpy(d), torch.from_numpy(eps)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_compile_fullgraph_top_level(fn: str) -> None:
    """clipresc.perturb / scale themselves trace in one graph; values and gradients match
    eager mode, with tensor bounds and a per-vector eps tensor."""
    x, d, eps = _inputs()
    lo, hi = (torch.from_numpy(b) for b in grad_bounds())
    f = getattr(clipresc, fn)

    def loss(a: Any, b: Any, e: Any) -> Any:
        out = f(a, b, e, p=3.0, bounds=(lo, hi))
        return (out * out).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    args = tuple(t.clone().requires_grad_() for t in (x, d, eps))
    got = torch.autograd.grad(compiled(*args), args)
    want = torch.autograd.grad(loss(*args), args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    explained = torch._dynamo.explain(loss)(*args)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


_FIRST_CALLS = {
    "perturb": """
        def f(a, b):
            y = clipresc.perturb(a, b, 0.7, bounds=([0.1], 1.0)) + clipresc.scale(a, b, 0.7)
            return y + clipresc.noise(a, 0.3, seed=1)
        """,
    "project": """
        def f(a, b):
            return clipresc.project(a, a + b, 0.7, p=1, bounds=(0.05, 1.0))
        """,
}


@pytest.mark.parametrize("first", sorted(_FIRST_CALLS))
def test_compile_first_call_imports_nothing_untraceable(first: str) -> None:
    """A fresh process whose first clipresc call is inside torch.compile(fullgraph=True)
    (the integration module is imported while tracing) gives the eager values."""
    code = (
        textwrap.dedent(
            """
        import warnings, torch, clipresc
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        x = torch.rand(4, 3, 5, 5, dtype=torch.float64) * 0.8 + 0.1
        d = torch.randn(4, 3, 5, 5, dtype=torch.float64)
        """
        )
        + textwrap.dedent(_FIRST_CALLS[first])
        + textwrap.dedent(
            """
        y = torch.compile(f, backend="aot_eager", fullgraph=True)(x, d)
        print(bool(torch.equal(y, f(x, d))))
        """
        )
    )
    env = {"PYTHONPATH": str(ROOT / "python"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_compile_inductor_channels_last_training_step() -> None:
    """A compiled step (inductor) keeps channels_last and matches eager gradients."""
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    d = torch.randn(2, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 3, 1, 1, dtype=torch.float64, requires_grad=True)

    def step(a: Any, b: Any) -> Any:
        y = clipresc.perturb(a, b, 0.7)
        return torch.nn.functional.conv2d(y, w).square().mean()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    (got,) = torch.autograd.grad(compiled(x, d), (w,))
    (want,) = torch.autograd.grad(step(x, d), (w,))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- torch.func


def _fd_loss(x: np.ndarray, d: np.ndarray, eps: np.ndarray, c: np.ndarray) -> float:
    y = clipresc.perturb(x, d, eps, p=3.0)
    return float((c * y).sum())


def test_func_grad_matches_finite_differences() -> None:
    x, d, eps = _inputs()
    c = torch.from_numpy(np.random.default_rng(3).standard_normal(tuple(x.shape)))

    def loss(a: Any, b: Any, e: Any) -> Any:
        return (c * ct.perturb(a, b, e, p=3.0)).sum()

    grads = torch.func.grad(loss, argnums=(0, 1, 2))(x, d, eps)
    args = (x.numpy(), d.numpy(), eps.numpy(), c.numpy())
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g.numpy(), central_diff(_fd_loss, args, i), atol=1e-6)


def test_func_vjp_and_jacrev_agree_with_autograd() -> None:
    x, d, eps = _inputs(1)
    lo, hi = (torch.from_numpy(b) for b in grad_bounds())

    def f(a: Any, b: Any, e: Any, low: Any) -> Any:
        return ct.perturb(a, b, e, p=2.0, bounds=(low, hi))

    out, pullback = torch.func.vjp(f, x, d, eps, lo)
    cot = torch.randn_like(out)
    got = pullback(cot)
    leaves = tuple(t.clone().requires_grad_() for t in (x, d, eps, lo))
    want = torch.autograd.grad(f(*leaves), leaves, cot)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    # jacrev (vmap over the backward) against one autograd row per output element
    jac = torch.func.jacrev(f, argnums=(0, 2))(x, d, eps, lo)
    flat = f(*leaves).reshape(-1)
    for k in range(0, flat.numel(), 5):
        gx, ge = torch.autograd.grad(flat[k], (leaves[0], leaves[2]), retain_graph=True)
        torch.testing.assert_close(jac[0].reshape(flat.numel(), -1)[k], gx.reshape(-1))
        torch.testing.assert_close(jac[1].reshape(flat.numel(), -1)[k], ge.reshape(-1))


@pytest.mark.usefixtures("no_vmap_fallback")
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_vmap_per_example_equals_batched(fn: str) -> None:
    """vmap of a per-example function (axis='all') runs the batching rule (the fallback is
    disabled: a missing rule raises) and gives exactly the batched result."""
    x, d, _ = _inputs()
    eps = torch.tensor([0.9, 1.6, 0.4], dtype=torch.float64)
    f = getattr(clipresc, fn)
    batched = f(x, d, eps, p=3.0)
    per_example = torch.func.vmap(lambda a, b, e: f(a, b, e, p=3.0, axis="all"))(x, d, eps)
    assert torch.equal(per_example, batched)
    # unbatched eps and tensor bounds, vmapped x only
    lo, hi = (torch.from_numpy(b) for b in grad_bounds())
    got = torch.func.vmap(lambda a: f(a, d[0], 0.5, bounds=(lo, hi), axis="all"))(x)
    assert torch.equal(got, f(x, d[0].expand_as(x), 0.5, bounds=(lo, hi)))


@pytest.mark.usefixtures("no_vmap_fallback")
def test_vmap_default_axis_inside_is_per_channel() -> None:
    """Without axis='all' the default (all but the first axis) applies to each example:
    every channel of one (3, 2, 4) example is a vector of size eps (documented)."""
    x, d, _ = _inputs()
    y = torch.func.vmap(lambda a, b: clipresc.perturb(a, b, 0.3))(x, d)
    size = achieved_size(x.numpy(), y.numpy(), 2.0, (2,))
    np.testing.assert_allclose(size, 0.3, rtol=1e-12)


@pytest.mark.usefixtures("no_vmap_fallback")
def test_per_sample_gradients() -> None:
    """vmap(grad): per-example gradients equal one autograd call per example."""
    x, d, eps = _inputs(2)
    w = torch.randn(2, 4, dtype=torch.float64)

    def loss(a: Any, b: Any, e: Any) -> Any:
        return (ct.perturb(a, b, e, p=1.5, axis="all") * w).sum().sin()

    got = torch.func.vmap(torch.func.grad(loss, argnums=(0, 2)))(x, d, eps)
    for i in range(x.shape[0]):
        a, e = x[i].clone().requires_grad_(), eps[i].clone().requires_grad_()
        ga, ge = torch.autograd.grad(loss(a, d[i], e), (a, e))
        torch.testing.assert_close(got[0][i], ga, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1][i], ge, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- double backward


def test_double_backward_raises_clear_error() -> None:
    x, d, eps = _inputs()
    xr = x.clone().requires_grad_()
    for fn in ("perturb", "scale"):
        msg = f"does not support second derivatives .* clipresc.{fn} is not itself"
        with pytest.raises(NotImplementedError, match=msg):
            torch.autograd.gradgradcheck(lambda a, fn=fn: getattr(ct, fn)(a, d, eps), (xr,))
    with pytest.raises(NotImplementedError, match="second derivatives"):
        inner = torch.func.grad(lambda a: ct.perturb(a, d[0], 0.5).sin().sum())
        torch.func.grad(lambda a: inner(a).sum())(x[0])
    # first derivatives with create_graph=True still work (only differentiating them raises)
    (g,) = torch.autograd.grad(ct.perturb(xr, d, eps).sum(), (xr,), create_graph=True)
    torch.testing.assert_close(g, torch.autograd.grad(ct.perturb(xr, d, eps).sum(), (xr,))[0])


# --------------------------------------------------------------------------- layouts, meta


@pytest.mark.parametrize("grad", [False, True])
def test_channels_last_in_channels_last_out(grad: bool) -> None:
    rng = np.random.default_rng(5)
    xc = torch.from_numpy(rng.uniform(0.1, 0.9, (2, 3, 4, 5)))
    dc = torch.from_numpy(rng.standard_normal((2, 3, 4, 5)))
    x = xc.contiguous(memory_format=torch.channels_last).requires_grad_(grad)
    d = dc.contiguous(memory_format=torch.channels_last)
    y = clipresc.perturb(x, d, 0.8, p=3.0)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.stride() == x.stride()
    assert torch.equal(y.detach(), clipresc.perturb(xc, dc, 0.8, p=3.0))
    if grad:
        (gx,) = torch.autograd.grad(y, (x,), torch.ones_like(y))
        assert gx.stride() == x.stride()


@pytest.mark.parametrize("axis", [None, "all", (1, 3), -1])
def test_meta_tensors_give_shapes(axis: Any) -> None:
    x = torch.empty(4, 3, 5, 6, device="meta", dtype=torch.float32)
    lo = torch.empty(3, 1, 1, device="meta")
    nd = 4
    vec = (
        tuple(range(1, nd))
        if axis is None
        else tuple(range(nd))
        if axis == "all"
        else tuple(a % nd for a in ((axis,) if isinstance(axis, int) else axis))
    )
    eta_shape = tuple(1 if a in vec else s for a, s in enumerate(x.shape))
    y = clipresc.perturb(x, x, 1.0, bounds=(lo, 1.0), axis=axis)
    eta = clipresc.scale(x, x, 1.0, axis=axis)
    assert (y.device.type, tuple(y.shape), y.dtype) == ("meta", tuple(x.shape), torch.float32)
    assert (eta.device.type, tuple(eta.shape)) == ("meta", eta_shape)
    xr = torch.empty(4, 3, 5, 6, device="meta", requires_grad=True)
    (g,) = torch.autograd.grad(ct.perturb(xr, x, 1.0, axis=axis).sum(), (xr,))
    assert (g.device.type, tuple(g.shape)) == ("meta", tuple(x.shape))


# --------------------------------------------------------------------------- refused inputs


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda t: t.to_sparse(), r"x is a sparse tensor \(layout torch.sparse_coo\).*to_dense"),
        (lambda t: t.to_sparse_csr(), r"x is a sparse tensor \(layout torch.sparse_csr\)"),
        (
            lambda t: torch.nested.nested_tensor([t[0], t[1, :2]]),
            r"x is a nested tensor; .*axis='all'",
        ),
    ],
)
def test_sparse_and_nested_refused(make: Any, pattern: str) -> None:
    x = torch.rand(2, 3, dtype=torch.float64)
    bad = make(x)
    for call in (
        lambda: clipresc.perturb(bad, bad, 0.5),
        lambda: clipresc.scale(bad, bad, 0.5),
        lambda: clipresc.perturb_vjp(bad, bad, 0.5, bad),
        lambda: clipresc.noise(bad, 0.5, seed=0),
    ):
        with pytest.raises(TypeError, match=pattern):
            call()


def test_tensor_p_gets_static_hint() -> None:
    x = torch.rand(2, 3)
    with pytest.raises(TypeError, match=r"p must be a real number; got Tensor; p must be a stat"):
        clipresc.perturb(x, x, 0.5, p=torch.tensor(2.0))


# --------------------------------------------------------------------------- noise


def test_noise_compiles_fullgraph_with_eager_bits() -> None:
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.uniform(0.1, 0.9, (4, 3, 5, 5)).astype(np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    eps = torch.tensor([0.5, 1.0, 1.5, 2.0])
    lo = torch.full((3, 1, 1), 0.05)

    def f(a: Any, e: Any) -> Any:
        n1 = clipresc.noise(a, e, seed=11, bounds=(lo, 1.0), p=3.0)
        n2 = clipresc.noise(a, 0.7, seed=12, axis="all", distribution="laplace")
        return n1, n2

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(x, eps)
    want = f(x, eps)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert got[0].stride() == x.stride()
    assert not torch.equal(got[0], clipresc.noise(x, eps, seed=12, bounds=(lo, 1.0), p=3.0))


def test_noise_compiled_seed_none_is_fresh_each_call() -> None:
    x = torch.rand(3, 40, dtype=torch.float64) * 0.8 + 0.1
    xr = x.clone().requires_grad_()

    def f(a: Any) -> Any:
        return clipresc.noise(a, 0.5), clipresc.noise(a, 0.5)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    a1, b1 = compiled(xr)
    a2, _ = compiled(xr)
    assert not torch.equal(a1, b1)  # two calls in one graph are not merged
    assert not torch.equal(a1, a2)  # each run draws anew
    assert not a1.requires_grad
    for y in (a1, b1, a2):
        np.testing.assert_allclose((y - x).norm(dim=1).numpy(), 0.5, rtol=1e-12)


def test_noise_compiled_refuses_seed_sequence() -> None:
    seq = np.random.SeedSequence(3)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a: clipresc.noise(a, 0.5, seed=seq), fullgraph=True)
    with pytest.raises(Exception, match=r"under torch.compile, seed must be None or a Python"):
        compiled(torch.rand(2, 4))


@pytest.mark.usefixtures("no_vmap_fallback")
@pytest.mark.parametrize(
    ("axis", "eps_kind", "in_dims"),
    [
        (None, "scalar", (0, None, 0, None)),
        (None, "rows", (None, 0, 0, 0)),
        ((0, 2), "eta", (0, 0, None, 0)),
        ((0, 2), "rows", (0, None, 0, None)),
        (-1, "eta", (None, None, 0, 0)),
        ("all", "scalar", (0, 0, 0, 0)),
    ],
)
@pytest.mark.parametrize(
    ("fn", "p"),
    [("perturb", 3.0), ("scale", 3.0), ("project", 1.0), ("project", 2.0), ("project", math.inf)],
)
def test_vmap_rules_against_a_loop(
    fn: str, p: float, axis: Any, eps_kind: str, in_dims: tuple
) -> None:
    """Batching rules for any mix of batched and unbatched x, delta (project's z), eps
    (scalar, one per vector, or eta-shaped) and a tensor bound: values and per-example
    gradients equal a Python loop over the examples (project's bounds get none)."""
    from clipresc._args import vector_axes

    rng = np.random.default_rng(9)
    size, shape = 3, (2, 3, 4)
    vec = vector_axes(axis, len(shape))
    rows = math.prod(s for a, s in enumerate(shape) if a not in vec)
    eta_shape = tuple(1 if a in vec else s for a, s in enumerate(shape))
    eshape = {"scalar": (), "rows": (rows,), "eta": eta_shape}[eps_kind]
    full = [
        rng.uniform(0.1, 0.9, (size, *shape)),
        rng.standard_normal((size, *shape)),
        rng.uniform(0.3, 1.3, (size, *eshape)),
        rng.uniform(0.0, 0.05, (size, 3, 1)),
    ]
    args = [torch.from_numpy(a if d == 0 else a[0]) for a, d in zip(full, in_dims)]
    f = getattr(clipresc, fn)
    argnums = (0, 1, 2) if fn == "project" else (0, 1, 2, 3)

    def g(a: Any, b: Any, e: Any, low: Any) -> Any:
        return f(a, b, e, p=p, bounds=(low, 1.0), axis=axis)

    def h(*a: Any) -> Any:
        return g(*a).sin().sum()

    def example(i: int) -> list[Any]:
        return [a[i] if d == 0 else a for a, d in zip(args, in_dims)]

    got = torch.func.vmap(g, in_dims=in_dims)(*args)
    want = torch.stack([g(*example(i)) for i in range(size)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    grads = torch.func.vmap(torch.func.grad(h, argnums=argnums), in_dims=in_dims)(*args)
    for i in range(size):
        leaves = [t.clone().requires_grad_(k in argnums) for k, t in enumerate(example(i))]
        wrt = leaves[: len(argnums)]
        for g_vmap, g_loop in zip(grads, torch.autograd.grad(h(*leaves), wrt)):
            torch.testing.assert_close(g_vmap[i], g_loop, rtol=1e-10, atol=1e-12)
