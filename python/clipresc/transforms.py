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

from . import _errors
from ._args import parse_p
from ._noise import DEFAULT_BOUNDS, noise, parse_distribution, seed_sequence

__all__ = ["ExactNoise"]


def _torch_worker_seed() -> int | None:
    """The seed of this ``torch.utils.data`` worker, ``None`` outside one (never imports
    torch).

    The DataLoader draws a base seed from the main process's torch RNG (or its
    ``generator``) each time it starts workers, and gives worker ``i`` the seed
    ``base + i``: it differs between workers and between epochs (persistent workers keep
    theirs), and ``torch.manual_seed`` makes it reproducible.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    info = torch.utils.data.get_worker_info()
    return None if info is None else int(info.seed)


class ExactNoise:
    """Adds random noise whose size after clipping to ``bounds`` is exactly ``eps``.

    Each call draws fresh noise, also in ``torch.utils.data`` workers: every epoch and every
    worker gets its own noise, whatever ``num_workers``, ``persistent_workers`` and the
    multiprocessing start method. With a ``seed`` the noise is reproducible: in the main
    process (``num_workers=0``) call ``k`` of a transform uses the key
    ``SeedSequence(seed, spawn_key=(0, k))``; in a DataLoader worker, call ``k`` of that
    worker with worker seed ``s = torch.utils.data.get_worker_info().seed`` uses
    ``SeedSequence(seed, spawn_key=(1, s, k))`` (``k`` counts from 0 again whenever ``s``
    changes, i.e. for each new set of workers). The DataLoader draws ``s`` from the main
    process's torch RNG (or its ``generator``) each time it starts workers, so a whole run
    is reproducible when the program calls ``torch.manual_seed`` and uses the same
    ``seed``; with ``seed=None`` the transform's own entropy makes runs differ. (A
    ``SeedSequence`` seed's own ``spawn_key`` comes first.)

    Args:
        eps: the size of each sample's perturbation after clipping (``>= 0``).
        p: the norm, any real ``p > 0`` or ``math.inf``.
        bounds: the data domain ``(lower, upper)``, as in :func:`clipresc.noise`.
        distribution: ``"gaussian"``, ``"uniform"``, ``"laplace"`` or ``"rademacher"``.
        seed: ``None`` (fresh entropy), a non-negative int or a ``SeedSequence``.
        sample_ndim: how many trailing axes form one sample (3 for ``(C, H, W)`` images).
            An input with at most that many axes is one sample; one with more is a batch
            whose leading axes index the samples.

    Inputs are NumPy arrays or arrays of any library :func:`clipresc.noise` takes
    (``torch.Tensor`` s on any device, JAX, TensorFlow, CuPy): the result comes back in the
    input's library, device and dtype, with the same values as for the NumPy array; no
    gradient flows.

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
            raise _errors.transform_eps(eps)
        if isinstance(sample_ndim, bool) or not isinstance(sample_ndim, int) or sample_ndim < 1:
            raise _errors.transform_sample_ndim(sample_ndim)
        self.eps = e
        self.p = parse_p(p)
        self.bounds = bounds
        self.distribution = parse_distribution(distribution)
        self.sample_ndim = sample_ndim
        self._root = seed_sequence(seed)
        self._calls = 0
        """Calls made in the main process."""
        self._worker_seed: int | None = None
        self._worker_calls = 0
        """Calls made in the DataLoader worker whose seed is ``_worker_seed``."""

    def __repr__(self) -> str:
        return (
            f"ExactNoise(eps={self.eps!r}, p={self.p!r}, bounds={self.bounds!r}, "
            f"distribution={self.distribution!r}, sample_ndim={self.sample_ndim})"
        )

    def _next_seed(self) -> np.random.SeedSequence:
        ws = _torch_worker_seed()
        key: tuple[int, ...]
        if ws is None:
            key = (0, self._calls)
            self._calls += 1
        else:
            # a worker starts from a copy of the main process's transform, and a fresh set of
            # workers (a new epoch without persistent workers) from the same copy again:
            # the worker seed, drawn anew each time, is what tells them apart
            if ws != self._worker_seed:
                self._worker_seed, self._worker_calls = ws, 0
            key = (1, ws, self._worker_calls)
            self._worker_calls += 1
        root = self._root
        return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *key))

    def __call__(self, x: Any) -> Any:
        """Return ``x`` with noise of exact size ``eps`` per sample (same library, type,
        shape, dtype and device)."""
        nd = getattr(x, "ndim", None)
        if nd is None:
            x = np.asarray(x)
            nd = x.ndim
        if nd == 0:
            raise _errors.no_dimensions()
        axis = tuple(range(max(nd - self.sample_ndim, 0), nd))
        return noise(
            x,
            self.eps,
            p=self.p,
            bounds=self.bounds,
            distribution=self.distribution,
            seed=self._next_seed(),
            axis=axis,
        )
