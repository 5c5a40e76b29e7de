"""Fuzzing the public API: whatever the arguments, a documented exception or the contract.

Every example draws a call of ``scale`` / ``perturb`` / ``noise`` / ``scale_vjp`` /
``perturb_vjp`` with random dtypes, shapes, axes, bit patterns (subnormals, ``-0.0``, values
on the bounds, NaN and infinities where a fault is injected), bounds (scalars, ``None``,
per-element and per-channel arrays, one-sided), ``eps`` and ``p``, and at most one fault
from the contract's error table. Faulty calls must raise the documented exception type with
the documented message; valid ones must satisfy the contract (checked against an
independent float64 computation of the clipped size), on every installed array library
whose inputs the public functions accept (NumPy, array-api-strict, PyTorch, JAX, Dask).

``make test`` runs the hypothesis ``ci`` profile; ``make fuzz`` runs the ``fuzz`` profile
(``HYPOTHESIS_PROFILE=fuzz``: thousands of examples per test).
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipresc
from support.strategies import normalize_axes, to_2d

# ------------------------------------------------------------------------ the contract

#: Fragments of the documented messages (docs/CONTRACT.md), per exception type.
VALUE_ERRORS = [
    r"x has \d+ non-finite values?; first at index \(",
    r"delta has \d+ non-finite values?; first at index \(",
    r"x has \d+ values? outside bounds; first at index \(",
    r"bounds: lower > upper at \d+ positions?; first at index",
    r"bounds: (lower|upper) has \d+ NaN values?",
    r"bounds: (lower|upper) of shape .* does not broadcast to x's shape",
    r"bounds must be a \(lower, upper\) pair or None",
    r"eps has \d+ negative or NaN values?; first at index",
    r"eps has \d+ infinite values?; first at index",
    r"eps must be a scalar or hold one value per vector \(\d+ vectors?\); got shape",
    r"p must be a positive number or inf; got",
    r"delta must have the same shape as x; got",
    r"axis -?\d+ is out of range for x with \d+ dimensions?",
    r"axis contains duplicates",
    r"axis must name at least one axis",
    r"x must have at least one dimension",
    r"unreachable must be 'saturate' or 'raise'; got",
    r"eps exceeds the largest reachable size for \d+ of \d+ vectors?; first: vector [(\d]",
    r"distribution must be",
]
TYPE_ERRORS = [
    r"p must be a real number; got",
    r"(x|delta) must be a real floating-point array; got dtype",
    r"axis must be an int or a tuple of ints",
]

# the fault injected into a call -> (exception type, message pattern)
FAULTS: dict[str, tuple[type[Exception], str]] = {
    "x_nan": (ValueError, r"x has \d+ non-finite values?; first at index \("),
    "x_inf": (ValueError, r"x has \d+ non-finite values?; first at index \("),
    "delta_nan": (ValueError, r"delta has \d+ non-finite values?; first at index \("),
    "delta_inf": (ValueError, r"delta has \d+ non-finite values?; first at index \("),
    "x_outside": (ValueError, r"x has \d+ values? outside bounds; first at index \("),
    "bounds_crossed": (ValueError, r"bounds: lower > upper at \d+ positions?"),
    "bound_nan": (ValueError, r"bounds: (lower|upper) has \d+ NaN values?"),
    "bound_shape": (ValueError, r"bounds: (lower|upper) of shape .* does not broadcast"),
    "bounds_not_pair": (ValueError, r"bounds must be a \(lower, upper\) pair or None"),
    "eps_negative": (ValueError, r"eps has \d+ negative or NaN values?"),
    "eps_negative_tiny": (ValueError, r"eps has \d+ negative or NaN values?"),
    "eps_nan": (ValueError, r"eps has \d+ negative or NaN values?"),
    "eps_inf": (ValueError, r"eps has \d+ infinite values?"),
    "eps_shape": (ValueError, r"eps must be a scalar or hold one value per vector"),
    "p_value": (ValueError, r"p must be a positive number or inf; got"),
    "p_type": (TypeError, r"p must be a real number; got"),
    "shape": (ValueError, r"delta must have the same shape as x; got"),
    "axis_range": (ValueError, r"axis -?\d+ is out of range for x with \d+ dimensions?"),
    "axis_duplicate": (ValueError, r"axis contains duplicates"),
    "axis_empty": (ValueError, r"axis must name at least one axis"),
    "x_0d": (ValueError, r"x must have at least one dimension"),
    "unreachable_mode": (ValueError, r"unreachable must be 'saturate' or 'raise'; got"),
    "x_dtype": (TypeError, r"x must be a real floating-point array; got dtype"),
    "delta_dtype": (TypeError, r"delta must be a real floating-point array; got dtype"),
}
FUNCTIONS = ("scale", "perturb", "noise", "scale_vjp", "perturb_vjp")
#: (backend, function, fault) combinations that raise a different message than documented,
#: left out until fixed (found by this fuzz test; see the README's "Reliability").
KNOWN_DEVIATIONS = {
    # NumPy's "shape mismatch: objects cannot be broadcast..." instead of the bounds message
    *(("dask", fn, "bound_shape") for fn in ("scale", "perturb", "noise")),
    # JAX (float32) rounds eps = -1e-300 to -0.0 before checking it: no error
    *(("jax", fn, "eps_negative_tiny") for fn in FUNCTIONS),
}
NO_DELTA = {"delta_nan", "delta_inf", "shape", "delta_dtype"}  # faults noise cannot have

# tolerances per compute dtype: tol_t on eps^p, rel on eta, margin on eps^p near the
# largest size (where reachable or not depends on rounding)
TOL = {
    np.dtype(np.float64): (1e-9, 1e-12, 1e-7),
    np.dtype(np.float32): (1e-4, 2e-6, 1e-3),
}


# ------------------------------------------------------------------------ backends


@dataclass(frozen=True)
class Backend:
    name: str
    to: Callable[[np.ndarray], Any]
    dtypes: tuple[Any, ...] = (np.float16, np.float32, np.float64)
    functions: tuple[str, ...] = FUNCTIONS


def _backends() -> list[Backend]:
    out = [Backend("numpy", lambda a: a)]
    if importlib.util.find_spec("array_api_strict") is not None:
        import array_api_strict as xps

        out.append(
            Backend("array_api_strict", lambda a: xps.asarray(a), dtypes=(np.float32, np.float64))
        )
    if importlib.util.find_spec("torch") is not None:
        import torch

        out.append(Backend("torch", lambda a: torch.from_numpy(a.copy())))  # keeps 0-d
    if importlib.util.find_spec("jax") is not None:
        import jax.numpy as jnp

        # JAX without x64 holds float32 at most
        out.append(Backend("jax", lambda a: jnp.asarray(a), dtypes=(np.float32,)))
    if importlib.util.find_spec("dask") is not None:
        import dask.array as da

        out.append(
            Backend(
                "dask",
                lambda a: (
                    da.from_array(  # type: ignore[no-untyped-call]
                        a, chunks=(max(1, a.shape[0] // 2), *a.shape[1:])
                    )
                    if a.ndim
                    else a
                ),
                functions=("scale", "perturb", "noise"),
            )
        )
    return out


BACKENDS = _backends()


def to_numpy(a: Any) -> Any:
    """A result as NumPy (``None`` stays ``None``)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if hasattr(a, "compute"):  # dask
        return np.asarray(a.compute())
    if hasattr(a, "detach"):  # torch
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception:  # array-api-strict
        return np.from_dlpack(a)


# ------------------------------------------------------------------------ strategies


@dataclass
class Call:
    fn: str
    x: Any
    delta: Any
    eps: Any
    p: Any = 2.0
    bounds: Any = (0.0, 1.0)
    axis: Any = None
    unreachable: Any = "saturate"
    fault: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        def r(v: Any) -> str:
            if isinstance(v, np.ndarray):
                return (
                    f"array({v.tolist()!r}, dtype={v.dtype})"
                    if v.size <= 64
                    else (f"array(shape={v.shape}, dtype={v.dtype})")
                )
            if isinstance(v, tuple):
                return "(" + ", ".join(r(u) for u in v) + ")"
            return repr(v)

        return (
            f"Call({self.fn}, fault={self.fault}, x={r(self.x)}, delta={r(self.delta)}, "
            f"eps={r(self.eps)}, p={self.p!r}, bounds={r(self.bounds)}, axis={self.axis!r}, "
            f"unreachable={self.unreachable!r})"
        )


SUBNORMAL = {np.float16: 6e-8, np.float32: 1e-45, np.float64: 5e-324}


def _values(
    draw: Any, rng: np.random.Generator, shape: tuple[int, ...], lo: Any, hi: Any
) -> np.ndarray:
    """x inside [lo, hi] (broadcast arrays of float64), with bit-pattern flavour."""
    lo_b, hi_b = np.broadcast_to(lo, shape), np.broadcast_to(hi, shape)
    fl, fh = np.isfinite(lo_b), np.isfinite(hi_b)
    u = rng.random(shape)
    mag = 10.0 ** rng.uniform(-3, 2, shape)
    x = np.where(fl & fh, lo_b + u * (hi_b - lo_b), 0.0)
    x = np.where(fl & ~fh, lo_b + mag, x)
    x = np.where(~fl & fh, hi_b - mag, x)
    x = np.where(~fl & ~fh, rng.normal(size=shape) * mag, x)
    pick = rng.random(shape)
    at = draw(st.floats(0.0, 0.5))
    x = np.where((pick < at / 2) & fl, lo_b, x)  # on the bounds
    x = np.where((pick > 1 - at / 2) & fh, hi_b, x)
    return x


@st.composite
def calls(draw: Any, backend: Backend, fn: str | None = None) -> Call:
    with np.errstate(all="ignore"):
        return _build_call(draw, backend, fn)


def _build_call(draw: Any, backend: Backend, fn: str | None) -> Call:
    fn = fn or draw(st.sampled_from(backend.functions))
    faults = [f for f in FAULTS if not (fn == "noise" and f in NO_DELTA)]
    if backend.name == "dask":
        # Dask arrays need at least one dimension, and errors found inside the blocks
        # come out when the result is computed (checked there)
        faults = [f for f in faults if f != "x_0d"]
    faults = [f for f in faults if (backend.name, fn, f) not in KNOWN_DEVIATIONS]
    fault = draw(st.one_of(st.none(), st.none(), st.sampled_from(faults)))
    dtype = np.dtype(draw(st.sampled_from(backend.dtypes)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    if draw(st.integers(0, 15)) == 0:
        shape = (*shape[:-1], draw(st.integers(20, 300)))  # a longer last axis
    # axis
    axis: Any = None
    if ndim > 1 and draw(st.booleans()):
        k = draw(st.integers(1, ndim))
        axes = draw(st.permutations(range(ndim)))[:k]
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
        if len(axis) == 1 and draw(st.booleans()):
            axis = axis[0]
    vec_axes = normalize_axes(axis, ndim)
    n_vectors = int(np.prod([s for i, s in enumerate(shape) if i not in vec_axes]))
    # bounds
    kind = draw(
        st.sampled_from(["unit", "wide", "lower", "upper", "none", "pair_none", "elem", "chan"])
    )
    chan_shape = (shape[0],) if ndim == 1 else (shape[1],) + (1,) * (ndim - 2)
    bounds: Any
    if kind == "unit":
        bounds = (0.0, 1.0)
    elif kind == "wide":
        bounds = (-(10.0 ** draw(st.integers(-3, 3))), 10.0 ** draw(st.integers(-3, 3)))
    elif kind == "lower":
        bounds = (draw(st.sampled_from([0.0, -0.0, -1.0])), draw(st.sampled_from([None, math.inf])))
    elif kind == "upper":
        bounds = (draw(st.sampled_from([None, -math.inf])), draw(st.sampled_from([0.0, 1.0])))
    elif kind == "none":
        bounds = None
    elif kind == "pair_none":
        bounds = (None, None)
    else:
        bshape = shape if kind == "elem" else chan_shape
        lo = rng.uniform(-1, 0.5, bshape)
        width = rng.uniform(0, 2, bshape) * (rng.random(bshape) > 0.1)  # some lower == upper
        bounds = (lo.astype(dtype), (lo + width).astype(dtype))
    lo_v = -np.inf if bounds is None or bounds[0] is None else np.asarray(bounds[0], np.float64)
    hi_v = np.inf if bounds is None or bounds[1] is None else np.asarray(bounds[1], np.float64)
    if fault == "x_outside" and not (np.isfinite(lo_v).any() or np.isfinite(hi_v).any()):
        bounds, lo_v, hi_v = (0.0, 1.0), np.asarray(0.0), np.asarray(1.0)
    x = _values(draw, rng, shape, lo_v, hi_v)
    if draw(st.integers(0, 7)) == 0:  # subnormals and -0.0 inside the box, where they fit
        sub = SUBNORMAL[dtype.type] * rng.integers(1, 4, shape)
        x = np.where(
            (np.broadcast_to(lo_v, shape) <= 0) & (np.broadcast_to(hi_v, shape) > 0.01),
            np.where(rng.random(shape) < 0.5, sub, -0.0 * sub),
            x,
        )
        x = np.where(np.broadcast_to(lo_v, shape) <= -0.0, x, np.maximum(x, lo_v))
    x = x.astype(dtype)
    # keep x inside the box after rounding to dtype
    cd = np.float32 if dtype == np.float16 else dtype
    x = np.clip(x.astype(cd), np.asarray(lo_v).astype(cd), np.asarray(hi_v).astype(cd)).astype(
        dtype
    )
    lo_c, hi_c = np.asarray(lo_v).astype(cd), np.asarray(hi_v).astype(cd)
    for _ in range(2):  # float16 values rounded past a bound: step back inside
        x = np.where(x.astype(cd) < lo_c, np.nextafter(x, np.asarray(np.inf, dtype)), x)
        x = np.where(x.astype(cd) > hi_c, np.nextafter(x, np.asarray(-np.inf, dtype)), x)
    x = x.astype(dtype)
    delta = rng.normal(size=shape) * 10.0 ** rng.uniform(-2, 2, shape)
    delta[rng.random(shape) < draw(st.floats(0, 0.5))] = 0.0
    delta[rng.random(shape) < 0.05] = -0.0
    if draw(st.integers(0, 5)) == 0:  # one all-zero vector
        d2 = to_2d(np.arange(delta.size).reshape(shape), vec_axes)
        delta.reshape(-1)[d2[rng.integers(d2.shape[0])]] = 0.0
    delta = delta.astype(dtype)
    # eps
    p: Any = draw(st.sampled_from([0.5, 1.0, 2.0, 3.0, math.inf, 0.7, np.float32(1.5)]))
    if draw(st.integers(0, 3)) == 0:
        p = draw(st.floats(0.25, 8.0))
    eps_kind = draw(st.sampled_from(["frac", "frac", "zero", "over", "tiny", "vector", "eta"]))
    ms = _max_size(x, delta, bounds, axis, p) if not isinstance(p, str) else np.ones(n_vectors)
    base = np.where(np.isfinite(ms) & (ms > 0), ms, 1.0)
    if eps_kind == "zero":
        eps: Any = draw(st.sampled_from([0.0, -0.0, 0]))
    elif eps_kind == "over":
        eps = float(base.max() * draw(st.floats(1.01, 3.0)))
    elif eps_kind == "tiny":
        eps = float(base.min() * 10.0 ** draw(st.integers(-6, -2)))
    elif eps_kind == "frac":
        eps = float(base.min() * draw(st.floats(0.0, 0.99)))
    else:
        vals = base * rng.uniform(0.0, 1.2, n_vectors)
        if eps_kind == "vector" or ndim == 1:
            eps = vals
        else:
            bshape = tuple(1 if i in vec_axes else s for i, s in enumerate(shape))
            batch = [i for i in range(ndim) if i not in vec_axes]
            eps = np.transpose(
                vals.reshape([shape[i] for i in batch] + [1] * len(vec_axes)),
                np.argsort(batch + list(vec_axes)),
            ).reshape(bshape)
    unreachable = draw(st.sampled_from(["saturate", "saturate", "raise"]))
    call = Call(fn, x, delta, eps, p, bounds, axis, unreachable, fault, seed)
    if fault is not None:
        call.unreachable = "saturate"  # one error at a time
        _inject(call, draw, rng, shape, ndim, n_vectors)
    return call


def _max_size(x: np.ndarray, d: np.ndarray, bounds: Any, axis: Any, p: Any) -> np.ndarray:
    """The largest reachable size per vector (float64)."""
    ref = _reference(x, d, bounds, axis, float(p))
    return ref.smax


def _inject(
    call: Call, draw: Any, rng: np.random.Generator, shape: Any, ndim: int, nv: int
) -> None:
    f = call.fault
    pos = tuple(int(rng.integers(s)) for s in shape)
    if f in ("x_nan", "x_inf"):
        call.x = call.x.copy()
        call.x[pos] = np.nan if f == "x_nan" else draw(st.sampled_from([np.inf, -np.inf]))
    elif f in ("delta_nan", "delta_inf"):
        call.delta = call.delta.copy()
        call.delta[pos] = np.nan if f == "delta_nan" else -np.inf
    elif f == "x_outside":
        lo = -np.inf if call.bounds is None or call.bounds[0] is None else call.bounds[0]
        hi = np.inf if call.bounds is None or call.bounds[1] is None else call.bounds[1]
        lo_b = np.broadcast_to(np.asarray(lo, np.float64), shape)
        hi_b = np.broadcast_to(np.asarray(hi, np.float64), shape)
        call.x = call.x.copy()
        if np.isfinite(hi_b[pos]):
            call.x[pos] = hi_b[pos] + max(1.0, abs(hi_b[pos]))
        elif np.isfinite(lo_b[pos]):
            call.x[pos] = lo_b[pos] - max(1.0, abs(lo_b[pos]))
        else:
            call.bounds = (0.0, 1.0)
            call.x = np.clip(call.x, 0, 1)
            call.x[pos] = 2.0
    elif f == "bounds_crossed":
        lo = np.zeros(shape[-1:] if ndim == 1 else shape, call.x.dtype)
        hi = np.ones_like(lo)
        hi[pos[-1:] if ndim == 1 else pos] = -1.0
        call.bounds = (lo, hi)
        call.x = np.clip(call.x, 0, 1).astype(call.x.dtype)
    elif f == "bound_nan":
        side = draw(st.integers(0, 1))
        b = [0.0, 1.0]
        b[side] = draw(st.sampled_from([math.nan, np.full(shape, np.nan)]))
        call.bounds = tuple(b)
    elif f == "bound_shape":
        call.bounds = (np.zeros(shape[-1] + 1), 1.0)
    elif f == "bounds_not_pair":
        call.bounds = draw(st.sampled_from([(0.0,), (0.0, 1.0, 2.0), "ab", 0.5, ()]))
    elif f == "eps_negative":
        call.eps = draw(st.sampled_from([-1.0, np.full(nv, -0.5)]))
    elif f == "eps_negative_tiny":
        call.eps = -1e-300
    elif f == "eps_nan":
        call.eps = draw(st.sampled_from([math.nan, np.full(nv, np.nan)]))
    elif f == "eps_inf":
        call.eps = draw(st.sampled_from([math.inf, np.full(nv, np.inf)]))
    elif f == "eps_shape":
        call.eps = np.ones(nv + draw(st.integers(1, 3)))
    elif f == "p_value":
        call.p = draw(st.sampled_from([0.0, -1.0, -0.0, math.nan, -math.inf, -1e-300]))
    elif f == "p_type":
        call.p = draw(st.sampled_from(["2", None, True, 1 + 2j, [2.0]]))
    elif f == "shape":
        call.delta = np.ones((*shape[:-1], shape[-1] + 1), call.delta.dtype)
    elif f == "axis_range":
        call.axis = draw(st.sampled_from([ndim, -ndim - 1, (0, ndim + 2)]))
    elif f == "axis_duplicate":
        call.axis = (0, 0) if ndim == 1 else (1, 1 - ndim)
    elif f == "axis_empty":
        call.axis = ()
    elif f == "x_0d":
        call.x = np.asarray(0.5, call.x.dtype)
        call.delta = np.asarray(1.0, call.delta.dtype)
        call.eps, call.axis = 0.1, None
    elif f == "unreachable_mode":
        call.unreachable = draw(st.sampled_from(["clip", None, "", "RAISE"]))
    elif f == "x_dtype":
        call.x = call.x.astype(draw(st.sampled_from([np.int32, np.bool_, np.complex64])))
    elif f == "delta_dtype":
        call.delta = call.delta.astype(draw(st.sampled_from([np.int64, np.bool_, np.complex128])))


# ------------------------------------------------------------------------ reference


@dataclass
class Ref:
    a: np.ndarray  # |delta| (B, n), zero where not movable
    s: np.ndarray  # room (B, n)
    movable: np.ndarray  # (B,)
    smax: np.ndarray  # (B,) largest reachable size
    eta_sat: np.ndarray  # (B,) smallest eta reaching it
    p: float


def _compute_dtype(dt: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float32) if dt == np.float16 else dt


def _lp(v: np.ndarray, p: float) -> np.ndarray:
    """Per-row p-norm of non-negative values, scaled (no overflow or underflow)."""
    vmax = v.max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        if math.isinf(p):
            return np.asarray(vmax, np.float64)
        safe = np.where((vmax > 0) & np.isfinite(vmax), vmax, 1.0)
        out = safe * np.sum((v / safe[:, None]) ** p, axis=1) ** (1.0 / p)
    return np.asarray(np.where((vmax > 0) & np.isfinite(vmax), out, vmax), np.float64)


def _reference(x: np.ndarray, d: np.ndarray, bounds: Any, axis: Any, p: float) -> Ref:
    cd = _compute_dtype(x.dtype)
    va = normalize_axes(axis, x.ndim)
    lo = -np.inf if bounds is None or bounds[0] is None else bounds[0]
    hi = np.inf if bounds is None or bounds[1] is None else bounds[1]
    lo_b = np.broadcast_to(np.asarray(lo).astype(cd), x.shape)
    hi_b = np.broadcast_to(np.asarray(hi).astype(cd), x.shape)
    xc, dc = x.astype(cd), d.astype(x.dtype).astype(cd)
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.where(dc > 0, hi_b - xc, xc - lo_b)  # the room, in the compute dtype
    a2 = to_2d(np.abs(dc).astype(np.float64), va)
    s2 = to_2d(s.astype(np.float64), va)
    mov = a2 > 0
    a2 = np.where(mov, a2, 0.0)
    s2 = np.where(mov, s2, 0.0)
    movable = mov.any(axis=1)
    smax = _lp(s2, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.where(mov, s2 / np.where(mov, a2, 1.0), 0.0)
    if math.isinf(p):
        best = np.where(mov & (s2 == smax[:, None]), a2, 0.0).max(axis=1, initial=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta_sat = np.where(best > 0, smax / np.where(best > 0, best, 1.0), 0.0)
    else:
        eta_sat = keys.max(axis=1, initial=0.0)
    return Ref(a2, s2, np.asarray(movable), smax, np.asarray(eta_sat, np.float64), p)


def _size_at(ref: Ref, eta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        moved = np.minimum(eta[:, None] * ref.a, ref.s)
    return _lp(np.where(ref.a > 0, moved, 0.0), ref.p)


def _well_scaled(ref: Ref, eps: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Rows inside the range where the core is exact to rounding (as in the Rust harness,
    rust/fuzz/src/harness.rs: no overflow or underflow of the p-th powers or of eta)."""
    cd = _compute_dtype(dtype)
    fi = np.finfo(cd)
    t_lo, t_hi = math.log2(float(fi.tiny)) + 24, math.log2(float(fi.max)) - 24
    f_lo, f_hi = -1022 + 24, 1023 - 24
    p = 1.0 if math.isinf(ref.p) else ref.p
    if not 1 / 64 <= p <= 256:
        return np.zeros(eps.shape, bool)
    # eta in the result dtype (float16 results are rounded to float16)
    r_fi = np.finfo(dtype)
    e_lo, e_hi = math.log2(float(r_fi.tiny)) + 4, math.log2(float(r_fi.max)) - 4

    def ok(v: np.ndarray, lo: float, hi: float, plo: float, phi: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = np.log2(v)
        return np.asarray((v > 0) & (lg >= lo) & (lg <= hi) & (p * lg >= plo) & (p * lg <= phi))

    mov = ref.a > 0
    fin_room = mov & (ref.s > 0) & np.isfinite(ref.s)
    good = np.all(~mov | ok(ref.a, t_lo, t_hi, t_lo, t_hi), axis=1)
    good &= np.all(~fin_room | ok(ref.s, t_lo, t_hi, t_lo, t_hi), axis=1)
    good &= (eps == 0) | ok(eps, t_lo, t_hi, f_lo, f_hi)
    norm_a = _lp(ref.a, ref.p)
    inf_a = _lp(np.where(np.isinf(ref.s), ref.a, 0.0), ref.p)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta_lo = eps / norm_a
        eta_hi = np.where(inf_a > 0, eps / np.where(inf_a > 0, inf_a, 1.0), np.inf)
    eta_hi = np.minimum(eta_hi, np.where(np.isfinite(ref.eta_sat), ref.eta_sat, np.inf))
    need = (eps > 0) & ref.movable
    a_max = ref.a.max(axis=1, initial=0.0)
    for v in (eta_lo, eta_hi):
        good &= ~need | (ok(v, max(t_lo, e_lo), min(t_hi, e_hi), f_lo, f_hi))
    good &= ~need | ok(eta_hi * a_max, t_lo, t_hi, f_lo, f_hi)
    return np.asarray(good)


def _eps_rows(eps: Any, shape: tuple[int, ...], axis: Any, nv: int) -> np.ndarray:
    e = np.asarray(eps, np.float64)
    if e.ndim == 0:
        return np.full(nv, float(e))
    if e.shape == (nv,):
        return e
    va = normalize_axes(axis, len(shape))
    eshape = tuple(1 if i in va else s for i, s in enumerate(shape))
    return to_2d(np.broadcast_to(e, eshape), va).reshape(-1)


def check_valid(call: Call, result: Any) -> None:
    with np.errstate(all="ignore"):
        _check_valid(call, result)


def _check_valid(call: Call, result: Any) -> None:
    x, d = call.x, call.delta
    dtype = x.dtype
    tol_t, rel, margin = TOL[_compute_dtype(dtype)]
    rel = max(rel, 2 * float(np.finfo(dtype).eps))  # eta is rounded to x's dtype
    p = float(call.p)
    va = normalize_axes(call.axis, x.ndim)
    eshape = tuple(1 if i in va else s for i, s in enumerate(x.shape))
    nv = int(np.prod(eshape))
    eps = _eps_rows(call.eps, x.shape, call.axis, nv)
    if call.fn == "noise":  # the direction is random: judge the range for either sign
        ones = np.ones(x.shape, dtype)
        ref = _reference(x, -ones, call.bounds, call.axis, p)
        good = _well_scaled(ref, eps, dtype)
        ref = _reference(x, ones, call.bounds, call.axis, p)
        good &= _well_scaled(ref, eps, dtype)
    else:
        ref = _reference(x, d, call.bounds, call.axis, p)
        good = _well_scaled(ref, eps, dtype)
    power = 1.0 if math.isinf(p) else p

    def lratio(a: Any, b: Any) -> Any:
        """``log((a / b)^p)``: compares sizes in the p-th power domain."""
        return power * np.log(a / b)

    with np.errstate(divide="ignore", invalid="ignore"):
        lr = lratio(eps, ref.smax)
    reach = (eps == 0) | ~ref.movable | np.isinf(ref.smax) | (lr <= -margin)
    unreach = ref.movable & (eps > 0) & ~np.isinf(ref.smax) & (lr >= margin)
    if call.fn in ("scale", "perturb") and call.unreachable == "raise":
        if (unreach & good).any():
            pytest.fail(f"expected the unreachable error, got a result: {call!r}")
    if call.fn in ("scale_vjp", "perturb_vjp"):
        assert isinstance(result, dict), type(result)
        for key in ("x", "delta", "eps", "lower", "upper"):
            g = to_numpy(result[key])
            # (float16 cotangents can exceed 65504: cast to inf, like eta)
            if g is not None and dtype != np.float16:
                assert np.all(np.isfinite(g)) or not good.all(), (key, call)
        assert to_numpy(result["x"]).shape == x.shape, call
        assert to_numpy(result["delta"]).shape == x.shape, call
        return
    y = to_numpy(result)
    if call.fn == "scale":
        eta_arr = y
        assert eta_arr.dtype == dtype.newbyteorder("="), (eta_arr.dtype, call)
        assert eta_arr.shape == eshape, (eta_arr.shape, eshape, call)
        eta = to_2d(eta_arr.astype(np.float64), va).reshape(-1)
        assert not np.isnan(eta).any() and (eta >= 0).all(), (eta, call)
        zero = (eps == 0) | ~ref.movable
        assert (eta[zero] == 0).all(), (eta, call)
        for i in np.flatnonzero(good & ~zero):
            e = eta[i]
            assert np.isfinite(e), (i, e, call)
            row = Ref(
                ref.a[i : i + 1],
                ref.s[i : i + 1],
                ref.movable[i : i + 1],
                ref.smax[i : i + 1],
                ref.eta_sat[i : i + 1],
                p,
            )
            if np.isfinite(ref.eta_sat[i]):
                assert e <= ref.eta_sat[i] * (1 + rel), (i, e, ref.eta_sat[i], call)
            if reach[i]:
                lo = _size_at(row, np.array([e * (1 - rel)]))[0]
                hi = _size_at(row, np.array([e * (1 + rel)]))[0]
                assert lratio(lo, eps[i]) <= tol_t and lratio(hi, eps[i]) >= -tol_t, (
                    f"vector {i}: eta {e!r} gives sizes [{lo!r}, {hi!r}] for eps {eps[i]!r}"
                    f"\n{call!r}"
                )
            elif unreach[i]:
                assert abs(e - ref.eta_sat[i]) <= rel * ref.eta_sat[i], (
                    f"vector {i}: eta {e!r} != saturating {ref.eta_sat[i]!r}\n{call!r}"
                )
        return
    # perturb / noise: y in the box, unmoved where delta == 0, size never above eps
    assert y.dtype == dtype.newbyteorder("="), (y.dtype, call)
    assert y.shape == x.shape, call
    lo = -np.inf if call.bounds is None or call.bounds[0] is None else call.bounds[0]
    hi = np.inf if call.bounds is None or call.bounds[1] is None else call.bounds[1]
    y64, x64 = y.astype(np.float64), x.astype(np.float64)
    lo_b = np.broadcast_to(np.asarray(lo).astype(dtype).astype(np.float64), x.shape)
    hi_b = np.broadcast_to(np.asarray(hi).astype(dtype).astype(np.float64), x.shape)
    good_el = np.broadcast_to(
        np.transpose(
            good.reshape([x.shape[i] for i in range(x.ndim) if i not in va] + [1] * len(va)),
            np.argsort([i for i in range(x.ndim) if i not in va] + list(va)),
        ),
        x.shape,
    )
    assert not np.isnan(y64[good_el]).any(), call
    inside = (y64 >= lo_b) & (y64 <= hi_b)
    assert inside[good_el].all(), f"y outside the box: {call!r}"
    if call.fn == "perturb":
        unmoved = d.astype(dtype) == 0
        assert np.array_equal(y[unmoved & good_el], x[unmoved & good_el]), call
    size = _lp(to_2d(np.abs(y64 - x64), va), p)
    # y is rounded: each element's movement is off by at most an ulp of y. Minkowski for
    # p >= 1 (sizes add); for p < 1 the p-th powers add instead.
    fin = np.finfo(dtype)
    ulp = float(fin.eps) * np.maximum(np.abs(y64), np.abs(x64)) + float(fin.smallest_subnormal)
    slack = _lp(to_2d(ulp, va), p)
    # (noise never goes above eps; whether it reaches it depends on the draw)
    target = eps if call.fn == "noise" else np.where(unreach, ref.smax, eps)
    q = 1.0 if math.isinf(p) or p >= 1 else p
    size_q, target_q, slack_q = size**q, target**q, slack**q
    over = size_q > target_q * (1 + 2 * tol_t) + 2 * slack_q
    assert not (over & good).any(), (
        f"size {size[over & good]} above eps/largest size {target[over & good]}: {call!r}"
    )
    if call.fn == "perturb":
        close = reach & good & (eps > 0) & ref.movable & (target > 100 * slack)
        under = size_q < target_q * (1 - 2 * tol_t) - 2 * slack_q
        assert not (under & close).any(), (
            f"size {size[under & close]} below eps {target[under & close]}: {call!r}"
        )


# ------------------------------------------------------------------------ the tests


def invoke(backend: Backend, call: Call) -> Any:
    with warnings.catch_warnings():
        if call.x.dtype == np.float16:
            # an eta (or a cotangent) above float16's largest value becomes inf when cast
            # back; NumPy warns about it (see the README's "Reliability")
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
        return _invoke(backend, call)


def _invoke(backend: Backend, call: Call) -> Any:
    conv = backend.to

    def arr(v: Any) -> Any:
        return conv(v) if isinstance(v, np.ndarray) and v.ndim > 0 else v

    bounds = call.bounds
    if isinstance(bounds, tuple) and len(bounds) == 2:
        bounds = (arr(bounds[0]), arr(bounds[1]))
    x, eps = conv(call.x), arr(call.eps)
    d = conv(call.delta) if isinstance(call.delta, np.ndarray) else call.delta
    kw = {"p": call.p, "bounds": bounds, "axis": call.axis, "unreachable": call.unreachable}
    if call.fn == "noise":
        out = clipresc.noise(x, eps, seed=call.seed, **kw)
    elif call.fn == "scale_vjp":
        out = clipresc.scale_vjp(x, d, eps, 1.0, **kw)
    elif call.fn == "perturb_vjp":
        out = clipresc.perturb_vjp(x, d, eps, 1.0, **kw)
    else:
        out = getattr(clipresc, call.fn)(x, d, eps, **kw)
    if isinstance(out, dict):
        return {k: to_numpy(v) for k, v in out.items()}
    return to_numpy(out)  # Dask computes here, so errors of the blocks surface here


def check_unreachable_error(call: Call) -> None:
    """The unreachable error is right when some vector cannot reach eps (or nearly)."""
    if call.fn == "noise":
        return  # depends on the drawn direction
    x = call.x
    p = float(call.p)
    va = normalize_axes(call.axis, x.ndim)
    nv = int(np.prod([s for i, s in enumerate(x.shape) if i not in va]))
    eps = _eps_rows(call.eps, x.shape, call.axis, nv)
    with np.errstate(all="ignore"):
        ref = _reference(x, call.delta, call.bounds, call.axis, p)
        good = _well_scaled(ref, eps, x.dtype)
        margin = TOL[_compute_dtype(x.dtype)][2]
        lr = np.log(eps / ref.smax) * (1.0 if math.isinf(p) else p)
        clearly_reachable = (eps == 0) | ~ref.movable | np.isinf(ref.smax) | (lr <= -margin)
    assert not (clearly_reachable & good).all(), f"unreachable error for reachable {call!r}"


def run_call(backend: Backend, call: Call) -> None:
    try:
        result = invoke(backend, call)
    except (ValueError, TypeError) as e:
        msg = str(e)
        if call.fault is not None:
            etype, pattern = FAULTS[call.fault]
            assert isinstance(e, etype) and re.search(pattern, msg), (
                f"{type(e).__name__}: {msg}\nexpected {etype.__name__} /{pattern}/ for {call!r}"
            )
            return
        if call.unreachable == "raise" and re.search(VALUE_ERRORS[-2], msg):
            check_unreachable_error(call)
            return
        raise AssertionError(f"{type(e).__name__}: {msg}\non a valid call {call!r}") from e
    if call.fault is not None:
        pytest.fail(f"no error for fault {call.fault}: {call!r}")
    check_valid(call, result)


def _settings() -> settings:
    return settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
@_settings()
@given(data=st.data())
def test_public_api_fuzz(backend: Backend, data: Any) -> None:
    call = data.draw(calls(backend), label="call")
    run_call(backend, call)


@_settings()
@given(data=st.data())
def test_numpy_bit_patterns_never_crash(data: Any) -> None:
    """Raw bit patterns everywhere (NaN payloads, infinities, subnormals, huge values):
    only documented exceptions, and results never NaN, negative or outside the box."""
    dtype = np.dtype(data.draw(st.sampled_from([np.float16, np.float32, np.float64])))
    n = data.draw(st.integers(1, 24))
    rows = data.draw(st.integers(1, 3))
    raw = data.draw(
        st.binary(min_size=2 * rows * n * dtype.itemsize, max_size=2 * rows * n * dtype.itemsize)
    )
    vals = np.frombuffer(raw, dtype=dtype).reshape(2, rows, n)
    x, d = vals[0].copy(), vals[1].copy()
    if data.draw(st.booleans()):  # mostly valid x: keep the finite ones, clip to the box
        x = np.nan_to_num(x, nan=0.5, posinf=1.0, neginf=0.0)
        x = np.clip(x, 0, 1).astype(dtype)
    if data.draw(st.booleans()):
        d = np.nan_to_num(d, nan=0.0, posinf=1.0, neginf=-1.0)
    eps = data.draw(st.one_of(st.floats(allow_nan=True), st.floats(0, 10)))
    p = data.draw(st.one_of(st.sampled_from([1.0, 2.0, math.inf]), st.floats(1e-3, 1e3)))
    for fn in ("scale", "perturb"):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = getattr(clipresc, fn)(x, d, eps, p=p)
        except (ValueError, TypeError) as e:
            assert any(re.search(pat, str(e)) for pat in VALUE_ERRORS + TYPE_ERRORS), str(e)
            continue
        assert out.dtype == dtype
        assert not np.isnan(out).any(), (fn, x, d, eps, p, out)
        # the only warning: an eta beyond the dtype, returned as inf by scale
        overflow = fn == "scale" and int(np.isinf(out).sum())
        texts = [str(w.message) for w in caught]
        noun = "vector" if rows == 1 else "vectors"  # the catalogue's count grammar
        want = [f"for {overflow} of {rows} {noun}"] if overflow else []
        assert len(texts) == len(want), texts
        assert all(w in t and "exceeds the range" in t for w, t in zip(want, texts)), texts
        if fn == "scale":
            assert (out >= 0).all(), out
        else:
            assert ((out >= 0) & (out <= 1)).all(), (x, d, eps, p, out)
