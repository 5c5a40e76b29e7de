"""The public functions: argument checks, then dispatch to a backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._prepare import prepare
from .backends import numpy_backend

DEFAULT_BOUNDS = (0.0, 1.0)


def scale(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: int | Sequence[int] | None = None,
    unreachable: str = "saturate",
) -> Any:
    """The scale ``eta`` with ``||clip(x + eta * delta, lower, upper) - x||_p == eps``.

    Args:
        x: points inside the box, a float16/32/64 array; axis 0 is the batch by default.
        delta: directions, same shape as ``x``.
        eps: the size wanted after clipping: a scalar or one value per vector.
        p: any real ``p > 0`` or ``math.inf``.
        bounds: ``(lower, upper)``, each a scalar, ``None`` (unbounded) or an array
            broadcastable to ``x``; ``None`` for no clipping at all.
        axis: the axes forming one vector (default: all but the first; 1-D input is one
            vector).
        unreachable: ``"saturate"`` returns the smallest ``eta`` reaching the largest
            possible size when ``eps`` is above it; ``"raise"`` raises ``ValueError``.

    Returns:
        ``eta`` with ``x``'s dtype and shape, the vector axes kept as size 1, so that
        ``x + eta * delta`` broadcasts.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); d = np.array([[1.0, 1.0]])
    >>> clipresc.scale(x, d, 0.5, p=1)  # 0.9 saturates after 0.1; 0.5 moves the other 0.4
    array([[0.4]])
    """
    return numpy_backend.scale(prepare(x, delta, eps, p, bounds, axis, unreachable))


def perturb(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: int | Sequence[int] | None = None,
    unreachable: str = "saturate",
) -> Any:
    """``clip(x + eta * delta, lower, upper)`` with ``eta`` from :func:`scale`, fused.

    Same arguments as :func:`scale`; returns an array of ``x``'s shape and dtype whose
    distance to ``x`` is exactly ``eps`` in the ``p``-norm, per vector.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); d = np.array([[1.0, 1.0]])
    >>> y = clipresc.perturb(x, d, 0.5, p=1)
    >>> y, float(np.abs(y - x).sum())
    (array([[0.9, 1. ]]), 0.5)
    """
    return numpy_backend.perturb(prepare(x, delta, eps, p, bounds, axis, unreachable))
