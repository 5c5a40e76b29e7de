"""Independent references for the projection onto ``{||y - x||_p <= eps} ∩ [lower, upper]``.

Nothing here imports clipresc. :func:`bisect_project` bisects on the ball's multiplier
``lam`` with the size evaluated in mpmath (120 bits); :func:`dykstra_project` runs Dykstra's
alternating projections between the ball alone and the box alone (a generic method for
the projection onto an intersection of convex sets, for tiny cases).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

mpmath.mp.prec = 120


def _y_of_lam(x, z, lo, hi, lam, p):
    out = []
    for xi, zi, li, hi_ in zip(x, z, lo, hi):
        d = mpmath.mpf(zi) - mpmath.mpf(xi)
        if p == 1:
            v = mpmath.mpf(xi) + mpmath.sign(d) * max(abs(d) - lam, 0)
        else:
            v = mpmath.mpf(xi) + d / (1 + lam)
        out.append(min(max(v, mpmath.mpf(li)), mpmath.mpf(hi_)))
    return out


def _size(y, x, p):
    diffs = [abs(a - mpmath.mpf(b)) for a, b in zip(y, x)]
    if p == 1:
        return mpmath.fsum(diffs)
    return mpmath.sqrt(mpmath.fsum(v * v for v in diffs))


def bisect_project(x, z, lo, hi, eps, p):
    """One row: the projection, as float64 values of a 120-bit bisection on ``lam``."""
    x, z, lo, hi = (np.asarray(a, dtype=np.float64) for a in (x, z, lo, hi))
    if p == math.inf:
        return np.clip(z, np.maximum(lo, x - eps), np.minimum(hi, x + eps))
    e = mpmath.mpf(float(eps))
    if _size(_y_of_lam(x, z, lo, hi, mpmath.mpf(0), p), x, p) <= e:
        return np.clip(z, lo, hi)
    a, b = mpmath.mpf(0), mpmath.mpf(1)
    while _size(_y_of_lam(x, z, lo, hi, b, p), x, p) > e:
        b *= 2
    for _ in range(130):
        m = (a + b) / 2
        if _size(_y_of_lam(x, z, lo, hi, m, p), x, p) > e:
            a = m
        else:
            b = m
    return np.array([float(v) for v in _y_of_lam(x, z, lo, hi, (a + b) / 2, p)])


def _ball(v, x, eps, p):
    d = v - x
    if p == math.inf:
        return x + np.clip(d, -eps, eps)
    if p == 2:
        r = np.linalg.norm(d)
        return x + (d * (eps / r) if r > eps else d)
    if np.abs(d).sum() <= eps:
        return v.copy()
    u = np.sort(np.abs(d))[::-1]
    cs = np.cumsum(u)
    k = np.arange(1, len(u) + 1)
    ok = u > (cs - eps) / k
    theta = (cs[ok][-1] - eps) / k[ok][-1]
    return x + np.sign(d) * np.maximum(np.abs(d) - theta, 0)


def dykstra_project(x, z, lo, hi, eps, p, steps=20000):
    """One row, tiny ``n``: Dykstra's algorithm between the ball and the box."""
    x, z, lo, hi = (np.asarray(a, dtype=np.float64) for a in (x, z, lo, hi))
    y = z.copy()
    pb = np.zeros_like(z)
    qb = np.zeros_like(z)
    for _ in range(steps):
        a = y + pb
        yb = _ball(a, x, eps, p)
        pb = a - yb
        c = yb + qb
        y = np.clip(c, lo, hi)
        qb = c - y
    return y
