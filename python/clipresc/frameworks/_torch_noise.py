"""``clipresc.noise`` on tensors inside ``torch.compile``: the ``clipresc::noise`` operator.

The noise is drawn on the host by the same code as eagerly
(:func:`clipresc._noise_native.noise`), so a compiled function gives the eager bits for the
same seed. The operator is opaque to the compiler (one node, no graph break) and tagged
``nondeterministic_seeded`` so that two calls are never merged. Under tracing the seed must be
``None`` (fresh entropy at every run of the compiled code) or a Python int below ``2**63``;
a ``numpy.random.SeedSequence`` cannot enter a graph. No gradient flows, as eagerly.

>>> import torch, clipresc
>>> from clipresc.frameworks import _torch_noise
>>> x = torch.rand(4, 3, 8, 8)
>>> y = _torch_noise.noise(x, 2.0, p=2.0, bounds=(0.0, 1.0), distribution="gaussian",
...                        seed=7, axis=None, row_offset=0, unreachable="saturate")
>>> torch.equal(y, clipresc.noise(x, 2.0, seed=7))
True
"""

from __future__ import annotations

import importlib
from typing import Any

from .. import _errors
from . import torch as _ct

torch: Any = importlib.import_module("torch")

__all__ = ["noise"]

_MAX_SEED = 2**63


def _impl(
    x: Any,
    eps: Any,
    lower: Any,
    upper: Any,
    lower_s: float,
    upper_s: float,
    p: float,
    distribution: str,
    seed: int | None,
    row_offset: int,
    axis: list[int],
    unreachable: str,
) -> Any:
    from .._noise_native import noise as native_noise

    bounds = (lower_s if lower is None else lower, upper_s if upper is None else upper)
    return native_noise(
        "torch",
        x,
        eps,
        p=p,
        bounds=bounds,
        distribution=distribution,
        seed=seed,
        axis=axis,
        row_offset=row_offset,
        unreachable=unreachable,
    )


def _fake(x: Any, *args: Any) -> Any:
    return torch.empty_like(x)


_SCHEMA = (
    "(Tensor x, Tensor eps, Tensor? lower, Tensor? upper, float lower_s, float upper_s, "
    "float p, str distribution, int? seed, int row_offset, int[] axis, str unreachable) "
    "-> Tensor"
)
_noise_op = torch.library.custom_op(
    "clipresc::noise",
    _impl,
    mutates_args=(),
    schema=_SCHEMA,
    tags=(torch.Tag.nondeterministic_seeded,),
)
_noise_op.register_fake(_fake)


def noise(
    x: Any,
    eps: Any,
    *,
    p: Any,
    bounds: Any,
    distribution: str,
    seed: Any,
    axis: Any,
    row_offset: Any,
    unreachable: Any,
) -> Any:
    """:func:`clipresc.noise` of a tensor that ``torch.compile`` is tracing."""
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED
    ):
        raise _errors.compiled_noise_seed(seed)
    x = x.detach()
    args = _ct._traced_args(x, x, eps, p, bounds, axis, unreachable)
    _, _, eps_t, lower, upper, lower_s, upper_s, pf, axes, mode = args
    return torch.ops.clipresc.noise(
        x, eps_t, lower, upper, lower_s, upper_s, pf, distribution, seed, row_offset, axes, mode
    )
