"""The CuPy kernels (:mod:`clipresc.backends.cupy_backend`) as a
:class:`~clipresc.backends.interface.RowBackend`.

The VJP kernel uses the forward's ``eta`` when it is given (no solve: one pass gathers
the sums and the breakpoint index, one writes the cotangents) and solves each row once
when it is ``None``, so ``eta`` is not needed but never computed twice. This module imports
CuPy; clipresc imports it only for CuPy arrays or CUDA tensors on a machine with a GPU.
"""

from __future__ import annotations

from typing import Any, Callable

from . import cupy_backend
from .cupy_backend import perturb_rows, scale_rows

__all__ = ["perturb_rows", "perturb_vjp_rows", "scale_rows", "scale_vjp_rows"]

NEEDS_ETA = False


def _named(kernel_vjp: Callable[..., tuple[Any, ...]]) -> Callable[..., dict[str, Any]]:
    """``kernel_vjp(x, d, eps, p, lower, upper, cot, eta)`` (a tuple of cotangents) with
    the interface's signature (``eta`` before ``cot``) and result (a dict)."""

    def vjp_rows(
        x: Any, d: Any, eps: Any, p: float, lower: Any, upper: Any, eta: Any, cot: Any
    ) -> dict[str, Any]:
        g = kernel_vjp(x, d, eps, p, lower, upper, cot, eta)
        return dict(zip(("x", "delta", "eps", "lower", "upper"), g))

    return vjp_rows


scale_vjp_rows = _named(cupy_backend.scale_vjp_rows)
perturb_vjp_rows = _named(cupy_backend.perturb_vjp_rows)
