"""The traffic-counting build (``-DCLIPRESC_COUNT_TRAFFIC``, ``benches/bench_traffic.py``):
its byte counts against an independent count from the passes the normal build reports,
and its results equal to the normal build's (the instrumentation changes no control
flow)."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue

cl = import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402


@pytest.fixture(scope="module")
def counter() -> Any:
    path = Path(__file__).resolve().parents[2] / "benches" / "bench_traffic.py"
    spec = importlib.util.spec_from_file_location("bench_traffic", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.Counter(opencl_queue())


@pytest.mark.parametrize("p", (1.0, 2.0, math.inf), ids=lambda p: f"p{p}")
@pytest.mark.parametrize("n", (300, 1000))
def test_counts_follow_the_passes(counter: Any, p: float, n: int) -> None:
    mod, c = counter
    x, d, eps = mod.typical(5, n, p, seed=n)
    ref = ob.forward_rows(x, d, eps, p, 0.0, 1.0, want_passes=True)
    rd, wr, eta, passes = c.forward(x, d, eps, p, want_y=True)
    np.testing.assert_array_equal(passes, ref.passes)
    np.testing.assert_array_equal(eta, ref.eta)
    B = x.shape[0]
    el = 2 * 4  # x and d in float32, scalar bounds
    assert rd == int(ref.passes.sum()) * n * el + B * n * el + B * 8  # solve, apply, eps
    assert wr == B * n * 4 + B * (4 + 1)  # y, eta and the flag
    rd_s, wr_s, _, _ = c.forward(x, d, eps, p, want_y=False)
    assert (rd_s, wr_s) == (rd - B * n * el, B * 5)
    # the backward given eta: finite p makes no solve pass, p = inf its one arg-max pass
    rd_v, wr_v = c.vjp(x, d, eps, p, eta)
    solve = int(ref.passes.sum()) if math.isinf(p) else 0
    per = el + 4  # x, d and ybar
    assert rd_v == (solve + 2 * B) * n * per + B * (8 + 4) + (0 if math.isinf(p) else B * 4)
    assert wr_v == B * (2 * n + 1) * 4


def test_x_plus_d_baseline(counter: Any) -> None:
    _, c = counter
    x = np.ones((3, 1000), np.float32)
    assert c.x_plus_d(x, x) == (2 * 4 * x.size, 4 * x.size)
