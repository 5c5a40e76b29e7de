"""NumPy-level forward and VJP shared by the framework integrations.

The framework modules hand NumPy views of their CPU arrays to :func:`forward_problem` and
:func:`vjp`, which check them like the NumPy path (:func:`clipresc._prepare.prepare`) and
run the Rust core (:mod:`clipresc.backends.numpy_backend`); nothing here goes back up
through the public API. :func:`forward_problem` also returns the scales ``eta`` it solved
for (``(rows,)``, work dtype), which :func:`vjp` takes to skip solving again in the backward.
The cotangents come back in the shapes and dtypes of the caller's arguments (``eps`` and
array bounds reduced over the axes they broadcast along), without copying the large ones
where their memory already fits.

Bounds are given here as two sides, each a Python float (``+-inf`` for none) or an array
broadcastable to ``x``; ``axis`` is a tuple of non-negative vector axes.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from .._layout import reduce_to
from .._prepare import Problem, prepare
from ..backends import numpy_backend

Side = Union[float, "np.ndarray[Any, Any]"]


def _bounds(lower: Side, upper: Side) -> tuple[Any, Any]:
    """The two sides as :func:`clipresc._prepare.prepare`'s ``bounds``."""
    lo = lower if isinstance(lower, float) else np.asarray(lower)
    hi = upper if isinstance(upper, float) else np.asarray(upper)
    return lo, hi


def forward_problem(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    p: float,
    lower: Side,
    upper: Side,
    axis: tuple[int, ...],
    unreachable: str,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Problem]:
    """``scale`` (``kind="scale"``) or ``perturb`` of NumPy arrays through the Rust core,
    the scales it solved for, ``(rows,)`` in the work dtype (float32 for float16 input), and
    the checked problem: hand the scales to :func:`vjp` as ``eta``, or both to
    :func:`vjp_of`.

    >>> import numpy as np
    >>> y, eta, _ = forward_problem("perturb", np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5,
    ...                             1.0, 0.0, 1.0, (1,), "saturate")
    >>> y, eta
    (array([[0.9, 1. ]]), array([0.4]))
    """
    bounds = _bounds(lower, upper)
    prob = prepare(x, delta, eps, p, bounds, axis, unreachable, core_checks_bounds=True)
    if kind == "scale":
        out, eta = numpy_backend.scale_eta(prob)
    else:
        out, eta = numpy_backend.perturb_eta(prob)
    return out, eta, prob


def _fit(g: Any, like: Any, full_shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The cotangent ``g`` (a fresh array that nothing else holds, or ``None`` for zero) in
    the shape and dtype of ``like``: ``g`` itself where it already fits, else a new array.

    ``g`` may be of ``like``'s shape, or of any shape that ``like`` broadcasts to, possibly
    after reshaping to ``full_shape``.
    """
    shape = tuple(np.shape(like))
    dtype = np.dtype(like.dtype) if hasattr(like, "dtype") else np.dtype(np.float64)
    if g is None:
        return np.zeros(shape, dtype=dtype)
    ga = np.asarray(g)
    if ga.shape != shape and ga.ndim < len(full_shape) and ga.size == math.prod(full_shape):
        ga = ga.reshape(full_shape)
    out = np.asarray(ga if ga.shape == shape else reduce_to(np, ga, shape), dtype=dtype)
    return out if out.flags.writeable else np.array(out)


def _eta_rows(eta: Any, prob: Problem) -> np.ndarray[Any, Any] | None:
    """The forward's scales as the core takes them, or ``None`` (solve again) when they do
    not come in the work dtype (e.g. a float16 ``scale`` output)."""
    if eta is None:
        return None
    e = np.asarray(eta)
    if e.dtype != prob.x.dtype or e.size != prob.layout.rows:
        return None
    return np.ascontiguousarray(e.reshape(prob.layout.rows))


def vjp(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    p: float,
    lower: Side,
    upper: Side,
    axis: tuple[int, ...],
    unreachable: str,
    eta: Any = None,
) -> tuple[Any, Any, Any, Any, Any]:
    """Cotangents ``(xbar, deltabar, epsbar, lowerbar, upperbar)`` for the cotangent ``cot``
    of ``eta`` (``kind="scale"``, shape of ``eta``) or of ``y`` (``kind="perturb"``).

    Each is an array of its argument's shape and dtype that the caller owns (not a view of
    an input); ``lowerbar`` / ``upperbar`` are ``None`` for Python-float sides. ``eta``, the
    forward's scales from :func:`forward_problem` (or a ``scale`` output in the work dtype),
    skips the solve.

    >>> import numpy as np
    >>> x, d = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    >>> gx, gd, ge, gl, gu = vjp("scale", x, d, 0.2, np.ones((1, 1)), 2.0, 0.0, 1.0,
    ...                          (1,), "saturate")
    >>> float(ge), gd.tolist(), gu is None
    (1.0, [[-0.2, 0.0]], True)
    """
    prob = prepare(x, delta, eps, p, _bounds(lower, upper), axis, unreachable)
    return vjp_of(prob, kind, x, delta, eps, cot, lower, upper, eta)


def vjp_of(
    prob: Problem,
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    cot: Any,
    lower: Side,
    upper: Side,
    eta: Any = None,
) -> tuple[Any, Any, Any, Any, Any]:
    """:func:`vjp` of the problem its forward prepared (:func:`forward_problem`): the
    arguments are not read or checked again. ``x``, ``delta``, ``eps``, ``lower`` and
    ``upper`` only give the cotangents their shapes and dtypes."""
    lay = prob.layout
    wd = prob.x.dtype
    c = np.asarray(cot)
    if kind == "scale":
        cot_rows = np.broadcast_to(c, lay.eta_shape).reshape(lay.rows)
    else:
        cot_rows = lay.to_rows(np.broadcast_to(c, lay.shape), wd)
    g = numpy_backend.vjp_rows(
        prob,
        kind,
        cot_rows,
        not isinstance(lower, float),
        not isinstance(upper, float),
        eta=_eta_rows(eta, prob),
    )

    def full(gb: Any) -> Any:
        """A bound's cotangent from the core's layout back to ``x``'s axes."""
        return None if gb is None else lay.bound_from_rows(gb)

    xshape = lay.shape
    gx, gd, ge = g["x"], g["delta"], g["eps"]
    assert gx is not None and gd is not None and ge is not None
    return (
        _fit(lay.from_rows(gx), x, xshape),
        _fit(lay.from_rows(gd), delta, xshape),
        _fit(ge.reshape(lay.eta_shape), eps, lay.eta_shape),
        None if isinstance(lower, float) else _fit(full(g["lower"]), lower, xshape),
        None if isinstance(upper, float) else _fit(full(g["upper"]), upper, xshape),
    )
