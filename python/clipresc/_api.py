"""The public functions: they hand every call to :mod:`clipresc._dispatch`, which checks the
arguments and picks the backend for the caller's arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _dispatch
from ._args import Axis

DEFAULT_BOUNDS = (0.0, 1.0)


def scale(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: Axis = None,
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
    return _dispatch.forward("scale", x, delta, eps, p, bounds, axis, unreachable)


def perturb(
    x: Any,
    delta: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: Axis = None,
    unreachable: str = "saturate",
    *,
    out: Any = None,
) -> Any:
    """``clip(x + eta * delta, lower, upper)`` with ``eta`` from :func:`scale`, fused.

    Same arguments as :func:`scale`; returns an array of ``x``'s shape and dtype whose
    distance to ``x`` is exactly ``eps`` in the ``p``-norm, per vector.

    ``out``: a NumPy array of ``x``'s shape and dtype to write the result into (NumPy inputs
    only), returned. When it is C-contiguous and the vector axes are the trailing ones the
    core writes into it directly, which saves allocating (and page-faulting) a result per
    call in a loop. It must not overlap ``x``, ``delta`` or a bound array. If the call raises
    after checking its arguments, ``out`` is filled with NaN, never left half-written.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); d = np.array([[1.0, 1.0]])
    >>> y = clipresc.perturb(x, d, 0.5, p=1)
    >>> y, float(np.abs(y - x).sum())
    (array([[0.9, 1. ]]), 0.5)
    >>> buf = np.empty_like(x)
    >>> clipresc.perturb(x, d, 0.5, p=1, out=buf) is buf and bool(np.array_equal(buf, y))
    True
    """
    return _dispatch.forward("perturb", x, delta, eps, p, bounds, axis, unreachable, out)


def scale_vjp(
    x: Any,
    delta: Any,
    eps: Any,
    etabar: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: Axis = None,
    unreachable: str = "saturate",
) -> dict[str, Any]:
    """Vector-Jacobian product of :func:`scale`: the cotangents of its inputs for ``etabar``.

    Closed form (implicit differentiation of the size equation), O(n) per vector, in the
    Rust core for NumPy and CPU arrays. Same arguments as :func:`scale`, plus ``etabar``,
    the cotangent of ``eta`` (``eta``'s shape, or anything broadcastable to it).

    Returns:
        ``{"x", "delta", "eps", "lower", "upper"}``: arrays of the caller's library, each in
        the shape and dtype of its argument (``eps``'s is 0-d for a number ``eps``); an
        array bound gets its own shape (summed over the axes it broadcasts along), a number
        or ``None`` bound gets ``None``.

    Conventions where ``eta`` is not differentiable: elements on a breakpoint count as
    saturated (the derivative for increasing ``eps``); ``eps = 0`` gives the finite
    ``d eta / d eps = (sum_i |delta_i|^p)^(-1/p)`` over elements with room; when ``eps`` is
    unreachable ``eta`` follows the element that saturates last (``eps`` gets 0); for
    ``p = inf`` only ``eps`` and the arg-min direction element get gradient.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); d = np.array([[1.0, 1.0]])
    >>> g = clipresc.scale_vjp(x, d, 0.5, np.ones((1, 1)), p=1)  # eta = eps - (1 - x[1])
    >>> g["eps"], g["x"], g["upper"]
    (array(1.), array([[0., 1.]]), None)
    >>> g = clipresc.scale_vjp(x, d, 0.5, 1.0, p=1, bounds=(0.0, np.ones(2)))
    >>> g["upper"]  # the upper bound of the saturated element
    array([ 0., -1.])
    """
    return _dispatch.vjp("scale", x, delta, eps, etabar, p, bounds, axis, unreachable)


def perturb_vjp(
    x: Any,
    delta: Any,
    eps: Any,
    ybar: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: Axis = None,
    unreachable: str = "saturate",
) -> dict[str, Any]:
    """Vector-Jacobian product of :func:`perturb`: the cotangents of its inputs for ``ybar``.

    ``ybar`` is the cotangent of ``y = perturb(x, delta, eps, ...)`` (``x``'s shape, or
    broadcastable to it). Each element passes ``ybar`` to ``x`` (and ``eta * ybar`` to
    ``delta``) while it moves freely, or to the bound it sits on once saturated; the rest
    flows through ``eta`` as in :func:`scale_vjp`. Returns the same dict as
    :func:`scale_vjp`.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); d = np.array([[1.0, 1.0]])
    >>> g = clipresc.perturb_vjp(x, d, 0.5, np.array([[1.0, 0.0]]), p=1)
    >>> g["x"], g["eps"]  # y[0] = x[0] + eps - (1 - x[1])
    (array([[1., 1.]]), array(1.))
    """
    return _dispatch.vjp("perturb", x, delta, eps, ybar, p, bounds, axis, unreachable)


# tf.function's AutoGraph calls functions carrying this attribute as they are (it is what
# tf.autograph.experimental.do_not_convert sets) instead of rewriting clipresc's Python into
# graph code, which it cannot do for the dispatch and which warns; set without importing TF
for _public in (scale, perturb, scale_vjp, perturb_vjp):
    setattr(_public, "autograph_info__", None)  # noqa: B010  (not an attribute mypy knows)
