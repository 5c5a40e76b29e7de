"""Where :func:`clipresc.project` goes for arrays other than NumPy: the framework modules
(autograd), Dask, and the array-API fallback. Each module is imported only for its arrays."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "torch": ".frameworks.torch_project",
    "jax": ".frameworks.jax_project",
    "tensorflow": ".frameworks.tensorflow_project",
    "dask": ".backends.dask_project",
}
_GENERIC = ".backends.generic_project"


def _module(fam: str) -> Any:
    return importlib.import_module(_MODULES.get(fam, _GENERIC), __package__)


def project(fam: str, x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` for arrays of library ``fam`` (not NumPy)."""
    return _module(fam).project(x, z, eps, p, bounds, axis)


def project_vjp(
    fam: str, x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` for arrays of library ``fam`` (not NumPy)."""
    out: dict[str, Any] = _module(fam).project_vjp(x, z, eps, ybar, p, bounds, axis)
    return out
