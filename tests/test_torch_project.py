"""``clipresc.project`` on PyTorch tensors beyond eager autograd: ``torch.compile``
(fullgraph), ``torch.func`` (grad and jacrev against finite differences and the closed-form
``project_vjp``, vmap; vmap against a loop and a fresh process's first call compiled are
in ``test_torch_func.py``), the double-backward error, ``channels_last``,
``meta`` tensors, ``opcheck``, and the array-API (non-CPU) path run on CPU tensors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clipresc  # noqa: E402
from clipresc.backends import generic_project  # noqa: E402
from clipresc.frameworks import torch as ct  # noqa: E402
from clipresc.frameworks import torch_project  # noqa: E402
from support.fd import central_diff  # noqa: E402

PS = [1.0, 2.0, math.inf]


def _problem(seed: int, shape: tuple[int, ...] = (3, 2, 4)) -> dict[str, np.ndarray]:
    """float64 ``x, z, eps, lo, hi`` with per-element bounds and one ``eps`` per vector:
    the first vectors end on the ball (some elements clipped), the last has ``clip(z)``
    inside it. Values are generic: no element sits on a kink."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-0.2, 0.1, shape[1:])
    hi = rng.uniform(0.8, 1.2, shape[1:])
    x = lo + (hi - lo) * rng.uniform(0.1, 0.9, shape)
    z = x + 0.6 * rng.standard_normal(shape)
    gap = (np.clip(z, lo, hi) - x).reshape(shape[0], -1)
    frac = np.linspace(0.3, 0.8, shape[0])
    frac[-1] = 1.3
    return {"x": x, "z": z, "lo": lo, "hi": hi, "frac": frac, "gap": gap}


def _eps(prob: dict[str, np.ndarray], p: float) -> np.ndarray:
    return np.asarray(prob["frac"] * np.linalg.norm(prob["gap"], ord=p, axis=1))


def _t(a: np.ndarray) -> Any:
    return torch.from_numpy(np.array(a))


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("p", PS)
def test_compile_fullgraph_matches_eager(p: float) -> None:
    """clipresc.project traces in one graph; values and the gradients of x, z and a
    per-vector eps equal eager mode, with per-element tensor bounds."""
    prob = _problem(0)
    lo, hi = _t(prob["lo"]), _t(prob["hi"])
    w = _t(np.random.default_rng(1).standard_normal(prob["x"].shape))

    def loss(a: Any, b: Any, e: Any) -> Any:
        return (w * clipresc.project(a, b, e, p=p, bounds=(lo, hi))).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    args = tuple(_t(a).requires_grad_() for a in (prob["x"], prob["z"], _eps(prob, p)))
    got_y, want_y = compiled(*args), loss(*args)
    torch.testing.assert_close(got_y, want_y, rtol=0, atol=0)
    got = torch.autograd.grad(compiled(*args), args)
    want = torch.autograd.grad(loss(*args), args)
    for g, v in zip(got, want):
        torch.testing.assert_close(g, v, rtol=0, atol=0)
    explained = torch._dynamo.explain(loss)(*args)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_compile_dynamic_shapes() -> None:
    """With dynamic=True (p then traces as a symbolic float) one compiled function serves
    batches of several sizes, with the eager values and gradients."""

    def f(a: Any, b: Any, lo: Any, hi: Any) -> Any:
        return clipresc.project(a, b, 0.5, p=1.0, bounds=(lo, hi))

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", dynamic=True, fullgraph=True)
    for rows in (3, 5, 7):
        prob = _problem(rows, (rows, 3, 4))
        x, z, lo, hi = (_t(prob[k]) for k in ("x", "z", "lo", "hi"))
        z.requires_grad_()
        y, want = compiled(x, z, lo, hi), f(x, z, lo, hi)
        torch.testing.assert_close(y, want, rtol=0, atol=0)
        (got,) = torch.autograd.grad(y.sum(), (z,))
        torch.testing.assert_close(got, torch.autograd.grad(want.sum(), (z,))[0], rtol=0, atol=0)


def test_compile_inductor_channels_last_float32() -> None:
    """The reproduction of the issue: float32 NCHW, inductor, forward and backward; and a
    channels_last step keeps its layout."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    z = (x + 0.1 * torch.randn(x.shape, generator=gen)).requires_grad_()
    torch._dynamo.reset()
    f = torch.compile(lambda a, b: clipresc.project(a, b, 1.0, p=2.0), fullgraph=True)
    y = f(x, z)
    torch.testing.assert_close(y, clipresc.project(x, z, 1.0, p=2.0), rtol=0, atol=0)
    (got,) = torch.autograd.grad(y.sum(), (z,))
    (want,) = torch.autograd.grad(clipresc.project(x, z, 1.0, p=2.0).sum(), (z,))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    xc = x.contiguous(memory_format=torch.channels_last)
    zc = z.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    yc = torch.compile(lambda a, b: clipresc.project(a, b, 0.5, p=1.0), fullgraph=True)(xc, zc)
    assert yc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yc, clipresc.project(x, z.detach(), 0.5, p=1.0), rtol=0, atol=0)


# --------------------------------------------------------------------------- torch.func


@pytest.mark.parametrize("p", PS)
def test_func_grad_matches_fd_and_closed_form(p: float) -> None:
    prob = _problem(2)
    eps = _eps(prob, p)
    bounds = (prob["lo"], prob["hi"])
    c = np.random.default_rng(3).standard_normal(prob["x"].shape)
    ct_, bt = _t(c), (_t(prob["lo"]), _t(prob["hi"]))

    def loss(a: Any, b: Any, e: Any) -> Any:
        return (ct_ * clipresc.project(a, b, e, p=p, bounds=bt)).sum()

    def fd_loss(a: np.ndarray, b: np.ndarray, e: np.ndarray) -> float:
        return float((c * clipresc.project(a, b, e, p=p, bounds=bounds)).sum())

    grads = torch.func.grad(loss, argnums=(0, 1, 2))(_t(prob["x"]), _t(prob["z"]), _t(eps))
    closed = clipresc.project_vjp(prob["x"], prob["z"], eps, c, p=p, bounds=bounds)
    args = (prob["x"], prob["z"], eps)
    for i, (g, key) in enumerate(zip(grads, ("x", "z", "eps"))):
        np.testing.assert_allclose(g.numpy(), closed[key], rtol=0, atol=1e-14, err_msg=key)
        np.testing.assert_allclose(g.numpy(), central_diff(fd_loss, args, i), atol=1e-6)
    assert np.abs(closed["eps"]).max() > 0.1  # the ball is active: eps has a gradient


@pytest.mark.parametrize("p", PS)
def test_jacrev_matches_fd_and_closed_form(p: float) -> None:
    """The full Jacobians in x, z and eps of a small problem: every row against
    project_vjp of a unit cotangent, every column against central differences."""
    prob = _problem(4, (2, 5))
    eps = _eps(prob, p)
    bounds = (prob["lo"], prob["hi"])
    bt = (_t(prob["lo"]), _t(prob["hi"]))

    def f(a: Any, b: Any, e: Any) -> Any:
        return clipresc.project(a, b, e, p=p, bounds=bt)

    jac = torch.func.jacrev(f, argnums=(0, 1, 2))(_t(prob["x"]), _t(prob["z"]), _t(eps))
    args = [prob["x"], prob["z"], eps]
    n_out = prob["x"].size
    for k in range(n_out):
        unit = np.zeros(n_out)
        unit[k] = 1.0
        closed = clipresc.project_vjp(
            prob["x"], prob["z"], eps, unit.reshape(prob["x"].shape), p=p, bounds=bounds
        )

        def yk(a: np.ndarray, b: np.ndarray, e: np.ndarray, k: int = k) -> float:
            return float(clipresc.project(a, b, e, p=p, bounds=bounds).reshape(-1)[k])

        for i, key in enumerate(("x", "z", "eps")):
            row = jac[i].reshape(n_out, -1)[k].numpy()
            np.testing.assert_allclose(row, closed[key].reshape(-1), rtol=0, atol=1e-14)
            fd = central_diff(yk, args, i).reshape(-1)
            np.testing.assert_allclose(row, fd, atol=1e-6, err_msg=f"{key} row {k}")


@pytest.mark.usefixtures("no_vmap_fallback")
def test_vmap_per_example_equals_batched() -> None:
    """The issue's spelling: vmap of a per-example function with axis='all'."""
    prob = _problem(5, (4, 3, 8, 8))
    x, z = _t(prob["x"]), _t(prob["z"])
    bt = (_t(prob["lo"]), _t(prob["hi"]))
    for p in PS:
        per_example = torch.func.vmap(
            lambda a, b, p=p: clipresc.project(a, b, 1.0, p=p, bounds=bt, axis="all")
        )(x, z)
        want = clipresc.project(x, z, 1.0, p=p, bounds=bt)
        torch.testing.assert_close(per_example, want, rtol=0, atol=0)


# --------------------------------------------------------------------------- double backward


def test_double_backward_raises_clear_error() -> None:
    prob = _problem(6)
    x, z = _t(prob["x"]), _t(prob["z"]).requires_grad_()
    msg = "does not support second derivatives .* clipresc.project is not itself"
    with pytest.raises(NotImplementedError, match=msg):
        torch.autograd.gradgradcheck(lambda b: clipresc.project(x, b, 0.5), (z,))
    with pytest.raises(NotImplementedError, match="second derivatives"):
        inner = torch.func.grad(lambda b: clipresc.project(x[0], b, 0.5, p=1).sin().sum())
        torch.func.grad(lambda b: inner(b).sum())(z.detach()[0])
    # first derivatives with create_graph=True still work (only differentiating them raises)
    (g,) = torch.autograd.grad(clipresc.project(x, z, 0.5).sum(), (z,), create_graph=True)
    torch.testing.assert_close(g, torch.autograd.grad(clipresc.project(x, z, 0.5).sum(), (z,))[0])


# --------------------------------------------------------------------------- layouts, meta


@pytest.mark.parametrize("p", PS)
def test_channels_last_in_channels_last_out(p: float) -> None:
    prob = _problem(7, (2, 3, 4, 5))
    x = _t(prob["x"]).contiguous(memory_format=torch.channels_last).requires_grad_()
    z = _t(prob["z"]).contiguous(memory_format=torch.channels_last).requires_grad_()
    lo, hi = _t(prob["lo"]), _t(prob["hi"])
    y = clipresc.project(x, z, 0.8, p=p, bounds=(lo, hi))
    assert y.stride() == x.stride()
    want = clipresc.project(prob["x"], prob["z"], 0.8, p=p, bounds=(prob["lo"], prob["hi"]))
    np.testing.assert_array_equal(y.detach().numpy(), want)
    gx, gz = torch.autograd.grad(y, (x, z), torch.ones_like(y))
    assert gx.stride() == x.stride() and gz.stride() == z.stride()


@pytest.mark.parametrize("axis", [None, "all", (1, 3), -1])
def test_meta_tensors_give_shapes(axis: Any) -> None:
    x = torch.empty(4, 3, 5, 6, device="meta", dtype=torch.float32).contiguous(
        memory_format=torch.channels_last
    )
    lo = torch.empty(3, 1, 1, device="meta")
    y = clipresc.project(x, x, 1.0, p=1, bounds=(lo, 1.0), axis=axis)
    assert (y.device.type, tuple(y.shape), y.dtype) == ("meta", tuple(x.shape), torch.float32)
    assert y.stride() == x.stride()
    xr = torch.empty(4, 3, 5, 6, device="meta", dtype=torch.float64, requires_grad=True)
    er = torch.empty(4, device="meta", dtype=torch.float64, requires_grad=True)
    gx, ge = torch.autograd.grad(clipresc.project(xr, xr, er, axis=(1, 2, 3)).sum(), (xr, er))
    assert (gx.device.type, tuple(gx.shape)) == ("meta", tuple(xr.shape))
    assert (ge.device.type, tuple(ge.shape)) == ("meta", (4,))


# --------------------------------------------------------------------------- operators


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("p", PS)
def test_opcheck(p: float) -> None:
    prob = _problem(8)
    bounds = (_t(prob["lo"]), _t(prob["hi"]))
    x, z, eps = (_t(a).requires_grad_() for a in (prob["x"], prob["z"], _eps(prob, p)))
    args = ct._prepare_args(x, z, eps, p, bounds, None, "saturate")
    torch.library.opcheck(torch.ops.clipresc.project.default, args)
    det = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    _, residual = torch.ops.clipresc.project(*det)
    grad = torch.randn(x.shape, dtype=torch.float64)
    torch.library.opcheck(torch.ops.clipresc.project_backward.default, (grad, residual, *det))


def test_export_keeps_the_operator() -> None:
    """torch.export records clipresc::project as one operator, with the eager values."""

    class Step(torch.nn.Module):
        def forward(self, a: Any, b: Any) -> Any:
            return clipresc.project(a, b, 0.5, p=1.0)

    prob = _problem(9, (2, 3, 4, 4))
    x, z = _t(np.clip(prob["x"], 0, 1)), _t(prob["z"])
    exported = torch.export.export(Step(), (x, z))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert torch.ops.clipresc.project.default in targets
    assert torch.equal(exported.module()(x, z), clipresc.project(x, z, 0.5, p=1.0))


def test_errors_name_z() -> None:
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match=r"z must have the same shape as x"):
        clipresc.project(x, x[:1], 0.5)
    with pytest.raises(ValueError, match=r"project supports p = 1, 2 or inf; got 3"):
        clipresc.project(x, x, 0.5, p=3)
    with pytest.raises(ValueError, match=r"eps"):
        clipresc.project(x.requires_grad_(), x, torch.tensor([0.5, -1.0]))


# --------------------------------------------------------------------------- non-CPU path


class _SolveCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        solve = generic_project._Rows.solve

        def counted(rows: Any) -> Any:
            self.calls += 1
            return solve(rows)

        monkeypatch.setattr(generic_project._Rows, "solve", counted)


@pytest.mark.usefixtures("no_vmap_fallback")
@pytest.mark.parametrize("p", PS)
def test_array_api_path_backward_reuses_the_residual(
    monkeypatch: pytest.MonkeyPatch, p: float
) -> None:
    """The path of CUDA tensors, run on CPU tensors: one search in the forward, none in
    the backward (it takes the forward's residual), and the core's values and gradients,
    under autograd, torch.func.grad and vmap."""
    monkeypatch.setattr(torch_project, "_in_core", lambda *ts: False)
    counter = _SolveCounter(monkeypatch)
    prob = _problem(10)
    eps = _eps(prob, p)
    bounds = (prob["lo"], prob["hi"])
    bt = (_t(prob["lo"]), _t(prob["hi"]))
    c = np.random.default_rng(11).standard_normal(prob["x"].shape)
    x, z, e = (_t(a).requires_grad_() for a in (prob["x"], prob["z"], eps))
    y = clipresc.project(x, z, e, p=p, bounds=bt)
    assert counter.calls == 1
    want = clipresc.project(prob["x"], prob["z"], eps, p=p, bounds=bounds)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(y, (x, z, e), _t(c))
    assert counter.calls == 1
    closed = clipresc.project_vjp(prob["x"], prob["z"], eps, c, p=p, bounds=bounds)
    for g, key in zip(grads, ("x", "z", "eps")):
        np.testing.assert_allclose(g.numpy(), closed[key], rtol=0, atol=1e-9, err_msg=key)

    def loss(a: Any, b: Any, ee: Any, w: Any) -> Any:
        return (w * clipresc.project(a, b, ee, p=p, bounds=bt, axis="all")).sum()

    per_example = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1, 2)))
    per = per_example(x.detach(), z.detach(), e.detach(), _t(c))
    for g, key in zip(per, ("x", "z", "eps")):
        np.testing.assert_allclose(g.numpy(), closed[key], rtol=0, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("p", PS)
def test_generic_residual_round_trip(p: float) -> None:
    """project_residual gives project's y, and project_vjp with it equals project_vjp
    solving again (the residual encodes the multiplier and the inside rows)."""
    prob = _problem(12, (5, 7))
    eps = _eps(prob, p)
    eps[1] = 0.0
    bounds = (prob["lo"], prob["hi"])
    c = np.random.default_rng(13).standard_normal(prob["x"].shape)
    y, residual = generic_project.project_residual(prob["x"], prob["z"], eps, p, bounds, None)
    assert residual.shape == (5, 1)
    if p != math.inf:
        assert residual[-1, 0] < 0 and residual[0, 0] >= 0  # the last row is inside
    np.testing.assert_array_equal(
        y, generic_project.project(prob["x"], prob["z"], eps, p, bounds, None)
    )
    with_r = generic_project.project_vjp(prob["x"], prob["z"], eps, c, p, bounds, None, residual)
    without = generic_project.project_vjp(prob["x"], prob["z"], eps, c, p, bounds, None)
    for k in ("x", "z", "eps"):
        np.testing.assert_array_equal(with_r[k], without[k])


@pytest.mark.gpu
@pytest.mark.parametrize("p", PS)
def test_cuda_matches_cpu(monkeypatch: pytest.MonkeyPatch, p: float) -> None:
    """CUDA tensors (the array-API path on the device; ``pytest -m gpu``): values and
    gradients of the CPU tensors (the Rust core) under autograd, torch.func.grad, vmap and
    torch.compile, with one search in the forward and none in the backward."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    counter = _SolveCounter(monkeypatch)
    prob = _problem(14, (4, 3, 8, 8))
    eps = _eps(prob, p)
    c = np.random.default_rng(15).standard_normal(prob["x"].shape)
    cpu = [_t(a) for a in (prob["x"], prob["z"], eps, prob["lo"], prob["hi"], c)]
    dev = [t.cuda() for t in cpu]

    def loss(a: Any, b: Any, e: Any, lo: Any, hi: Any, w: Any) -> Any:
        return (w * clipresc.project(a, b, e, p=p, bounds=(lo, hi))).sum()

    want = torch.func.grad(loss, argnums=(0, 1, 2))(*cpu)
    leaves = [t.clone().requires_grad_() for t in dev[:3]]
    before = counter.calls
    y = clipresc.project(*leaves, p=p, bounds=(dev[3], dev[4]))
    assert counter.calls == before + 1 and y.device.type == "cuda"
    got = torch.autograd.grad(y, leaves, dev[5])
    assert counter.calls == before + 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-9)
    for g, w in zip(torch.func.grad(loss, argnums=(0, 1, 2))(*dev), want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-9)
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    for g, w in zip(torch.autograd.grad(compiled(*leaves, *dev[3:]), leaves), want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-9)
    per = torch.func.vmap(
        lambda a, b: clipresc.project(a, b, 1.0, p=p, bounds=(dev[3], dev[4]), axis="all")
    )(dev[0], dev[1])
    batched = clipresc.project(cpu[0], cpu[1], 1.0, p=p, bounds=(cpu[3], cpu[4]))
    torch.testing.assert_close(per.cpu(), batched, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- CPU residual


def _searches() -> int:
    from clipresc import _clipresc

    return int(_clipresc.project_searches())


@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ["autograd", "func", "compile"])
def test_cpu_backward_searches_nothing_and_equals_the_solving_vjp(
    p: float, dtype: Any, route: str
) -> None:
    """On CPU the residual is the core's float64 multiplier: the forward searches each
    vector once, the backward none (the core's count of searched rows), and the gradients
    are bitwise those of ``project_vjp``, which searches again; under autograd,
    ``torch.func.grad`` and ``torch.compile(fullgraph=True)``."""
    prob = _problem(21, (4, 3, 5))
    eps = _eps(prob, p)
    npd = np.float32 if dtype == torch.float32 else np.float64
    prob["eps"] = eps
    x, z, e, lo, hi = (np.asarray(prob[k], dtype=npd) for k in ("x", "z", "eps", "lo", "hi"))
    w = np.random.default_rng(22).standard_normal(x.shape).astype(npd)
    bt = (_t(lo), _t(hi))

    def loss(a: Any, b: Any, ee: Any) -> Any:
        return (_t(w) * clipresc.project(a, b, ee, p=p, bounds=bt)).sum()

    args = [_t(a) for a in (x, z, e)]
    before = _searches()
    if route == "autograd":
        args = [a.requires_grad_() for a in args]
        out = loss(*args)
        assert _searches() - before == 4
        grads = torch.autograd.grad(out, args)
    elif route == "func":
        grads = torch.func.grad(loss, argnums=(0, 1, 2))(*args)
    else:
        args = [a.requires_grad_() for a in args]
        torch._dynamo.reset()
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        grads = torch.autograd.grad(compiled(*args), args)
        before = _searches()  # compiling traced the operators; a second run counts
        grads = torch.autograd.grad(compiled(*args), args)
    assert _searches() - before == 4, "the backward searched again"
    want = clipresc.project_vjp(x, z, e, w, p=p, bounds=(lo, hi))
    for g, key in zip(grads, ("x", "z", "eps")):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g.detach().numpy(), want[key], err_msg=key)
    assert np.abs(want["eps"]).max() > 0.1  # the ball binds


def test_cpu_residual_is_the_float64_multiplier() -> None:
    """The residual of a float32 call carries the core's float64 multiplier bit for bit
    (``t`` of p = 2 against the high-precision bisection's)."""
    from project_oracle import bisect_project

    prob = _problem(23, (3, 6))
    eps = _eps(prob, 2.0)
    x, z = (np.asarray(prob[k], dtype=np.float32) for k in ("x", "z"))
    lo, hi = (np.asarray(prob[k], dtype=np.float32) for k in ("lo", "hi"))
    args = ct._prepare_args(_t(x), _t(z), _t(eps), 2.0, (_t(lo), _t(hi)), None, "saturate")
    _, residual = torch.ops.clipresc.project(*args)
    assert residual.dtype == torch.float64 and tuple(residual.shape) == (3, 1)
    t = residual.numpy().ravel()
    assert t[-1] == 1.0  # clip(z) inside the ball
    for r in range(2):
        want = bisect_project(
            x[r].astype(np.float64),
            z[r].astype(np.float64),
            lo.astype(np.float64),
            hi.astype(np.float64),
            eps[r],
            2,
        )
        d = z[r].astype(np.float64) - x[r]
        moved = (want - x[r]) / np.where(d == 0, 1, d)
        free = (want > lo + 1e-9) & (want < hi - 1e-9) & (np.abs(d) > 1e-3)
        np.testing.assert_allclose(t[r], moved[free], rtol=1e-5)
        assert 0 < t[r] < 1 and t[r] != np.float32(t[r])  # more bits than a float32 holds
