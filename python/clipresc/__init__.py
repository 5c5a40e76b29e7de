"""clipresc: rescale a perturbation so that, after clipping, it has exactly the size asked for.

>>> import numpy as np, clipresc
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
>>> y = clipresc.perturb(x, rng.standard_normal(x.shape).astype(np.float32), eps=2.0)
>>> np.allclose(np.linalg.norm((y - x).reshape(4, -1), axis=1), 2.0, rtol=1e-5)
True
"""

from __future__ import annotations

from typing import Any

from ._api import perturb, perturb_vjp, scale, scale_vjp
from ._noise import noise
from ._project import project, project_vjp

__version__: str  # set by __getattr__ on first access


def __getattr__(name: str) -> Any:
    # __version__ on first use: importlib.metadata costs more than the rest of the import
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("clipresc")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        value = "0+unknown"
    globals()["__version__"] = value
    return value


__all__ = [
    "__version__",
    "noise",
    "perturb",
    "perturb_vjp",
    "project",
    "project_vjp",
    "scale",
    "scale_vjp",
]
