"""Data-pipeline transforms (PyTorch style: configure once, then call on each sample).

>>> import numpy as np
>>> from clipresc.transforms import ExactNoise
>>> t = ExactNoise(eps=2.0, seed=0)
>>> img = np.full((3, 8, 8), 0.5, dtype=np.float32)
>>> out = t(img)
>>> round(float(np.linalg.norm(out - img)), 4)
2.0
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._args import parse_p
from ._noise import DEFAULT_BOUNDS, noise, parse_distribution, seed_sequence

__all__ = ["ExactNoise"]


def _torch_worker_id() -> int:
    """The ``torch.utils.data`` worker id, or -1 in the main process (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return -1
    info = torch.utils.data.get_worker_info()
    return -1 if info is None else int(info.id)


def _is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class ExactNoise:
    """Adds random noise whose size after clipping to ``bounds`` is exactly ``eps``.

    Each call draws fresh noise. With a ``seed`` the sequence of calls is reproducible: call
    ``k`` of a transform (in each ``torch.utils.data`` worker, whose id is mixed in) uses
    the key ``SeedSequence(seed, spawn_key=(worker + 1, k))``.

    Args:
        eps: the size of each sample's perturbation after clipping (``>= 0``).
        p: the norm, any real ``p > 0`` or ``math.inf``.
        bounds: the data domain ``(lower, upper)``, as in :func:`clipresc.noise`.
        distribution: ``"gaussian"``, ``"uniform"``, ``"laplace"`` or ``"rademacher"``.
        seed: ``None`` (fresh entropy), a non-negative int or a ``SeedSequence``.
        sample_ndim: how many trailing axes form one sample (3 for ``(C, H, W)`` images).
            An input with at most that many axes is one sample; one with more is a batch
            whose leading axes index the samples.

    Inputs are NumPy arrays or, when PyTorch is installed, ``torch.Tensor`` s (CPU or not:
    the result is returned on the input's device, in its dtype; no gradient flows).

    >>> import numpy as np
    >>> t = ExactNoise(eps=0.25, p=math.inf, distribution="rademacher", seed=3)
    >>> batch = np.full((4, 3, 2, 2), 0.5)  # a batch of 4 samples
    >>> out = t(batch)  # every element moves by +-0.25: L-inf size 0.25 per sample
    >>> np.unique(np.abs(out - batch))
    array([0.25])
    >>> bool(np.array_equal(t(batch), out))  # the next call draws new noise
    False
    """

    def __init__(
        self,
        eps: float,
        p: float = 2.0,
        bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
        distribution: str = "gaussian",
        seed: Any = None,
        sample_ndim: int = 3,
    ) -> None:
        e = float(eps)
        if not (e >= 0 and math.isfinite(e)):
            raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
        if isinstance(sample_ndim, bool) or not isinstance(sample_ndim, int) or sample_ndim < 1:
            raise ValueError(f"sample_ndim must be a positive int; got {sample_ndim!r}")
        self.eps = e
        self.p = parse_p(p)
        self.bounds = bounds
        self.distribution = parse_distribution(distribution)
        self.sample_ndim = sample_ndim
        self._root = seed_sequence(seed)
        self._calls = 0

    def __repr__(self) -> str:
        return (
            f"ExactNoise(eps={self.eps!r}, p={self.p!r}, bounds={self.bounds!r}, "
            f"distribution={self.distribution!r}, sample_ndim={self.sample_ndim})"
        )

    def _next_seed(self) -> np.random.SeedSequence:
        key = (_torch_worker_id() + 1, self._calls)
        self._calls += 1
        root = self._root
        return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *key))

    def _apply(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        nd = x.ndim
        if nd == 0:
            raise ValueError("x must have at least one dimension")
        axis = tuple(range(max(nd - self.sample_ndim, 0), nd))
        out: np.ndarray[Any, Any] = noise(
            x,
            self.eps,
            p=self.p,
            bounds=self.bounds,
            distribution=self.distribution,
            seed=self._next_seed(),
            axis=axis,
        )
        return out

    def __call__(self, x: Any) -> Any:
        """Return ``x`` with noise of exact size ``eps`` per sample (same type, shape, dtype)."""
        if _is_torch_tensor(x):
            torch = sys.modules["torch"]
            t = x.detach()
            work = t.to(torch.float32) if t.dtype in (torch.bfloat16,) else t
            y = self._apply(work.cpu().numpy())
            return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)
        return self._apply(np.asarray(x))
