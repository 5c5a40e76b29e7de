"""``ExactNoise`` in real multi-worker ``torch.utils.data.DataLoader`` runs (issue 18, part 5).

The runs happen in a fresh process (see ``noise_loader_runs.py``): fork and spawn start
methods, persistent workers or not, two epochs each, with ``torch.manual_seed`` fixed.
Checked against independent references: every noisy image is recomputed from the key the
docstring documents (``SeedSequence(seed, spawn_key=(1, worker seed, call))`` in a worker,
``(0, call)`` in the main process) through the NumPy path, its size after clipping is
``eps`` in float64, and the images of an epoch, of two epochs and of two workers all differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import clipresc

pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import noise_loader_runs as runs_mod  # noqa: E402

SHAPE, N, EPS, EPOCHS = runs_mod.SHAPE, runs_mod.N, runs_mod.EPS, runs_mod.EPOCHS
NAMES = [c[0] for c in runs_mod.CONFIGS]
SEEDS = {c[0]: c[1] for c in runs_mod.CONFIGS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("loader") / "runs.npz"
    package_root = os.path.dirname(os.path.dirname(clipresc.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, HERE])}
    subprocess.run(
        [sys.executable, os.path.join(HERE, "noise_loader_runs.py"), str(path)],
        env=env,
        check=True,
        timeout=300,
    )
    data = np.load(path)
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in NAMES}
    for key in data.files:
        name, field = key.split(".")
        out[name][field] = data[key]
    return out


def _expected(seed: Any, worker_seed: int, call: int) -> np.ndarray:
    key = (0, call) if worker_seed < 0 else (1, worker_seed, call)
    ss = np.random.SeedSequence(seed, spawn_key=key)
    x = np.full(SHAPE, 0.5, dtype=np.float32)
    return clipresc.noise(x, EPS, seed=ss, axis=(0, 1, 2))


@pytest.mark.parametrize("name", [n for n in NAMES if SEEDS[n] is not None])
def test_every_image_has_the_documented_key(runs: Any, name: str) -> None:
    r = runs[name]
    for e in range(EPOCHS):
        for i in range(N):
            want = _expected(SEEDS[name], int(r["seeds"][e, i]), int(r["calls"][e, i]))
            np.testing.assert_array_equal(r["images"][e, i], want)


@pytest.mark.parametrize("name", NAMES)
def test_fresh_noise_every_epoch_sample_and_worker(runs: Any, name: str) -> None:
    r = runs[name]
    imgs = r["images"].reshape(EPOCHS * N, -1).astype(np.float64)
    sizes = np.linalg.norm(imgs - 0.5, axis=1)
    np.testing.assert_allclose(sizes, EPS, rtol=1e-5)
    assert np.all((imgs >= 0) & (imgs <= 1))
    # no two images alike: within an epoch, across the two epochs, across workers
    assert len({row.tobytes() for row in r["images"].reshape(EPOCHS * N, -1)}) == EPOCHS * N
    workers = {int(s) for s in r["seeds"][0]}
    if name not in ("main", "spawn"):
        assert len(workers) == 2  # both workers produced samples
    if name in ("fork", "fork_none", "spawn"):  # new workers, new seeds each epoch
        assert not set(r["seeds"][0]) & set(r["seeds"][1])


def test_a_run_is_reproducible_from_the_torch_seed(runs: Any) -> None:
    np.testing.assert_array_equal(runs["fork"]["images"], runs["fork_again"]["images"])
    # the start method does not matter: spawned persistent workers give fork's bits
    np.testing.assert_array_equal(
        runs["spawn_persistent"]["images"], runs["fork_persistent"]["images"]
    )
    # without a seed the transform's own entropy differs between runs
    assert not np.array_equal(runs["fork_none"]["images"], runs["fork"]["images"])


def test_main_process_keeps_its_key_sequence(runs: Any) -> None:
    r = runs["main"]
    np.testing.assert_array_equal(r["calls"].ravel(), np.arange(EPOCHS * N))
    from clipresc.transforms import ExactNoise

    t = ExactNoise(EPS, seed=0)
    x = np.full(SHAPE, 0.5, dtype=np.float32)
    again = np.stack([t(x) for _ in range(EPOCHS * N)])
    np.testing.assert_array_equal(r["images"].reshape(again.shape), again)
