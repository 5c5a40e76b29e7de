"""Which array library each argument comes from, and where its memory lives.

The one place that tells libraries apart. Nothing here imports a library the caller has
not imported already: arrays are recognised with array-api-compat's ``is_*_array``
helpers (which look in ``sys.modules``; array-api-compat itself is imported at the first
argument that is neither NumPy nor a number) and ``sys.modules`` itself; CuPy is imported only
to ask whether a GPU is there, and only for CuPy arrays or CUDA tensors.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from . import _errors

FRAMEWORKS = ("torch", "jax", "tensorflow")
"""Libraries with an integration module in :mod:`clipresc.frameworks` (autodiff, jit)."""


def library_of(a: Any) -> str | None:
    """The library an argument comes from, or ``None`` for values that fit any library
    (``None``, Python and NumPy numbers, 0-d NumPy arrays, lists and tuples).

    >>> library_of(np.zeros(3)), library_of(np.float32(1)), library_of([1.0]), library_of(None)
    ('numpy', None, None, None)
    """
    if type(a) is np.ndarray:  # the common cases first: the ABC checks below cost more
        return None if a.ndim == 0 else "numpy"
    if a is None or type(a) is float:
        return None
    if isinstance(a, (numbers.Number, np.generic, list, tuple)):
        return None
    if isinstance(a, np.ndarray):
        return None if a.ndim == 0 else "numpy"
    import array_api_compat  # here, not at the top: a NumPy call never imports it

    if array_api_compat.is_torch_array(a):
        return "torch"
    if array_api_compat.is_jax_array(a):
        return "jax"
    if array_api_compat.is_cupy_array(a):
        return "cupy"
    if array_api_compat.is_dask_array(a):
        return "dask"
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(a, (tf.Tensor, tf.Variable)):
        return "tensorflow"
    return type(a).__module__.split(".")[0]


def arguments(x: Any, delta: Any, eps: Any, bounds: Any, **more: Any) -> dict[str, Any]:
    """The array arguments of a call by name (``lower`` / ``upper`` when ``bounds`` is a
    pair)."""
    named = {"x": x, "delta": delta, "eps": eps, **more}
    if (
        bounds is not None
        and not isinstance(bounds, (str, bytes))
        and isinstance(bounds, Sequence)
        and len(bounds) == 2
    ):
        named["lower"], named["upper"] = bounds[0], bounds[1]
    return named


def library_of_call(named: dict[str, Any]) -> tuple[str, Any, list[Any]]:
    """The one library of the array arguments, an array of it and all of them
    (``("numpy", None, [])`` if there is none); ``TypeError`` for two libraries.

    >>> library_of_call({"x": np.zeros(2), "delta": [1.0, 2.0]})[0]
    'numpy'
    """
    libs = {name: library_of(v) for name, v in named.items()}
    for name, lib in libs.items():
        if lib == "torch" or lib == "tensorflow":
            check_dense(name, named[name], lib)
    present = {f for f in libs.values() if f is not None}
    if present == {"dask", "numpy"}:  # Dask arrays are made of NumPy chunks
        present = {"dask"}
    if len(present) > 1:
        which = ", ".join(f"{name}: {f}" for name, f in libs.items() if f is not None)
        raise _errors.mixed_libraries(which)
    if not present:
        return "numpy", None, []
    lib = present.pop()
    arrays = [v for name, v in named.items() if libs[name] is not None]
    first = next(v for name, v in named.items() if libs[name] == lib)
    return lib, first, arrays


def framework_module(lib: str) -> ModuleType | None:
    """The integration module of a framework (imported now), or ``None`` for other
    libraries or when the framework's integration cannot be imported."""
    # import statements rather than importlib: torch.compile traces them (importlib's
    # machinery is marked as skipped), and sys.modules answers every later call
    if lib == "torch":
        from .frameworks import torch as torch_module

        return torch_module
    if lib == "jax":
        from .frameworks import jax as jax_module

        return jax_module
    if lib == "tensorflow":
        from .frameworks import tensorflow as tf_module

        return tf_module
    return None


def compiling_torch_module(x: Any) -> ModuleType | None:
    """The PyTorch integration when ``x`` is a tensor that ``torch.compile`` is tracing (the
    caller then hands it over without the library checks, which trace into graph breaks),
    else ``None``.

    >>> compiling_torch_module(np.zeros(2)) is None
    True
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor) or not torch.compiler.is_compiling():
        return None
    from .frameworks import torch as torch_module

    return torch_module


def check_dense(name: str, a: Any, lib: str | None) -> None:
    """Raise ``TypeError`` for an argument of library ``lib`` that is not a dense array:
    sparse or nested PyTorch tensors, TensorFlow sparse or ragged tensors.

    >>> check_dense("x", np.zeros(2), "numpy")
    """
    if lib == "torch":
        if getattr(a, "is_nested", False):
            raise _errors.nested_tensor(name)
        if a.layout != sys.modules["torch"].strided:
            raise _errors.sparse_tensor(name, str(a.layout))
    elif lib == "tensorflow":
        tf = sys.modules["tensorflow"]
        if isinstance(a, tf.SparseTensor):
            raise _errors.tf_sparse(name)
        if isinstance(a, tf.RaggedTensor):
            raise _errors.tf_ragged(name)


@functools.cache
def gpu_ready() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        cupy = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def is_tracer(a: Any) -> bool:
    """Whether ``a`` is a JAX tracer (no values yet)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(a, jax.core.Tracer)


def on_cpu(a: Any, lib: str) -> bool:
    """Whether ``a`` is a concrete array whose memory NumPy can view."""
    if lib == "jax":
        return not is_tracer(a) and all(d.platform == "cpu" for d in a.devices())
    if lib == "torch":
        return bool(a.device.type == "cpu")
    if lib == "tensorflow":
        return bool(hasattr(a, "numpy") and "GPU" not in str(getattr(a, "device", "")))
    if lib == "array_api_strict":
        return "CPU" in str(a.device)
    try:
        kind, _ = a.__dlpack_device__()
    except Exception:
        return False
    return int(kind) == 1  # kDLCPU


def is_cuda(a: Any, lib: str) -> bool:
    """Whether ``a`` lives on a CUDA device (a CuPy array or a CUDA tensor)."""
    return lib == "cupy" or (lib == "torch" and a.device.type == "cuda")
