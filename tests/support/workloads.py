"""The benchmarks' workloads and their seeded data (numpy only, no clipresc import)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Workload:
    """A batch of vectors: axis 0 the batch, the other axes one vector each."""

    name: str
    shape: tuple[int, ...]
    dtype: type[np.floating[Any]]
    eps: float
    image: bool = True
    """Whether the vectors are images (channel axis 1: per-channel bounds apply)."""

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def n(self) -> int:
        return math.prod(self.shape[1:])


WORKLOADS = (
    Workload("64x3x224x224 f32", (64, 3, 224, 224), np.float32, 50.0),
    Workload("1024x3x32x32 f32", (1024, 3, 32, 32), np.float32, 10.0),
    Workload("4096x784 f64", (4096, 784), np.float64, 3.6, image=False),
)
"""ImageNet-sized images, CIFAR-sized images, MNIST-sized float64 vectors."""


def image_and_noise(
    shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, delta)``: ``x`` uniform in ``[0, 1)`` (an image in the data box ``[0, 1]``),
    ``delta`` standard normal, both of ``shape`` and ``dtype``.

    >>> x, d = image_and_noise((2, 3), np.float64, seed=1)
    >>> x.shape, bool(((0 <= x) & (x < 1)).all()), d.dtype
    ((2, 3), True, dtype('float64'))
    """
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=dtype), rng.standard_normal(shape, dtype=dtype)


def write_npy_rows(path: Any, shape: tuple[int, ...], kind: str, seed: int) -> None:
    """A float32 ``.npy`` file of ``shape`` written 64 rows at a time (files larger than
    memory): uniform in ``[0, 1)`` for ``kind="x"``, standard normal for ``"delta"``."""
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    rng = np.random.default_rng(seed)
    step = 64
    for i in range(0, shape[0], step):
        n = min(step, shape[0] - i)
        if kind == "x":
            a[i : i + n] = rng.random((n, *shape[1:]), dtype=np.float32)
        else:
            a[i : i + n] = rng.standard_normal((n, *shape[1:]), dtype=np.float32)
    a.flush()
    del a
