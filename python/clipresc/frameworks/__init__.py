"""Integrations with deep-learning frameworks: PyTorch, JAX and TensorFlow.

Each submodule (:mod:`clipresc.frameworks.torch`, :mod:`clipresc.frameworks.jax`,
:mod:`clipresc.frameworks.tensorflow`) exposes ``scale`` and ``perturb`` with the public
signature, taking and returning that framework's arrays, differentiable with the
framework's own autodiff through the closed-form VJP. A submodule imports its framework
when it is itself imported, so import one only for arrays of that framework:
:func:`module_for` does that without importing any framework the caller has not imported.

>>> import numpy as np
>>> module_for(np.zeros(3)) is None
True
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._libraries import FRAMEWORKS, framework_module, library_of

__all__ = ["framework_of", "module_for"]


def framework_of(x: Any) -> str | None:
    """``"torch"``, ``"jax"``, ``"tensorflow"`` or ``None`` for the family of ``x``.

    Only frameworks already imported by the caller are considered (nothing is imported).

    >>> framework_of([1.0]) is None
    True
    """
    lib = library_of(x)
    return lib if lib in FRAMEWORKS else None


def module_for(x: Any) -> ModuleType | None:
    """The integration module for ``x``'s framework (imported now), or ``None``.

    >>> module_for(3.0) is None
    True
    """
    lib = framework_of(x)
    return None if lib is None else framework_module(lib)
