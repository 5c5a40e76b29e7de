"""Pure array-API implementation of the clipresc contract (fallback backend and oracle).

Everything here uses only functions of the `array API standard
<https://data-apis.org/array-api/>`__, looked up at call time with
``array_api_compat.array_namespace``, so the same code runs on NumPy, array-api-strict,
PyTorch, CuPy, JAX (also under ``jax.jit``: there is no data-dependent Python control flow,
no boolean-mask indexing and no conversion of array values to Python numbers) and any
other compliant library.

All functions work on clean 2-D ``(B, n)`` inputs, one vector per row; argument checks,
layout normalisation and error raising live in the layer above. Conventions:

* ``x``, ``d`` are ``(B, n)`` arrays of one real floating dtype; ``eps`` is ``(B,)`` of the
  same dtype; ``p`` is a Python float ``> 0`` or ``math.inf``.
* ``lower`` / ``upper`` are Python numbers (``+-inf`` allowed) or arrays broadcastable to
  ``(B, n)`` (typically ``(n,)`` or ``(B, n)``), with ``lower <= x <= upper``.
* Internally everything is computed in float64 when the namespace offers float64 on the
  data's device (JAX without ``jax_enable_x64``, for example, does not), and cast back to
  the input dtype at the end.

Semantics (see ``docs/CONTRACT.md`` and ``DESIGN.md`` section 1): with the room
``s_i = upper_i - x_i`` where ``d_i > 0`` and ``x_i - lower_i`` where ``d_i < 0``, ``eta`` is
the smallest scale with ``||clip(x + eta d, lower, upper) - x||_p = eps``. ``eps == 0`` or an
all-zero ``d`` row gives ``eta = 0`` (a zero row is never flagged unreachable). When ``eps``
exceeds the largest reachable size the row is flagged and ``eta`` saturates: for finite ``p``
``max_i s_i / |d_i|`` over the movable elements, for ``p = inf`` ``min s_i / |d_i|`` over the
movable elements with the largest room. Ties (``s_i == eta |d_i|``) count as saturated and
infinite room never saturates.

Differentiation conventions (``scale_vjp_rows`` / ``perturb_vjp_rows``), from the closed
form of DESIGN.md section 3:

* The saturated set is recomputed from the given ``eta`` as
  ``S = {i : d_i != 0, s_i / |d_i| <= eta}`` (ties saturated, like the forward), so at a
  breakpoint the derivative is the one-sided one for increasing ``eps``.
* ``eps == 0``: ``d eta / d eps = M^(-1/p)`` (finite; ``M = sum_{i not in S} |d_i|^p``), and
  ``eta`` has zero derivative with respect to ``x``, ``d`` and the bounds (it is
  identically 0 there).
* Every movable element saturated (``eps`` unreachable, or exactly the largest size):
  ``eta = s_k / |d_k|`` follows the element ``k`` that saturates last (the first index
  among equal largest ``s_i / |d_i|``), so ``x_k``, ``d_k`` and ``k``'s bound get gradient
  and ``eps`` gets none. For ``p = inf`` the same rule uses the element ``k`` picked by the
  forward (largest room, then largest ``|d_i|``, first index).
* ``p = inf``, reachable: ``eta = eps / |d_k|`` with ``k`` the first element of largest
  ``|d_k|`` among those with ``s_k >= eps`` (and ``s_k > 0``, which only matters at
  ``eps == 0``: ``d eta / d eps = 1 / max{|d_i| : s_i > 0}``, the right derivative); only
  ``eps`` and ``d_k`` get gradient.
* ``s_j == 0`` with ``p < 1`` (``s_j^(p-1)`` is infinite): that element's contribution to
  the gradient is 0.
* ``d_j == 0``: the element does not move the solution (``eta`` gets no gradient from it,
  the symmetric, i.e. central-difference, value); for the perturbation it counts as
  unsaturated (``dy_j/dx_j = 1``, ``dy_j/dd_j = eta``), which is exact when ``x_j`` is
  strictly inside its bounds.
* All-zero ``d`` rows get zero gradient everywhere.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import array_api_compat

__all__ = ["perturb_rows", "perturb_vjp_rows", "scale_rows", "scale_vjp_rows"]

Array = Any
Bound = Any  # a Python float/int (+-inf allowed) or an array broadcastable to (B, n)


# --------------------------------------------------------------------------- helpers


def _namespace(*arrays: Any) -> Any:
    return array_api_compat.array_namespace(*[a for a in arrays if not _is_scalar(a)])


def _is_scalar(b: Any) -> bool:
    """A Python (or NumPy scalar) real number, as opposed to an array bound."""
    return isinstance(b, numbers.Real) and not isinstance(b, bool)


def _has(xp: Any, name: str, since: str) -> bool:
    """Whether ``xp`` offers ``name`` (part of the standard since version ``since``).

    array-api-strict exposes every function but raises when the configured standard
    version predates it, so the declared ``__array_api_version__`` is checked as well.
    """
    version = getattr(xp, "__array_api_version__", None)
    if isinstance(version, str) and version < since:
        return False
    return hasattr(xp, name)


def _work_dtype(xp: Any, x: Array, dev: Any) -> Any:
    """float64 when the namespace supports it on ``dev``, else ``x.dtype``."""
    f64 = getattr(xp, "float64", None)
    if f64 is None:
        return x.dtype
    if x.dtype == f64:
        return f64
    if not _has(xp, "__array_namespace_info__", "2023.12"):
        return f64
    try:
        info = xp.__array_namespace_info__()
        kinds = info.dtypes(kind="real floating", device=dev)
    except Exception:  # older namespaces without the inspection API, or no device kwarg
        return f64
    return f64 if "float64" in kinds else x.dtype


def _cumsum_rows(xp: Any, a: Array) -> Array:
    """Inclusive cumulative sum along axis 1."""
    if _has(xp, "cumulative_sum", "2023.12"):
        return xp.cumulative_sum(a, axis=1)
    fn = getattr(xp, "cumsum", None)  # pre-standard spelling (e.g. older wrappers)
    if fn is not None:
        return fn(a, axis=1)
    # Array API 2022.12 has no cumulative sum: a log-step (Hillis-Steele) scan.
    b, n = a.shape
    shift = 1
    while shift < n:
        pad = xp.zeros((b, shift), dtype=a.dtype, device=array_api_compat.device(a))
        a = a + xp.concat([pad, a[:, : n - shift]], axis=1)
        shift *= 2
    return a


def _take_rows(xp: Any, a: Array, idx: Array) -> Array:
    """``a[i, idx[i, j]]`` for every row ``i``."""
    if _has(xp, "take_along_axis", "2024.12"):
        return xp.take_along_axis(a, idx, axis=1)
    b, n = a.shape
    offs = xp.reshape(xp.arange(b, dtype=idx.dtype, device=array_api_compat.device(a)), (b, 1))
    flat = xp.reshape(idx + offs * n, (-1,))
    return xp.reshape(xp.take(xp.reshape(a, (-1,)), flat, axis=0), (b, n))


def _onehot_argmax(xp: Any, v: Array, dev: Any) -> Array:
    """Boolean ``(B, n)`` mask of the first maximum of each row of ``v``."""
    b, n = v.shape
    cols = xp.reshape(xp.arange(n, device=dev), (1, n))
    k = xp.astype(xp.reshape(xp.argmax(v, axis=1), (b, 1)), cols.dtype)
    return cols == k


def _reduce_to(xp: Any, g: Array, like: Array) -> Array:
    """Sum the ``(B, n)`` cotangent ``g`` over the axes that ``like`` broadcasts along."""
    shape = tuple(like.shape)
    extra = g.ndim - len(shape)
    if extra > 0:
        g = xp.sum(g, axis=tuple(range(extra)))
    axes = tuple(i for i, (a, b) in enumerate(zip(shape, g.shape)) if a == 1 and b != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.astype(g, like.dtype)


class _Rows(NamedTuple):
    xp: Any
    dev: Any
    wd: Any  # working dtype
    x: Array  # (B, n) in wd
    d: Array  # (B, n) in wd
    eps: Array  # (B,) in wd
    lo: Array  # broadcastable to (B, n), in wd
    hi: Array
    s: Array  # room in the direction of d (>= 0; inf for an infinite bound)
    ad: Array  # |d|
    mov: Array  # d != 0
    key: Array  # s / |d| where movable (inf for infinite room), inf elsewhere
    zero: Array  # 0-d constants in wd
    one: Array
    inf: Array


def _prepare(x: Array, d: Array, eps: Array, lower: Bound, upper: Bound) -> _Rows:
    xp = _namespace(x, d, eps, lower, upper)
    dev = array_api_compat.device(x)
    wd = _work_dtype(xp, x, dev)

    def const(v: float) -> Array:
        return xp.asarray(v, dtype=wd, device=dev)

    def bound(b: Bound) -> Array:
        return const(float(b)) if _is_scalar(b) else xp.astype(b, wd)

    zero, one, inf = const(0.0), const(1.0), const(math.inf)
    xw = xp.astype(x, wd)
    dw = xp.astype(d, wd)
    lo, hi = bound(lower), bound(upper)
    s = xp.where(dw > 0, hi - xw, xw - lo)
    s = xp.where(s > 0, s, zero)  # clean inputs have s >= 0; this also guards rounding
    ad = xp.abs(dw)
    mov = dw != 0
    key = xp.where(mov, s / xp.where(mov, ad, one), inf)
    return _Rows(xp, dev, wd, xw, dw, xp.astype(eps, wd), lo, hi, s, ad, mov, key, zero, one, inf)


def _clip(xp: Any, y: Array, lo: Array, hi: Array) -> Array:
    y = xp.where(y < lo, lo, y)
    return xp.where(y > hi, hi, y)


# --------------------------------------------------------------------------- forward


def _solve_finite(r: _Rows, p: float) -> tuple[Array, Array]:
    xp, zero, one, inf = r.xp, r.zero, r.one, r.inf
    b = r.x.shape[0]
    T = r.eps**p
    order = xp.argsort(r.key, axis=1)
    s_s = _take_rows(xp, r.s, order)
    ad_s = _take_rows(xp, r.ad, order)
    mov_s = ad_s > 0
    key_s = xp.where(mov_s, s_s / xp.where(mov_s, ad_s, one), inf)
    fin_s = key_s < inf
    ws = ad_s**p
    cs = xp.where(fin_s, s_s**p, zero)
    tau_s = xp.where(fin_s, key_s**p, zero)
    # g at each breakpoint: g(tau_j) = C_{j+1} + tau_j * M_{j+1} (exact under ties too)
    c_incl = _cumsum_rows(xp, cs)
    w_suffix = xp.flip(_cumsum_rows(xp, xp.flip(ws, axis=1)), axis=1)
    w_after = xp.concat([w_suffix[:, 1:], xp.zeros((b, 1), dtype=r.wd, device=r.dev)], axis=1)
    g_at = xp.where(fin_s, c_incl + tau_s * w_after, inf)
    sat = g_at <= xp.reshape(T, (b, 1))  # ties (g == T) count as saturated
    C = xp.sum(xp.where(sat, cs, zero), axis=1)
    M = xp.sum(xp.where(sat, zero, ws), axis=1)
    tau_lo = xp.max(xp.where(sat, tau_s, zero), axis=1)
    tau_hi = xp.min(xp.where(sat | ~fin_s, inf, tau_s), axis=1)
    m_pos = M > 0
    t = (T - C) / xp.where(m_pos, M, one)
    t = xp.where(t < tau_lo, tau_lo, t)  # keep t consistent with the split (rounding)
    t = xp.where(t > tau_hi, tau_hi, t)
    max_key = xp.max(xp.where(fin_s, key_s, zero), axis=1)
    eta = xp.where(m_pos, t ** (1.0 / p), max_key)
    unreachable = xp.any(mov_s, axis=1) & ~m_pos & (T > C)
    return eta, unreachable


def _solve_inf(r: _Rows) -> tuple[Array, Array]:
    xp, zero, one = r.xp, r.zero, r.one
    b = r.x.shape[0]
    eps = r.eps
    cand = r.mov & (r.s >= xp.reshape(eps, (b, 1)))
    reach = xp.any(cand, axis=1)
    ad_max = xp.max(xp.where(cand, r.ad, zero), axis=1)
    eta_reach = eps / xp.where(reach, ad_max, one)
    s_max = xp.max(xp.where(r.mov, r.s, -one), axis=1)
    cand2 = r.mov & (r.s == xp.reshape(s_max, (b, 1)))
    ad_max2 = xp.max(xp.where(cand2, r.ad, zero), axis=1)
    any_mov = xp.any(r.mov, axis=1)
    eta_sat = xp.where(any_mov, s_max, zero) / xp.where(any_mov, ad_max2, one)
    eta = xp.where(reach, eta_reach, eta_sat)
    return eta, any_mov & ~reach


def _solve(r: _Rows, p: float) -> tuple[Array, Array]:
    if r.x.shape[1] == 0:
        b = r.x.shape[0]
        zeros = r.xp.zeros((b,), dtype=r.wd, device=r.dev)
        return zeros, zeros != 0
    return _solve_inf(r) if math.isinf(p) else _solve_finite(r, p)


NEEDS_ETA = True
"""The VJPs recompute the saturated set from the forward's ``eta`` (see
:class:`clipresc.backends.interface.RowBackend`)."""


def scale_rows(
    x: Array, d: Array, eps: Array, p: float, lower: Bound, upper: Bound
) -> tuple[Array, Array]:
    """Per-row scale ``eta`` with ``||clip(x + eta d, lower, upper) - x||_p == eps``.

    Sort-based (O(n log n) per row) and free of data-dependent control flow, so it runs
    under ``jax.jit``. Returns ``(eta, unreachable)``: ``eta`` of shape ``(B,)`` in ``x``'s
    dtype and a boolean ``(B,)`` mask of the rows whose ``eps`` exceeds the largest
    reachable size (there ``eta`` is the saturating value, see the module docstring).

    >>> import numpy as np
    >>> x = np.array([[0.5, 0.5, 0.9]])
    >>> d = np.array([[1.0, -1.0, 1.0]])
    >>> eta, unreachable = scale_rows(x, d, np.array([0.3]), 1.0, 0.0, 1.0)
    >>> float(eta[0]), bool(unreachable[0])
    (0.1, False)
    >>> eta, unreachable = scale_rows(x, d, np.array([5.0]), 2.0, 0.0, 1.0)
    >>> float(eta[0]), bool(unreachable[0])
    (0.5, True)
    """
    r = _prepare(x, d, eps, lower, upper)
    eta, unreachable = _solve(r, p)
    return r.xp.astype(eta, x.dtype), unreachable


def perturb_rows(
    x: Array, d: Array, eps: Array, p: float, lower: Bound, upper: Bound
) -> tuple[Array, Array, Array]:
    """``(y, eta, unreachable)`` with ``y = clip(x + eta[:, None] * d, lower, upper)``.

    ``eta`` and ``unreachable`` are as in :func:`scale_rows`; ``y`` is computed in the
    working precision (float64 where available) and cast to ``x``'s dtype.

    >>> import numpy as np
    >>> x = np.array([[0.5, 0.5, 0.9]])
    >>> d = np.array([[1.0, -1.0, 1.0]])
    >>> y, eta, _ = perturb_rows(x, d, np.array([0.3]), 1.0, 0.0, 1.0)
    >>> np.round(y, 12).tolist(), round(float(np.abs(y - x).sum()), 12)
    ([[0.6, 0.4, 1.0]], 0.3)
    """
    r = _prepare(x, d, eps, lower, upper)
    xp = r.xp
    eta, unreachable = _solve(r, p)
    y = _clip(xp, r.x + xp.reshape(eta, (-1, 1)) * r.d, r.lo, r.hi)
    return xp.astype(y, x.dtype), xp.astype(eta, x.dtype), unreachable


# --------------------------------------------------------------------------- gradients


class _Partials(NamedTuple):
    ex: Array  # d eta / d x            (B, n)
    ed: Array  # d eta / d delta        (B, n)
    eu: Array  # d eta / d upper        (B, n)
    el: Array  # d eta / d lower        (B, n)
    ee: Array  # d eta / d eps          (B,)
    sat: Array  # saturated set S       (B, n)
    unsat: Array  # movable and not saturated (B, n)


def _follow_element(r: _Rows, hot: Array, eta: Array) -> tuple[Array, Array, Array, Array]:
    """Partials of ``eta = s_k / |d_k|`` for the element marked in ``hot``."""
    xp, zero, one = r.xp, r.zero, r.one
    d_safe = xp.where(r.mov, r.d, one)
    ad_safe = xp.where(r.mov, r.ad, one)
    ex = xp.where(hot, -one / d_safe, zero)
    ed = xp.where(hot, -eta / d_safe, zero)
    eu = xp.where(hot & (r.d > 0), one / ad_safe, zero)
    el = xp.where(hot & (r.d < 0), -one / ad_safe, zero)
    return ex, ed, eu, el


def _partials_finite(r: _Rows, p: float, eta_w: Array) -> _Partials:
    xp, zero, one = r.xp, r.zero, r.one
    b = r.x.shape[0]
    eta = xp.reshape(eta_w, (b, 1))
    eps = r.eps
    T = eps**p
    sat = r.mov & (r.key <= eta)
    unsat = r.mov & ~sat
    M = xp.sum(xp.where(unsat, r.ad**p, zero), axis=1)
    fin = r.mov & (r.key < r.inf)
    c_fin = xp.sum(xp.where(fin, r.s, zero) ** p, axis=1)
    has_inf = xp.any(r.mov & ~fin, axis=1)
    any_mov = xp.any(r.mov, axis=1)
    all_sat = any_mov & ((M == 0) | ((T >= c_fin) & ~has_inf))
    regular = any_mov & ~all_sat
    pos = eps > 0

    m_safe = xp.where(M > 0, M, one)
    eta_pos = eta_w > 0
    eta_safe = xp.where(eta_pos, eta_w, one)
    # d eta / d eps = (eps / eta)^(p-1) / M, which tends to M^(-1/p) at eps = 0
    ratio = xp.where(eta_pos, eps / eta_safe, m_safe ** (1.0 / p))
    ee = xp.where(regular, ratio ** (p - 1.0) / m_safe, zero)

    # saturated elements: s_j^(p-1) / D = (s_j / eta)^(p-1) / M
    q_mask = sat & (r.s > 0) if p < 1 else sat
    s_q = xp.where(q_mask, r.s, one) / xp.reshape(eta_safe, (b, 1))
    q = xp.where(q_mask, s_q ** (p - 1.0) / xp.reshape(m_safe, (b, 1)), zero)
    sign = xp.sign(r.d)
    ex = sign * q
    eu = xp.where(r.d > 0, -q, zero)
    el = xp.where(r.d < 0, q, zero)
    ad_pow = xp.where(unsat, r.ad, one) ** (p - 1.0)
    ed = xp.where(unsat, -eta * ad_pow * sign / xp.reshape(m_safe, (b, 1)), zero)

    # every movable element saturated: eta follows the one that saturates last
    hot = _onehot_argmax(xp, xp.where(r.mov, r.key, -one), r.dev) & r.mov
    fx, fd, fu, fl = _follow_element(r, hot, eta)

    reg2 = xp.reshape(regular & pos, (b, 1))
    fol2 = xp.reshape(all_sat & pos, (b, 1))

    def pick(a: Array, f: Array) -> Array:
        return xp.where(reg2, a, xp.where(fol2, f, zero))

    return _Partials(pick(ex, fx), pick(ed, fd), pick(eu, fu), pick(el, fl), ee, sat, unsat)


def _partials_inf(r: _Rows, eta_w: Array) -> _Partials:
    xp, zero, one = r.xp, r.zero, r.one
    b = r.x.shape[0]
    eta = xp.reshape(eta_w, (b, 1))
    sat = r.mov & (r.key <= eta)
    unsat = r.mov & ~sat
    # s > 0 only matters at eps == 0: there it gives the right derivative (zero-room
    # elements drop out as soon as eps > 0)
    cand = r.mov & (r.s >= xp.reshape(r.eps, (b, 1))) & (r.s > 0)
    reach = xp.any(cand, axis=1)
    any_mov = xp.any(r.mov, axis=1)
    ad_safe = xp.where(r.mov, r.ad, one)
    d_safe = xp.where(r.mov, r.d, one)

    # reachable: eta = eps / |d_k|, k = first largest |d| among s >= eps
    hot1 = _onehot_argmax(xp, xp.where(cand, r.ad, -one), r.dev) & cand
    ee = xp.sum(xp.where(hot1, one / ad_safe, zero), axis=1)
    ed1 = xp.where(hot1, -eta / d_safe, zero)

    # unreachable: eta = s_k / |d_k|, k = first largest |d| among the largest room
    s_max = xp.max(xp.where(r.mov, r.s, -one), axis=1)
    cand2 = r.mov & (r.s == xp.reshape(s_max, (b, 1)))
    hot2 = _onehot_argmax(xp, xp.where(cand2, r.ad, -one), r.dev) & cand2
    fx, fd, fu, fl = _follow_element(r, hot2, eta)

    reach2 = xp.reshape(reach, (b, 1))
    fol2 = xp.reshape(any_mov & ~reach & (r.eps > 0), (b, 1))
    ex = xp.where(fol2, fx, zero)
    ed = xp.where(reach2, ed1, xp.where(fol2, fd, zero))
    eu = xp.where(fol2, fu, zero)
    el = xp.where(fol2, fl, zero)
    return _Partials(ex, ed, eu, el, xp.where(reach, ee, zero), sat, unsat)


def _partials(r: _Rows, p: float, eta: Array) -> _Partials:
    if r.x.shape[1] == 0:
        z2 = r.xp.zeros(r.x.shape, dtype=r.wd, device=r.dev)
        z1 = r.xp.zeros((r.x.shape[0],), dtype=r.wd, device=r.dev)
        return _Partials(z2, z2, z2, z2, z1, z2 != 0, z2 != 0)
    eta_w = r.xp.astype(eta, r.wd)
    return _partials_inf(r, eta_w) if math.isinf(p) else _partials_finite(r, p, eta_w)


def _bound_cotangent(xp: Any, g: Array, bound: Bound) -> Array | None:
    return None if _is_scalar(bound) else _reduce_to(xp, g, bound)


def scale_vjp_rows(
    x: Array,
    d: Array,
    eps: Array,
    p: float,
    lower: Bound,
    upper: Bound,
    eta: Array,
    etabar: Array,
) -> dict[str, Array | None]:
    """Cotangents of ``eta = scale_rows(x, d, eps, p, lower, upper)[0]`` for ``etabar``.

    ``eta`` is the forward result (shape ``(B,)``), ``etabar`` its cotangent. Returns a dict
    with keys ``"x"``, ``"delta"`` (``(B, n)``), ``"eps"`` (``(B,)``), ``"lower"`` and
    ``"upper"`` (reduced to the bound's own shape; ``None`` for Python-number bounds).
    O(n) per row: no sort, the saturated set is recomputed from ``eta``. Conventions at
    non-differentiable points are listed in the module docstring.

    >>> import numpy as np
    >>> x, d = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    >>> eta, _ = scale_rows(x, d, np.array([0.2]), 2.0, 0.0, 1.0)
    >>> g = scale_vjp_rows(x, d, np.array([0.2]), 2.0, 0.0, 1.0, eta, np.ones(1))
    >>> g["eps"].tolist(), g["delta"].tolist(), g["upper"] is None
    ([1.0], [[-0.2, 0.0]], True)
    """
    r = _prepare(x, d, eps, lower, upper)
    xp = r.xp
    b = r.x.shape[0]
    pa = _partials(r, p, eta)
    eb = xp.astype(etabar, r.wd)
    eb2 = xp.reshape(eb, (b, 1))
    return {
        "x": xp.astype(eb2 * pa.ex, x.dtype),
        "delta": xp.astype(eb2 * pa.ed, d.dtype),
        "eps": xp.astype(eb * pa.ee, eps.dtype),
        "lower": _bound_cotangent(xp, eb2 * pa.el, lower),
        "upper": _bound_cotangent(xp, eb2 * pa.eu, upper),
    }


def perturb_vjp_rows(
    x: Array,
    d: Array,
    eps: Array,
    p: float,
    lower: Bound,
    upper: Bound,
    eta: Array,
    ybar: Array,
) -> dict[str, Array | None]:
    """Cotangents of ``y = perturb_rows(x, d, eps, p, lower, upper)[0]`` for ``ybar``.

    ``eta`` is the forward's scale (shape ``(B,)``), ``ybar`` the ``(B, n)`` cotangent of
    ``y``. Same return format and conventions as :func:`scale_vjp_rows`; saturated elements
    pass their cotangent to the bound they sit on, unsaturated ones (and ``d_j == 0``) to
    ``x`` and ``d``, and ``etabar = sum_{j unsaturated} ybar_j d_j`` flows through ``eta``.

    >>> import numpy as np
    >>> x, d = np.array([[0.5, 0.9]]), np.array([[1.0, 1.0]])
    >>> eps = np.array([0.3])
    >>> y, eta, _ = perturb_rows(x, d, eps, 1.0, 0.0, 1.0)
    >>> g = perturb_vjp_rows(x, d, eps, 1.0, 0.0, 1.0, eta, np.array([[1.0, 0.0]]))
    >>> g["x"].tolist(), g["eps"].tolist()  # less room for x[1] -> larger eta
    ([[1.0, 1.0]], [1.0])
    """
    r = _prepare(x, d, eps, lower, upper)
    xp, zero = r.xp, r.zero
    b = r.x.shape[0]
    pa = _partials(r, p, eta)
    yb = xp.astype(ybar, r.wd)
    eta2 = xp.reshape(xp.astype(eta, r.wd), (b, 1))
    free = pa.unsat | ~r.mov  # y_j = x_j + eta d_j
    eb = xp.sum(xp.where(pa.unsat, yb * r.d, zero), axis=1)
    eb2 = xp.reshape(eb, (b, 1))
    xbar = xp.where(free, yb, zero) + eb2 * pa.ex
    dbar = xp.where(free, yb * eta2, zero) + eb2 * pa.ed
    ubar = xp.where(pa.sat & (r.d > 0), yb, zero) + eb2 * pa.eu
    lbar = xp.where(pa.sat & (r.d < 0), yb, zero) + eb2 * pa.el
    return {
        "x": xp.astype(xbar, x.dtype),
        "delta": xp.astype(dbar, d.dtype),
        "eps": xp.astype(eb * pa.ee, eps.dtype),
        "lower": _bound_cotangent(xp, lbar, lower),
        "upper": _bound_cotangent(xp, ubar, upper),
    }
