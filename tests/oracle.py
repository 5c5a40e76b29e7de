"""Independent reference ("oracle") for clipping-aware rescaling.

Nothing here imports clipresc. Everything works on 2-D ``(B, n)`` data: one vector per
row. ``lower`` / ``upper`` are anything broadcastable to ``(B, n)`` (``+-inf`` allowed).

Two independent solvers are provided:

* :func:`oracle_eta` sorts the breakpoints of each row and walks the piecewise-linear
  function ``g(t) = sum_i min(t * |d_i|^p, s_i^p)`` (``t = eta^p``) in high precision
  (mpmath, 200 bits: the rooms ``s_i = u_i - x_i`` are exact, so the only rounding is the
  final conversion to float64). Large rows fall back to float64 with correctly rounded
  sums (``math.fsum``), which is accurate to a few ulps times the condition number.
* :func:`bisect_eta` bisects on the bit pattern of the float64 ``eta`` (64 steps,
  vectorised over the rows with numpy), evaluating the achieved size directly. It is
  used to cross-check :func:`oracle_eta` in ``test_oracle.py``.

Edge semantics follow docs/CONTRACT.md: ``eps == 0`` or an all-zero ``delta`` row give
``eta = 0``; an ``eps`` above the largest reachable size gives the smallest ``eta`` that
reaches that size (finite ``p``: ``max_i s_i / |d_i|`` over the movable elements; ``p = inf``:
``min s_i / |d_i|`` over the elements with the largest room); ties count as saturated;
infinite bounds never saturate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import mpmath
import numpy as np

PREC_BITS = 200
#: rows whose total element count (over all rows of one call) exceeds this use float64.
MP_MAX_ELEMENTS = 40_000

__all__ = [
    "achieved_size",
    "bisect_eta",
    "bisect_eta_flags",
    "broadcast_bounds",
    "cond_eta",
    "lp_size",
    "max_size",
    "oracle_eta",
    "oracle_eta_bracket",
    "oracle_eta_multi",
    "oracle_max_size",
    "size_rounding_bound",
]


# --------------------------------------------------------------------------- helpers


def broadcast_bounds(x: np.ndarray, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """float64 lower/upper broadcast to ``x.shape`` (``None`` -> -inf / +inf)."""
    lo = -np.inf if lower is None else lower
    hi = np.inf if upper is None else upper
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), x.shape)
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), x.shape)
    return lo, hi


def _prep(x, delta, lower, upper):
    x = np.asarray(x, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    if x.ndim != 2 or d.shape != x.shape:
        raise ValueError(f"oracle works on matching 2-D arrays; got {x.shape} and {d.shape}")
    lo, hi = broadcast_bounds(x, lower, upper)
    if np.any(x < lo) or np.any(x > hi):
        raise ValueError("oracle: x outside its bounds")
    return x, d, lo, hi


def _eps_rows(eps, b: int) -> np.ndarray:
    e = np.asarray(eps, dtype=np.float64)
    if e.size == 1:
        return np.full(b, float(e.reshape(())), dtype=np.float64)
    return np.broadcast_to(e.reshape(-1), (b,)).astype(np.float64)


def _room_f64(x, d, lo, hi) -> np.ndarray:
    """Room to the bound in the direction of d (float64, rounded); 0 where d == 0."""
    with np.errstate(invalid="ignore"):
        s = np.where(d > 0, hi - x, np.where(d < 0, x - lo, 0.0))
    return s


def _norm_rows_f64(a: np.ndarray, p: float) -> np.ndarray:
    """||a_b||_p per row for non-negative float64 a (inf entries allowed)."""
    out = np.empty(a.shape[0], dtype=np.float64)
    for b in range(a.shape[0]):
        row = a[b]
        if math.isinf(p):
            out[b] = float(row.max(initial=0.0))
        elif np.isinf(row).any():
            out[b] = math.inf
        else:
            tot = math.fsum(np.power(row, p).tolist())
            out[b] = tot ** (1.0 / p) if tot > 0 else 0.0
    return out


def lp_size(v, p: float) -> np.ndarray:
    """||v_b||_p per row of a 2-D array, in float64 with correctly rounded sums."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    if v.ndim == 1:
        v = v[None, :]
    return _norm_rows_f64(v, float(p))


def achieved_size(x, delta, eta, p: float, lower, upper) -> np.ndarray:
    """||clip(x + eta*delta, l, u) - x||_p per row, evaluated as
    ``|| sign(d) * min(eta*|d|, s) ||_p`` in float64 (no rounding of the clipped point)."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    eta = np.asarray(eta, dtype=np.float64).reshape(-1, 1)
    s = _room_f64(x, d, lo, hi)
    with np.errstate(invalid="ignore"):
        move = np.minimum(eta * np.abs(d), s)
    move = np.where(d == 0, 0.0, move)
    return _norm_rows_f64(move, float(p))


def max_size(x, delta, p: float, lower, upper) -> np.ndarray:
    """Largest reachable size per row (float64; inf when a movable element has infinite room)."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    s = np.where(d == 0, 0.0, _room_f64(x, d, lo, hi))
    return _norm_rows_f64(s, float(p))


def cond_eta(x, delta, eta, eps, p: float, lower, upper) -> np.ndarray:
    """Relative condition number of eta with respect to T = eps^p (finite p):
    ``(T + C) / (p * (T - C))`` with C the saturated mass at eta (ties saturated). inf on
    the flat top (nothing unsaturated) and for p = inf; 0 where eta == 0."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    b = x.shape[0]
    eps = _eps_rows(eps, b)
    eta = np.asarray(eta, dtype=np.float64).reshape(-1)
    out = np.zeros(b)
    if math.isinf(p):
        out[:] = np.inf
        return out
    s = np.where(d == 0, 0.0, _room_f64(x, d, lo, hi))
    a = np.abs(d)
    for i in range(b):
        if eta[i] == 0 or eps[i] == 0:
            continue
        mov = a[i] > 0
        sat = mov & (s[i] <= eta[i] * a[i])
        T = eps[i] ** p
        C = math.fsum(np.power(s[i][sat], p).tolist())
        out[i] = math.inf if C >= T else (T + C) / (p * (T - C))
    return out


# --------------------------------------------------------------------------- mp solver


class _MPRow:
    """Exact (200-bit) description of one row; answers eta(eps) for many eps."""

    def __init__(self, x, d, lo, hi, p: float):
        mp = mpmath.mp
        self.p = p
        mov = d != 0
        self.movable = bool(mov.any())
        xs, ds, los, his = x[mov], d[mov], lo[mov], hi[mov]
        s_list = []
        a_list = []
        for xi, di, li, ui in zip(xs.tolist(), ds.tolist(), los.tolist(), his.tolist()):
            bound = ui if di > 0 else li
            if math.isinf(bound):
                s_list.append(mp.inf)
            else:
                s_list.append(abs(mp.mpf(bound) - mp.mpf(xi)))  # exact at 200 bits
            a_list.append(abs(mp.mpf(di)))
        self.s = s_list
        self.a = a_list
        if not self.movable:
            return
        if math.isinf(p):
            self.smax = max(s_list)
            return
        P = mp.mpf(p)
        self.P = P
        keys = [si / ai for si, ai in zip(s_list, a_list)]
        order = sorted(range(len(keys)), key=lambda k: keys[k])
        fin = [k for k in order if keys[k] != mp.inf]
        inf_ = [k for k in order if keys[k] == mp.inf]
        self.max_key = keys[fin[-1]] if fin else mp.mpf(0)
        self.has_inf = bool(inf_)
        w = {k: a_list[k] ** P for k in order}
        c = {k: s_list[k] ** P for k in fin}
        m = len(fin)
        # C[j]: saturated mass with the first j (sorted) finite elements saturated
        C = [mp.mpf(0)] * (m + 1)
        for j in range(m):
            C[j + 1] = C[j] + c[fin[j]]
        W_inf = mp.fsum(w[k] for k in inf_) if inf_ else mp.mpf(0)
        W = [mp.mpf(0)] * (m + 1)
        W[m] = W_inf
        for j in range(m - 1, -1, -1):
            W[j] = W[j + 1] + w[fin[j]]
        # G[j] = g(tau_j): g at the j-th breakpoint (nondecreasing in j)
        G = []
        for j in range(m):
            k = fin[j]
            tau = c[k] / w[k] if c[k] != 0 else mp.mpf(0)
            G.append(C[j] + tau * W[j])
        self.C, self.W, self.G, self.m = C, W, G, m

    def eta(self, eps: float):
        mp = mpmath.mp
        if eps == 0 or not self.movable:
            return mp.mpf(0)
        E = mp.mpf(eps)
        if math.isinf(self.p):
            if E > self.smax:  # unreachable: smallest eta reaching the largest room
                return min(si / ai for si, ai in zip(self.s, self.a) if si == self.smax)
            return min(E / ai for si, ai in zip(self.s, self.a) if si >= E)
        T = E**self.P
        j = bisect.bisect_left(self.G, T)  # first breakpoint with g(tau_j) >= T
        if j == self.m and not self.has_inf:
            return self.max_key  # unreachable (or exactly the maximum): saturate all
        t = (T - self.C[j]) / self.W[j]
        if t <= 0:
            return mp.mpf(0)
        return t ** (1 / self.P)

    def max_size(self):
        mp = mpmath.mp
        if not self.movable:
            return mp.mpf(0)
        if math.isinf(self.p):
            return self.smax
        if self.has_inf:
            return mp.inf
        return self.C[self.m] ** (1 / self.P)


# --------------------------------------------------------------------------- f64 solver


class _F64Row:
    """float64 version of _MPRow for long rows: segment located with cumulative sums,
    final formula evaluated with math.fsum and checked/adjusted against the breakpoints."""

    def __init__(self, x, d, lo, hi, p: float):
        self.p = p
        mov = d != 0
        self.movable = bool(mov.any())
        if not self.movable:
            return
        s = _room_f64(x[mov], d[mov], lo[mov], hi[mov])
        a = np.abs(d[mov])
        self.s, self.a = s, a
        if math.isinf(p):
            self.smax = float(s.max())
            return
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            key = s / a
        order = np.argsort(key, kind="stable")
        key, s, a = key[order], s[order], a[order]
        fin = np.isfinite(key)
        m = int(fin.sum())
        self.m = m
        self.has_inf = m < key.size
        self.key = key
        self.max_key = float(key[m - 1]) if m else 0.0
        w = np.power(a, p)
        c = np.power(s[:m], p)
        self.w, self.c = w, c
        C = np.concatenate([[0.0], np.cumsum(c)])
        W = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])
        with np.errstate(invalid="ignore", over="ignore"):
            tau = np.power(key[:m], p)
        self.tau = tau
        self.G = C[:m] + tau * W[:m]

    def _t(self, T, j):
        C = math.fsum(self.c[:j].tolist())
        W = math.fsum(self.w[j:].tolist())
        return (T - C) / W

    def eta(self, eps: float) -> float:
        if eps == 0 or not self.movable:
            return 0.0
        p = self.p
        if math.isinf(p):
            if eps > self.smax:
                sel = self.s == self.smax
                return float(np.min(self.s[sel] / self.a[sel]))
            sel = self.s >= eps
            return float(np.min(eps / self.a[sel]))
        T = eps**p
        j = int(np.searchsorted(self.G, T, side="left"))
        if j == self.m and not self.has_inf:
            # check with accurate sums that T really exceeds the total mass
            if T >= math.fsum(self.c.tolist()):
                return self.max_key
            j = self.m - 1
        # adjust j so that tau_{j-1} <= t <= tau_j (accurate sums)
        for _ in range(self.m + 2):
            if j == self.m and not self.has_inf:
                return self.max_key
            t = self._t(T, j)
            if j < self.m and t > self.tau[j]:
                j += 1
            elif j > 0 and t < self.tau[j - 1]:
                j -= 1
            else:
                break
        if j == self.m and not self.has_inf:
            return self.max_key
        t = self._t(T, j)
        return max(t, 0.0) ** (1.0 / p)


# --------------------------------------------------------------------------- public


def _rows(x, d, lo, hi, p, precise):
    n_total = x.size
    use_mp = precise if precise is not None else n_total <= MP_MAX_ELEMENTS
    cls = _MPRow if use_mp else _F64Row
    return [cls(x[b], d[b], lo[b], hi[b], p) for b in range(x.shape[0])], use_mp


def oracle_eta(x, delta, eps, p: float, lower=0.0, upper=1.0, *, precise=None) -> np.ndarray:
    """Reference eta per row (float64, shape (B,)). ``eps``: scalar or one per row.
    ``precise``: force (True) or forbid (False) the mpmath path; default by size."""
    return oracle_eta_multi(x, delta, [eps], p, lower, upper, precise=precise)[0]


def oracle_eta_multi(
    x,
    delta,
    eps_list: Sequence,
    p: float,
    lower=0.0,
    upper=1.0,
    *,
    precise=None,
    with_max_size: bool = False,
):
    """oracle_eta for several eps (each a scalar or one per row), sharing the set-up.
    With ``with_max_size`` also returns the largest reachable size per row (last item)."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    p = float(p)
    b = x.shape[0]
    with mpmath.workprec(PREC_BITS):
        rows, use_mp = _rows(x, d, lo, hi, p, precise)
        outs = []
        for eps in eps_list:
            e = _eps_rows(eps, b)
            outs.append(np.array([float(rows[i].eta(float(e[i]))) for i in range(b)]))
        if with_max_size:
            if use_mp:
                outs.append(np.array([float(r.max_size()) for r in rows]))
            else:
                outs.append(max_size(x, d, p, lo, hi))
    return outs


def oracle_max_size(x, delta, p: float, lower=0.0, upper=1.0) -> np.ndarray:
    """Largest reachable size per row, exact (mpmath) then rounded to float64."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    with mpmath.workprec(PREC_BITS):
        rows, _ = _rows(x, d, lo, hi, float(p), True)
        return np.array([float(r.max_size()) for r in rows])


def oracle_eta_bracket(
    x, delta, eps, p: float, lower=0.0, upper=1.0, *, rel_T: float, precise=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lo, mid, hi, max_size) per row: the oracle eta for eps, and for eps perturbed so
    that T = eps^p moves by a relative ``rel_T`` down / up (for p = inf: eps moves by
    rel_T), and the largest reachable size.

    An implementation whose every term of g(t) and whose T carry relative errors below
    rel_T returns an eta in [lo, hi] (up to its final rounding): g is nondecreasing, so the
    bracket is rigorous whatever the conditioning (flat parts, ties, near-saturation)."""
    b = np.asarray(x).shape[0]
    e = _eps_rows(eps, b)
    p = float(p)
    if math.isinf(p):
        f_lo, f_hi = 1.0 - rel_T, 1.0 + rel_T
    else:
        f_lo, f_hi = (1.0 - rel_T) ** (1.0 / p), (1.0 + rel_T) ** (1.0 / p)
    mid, lo, hi, ms = oracle_eta_multi(
        x,
        delta,
        [e, e * f_lo, e * f_hi],
        p,
        lower,
        upper,
        precise=precise,
        with_max_size=True,
    )
    return lo, mid, hi, ms


def bisect_eta(x, delta, eps, p: float, lower=0.0, upper=1.0) -> np.ndarray:
    """Smallest float64 eta whose float64-evaluated achieved size is >= eps, found by
    bisection on the bit pattern of eta (vectorised over rows). Saturating semantics for
    unreachable eps (the smallest eta at which every movable element is saturated)."""
    x, d, lo, hi = _prep(x, delta, lower, upper)
    p = float(p)
    b = x.shape[0]
    eps = _eps_rows(eps, b)
    a = np.abs(d)
    s = np.where(d == 0, 0.0, _room_f64(x, d, lo, hi))
    mov = a > 0

    def size(eta):
        with np.errstate(invalid="ignore", over="ignore"):
            m = np.where(mov, np.minimum(eta[:, None] * a, s), 0.0)
        if math.isinf(p):
            return m.max(axis=1, initial=0.0)
        return np.power(np.sum(np.power(m, p), axis=1), 1.0 / p)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        keys = np.where(mov, s / np.where(mov, a, 1.0), 0.0)
    fin = np.where(np.isfinite(keys), keys, 0.0)
    kmax = fin.max(axis=1, initial=0.0)
    smax = size(np.full(b, np.inf))
    # an upper bound on eta: saturate all finite keys, plus what infinite rooms need
    inf_a = np.where(np.isinf(keys), a, 0.0)
    if math.isinf(p):
        w_inf = inf_a.max(axis=1, initial=0.0)
    else:
        w_inf = np.power(np.sum(np.power(inf_a, p), axis=1), 1.0 / p)
    with np.errstate(divide="ignore"):
        need = np.where(w_inf > 0, eps / np.where(w_inf > 0, w_inf, 1.0), 0.0)
    top = np.maximum(kmax, need) * 2.0 + 1e-300
    # unreachable rows: target the largest size with the exact saturating eta
    if math.isinf(p):
        unreach = eps > smax
    else:
        unreach = (eps >= smax) & np.isfinite(smax)
    unreach &= mov.any(axis=1)
    target = np.where(unreach, smax, eps)
    lo_b = np.zeros(b, dtype=np.int64)
    hi_b = top.view(np.int64).copy()
    for _ in range(70):
        mid_b = lo_b + (hi_b - lo_b) // 2
        ok = size(mid_b.view(np.float64)) >= target
        hi_b = np.where(ok, mid_b, hi_b)
        lo_b = np.where(ok, lo_b, mid_b)
    out = hi_b.view(np.float64).copy()
    out[(eps == 0) | ~mov.any(axis=1)] = 0.0
    if not math.isinf(p):
        out[unreach] = kmax[unreach]
    else:
        for i in np.flatnonzero(unreach):
            sel = mov[i] & (s[i] == smax[i])
            out[i] = np.min(s[i][sel] / a[i][sel])
    return out


def bisect_eta_flags(x, delta, eps, p: float, lower=0.0, upper=1.0):
    """:func:`bisect_eta` and the rows whose ``eps`` exceeds the largest reachable size
    (``(eta, unreachable)``); a row with nothing movable (all-zero ``delta``) is never
    flagged, a row whose movable elements have no room is flagged for any ``eps > 0``."""
    eta = bisect_eta(x, delta, eps, p, lower, upper)
    d = np.asarray(delta, dtype=np.float64)
    e = _eps_rows(eps, d.shape[0])
    unreachable = (e > max_size(x, delta, p, lower, upper)) & (d != 0).any(axis=1)
    return eta, unreachable


def size_rounding_bound(y, x, delta, p: float, dtype, lower, upper, target) -> np.ndarray:
    """Absolute bound (per row, 2-D inputs) on |size(y - x) - size*| caused by rounding each
    moved y_i to ``dtype`` (2 ulps, covering a fused or unfused x + eta*delta), where
    size* ~ ``target`` is the size in exact arithmetic. Elements with no room (or
    delta == 0) must not move at all, so they only carry the rounding of the float64
    difference y - x. (A y_i may round onto a bound it has not reached: do not assume
    elements on a bound are exact.)"""
    y = np.asarray(y, dtype=np.float64)
    x, d, lo, hi = _prep(x, delta, lower, upper)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    s = _room_f64(x, d, lo, hi)
    v = np.abs(y - x)
    fin = np.finfo(dtype)
    ulp = np.maximum(np.abs(y), np.abs(x)) * float(fin.eps) + float(fin.smallest_subnormal)
    err = np.where((d == 0) | (s == 0), 0.0, 2.0 * ulp)
    err = err + v * 2.0**-52
    if math.isinf(p):
        return err.max(axis=1, initial=0.0)
    up = np.power(v + err, p) - np.power(v, p)
    down = np.power(v, p) - np.power(np.maximum(v - err, 0.0), p)
    dsum = np.maximum(up, down).sum(axis=1)
    T = np.power(target, p)
    ip = 1.0 / p
    return np.maximum(
        np.power(T + dsum, ip) - target, target - np.power(np.maximum(T - dsum, 0.0), ip)
    )
