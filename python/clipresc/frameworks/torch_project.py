"""PyTorch autograd for :func:`clipresc.project`: a ``torch.autograd.Function`` whose
backward is the closed-form VJP. CPU tensors run in the Rust core through zero-copy NumPy
views; other devices (CUDA) use the array-API implementation on the tensors themselves.
Gradients flow to ``x``, ``z`` and a tensor ``eps``; bounds get none.

>>> import torch, clipresc
>>> x = torch.tensor([[0.5, 0.9]]); z = torch.tensor([[2.0, 0.9]], requires_grad=True)
>>> y = clipresc.project(x, z, 0.25, p=1)
>>> [round(v, 6) for v in y[0].tolist()], torch.autograd.grad(y.sum(), z)[0].tolist()
([0.75, 0.9], [[0.0, 0.0]])
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .. import _project
from ..backends import generic_project

torch: Any = importlib.import_module("torch")


def _host(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a.detach().resolve_conj().resolve_neg().numpy()
    return a


def _host_bounds(bounds: Any) -> Any:
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return (_host(bounds[0]), _host(bounds[1]))
    return bounds


def _on_cpu(*arrays: Any) -> bool:
    return all(a.device.type == "cpu" for a in arrays if isinstance(a, torch.Tensor))


def _forward(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> tuple[Any, Any]:
    """The projection and, on the CPU, the checked problem (the backward takes it)."""
    if _on_cpu(x, z, eps, *_sides(bounds)):
        hb = _host_bounds(bounds)
        prob = _project.prepare_project(_host(x), _host(z), _host(eps), p, hb, axis)[0]
        y = _project.project_of(prob)
        return torch.from_numpy(np.require(y, requirements=["W"])).to(x.dtype), prob
    return generic_project.project(x, z, eps, p, bounds, axis), None


def _vjp(
    x: Any, z: Any, eps: Any, g: Any, p: Any, bounds: Any, axis: Any, prob: Any = None
) -> dict[str, Any]:
    """The cotangents; ``prob``, the forward's checked problem, spares checking again."""
    if _on_cpu(x, z, eps, g, *_sides(bounds)):
        zh, eh, gh = _host(z), _host(eps), _host(g)
        if prob is None:
            prob = _project.prepare_project(_host(x), zh, eh, p, _host_bounds(bounds), axis)[0]
        out = _project.project_vjp_of(prob, np.asarray(zh).dtype, eh, gh)
        return {k: torch.from_numpy(np.require(v, requirements=["W"])) for k, v in out.items()}
    return generic_project.project_vjp(x, z, eps, g, p, bounds, axis)


def _sides(bounds: Any) -> tuple[Any, ...]:
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return tuple(bounds)
    return ()


class _Project(torch.autograd.Function):  # type: ignore[misc]
    @staticmethod
    def forward(ctx: Any, x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
        ctx.save_for_backward(x, z, eps if isinstance(eps, torch.Tensor) else None)
        ctx.eps, ctx.p, ctx.bounds, ctx.axis = eps, p, bounds, axis
        y, ctx.problem = _forward(x.detach(), z.detach(), _detach(eps), p, bounds, axis)
        return y

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        x, z, eps_t = ctx.saved_tensors
        eps = eps_t if eps_t is not None else ctx.eps
        out = _vjp(x, z, _detach(eps), g.contiguous(), ctx.p, ctx.bounds, ctx.axis, ctx.problem)
        ge = None
        if isinstance(eps, torch.Tensor) and ctx.needs_input_grad[2]:
            ge = out["eps"].to(eps.dtype).to(eps.device).reshape(eps.shape)
        return (
            out["x"].to(x.dtype).to(x.device),
            out["z"].to(z.dtype).to(z.device),
            ge,
            None,
            None,
            None,
        )


def _detach(a: Any) -> Any:
    return a.detach() if isinstance(a, torch.Tensor) else a


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on tensors, differentiable in ``x``, ``z`` and ``eps``."""
    _project.check_project_p(p)
    return _Project.apply(x, z, eps, p, bounds, axis)


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on tensors (results as tensors on ``x``'s device)."""
    _project.check_project_p(p)
    ybar = ybar if isinstance(ybar, torch.Tensor) else torch.as_tensor(ybar, dtype=x.dtype)
    out = _vjp(_detach(x), _detach(z), _detach(eps), _detach(ybar), p, bounds, axis)
    return {k: v.to(x.device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
