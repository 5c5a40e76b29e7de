"""NumPy-level forward and VJP shared by the framework integrations.

The framework modules hand NumPy views of their CPU arrays to :func:`forward` and
:func:`vjp`, which run the Rust core through the public NumPy functions. :func:`vjp` uses
``clipresc.scale_vjp`` / ``clipresc.perturb_vjp`` when the package provides them (the
closed-form VJP in Rust) and otherwise the array-API VJP of
:mod:`clipresc.backends.generic` on the core's ``(rows, n)`` layout, with ``eta`` from the
Rust forward. Either way the cotangents come back fitted to the shapes of the caller's
arguments (``eps`` and array bounds reduced over the axes they broadcast along).

Bounds are given here as two sides, each a Python float (``+-inf`` for none) or an array
broadcastable to ``x``; ``axis`` is a tuple of non-negative vector axes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from .. import _api
from .._args import check_real_dtype, parse_p, parse_unreachable, vector_axes
from .._layout import Layout
from .._prepare import prepare
from ..backends import generic, numpy_backend

Side = Union[float, "np.ndarray[Any, Any]"]


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
    fn = _api.scale if kind == "scale" else _api.perturb
    out = fn(x, delta, eps, p=p, bounds=(lower, upper), axis=axis, unreachable=unreachable)
    return np.asarray(out)


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
    """The cotangent ``g`` in the shape and dtype of ``like`` (a fresh, writable array).

    ``g`` may be ``None`` (zero), already of ``like``'s shape, or of any shape that
    ``like`` broadcasts to, possibly after reshaping to ``full_shape``.
    """
    shape = tuple(np.shape(like))
    dtype = np.dtype(like.dtype) if hasattr(like, "dtype") else np.dtype(np.float64)
    if g is None:
        return np.zeros(shape, dtype=dtype)
    ga = np.asarray(g)
    if ga.shape != shape and ga.ndim < len(full_shape) and ga.size == math.prod(full_shape):
        ga = ga.reshape(full_shape)
    return np.array(_reduce_to(ga, shape), dtype=dtype, copy=True)


def _side_value(s: Side) -> Any:
    return s if isinstance(s, float) else np.asarray(s)


def _shim_vjp(
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
) -> dict[str, Any]:
    """The VJP from :mod:`clipresc.backends.generic` on the core's layout (no Rust VJP)."""
    prob = prepare(x, delta, eps, p, (lower, upper), axis, unreachable)
    lay = prob.layout
    wd = prob.x.dtype
    eta = np.asarray(numpy_backend.scale(prob), dtype=wd).reshape(lay.rows)
    eps_rows = np.ascontiguousarray(np.broadcast_to(np.asarray(prob.eps, np.float64), lay.rows))
    if kind == "scale":
        cot_rows = np.asarray(cot, dtype=wd).reshape(lay.rows)
        out = generic.scale_vjp_rows(
            prob.x, prob.delta, eps_rows, p, prob.lower, prob.upper, eta, cot_rows
        )
    else:
        cot_rows = lay.to_rows(np.asarray(cot), wd)
        out = generic.perturb_vjp_rows(
            prob.x, prob.delta, eps_rows, p, prob.lower, prob.upper, eta, cot_rows
        )

    def full(g: Any) -> Any:
        """A bound's cotangent from the core's layout back to ``x``'s axes."""
        if g is None:
            return None
        g = np.asarray(g)
        if g.ndim == 1:  # one row shared by every vector: batch axes of size 1
            one = tuple(1 if a in lay.batch_axes else s for a, s in enumerate(lay.shape))
            return Layout.of(one, lay.vec_axes).from_rows(g.reshape(1, lay.n))
        return lay.from_rows(g)

    return {
        "x": lay.from_rows(np.asarray(out["x"])),
        "delta": lay.from_rows(np.asarray(out["delta"])),
        "eps": np.asarray(out["eps"]).reshape(lay.eta_shape),
        "lower": full(out["lower"]),
        "upper": full(out["upper"]),
    }


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
) -> tuple[Any, Any, Any, Any, Any]:
    """Cotangents ``(xbar, deltabar, epsbar, lowerbar, upperbar)`` for the cotangent ``cot``
    of ``eta`` (``kind="scale"``, shape of ``eta``) or of ``y`` (``kind="perturb"``).

    Each is a fresh array of its argument's shape and dtype; ``lowerbar`` / ``upperbar``
    are ``None`` for Python-float sides.

    >>> import numpy as np
    >>> x, d = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    >>> gx, gd, ge, gl, gu = vjp("scale", x, d, 0.2, np.ones((1, 1)), 2.0, 0.0, 1.0,
    ...                          (1,), "saturate")
    >>> float(ge), gd.tolist(), gu is None
    (1.0, [[-0.2, 0.0]], True)
    """
    import clipresc

    name = "scale_vjp" if kind == "scale" else "perturb_vjp"
    fn = getattr(clipresc, name, None)
    if fn is not None:
        out = fn(
            x,
            delta,
            eps,
            cot,
            p=p,
            bounds=(_side_value(lower), _side_value(upper)),
            axis=axis,
            unreachable=unreachable,
        )
    else:
        out = _shim_vjp(kind, x, delta, eps, cot, p, lower, upper, axis, unreachable)
    xshape = tuple(np.shape(x))
    eta_shape = tuple(1 if a in axis else s for a, s in enumerate(xshape))
    return (
        _fit(out["x"], x, xshape),
        _fit(out["delta"], delta, xshape),
        _fit(out.get("eps"), eps, eta_shape),
        None if isinstance(lower, float) else _fit(out.get("lower"), lower, xshape),
        None if isinstance(upper, float) else _fit(out.get("upper"), upper, xshape),
    )


# --------------------------------------------------------------------------- argument checks


def check_dtype(name: str, what: str) -> None:
    """Raise ``TypeError`` unless the dtype called ``name`` is a supported float.

    ``bfloat16`` is accepted (the frameworks compute it in float32).

    >>> check_dtype("int32", "x")
    Traceback (most recent call last):
    ...
    TypeError: x must be a real floating-point array; got dtype int32
    """
    if name == "bfloat16":
        return
    try:
        dt = np.dtype(name)
    except TypeError:
        raise TypeError(f"{what} must be a real floating-point array; got dtype {name}") from None
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
    check_dtype(x_dtype, "x")
    check_dtype(d_dtype, "delta")
    pf = parse_p(p)
    mode = parse_unreachable(unreachable)
    if tuple(x_shape) != tuple(d_shape):
        raise ValueError(
            f"delta must have the same shape as x; got {tuple(d_shape)} and {tuple(x_shape)}"
        )
    axes = vector_axes(axis, len(x_shape))
    return pf, str(mode), axes


def split_bounds(bounds: Any) -> tuple[Any, Any]:
    """``(lower, upper)`` of a ``bounds`` argument (``None`` sides for ``bounds=None``).

    >>> split_bounds(None), split_bounds((0, None))
    ((None, None), (0, None))
    """
    if bounds is None:
        return None, None
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError("bounds must be a (lower, upper) pair or None")
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
        raise TypeError(f"bounds: {side} must be real; got dtype bool")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        if value.dtype.kind not in "fiu":
            raise TypeError(f"bounds: {side} must be real; got dtype {value.dtype}")
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
            raise TypeError(f"bounds: {side} must be real; got dtype {dtype_name}")
    xs = tuple(int(s) for s in x_shape)
    bs = tuple(int(s) for s in shape)
    ok = len(bs) <= len(xs)
    if ok:
        try:
            ok = np.broadcast_shapes(bs, xs) == xs
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"bounds: {side} of shape {bs} does not broadcast to x's shape {xs}")


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
        raise TypeError(
            f"eps must be a real number or array of real numbers; got dtype {dtype_name}"
        )


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
