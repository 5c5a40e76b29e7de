"""Exact projection onto the lp ball around ``x`` intersected with the box: the public
functions, which library computes a call, and the NumPy path through the Rust core."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _clipresc, _errors, _libraries
from ._api import DEFAULT_BOUNDS
from ._args import float_lists, parse_p
from ._prepare import Problem, check_out, prepare
from ._prepare_xp import arg_shapes, cotangent, fit_cotangents
from .backends import numpy_backend

PROJECT_PS = (1.0, 2.0, math.inf)


def check_project_p(p: Any) -> float:
    """``p`` as a float if :func:`project` supports it (1, 2 or inf), else ``ValueError``.

    >>> check_project_p(1), check_project_p(math.inf)
    (1.0, inf)
    >>> check_project_p(3)
    Traceback (most recent call last):
    ValueError: project supports p = 1, 2 or inf; got 3
    """
    pf = parse_p(p)
    # comparisons, not `in`: under torch.compile(dynamic=True) p may be a symbolic float
    if all(pf != q for q in PROJECT_PS):
        raise _errors.project_p(p)
    return pf


def _named(x: Any, z: Any, eps: Any, bounds: Any, **more: Any) -> dict[str, Any]:
    named = _libraries.arguments(x, z, eps, bounds, **more)
    return {("z" if k == "delta" else k): v for k, v in named.items()}


def family(named: dict[str, Any]) -> str:
    """The library of a call's arrays (``"numpy"`` when there are none): one rule for
    every entry point, :func:`clipresc._libraries.library_of_call`'s."""
    return _libraries.library_of_call(named)[0]


def prepare_project(
    x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any
) -> tuple[Problem, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The checked problem (``z`` in ``prob.delta``) and the caller's ``x`` and ``z``."""
    check_project_p(p)
    xa, za = np.asarray(x), np.asarray(z)
    prob = prepare(xa, za, eps, p, bounds, axis, "saturate", True, delta_name="z")
    return prob, xa, za


def _project_into(
    prob: Problem, mult_out: Any = None, out: Any = None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[int, int]]:
    """``(y, multipliers, (0, 0))``: the core's projection into ``out`` (C-contiguous
    ``(rows, n)`` in the work dtype) or a fresh array, and each row's multiplier into
    ``mult_out`` or a fresh ``(rows,)`` float64 array; shaped as the fused calls of
    ``numpy_backend._into_out`` return (nothing is ever unreachable). Raises the core's
    ``InputError``."""
    y = np.empty_like(prob.x) if out is None else out
    mult = np.empty(prob.x.shape[0], dtype=np.float64) if mult_out is None else mult_out
    _clipresc.project_into(prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p, y, mult)
    return y, mult, (0, 0)


def project_rows(prob: Problem, mult_out: Any = None) -> np.ndarray[Any, Any]:
    """The projection as ``(rows, n)`` in the work dtype (the core's layout); each row's
    multiplier into ``mult_out`` (``(rows,)`` float64) when given, for
    :func:`project_vjp_of`."""
    try:
        return _project_into(prob, mult_out)[0]
    except _clipresc.InputError as e:
        raise numpy_backend._input_error(prob, e) from None


def project_numpy(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any, out: Any = None) -> Any:
    """:func:`project` of NumPy inputs, in the caller's dtype and layout; into ``out``
    (checked here) when given."""
    prob = prepare_project(x, z, eps, p, bounds, axis)[0]
    if out is None:
        return project_of(prob)
    check_out(out, prob, [("x", x), ("z", z), ("lower", prob.lower), ("upper", prob.upper)])
    return numpy_backend._into_out(prob, out, lambda out: _project_into(prob, out=out), ())[0]


def project_of(prob: Problem, mult_out: Any = None) -> Any:
    """:func:`project` of a prepared problem, in the caller's dtype and layout (multipliers
    as :func:`project_rows` writes them)."""
    y = project_rows(prob, mult_out)
    return prob.layout.from_rows(y.astype(prob.dtype, copy=False))


def project_vjp_numpy(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any, mult: Any = None
) -> dict[str, Any]:
    """:func:`project_vjp` of NumPy inputs (NumPy results); ``mult`` as for
    :func:`project_vjp_of`."""
    prob, _, za = prepare_project(x, z, eps, p, bounds, axis)
    return project_vjp_of(prob, za.dtype, eps, ybar, mult)


def project_vjp_of(
    prob: Problem, z_dtype: Any, eps: Any, ybar: Any, mult: Any = None
) -> dict[str, Any]:
    """:func:`project_vjp` of the problem its forward prepared (nothing is read or checked
    again); ``z_dtype`` and ``eps`` give the cotangents their dtypes and shapes. ``mult``:
    the forward's multipliers (``(rows,)`` float64, from :func:`project_rows`; NaN where
    unknown), so that no row is searched again (the cotangents are bitwise the same)."""
    import array_api_compat  # the cotangent helpers only: project never imports it

    lay = prob.layout
    npx = array_api_compat.array_namespace(np.empty(0))
    c = lay.to_rows(cotangent(npx, ybar, lay.shape, "ybar", prob.x), prob.x.dtype)
    gx, gz = np.empty_like(prob.x), np.empty_like(prob.x)
    ge = np.empty(lay.rows, dtype=np.float64)
    try:
        _clipresc.project_vjp_into(
            prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p, c, gx, gz, ge, mult
        )
    except _clipresc.InputError as e:
        raise numpy_backend._input_error(prob, e) from None
    shapes = arg_shapes(eps, None, lay)
    g = {"x": gx, "delta": gz, "eps": ge, "lower": None, "upper": None}
    out = fit_cotangents(npx, g, lay, shapes, prob.dtype, z_dtype)
    return {"x": out["x"], "z": out["delta"], "eps": out["eps"]}


def project(
    x: Any,
    z: Any,
    eps: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: int | Sequence[int] | None = None,
    *,
    out: Any = None,
) -> Any:
    """The point of ``{y : ||y - x||_p <= eps, lower <= y <= upper}`` closest to ``z``.

    The exact Euclidean projection onto the ball around ``x`` intersected with the box, per
    vector: the step after every iterate of a PGD-style attack. Not the same as projecting
    onto the ball and then clipping, which is feasible but generally not the closest point.

    Args:
        x: centres of the balls, inside the box; a float16/32/64 array, axis 0 the batch.
        z: the points to project, same shape as ``x``.
        eps: the radius: a scalar or one value per vector.
        p: 1, 2 or ``math.inf`` (other ``p`` raise ``ValueError``).
        bounds: ``(lower, upper)`` as for :func:`clipresc.perturb`; ``None`` for no box.
        axis: the axes forming one vector, as for :func:`clipresc.perturb`.
        out: a NumPy array to write ``y`` into, as for :func:`clipresc.perturb` (NumPy
            inputs only; it must not overlap ``x``, ``z`` or a bound array): the loop of an
            attack then allocates nothing per step.

    Returns:
        ``y`` with ``x``'s shape and dtype (``out`` when given).

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); z = np.array([[2.0, 0.9]])
    >>> clipresc.project(x, z, 0.25, p=1)  # moves 0.25 towards z[0] (1.75 away)
    array([[0.75, 0.9 ]])
    >>> z = np.array([[1.5, 1.5]])  # p = 2: the ball alone would give [0.85..., 1.07...]
    >>> clipresc.project(x, z, 0.5)  # the box stops the second at 1: the first goes further
    array([[0.98989795, 1.        ]])
    >>> buf = np.empty_like(x)
    >>> clipresc.project(x, z, 0.5, out=buf) is buf
    True
    """
    if out is None and _libraries.compiling_torch_module(x) is not None:
        from .frameworks import torch_project  # no untraceable dispatch

        return torch_project.project(x, z, eps, p, bounds, axis)
    x, z = float_lists(x), float_lists(z)
    fam = family(_named(x, z, eps, bounds))
    if fam == "numpy":
        return project_numpy(x, z, eps, p, bounds, axis, out)
    if out is not None:
        raise _errors.out_numpy_only(fam)
    from . import _project_routes

    return _project_routes.project(fam, x, z, eps, p, bounds, axis)


def project_vjp(
    x: Any,
    z: Any,
    eps: Any,
    ybar: Any,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    axis: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Vector-Jacobian product of :func:`project`: the cotangents of ``x``, ``z`` and ``eps``.

    Closed form, O(n) per vector. ``ybar`` is the cotangent of ``y`` (``x``'s shape, or
    broadcastable to it). Returns ``{"x", "z", "eps"}`` in the shapes and dtypes of the
    arguments (``eps``'s is 0-d for a number); the bounds get no gradient.

    Conventions where the projection is not differentiable: an element on a side of the box
    (or of the ``p = inf`` ball) counts as clipped; at ``eps = 0``, and where the ``p = 1``
    multiplier sits on a breakpoint, the derivative is the one for increasing ``eps``.

    >>> import numpy as np, clipresc
    >>> x = np.array([[0.5, 0.9]]); z = np.array([[2.0, 0.9]])
    >>> g = clipresc.project_vjp(x, z, 0.25, np.ones((1, 2)), p=1)  # y = [x0 + eps, x1]
    >>> g["x"], g["z"], g["eps"]
    (array([[1., 1.]]), array([[0., 0.]]), array(1.))
    """
    x, z = float_lists(x), float_lists(z)
    fam = family(_named(x, z, eps, bounds, ybar=ybar))
    if fam == "numpy":
        return project_vjp_numpy(x, z, eps, ybar, p, bounds, axis)
    from . import _project_routes

    return _project_routes.project_vjp(fam, x, z, eps, ybar, p, bounds, axis)
