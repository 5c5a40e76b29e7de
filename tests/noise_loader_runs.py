"""``ExactNoise`` in real ``torch.utils.data.DataLoader`` runs (helper of test_noise_loader.py).

Run as a script in a fresh process: ``python noise_loader_runs.py OUT.npz``, so that the
workers' start methods and seeds depend on nothing the pytest process did (a forked child
of a process that used the core runs it on the calling thread; ``tests/test_fork.py``
checks that). The dataset lives in this importable module so that ``spawn`` workers can
unpickle it.

Each sample is a constant image (0.5 everywhere) with ``ExactNoise`` applied; a sample comes
back with its index, the seed of the worker that made it and that worker's call number, so
the test can recompute its noise from the documented key.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from clipresc.transforms import ExactNoise

SHAPE = (3, 4, 4)
N = 8
EPS = 1.0
EPOCHS = 2


class NoisyConstants(Dataset):  # type: ignore[type-arg]
    """``N`` constant images, each passed through the transform on every access."""

    def __init__(self, transform: ExactNoise) -> None:
        self.transform = transform
        self.calls = 0  # per process: a worker counts its own calls

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[int, int, int, Any]:
        info = get_worker_info()
        ws = -1 if info is None else int(info.seed)
        k = self.calls
        self.calls += 1
        return i, ws, k, self.transform(torch.full(SHAPE, 0.5))


def run(seed: int | None, workers: int, persistent: bool, method: str | None) -> dict[str, Any]:
    """Two epochs; per epoch, rows in index order: noisy images, worker seeds, call numbers."""
    torch.manual_seed(1234)
    ds = NoisyConstants(ExactNoise(EPS, seed=seed))
    loader = DataLoader(
        ds,
        batch_size=2,
        num_workers=workers,
        persistent_workers=persistent,
        multiprocessing_context=method if workers else None,
    )
    images, seeds, calls = [], [], []
    for _ in range(EPOCHS):
        got: dict[int, tuple[int, int, np.ndarray]] = {}
        for idx, ws, k, img in loader:
            for j in range(len(idx)):
                got[int(idx[j])] = (int(ws[j]), int(k[j]), img[j].numpy())
        images.append(np.stack([got[i][2] for i in range(N)]))
        seeds.append([got[i][0] for i in range(N)])
        calls.append([got[i][1] for i in range(N)])
    return {"images": np.stack(images), "seeds": np.array(seeds), "calls": np.array(calls)}


CONFIGS = [
    # (name, seed, num_workers, persistent_workers, start method); every run starts from
    # torch.manual_seed(1234), so spawn_persistent is a second run of fork_persistent
    ("main", 0, 0, False, None),
    ("fork", 0, 2, False, "fork"),
    ("fork_again", 0, 2, False, "fork"),
    ("fork_persistent", 0, 2, True, "fork"),
    ("fork_none", None, 2, False, "fork"),
    # a spawned worker takes seconds to start (it imports torch): one worker per epoch here
    ("spawn", 0, 1, False, "spawn"),
    ("spawn_persistent", 0, 2, True, "spawn"),
]


def main(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    for name, seed, workers, persistent, method in CONFIGS:
        for key, value in run(seed, workers, persistent, method).items():
            out[f"{name}.{key}"] = value
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
