"""The interface every row backend implements: rows in, rows out.

A row backend takes ``x`` and ``delta`` as ``(rows, n)`` arrays of its library, ``eps``
as ``(rows,)``, ``p`` as a float and each bound as a float (``+-inf`` for none), a shared
``(n,)`` row or a full ``(rows, n)`` array, already checked and laid out by
:mod:`clipresc._prepare_xp`. It returns arrays of the same library. The VJPs take the
forward's ``eta`` so that a caller who has it never solves twice.
"""

from __future__ import annotations

from typing import Any, Protocol

Array = Any
Bound = Any


class RowBackend(Protocol):
    """What :func:`clipresc.backends.row_backend` returns (a module is a valid one).

    >>> from clipresc.backends import generic
    >>> names = ("scale_rows", "perturb_rows", "scale_vjp_rows", "perturb_vjp_rows")
    >>> all(callable(getattr(generic, name)) for name in names)
    True
    """

    NEEDS_ETA: bool
    """Whether the VJPs read ``eta`` (else they may be given ``None``)."""

    def scale_rows(
        self, x: Array, d: Array, eps: Array, p: float, lower: Bound, upper: Bound
    ) -> tuple[Array, Array]:
        """``(eta, unreachable)``, both ``(rows,)``."""
        ...

    def perturb_rows(
        self, x: Array, d: Array, eps: Array, p: float, lower: Bound, upper: Bound
    ) -> tuple[Array, Array, Array]:
        """``(y, eta, unreachable)``: ``y`` ``(rows, n)``, the rest ``(rows,)``."""
        ...

    def scale_vjp_rows(
        self,
        x: Array,
        d: Array,
        eps: Array,
        p: float,
        lower: Bound,
        upper: Bound,
        eta: Array | None,
        etabar: Array,
    ) -> dict[str, Array | None]:
        """Cotangents ``{"x", "delta", "eps", "lower", "upper"}`` for ``etabar``
        (``(rows,)``): ``x`` / ``delta`` ``(rows, n)``, ``eps`` ``(rows,)``, each bound in
        its own shape (``None`` for a number)."""
        ...

    def perturb_vjp_rows(
        self,
        x: Array,
        d: Array,
        eps: Array,
        p: float,
        lower: Bound,
        upper: Bound,
        eta: Array | None,
        ybar: Array,
    ) -> dict[str, Array | None]:
        """As :meth:`scale_vjp_rows` for the cotangent ``ybar`` (``(rows, n)``) of ``y``."""
        ...
