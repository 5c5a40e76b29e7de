"""NumPy-level forward and VJP shared by the framework integrations.

The framework modules hand NumPy views of their CPU arrays to :func:`forward` and
:func:`vjp`, which check them like the NumPy path (:func:`clipresc._prepare.prepare`) and
run the Rust core (:mod:`clipresc.backends.numpy_backend`); nothing here goes back up
through the public API. :func:`forward` can also return the scales ``eta`` it solved for
(``(rows,)``, work dtype), which :func:`vjp` takes to skip solving again in the backward.
The cotangents come back in the shapes and dtypes of the caller's arguments (``eps`` and
array bounds reduced over the axes they broadcast along), without copying the large ones
where their memory already fits.

Bounds are given here as two sides, each a Python float (``+-inf`` for none) or an array
broadcastable to ``x``; ``axis`` is a tuple of non-negative vector axes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from .. import _errors
from .._args import check_real_dtype
from .._call import describe
from .._layout import Layout
from .._prepare import Problem, prepare
from ..backends import numpy_backend

Side = Union[float, "np.ndarray[Any, Any]"]


def _side_value(s: Side) -> Any:
    return s if isinstance(s, float) else np.asarray(s)


def _prepare(
    x: Any,
    delta: Any,
    eps: Any,
    p: float,
    lower: Side,
    upper: Side,
    axis: tuple[int, ...],
    unreachable: str,
    core_checks_bounds: bool = False,
) -> Problem:
    bounds = (_side_value(lower), _side_value(upper))
    return prepare(x, delta, eps, p, bounds, axis, unreachable, core_checks_bounds)


def forward(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    p: float,
    lower: Side,
    upper: Side,
    axis: tuple[int, ...],
    unreachable: str,
) -> np.ndarray[Any, Any]:
    """``scale`` (``kind="scale"``) or ``perturb`` of NumPy arrays through the Rust core.

    >>> import numpy as np
    >>> forward("scale", np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5, 1.0, 0.0, 1.0,
    ...         (1,), "saturate")
    array([[0.4]])
    """
    return forward_eta(kind, x, delta, eps, p, lower, upper, axis, unreachable)[0]


def forward_eta(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    p: float,
    lower: Side,
    upper: Side,
    axis: tuple[int, ...],
    unreachable: str,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`forward` and the scales it solved for, ``(rows,)`` in the work dtype (float32
    for float16 input): hand them to :func:`vjp` as ``eta``.

    >>> import numpy as np
    >>> y, eta = forward_eta("perturb", np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5, 1.0,
    ...                      0.0, 1.0, (1,), "saturate")
    >>> y, eta
    (array([[0.9, 1. ]]), array([0.4]))
    """
    return forward_problem(kind, x, delta, eps, p, lower, upper, axis, unreachable)[:2]


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
    """:func:`forward_eta` and the checked problem, which :func:`vjp_of` takes."""
    if type(lower) is float and type(upper) is float:  # no arrays to wrap
        bounds: tuple[Any, Any] = (lower, upper)
    else:
        bounds = (_side_value(lower), _side_value(upper))
    prob = prepare(x, delta, eps, p, bounds, axis, unreachable, core_checks_bounds=True)
    if kind == "scale":
        out, eta = numpy_backend.scale_eta(prob)
    else:
        out, eta = numpy_backend.perturb_eta(prob)
    return out, eta, prob


def _reduce_to(g: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Sum ``g`` over the axes along which an array of ``shape`` broadcasts to ``g``."""
    if g.shape == shape:
        return g
    if g.size == math.prod(shape) and g.ndim >= len(shape):
        return g.reshape(shape)
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


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
    out = np.asarray(_reduce_to(ga, shape), dtype=dtype)
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
    forward's scales from :func:`forward_eta` (or a ``scale`` output in the work dtype),
    skips the solve.

    >>> import numpy as np
    >>> x, d = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    >>> gx, gd, ge, gl, gu = vjp("scale", x, d, 0.2, np.ones((1, 1)), 2.0, 0.0, 1.0,
    ...                          (1,), "saturate")
    >>> float(ge), gd.tolist(), gu is None
    (1.0, [[-0.2, 0.0]], True)
    """
    prob = _prepare(x, delta, eps, p, lower, upper, axis, unreachable)
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
        if gb is None:
            return None
        if gb.ndim == 1:  # one row shared by every vector: batch axes of size 1
            one = tuple(1 if a in lay.batch_axes else s for a, s in enumerate(lay.shape))
            return Layout.of(one, lay.vec_axes).from_rows(gb.reshape(1, lay.n))
        return lay.from_rows(gb)

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


# --------------------------------------------------------------------------- argument checks


def check_dtype(name: str, what: str) -> None:
    """Raise ``TypeError`` unless the dtype called ``name`` is a supported float.

    ``bfloat16`` is accepted (the frameworks compute it in float32).

    >>> check_dtype("complex64", "x")
    Traceback (most recent call last):
    ...
    TypeError: x must be a real floating-point array; got dtype complex64
    """
    if name == "bfloat16":
        return
    try:
        dt = np.dtype(name)
    except TypeError:
        raise _errors.not_float(what, name) from None
    check_real_dtype(dt, what)


def check_meta(
    x_dtype: str,
    d_dtype: str,
    x_shape: tuple[int, ...],
    d_shape: tuple[int, ...],
    p: Any,
    unreachable: Any,
    axis: Any,
) -> tuple[float, str, tuple[int, ...]]:
    """The checks that need no data, in the NumPy path's order; returns ``(p, mode, axes)``.

    >>> check_meta("float32", "float32", (2, 3), (2, 3), 2, "saturate", None)
    (2.0, 'saturate', (1,))
    """
    call = describe(
        tuple(x_shape), x_dtype, tuple(d_shape), d_dtype, p, axis, unreachable, numpy=False
    )
    return call.p, str(call.unreachable), call.vec_axes


def split_bounds(bounds: Any) -> tuple[Any, Any]:
    """``(lower, upper)`` of a ``bounds`` argument (``None`` sides for ``bounds=None``).

    >>> split_bounds(None), split_bounds((0, None))
    ((None, None), (0, None))
    """
    if bounds is None:
        return None, None
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise _errors.bounds_not_pair()
    return bounds[0], bounds[1]


def scalar_side(value: Any, side: str) -> float | None:
    """``value`` as a float when it is ``None`` (``-inf``/``+inf``) or a Python/NumPy real
    number or 0-d NumPy array; ``None`` when it is an array (of any framework).

    >>> scalar_side(None, "lower"), scalar_side(1, "upper"), scalar_side(np.zeros(3), "upper")
    (-inf, 1.0, None)
    """
    if value is None:
        return -math.inf if side == "lower" else math.inf
    if isinstance(value, (bool, np.bool_)):
        raise _errors.bound_not_real(side, "bool")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        if value.dtype.kind not in "fiu":
            raise _errors.bound_not_real(side, str(value.dtype))
        return float(value)
    return None


def check_side_array(side: str, dtype_name: str, shape: tuple[int, ...], x_shape: Any) -> None:
    """Dtype and broadcast checks of an array bound (messages as the NumPy path).

    >>> check_side_array("lower", "float32", (4,), (2, 3))
    Traceback (most recent call last):
    ...
    ValueError: bounds: lower of shape (4,) does not broadcast to x's shape (2, 3)
    """
    if dtype_name != "bfloat16":
        try:
            kind: str = np.dtype(dtype_name).kind
        except TypeError:
            kind = "?"
        if kind not in "fiu":
            raise _errors.bound_not_real(side, dtype_name)
    xs = tuple(int(s) for s in x_shape)
    bs = tuple(int(s) for s in shape)
    ok = len(bs) <= len(xs)
    if ok:
        try:
            ok = np.broadcast_shapes(bs, xs) == xs
        except ValueError:
            ok = False
    if not ok:
        raise _errors.bound_shape(side, bs, xs)


def check_eps_dtype(dtype_name: str) -> None:
    """Reject non-real ``eps`` arrays like the NumPy path.

    >>> check_eps_dtype("complex64")
    Traceback (most recent call last):
    ...
    TypeError: eps must be a real number or array of real numbers; got dtype complex64
    """
    if dtype_name == "bfloat16":
        return
    try:
        kind: str = np.dtype(dtype_name).kind
    except TypeError:
        kind = "?"
    if kind not in "fiu":
        raise _errors.eps_not_real(f"dtype {dtype_name}")


def eps_rows_shape_ok(shape: tuple[int, ...], rows: int, eta_shape: tuple[int, ...]) -> bool:
    """Whether an ``eps`` of ``shape`` is a scalar or one value per vector.

    >>> eps_rows_shape_ok((3,), 3, (3, 1)), eps_rows_shape_ok((2,), 3, (3, 1))
    (True, False)
    """
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == rows):
        return True
    try:
        return len(shape) <= len(eta_shape) and np.broadcast_shapes(shape, eta_shape) == eta_shape
    except ValueError:
        return False
