"""NumPy arrays (and anything ``np.asarray`` takes) through the Rust core."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _clipresc, _errors
from .._overflow import warn_eta_overflow
from .._prepare import Problem, check_bound_values


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


def scale_rows(prob: Problem) -> np.ndarray[Any, Any]:
    """``eta`` as ``(rows,)`` in the work dtype (what the VJP takes to skip its solve)."""
    eta = np.empty(prob.layout.rows, dtype=prob.x.dtype)
    try:
        count, first = _clipresc.scale_into(
            prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p, eta
        )
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return eta


def scale_eta(prob: Problem) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`scale` and the same scales as ``(rows,)`` in the work dtype."""
    eta = scale_rows(prob)
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
    args = (prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p)
    return _into_out(prob, out, _clipresc.perturb_into, args)


def perturb(prob: Problem, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """``clip(x + eta * delta, lower, upper)`` in the caller's dtype and layout."""
    args = (prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p)
    return _into_out(prob, out, _clipresc.perturb_into, args)[0]


def _into_out(
    prob: Problem,
    out: np.ndarray[Any, Any] | None,
    core: Callable[..., tuple[int, int]],
    args: tuple[Any, ...],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Runs ``core(*args, y_rows, eta)``, a fused solve-and-apply of the Rust core, and
    returns ``(result, eta)``.

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
    y = out.reshape(prob.x.shape) if direct and out is not None else np.empty_like(prob.x)
    eta = np.empty(prob.layout.rows, dtype=prob.x.dtype)
    try:
        count, first = core(*args, y, eta)
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

    args = (prob.x, prob.lower, prob.upper, prob.eps, prob.p, distribution, key, row_offset)
    return _into_out(prob, out, _clipresc.noise_into, args)[0]


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

    ``eta``, the forward's ``(rows,)`` scales in the work dtype (:func:`scale_rows`,
    :func:`perturb_eta`), skips the solve: the values are not checked again then, nor is
    ``unreachable="raise"`` (the forward did both).
    """
    wd = prob.x.dtype
    rows, n = prob.layout.rows, prob.layout.n

    def side(b: Any, want: bool) -> tuple[Any, np.ndarray[Any, Any] | None]:
        if not want:
            return b, None
        if isinstance(b, float):
            b = np.full(n, b, dtype=wd)
        return b, np.empty(b.shape, dtype=wd)

    lower, lg = side(prob.lower, want_lower)
    upper, ug = side(prob.upper, want_upper)
    xg = np.empty_like(prob.x)
    dg = np.empty_like(prob.x)
    eg = np.empty(rows, dtype=np.float64)
    fn = _clipresc.scale_vjp_into if kind == "scale" else _clipresc.perturb_vjp_into
    c = np.ascontiguousarray(cot, dtype=wd)
    try:
        count, first = fn(
            prob.x, prob.delta, lower, upper, prob.eps, prob.p, c, xg, dg, eg, lg, ug, eta=eta
        )
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return {"x": xg, "delta": dg, "eps": eg, "lower": lg, "upper": ug}
