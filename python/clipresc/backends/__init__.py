"""Backends: each computes the contract for one kind of arrays, on ``(rows, n)`` inputs.

Every backend implements :class:`clipresc.backends.interface.RowBackend`: the Rust core on
NumPy rows (:mod:`~clipresc.backends.numpy_backend`, for the ``numpy`` and ``cpu`` paths
and each block of a Dask array), the pure array API (:mod:`~clipresc.backends.generic`)
and the CuPy kernels (:mod:`~clipresc.backends.cupy_rows`). :func:`row_backend` is the
registry that picks one by the path :func:`clipresc._dispatch.route` chose;
:mod:`~clipresc.backends.dask_backend` plans the lazy blocks that the NumPy backend
computes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from .interface import ProblemBackend, RowBackend

_ROW_BACKENDS = {
    "numpy": "numpy_backend",
    "cpu": "numpy_backend",
    "dask": "numpy_backend",
    "generic": "generic",
    "cupy": "cupy_rows",
}
"""Path -> module implementing :class:`~clipresc.backends.interface.RowBackend` (for
``dask``, the backend of each block)."""

_LOADED: dict[str, Any] = {}


@overload
def row_backend(path: Literal["numpy", "cpu", "dask"]) -> ProblemBackend: ...
@overload
def row_backend(path: str) -> RowBackend: ...


def row_backend(path: str) -> Any:
    """The row backend for ``path`` (a path of :func:`clipresc._dispatch.route` but
    ``"framework"``), imported on first use (CuPy only for CuPy arrays and CUDA tensors).

    >>> row_backend("generic").__name__, row_backend("cpu").__name__
    ('clipresc.backends.generic', 'clipresc.backends.numpy_backend')
    """
    mod = _LOADED.get(path)
    if mod is None:
        mod = _LOADED[path] = importlib.import_module(f"{__name__}.{_ROW_BACKENDS[path]}")
    return mod
