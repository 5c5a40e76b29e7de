"""NumPy arrays through the Rust core: a :class:`~clipresc.backends.interface.RowBackend`
on C-contiguous ``(rows, n)`` rows in the work dtype, and the same on a prepared
:class:`~clipresc._prepare.Problem` (:func:`scale`, :func:`perturb`, :func:`noise`,
:func:`vjp_rows`), which returns results in the caller's layout and dtype.

Unlike the other row backends, the core checks the values itself: the row functions raise
its ``_clipresc.InputError(argument, problem, count, first)`` with ``first`` a flat
``(rows, n)`` position, and the :class:`~clipresc._prepare.Problem` functions turn it into
the caller's error with the caller's index. The solves report the rows that fall short as
``(count, first row)`` instead of a flag per row (what
:func:`clipresc._prepare_xp.raise_unreachable` takes either way).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _clipresc, _errors
from .._overflow import warn_eta_overflow
from .._prepare import Problem, check_bound_values

NEEDS_ETA = False
"""The core's VJPs solve for ``eta`` themselves when not given it."""

Rows = np.ndarray[Any, Any]
Short = tuple[int, int]
"""``(count, first row)`` of the rows that fall short of ``eps``."""


def scale_rows(x: Rows, d: Rows, eps: Any, p: float, lower: Any, upper: Any) -> tuple[Rows, Short]:
    """``(eta, (count, first))``: the scales ``(rows,)`` in the rows' dtype.

    >>> eta, short = scale_rows(np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5, 1.0, 0.0, 1.0)
    >>> eta.tolist(), short
    ([0.4], (0, -1))
    """
    eta = np.empty(x.shape[0], dtype=x.dtype)
    count, first = _clipresc.scale_into(x, d, lower, upper, eps, p, eta)
    return eta, (count, first)


def perturb_rows(
    x: Rows, d: Rows, eps: Any, p: float, lower: Any, upper: Any, out: Rows | None = None
) -> tuple[Rows, Rows, Short]:
    """``(y, eta, (count, first))`` in one fused pass; ``y`` is written into ``out`` when
    given (C-contiguous ``(rows, n)`` in the rows' dtype).

    >>> y, eta, _ = perturb_rows(np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5, 1.0, 0.0, 1.0)
    >>> y.tolist()
    [[0.9, 1.0]]
    """
    y = np.empty_like(x) if out is None else out
    eta = np.empty(x.shape[0], dtype=x.dtype)
    count, first = _clipresc.perturb_into(x, d, lower, upper, eps, p, y, eta)
    return y, eta, (count, first)


def _vjp(
    kind: str,
    x: Rows,
    d: Rows,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    eta: Rows | None,
    cot: Any,
    want: tuple[bool, bool],
) -> tuple[dict[str, Rows | None], Short]:
    """The core's closed-form cotangents; a bound side in ``want`` given as a number is
    widened to ``(n,)`` so that it gets one."""
    wd, n = x.dtype, x.shape[1]

    def side(b: Any, wanted: bool) -> tuple[Any, Rows | None]:
        if not wanted:
            return b, None
        if isinstance(b, float):
            b = np.full(n, b, dtype=wd)
        return b, np.empty(b.shape, dtype=wd)

    lower, lg = side(lower, want[0])
    upper, ug = side(upper, want[1])
    xg, dg, eg = np.empty_like(x), np.empty_like(x), np.empty(x.shape[0], dtype=np.float64)
    fn = _clipresc.scale_vjp_into if kind == "scale" else _clipresc.perturb_vjp_into
    c = np.ascontiguousarray(cot, dtype=wd)
    short = fn(x, d, lower, upper, eps, p, c, xg, dg, eg, lg, ug, eta=eta)
    return {"x": xg, "delta": dg, "eps": eg, "lower": lg, "upper": ug}, short


def scale_vjp_rows(
    x: Rows, d: Rows, eps: Any, p: float, lower: Any, upper: Any, eta: Any, cot: Any
) -> dict[str, Rows | None]:
    """Cotangents of :func:`scale_rows` for ``etabar`` ``(rows,)`` (``eta`` skips the solve).

    >>> g = scale_vjp_rows(np.array([[0.5, 0.5]]), np.ones((1, 2)), 0.2, 1.0, 0.0, 1.0,
    ...                    None, np.ones(1))
    >>> g["eps"].tolist()
    [0.5]
    """
    want = (not isinstance(lower, float), not isinstance(upper, float))
    return _vjp("scale", x, d, eps, p, lower, upper, eta, cot, want)[0]


def perturb_vjp_rows(
    x: Rows, d: Rows, eps: Any, p: float, lower: Any, upper: Any, eta: Any, cot: Any
) -> dict[str, Rows | None]:
    """Cotangents of :func:`perturb_rows` for ``ybar`` ``(rows, n)``.

    >>> g = perturb_vjp_rows(np.array([[0.5, 0.5]]), np.ones((1, 2)), 0.2, 1.0, 0.0, 1.0,
    ...                      None, np.ones((1, 2)))
    >>> g["x"].tolist()
    [[1.0, 1.0]]
    """
    want = (not isinstance(lower, float), not isinstance(upper, float))
    return _vjp("perturb", x, d, eps, p, lower, upper, eta, cot, want)[0]


# --------------------------------------------------------------------------- on a Problem


def _raise_unreachable(prob: Problem, count: int, first: int) -> None:
    if count and prob.unreachable == "raise":
        raise _errors.unreachable(count, prob.layout.rows, prob.layout.row_index(first))


def _input_error(prob: Problem, err: Exception) -> ValueError:
    if prob.unchecked_bounds is not None:
        try:  # the core reports NaN or crossed bounds as x outside them: name the cause
            check_bound_values(*prob.unchecked_bounds)
        except ValueError as bad:
            return bad
    return _errors.from_core(err, prob.layout.index_of)


def _args(prob: Problem) -> tuple[Any, ...]:
    return (prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)


def solve(prob: Problem) -> np.ndarray[Any, Any]:
    """``eta`` as ``(rows,)`` in the work dtype (what the VJP takes to skip its solve)."""
    try:
        eta, (count, first) = scale_rows(*_args(prob))
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return eta


def scale_eta(prob: Problem) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`scale` and the same scales as ``(rows,)`` in the work dtype."""
    eta = solve(prob)
    if eta.dtype == prob.dtype:
        cast = eta
    else:
        with np.errstate(over="ignore"):  # float16 results: reported below
            cast = eta.astype(prob.dtype)
    overflow = np.isinf(cast)
    if overflow.any():
        warn_eta_overflow(int(overflow.sum()), prob.layout.rows, cast.dtype.name)
    return prob.layout.eta_from_rows(cast), eta


def scale(prob: Problem) -> np.ndarray[Any, Any]:
    """``eta`` in the caller's dtype and ``eta_shape``."""
    return scale_eta(prob)[0]


def perturb_eta(
    prob: Problem, out: np.ndarray[Any, Any] | None = None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`perturb` and the ``(rows,)`` scales it used, in the work dtype.

    ``out`` (already checked by ``check_out``) receives the result as in :func:`noise`.
    """
    return _into_out(prob, out, perturb_rows, _args(prob))


def perturb(prob: Problem, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """``clip(x + eta * delta, lower, upper)`` in the caller's dtype and layout."""
    args = (prob.x, prob.delta, prob.eps, prob.p, prob.lower, prob.upper)
    return _into_out(prob, out, perturb_rows, args)[0]


def _noise_rows(
    x: Rows,
    eps: Any,
    p: float,
    lower: Any,
    upper: Any,
    distribution: str,
    key: bytes,
    row_offset: int,
    out: Rows | None = None,
) -> tuple[Rows, Rows, Short]:
    """:func:`perturb_rows` with seeded noise drawn in the core in place of ``delta``."""
    y = np.empty_like(x) if out is None else out
    eta = np.empty(x.shape[0], dtype=x.dtype)
    count, first = _clipresc.noise_into(
        x, lower, upper, eps, p, distribution, key, row_offset, y, eta
    )
    return y, eta, (count, first)


def _into_out(
    prob: Problem,
    out: np.ndarray[Any, Any] | None,
    fused: Callable[..., tuple[Rows, Rows, Short]],
    args: tuple[Any, ...],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Runs ``fused(*args, out=y_rows)``, a solve-and-apply of the Rust core, and returns
    ``(result, eta)``.

    The core writes straight into ``out`` when its memory is the rows' layout (C-contiguous,
    vector axes trailing, the work dtype); otherwise into a fresh array that is then copied.
    If anything raises, ``out`` is filled with NaN so that no partial result looks valid.
    """
    direct = (
        out is not None
        and prob.layout.is_trailing
        and out.dtype == prob.x.dtype
        and out.flags.c_contiguous
    )
    try:
        y, eta, (count, first) = fused(
            *args, out=out.reshape(prob.x.shape) if direct and out is not None else None
        )
        if count and prob.unreachable == "raise":
            _raise_unreachable(prob, count, first)
    except _clipresc.InputError as e:
        _spoil(out)
        raise _input_error(prob, e) from None
    except BaseException:
        _spoil(out)
        raise
    lay = prob.layout
    if lay.is_trailing:  # the common case, kept cheap
        result = y.astype(prob.dtype, copy=False).reshape(lay.shape)
    else:
        result = lay.from_rows(y.astype(prob.dtype, copy=False))
    if out is None:
        return result, eta
    if not direct:
        np.copyto(out, result)
    return out, eta


def noise(
    prob: Problem,
    distribution: str,
    key: bytes,
    row_offset: int,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """``clip(x + eta * n, lower, upper)`` with seeded noise ``n`` drawn in the core, fused.

    ``prob.delta`` is ignored (the noise takes its place); row ``r`` of ``prob.x`` uses the
    noise stream ``row_offset + r`` of ``key``. ``out`` (already checked to have ``x``'s
    shape and dtype) receives the result, directly when its memory is the rows' layout; it
    is filled with NaN if the core raises.
    """
    args = (prob.x, prob.eps, prob.p, prob.lower, prob.upper, distribution, key, row_offset)
    return _into_out(prob, out, _noise_rows, args)[0]


def _spoil(out: np.ndarray[Any, Any] | None) -> None:
    """Fill ``out`` with NaN after a failed call, so that no partial result looks valid."""
    if out is not None:
        out.fill(np.nan)


def vjp_rows(
    prob: Problem,
    kind: str,
    cot: np.ndarray[Any, Any],
    want_lower: bool,
    want_upper: bool,
    eta: np.ndarray[Any, Any] | None = None,
) -> dict[str, np.ndarray[Any, Any] | None]:
    """Closed-form cotangents from the Rust core, in the core's ``(rows, n)`` layout.

    ``kind`` is ``"scale"`` (``cot`` is ``etabar``, ``(rows,)``) or ``"perturb"`` (``cot``
    is ``ybar``, ``(rows, n)``), both in the work dtype. Returns ``x`` / ``delta``
    ``(rows, n)``, ``eps`` ``(rows,)`` float64 and, for the sides asked for, the bound's
    cotangent in its core form (``(n,)`` summed over the rows, or ``(rows, n)``); a side
    given as a number is widened to ``(n,)`` so that it gets one. Raises like the forward.

    ``eta``, the forward's ``(rows,)`` scales in the work dtype (:func:`solve`,
    :func:`perturb_eta`), skips the solve: the values are not checked again then, nor is
    ``unreachable="raise"`` (the forward did both).
    """
    try:
        g, (count, first) = _vjp(
            kind,
            prob.x,
            prob.delta,
            prob.eps,
            prob.p,
            prob.lower,
            prob.upper,
            eta,
            cot,
            (want_lower, want_upper),
        )
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return g
