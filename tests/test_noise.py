"""``clipresc.noise``, the raw sampler and the ``ExactNoise`` transform.

Checked against independent computations: the size after clipping in float64 NumPy, the
equality ``noise(x) == clip(x + eta * n)`` with ``n`` from the raw sampler and ``eta`` from
a bisection in NumPy, distribution shape via the exact normal CDF (``math.erf``), and the
reproducibility promises (seed, row_offset, thread count, axis layouts).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import clipresc
from clipresc._noise import DISTRIBUTIONS, sample, seed_key
from clipresc.transforms import ExactNoise
from support import oracle

DISTS = list(DISTRIBUTIONS)


def images(shape: tuple[int, ...], seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    """Points in [0, 1], a fifth of them exactly on a bound."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape)
    u = rng.uniform(0, 1, shape)
    x[u < 0.1] = 0.0
    x[(u >= 0.1) & (u < 0.2)] = 1.0
    return x.astype(dtype)


def sizes(x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    d = (y.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    return np.linalg.norm(d, ord=p, axis=1)


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_size_after_clipping(dist: str, p: float, dtype: type) -> None:
    x = images((6, 3, 16, 16), 1, dtype)
    eps = 0.3 if math.isinf(p) else {1.0: 60.0, 2.0: 4.0, 3.0: 2.0}[p]
    y = clipresc.noise(x, eps, p=p, distribution=dist, seed=5)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all((y >= 0) & (y <= 1))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sizes(x, y, p), eps, rtol=tol)


@pytest.mark.parametrize("dist", DISTS)
def test_equals_clip_of_sampled_noise_with_bisected_eta(dist: str) -> None:
    x = images((4, 500), 2, np.float64)
    y = clipresc.noise(x, 3.0, distribution=dist, seed=11)
    n = sample((4, 500), distribution=dist, seed=11, dtype=np.float64)
    # the same noise through perturb, one vector at a time (a batch passes each answer on
    # to the next vector as its starting estimate; noise solves every vector alone): bitwise
    # the same result
    for r in range(4):
        np.testing.assert_array_equal(
            clipresc.perturb(x[r : r + 1], n[r : r + 1], 3.0), y[r : r + 1]
        )
    # and an independent eta
    for r in range(4):
        eta = float(oracle.bisect_eta(x[r][None], n[r][None], 3.0, 2.0)[0])
        np.testing.assert_allclose(y[r], np.clip(x[r] + eta * n[r], 0, 1), atol=1e-9)


def test_seed_reproducible_and_fresh_without_seed() -> None:
    x = images((3, 50))
    a = clipresc.noise(x, 1.0, seed=123)
    np.testing.assert_array_equal(a, clipresc.noise(x, 1.0, seed=123))
    np.testing.assert_array_equal(a, clipresc.noise(x, 1.0, seed=np.random.SeedSequence(123)))
    assert not np.array_equal(a, clipresc.noise(x, 1.0, seed=124))
    assert not np.array_equal(clipresc.noise(x, 1.0), clipresc.noise(x, 1.0))


@pytest.mark.parametrize("dist", DISTS)
def test_row_offset_makes_chunking_invisible(dist: str) -> None:
    x = images((10, 3, 8, 8), 3)
    eps = np.linspace(0.5, 3.0, 10)
    whole = clipresc.noise(x, eps, distribution=dist, seed=7)
    parts = [
        clipresc.noise(x[a:b], eps[a:b], distribution=dist, seed=7, row_offset=a)
        for a, b in [(0, 3), (3, 4), (4, 10)]
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_noise_of_a_vector_ignores_the_rest_of_the_batch() -> None:
    x = images((5, 40))
    full = sample((5, 40), seed=3, dtype=np.float32)
    longer = sample((5, 90), seed=3, dtype=np.float32)
    np.testing.assert_array_equal(longer[:, :40], full)  # independent of the length
    # a vector's result depends on its own row only
    y = clipresc.noise(x, 1.0, seed=3)
    y1 = clipresc.noise(x[[2]], 1.0, seed=3, row_offset=2)
    np.testing.assert_array_equal(y1[0], y[2])


def test_axis_layouts() -> None:
    x = images((4, 5, 6), 4, np.float64)
    y = clipresc.noise(x, 0.3, axis=1, seed=2)  # vectors along axis 1: 4*6 of them
    d = np.moveaxis(y - x, 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 0.3, rtol=1e-12)
    # the same as the moved, contiguous layout with the same row numbering
    xm = np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(-1, 5)
    ym = clipresc.noise(xm, 0.3, seed=2)
    np.testing.assert_array_equal(np.moveaxis(y, 1, -1).reshape(-1, 5), ym)
    one = clipresc.noise(x[0, :, 0].copy(), 0.5, seed=2)  # 1-D: one vector
    assert abs(np.linalg.norm(one - x[0, :, 0]) - 0.5) < 1e-12


def test_bounds_eps_and_float16() -> None:
    x = images((3, 3, 4, 4), 5)
    lo = np.array([0.0, 0.1, 0.2], dtype=np.float32).reshape(3, 1, 1)
    xb = np.clip(x, lo, 1.0)
    y = clipresc.noise(xb, [0.5, 1.0, 1.5], bounds=(lo, 1.0), seed=1)
    assert np.all(y >= lo) and np.all(y <= 1)
    np.testing.assert_allclose(sizes(xb, y, 2.0), [0.5, 1.0, 1.5], rtol=1e-5)
    y16 = clipresc.noise(x.astype(np.float16), 1.0, seed=1)
    assert y16.dtype == np.float16
    free = clipresc.noise(x, 10.0, bounds=None, seed=1)  # no clipping: any size
    np.testing.assert_allclose(sizes(x, free, 2.0), 10.0, rtol=1e-5)
    zero = clipresc.noise(x, 0.0, seed=1)
    np.testing.assert_array_equal(zero, x)


def test_unreachable() -> None:
    x = np.full((2, 4), 0.5)
    y = clipresc.noise(x, 100.0, seed=0)  # saturate: every element at a bound
    assert np.all((y == 0) | (y == 1))
    with pytest.raises(ValueError, match="eps exceeds the largest reachable size for 2 of 2"):
        clipresc.noise(x, 100.0, seed=0, unreachable="raise")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"distribution": "normal"}, ValueError, "distribution must be one of 'gaussian'"),
        ({"distribution": 3}, ValueError, "distribution must be one of"),
        ({"seed": -1}, ValueError, "seed must be None, a non-negative int"),
        ({"seed": 1.5}, ValueError, "seed must be None"),
        ({"seed": True}, ValueError, "seed must be None"),
        ({"row_offset": -1}, ValueError, "row_offset must be in"),
        ({"row_offset": 2**64}, ValueError, "row_offset must be in"),
        ({"row_offset": 1.0}, TypeError, "row_offset must be an int"),
        ({"p": 0}, ValueError, "p must be a positive number or inf"),
        ({"p": "2"}, TypeError, "p must be a real number"),
        ({"bounds": (1.0, 0.0)}, ValueError, "bounds: lower > upper"),
        ({"bounds": 1.0}, ValueError, "bounds must be a"),
        ({"axis": 5}, ValueError, "axis 5 is out of range"),
        ({"unreachable": "no"}, ValueError, "unreachable must be"),
    ],
)
def test_argument_errors(kwargs: dict, exc: type, match: str) -> None:
    x = images((2, 6))
    with pytest.raises(exc, match=match):
        clipresc.noise(x, 1.0, **kwargs)


def test_data_errors() -> None:
    x = images((2, 3, 4))
    bad = x.copy()
    bad[1, 2, 3] = 1.5
    with pytest.raises(
        ValueError, match=r"x has 1 value outside bounds; first at index \(1, 2, 3\)"
    ):
        clipresc.noise(bad, 1.0)
    bad[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"x has 1 non-finite value; first at index \(0, 0, 1\)"):
        clipresc.noise(bad, 1.0)
    with pytest.raises(TypeError, match="x must be a real floating-point array; got dtype int64"):
        clipresc.noise(np.zeros((2, 3), dtype=np.int64), 1.0)
    with pytest.raises(ValueError, match="eps has 1 negative or NaN value"):
        clipresc.noise(x, [1.0, -1.0])
    with pytest.raises(ValueError, match="eps must be a scalar or hold one value per vector"):
        clipresc.noise(x, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        clipresc.noise(np.float64(0.5), 1.0)


def _normal_cdf(v: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * (1.0 + erf(v / math.sqrt(2.0)).astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_matches_the_normal_cdf(dtype: type) -> None:
    v = sample((8, 50_000), seed=21, dtype=dtype).ravel().astype(np.float64)
    v.sort()
    ecdf = np.arange(1, v.size + 1) / v.size
    ks = float(np.max(np.abs(ecdf - _normal_cdf(v))))
    assert ks < 1.95 / math.sqrt(v.size)  # 99.9% critical value of Kolmogorov-Smirnov


@pytest.mark.parametrize(
    ("dist", "var", "support"),
    [("uniform", 1 / 3, 1.0), ("laplace", 2.0, None), ("rademacher", 1.0, 1.0)],
)
def test_other_distributions(dist: str, var: float, support: float | None) -> None:
    v = sample((4, 100_000), distribution=dist, seed=8).ravel()
    assert abs(v.mean()) < 5 * math.sqrt(var / v.size)
    assert abs(v.var() - var) < 0.02 * var
    if dist == "rademacher":
        assert set(np.unique(v)) == {-1.0, 1.0}
    elif dist == "uniform":
        assert np.all(np.abs(v) < 1.0)
        # Kolmogorov-Smirnov against U(-1, 1)
        s = np.sort(v)
        ks = np.max(np.abs(np.arange(1, s.size + 1) / s.size - (s + 1) / 2))
        assert ks < 1.95 / math.sqrt(s.size)
    else:
        # P(|X| > t) = exp(-t) for a unit Laplace
        for t in (0.5, 1.0, 3.0):
            assert abs(np.mean(np.abs(v) > t) - math.exp(-t)) < 0.005


def test_seed_key_is_32_bytes_from_seed_sequence() -> None:
    k = seed_key(5)
    ss = np.random.SeedSequence(5).generate_state(8, np.uint32).astype("<u4").tobytes()
    assert k == ss and len(k) == 32


def test_identical_for_any_thread_count(tmp_path: object) -> None:
    code = (
        "import numpy as np, clipresc, sys;"
        "x = np.random.default_rng(0).uniform(0, 1, (3, 300_000)).astype(np.float32);"
        "y = clipresc.noise(x, 20.0, seed=4);"
        "sys.stdout.write(y.tobytes().hex()[:0] + str(hash(y.tobytes())))"
    )
    outs = set()
    for threads in ("1", "2", "3"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads, "PYTHONHASHSEED": "0"}
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outs.add(r.stdout)
    assert len(outs) == 1


# ----------------------------------------------------------------------------- transform


def test_transform_one_sample_and_batch() -> None:
    t = ExactNoise(eps=1.5, seed=0)
    img = images((3, 8, 8), 6)
    out = t(img)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert abs(np.linalg.norm((out - img).astype(np.float64)) - 1.5) < 1e-5
    batch = images((5, 3, 8, 8), 7)
    outb = t(batch)
    np.testing.assert_allclose(sizes(batch, outb, 2.0), 1.5, rtol=1e-5)
    # a new draw each call, reproducible from the seed
    t2 = ExactNoise(eps=1.5, seed=0)
    np.testing.assert_array_equal(t2(img), out)
    np.testing.assert_array_equal(t2(batch), outb)
    assert not np.array_equal(t(img), out)


def test_transform_options_and_errors() -> None:
    t = ExactNoise(eps=0.1, p=math.inf, distribution="rademacher", sample_ndim=1, seed=1)
    x = np.full((4, 10), 0.5)
    np.testing.assert_allclose(np.abs(t(x) - x), 0.1)
    assert "rademacher" in repr(t)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        ExactNoise(eps=-1.0)
    with pytest.raises(ValueError, match="distribution must be one of"):
        ExactNoise(eps=1.0, distribution="cauchy")
    with pytest.raises(ValueError, match="sample_ndim must be a positive int"):
        ExactNoise(eps=1.0, sample_ndim=0)
    with pytest.raises(ValueError, match="p must be a positive number"):
        ExactNoise(eps=1.0, p=-2)
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        ExactNoise(eps=1.0)(np.float32(0.5))


def test_transform_on_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    t = ExactNoise(eps=2.0, seed=3)
    img = torch.rand(2, 3, 16, 16, dtype=torch.float32)
    out = t(img)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == img.shape
    d = (out - img).double().reshape(2, -1).norm(dim=1)
    assert torch.allclose(d, torch.full((2,), 2.0, dtype=torch.float64), rtol=1e-5)
    # the same draw as on the NumPy array
    np.testing.assert_array_equal(ExactNoise(eps=2.0, seed=3)(img.numpy()), out.numpy())
    half = ExactNoise(eps=1.0, seed=3)(torch.rand(3, 8, 8, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16


def test_transform_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np; from clipresc.transforms import ExactNoise;"
        "ExactNoise(1.0, seed=0)(np.full((3, 4, 4), 0.5));"
        "print('torch' in sys.modules, 'dask' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False False"
