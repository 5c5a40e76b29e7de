"""Central finite differences in float64 for gradient tests (no clipresc import)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np


def central_diff(
    f: Callable[..., float], args: Sequence[Any], which: int, h: float = 1e-6
) -> np.ndarray:
    """Gradient of the scalar ``f(*args)`` with respect to the array ``args[which]``.

    Each element ``a`` is perturbed by ``+-h * max(1, |a|)``; the result has the shape of
    ``args[which]`` (which must be a float64 numpy array; the caller's array is not
    modified). Non-finite entries (infinite bounds) get 0.
    """
    base = np.array(args[which], dtype=np.float64, copy=True)
    grad = np.zeros_like(base)
    call = list(args)
    for idx in np.ndindex(base.shape):
        if not np.isfinite(base[idx]):
            continue  # an infinite bound: no finite difference, gradient 0
        step = h * max(1.0, abs(float(base[idx])))
        plus = base.copy()
        plus[idx] += step
        minus = base.copy()
        minus[idx] -= step
        call[which] = plus
        f_plus = f(*call)
        call[which] = minus
        f_minus = f(*call)
        grad[idx] = (f_plus - f_minus) / (plus[idx] - minus[idx])
    return grad


def one_sided_diff(
    f: Callable[..., float], args: Sequence[Any], which: int, h: float = 1e-7
) -> np.ndarray:
    """Forward (right-sided) difference ``(f(a + h) - f(a)) / h``, per element."""
    base = np.array(args[which], dtype=np.float64, copy=True)
    grad = np.zeros_like(base)
    call = list(args)
    f0 = f(*call)
    for idx in np.ndindex(base.shape):
        if not np.isfinite(base[idx]):
            continue
        step = h * max(1.0, abs(float(base[idx])))
        plus = base.copy()
        plus[idx] += step
        call[which] = plus
        grad[idx] = (f(*call) - f0) / (plus[idx] - base[idx])
    return grad
