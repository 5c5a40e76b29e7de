"""The CuPy kernels (:mod:`clipresc.backends.cupy_backend`) as a
:class:`~clipresc.backends.interface.RowBackend`.

The VJP kernel derives the saturated set it needs in the same pass that computes the
cotangents, so the forward's ``eta`` is accepted and not needed. This module imports
CuPy; clipresc imports it only for CuPy arrays or CUDA tensors on a machine with a GPU.
"""

from __future__ import annotations

from typing import Any

from . import cupy_backend
from .cupy_backend import perturb_rows, scale_rows

__all__ = ["perturb_rows", "perturb_vjp_rows", "scale_rows", "scale_vjp_rows"]

Array = Any

NEEDS_ETA = False


def _named(g: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(("x", "delta", "eps", "lower", "upper"), g))


def scale_vjp_rows(
    x: Array,
    d: Array,
    eps: Array,
    p: float,
    lower: Any,
    upper: Any,
    eta: Array | None,
    etabar: Array,
) -> dict[str, Array | None]:
    """:meth:`~clipresc.backends.interface.RowBackend.scale_vjp_rows` on the GPU."""
    return _named(cupy_backend.scale_vjp_rows(x, d, eps, p, lower, upper, etabar))


def perturb_vjp_rows(
    x: Array,
    d: Array,
    eps: Array,
    p: float,
    lower: Any,
    upper: Any,
    eta: Array | None,
    ybar: Array,
) -> dict[str, Array | None]:
    """:meth:`~clipresc.backends.interface.RowBackend.perturb_vjp_rows` on the GPU."""
    return _named(cupy_backend.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar))
