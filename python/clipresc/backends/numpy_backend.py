"""NumPy arrays (and anything ``np.asarray`` takes) through the Rust core."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _clipresc
from .._prepare import Problem


def _raise_unreachable(prob: Problem, count: int, first: int) -> None:
    if count and prob.unreachable == "raise":
        raise ValueError(
            f"eps exceeds the largest reachable size for {count} of {prob.layout.rows} "
            f"vectors; first: vector {prob.layout.row_index(first)}"
        )


def _input_error(prob: Problem, err: Exception) -> ValueError:
    arg, problem, count, first = err.args
    where = prob.layout.index_of(first)
    if problem == "outside bounds":
        return ValueError(f"x has {count} values outside bounds; first at index {where}")
    return ValueError(f"{arg} has {count} {problem} values; first at index {where}")


def scale(prob: Problem) -> np.ndarray[Any, Any]:
    """``eta`` in the caller's dtype and ``eta_shape``."""
    eta = np.empty(prob.layout.rows, dtype=prob.x.dtype)
    try:
        count, first = _clipresc.scale_into(
            prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p, eta
        )
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return prob.layout.eta_from_rows(eta.astype(prob.dtype, copy=False))


def perturb(prob: Problem) -> np.ndarray[Any, Any]:
    """``clip(x + eta * delta, lower, upper)`` in the caller's dtype and layout."""
    y = np.empty_like(prob.x)
    eta = np.empty(prob.layout.rows, dtype=prob.x.dtype)
    try:
        count, first = _clipresc.perturb_into(
            prob.x, prob.delta, prob.lower, prob.upper, prob.eps, prob.p, y, eta
        )
    except _clipresc.InputError as e:
        raise _input_error(prob, e) from None
    _raise_unreachable(prob, count, first)
    return prob.layout.from_rows(y.astype(prob.dtype, copy=False))
