"""The interface every row backend implements: rows in, rows out.

A row backend takes ``x`` and ``delta`` as ``(rows, n)`` arrays of its library, ``eps``
as ``(rows,)``, ``p`` as a float and each bound as a float (``+-inf`` for none), a shared
``(n,)`` row or a full ``(rows, n)`` array, already checked and laid out by
:mod:`clipresc._prepare_xp`. It returns arrays of the same library. The VJPs take the
forward's ``eta`` so that a caller who has it never solves twice.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

Array = Any
Bound = Any

SolveRows = Callable[[Array, Array, Array, float, Bound, Bound], tuple[Array, ...]]
"""``(x, d, eps, p, lower, upper)`` -> ``(eta, unreachable)`` for ``scale_rows``,
``(y, eta, unreachable)`` for ``perturb_rows``: ``y`` ``(rows, n)``, the rest ``(rows,)``."""

VjpRows = Callable[
    [Array, Array, Array, float, Bound, Bound, "Array | None", Array], dict[str, "Array | None"]
]
"""``(x, d, eps, p, lower, upper, eta, cot)`` -> the cotangents ``{"x", "delta", "eps",
"lower", "upper"}``: ``x`` / ``delta`` ``(rows, n)``, ``eps`` ``(rows,)``, each bound in its
own shape (``None`` for a number). ``cot`` is ``etabar`` ``(rows,)`` for ``scale_vjp_rows``
and ``ybar`` ``(rows, n)`` for ``perturb_vjp_rows``; ``eta`` is the forward's (``None``
when :attr:`RowBackend.NEEDS_ETA` is false)."""


class RowBackend(Protocol):
    """What :func:`clipresc.backends.row_backend` returns (a module is a valid one).

    >>> from clipresc.backends import generic
    >>> names = ("scale_rows", "perturb_rows", "scale_vjp_rows", "perturb_vjp_rows")
    >>> all(callable(getattr(generic, name)) for name in names) and generic.NEEDS_ETA
    True
    """

    NEEDS_ETA: bool
    """Whether the VJPs read ``eta`` (else they may be given ``None``)."""
    scale_rows: SolveRows
    perturb_rows: SolveRows
    scale_vjp_rows: VjpRows
    perturb_vjp_rows: VjpRows
