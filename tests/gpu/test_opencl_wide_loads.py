"""The kernels' wide loads at every row alignment and round boundary (OpenCL on PoCL).

Streaming passes with reductions load CR_VW elements of x and d per thread ahead of use
(rounds of CR_VW * 256 elements); the apply pass reads and writes 16-byte vectors from the
first 16-byte boundary a row's x, d and y share, element by element before it (the head)
and after the last whole vector (the tail). Row lengths around those boundaries (partial
rounds, heads of 0..3 elements, tails) must give the oracle's eta and a ``y`` that is
bitwise the clip formula at that eta, for scalar and array bounds (the scalar path).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue, reduced

from support.gpu_cases import bisect_eta

import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402

BLOCK = 256


def _lengths(dtype: type) -> list[int]:
    vw = 16 // np.dtype(dtype).itemsize
    rnd = vw * BLOCK
    if reduced():
        return [3, vw + 1, rnd + 1]
    return [1, 2, 3, 5, 7, vw * 64 + 3, rnd - 1, rnd, rnd + 1, 2 * rnd + vw + 1]


def _clip_y(x: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray, eta: np.ndarray):
    """The apply formula (float64, as the kernels): saturated elements get the bound."""
    x64, d64 = x.astype(np.float64), d.astype(np.float64)
    lo64, hi64 = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    e = eta.astype(np.float64)[:, None]
    room = np.maximum(np.where(d64 > 0, hi64 - x64, x64 - lo64), 0.0)
    sat = (d64 != 0) & (room <= e * np.abs(d64))
    free = np.minimum(np.maximum(x64 + e * d64, lo64), hi64)
    return np.where(sat, np.where(d64 > 0, hi64, lo64), free).astype(x.dtype)


@pytest.mark.parametrize("bounds", ["scalar", "array"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_every_alignment_and_round(p: float, dtype: type, bounds: str) -> None:
    queue = opencl_queue()
    rng = np.random.default_rng(11)
    for n in _lengths(dtype):
        # one row repeated: the copies start at every offset mod 16 bytes (n odd), so one
        # goes head + vectors + tail where another is all head, and all must agree
        rows = 5
        x = np.tile(rng.uniform(0.0, 1.0, n).astype(dtype), (rows, 1))
        d = np.tile(rng.normal(size=n).astype(dtype), (rows, 1))
        d[:, ::7] = 0.0
        eps = np.full(rows, 0.3 * (n ** (1.0 / p) if math.isfinite(p) else 1.0))
        if bounds == "scalar":
            lo_a, hi_a = 0.0, 1.0
        else:
            lo_a = np.minimum(x, rng.uniform(0.0, 0.2, n).astype(dtype))
            hi_a = np.maximum(x[0], rng.uniform(0.8, 1.0, n).astype(dtype))
        res = ob.forward_rows(x, d, eps, p, lo_a, hi_a, queue=queue)
        for r in range(1, rows):
            assert res.y[r].tobytes() == res.y[0].tobytes(), (n, r)
            assert res.eta[r] == res.eta[0], (n, r)
        ref, unreachable = bisect_eta(x, d, eps, p, lo_a, hi_a)
        np.testing.assert_array_equal(res.unreachable, unreachable)
        tol = 4e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(res.eta.astype(np.float64), ref, rtol=tol, err_msg=str(n))
        # the formula at the kernel's eta (float32: its double eta is returned rounded)
        want = _clip_y(x, d, np.asarray(lo_a), np.asarray(hi_a), res.eta)
        tol = 1e-6 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(res.y, want, rtol=tol, atol=tol, err_msg=str(n))
