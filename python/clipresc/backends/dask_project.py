""":func:`clipresc.project` on Dask arrays: one ``map_blocks`` task per block, each block
holding whole vectors (the vector axes are rechunked into one chunk first), computed by the
NumPy path. Bounds and ``eps`` arrays are broadcast and chunked like ``x`` / the batch.
The VJP goes through the array-API implementation.

>>> import dask.array as da, numpy as np
>>> x = da.from_array(np.full((4, 3), 0.5), chunks=(2, 3))
>>> z = da.from_array(np.full((4, 3), 2.0), chunks=(2, 3))
>>> np.round(project(x, z, 0.3, 1, (0.0, 1.0), None).compute()[0], 6)
array([0.6, 0.6, 0.6])
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .. import _errors, _project
from .._args import vector_axes
from . import generic_project

da: Any = importlib.import_module("dask.array")


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on Dask arrays (lazy)."""
    pf = _project.check_project_p(p)
    x = da.asarray(x)
    z = da.asarray(z)
    if x.shape != z.shape:
        raise _errors.shape_mismatch(z.shape, x.shape, "z")
    axes = vector_axes(axis, x.ndim)
    chunks = {a: -1 for a in axes}
    x = x.rechunk(chunks)
    z = z.rechunk(x.chunks)
    eta_shape = tuple(1 if a in axes else s for a, s in enumerate(x.shape))
    e = np.asarray(eps) if not hasattr(eps, "dask") else eps
    if getattr(e, "ndim", 0) == 0:
        e_b = None
        e_val = e
    else:
        rows = int(np.prod([s for a, s in enumerate(x.shape) if a not in axes]))
        if e.ndim == 1 and e.shape[0] == rows and len(axes) != x.ndim:
            e = e.reshape(tuple(s for a, s in enumerate(x.shape) if a not in axes))
            e = e.reshape(eta_shape)
        e_b = da.broadcast_to(da.asarray(e), eta_shape).rechunk(
            tuple(c if a not in axes else (1,) for a, c in enumerate(x.chunks))
        )
        e_val = None
    sides: list[Any] = []
    if bounds is not None and isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        for b in bounds:
            if b is None or np.ndim(b) == 0:
                sides.append(b)
            else:
                sides.append(da.broadcast_to(da.asarray(b), x.shape).rechunk(x.chunks))
    arrays = [x, z] + ([e_b] if e_b is not None else []) + [s for s in sides if _lazy(s)]

    def block(xb: Any, zb: Any, *rest: Any) -> Any:
        it = iter(rest)
        eb = next(it) if e_b is not None else e_val
        bb = None
        if bounds is not None:
            bb = tuple(next(it) if _lazy(s) else s for s in sides)
        return np.asarray(_project.project_numpy(xb, zb, eb, pf, bb, axes), dtype=xb.dtype)

    return da.map_blocks(block, *arrays, dtype=x.dtype)


def _lazy(v: Any) -> bool:
    return hasattr(v, "dask")


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on Dask arrays, through the array-API implementation."""
    return generic_project.project_vjp(x, z, eps, ybar, p, bounds, axis)
