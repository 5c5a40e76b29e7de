"""Projected-gradient attack steps whose projection is exact: :func:`clipresc.project` onto
the ball around the clean input intersected with the data box, instead of projecting onto
the ball and then clipping (feasible, but not the closest feasible point).

The steps take the loss gradient at the current iterate from the caller (any framework),
so this module imports none. They work on NumPy arrays and on anything
:func:`clipresc.project` takes that supports the array API (torch, JAX, CuPy...).

>>> import numpy as np
>>> from clipresc.attacks import pgd_l2_step
>>> x = np.full((1, 4), 0.9); g = np.array([[1.0, 1.0, -1.0, 0.0]])
>>> y = pgd_l2_step(x, x, g, eps=0.5, step=1.0)
>>> float(np.linalg.norm(y - x)) <= 0.5 + 1e-12, bool(np.all(y <= 1.0))
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

from ._api import DEFAULT_BOUNDS
from ._project import project

__all__ = ["l1_direction", "pgd_l1_step", "pgd_l2_step"]


def _per_sample(xp: Any, v: Any) -> Any:
    """Sum over every axis but the first, kept as size 1 for broadcasting."""
    return xp.sum(v, axis=tuple(range(1, v.ndim)), keepdims=True)


def pgd_l2_step(
    x: Any,
    x_adv: Any,
    grad: Any,
    eps: Any,
    step: float,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
) -> Any:
    """One L2 PGD ascent step: ``project(x, x_adv + step * grad / ||grad||_2, eps, p=2)``.

    ``x``: clean inputs (axis 0 the batch); ``x_adv``: the current iterate; ``grad``: the
    loss gradient at ``x_adv``. Rows with a zero gradient stay where they are.

    >>> import numpy as np
    >>> x = np.zeros((1, 2)); g = np.array([[3.0, 4.0]])
    >>> pgd_l2_step(x, x, g, eps=1.0, step=10.0)
    array([[0.6, 0.8]])
    """
    xp = array_api_compat.array_namespace(x, x_adv, grad)
    norm = xp.sqrt(_per_sample(xp, grad * grad))
    z = x_adv + step * grad / xp.where(norm > 0, norm, 1.0)
    return project(x, z, eps, p=2, bounds=bounds)


def l1_direction(
    x_adv: Any,
    grad: Any,
    sparsity: float = 0.95,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
) -> Any:
    """The L1 ascent direction of :func:`pgd_l1_step`, of unit L1 size per sample:
    ``sign(grad)`` on the coordinates whose ``|grad|`` is in the top ``1 - sparsity``
    fraction of those that can still move that way (not on the side of the box ``grad``
    points to, as in APGD-L1), spread evenly (as in SLIDE).

    >>> import numpy as np
    >>> l1_direction(np.array([[1.0, 0.5, 0.5]]), np.array([[4.0, -3.0, 0.1]]), 0.7)
    array([[ 0., -1.,  0.]])
    """
    xp = array_api_compat.array_namespace(x_adv, grad)
    lo, hi = (None, None) if bounds is None else bounds
    blocked = xp.zeros(grad.shape, dtype=xp.bool)
    if hi is not None:
        blocked = blocked | ((grad > 0) & (x_adv >= hi))
    if lo is not None:
        blocked = blocked | ((grad < 0) & (x_adv <= lo))
    flat = xp.reshape(xp.where(blocked, 0.0, xp.abs(grad)), (grad.shape[0], -1))
    n = flat.shape[1]
    k = max(1, min(n, round((1.0 - sparsity) * n)))
    cut = xp.sort(flat, axis=1)[:, n - k : n - k + 1]
    keep = (flat >= cut) & (flat > 0)
    sign = xp.reshape(xp.sign(grad), (grad.shape[0], -1))
    direction = xp.where(keep, sign, xp.zeros_like(sign))
    count = xp.sum(xp.abs(direction), axis=1, keepdims=True)
    return xp.reshape(direction / xp.where(count > 0, count, 1.0), grad.shape)


def pgd_l1_step(
    x: Any,
    x_adv: Any,
    grad: Any,
    eps: Any,
    step: float,
    sparsity: float = 0.95,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
) -> Any:
    """One L1 PGD ascent step: ``project(x, x_adv + step * l1_direction(...), eps, p=1)``
    (see :func:`l1_direction`).

    >>> import numpy as np
    >>> x = np.full((1, 4), 0.5); g = np.array([[4.0, -3.0, 0.1, 0.0]])
    >>> pgd_l1_step(x, x, g, eps=0.4, step=1.0, sparsity=0.5)
    array([[0.7, 0.3, 0.5, 0.5]])
    """
    z = x_adv + step * l1_direction(x_adv, grad, sparsity, bounds)
    return project(x, z, eps, p=1, bounds=bounds)
