"""Validation inside the kernels: the error word (``kernels.ERR_BITS``) on a CPU OpenCL
device, against the bits a NumPy oracle computes for the same inputs, and no bit (and
no change to any result) for valid inputs or without ``err``."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue

from support.gpu_cases import make_case

cl = import_pyopencl()

from clipresc.backends import opencl_backend as ob  # noqa: E402
from clipresc.kernels import ERR_BITS  # noqa: E402


@pytest.fixture(scope="module")
def queue() -> Any:
    return opencl_queue()


def _oracle_bits(x: np.ndarray, d: np.ndarray, eps: np.ndarray, lo: Any, hi: Any) -> int:
    lo_b = np.broadcast_to(np.asarray(lo, np.float64), x.shape)
    hi_b = np.broadcast_to(np.asarray(hi, np.float64), x.shape)
    x64 = x.astype(np.float64)
    bits = 0
    with np.errstate(invalid="ignore"):
        found = {
            "eps negative or NaN": bool((~(eps >= 0)).any()),
            "eps infinite": bool(np.isinf(eps).any()),
            "lower NaN": bool(np.isnan(lo_b).any()),
            "upper NaN": bool(np.isnan(hi_b).any()),
            "lower > upper": bool((lo_b > hi_b).any()),
            "x non-finite": bool((~np.isfinite(x)).any()),
            "delta non-finite": bool((~np.isfinite(d)).any()),
            "x outside bounds": bool(((x64 < lo_b) | (x64 > hi_b)).any()),
        }
    for name, on in found.items():
        bits |= ERR_BITS[name] if on else 0
    return bits


def _spoil(rng: np.random.Generator, what: str, x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> Any:
    r, c = int(rng.integers(0, x.shape[0])), int(rng.integers(0, x.shape[1]))
    if what == "x_nan":
        x[r, c] = np.nan
    elif what == "x_inf":
        x[r, c] = -np.inf
    elif what == "d_inf":
        d[r, c] = np.inf
    elif what == "d_nan":
        d[r, c] = np.nan
    elif what == "outside":
        x[r, c] = hi[r, c] + 0.25
    elif what == "lo_nan":
        lo[r, c] = np.nan
    elif what == "hi_nan":
        hi[r, c] = np.nan
    elif what == "crossed":
        lo[r, c], hi[r, c] = hi[r, c] + 1.0, lo[r, c]
    elif what == "eps_neg":
        eps[r] = -1.0
    elif what == "eps_nan":
        eps[r] = np.nan
    elif what == "eps_inf":
        eps[r] = np.inf
    elif what == "two":
        x[r, c] = np.nan
        eps[r] = np.inf
    return x, d, eps, lo, hi


SPOILS = (
    "none",
    "x_nan",
    "x_inf",
    "d_inf",
    "d_nan",
    "outside",
    "lo_nan",
    "hi_nan",
    "crossed",
    "eps_neg",
    "eps_nan",
    "eps_inf",
    "two",
)


@pytest.mark.parametrize("n", (7, 600))
@pytest.mark.parametrize("p", (1.0, 2.0, math.inf), ids=lambda p: f"p{p}")
@pytest.mark.parametrize("what", SPOILS)
def test_error_word_matches_oracle(queue: Any, what: str, p: float, n: int) -> None:
    rng = np.random.default_rng([len(what), n, int(min(p, 9))])
    x, d, eps, lo, hi = make_case(rng, n, np.float64, "full", p)
    eps = eps.copy()
    eps[2] = eps[1]  # make_case's unreachable row: keep the word to the checked bits
    x, d, eps, lo, hi = _spoil(rng, what, x, d, eps, lo, hi)
    want = _oracle_bits(x, d, eps, lo, hi)
    assert (want == 0) == (what == "none")
    err = np.zeros(1, np.int32)
    res = ob.forward_rows(x, d, eps, p, lo, hi, queue=queue, err=err)
    unreach = ERR_BITS["unreachable"] if res.unreachable.any() else 0
    assert int(err[0]) == want | unreach
    err_v = np.zeros(1, np.int32)
    ob.perturb_vjp_rows(x, d, eps, p, lo, hi, np.ones_like(x), queue=queue, err=err_v)
    assert int(err_v[0]) == want
    if what == "none":
        # the given-eta VJP validates in its sums pass; checking changes no result
        err_g = np.zeros(1, np.int32)
        ybar = rng.normal(size=x.shape)
        a = ob.perturb_vjp_rows(x, d, eps, p, lo, hi, ybar, queue=queue, eta=res.eta, err=err_g)
        b = ob.perturb_vjp_rows(x, d, eps, p, lo, hi, ybar, queue=queue, eta=res.eta)
        assert int(err_g[0]) == 0
        for u, v in zip(a, b):
            if u is not None:
                np.testing.assert_array_equal(u, v)
        plain = ob.forward_rows(x, d, eps, p, lo, hi, queue=queue)
        np.testing.assert_array_equal(plain.y, res.y)
        np.testing.assert_array_equal(plain.eta, res.eta)


def test_unreachable_bit(queue: Any) -> None:
    rng = np.random.default_rng(5)
    x, d, eps, lo, hi = make_case(rng, 300, np.float32, "scalar", 2.0)
    err = np.zeros(1, np.int32)
    res = ob.forward_rows(x, d, eps, 2.0, lo, hi, queue=queue, err=err)
    assert res.unreachable.tolist() == [False, False, True, False, False, False]
    assert int(err[0]) == ERR_BITS["unreachable"]


def test_given_eta_vjp_validates(queue: Any) -> None:
    rng = np.random.default_rng(6)
    x, d, eps, lo, hi = make_case(rng, 300, np.float64, "scalar", 2.0)
    eta, _ = ob.scale_rows(x, d, eps, 2.0, lo, hi, queue=queue)
    x[1, 7] = 1.5
    d[4, 3] = np.nan
    err = np.zeros(1, np.int32)
    ob.scale_vjp_rows(x, d, eps, 2.0, lo, hi, np.ones(6), queue=queue, eta=eta, err=err)
    assert int(err[0]) == ERR_BITS["x outside bounds"] | ERR_BITS["delta non-finite"]
