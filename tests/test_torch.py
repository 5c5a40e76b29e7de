"""PyTorch integration (``clipresc.frameworks.torch``): values, zero copy, autograd
(``gradcheck``), ``opcheck``, ``torch.compile``, errors, and the non-CPU device path run on
CPU tensors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clipresc  # noqa: E402
from clipresc.frameworks import _torch_device  # noqa: E402
from clipresc.frameworks import torch as ct  # noqa: E402
from support.framework_cases import (  # noqa: E402
    P_GRAD,
    bad_cases,
    check_size,
    grad_bounds,
    grad_problem,
    kwargs_in,
    numpy_message,
    spy_core,
    value_cases,
)


def T(a: Any, **kw: Any) -> Any:
    return torch.from_numpy(np.array(a)) if not kw else torch.tensor(np.array(a), **kw)


def tkwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Array bounds as tensors."""
    return kwargs_in(kwargs, T)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", value_cases(), ids=lambda c: c.name)
def test_values_match_numpy(case: Any, dtype: Any) -> None:
    x, d = case.x.astype(dtype), case.delta.astype(dtype)
    kw = dict(case.kwargs)
    if isinstance(kw.get("bounds"), tuple):
        kw["bounds"] = tuple(
            b.astype(dtype) if isinstance(b, np.ndarray) else b for b in kw["bounds"]
        )
    y_np = clipresc.perturb(x, d, case.eps, **kw)
    eta_np = clipresc.scale(x, d, case.eps, **kw)
    eps_t = T(case.eps) if isinstance(case.eps, np.ndarray) else case.eps
    y = ct.perturb(T(x), T(d), eps_t, **tkwargs(kw))
    eta = ct.scale(T(x), T(d), eps_t, **tkwargs(kw))
    assert y.dtype == T(x).dtype and tuple(y.shape) == x.shape
    assert tuple(eta.shape) == eta_np.shape
    np.testing.assert_array_equal(y.numpy(), y_np)
    np.testing.assert_array_equal(eta.numpy(), eta_np)
    if dtype == np.float64:
        check_size(case, y.numpy(), rtol=1e-9)


def test_zero_copy_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contiguous CPU tensors reach the Rust core without a copy, and the result tensor
    is the memory the core wrote."""
    from clipresc import _clipresc

    seen: dict[str, int] = {}
    real = _clipresc.perturb_into

    def spy(x: Any, delta: Any, *args: Any) -> Any:
        seen["x"] = x.__array_interface__["data"][0]
        seen["delta"] = delta.__array_interface__["data"][0]
        seen["y"] = args[-2].__array_interface__["data"][0]
        return real(x, delta, *args)

    monkeypatch.setattr(_clipresc, "perturb_into", spy)
    x = torch.rand(4, 3, 8, 8)
    d = torch.randn(4, 3, 8, 8)
    y = ct.perturb(x, d, 1.0)
    assert seen["x"] == x.data_ptr()
    assert seen["delta"] == d.data_ptr()
    assert seen["y"] == y.data_ptr()


def test_non_contiguous_and_half() -> None:
    x = torch.rand(5, 8, dtype=torch.float64)
    d = torch.randn(8, 5, dtype=torch.float64).T  # non-contiguous
    want = clipresc.perturb(x.numpy(), np.ascontiguousarray(d.numpy()), 0.7)
    np.testing.assert_array_equal(ct.perturb(x, d, 0.7).numpy(), want)
    for dt in (torch.float16, torch.bfloat16):
        y = ct.perturb(x.to(dt), d.to(dt), 0.7)
        assert y.dtype == dt
        np.testing.assert_allclose(y.double().numpy(), want, atol=1e-2)


def test_delta_cast_and_eps_tensor_dtype() -> None:
    x = torch.rand(3, 4, dtype=torch.float32)
    d = torch.randn(3, 4, dtype=torch.float64)
    eps = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    y = ct.perturb(x, d, eps)
    assert y.dtype == torch.float32
    want = clipresc.perturb(x.numpy(), d.numpy(), eps.numpy())
    np.testing.assert_array_equal(y.numpy(), want)


def test_module_for() -> None:
    from clipresc import frameworks

    assert frameworks.module_for(torch.zeros(2)) is ct
    assert frameworks.framework_of(torch.zeros(2)) == "torch"


# --------------------------------------------------------------------------- gradients


def _grad_inputs(seed: int = 0) -> tuple[Any, Any, Any]:
    x, d, eps = grad_problem(seed)
    return (
        T(x).requires_grad_(),
        T(d).requires_grad_(),
        T(eps).requires_grad_(),
    )


@pytest.mark.parametrize("p", P_GRAD)
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_gradcheck(fn: str, p: float) -> None:
    x, d, eps = _grad_inputs()
    f = getattr(ct, fn)
    assert torch.autograd.gradcheck(lambda a, b, c: f(a, b, c, p=p), (x, d, eps))


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_gradcheck_tensor_bounds_and_axis(p: float) -> None:
    x, d, _ = _grad_inputs(1)
    lo, hi = (T(b).requires_grad_() for b in grad_bounds())
    eps = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)

    def f(a: Any, b: Any, c: Any, lo: Any, hi: Any) -> Any:
        return ct.perturb(a, b, c, p=p, bounds=(lo, hi), axis=(0, 2))

    assert torch.autograd.gradcheck(f, (x, d, eps, lo, hi))
    assert torch.autograd.gradcheck(
        lambda a, b, c, lo, hi: ct.scale(a, b, c, p=p, bounds=(lo, hi)), (x, d, eps, lo, hi)
    )


def test_gradients_agree_with_numpy_vjp() -> None:
    """Autograd through the op gives the NumPy-level VJP."""
    from clipresc.frameworks import _numpy

    x, d, eps = _grad_inputs(2)
    y = ct.perturb(x, d, eps, p=2.0)
    g = torch.randn_like(y)
    gx, gd, ge = torch.autograd.grad(y, (x, d, eps), g)
    want = _numpy.vjp(
        "perturb",
        x.detach().numpy(),
        d.detach().numpy(),
        eps.detach().numpy(),
        g.numpy(),
        2.0,
        0.0,
        1.0,
        (1, 2),
        "saturate",
    )
    np.testing.assert_allclose(gx.numpy(), want[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gd.numpy(), want[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ge.numpy(), want[2], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", ["perturb", "scale"])
def test_backward_does_not_solve_again(
    monkeypatch: pytest.MonkeyPatch, fn: str, dtype: Any
) -> None:
    """The backward gets the forward's eta: one solve for forward + backward."""
    x, d, eps = (t.detach().to(dtype).requires_grad_() for t in _grad_inputs(5))
    seen = spy_core(monkeypatch)
    out = getattr(ct, fn)(x, d, eps, p=3.0)
    grads = torch.autograd.grad(out, (x, d, eps), torch.randn_like(out))
    assert seen == {"solves": [f"{fn}_into"], "vjp_eta": [True]}
    # the same gradients as a VJP that solves again
    want = clipresc.perturb_vjp if fn == "perturb" else clipresc.scale_vjp
    w = want(x.detach(), d.detach(), eps.detach(), torch.ones_like(out), p=3.0)
    got = torch.autograd.grad(getattr(ct, fn)(x, d, eps, p=3.0).sum(), (x, d, eps))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for g, k in zip(got, ("x", "delta", "eps")):
        torch.testing.assert_close(g, w[k], rtol=tol, atol=tol)
    assert all(g.dtype == dtype for g in grads)


def test_gradient_finite_at_eps_zero() -> None:
    x, d, _ = _grad_inputs()
    eps = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    eta = ct.scale(x, d, eps)
    (ge,) = torch.autograd.grad(eta.sum(), (eps,))
    assert torch.isfinite(ge).all() and (ge > 0).all()


# --------------------------------------------------------------------------- opcheck, compile


# torch's own fake-tensor conversion in opcheck reads ``.grad`` of non-leaf tensors
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("bounds", ["scalar", "tensor"])
def test_opcheck(bounds: str) -> None:
    x, d, eps = _grad_inputs()
    bd: Any = (
        (0.0, 1.0) if bounds == "scalar" else tuple(T(b).requires_grad_() for b in grad_bounds())
    )
    args = ct._prepare_args(x, d, eps, 2.0, bd, None, "saturate")
    for op in (torch.ops.clipresc.perturb.default, torch.ops.clipresc.scale.default):
        torch.library.opcheck(op, args)
    grad = torch.randn(x.shape, dtype=torch.float64)
    det = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    _, eta = torch.ops.clipresc.perturb(*det)
    for given in (eta, None):  # the forward's eta, or none (the backward solves again)
        torch.library.opcheck(torch.ops.clipresc.perturb_backward.default, (grad, given, *det))
    etabar = torch.randn(eta.shape, dtype=torch.float64)
    torch.library.opcheck(torch.ops.clipresc.scale_backward.default, (etabar, eta, *det))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile(backend: str) -> None:
    """Forward and backward inside one compiled graph (fullgraph: no graph breaks)."""
    x, d, eps = _grad_inputs(3)

    def loss(a: Any, b: Any, c: Any) -> Any:
        y = ct.perturb(a, b, c, p=2.0)
        return (y * y).sum() + ct.scale(a, b, c, p=2.0).sum()

    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    got = torch.autograd.grad(compiled(x, d, eps), (x, d, eps))
    want = torch.autograd.grad(loss(x, d, eps), (x, d, eps))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_torch_compile_runtime_error() -> None:
    compiled = torch.compile(lambda a, b: ct.perturb(a, b, 0.5), backend="aot_eager")
    x = torch.rand(2, 3, dtype=torch.float64) + 2.0
    with pytest.raises(ValueError, match="values outside bounds"):
        compiled(x, torch.ones_like(x))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", bad_cases(), ids=lambda b: b.name)
def test_errors_match_numpy(bad: Any) -> None:
    msg = numpy_message(bad)
    eps = T(bad.eps) if isinstance(bad.eps, np.ndarray) else bad.eps
    with pytest.raises(bad.exc) as info:
        ct.perturb(T(bad.x), T(bad.delta), eps, **tkwargs(bad.kwargs))
    assert str(info.value) == msg


# --------------------------------------------------------------------------- device path


def _device_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize("case", value_cases()[:6], ids=lambda c: c.name)
def test_device_path_on_cpu(case: Any) -> None:
    """The path for CUDA (without CuPy) and other devices, run here on CPU tensors."""
    eps = T(case.eps) if isinstance(case.eps, np.ndarray) else case.eps
    kw = tkwargs(case.kwargs)
    x = T(case.x).requires_grad_()
    d = T(case.delta).requires_grad_()
    args = ct._prepare_args(
        x, d, eps, kw.get("p", 2.0), kw.get("bounds", (0.0, 1.0)), kw.get("axis"), "saturate"
    )
    for kind in ("scale", "perturb"):
        got = _torch_device.forward(kind, *_device_args(args))
        want = getattr(ct, kind)(x, d, eps, **kw)
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
        g = torch.randn_like(want)
        vj = _torch_device.vjp(kind, g, *_device_args(args))
        wx, wd = torch.autograd.grad(want, (x, d), g)
        torch.testing.assert_close(vj[0], wx, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(vj[1], wd, rtol=1e-9, atol=1e-12)


def test_device_path_bound_and_eps_grads() -> None:
    x, d, eps = _grad_inputs(4)
    lo, hi = (T(b).requires_grad_() for b in grad_bounds())
    y = ct.perturb(x, d, eps, p=3.0, bounds=(lo, hi))
    g = torch.randn_like(y)
    want = torch.autograd.grad(y, (x, d, eps, lo, hi), g)
    args = ct._prepare_args(x, d, eps, 3.0, (lo, hi), None, "saturate")
    got = _torch_device.vjp("perturb", g, *_device_args(args))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad", [b for b in bad_cases() if b.data], ids=lambda b: b.name)
def test_device_path_errors(bad: Any) -> None:
    msg = numpy_message(bad)
    eps = T(bad.eps) if isinstance(bad.eps, np.ndarray) else bad.eps
    kw = tkwargs(bad.kwargs)
    args = ct._prepare_args(
        T(bad.x),
        T(bad.delta),
        eps,
        2.0,
        kw.get("bounds", (0.0, 1.0)),
        None,
        kw.get("unreachable", "saturate"),
    )
    with pytest.raises(ValueError) as info:
        _torch_device.forward("perturb", *args)
    assert str(info.value) == msg
