"""Moving between the caller's layout and the core's ``(rows, n)`` layout, for every
array library: NumPy arrays (:meth:`Layout.to_rows`, which also sets the dtype and the
memory order the Rust core needs) and any array-API namespace, PyTorch's on any device
included (:meth:`Layout.to_rows_xp`)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Layout:
    """How an array of ``shape`` splits into ``rows`` vectors of ``n`` elements (the derived
    sizes are computed once per layout).

    >>> lay = Layout.of((2, 3, 4), (1, 2))
    >>> lay.rows, lay.n, lay.eta_shape
    (2, 12, (2, 1, 1))
    >>> lay.index_of(13)
    (1, 0, 1)
    """

    shape: tuple[int, ...]
    vec_axes: tuple[int, ...]

    @classmethod
    def of(cls, shape: tuple[int, ...], vec_axes: tuple[int, ...]) -> Layout:
        return _layout_of(tuple(int(s) for s in shape), vec_axes)

    @functools.cached_property
    def batch_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.shape)) if a not in self.vec_axes)

    @functools.cached_property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.batch_axes)

    @functools.cached_property
    def vec_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.vec_axes)

    @functools.cached_property
    def rows(self) -> int:
        return math.prod(self.batch_shape)

    @functools.cached_property
    def n(self) -> int:
        return math.prod(self.vec_shape)

    @functools.cached_property
    def eta_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.vec_axes else s for a, s in enumerate(self.shape))

    @functools.cached_property
    def perm(self) -> tuple[int, ...]:
        """The axes in ``(rows, n)`` order: the batch axes, then the vector axes."""
        return self.batch_axes + self.vec_axes

    @functools.cached_property
    def shared(self) -> Layout:
        """The layout of a bound shared by every vector: ``x``'s shape with the batch
        axes at 1 (one row).

        >>> Layout.of((4, 2, 3), (1, 2)).shared.shape
        (1, 2, 3)
        """
        one = tuple(1 if a in self.batch_axes else s for a, s in enumerate(self.shape))
        return Layout.of(one, self.vec_axes)

    @functools.cached_property
    def is_trailing(self) -> bool:
        k = len(self.vec_axes)
        return self.vec_axes == tuple(range(len(self.shape) - k, len(self.shape)))

    def to_rows(self, a: Any, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """``a`` (of this layout's shape) as a C-contiguous, aligned, native ``(rows, n)`` array.

        No copy when ``a`` is already such an array in the right dtype.
        """
        if (
            self.is_trailing
            and isinstance(a, np.ndarray)
            and a.dtype == dtype
            and a.flags.c_contiguous
            and a.flags.aligned
        ):
            return a.reshape(self.rows, self.n)  # a view: the common case, kept cheap
        k = len(self.vec_axes)
        nd = len(self.shape)
        moved = a if self.is_trailing else np.moveaxis(a, self.vec_axes, range(nd - k, nd))
        with np.errstate(over="ignore"):  # an overflowing cast is reported as non-finite
            return np.require(
                moved.reshape(self.rows, self.n), dtype=dtype, requirements=["C", "A"]
            )

    def from_rows(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Inverse of :meth:`to_rows` (a view when possible)."""
        k = len(self.vec_axes)
        nd = len(self.shape)
        full = rows.reshape(self.batch_shape + self.vec_shape)
        return full if self.is_trailing else np.moveaxis(full, range(nd - k, nd), self.vec_axes)

    def bound_from_rows(self, g: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """A bound's cotangent in the core's form (a shared ``(n,)`` row or ``(rows, n)``)
        on ``x``'s axes (batch axes of size 1 for a shared row)."""
        if g.ndim == 1:
            return self.shared.from_rows(g.reshape(1, self.n))
        return self.from_rows(g)

    def to_rows_xp(self, xp: Any, a: Any) -> Any:
        """``a`` (of this layout's shape) as ``(rows, n)`` in the array-API namespace
        ``xp``: vector axes moved last and flattened (no dtype change).

        >>> import array_api_compat.numpy as xp
        >>> Layout.of((2, 3), (0,)).to_rows_xp(xp, np.arange(6).reshape(2, 3)).tolist()
        [[0, 3], [1, 4], [2, 5]]
        """
        if self.perm != tuple(range(len(self.perm))):
            a = xp.permute_dims(a, self.perm)
        return xp.reshape(a, (self.rows, self.n))

    def from_rows_xp(self, xp: Any, r: Any) -> Any:
        """Inverse of :meth:`to_rows_xp`."""
        full = xp.reshape(r, self.batch_shape + self.vec_shape)
        if self.perm == tuple(range(len(self.perm))):
            return full
        return xp.permute_dims(full, tuple(self.perm.index(a) for a in range(len(self.perm))))

    def bound_from_rows_xp(self, xp: Any, g: Any) -> Any:
        """:meth:`bound_from_rows` in the namespace ``xp``."""
        if g.ndim == 1:
            return self.shared.from_rows_xp(xp, xp.reshape(g, (1, self.n)))
        return self.from_rows_xp(xp, g)

    def eta_from_rows(self, eta: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The ``(rows,)`` scales reshaped to :attr:`eta_shape`."""
        return eta.reshape(self.eta_shape)

    def index_of(self, flat: int) -> tuple[int, ...]:
        """The caller's index of element ``flat`` of the ``(rows, n)`` layout."""
        r, j = divmod(int(flat), max(self.n, 1))
        bidx = np.unravel_index(r, self.batch_shape) if self.batch_shape else ()
        vidx = np.unravel_index(j, self.vec_shape) if self.vec_shape else ()
        out = [0] * len(self.shape)
        for a, i in zip(self.batch_axes, bidx):
            out[a] = int(i)
        for a, i in zip(self.vec_axes, vidx):
            out[a] = int(i)
        return tuple(out)

    def row_index(self, r: int) -> int | tuple[int, ...]:
        """The caller's batch index of row ``r`` (an int for a batch of at most one axis)."""
        if len(self.batch_shape) <= 1:
            return int(r)
        return tuple(int(i) for i in np.unravel_index(int(r), self.batch_shape))


def reduce_to(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum the cotangent ``g`` over the axes along which an argument of ``shape`` was
    broadcast to ``g``'s shape (how a bound's or ``eps``'s cotangent gets its shape).

    >>> import array_api_compat.numpy as xp
    >>> g = np.ones((2, 3))
    >>> reduce_to(xp, g, (3,)).tolist(), reduce_to(xp, g, (2, 1)).tolist()
    ([2.0, 2.0, 2.0], [[3.0], [3.0]])
    """
    if tuple(g.shape) == tuple(shape):
        return g
    if math.prod(g.shape) == math.prod(shape) and g.ndim >= len(shape):
        # only axes of size 1 differ (e.g. one eps per vector, (rows,) against (rows, 1))
        return xp.reshape(g, shape)
    lead = g.ndim - len(shape)
    if lead > 0:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(xp.asarray(g), shape)


@functools.lru_cache(maxsize=256)
def _layout_of(shape: tuple[int, ...], vec_axes: tuple[int, ...]) -> Layout:
    """One shared (immutable) layout per shape and axes, so that its derived sizes are
    computed once rather than on every call."""
    return Layout(shape, vec_axes)
