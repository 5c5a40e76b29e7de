"""PyTorch integration: ``scale`` / ``perturb`` on tensors, differentiable with autograd.

Both functions are ``torch.library.custom_op`` operators in the ``clipresc`` namespace
(``torch.ops.clipresc.scale`` returning ``eta``, ``torch.ops.clipresc.perturb`` returning
``(y, eta)``, its ``eta`` in the work dtype and not differentiable) with a fake (meta)
implementation for tracing and an autograd formula whose backward is itself a custom op
(``clipresc::scale_backward`` / ``clipresc::perturb_backward``) computing the closed-form
VJP from the ``eta`` the forward found (no second solve). They therefore work in eager
mode, with ``torch.autograd``, ``torch.compile`` and ``torch.export``, and pass
``torch.library.opcheck``. :func:`scale` and :func:`perturb` call them through the autograd
Functions of :mod:`clipresc.frameworks._torch_func`, which also run under ``torch.func``
(``grad``, ``vjp``, ``jacrev``, ``vmap`` with batching rules).

Where the work happens:

* CPU tensors: zero-copy NumPy views (``Tensor.numpy()``) go to the Rust core through the
  NumPy path; the result is wrapped back with ``torch.from_numpy`` (no copy either way for
  contiguous float32/float64 tensors whose vector axes are the trailing ones). bfloat16 is
  computed in float32.
* CUDA tensors: :mod:`clipresc.backends.cupy_backend` through DLPack on PyTorch's current
  stream when CuPy is installed and sees a GPU; otherwise, and on any other device, the
  pure array-API backend :mod:`clipresc.backends.generic` on the tensors themselves.

Gradients flow to ``x``, ``delta``, a tensor ``eps`` and tensor bounds (anything with
``requires_grad``); conventions at non-differentiable points are those of
:mod:`clipresc.backends.generic`. Importing this module imports PyTorch and registers the
operators; :func:`clipresc.frameworks.module_for` imports it only for tensors.

>>> import torch
>>> from clipresc.frameworks import torch as ct
>>> x = torch.tensor([[0.5, 0.9]], dtype=torch.float64, requires_grad=True)
>>> eps = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
>>> y = ct.perturb(x, torch.ones(1, 2, dtype=torch.float64), eps, p=1)
>>> y.detach()
tensor([[0.9000, 1.0000]], dtype=torch.float64)
>>> y[0, 0].backward()
>>> eps.grad
tensor([1.], dtype=torch.float64)
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _call as call_args
from .. import _errors
from .._args import Axis, vector_axes
from .._call import describe, split_bounds
from . import _numpy

torch: Any = importlib.import_module("torch")

__all__ = ["perturb", "scale"]

_ARGS = (
    "Tensor x, Tensor delta, Tensor eps, Tensor? lower, Tensor? upper, "
    "float lower_s, float upper_s, float p, int[] axis, str unreachable"
)


# --------------------------------------------------------------------------- helpers


def _dtype_name(dt: Any) -> str:
    return str(dt).rpartition(".")[2]


def _work_dtype(dt: Any) -> Any:
    return torch.float64 if dt == torch.float64 else torch.float32


def _np(t: Any) -> Any:
    """A NumPy view of a CPU tensor (a float32 copy for bfloat16); numbers pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.resolve_conj().resolve_neg().numpy()


def _from_np(a: Any, dtype: Any) -> Any:
    """A tensor owning (or sharing) ``a``'s memory, in ``dtype``."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if t.dtype == dtype else t.to(dtype)


def _side_np(t: Any, s: float) -> Any:
    return s if t is None else _np(t)


def _eta_shape(shape: Sequence[int], axis: Sequence[int]) -> list[int]:
    return [1 if a in axis else int(s) for a, s in enumerate(shape)]


def _on_cpu(*ts: Any) -> bool:
    for t in ts:  # a loop, not all(...): this runs on every call
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            return False
    return True


def _strided_like(t: Any, like: Any) -> Any:
    """``t`` (``like``'s shape) with the strides ``torch.empty_like(like)`` has, so that a
    ``channels_last`` (or otherwise permuted dense) input gives an output of its layout; the
    fake implementations promise exactly these strides."""
    if like.is_contiguous() and t.is_contiguous():
        return t
    want = torch.empty_like(like, device="meta").stride()
    if all(a == b for a, b, n in zip(t.stride(), want, t.shape) if n > 1):
        return t if t.stride() == want else t.as_strided(t.shape, want)
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out


# --------------------------------------------------------------------------- forward op


def _forward_impl(
    kind: str,
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
    *,
    with_eta: bool = False,
) -> Any:
    """The forward; with ``with_eta``, also the scales it used (``eta``'s shape, in the work
    dtype) for the backward, which then need not solve again."""
    if not _on_cpu(x, delta, eps, lower, upper):
        if not isinstance(eps, torch.Tensor):
            eps = torch.tensor(eps, dtype=torch.float64, device=x.device)
        args = (x, delta, eps, lower, upper, lower_s, upper_s, p, axis, unreachable)
        out, eta = _device.forward_eta(kind, *args)
        if kind == "perturb":
            out = _strided_like(out, x)
        return (out, eta) if with_eta else out
    np_args = (
        _np(x),
        _np(delta),
        _np(eps),
        p,
        _side_np(lower, lower_s),
        _side_np(upper, upper_s),
        tuple(axis),
        unreachable,
    )
    out, eta, prob = _numpy.forward_problem(kind, *np_args)
    out_t = _from_np(out, x.dtype)
    if kind == "perturb":
        out_t = _strided_like(out_t, x)
    if not with_eta:
        return out_t
    eta_t = torch.from_numpy(eta.reshape(prob.layout.eta_shape))
    # the checked problem rides along with eta to the backward, which then reads and
    # checks nothing again (see _setup_context)
    eta_t._clipresc_problem = prob
    return out_t, eta_t


def _scale_impl(*args: Any) -> Any:
    return _forward_impl("scale", *args)


def _perturb_impl(*args: Any) -> tuple[Any, Any]:
    out, eta = _forward_impl("perturb", *args, with_eta=True)
    return out, eta


def _scale_fake(x: Any, *args: Any) -> Any:
    axis = args[7]
    return x.new_empty(_eta_shape(x.shape, axis))


def _perturb_fake(x: Any, *args: Any) -> tuple[Any, Any]:
    axis = args[7]
    eta = x.new_empty(_eta_shape(x.shape, axis), dtype=_work_dtype(x.dtype))
    return torch.empty_like(x), eta


_scale_op = torch.library.custom_op(
    "clipresc::scale", _scale_impl, mutates_args=(), schema=f"({_ARGS}) -> Tensor"
)
# the second output is the scale ``eta`` (work dtype), kept for the backward
_perturb_op = torch.library.custom_op(
    "clipresc::perturb",
    _perturb_impl,
    mutates_args=(),
    schema=f"({_ARGS}) -> (Tensor, Tensor)",
)
_scale_op.register_fake(_scale_fake)
_perturb_op.register_fake(_perturb_fake)


# --------------------------------------------------------------------------- backward op

# ``eta``: the forward's scales (``eta``'s shape, work dtype), or None to solve again
_BWD_SCHEMA = f"(Tensor grad, Tensor? eta, {_ARGS}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"


def _backward_impl(
    kind: str,
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
) -> tuple[Any, Any, Any, Any, Any]:
    if not _on_cpu(grad, eta, x, delta, eps, lower, upper):
        args = (x, delta, eps, lower, upper, lower_s, upper_s, p, axis, unreachable)
        gs = _device.vjp(kind, grad, *args, eta=eta)
    else:
        gx, gd, ge, gl, gu = _numpy.vjp(
            kind,
            _np(x),
            _np(delta),
            _np(eps),
            _np(grad),
            p,
            _side_np(lower, lower_s),
            _side_np(upper, upper_s),
            tuple(axis),
            unreachable,
            eta=None if eta is None else _np(eta),
        )
        gs = (
            _from_np(gx, x.dtype),
            _from_np(gd, delta.dtype),
            _from_np(ge, eps.dtype),
            None if gl is None else _from_np(gl, lower.dtype),
            None if gu is None else _from_np(gu, upper.dtype),
        )
    # absent bound cotangents are distinct empty tensors (outputs may not alias)
    gl = x.new_empty((0,)) if gs[3] is None else gs[3]
    gu = x.new_empty((0,)) if gs[4] is None else gs[4]
    return _strided_like(gs[0], x), _strided_like(gs[1], delta), gs[2], gl, gu


def _backward_of(
    kind: str, prob: Any, grad: Any, eta: Any, x: Any, delta: Any, eps: Any, lower: Any, upper: Any
) -> tuple[Any, Any, Any, Any, Any]:
    """The CPU backward from the problem the forward checked (nothing is checked again)."""
    gx, gd, ge, gl, gu = _numpy.vjp_of(
        prob,
        kind,
        _np(x),
        _np(delta),
        _np(eps),
        _np(grad),
        prob.lower if lower is None else _np(lower),
        prob.upper if upper is None else _np(upper),
        eta=_np(eta),
    )
    return (
        _strided_like(_from_np(gx, x.dtype), x),
        _strided_like(_from_np(gd, delta.dtype), delta),
        _from_np(ge, eps.dtype),
        None if gl is None else _from_np(gl, lower.dtype),
        None if gu is None else _from_np(gu, upper.dtype),
    )


def _scale_backward_impl(grad: Any, *args: Any) -> tuple[Any, Any, Any, Any, Any]:
    return _backward_impl("scale", grad, *args)


def _perturb_backward_impl(grad: Any, *args: Any) -> tuple[Any, Any, Any, Any, Any]:
    return _backward_impl("perturb", grad, *args)


_scale_backward_op = torch.library.custom_op(
    "clipresc::scale_backward", _scale_backward_impl, mutates_args=(), schema=_BWD_SCHEMA
)
_perturb_backward_op = torch.library.custom_op(
    "clipresc::perturb_backward", _perturb_backward_impl, mutates_args=(), schema=_BWD_SCHEMA
)


def _backward_fake(
    grad: Any, eta: Any, x: Any, delta: Any, eps: Any, lower: Any, upper: Any, *rest: Any
) -> tuple[Any, Any, Any, Any, Any]:
    def like(t: Any) -> Any:
        return x.new_empty((0,)) if t is None else t.new_empty(t.shape)

    return torch.empty_like(x), torch.empty_like(delta), like(eps), like(lower), like(upper)


_scale_backward_op.register_fake(_backward_fake)
_perturb_backward_op.register_fake(_backward_fake)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    """What every backward needs: the forward's ``eta`` (or residual) and tensors, the
    static arguments, and the problem the forward checked when it rode along with ``eta``
    (CPU, eager). Used by the operators' ``register_autograd`` and by the autograd
    Functions of :mod:`._torch_func`."""
    x, delta, eps, lower, upper, *statics = inputs
    if isinstance(output, tuple):  # perturb: (y, eta)
        eta = output[1]
        ctx.mark_non_differentiable(eta)
    else:  # scale: eta itself, usable while it is in the work dtype
        eta = output if output.dtype == _work_dtype(x.dtype) else None
    ctx.save_for_backward(eta, x, delta, eps, lower, upper)
    ctx.statics = tuple(statics)
    ctx.problem = getattr(eta, "_clipresc_problem", None)


def _eager_backward(tensors: tuple[Any, ...]) -> bool:
    """Whether the backward may run its implementation directly instead of the operator:
    plain tensors, no tracing, no functorch transform and no graph being recorded (no
    double backward). The operator's dispatch costs more than a small problem."""
    if (
        torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
    ):
        return False
    for t in tensors:  # a loop, not all(...): this runs on every backward
        if t is not None and type(t) is not torch.Tensor:
            return False
    return True


def _make_backward(kind: str, op: Any, direct: Any = None, bound_grads: bool = True) -> Any:
    """The ``register_autograd`` backward of ``kind``: ``op`` (the backward operator), or
    its implementation ``direct`` (default: :func:`_backward_impl`) where no graph of the
    gradient is recorded. Tensor bounds get gradients if ``bound_grads``."""
    if direct is None:
        direct = functools.partial(_backward_impl, kind)

    def backward(ctx: Any, grad: Any, *unused: Any) -> tuple[Any, ...]:
        eta, x, delta, eps, lower, upper = ctx.saved_tensors
        args = (grad, eta, x, delta, eps, lower, upper, *ctx.statics)
        eager = _eager_backward(args[:7])
        if eager and ctx.problem is not None and _on_cpu(grad, eta, x):
            gx, gd, ge, gl, gu = _backward_of(kind, ctx.problem, *args[:7])
        elif eager:
            gx, gd, ge, gl, gu = direct(*args)
        else:
            gx, gd, ge, gl, gu = op(*args)
        return (
            gx,
            gd,
            ge,
            None if lower is None or not bound_grads else gl,
            None if upper is None or not bound_grads else gu,
            None,
            None,
            None,
            None,
            None,
        )

    return backward


torch.library.register_autograd(
    "clipresc::scale",
    _make_backward("scale", _scale_backward_op),
    setup_context=_setup_context,
)
torch.library.register_autograd(
    "clipresc::perturb",
    _make_backward("perturb", _perturb_backward_op),
    setup_context=_setup_context,
)


# --------------------------------------------------------------------------- public


def _prepare_args(
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
    delta_name: str = "delta",
) -> tuple[Any, ...]:
    """Metadata checks and the operator's arguments (tensors cast where the contract says).
    ``delta_name``: what messages call ``delta`` (``"z"`` for ``project``)."""
    if torch.compiler.is_compiling():
        return _traced_args(x, delta, eps, p, bounds, axis, unreachable)
    if not isinstance(x, torch.Tensor) or not isinstance(delta, torch.Tensor):
        raise _errors.not_tensors("torch", "torch tensors", x, delta)
    call = describe(
        x.shape, x.dtype, delta.shape, delta.dtype, p, axis, unreachable, False, delta_name
    )
    axes = call.vec_axes
    if delta.dtype != x.dtype:
        delta = delta.to(x.dtype)
    wd = torch.float64 if x.dtype == torch.float64 else torch.float32
    eps_t: Any
    if isinstance(eps, torch.Tensor):
        call_args.check_eps_dtype(_dtype_name(eps.dtype))
        eps_t = eps.to(device=x.device, dtype=torch.float64)
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        eps_t = float(eps)  # made a tensor only if the operator is called (see _call)
    else:
        e = np.asarray(eps)
        call_args.check_eps_dtype(str(e.dtype))
        eps_t = torch.as_tensor(e.astype(np.float64), device=x.device)
    eps_shape = tuple(eps_t.shape) if isinstance(eps_t, torch.Tensor) else ()
    if eps_shape:
        eta_shape = tuple(_eta_shape(x.shape, axes))
        rows = math.prod([s for a, s in enumerate(x.shape) if a not in axes])
        if not call_args.eps_fits(eps_shape, rows, eta_shape):
            raise _errors.eps_shape(rows, eps_shape)
    if call_args.number_bounds(bounds):
        lower_t, lower_s, upper_t, upper_s = None, bounds[0], None, bounds[1]
    else:
        sides: list[Any] = []
        for value, side in zip(split_bounds(bounds), ("lower", "upper")):
            s = call_args.scalar_side(value, side)
            if s is not None:
                sides += [None, s]
                continue
            t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
            call_args.check_side_array(side, _dtype_name(t.dtype), tuple(t.shape), tuple(x.shape))
            t = t.to(device=x.device, dtype=wd)
            sides += [t.reshape(1) if t.ndim == 0 else t, 0.0]
        lower_t, lower_s, upper_t, upper_s = sides
    args = (x, delta, eps_t, lower_t, upper_t, lower_s, upper_s, call.p, list(axes))
    return (*args, call.unreachable)


def _traced_args(
    x: Any,
    delta: Any,
    eps: Any,
    p: Any,
    bounds: Any,
    axis: Any,
    unreachable: Any,
) -> tuple[Any, ...]:
    """The operator's arguments, in code that ``torch.compile`` traces without breaks.

    The metadata checks are left to the operator, which runs every check of the NumPy path
    when the compiled code runs.
    """
    axes = list(vector_axes(axis, x.ndim))
    wd = _work_dtype(x.dtype)
    # float64 from the start: a Python float made a default-dtype (float32) tensor rounds
    eps_t = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
    sides: list[Any] = []
    lower, upper = (None, None) if bounds is None else (bounds[0], bounds[1])
    for value, inf in ((lower, -math.inf), (upper, math.inf)):
        if value is None:
            sides += [None, inf]
        elif isinstance(value, (int, float)):
            sides += [None, float(value)]
        else:
            t = torch.as_tensor(value, dtype=wd, device=x.device)
            sides += [t.reshape(1) if t.ndim == 0 else t, 0.0]
    delta = delta.to(x.dtype)
    return (x, delta, eps_t, sides[0], sides[2], sides[1], sides[3], float(p), axes, unreachable)


def _plain(t: Any) -> bool:
    return not isinstance(t, torch.Tensor) or (
        type(t) is torch.Tensor and not t.requires_grad and not t.is_meta
    )


def _call(kind: str, args: tuple[Any, ...], direct: Any = None) -> Any:
    """The differentiable operator (:mod:`._torch_func`), or for plain tensors needing no
    gradient outside any tracing or functorch transform, its implementation directly (the
    dispatch costs more than a small problem): ``direct`` (default: :func:`_forward_impl`
    of ``kind``)."""
    if (
        not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and _plain(args[0])
        and _plain(args[1])
        and _plain(args[2])
        and _plain(args[3])
        and _plain(args[4])
    ):
        return _forward_impl(kind, *args) if direct is None else direct(*args)
    if not isinstance(args[2], torch.Tensor):
        x = args[0]
        args = (*args[:2], torch.tensor(args[2], dtype=torch.float64, device=x.device), *args[3:])
    return _func.apply(kind, args)


def scale(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = (0.0, 1.0),
    axis: Axis = None,
    unreachable: str = "saturate",
) -> Any:
    """:func:`clipresc.scale` for PyTorch tensors, differentiable.

    Arguments as :func:`clipresc.scale`; ``x`` and ``delta`` are tensors, ``eps`` and the
    bounds may be tensors (on ``x``'s device) or numbers. Returns ``eta`` as a tensor of
    ``x``'s dtype and device. Gradients flow to every tensor argument that requires them.

    >>> import torch
    >>> from clipresc.frameworks import torch as ct
    >>> x = torch.tensor([[0.5, 0.9]], dtype=torch.float64)
    >>> ct.scale(x, torch.ones_like(x), 0.5, p=1)
    tensor([[0.4000]], dtype=torch.float64)
    """
    return _call("scale", _prepare_args(x, delta, eps, p, bounds, axis, unreachable))


def perturb(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = (0.0, 1.0),
    axis: Axis = None,
    unreachable: str = "saturate",
) -> Any:
    """:func:`clipresc.perturb` for PyTorch tensors, differentiable.

    Arguments as :func:`clipresc.perturb`; returns ``clip(x + eta * delta, lower, upper)``
    as a tensor of ``x``'s shape, dtype and device.

    >>> import torch
    >>> from clipresc.frameworks import torch as ct
    >>> x = torch.rand(8, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    >>> y = ct.perturb(x, torch.randn(8, 3, 4, 4, dtype=torch.float64), eps=1.0)
    >>> torch.allclose((y - x).flatten(1).norm(dim=1), torch.ones(8, dtype=torch.float64))
    True
    >>> y.sum().backward()
    >>> x.grad.shape
    torch.Size([8, 3, 4, 4])
    """
    return _call("perturb", _prepare_args(x, delta, eps, p, bounds, axis, unreachable))


from . import _torch_device as _device  # noqa: E402  (uses the helpers above)
from . import _torch_func as _func  # noqa: E402
