"""The paper's sort-based L2 algorithm, transcribed to plain NumPy (benchmark baseline).

Rauber & Bethge, "Fast Differentiable Clipping-Aware Normalization and Rescaling"
(arXiv 2007.07677), Listing 1 and its batched reference implementation (BSD-3-Clause,
github.com/jonasrauber/clipping-aware-rescaling). Vectorised over the batch: one
``argsort`` per row, then cumulative sums over the sorted breakpoints. L2 only, scalar
bounds ``[a, b]``. Computation happens in the dtype of ``x`` (like the reference).

:func:`self_check` compares the transcription with the tests' bisection oracle
(``tests/oracle.py``); run this file directly (``python benches/paper_reference.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = [
    "achieved_norm",
    "l2_clipping_aware_rescaling",
    "l2_clipping_aware_rescaling_as_published",
    "self_check",
]


def l2_clipping_aware_rescaling(
    x: np.ndarray, delta: np.ndarray, eps: float, a: float = 0.0, b: float = 1.0
) -> np.ndarray:
    """Return eta (shape ``(B, 1, ..., 1)``) with ||clip(x + eta*delta, a, b) - x||_2 == eps.

    Axis 0 is the batch axis. If ``eps`` is unreachable the size is maximised (every
    movable element saturated), as in the paper's reference code.
    """
    n_batch = x.shape[0]
    x2 = x.reshape(n_batch, -1)
    d2 = delta.reshape(n_batch, -1)

    delta2 = np.square(d2)
    space = np.where(d2 >= 0, b - x2, x2 - a)
    # breakpoints in eta^2: the element saturates once eta^2 >= space^2 / delta^2
    f2 = np.square(space) / np.maximum(delta2, 1e-20)
    ks = np.argsort(f2, axis=-1)
    f2_sorted = np.take_along_axis(f2, ks, axis=-1)
    # m[j]: sum of delta^2 over the elements not yet saturated at breakpoint j
    m = np.cumsum(np.take_along_axis(delta2, ks[:, ::-1], axis=-1), axis=-1)[:, ::-1]
    dx = np.diff(f2_sorted, axis=-1, prepend=0)
    # y[j]: squared post-clip norm at eta^2 = f2_sorted[j]
    y = np.cumsum(m * dx, axis=-1)
    eps2 = eps**2
    c = y >= eps2
    j = np.argmax(c, axis=-1)  # first breakpoint at or beyond the target
    rows = np.arange(n_batch)
    eta2 = f2_sorted[rows, j] - (y[rows, j] - eps2) / m[rows, j]
    # unreachable eps: the last breakpoint maximises the size
    eta2 = np.where(c[:, -1], eta2, f2_sorted[:, -1])
    eta = np.sqrt(eta2)
    return eta.reshape((-1,) + (1,) * (x.ndim - 1))


def l2_clipping_aware_rescaling_as_published(
    x: np.ndarray, delta: np.ndarray, eps: float, a: float = 0.0, b: float = 1.0
) -> np.ndarray:
    """:func:`l2_clipping_aware_rescaling` with the reference implementation's operations.

    The published code (written for EagerPy) gathers with broadcast fancy indexing rather
    than ``take_along_axis``, builds the breakpoint steps by slicing and concatenating, and
    finds the first breakpoint past the target as the argmax of the mask times a descending
    ramp. Timed as a diagnostic: it shows whether the tidier transcription flatters the
    baseline. Same results.
    """
    n_batch = x.shape[0]
    rows = np.arange(n_batch)[:, None]
    delta2 = np.square(delta).reshape((n_batch, -1))
    space = np.where(delta >= 0, b - x, x - a).reshape((n_batch, -1))
    f2 = np.square(space) / np.maximum(delta2, 1e-20)
    ks = np.argsort(f2, axis=-1)
    f2_sorted = f2[rows, ks]
    m = np.flip(np.cumsum(delta2[rows, np.flip(ks, axis=1)], axis=-1), axis=1)
    steps = np.concatenate((f2_sorted[:, :1], f2_sorted[:, 1:] - f2_sorted[:, :-1]), axis=-1)
    y = np.cumsum(m * steps, axis=-1)
    c = y >= eps**2
    ramp = np.arange(c.shape[-1], 0, -1).astype(x.dtype)
    j = np.argmax(c.astype(ramp.dtype) * ramp, axis=-1)
    r = rows[:, 0]
    eta2 = f2_sorted[r, j] - (y[r, j] - eps**2) / m[r, j]
    eta2 = np.where(c[:, -1], eta2, f2_sorted[:, -1])
    return np.sqrt(eta2).reshape((-1,) + (1,) * (x.ndim - 1))


def achieved_norm(
    x: np.ndarray,
    delta: np.ndarray,
    eta: np.ndarray,
    p: float = 2.0,
    a: float = 0.0,
    b: float = 1.0,
) -> np.ndarray:
    """Post-clip Lp size ||clip(x + eta*delta, a, b) - x||_p per vector (float64)."""
    n_batch = x.shape[0]
    x64 = x.reshape(n_batch, -1).astype(np.float64)
    d64 = delta.reshape(n_batch, -1).astype(np.float64)
    e64 = np.asarray(eta, dtype=np.float64).reshape(n_batch, 1)
    diff = np.clip(x64 + e64 * d64, a, b) - x64
    return np.linalg.norm(diff, ord=p, axis=1)


def self_check(seed: int = 0, verbose: bool = True) -> float:
    """Compare the transcription with bisection on a few float64 vectors.

    Reachable rows: eta must match bisection and the achieved size must equal eps.
    Unreachable rows: the achieved size must equal the largest reachable size. The variant
    with the published code's operations must give the transcription's eta.
    Returns the largest relative error seen (eta vs bisection, achieved size vs target,
    the two variants against each other).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from oracle import bisect_eta  # the tests' oracle: one copy for tests and benches

    rng = np.random.default_rng(seed)
    worst = 0.0
    # (batch, n, eps): mild, heavy and unreachable clipping, plus sparse delta
    cases = [(6, 3072, 10.0), (6, 784, 3.6), (4, 50_000, 50.0), (3, 64, 100.0)]
    for n_batch, n, eps in cases:
        x = rng.uniform(0.0, 1.0, size=(n_batch, n))
        d = rng.standard_normal((n_batch, n))
        d[:, ::7] = 0.0
        eta = l2_clipping_aware_rescaling(x, d, eps).reshape(-1)
        published = l2_clipping_aware_rescaling_as_published(x, d, eps).reshape(-1)
        worst = max(worst, float(np.max(np.abs(published - eta) / np.maximum(eta, 1e-300))))
        ref = bisect_eta(x, d, eps, 2.0)
        got = achieved_norm(x, d, eta)
        max_size = achieved_norm(x, d, ref)
        target = np.minimum(eps, max_size)
        # unreachable rows: any maximiser is right (the reference returns the last
        # breakpoint, which is huge when some delta_i == 0), so only the size is compared
        ok = max_size >= eps
        err_eta = float(np.max(np.abs(eta - ref)[ok] / ref[ok], initial=0.0))
        err_norm = float(np.max(np.abs(got - target) / target))
        worst = max(worst, err_eta, err_norm)
        if verbose:
            unreach = int(np.sum(max_size < eps))
            print(
                f"B={n_batch:2d} n={n:6d} eps={eps:6.1f}: rel err eta {err_eta:.1e}, "
                f"achieved norm {err_norm:.1e} ({unreach} unreachable)"
            )
    return worst


if __name__ == "__main__":
    w = self_check()
    print(f"worst relative error {w:.1e}: {'OK' if w < 1e-9 else 'MISMATCH'}")
