"""Dask arrays through ``scale``, ``perturb`` and ``noise`` on a real ``dask.distributed``
``LocalCluster`` (worker processes, loopback only), compared with the NumPy results."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import clipresc

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"RAYON_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def images(shape: tuple[int, ...], seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape)
    x[x < 0.1] = 0.0
    return x.astype(dtype)


CHUNKINGS = [(4, 3, 8, 8), (3, 1, 8, 8), (5, 3, 4, 8), (16, 3, 8, 8)]


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_noise_equals_numpy(client: Any, chunks: tuple[int, ...]) -> None:
    x = images((16, 3, 8, 8))
    xd = da.from_array(x, chunks=chunks)
    eps = np.linspace(0.5, 3.0, 16)
    for dist in ("gaussian", "laplace"):
        lazy = clipresc.noise(xd, eps, distribution=dist, seed=3)
        assert isinstance(lazy, da.Array)
        got = lazy.compute()
        np.testing.assert_array_equal(got, clipresc.noise(x, eps, distribution=dist, seed=3))


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_scale_and_perturb_equal_numpy(client: Any, chunks: tuple[int, ...]) -> None:
    x = images((16, 3, 8, 8), 1)
    d = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    xd, dd = da.from_array(x, chunks=chunks), da.from_array(d, chunks=chunks)
    lo = np.zeros((3, 1, 1), np.float32)  # per channel: passed whole to each task
    for p in (1.0, 2.0, np.inf):
        eta = clipresc.scale(xd, dd, 2.0, p=p, bounds=(lo, 1.0))
        assert isinstance(eta, da.Array) and eta.shape == (16, 1, 1, 1)
        np.testing.assert_array_equal(eta.compute(), clipresc.scale(x, d, 2.0, p=p))
        y = clipresc.perturb(xd, dd, 2.0, p=p)
        np.testing.assert_array_equal(y.compute(), clipresc.perturb(x, d, 2.0, p=p))
    # a NumPy delta joins a Dask x
    np.testing.assert_array_equal(
        clipresc.perturb(xd, d, 2.0).compute(), clipresc.perturb(x, d, 2.0)
    )


def test_bounds_that_vary_over_the_batch(client: Any) -> None:
    x = images((12, 50), 3, np.float64)
    lo = np.minimum(x, np.random.default_rng(4).uniform(0, 0.05, x.shape))
    hi = np.maximum(x, 0.9)
    d = np.random.default_rng(5).standard_normal(x.shape)
    xd = da.from_array(x, chunks=(5, 25))
    for bounds in [(lo, hi), (da.from_array(lo, chunks=(3, 50)), hi), (None, hi)]:
        want = clipresc.perturb(
            x, d, 1.0, bounds=tuple(np.asarray(b) if b is not None else None for b in bounds)
        )
        got = clipresc.perturb(xd, da.from_array(d, chunks=(4, 10)), 1.0, bounds=bounds)
        np.testing.assert_array_equal(got.compute(), want)
    got = clipresc.noise(xd, 1.0, bounds=(lo, hi), seed=1).compute()
    np.testing.assert_array_equal(got, clipresc.noise(x, 1.0, bounds=(lo, hi), seed=1))


def test_axes_and_row_offset(client: Any) -> None:
    x = images((6, 5, 7), 6, np.float64)
    xd = da.from_array(x, chunks=(4, 2, 3))
    for axis in (1, (1, 2), -1, (0, 2)):
        got = clipresc.noise(xd, 0.7, axis=axis, seed=9, row_offset=11).compute()
        np.testing.assert_array_equal(got, clipresc.noise(x, 0.7, axis=axis, seed=9, row_offset=11))
    one = da.from_array(x[0, 0], chunks=3)  # a 1-D array is one vector
    np.testing.assert_array_equal(
        clipresc.noise(one, 0.3, seed=2).compute(), clipresc.noise(x[0, 0], 0.3, seed=2)
    )


def test_seed_none_is_fixed_when_the_graph_is_built(client: Any) -> None:
    xd = da.from_array(images((8, 20)), chunks=(3, 20))
    lazy = clipresc.noise(xd, 1.0)
    np.testing.assert_array_equal(lazy.compute(), lazy.compute())
    assert not np.array_equal(lazy.compute(), clipresc.noise(xd, 1.0).compute())


def test_errors(client: Any) -> None:
    x = images((10, 4, 4))
    with pytest.raises(ValueError, match="p must be a positive number"):
        clipresc.noise(da.from_array(x, chunks=2), 1.0, p=-1)  # eager
    with pytest.raises(ValueError, match="eps must be a scalar or hold one value per vector"):
        clipresc.noise(da.from_array(x, chunks=2), [1.0, 2.0])
    with pytest.raises(ValueError, match="bounds: lower > upper"):
        clipresc.noise(da.from_array(x, chunks=2), 1.0, bounds=(1.0, 0.0))
    with pytest.raises(TypeError, match="x must be a real floating-point array"):
        clipresc.noise(da.zeros((4, 4), dtype=int, chunks=2), 1.0)
    with pytest.raises(ValueError, match="delta must have the same shape as x"):
        clipresc.perturb(da.from_array(x, chunks=2), np.zeros((10, 4)), 1.0)
    bad = x.copy()
    bad[7, 2, 3] = 2.0
    lazy = clipresc.noise(da.from_array(bad, chunks=(3, 4, 4)), 1.0, seed=0)  # lazy: no error
    with pytest.raises(
        ValueError, match=r"x has 1 value outside bounds; first at index \(7, 2, 3\)"
    ):
        lazy.compute()
    d = da.from_array(np.ones_like(x), chunks=(3, 4, 4))
    # whichever block fails first reports, with its vectors' indices in the whole array
    msg = r"eps exceeds the largest reachable size for \d of \d vectors?; first: vector (\d)"
    with pytest.raises(ValueError, match=msg + r" \(in the Dask block of vectors \(\1, "):
        clipresc.perturb(da.from_array(x, chunks=(3, 4, 4)), d, 1e6, unreachable="raise").compute()


def test_numpy_calls_do_not_import_dask() -> None:
    code = (
        "import sys, numpy as np, clipresc;"
        "x = np.full((2, 3), 0.5); d = np.ones((2, 3));"
        "clipresc.scale(x, d, 0.1); clipresc.perturb(x, d, 0.1); clipresc.noise(x, 0.1);"
        "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
