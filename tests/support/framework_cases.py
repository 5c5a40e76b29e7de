"""Inputs shared by the framework tests (``test_torch.py``, ``test_jax.py``,
``test_tensorflow.py``): value cases, an independent size check and bad inputs.

Only NumPy here: each test converts the arrays to its framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import oracle

P_GRAD = [1.0, 2.0, 3.0, math.inf]


@dataclass
class Case:
    """One call: arrays as NumPy, keyword arguments as for ``clipresc.perturb``."""

    name: str
    x: np.ndarray
    delta: np.ndarray
    eps: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


def value_cases(dtype: Any = np.float64) -> list[Case]:
    """A few shapes, norms, bounds and axes, all with ``eps`` reachable."""
    rng = np.random.default_rng(1234)
    x = rng.uniform(0, 1, (4, 3, 6, 5)).astype(dtype)
    d = rng.standard_normal(x.shape).astype(dtype)
    lo = np.array([0.0, 0.1, 0.05]).reshape(3, 1, 1).astype(dtype)
    hi = np.array([1.0, 0.95, 0.9]).reshape(3, 1, 1).astype(dtype)
    xc = np.clip(x, lo, hi)
    x1 = rng.uniform(-1, 1, 40).astype(dtype)
    d1 = rng.standard_normal(40).astype(dtype)
    return [
        Case("l2", x, d, 2.0),
        Case("l1-per-sample", x, d, np.array([1.0, 3.0, 0.5, 8.0]), {"p": 1.0}),
        Case("linf", x, d, 0.05, {"p": math.inf}),
        Case("l3-channel-bounds", xc, d, 1.5, {"p": 3.0, "bounds": (lo, hi)}),
        Case("axis-last", x, d, 0.3, {"axis": -1}),
        Case("axis-tuple", x, d, 0.8, {"axis": (0, 2), "p": 0.7}),
        Case("1d-one-sided", x1, d1, 2.0, {"bounds": (-1.0, None)}),
        Case("no-bounds", x, d, 4.0, {"bounds": None}),
    ]


def kwargs_in(kwargs: dict[str, Any], to: Callable[[Any], Any]) -> dict[str, Any]:
    """A case's keyword arguments with its array bounds converted by ``to`` (a framework's
    array constructor); number bounds stay numbers."""
    out = dict(kwargs)
    if isinstance(out.get("bounds"), tuple):
        out["bounds"] = tuple(
            to(b) if isinstance(b, np.ndarray) and b.ndim else b for b in out["bounds"]
        )
    return out


def eps_in(e: Any, to: Callable[[Any], Any]) -> Any:
    """A case's ``eps`` converted by ``to`` when it is an array."""
    return to(e) if isinstance(e, np.ndarray) else e


def achieved_size(x: np.ndarray, y: np.ndarray, p: float, axis: Any) -> np.ndarray:
    """``||y - x||_p`` per vector (:func:`support.oracle.lp_size`), with ``x``'s dimensions
    and the vector axes kept as size 1."""
    nd = x.ndim
    if axis is None:
        axes = tuple(range(1, nd)) if nd > 1 else (0,)
    else:
        axes = tuple(a % nd for a in ((axis,) if isinstance(axis, int) else axis))
    diff = y.astype(np.float64) - x.astype(np.float64)
    rest = tuple(a for a in range(nd) if a not in axes)
    rows = np.transpose(diff, rest + axes).reshape(math.prod(diff.shape[a] for a in rest), -1)
    kept = tuple(1 if a in axes else diff.shape[a] for a in range(nd))
    return oracle.lp_size(rows, p).reshape(kept)


def check_size(case: Case, y: np.ndarray, rtol: float) -> None:
    """Assert the post-clip size of ``y`` equals ``eps`` per vector."""
    p = case.kwargs.get("p", 2.0)
    size = achieved_size(case.x, y, p, case.kwargs.get("axis"))
    eps = np.asarray(case.eps, dtype=np.float64)
    want = eps.reshape(size.shape) if eps.ndim == 1 and eps.size == size.size else eps
    np.testing.assert_allclose(size, np.broadcast_to(want, size.shape), rtol=rtol)


def grad_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Small float64 ``(x, delta, eps)`` away from breakpoints, for gradient checks.

    ``x`` is far enough inside ``[0, 1]`` and ``eps`` large enough that some elements
    saturate and others do not.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (3, 2, 4))
    d = rng.standard_normal(x.shape)
    eps = np.array([0.9, 1.6, 0.4])
    return x, d, eps


def grad_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Per-channel bounds (shape ``(2, 1)``) around :func:`grad_problem`'s ``x``."""
    return np.array([[0.0], [0.02]]), np.array([[1.0], [0.97]])


@dataclass
class Bad:
    """Bad input: ``clipresc.perturb(x, delta, eps, **kwargs)`` raises ``exc``."""

    name: str
    exc: type
    x: np.ndarray
    delta: np.ndarray
    eps: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    data: bool = True  # the check needs the values (vs. shapes/dtypes/arguments only)
    contract: str | None = None  # docs/CONTRACT.md's text, where the NumPy path differs


def bad_cases() -> list[Bad]:
    """One input per error row of docs/CONTRACT.md that a framework array can carry."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 0.9, (3, 5))
    d = rng.standard_normal((3, 5))
    xnan = x.copy()
    xnan[1, 2] = np.nan
    dinf = d.copy()
    dinf[2, 4] = np.inf
    xout = x.copy()
    xout[0, 3] = 1.5
    lo = np.zeros(5)
    hi = np.ones(5)
    hi[2] = -1.0
    return [
        Bad("x-nan", ValueError, xnan, d, 0.5),
        Bad("delta-inf", ValueError, x, dinf, 0.5),
        Bad("x-outside", ValueError, xout, d, 0.5),
        Bad("lower>upper", ValueError, x, d, 0.5, {"bounds": (lo, hi)}),
        Bad("eps-negative", ValueError, x, d, np.array([0.5, -1.0, 0.2])),
        Bad("eps-inf", ValueError, x, d, np.array([0.5, np.inf, 0.2])),
        Bad("eps-length", ValueError, x, d, np.array([0.5, 0.2]), data=False),
        Bad("p-zero", ValueError, x, d, 0.5, {"p": 0.0}, data=False),
        Bad("p-type", TypeError, x, d, 0.5, {"p": "2"}, data=False),
        Bad("shape", ValueError, x, d[:, :4], 0.5, data=False),
        Bad("axis-range", ValueError, x, d, 0.5, {"axis": 2}, data=False),
        Bad("axis-dup", ValueError, x, d, 0.5, {"axis": (1, -1)}, data=False),
        Bad("unreachable-mode", ValueError, x, d, 0.5, {"unreachable": "clip"}, data=False),
        Bad("unreachable", ValueError, x, d, 100.0, {"unreachable": "raise"}),
        Bad("int-x", TypeError, np.arange(15).reshape(3, 5), d, 0.5, data=False),
        Bad("bounds-form", ValueError, x, d, 0.5, {"bounds": (0.0, 1.0, 2.0)}, data=False),
        Bad("bounds-shape", ValueError, x, d, 0.5, {"bounds": (np.zeros(4), 1.0)}, data=False),
    ]


def numpy_message(bad: Bad) -> str:
    """The NumPy path's message for ``bad`` (which must raise ``bad.exc``), or the
    contract's text where that is given."""
    import clipresc

    if bad.contract is not None:
        return bad.contract

    try:
        clipresc.perturb(bad.x, bad.delta, bad.eps, **bad.kwargs)
    except bad.exc as e:
        return str(e)
    raise AssertionError(f"NumPy path did not raise for {bad.name}")


def spy_core(monkeypatch: Any) -> dict[str, list[Any]]:
    """Record the calls into the Rust binding's solves and VJPs.

    Returns ``{"solves": [...], "vjp_eta": [...]}``: one entry per ``scale_into`` /
    ``perturb_into`` call, and per ``*_vjp_into`` call whether it got the forward's ``eta``
    (a VJP without one solves again inside the core).
    """
    from clipresc import _clipresc

    seen: dict[str, list[Any]] = {"solves": [], "vjp_eta": []}

    def spy(name: str, record: Callable[[dict[str, Any]], Any], key: str) -> None:
        real = getattr(_clipresc, name)

        def call(*args: Any, **kw: Any) -> Any:
            seen[key].append(record(kw))
            return real(*args, **kw)

        monkeypatch.setattr(_clipresc, name, call)

    for name in ("scale_into", "perturb_into"):
        spy(name, lambda kw, name=name: name, "solves")
    for name in ("scale_vjp_into", "perturb_vjp_into"):
        spy(name, lambda kw: kw.get("eta") is not None, "vjp_eta")
    return seen
