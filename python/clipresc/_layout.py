"""Moving between the caller's layout and the core's ``(rows, n)`` layout."""

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


@functools.lru_cache(maxsize=256)
def _layout_of(shape: tuple[int, ...], vec_axes: tuple[int, ...]) -> Layout:
    """One shared (immutable) layout per shape and axes, so that its derived sizes are
    computed once rather than on every call."""
    return Layout(shape, vec_axes)
