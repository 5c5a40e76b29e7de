"""Drop-in replacement for the paper's reference function.

Rauber & Bethge's reference implementation of clipping-aware rescaling ships with foolbox 3
as ``foolbox.external.clipping_aware_rescaling.l2_clipping_aware_rescaling`` (it is what
foolbox's clipping-aware noise attacks call). :func:`l2_clipping_aware_rescaling` here has
the same signature, accepts the same inputs (NumPy arrays, PyTorch tensors, TensorFlow eager
tensors, JAX arrays and EagerPy tensors wrapping any of them) and returns the same thing,
computed exactly in linear time by :func:`clipresc.scale` instead of by sorting:

>>> import numpy as np
>>> from clipresc.compat import l2_clipping_aware_rescaling
>>> x = np.array([[0.5, 0.9]]); delta = np.array([[1.0, 1.0]])
>>> eta = l2_clipping_aware_rescaling(x, delta, 0.5)
>>> eta.shape, round(float(np.linalg.norm(np.clip(x + eta * delta, 0, 1) - x)), 12)
((1, 1), 0.5)

To use it in foolbox, replace the function the attacks imported::

    import foolbox.attacks.additive_noise as additive_noise
    from clipresc.compat import l2_clipping_aware_rescaling
    additive_noise.l2_clipping_aware_rescaling = l2_clipping_aware_rescaling

Differences from the reference, all outside its intended use: ``x`` outside ``[a, b]``, NaN
or infinite inputs and negative ``eps`` raise ``ValueError`` instead of returning garbage;
``eps = 0`` gives ``eta = 0`` (the reference can return NaN there, from the square root of
a rounding error); and when ``eps`` is too large to reach, ``eta`` is the smallest scale
that maximises the clipped size, where the reference also counts elements with
``delta == 0`` (as ``|delta| = 1e-10``) and so may return a far larger ``eta`` with the
same clipped result ``clip(x + eta * delta, a, b)``.
"""

from __future__ import annotations

import sys
from typing import Any

from . import _api

__all__ = ["l2_clipping_aware_rescaling"]


def _eagerpy_tensor_type() -> Any:
    """EagerPy's ``Tensor`` class if EagerPy has been imported (never imports it)."""
    ep = sys.modules.get("eagerpy")
    return None if ep is None else ep.Tensor


def _raw(v: Any) -> Any:
    tensor = _eagerpy_tensor_type()
    return v.raw if tensor is not None and isinstance(v, tensor) else v


def l2_clipping_aware_rescaling(x, delta, eps: float, a: float = 0.0, b: float = 1.0):  # type: ignore[no-untyped-def]
    """Calculates eta such that norm(clip(x + eta * delta, a, b) - x) == eps.

    Assumes x and delta have a batch dimension and eps, a, b, and p are
    scalars. If the equation cannot be solved because eps is too large, the
    left hand side is maximized.

    Args:
        x: A batch of inputs (PyTorch Tensor, TensorFlow Eager Tensor, NumPy
            Array, JAX Array, or EagerPy Tensor).
        delta: A batch of perturbation directions (same shape and type as x).
        eps: The target norm (non-negative float).
        a: The lower bound of the data domain (float).
        b: The upper bound of the data domain (float).

    Returns:
        ``eta``, a batch of scales with the same number of dimensions as x but all
            axis == 1 except for the batch dimension (an EagerPy tensor when ``x``
            is one, else the type of ``x``).

    >>> import numpy as np
    >>> x = np.array([0.2, 0.9]); delta = np.array([1.0, -2.0])  # 1-D: each entry a vector
    >>> l2_clipping_aware_rescaling(x, delta, 0.5)
    array([0.5 , 0.25])
    """
    tensor = _eagerpy_tensor_type()
    wrap = tensor is not None and isinstance(x, tensor)
    xr, dr = _raw(x), _raw(delta)
    eps, a, b = _raw(eps), _raw(a), _raw(b)
    if len(xr.shape) == 1:  # the reference treats every entry as a vector of length 1
        eta = _api.scale(xr[:, None], dr[:, None], eps, p=2.0, bounds=(a, b))[:, 0]
    else:
        eta = _api.scale(xr, dr, eps, p=2.0, bounds=(a, b))
    if wrap:
        return sys.modules["eagerpy"].astensor(eta)
    return eta
