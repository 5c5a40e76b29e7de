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

import sys
from types import ModuleType
from typing import Any

__all__ = ["check_layout", "compiling_module", "framework_of", "module_for"]


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, (jax.Array, jax.core.Tracer))


def _is_tensorflow(x: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, (tf.Tensor, tf.Variable))


def framework_of(x: Any) -> str | None:
    """``"torch"``, ``"jax"``, ``"tensorflow"`` or ``None`` for the family of ``x``.

    Only frameworks already imported by the caller are considered (nothing is imported).

    >>> framework_of([1.0]) is None
    True
    """
    for name, test in (("torch", _is_torch), ("jax", _is_jax), ("tensorflow", _is_tensorflow)):
        if test(x):
            return name
    return None


def module_for(x: Any) -> ModuleType | None:
    """The integration module for ``x``'s framework (imported now), or ``None``.

    >>> module_for(3.0) is None
    True
    """
    name = framework_of(x)
    if name is None:
        return None
    # import statements rather than importlib: torch.compile traces them (importlib's
    # machinery is marked as skipped), and sys.modules answers every later call
    if name == "torch":
        from . import torch as torch_module

        return torch_module
    if name == "jax":
        from . import jax as jax_module

        return jax_module
    from . import tensorflow as tf_module

    return tf_module


def compiling_module(x: Any) -> ModuleType | None:
    """The PyTorch integration when ``x`` is a tensor that ``torch.compile`` is tracing (so
    the caller can hand it over without the dispatch's library checks, which trace into
    graph breaks), else ``None``.

    >>> compiling_module([1.0]) is None
    True
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor) or not torch.compiler.is_compiling():
        return None
    from . import torch as mod

    return mod


def check_layout(name: str, a: Any, fam: str | None) -> None:
    """Raise ``TypeError`` for an argument of library ``fam`` that is not a dense array:
    sparse or nested PyTorch tensors, TensorFlow sparse or ragged tensors.

    >>> check_layout("x", [1.0], None)
    """
    if fam == "torch":
        torch = sys.modules["torch"]
        if getattr(a, "is_nested", False):
            raise TypeError(
                f"{name} is a nested tensor; clipresc needs dense tensors: pad x and delta "
                "with .to_padded_tensor(0.0) (zero delta entries do not move) or call "
                "clipresc on each component with axis='all'"
            )
        if a.layout != torch.strided:
            raise TypeError(
                f"{name} is a sparse tensor (layout {a.layout}); clipresc needs dense tensors: "
                f"call {name}.to_dense() first"
            )
    elif fam == "tensorflow":
        tf = sys.modules["tensorflow"]
        if isinstance(a, tf.SparseTensor):
            raise TypeError(
                f"{name} is a tf.SparseTensor; clipresc needs dense tensors: call "
                f"tf.sparse.to_dense({name}) first"
            )
        if isinstance(a, tf.RaggedTensor):
            raise TypeError(
                f"{name} is a tf.RaggedTensor; clipresc needs dense tensors: pad it "
                f"({name}.to_tensor()) or call clipresc on each row with axis='all'"
            )
