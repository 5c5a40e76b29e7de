"""clipresc.attacks: L2 and L1 PGD with the exact projection reach at least the loss of
project-then-clip at the same budget, on a logistic-regression model trained in the test."""

from __future__ import annotations

import numpy as np
import pytest

from clipresc.attacks import l1_direction, pgd_l1_step, pgd_l2_step


def _model(rng: np.random.Generator, d: int = 64, n: int = 400):
    """Two Gaussian blobs in [0, 1]^d and a logistic regression fitted to them."""
    y = rng.integers(0, 2, n)
    centre = np.where(y[:, None] == 1, 0.6, 0.4) + 0.05 * rng.standard_normal((1, d))
    x = np.clip(centre + 0.4 * rng.standard_normal((n, d)), 0, 1)  # a fifth on the box
    w, b = np.zeros(d), 0.0
    for _ in range(300):  # plain gradient descent on the mean cross-entropy
        s = 1 / (1 + np.exp(-(x @ w + b)))
        w -= 1.0 * x.T @ (s - y) / n
        b -= 1.0 * float(np.mean(s - y))
    acc = float(np.mean(((x @ w + b) > 0) == y))
    return x, y, w, b, acc


def _loss(x, y, w, b):
    m = x @ w + b
    return np.logaddexp(0, m) - y * m  # per-sample cross-entropy


def _grad(x, y, w, b):
    s = 1 / (1 + np.exp(-(x @ w + b)))
    return (s - y)[:, None] * w[None, :]


def _l1_ball(x, z, eps):
    """Projection onto the L1 ball alone (sorting, Duchi et al. 2008), per row."""
    d = z - x
    out = d.copy()
    for r in range(len(d)):
        if np.abs(d[r]).sum() > eps:
            u = np.sort(np.abs(d[r]))[::-1]
            cs = np.cumsum(u)
            k = np.arange(1, len(u) + 1)
            ok = u > (cs - eps) / k
            theta = (cs[ok][-1] - eps) / k[ok][-1]
            out[r] = np.sign(d[r]) * np.maximum(np.abs(d[r]) - theta, 0)
    return x + out


def _attack(x, y, w, b, eps, step, steps, kind, exact):
    xa = x.copy()
    for _ in range(steps):
        g = _grad(xa, y, w, b)
        if exact:
            xa = (pgd_l2_step if kind == "l2" else pgd_l1_step)(x, xa, g, eps, step)
            continue
        if kind == "l2":  # project onto the ball, then clip
            nrm = np.linalg.norm(g, axis=1, keepdims=True)
            z = xa + step * g / np.where(nrm > 0, nrm, 1)
            d = z - x
            dn = np.linalg.norm(d, axis=1, keepdims=True)
            xa = np.clip(x + d * np.minimum(1, eps / np.where(dn > 0, dn, 1)), 0, 1)
        else:  # same L1 direction as pgd_l1_step, L1-ball projection, then clip
            z = xa + step * l1_direction(xa, g)
            xa = np.clip(_l1_ball(x, z, eps), 0, 1)
    return xa


@pytest.mark.parametrize(("kind", "eps", "step"), [("l2", 2.0, 0.5), ("l1", 8.0, 2.0)])
def test_exact_projection_reaches_at_least_project_then_clip(kind, eps, step):
    rng = np.random.default_rng(0)
    x, y, w, b, acc = _model(rng)
    assert acc > 0.9  # the model is trained
    clean = _loss(x, y, w, b).mean()
    exact = _attack(x, y, w, b, eps, step, 20, kind, exact=True)
    naive = _attack(x, y, w, b, eps, step, 20, kind, exact=False)
    p = 2 if kind == "l2" else 1
    for xa in (exact, naive):  # both feasible
        assert np.all(np.linalg.norm(xa - x, ord=p, axis=1) <= eps * (1 + 1e-9))
        assert np.all((xa >= 0) & (xa <= 1))
    le, ln = _loss(exact, y, w, b).mean(), _loss(naive, y, w, b).mean()
    print(f"{kind}: clean loss {clean:.4f}, project-then-clip {ln:.4f}, exact {le:.4f}")
    assert le > clean
    assert le >= ln - 1e-9
