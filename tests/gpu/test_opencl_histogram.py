"""The few-pass solve of the GPU kernels (``kernels/clipresc.cu``): a breakpoint histogram
in the first pass, a range pass, the finish on candidates in shared memory.

Each path is driven by data built for it, and every result is held to the float64
bisection oracle (``support/gpu_cases.py``); the pass counts the kernel reports are held
to what the design promises (2 passes over global memory on typical data, a few more
when the histogram needs a finer level or its estimate misses, always bounded).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue

from support.gpu_cases import adversarial_row, bisect_eta, rooms

cl = import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402

#: passes over a row the kernel may ever make (totals + 8 Newton + 66 bisection).
MAX_PASSES = 1 + 8 + 66
P_VALUES = (0.5, 1.0, 2.0, 3.0)


@pytest.fixture(scope="module")
def queue() -> Any:
    return opencl_queue()


def _eps_third(x: np.ndarray, d: np.ndarray, p: float) -> np.ndarray:
    """A third of each row's largest reachable size (bounds [0, 1])."""
    s, _, _ = rooms(x, d, 0.0, 1.0)
    return np.asarray((s**p).sum(axis=1) ** (1.0 / p) / 3.0)


def _solve(queue: Any, x: np.ndarray, d: np.ndarray, eps: Any, p: float, split: Any = None) -> Any:
    res = ob.forward_rows(x, d, eps, p, 0.0, 1.0, want_passes=True, queue=queue, split=split)
    assert res.passes is not None
    return res


@pytest.mark.parametrize("p", (1.0, 2.0), ids=lambda p: f"p{p}")
@pytest.mark.parametrize("n", (3072, 150528))
def test_typical_rows_take_two_passes(queue: Any, p: float, n: int) -> None:
    """x uniform, delta normal (float32): the totals + histogram pass and one range pass;
    the root is finished on the candidates without another pass over the row."""
    rng = np.random.default_rng(n)
    x = rng.random((3, n), dtype=np.float32)
    d = rng.standard_normal((3, n), dtype=np.float32)
    eps = _eps_third(x, d, p)
    res = _solve(queue, x, d, eps, p)
    np.testing.assert_array_equal(res.passes, [2, 2, 2])
    eta_ref, unreach = bisect_eta(x, d, eps, p, 0.0, 1.0)
    assert not unreach.any()
    np.testing.assert_allclose(res.eta.astype(np.float64), eta_ref, rtol=2e-6)


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_long_row_refines_the_histogram(queue: Any, p: float) -> None:
    """4 x 10^5 elements in one block: the crossing bin of the first histogram holds more
    candidates than shared memory, so one finer level is binned before the candidates are
    copied. (Split over blocks, the finer level comes from the segments' candidates
    instead: ``test_opencl_split.py``.)"""
    rng = np.random.default_rng(7)
    n = 400_000
    x = rng.random((1, n))
    d = rng.standard_normal((1, n))
    eps = _eps_third(x, d, p)
    res = _solve(queue, x, d, eps, p, split=False)
    assert res.passes[0] == 3
    eta_ref, _ = bisect_eta(x, d, eps, p, 0.0, 1.0)
    np.testing.assert_allclose(res.eta, eta_ref, rtol=1e-12)


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_many_equal_keys(queue: Any, p: float) -> None:
    """Sign perturbations of 16-level data: 32 distinct breakpoints, hundreds of elements on
    each (more than shared memory holds): exact, in few passes."""
    rng = np.random.default_rng(3)
    n = 20_000
    x = rng.integers(0, 16, (2, n)) / 15.0
    d = np.where(rng.random((2, n)) < 0.5, -1.0, 1.0)
    eps = _eps_third(x, d, p)
    res = _solve(queue, x, d, eps, p)
    assert res.passes.max() <= 3
    eta_ref, _ = bisect_eta(x, d, eps, p, 0.0, 1.0)
    np.testing.assert_allclose(res.eta, eta_ref, rtol=1e-12)


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_keys_far_outside_the_first_window(queue: Any, p: float) -> None:
    """|delta| spread over 16 decades: most breakpoints fall outside the first window of
    4 binades (its edge bins reach to 0 and to infinity): still exact, in few passes."""
    rng = np.random.default_rng(11)
    n = 20_000
    x = rng.random((2, n))
    d = rng.choice([-1.0, 1.0], (2, n)) * 10.0 ** rng.uniform(-8, 8, (2, n))
    eps = _eps_third(x, d, p)
    res = _solve(queue, x, d, eps, p)
    assert res.passes.max() <= 4
    eta_ref, _ = bisect_eta(x, d, eps, p, 0.0, 1.0)
    np.testing.assert_allclose(res.eta, eta_ref, rtol=1e-12)


def _backward_error(x: np.ndarray, d: np.ndarray, eps: float, p: float, eta: float) -> float:
    s, a, mv = rooms(x[None, :], d[None, :], 0.0, 1.0)
    terms = np.minimum(eta * a[mv], s[mv]) ** p
    return abs(math.fsum(terms.tolist()) - eps**p) / eps**p


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_adversarial_chain_in_a_long_row(queue: Any, p: float) -> None:
    """The chain on which plain Newton fixes one element per pass, padded to 3040
    elements: the root sits in a gap the fixed-point histogram cannot resolve (eps^p - C
    is ~1e-14 eps^p), so its estimate may miss; the exact sums of the range pass catch
    that, and a pass over the bracket copies the chain to shared memory."""
    x, d, eps, lower, upper, newton = adversarial_row(p, K=40, n_background=3000)
    assert newton == 41
    res = ob.forward_rows(
        x[None, :], d[None, :], eps, p, lower, upper, want_passes=True, queue=queue
    )
    assert res.passes is not None and res.passes[0] <= 5
    assert not res.unreachable[0]
    assert _backward_error(x, d, eps, p, float(res.eta[0])) < 1e-14


def test_rows_share_no_state(queue: Any) -> None:
    """A row's result does not depend on the rows solved before it by the same block
    (the histogram and the candidates are emptied per pass): each row of a batch of
    mixed rows equals that row solved alone, bit for bit."""
    rng = np.random.default_rng(5)
    n = 3000
    x = rng.random((6, n))
    d = rng.standard_normal((6, n))
    d[1] *= 1e6  # keys far from the others' window
    x[2] = rng.integers(0, 4, n) / 3.0  # ties
    d[3, 100:] = 0.0  # few movable elements: copied whole in the first pass
    eps = _eps_third(x, d, 2.0)
    batch = _solve(queue, x, d, eps, 2.0)
    for i in range(6):
        alone = _solve(queue, x[i : i + 1], d[i : i + 1], eps[i : i + 1], 2.0)
        assert alone.eta[0] == batch.eta[i]
        assert alone.passes[0] == batch.passes[i]
    eta_ref, _ = bisect_eta(x, d, eps, 2.0, 0.0, 1.0)
    np.testing.assert_allclose(batch.eta, eta_ref, rtol=1e-12)
