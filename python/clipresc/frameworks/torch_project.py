"""PyTorch integration of :func:`clipresc.project`: differentiable in ``x``, ``z`` and a
tensor ``eps`` with autograd, ``torch.compile`` and every ``torch.func`` transform.

``torch.ops.clipresc.project`` is a ``torch.library.custom_op`` taking the argument list of
:mod:`clipresc.frameworks.torch`'s operators (``unreachable`` is unused) and returning
``(y, residual)``: the projection and, per vector (``eta``'s shape, float64, not
differentiable), the forward's multiplier, which its VJP takes so as to search nothing.
``torch.ops.clipresc.project_backward`` is the closed-form VJP of
:func:`clipresc.project_vjp` given that residual. Both have fake (meta)
implementations, so they trace under ``torch.compile`` and ``torch.export``; the autograd
Function, batching rules (``torch.func.vmap`` folds the mapped dimension into the batch)
and the clear double-backward error are :mod:`clipresc.frameworks._torch_func`'s, shared
with ``scale`` and ``perturb``. The bounds get no gradient.

Where the work happens:

* CPU tensors: zero-copy NumPy views go to the Rust core (as for ``perturb``). The residual
  is the core's multiplier of each row (``t`` for p = 2, ``lam`` for p = 1), in float64 so
  that it reaches the core's VJP bit for bit: the backward searches nothing, and its
  cotangents are bitwise those of a VJP that solves again.
* Other devices (CUDA): the array-API implementation
  ``clipresc.backends.generic_project`` on the tensors themselves; the residual is the
  forward's multiplier (``t`` for p = 2, ``lam`` for p = 1, negative where ``clip(z)`` is
  inside the ball; computed in the work dtype), so the backward searches nothing.

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
from . import _torch_func as _func
from . import torch as _ct

torch: Any = importlib.import_module("torch")

__all__ = ["project", "project_vjp"]


def _in_core(*tensors: Any) -> bool:
    """Whether the Rust core computes the call (CPU tensors), else the array-API path."""
    return bool(_ct._on_cpu(*tensors))


def _bounds(lower: Any, upper: Any, lower_s: float, upper_s: float) -> tuple[Any, Any]:
    """The operator's bounds (a tensor, else its number) as a ``bounds`` pair."""
    return (lower_s if lower is None else lower, upper_s if upper is None else upper)


def _sides(bounds: Any) -> tuple[Any, ...]:
    """The two sides of a ``bounds`` pair; none for anything else (which the checks refuse)."""
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return tuple(bounds)
    return ()


def _host(bounds: Any) -> Any:
    """``bounds`` with NumPy views for tensor sides."""
    sides = _sides(bounds)
    return tuple(_ct._np(b) for b in sides) if sides else bounds


def _forward_impl(*args: Any, with_residual: bool = True, keep_problem: bool = False) -> Any:
    """The operator ``clipresc::project`` (the arguments of
    :mod:`clipresc.frameworks.torch`'s operators): ``(y, residual)``, or ``y`` alone
    without ``with_residual``. With ``keep_problem``, the CPU residual carries the checked
    problem to the backward (:func:`_backward_of`)."""
    x, z, eps, lower, upper, lower_s, upper_s, p, axis_list, _ = args
    axis = tuple(axis_list)  # hashable: the checks of a call are cached per argument tuple
    bounds = _bounds(lower, upper, lower_s, upper_s)
    if not _in_core(x, z, eps, lower, upper):
        y, residual = generic_project.project_residual(x, z, eps, p, bounds, axis)
        y = _ct._strided_like(y.to(x.dtype), x)
        # computed in the work dtype; float64 holds it exactly (see `_vjp`)
        return (y, residual.to(_ct._work_dtype(x.dtype)).double()) if with_residual else y
    host = (_ct._np(x), _ct._np(z), _ct._np(eps), p, _host(bounds), axis)
    prob = _project.prepare_project(*host)[0]
    mult = np.empty(prob.layout.rows, dtype=np.float64) if with_residual else None
    y = _ct._strided_like(_ct._from_np(_project.project_of(prob, mult), x.dtype), x)
    if not with_residual:
        return y
    residual = torch.from_numpy(mult).reshape(_ct._eta_shape(x.shape, axis))
    if keep_problem:
        residual._clipresc_problem = prob
    return y, residual


def _forward_keeping_problem(*args: Any) -> Any:
    return _forward_impl(*args, keep_problem=True)


def _backward_impl(grad: Any, residual: Any, *args: Any) -> tuple[Any, Any, Any, Any, Any]:
    """The operator ``clipresc::project_backward``: the cotangents of ``x``, ``z`` and
    ``eps`` (the bounds': empty tensors)."""
    x, z, eps, lower, upper, lower_s, upper_s, p, axis_list, _ = args
    axis = tuple(axis_list)  # hashable: the checks of a call are cached per argument tuple
    g = _vjp(x, z, eps, grad, p, _bounds(lower, upper, lower_s, upper_s), axis, residual)
    return _op_grads(g, x, z, eps)


def _backward_of(
    prob: Any, grad: Any, residual: Any, x: Any, z: Any, eps: Any, lower: Any, upper: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """The CPU backward from the problem the forward checked (nothing is checked again)."""
    g = _project.project_vjp_of(prob, prob.dtype, _ct._np(eps), _ct._np(grad), _mult(residual))
    return _op_grads(_from_host(g), x, z, eps)


def _mult(residual: Any) -> Any:
    """The forward's multipliers for the core's VJP: ``(rows,)`` float64 (``None``: none)."""
    if residual is None:
        return None
    return np.ascontiguousarray(_ct._np(residual), dtype=np.float64).reshape(-1)


def _op_grads(g: dict[str, Any], x: Any, z: Any, eps: Any) -> tuple[Any, Any, Any, Any, Any]:
    """The backward operator's outputs from :func:`_vjp`'s cotangents."""
    # absent bound cotangents are distinct empty tensors (outputs may not alias)
    return (
        _ct._strided_like(g["x"].to(x.dtype), x),
        _ct._strided_like(g["z"].to(z.dtype), z),
        g["eps"].to(eps.dtype).reshape(eps.shape),
        x.new_empty((0,)),
        x.new_empty((0,)),
    )


def _vjp(
    x: Any,
    z: Any,
    eps: Any,
    g: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    residual: Any = None,
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` of tensors (results as tensors on ``x``'s device), given
    the forward's ``residual`` (``None``: search again)."""
    if not _in_core(x, z, eps, g, *_sides(bounds)):
        if residual is not None:  # back to the work dtype it was computed in (exact)
            residual = residual.to(_ct._work_dtype(x.dtype))
        return generic_project.project_vjp(x, z, eps, g, p, bounds, axis, residual)
    out = _project.project_vjp_numpy(
        _ct._np(x), _ct._np(z), _ct._np(eps), _ct._np(g), p, _host(bounds), axis, _mult(residual)
    )
    return _from_host(out)


def _from_host(out: dict[str, Any]) -> dict[str, Any]:
    return {k: torch.from_numpy(np.require(v, requirements=["W"])) for k, v in out.items()}


def _backward_fake(grad: Any, residual: Any, x: Any, z: Any, eps: Any, *rest: Any) -> Any:
    return (
        torch.empty_like(x),
        torch.empty_like(z),
        eps.new_empty(eps.shape),
        x.new_empty((0,)),
        x.new_empty((0,)),
    )


_project_op = torch.library.custom_op(
    "clipresc::project",
    _forward_impl,
    mutates_args=(),
    schema=f"({_ct._ARGS}) -> (Tensor, Tensor)",
)


def _forward_fake(x: Any, *args: Any) -> tuple[Any, Any]:
    """y like x; the residual one float64 per vector (``eta``'s shape)."""
    residual = x.new_empty(_ct._eta_shape(x.shape, args[7]), dtype=torch.float64)
    return torch.empty_like(x), residual


_project_op.register_fake(_forward_fake)
_project_backward_op = torch.library.custom_op(
    "clipresc::project_backward", _backward_impl, mutates_args=(), schema=_ct._BWD_SCHEMA
)
_project_backward_op.register_fake(_backward_fake)
torch.library.register_autograd(
    "clipresc::project",
    _ct._make_backward("project", _project_backward_op, _backward_impl, bound_grads=False),
    setup_context=_ct._setup_context,
)
_func.register(
    _func.Kind("project", _forward_keeping_problem, _backward_impl, _backward_of, bound_grads=False)
)


def _y_only(*args: Any) -> Any:
    return _forward_impl(*args, with_residual=False)


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on tensors, differentiable in ``x``, ``z`` and ``eps``.

    >>> import torch
    >>> from clipresc.frameworks import torch_project
    >>> x = torch.tensor([[0.5, 0.9]], dtype=torch.float64)
    >>> z = torch.tensor([[1.5, 1.5]], dtype=torch.float64)
    >>> torch_project.project(x, z, 0.5, 2.0, (0.0, 1.0), None)
    tensor([[0.9899, 1.0000]], dtype=torch.float64)
    """
    pf = _project.check_project_p(p)
    args = _ct._prepare_args(x, z, eps, pf, bounds, axis, "saturate", delta_name="z")
    return _ct._call("project", args, direct=_y_only)


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on tensors (results as tensors on ``x``'s device).

    >>> import torch
    >>> from clipresc.frameworks import torch_project
    >>> x = torch.tensor([[0.5, 0.9]]); z = torch.tensor([[2.0, 0.9]])
    >>> g = torch_project.project_vjp(x, z, 0.25, torch.ones(1, 2), 1, (0.0, 1.0), None)
    >>> g["x"].tolist(), g["eps"].item()
    ([[1.0, 1.0]], 1.0)
    """
    _project.check_project_p(p)
    ybar = ybar if isinstance(ybar, torch.Tensor) else torch.as_tensor(ybar, dtype=x.dtype)
    if _sides(bounds):
        bounds = (_detach(bounds[0]), _detach(bounds[1]))
    out = _vjp(_detach(x), _detach(z), _detach(eps), _detach(ybar), p, bounds, axis)
    return {k: v.to(x.device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def _detach(a: Any) -> Any:
    return a.detach() if isinstance(a, torch.Tensor) else a
