"""``torch.func`` support for the clipresc operators: autograd Functions and batching rules.

PyTorch's ``register_autograd`` formulas do not run under the ``torch.func`` transforms
(``grad``, ``vjp``, ``jacrev``: "must override the setup_context staticmethod"), so the
differentiable entry points are :class:`torch.autograd.Function` subclasses whose forward
calls the ``clipresc::scale`` / ``clipresc::perturb`` operators (and ``clipresc::project``,
registered by :mod:`clipresc.frameworks.torch_project` through :func:`register`), or for
plain tensors outside any transform their implementation directly (the dispatch costs more
than a small problem), and whose backward calls ``clipresc::<name>_backward`` with the
``eta`` (or residual) the forward found. ``generate_vmap_rule`` lets ``torch.func.vmap``
run them through the operators' batching rules (:func:`torch.library.register_vmap`), which
fold the vmapped dimension into a batch axis of one call instead of looping.

Second derivatives are not implemented: the closed-form VJP is computed in the Rust core
(or the array-API backend) and is itself not differentiable. Differentiating a gradient
(``gradgradcheck``, a gradient penalty, nested ``torch.func.grad``) raises
``NotImplementedError`` naming that limitation instead of returning a wrong zero.

>>> import torch
>>> from clipresc.frameworks import torch as ct
>>> x = torch.rand(4, 6, dtype=torch.float64)
>>> d = torch.randn(4, 6, dtype=torch.float64)
>>> per_row = torch.func.vmap(lambda a, b: ct.perturb(a, b, 0.5))(x, d)
>>> torch.equal(per_row, ct.perturb(x, d, 0.5))
True
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

from .. import _call as call_args
from .. import _errors
from . import torch as _ct

torch: Any = importlib.import_module("torch")

__all__ = ["Kind", "apply", "register"]

_N_STATIC = 5  # lower_s, upper_s, p, axis, unreachable


class Kind(NamedTuple):
    """An operator pair ``clipresc::<name>`` / ``clipresc::<name>_backward`` taking the
    argument list of :mod:`clipresc.frameworks.torch` (``scale``, ``perturb``, and
    ``project`` from :mod:`clipresc.frameworks.torch_project`)."""

    name: str
    forward: Callable[..., Any]
    """The forward implementation for plain tensors: ``eta`` (scale) or ``(y, residual)``."""
    backward: Callable[..., Any]
    """The backward implementation: ``(grad, residual, *args)`` -> 5 cotangents."""
    backward_of: Callable[..., Any]
    """The CPU backward from the problem the forward checked and left on its residual
    (``_clipresc_problem``): ``(problem, grad, residual, x, delta, eps, lower, upper)``."""
    bound_grads: bool = True
    """Whether tensor bounds get gradients (``project``'s get none)."""


def _plain_eager(tensors: tuple[Any, ...]) -> bool:
    """Whether the implementation may run directly instead of the operator: no tracing, no
    functorch transform, plain tensors on a real device (``is_compiling`` comes first so
    that ``torch.compile`` folds the test)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    for t in tensors:  # a loop, not all(...): this runs on every call
        if t is not None and (type(t) is not torch.Tensor or t.is_meta):
            return False
    return True


def _forward_function(spec: Kind) -> Any:
    """The autograd Function of ``spec``: ``apply(*op_args)`` returns ``eta`` (scale) or
    ``(y, residual)`` (perturb's ``eta`` in the work dtype, or project's multiplier; not
    differentiable). (``spec`` is bound here rather than passed: ``torch.compile`` wants
    tensors first in ``apply``.)"""
    kind = spec.name
    op = _op(kind)
    backward_fn = _backward_function(kind)

    class Forward(torch.autograd.Function):  # type: ignore[misc]
        generate_vmap_rule = True

        # explicit parameters: torch.compile counts them to tell this style from ctx-first
        @staticmethod
        def forward(
            x: Any,
            delta: Any,
            eps: Any,
            lower: Any,
            upper: Any,
            lower_s: float,
            upper_s: float,
            p: float,
            axis: list[int],
            unreachable: str,
        ) -> Any:
            args = (x, delta, eps, lower, upper, lower_s, upper_s, p, axis, unreachable)
            if _plain_eager(args[:5]):
                return spec.forward(*args)
            if kind == "scale":  # eta itself, reused by the backward when in the work dtype
                return op(*args)
            return tuple(op(*args))

        setup_context = staticmethod(_ct._setup_context)  # the operators' own

        @staticmethod
        def backward(ctx: Any, grad: Any, *_eta_grad: Any) -> tuple[Any, ...]:
            eta, x, delta, eps, lower, upper = ctx.saved_tensors
            args = (grad, eta, x, delta, eps, lower, upper, *ctx.statics)
            # no graph of the gradient to record: run the implementation, skip the dispatch
            if not torch.compiler.is_compiling() and not torch.is_grad_enabled():
                direct = _plain_eager(args[:7])
            else:
                direct = False
            if direct and ctx.problem is not None and _ct._on_cpu(grad, eta, x):
                gx, gd, ge, gl, gu = spec.backward_of(ctx.problem, *args[:7])
            elif direct:
                gx, gd, ge, gl, gu = spec.backward(*args)
            else:
                gx, gd, ge, gl, gu = backward_fn.apply(*args)
            return (
                gx,
                gd,
                ge,
                None if lower is None or not spec.bound_grads else gl,
                None if upper is None or not spec.bound_grads else gu,
                *([None] * _N_STATIC),
            )

    Forward.__name__ = Forward.__qualname__ = f"{kind.capitalize()}Function"
    return Forward


def _backward_function(kind: str) -> Any:
    """The backward operator of ``kind`` as an autograd Function, recorded when a graph of
    the gradient is built; its own backward raises (no second derivatives)."""

    class Backward(torch.autograd.Function):  # type: ignore[misc]
        generate_vmap_rule = True

        @staticmethod
        def forward(
            grad: Any,
            eta: Any,
            x: Any,
            delta: Any,
            eps: Any,
            lower: Any,
            upper: Any,
            lower_s: float,
            upper_s: float,
            p: float,
            axis: list[int],
            unreachable: str,
        ) -> Any:
            args = (x, delta, eps, lower, upper, lower_s, upper_s, p, axis, unreachable)
            return tuple(_backward_op(kind)(grad, eta, *args))

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            raise _errors.double_backward(kind)

    Backward.__name__ = Backward.__qualname__ = f"{kind.capitalize()}BackwardFunction"
    return Backward


def _op(kind: str) -> Any:
    return getattr(torch.ops.clipresc, kind)


def _backward_op(kind: str) -> Any:
    return getattr(torch.ops.clipresc, f"{kind}_backward")


_FUNCTIONS: dict[str, Any] = {}


def apply(kind: str, args: tuple[Any, ...]) -> Any:
    """``scale`` / ``perturb`` / ``project`` of the operator arguments ``args``,
    differentiable with autograd and every ``torch.func`` transform."""
    out = _FUNCTIONS[kind].apply(*args)
    return out if kind == "scale" else out[0]


# --------------------------------------------------------------------------- batching rules


def _batched(t: Any, dim: int | None, size: int) -> Any:
    """``t`` with its vmapped dimension first (an unbatched tensor expanded, no copy)."""
    if t is None:
        return None
    if dim is None:
        return t.unsqueeze(0).expand(size, *t.shape)
    return t.movedim(dim, 0)


def _fold_eps(eps: Any, rows: int, eta_shape: tuple[int, ...]) -> Any:
    """A batched ``eps`` ``(B, *E)`` as ``(B, *eta_shape)``: one value per vector of the
    folded call (``E`` is a scalar, ``(rows,)`` or broadcastable to ``eta_shape``)."""
    size, own = eps.shape[0], tuple(eps.shape[1:])
    if not call_args.eps_fits(own, rows, eta_shape):
        raise _errors.eps_shape(rows, own)
    if own == (rows,):
        return eps.reshape(size, *eta_shape)
    pad = (1,) * (len(eta_shape) - len(own))
    return eps.reshape(size, *pad, *own).expand(size, *eta_shape)


def _unfold_eps(g: Any, eps: Any) -> Any:
    """The cotangent ``(B, *eta_shape)`` of a folded ``eps`` in the batched ``eps``'s shape."""
    size, own = eps.shape[0], tuple(eps.shape[1:])
    if g.numel() == eps.numel():
        return g.reshape(eps.shape)
    pad = (1,) * (g.ndim - 1 - len(own))
    return g.sum_to_size(size, *pad, *own).reshape(eps.shape)


def _fold_bound(t: Any, ndim: int) -> Any:
    """A batched bound ``(B, *L)`` (``L`` broadcastable to ``x``) as ``(B, 1.., *L)``."""
    if t is None:
        return None
    return t.reshape(t.shape[0], *((1,) * (ndim - (t.ndim - 1))), *t.shape[1:])


def _rows(shape: tuple[int, ...], axis: list[int]) -> int:
    n = 1
    for a, s in enumerate(shape):
        if a not in axis:
            n *= int(s)
    return n


def _fold(info: Any, in_dims: tuple[Any, ...], tensors: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(x, delta, eps, lower, upper)`` (batched on dim 0) and the pieces to undo it."""
    size = info.batch_size
    return tuple(_batched(t, d, size) for t, d in zip(tensors, in_dims))


def _forward_vmap(kind: str) -> Any:
    op = _op(kind)

    def rule(info: Any, in_dims: tuple[Any, ...], *args: Any) -> tuple[Any, Any]:
        x, delta, eps, lower, upper = _fold(info, in_dims[:5], args[:5])
        lower_s, upper_s, p, axis, unreachable = args[5:]
        shape = tuple(x.shape[1:])
        eta_shape = tuple(_ct._eta_shape(shape, axis))
        folded = (
            x,
            delta,
            _fold_eps(eps, _rows(shape, axis), eta_shape),
            _fold_bound(lower, len(shape)),
            _fold_bound(upper, len(shape)),
            lower_s,
            upper_s,
            p,
            [a + 1 for a in axis],
            unreachable,
        )
        if kind == "scale":
            return op(*folded), 0
        return tuple(op(*folded)), (0, 0)

    return rule


def _backward_vmap(kind: str, bound_grads: bool) -> Any:
    def rule(info: Any, in_dims: tuple[Any, ...], *args: Any) -> tuple[Any, Any]:
        size = info.batch_size
        grad, eta = (_batched(t, d, size) for t, d in zip(args[:2], in_dims[:2]))
        x, delta, eps, lower, upper = _fold(info, in_dims[2:7], args[2:7])
        lower_s, upper_s, p, axis, unreachable = args[7:]
        shape = tuple(x.shape[1:])
        eta_shape = tuple(_ct._eta_shape(shape, axis))
        gx, gd, ge, gl, gu = _backward_op(kind)(
            grad,
            eta,
            x,
            delta,
            _fold_eps(eps, _rows(shape, axis), eta_shape),
            _fold_bound(lower, len(shape)),
            _fold_bound(upper, len(shape)),
            lower_s,
            upper_s,
            p,
            [a + 1 for a in axis],
            unreachable,
        )
        outs = [gx, gd, _unfold_eps(ge, eps)]
        dims: list[int | None] = [0, 0, 0]
        for g, t in ((gl, lower), (gu, upper)):
            batched = t is not None and bound_grads
            outs.append(g.reshape(t.shape) if batched else g)
            dims.append(0 if batched else None)
        return tuple(outs), tuple(dims)

    return rule


def _no_double_backward(kind: str) -> Any:
    def backward(ctx: Any, *grads: Any) -> Any:
        raise _errors.double_backward(kind)

    return backward


def register(spec: Kind) -> None:
    """Make the operators of ``spec`` (already defined, with fake implementations) work
    under every ``torch.func`` transform: their autograd Function, batching rules, and the
    clear double-backward error; :func:`apply` then runs them."""
    kind = spec.name
    _FUNCTIONS[kind] = _forward_function(spec)
    torch.library.register_vmap(f"clipresc::{kind}", _forward_vmap(kind))
    torch.library.register_vmap(
        f"clipresc::{kind}_backward", _backward_vmap(kind, spec.bound_grads)
    )
    # a direct call of the backward operator under autograd gets the same clear error
    torch.library.register_autograd(
        f"clipresc::{kind}_backward",
        _no_double_backward(kind),
        setup_context=lambda ctx, inputs, output: None,
    )


# plain functions, not functools.partial: torch.compile traces the Functions that call them
def _scale_forward(*args: Any) -> Any:
    return _ct._forward_impl("scale", *args)


def _perturb_forward(*args: Any) -> Any:
    return _ct._forward_impl("perturb", *args, with_eta=True)


def _scale_backward_of(prob: Any, *tensors: Any) -> Any:
    return _ct._backward_of("scale", prob, *tensors)


def _perturb_backward_of(prob: Any, *tensors: Any) -> Any:
    return _ct._backward_of("perturb", prob, *tensors)


register(Kind("scale", _scale_forward, _ct._scale_backward_impl, _scale_backward_of))
register(Kind("perturb", _perturb_forward, _ct._perturb_backward_impl, _perturb_backward_of))
