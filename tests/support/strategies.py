"""Hypothesis strategies for clipresc test cases.

A :class:`Case` holds the arguments of ``clipresc.scale`` / ``clipresc.perturb`` and knows
how to turn itself into the 2-D float64 ``(B, n)`` form the oracle works on. The random
values come from a numpy generator seeded by hypothesis; the structure (shape, dtype, p,
bounds kind, saturation, eps regime...) is drawn by hypothesis so it shrinks well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from . import oracle

P_SPECIAL = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, math.inf)
FLOAT_DTYPES = (np.float32, np.float64)

BOUNDS_KINDS = (
    "unit",  # (0, 1)
    "wide",  # (-1, 2)
    "lower_only",  # (0, inf) or (0, None)
    "upper_only",  # (-inf, 0) or (None, 0)
    "none",  # bounds=None
    "none_pair",  # (None, None)
    "elementwise",  # arrays of x's shape
    "channel",  # arrays of shape (C, 1, ..., 1) (or (n,) for 1-D)
    "mixed",  # scalar lower, array upper
)
EPS_MODES = ("frac", "tiny", "over", "zero", "max", "mixed")
EPS_FORMATS = ("float", "np_scalar", "0d", "per_vector", "eta_shape")


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """The vector axes (sorted, non-negative) for a valid ``axis`` argument."""
    if axis is None:
        return (0,) if ndim == 1 else tuple(range(1, ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return tuple(sorted(a % ndim for a in axis))


def to_2d(a: np.ndarray, vec_axes: tuple[int, ...]) -> np.ndarray:
    """Move the vector axes to the end (in increasing order) and reshape to (B, n)."""
    nd = a.ndim
    batch_axes = [i for i in range(nd) if i not in vec_axes]
    perm = batch_axes + list(vec_axes)
    t = np.transpose(a, perm)
    n = int(np.prod([a.shape[i] for i in vec_axes], dtype=np.int64))
    return t.reshape(-1, n)


def eta_shape(shape: tuple[int, ...], vec_axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in vec_axes else s for i, s in enumerate(shape))


def compute_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    return np.dtype(np.float32) if dt == np.float16 else dt


@dataclass
class Case:
    x: np.ndarray
    delta: np.ndarray
    eps: Any
    p: float
    bounds: Any
    axis: Any = None
    info: dict = field(default_factory=dict)

    # -------------------------------------------------------------- call helpers
    def kwargs(self) -> dict:
        kw: dict = {"p": self.p, "bounds": self.bounds}
        if self.axis is not None:
            kw["axis"] = self.axis
        return kw

    def args(self) -> tuple:
        return (self.x, self.delta, self.eps)

    # -------------------------------------------------------------- geometry
    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def vec_axes(self) -> tuple[int, ...]:
        return normalize_axes(self.axis, self.x.ndim)

    @property
    def eta_shape(self) -> tuple[int, ...]:
        return eta_shape(self.x.shape, self.vec_axes)

    @property
    def n_vectors(self) -> int:
        return int(np.prod(self.eta_shape, dtype=np.int64))

    def lower_upper(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 bounds broadcast to x.shape (as the computation sees them)."""
        if self.bounds is None:
            lo, hi = None, None
        else:
            lo, hi = self.bounds
        cdt = compute_dtype(self.dtype)

        def conv(b, default):
            if b is None:
                return np.full(self.x.shape, default)
            return np.broadcast_to(np.asarray(b).astype(cdt).astype(np.float64), self.x.shape)

        return conv(lo, -np.inf), conv(hi, np.inf)

    def eps_rows(self) -> np.ndarray:
        """eps as one float64 value per vector (B,): a scalar is repeated, shape (B,) is
        taken as is, anything else is broadcast to eta.shape (these agree when both apply)."""
        e = np.asarray(self.eps, dtype=np.float64)
        if e.ndim == 0:
            return np.full(self.n_vectors, float(e))
        if e.shape == (self.n_vectors,):
            return e.copy()
        eb = np.broadcast_to(e, self.eta_shape)
        return to_2d(eb, self.vec_axes).reshape(-1).copy()

    def as_2d(self):
        """(x2d, d2d, eps_rows, lo2d, hi2d) in float64, with delta cast to x's dtype."""
        va = self.vec_axes
        x2 = to_2d(self.x.astype(np.float64), va)
        d2 = to_2d(self.delta.astype(self.dtype).astype(np.float64), va)
        lo, hi = self.lower_upper()
        return x2, d2, self.eps_rows(), to_2d(lo, va), to_2d(hi, va)

    def reshape_rows(self, rows: np.ndarray) -> np.ndarray:
        """Inverse of to_2d for per-vector values: (B,) -> eta_shape."""
        batch_axes = [i for i in range(self.x.ndim) if i not in self.vec_axes]
        bshape = [self.x.shape[i] for i in batch_axes]
        r = np.asarray(rows).reshape([*bshape] + [1] * len(self.vec_axes))
        perm = batch_axes + list(self.vec_axes)
        inv = np.argsort(perm)
        return np.transpose(r, inv)

    def __repr__(self) -> str:  # compact, reproducible description for failures
        return (
            f"Case(dtype={self.dtype}, shape={self.x.shape}, p={self.p!r}, axis={self.axis!r}, "
            f"bounds={_brepr(self.bounds)}, eps={_brepr(self.eps)}, info={self.info})"
        )


def _brepr(b) -> str:
    if isinstance(b, np.ndarray):
        return f"array(shape={b.shape}, dtype={b.dtype})"
    if isinstance(b, tuple):
        return "(" + ", ".join(_brepr(v) for v in b) + ")"
    return repr(b)


# ------------------------------------------------------------------ strategies


def p_values(special=P_SPECIAL, lo: float = 0.3, hi: float = 5.0) -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(special),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


@st.composite
def shapes(draw, min_ndim: int = 1, max_ndim: int = 4, max_vec: int = 160):
    ndim = draw(st.integers(min_ndim, max_ndim))
    if ndim == 1:
        return (draw(st.integers(1, max_vec)),)
    b = draw(st.integers(1, 5))
    rest = []
    budget = max_vec
    for _ in range(ndim - 1):
        hi = max(1, min(12 if ndim == 2 else 6, budget))
        if ndim == 2:
            hi = max(1, min(max_vec, budget))
        k = draw(st.integers(1, hi))
        rest.append(k)
        budget = max(1, budget // k)
    return (b, *rest)


def _make_bounds(kind: str, shape, dtype, rng, draw):
    """Returns the ``bounds`` argument."""
    nd = len(shape)
    if kind == "unit":
        return (0.0, 1.0)
    if kind == "wide":
        return (-1.0, 2.0)
    if kind == "lower_only":
        return (0.0, draw(st.sampled_from([None, math.inf])))
    if kind == "upper_only":
        return (draw(st.sampled_from([None, -math.inf])), 0.0)
    if kind == "none":
        return None
    if kind == "none_pair":
        return (None, None)
    bdt = np.dtype(dtype)
    if kind == "elementwise":
        bshape = shape
    elif kind in ("channel", "mixed"):
        bshape = (shape[0],) if nd == 1 else (shape[1],) + (1,) * (nd - 2)
    else:  # pragma: no cover
        raise AssertionError(kind)
    lo = rng.uniform(-1.0, 0.5, size=bshape).astype(bdt)
    width = rng.uniform(0.0, 1.5, size=bshape)
    width[rng.random(bshape) < 0.1] = 0.0  # degenerate intervals lower == upper
    hi = (lo.astype(np.float64) + width).astype(bdt)
    hi = np.maximum(hi, lo)
    if kind == "mixed":
        return (-1.0, np.maximum(hi, np.asarray(-1.0, bdt)))
    return (lo, hi)


def _make_x(shape, dtype, lo, hi, rng, sat_frac: float):
    u = rng.random(shape)
    fl, fh = np.isfinite(lo), np.isfinite(hi)
    width = np.where(fl & fh, hi - lo, 0.0)
    x = np.where(
        fl & fh,
        lo + u * width,
        np.where(
            fl, lo + rng.exponential(1.0, shape), np.where(fh, hi - rng.exponential(1.0, shape), 0)
        ),
    )
    x = np.where(~fl & ~fh, rng.normal(size=shape), x)
    x = x.astype(dtype)
    cd = compute_dtype(dtype)
    lo_c, hi_c = lo.astype(cd), hi.astype(cd)
    x = np.clip(x.astype(cd), lo_c, hi_c).astype(dtype)
    # clipping in compute dtype may not survive the cast back (float16): enforce
    x = np.where(x.astype(np.float64) < lo, lo, x).astype(dtype)
    x = np.where(x.astype(np.float64) > hi, hi, x).astype(dtype)
    if sat_frac > 0:
        m = rng.random(shape) < sat_frac
        to_hi = rng.random(shape) < 0.5
        x = np.where(m & to_hi & fh, hi.astype(dtype), x)
        x = np.where(m & ~to_hi & fl, lo.astype(dtype), x)
    return np.ascontiguousarray(x.astype(dtype))


def _make_delta(shape, rng, mode: str, zero_frac: float):
    d = rng.normal(size=shape)
    if mode == "magnitudes":
        d = d * 10.0 ** rng.uniform(-3, 3, size=shape)
    elif mode == "positive":
        d = np.abs(d)
    elif mode == "negative":
        d = -np.abs(d)
    elif mode == "tiny":
        d = d * 1e-3
    elif mode == "huge":
        d = d * 1e3
    if zero_frac > 0:
        d[rng.random(shape) < zero_frac] = 0.0
    return d


@st.composite
def cases(
    draw,
    dtypes=FLOAT_DTYPES,
    p=None,
    bounds_kinds=BOUNDS_KINDS,
    eps_modes=EPS_MODES,
    eps_formats=EPS_FORMATS,
    min_ndim: int = 1,
    max_ndim: int = 4,
    max_vec: int = 160,
    with_axis: bool = False,
):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(shapes(min_ndim=min_ndim, max_ndim=max_ndim, max_vec=max_vec))
    pv = draw(p_values()) if p is None else draw(p)
    kind = draw(st.sampled_from(bounds_kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sat_frac = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 0.9]))
    dmode = draw(st.sampled_from(["normal", "magnitudes", "positive", "negative", "tiny", "huge"]))
    if dtype == np.float16 and dmode in ("tiny", "huge", "magnitudes"):
        dmode = "normal"
    zero_frac = draw(st.sampled_from([0.0, 0.0, 0.2, 0.8]))
    zero_vector = draw(st.booleans()) and draw(st.booleans())
    bounds = _make_bounds(kind, shape, dtype, rng, draw)

    axis = None
    if with_axis and len(shape) >= 2:
        axis = draw(axis_args(len(shape)))

    case = Case(
        x=np.zeros(shape, dtype), delta=np.zeros(shape), eps=0.0, p=pv, bounds=bounds, axis=axis
    )
    lo, hi = case.lower_upper()
    x = _make_x(shape, dtype, lo, hi, rng, sat_frac)
    d = _make_delta(shape, rng, dmode, zero_frac)
    d_dtype = dtype
    if dtype == np.float32 and draw(st.booleans()) and draw(st.booleans()):
        d_dtype = np.dtype(np.float64)  # exercise the cast of delta to x's dtype
    if dtype == np.float16 and draw(st.booleans()):
        d_dtype = np.dtype(np.float32)
    d = d.astype(d_dtype)
    case.x, case.delta = x, d
    if zero_vector:
        # zero one whole vector
        d2 = to_2d(np.arange(d.size).reshape(shape), case.vec_axes)
        k = int(rng.integers(d2.shape[0]))
        d.reshape(-1)[d2[k]] = 0.0

    # ------------------------------------------------------------- eps
    x2, d2, _, lo2, hi2 = case.as_2d()
    B = x2.shape[0]
    M = oracle.max_size(x2, d2, pv, lo2, hi2)
    N = oracle.lp_size(d2, pv)
    mode = draw(st.sampled_from(eps_modes))
    fmt = draw(st.sampled_from(eps_formats))
    modes = (
        [draw(st.sampled_from(eps_modes[:-1])) for _ in range(B)] if mode == "mixed" else [mode] * B
    )
    vals = np.empty(B)
    for i in range(B):
        vals[i] = _eps_value(modes[i], M[i], N[i], rng)
    if fmt == "float":
        eps = float(vals[0])
    elif fmt == "np_scalar":
        eps = np.float64(vals[0])
    elif fmt == "0d":
        eps = np.asarray(vals[0])
    elif fmt == "per_vector":
        eps = vals.copy()
    else:
        eps = case.reshape_rows(vals).copy()
    case.eps = eps
    case.info = {"seed": seed, "bounds": kind, "sat": sat_frac, "dmode": dmode, "eps": mode}
    return case


def _eps_value(mode: str, M: float, N: float, rng) -> float:
    finite = math.isfinite(M)
    if mode == "zero":
        return 0.0
    if mode == "max" and finite:
        return float(M)
    if mode == "over" and finite:
        return float(M * rng.uniform(1.05, 3.0)) if M > 0 else float(rng.uniform(0.1, 2.0))
    base = M if finite and M > 0 else (N if N > 0 else 1.0)
    if mode == "tiny":
        return float(base * 10.0 ** rng.uniform(-6, -3))
    # frac (and fall-backs)
    if finite:
        return float(base * rng.uniform(0.01, 0.99))
    return float(base * 10.0 ** rng.uniform(-2, 1))


@st.composite
def axis_args(draw, ndim: int):
    """A valid axis argument for an array with ``ndim`` >= 2 dimensions, in many spellings."""
    k = draw(st.integers(1, ndim))
    axes = draw(st.permutations(range(ndim)))[:k]
    spelled = [a - ndim if draw(st.booleans()) else a for a in axes]
    if k == 1 and draw(st.booleans()):
        return spelled[0]
    if k == ndim and draw(st.booleans()):
        return tuple(spelled)
    return tuple(spelled)
