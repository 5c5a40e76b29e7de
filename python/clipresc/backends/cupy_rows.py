"""The CuPy kernels (:mod:`clipresc.backends.cupy_backend`) as a
:class:`~clipresc.backends.interface.RowBackend`.

The VJP kernel derives the saturated set it needs in the same pass that computes the
cotangents, so the forward's ``eta`` is accepted and not needed. This module imports
CuPy; clipresc imports it only for CuPy arrays or CUDA tensors on a machine with a GPU.
"""

from __future__ import annotations

from typing import Any, Callable

from . import cupy_backend
from .cupy_backend import perturb_rows, scale_rows

__all__ = ["perturb_rows", "perturb_vjp_rows", "scale_rows", "scale_vjp_rows"]

NEEDS_ETA = False


def _named(kernel_vjp: Callable[..., tuple[Any, ...]]) -> Callable[..., dict[str, Any]]:
    """``kernel_vjp(x, d, eps, p, lower, upper, cot)`` (a tuple of cotangents) with the
    interface's signature (``eta`` before ``cot``, ignored) and result (a dict)."""

    def vjp_rows(
        x: Any, d: Any, eps: Any, p: float, lower: Any, upper: Any, eta: Any, cot: Any
    ) -> dict[str, Any]:
        g = kernel_vjp(x, d, eps, p, lower, upper, cot)
        return dict(zip(("x", "delta", "eps", "lower", "upper"), g))

    return vjp_rows


scale_vjp_rows = _named(cupy_backend.scale_vjp_rows)
perturb_vjp_rows = _named(cupy_backend.perturb_vjp_rows)
