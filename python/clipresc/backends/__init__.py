"""Backends: each computes the contract for one kind of arrays, on ``(rows, n)`` inputs.

:class:`clipresc.backends.interface.RowBackend` is what a backend that works in the
caller's array library implements (:mod:`~clipresc.backends.generic`, the CuPy kernels);
:func:`row_backend` is the registry that picks one by the path
:func:`clipresc._dispatch.route` chose. :mod:`~clipresc.backends.numpy_backend` (the
Rust core on NumPy arrays) and :mod:`~clipresc.backends.dask_backend` (lazy blocks
through the NumPy backend) are reached directly by :mod:`clipresc._dispatch`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .interface import RowBackend

_ROW_BACKENDS = {"generic": "generic", "cupy": "cupy_rows"}
"""Path -> module implementing :class:`~clipresc.backends.interface.RowBackend`."""


def row_backend(path: str) -> RowBackend:
    """The row backend for ``path`` (``"generic"`` or ``"cupy"``), imported on first use
    (CuPy only for CuPy arrays and CUDA tensors).

    >>> row_backend("generic").__name__
    'clipresc.backends.generic'
    """
    return importlib.import_module(f"{__name__}.{_ROW_BACKENDS[path]}")
