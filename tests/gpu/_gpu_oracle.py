"""Independent float64 reference for the GPU kernel tests (numpy only, no clipresc import).

``bisect_eta`` is the tests' one bisection oracle (``tests/oracle.py``), returning
``(eta, unreachable)`` per row. Also: input builders shared by the OpenCL and CuPy
tests, including the adversarial chain on which plain Newton fixes one element per pass.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from oracle import bisect_eta_flags as bisect_eta

__all__ = [
    "adversarial_row",
    "bisect_eta",
    "make_case",
    "max_size",
    "newton_passes",
    "rooms",
    "size_pow",
]

BOUND_KINDS = ("scalar", "full", "shared", "half_inf")


def rooms(
    x: np.ndarray, d: np.ndarray, lower: Any, upper: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``(s, a, movable)`` broadcast to ``x.shape`` (bounds: None, scalar or array)."""
    x = np.asarray(x, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(-np.inf if lower is None else lower, dtype=np.float64), x.shape)
    hi = np.broadcast_to(np.asarray(np.inf if upper is None else upper, dtype=np.float64), x.shape)
    with np.errstate(invalid="ignore"):
        s = np.where(d > 0, hi - x, x - lo)
    s = np.maximum(np.where(d != 0, s, 0.0), 0.0)
    return s, np.abs(d), d != 0


def size_pow(s: np.ndarray, a: np.ndarray, mv: np.ndarray, eta: np.ndarray, p: float) -> np.ndarray:
    """Per row: achieved size to the p-th power (finite p) or the max (p = inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.where(mv, np.minimum(eta[:, None] * a, s), 0.0)
    if np.isinf(p):
        return m.max(axis=1, initial=0.0)
    return (m**p).sum(axis=1)


def max_size(s: np.ndarray, mv: np.ndarray, p: float) -> np.ndarray:
    """Largest reachable size per row (not raised to p)."""
    sm = np.where(mv, s, 0.0)
    if np.isinf(p):
        return sm.max(axis=1, initial=0.0)
    return (sm**p).sum(axis=1) ** (1.0 / p)


def make_case(
    rng: np.random.Generator, n: int, dtype: Any, kind: str, p: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """Six rows: moderate / heavy clipping, unreachable, eps = 0, all-zero delta, light
    clipping. Bounds ``kind``: scalar [0, 1], per-element arrays (with some infinite
    entries), a shared (n,) pair, or [0, inf). Returns ``(x, d, eps, lower, upper)``."""
    B = 6
    x = rng.uniform(0.02, 0.98, (B, n))
    d = rng.normal(size=(B, n))
    d[4] = 0.0
    if n > 3:
        d[0, 1] = 0.0  # a non-moving element inside a normal row
    lower: Any
    upper: Any
    if kind == "scalar":
        lower, upper = 0.0, 1.0
    elif kind == "full":
        lower = x - rng.uniform(0.0, 0.5, (B, n))
        upper = x + rng.uniform(0.0, 0.5, (B, n))
        lower[:, ::5] = -np.inf
        upper[:, 2::7] = np.inf
    elif kind == "shared":
        lower = rng.uniform(-0.3, 0.0, n)
        upper = rng.uniform(1.0, 1.3, n)
    elif kind == "half_inf":
        lower, upper = 0.0, None
    else:
        raise ValueError(kind)
    x = x.astype(dtype)
    d = d.astype(dtype)
    if isinstance(lower, np.ndarray):
        lower = lower.astype(dtype)
    if isinstance(upper, np.ndarray):
        upper = upper.astype(dtype)
    s, a, mv = rooms(x, d, lower, upper)
    top = max_size(s, mv, p)
    pp = 2.0 if np.isinf(p) else p
    naive = (np.where(mv, a, 0.0) ** pp).sum(axis=1) ** (1.0 / pp) * 0.3
    scale = np.where(np.isfinite(top), top, naive)
    eps = scale * np.array([0.4, 0.9, 1.7, 0.0, 1.0, 0.02])
    if not np.isfinite(top[2]):
        eps[2] = scale[2] * 0.6
    eps[4] = 0.5
    return x, d, eps, lower, upper


def newton_passes(s: np.ndarray, a: np.ndarray, T: float, p: float, limit: int = 10_000) -> int:
    """Passes plain Newton / variable fixing (from t = T / sum w) needs on one row."""
    w, c = a**p, s**p
    tau = c / w
    t = T / w.sum()
    prev = -1
    for k in range(1, limit):
        sat = tau <= t
        cnt = int(sat.sum())
        if cnt == prev:
            return k
        prev = cnt
        t = (T - c[sat].sum()) / w[~sat].sum()
    raise AssertionError("Newton did not converge")


def adversarial_row(
    p: float, K: int = 40, n_background: int = 1000, dtype: Any = np.float64
) -> tuple[np.ndarray, np.ndarray, float, float, float, int | None]:
    """One row on which plain Newton saturates exactly one more element per pass.

    Chain k = 1..K: weights w_k = 4^-k, |d_k| = w_k^(1/p); each breakpoint tau_k sits at
    0.75 times the previous Newton iterate t_{k-1} (so t_{k-1} saturates element k and
    nothing further), c_k = tau_k w_k, room s_k = c_k^(1/p). The rooms are tiny, so the
    chain elements move down to the lower bound 0 (x_k = s_k, d_k < 0: the room is
    exact); background elements (x = 0, d > 0 tiny, room 1) never saturate and keep their
    weight well below the chain's. Bounds [0, 1]. Returns
    ``(x, d, eps, lower, upper, newton_passes)`` (passes counted on the rounded data, or
    None when the rounding to ``dtype`` broke the construction).
    """
    k = np.arange(1, K + 1, dtype=np.float64)
    w = 4.0**-k
    wb = 4.0**-K / (10.0 * n_background)
    db = wb ** (1.0 / p)
    W = w.sum() + n_background * db**p
    T = W * 1.0  # t_0 = 1
    t = T / W
    c = np.empty(K)
    for i in range(K):
        c[i] = 0.75 * t * w[i]  # tau_i = 0.75 t_{i-1}
        M = w[i + 1 :].sum() + n_background * db**p  # summed afresh: no cancellation
        t = (T - c[: i + 1].sum()) / M
    s = c ** (1.0 / p)
    x = np.concatenate([s, np.zeros(n_background)])
    d = np.concatenate([-(w ** (1.0 / p)), np.full(n_background, db)])
    x = x.astype(dtype)
    d = d.astype(dtype)
    eps = T ** (1.0 / p)
    sr, ar, mv = rooms(x, d, 0.0, 1.0)
    try:
        passes: int | None = newton_passes(sr[mv], ar[mv], T, p)
    except (AssertionError, ZeroDivisionError, FloatingPointError):
        passes = None
    return x, d, eps, 0.0, 1.0, passes
