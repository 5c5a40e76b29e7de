"""Row groups sized for L2 in the CuPy backend (stand-in CuPy of ``test_cupy_backend_emulated``:
the kernels run as OpenCL on PoCL; the stand-in device has 2 multiprocessors).

With a small L2 the forward runs the batch in groups of rows whose ``x`` and ``d`` fit
``kernels.L2_FRACTION`` of it, each group a launch (or a split sequence) of its own on
views of the operands. Rows are independent, so the results must be bitwise those of one
launch over the whole batch, and agree with the bisection oracle.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import test_cupy_backend_emulated as emu

from clipresc import kernels
from clipresc.backends import cupy_backend as cb
from support.gpu_cases import bisect_eta

fake_cupy = emu.fake_cupy


def _case(rng: np.random.Generator, B: int, n: int, dtype: Any, kind: str) -> tuple[Any, ...]:
    """Rows with per-row eps; bounds scalar, full ``(B, n)`` arrays or one per row."""
    x = rng.uniform(0.02, 0.98, (B, n)).astype(dtype)
    d = rng.normal(size=(B, n)).astype(dtype)
    eps = rng.uniform(0.05, 0.5, B) * math.sqrt(n)
    if kind == "scalar":
        return x, d, eps, 0.0, 1.0
    if kind == "full":
        lo = np.minimum(x, rng.uniform(0.0, 0.1, (B, n)).astype(dtype))
        return x, d, eps, lo, np.ones((B, n), dtype)
    lo = np.minimum(x.min(axis=1, keepdims=True), 0.01).astype(dtype)
    return x, d, eps, lo, 1.0


def _with_l2(monkeypatch: pytest.MonkeyPatch, l2: int) -> None:
    monkeypatch.setattr(cb, "_l2_bytes", lambda device_id: l2)


@pytest.mark.parametrize("kind", ("scalar", "full", "row"))
@pytest.mark.parametrize("p", (1.0, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_groups_of_short_rows(
    fake_cupy: None, monkeypatch: pytest.MonkeyPatch, p: float, kind: str
) -> None:
    rng = np.random.default_rng([7, len(kind)])
    x, d, eps, lower, upper = _case(rng, 20, 500, np.float32, kind)
    _with_l2(monkeypatch, 1 << 40)
    one = cb.forward_rows(x, d, eps, p, lower, upper, want_passes=True)
    launches = len(emu.LAUNCHED)
    row_bytes = 2 * 500 * 4
    _with_l2(monkeypatch, int(3 * row_bytes / kernels.L2_FRACTION))  # 3 rows per group
    assert cb._row_group(cb._prepare(x, d, eps, p, lower, upper), None) == 3
    emu.LAUNCHED.clear()
    grouped = cb.forward_rows(x, d, eps, p, lower, upper, want_passes=True)
    assert emu.LAUNCHED == ["clipresc_forward"] * 7 and launches >= 1
    for a, b in zip(grouped, one):
        np.testing.assert_array_equal(a, b)
    eta_ref, _ = bisect_eta(x, d, eps, p, lower, upper)
    np.testing.assert_allclose(grouped[1], eta_ref, rtol=2e-6)


def test_groups_of_split_rows(fake_cupy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    n = 70_000
    x, d, eps, lower, upper = _case(rng, 3, n, np.float64, "full")
    _with_l2(monkeypatch, 1 << 40)
    one = cb.forward_rows(x, d, eps, 2.0, lower, upper, want_passes=True)
    emu.LAUNCHED.clear()
    _with_l2(monkeypatch, int(2 * n * 8 / kernels.L2_FRACTION))  # one row per group
    grouped = cb.forward_rows(x, d, eps, 2.0, lower, upper, want_passes=True)
    assert emu.LAUNCHED.count("clipresc_split_start") == 3
    for a, b in zip(grouped, one):
        np.testing.assert_array_equal(a, b)
    eta_ref, _ = bisect_eta(x, d, eps, 2.0, lower, upper)
    np.testing.assert_allclose(grouped[1], eta_ref, rtol=1e-10)


def test_plan_policy() -> None:
    """One launch while the rows in flight fit the L2 share; groups that fit otherwise."""
    l2 = 50 * 2**20
    budget = kernels.L2_FRACTION * l2
    for B, n in ((64, 150528), (1024, 3072), (1024, 150528), (8, 10**6), (1, 10**7)):
        rows = kernels.row_group(B, n, 4, 528, l2)
        assert 1 <= rows <= B
        if rows < B:
            assert rows == 1 or rows * 2 * n * 4 <= budget
            assert (rows + 1) * 2 * n * 4 > budget
    assert kernels.row_group(1024, 3072, 4, 528, l2) == 1024


@pytest.mark.parametrize("p", (2.0, math.inf), ids=lambda p: f"p{p}")
def test_split_backward_without_eta(fake_cupy: None, p: float) -> None:
    """Long rows of a small batch: the backward without the forward's eta (and with
    p = inf, whose given eta the kernels do not use) solves the rows with the split
    kernels and runs the split backward on their states (no one-block kernel), agreeing
    with the one-block backward (``split=False``) to summation rounding."""
    rng = np.random.default_rng(5)
    x, d, eps, lower, upper = _case(rng, 2, 70_000, np.float64, "full")
    ybar = rng.standard_normal(x.shape)
    eta = cb.forward_rows(x, d, eps, p, lower, upper)[1] if math.isinf(p) else None
    emu.LAUNCHED.clear()
    got = cb.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, eta=eta)
    assert "clipresc_split_start" in emu.LAUNCHED and "clipresc_split_vjp_sums" in emu.LAUNCHED
    assert "clipresc_vjp" not in emu.LAUNCHED
    want = cb.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, split=False)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12 * float(np.abs(w).max()))


@pytest.mark.parametrize("kind", ("scalar", "full", "row"))
@pytest.mark.parametrize("given", (False, True))
def test_backward_in_groups(
    fake_cupy: None, monkeypatch: pytest.MonkeyPatch, kind: str, given: bool
) -> None:
    """The backward in row groups (each a launch on views, the shared-bound pass over the
    whole batch after them): bitwise the one launch's cotangents."""
    rng = np.random.default_rng([9, len(kind)])
    x, d, eps, lower, upper = _case(rng, 20, 500, np.float64, kind)
    if kind == "row":
        upper = np.ones(500)  # a bound shared by the batch: the column pass
    ybar = rng.standard_normal(x.shape)
    etabar = rng.standard_normal(20)
    eta = cb.forward_rows(x, d, eps, 2.0, lower, upper)[1] if given else None
    _with_l2(monkeypatch, 1 << 40)
    one_p = cb.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, ybar, eta=eta)
    one_s = cb.scale_vjp_rows(x, d, eps, 2.0, lower, upper, etabar, eta=eta)
    _with_l2(monkeypatch, int(3 * 2 * 500 * 8 / kernels.L2_FRACTION))
    emu.LAUNCHED.clear()
    got_p = cb.perturb_vjp_rows(x, d, eps, 2.0, lower, upper, ybar, eta=eta)
    assert emu.LAUNCHED.count("clipresc_vjp") == 7
    got_s = cb.scale_vjp_rows(x, d, eps, 2.0, lower, upper, etabar, eta=eta)
    for got, one in ((got_p, one_p), (got_s, one_s)):
        for a, b in zip(got, one):
            if b is None:
                assert a is None
            else:
                np.testing.assert_array_equal(a, b)
