""":func:`clipresc.project` and its VJP with array-API operations only (any library with an
array-API namespace: CUDA tensors, CuPy, array-api-strict, ...), on ``(rows, n)`` rows.

``p = inf`` is the closed form, ``p = 2`` takes ``eta`` from the solver of ``perturb`` for
the same arrays (:func:`eta_solver`: the CUDA kernels for CuPy arrays and CUDA tensors, else
the array-API solver of :mod:`clipresc.backends.generic`), and ``p = 1`` bisects on the
multiplier ``lam`` (a fixed number of vectorised steps, so it also runs under tracing), then
solves the linear piece the bracket ends on exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

from .._libraries import gpu_ready, library_of
from .._prepare_xp import (
    arg_shapes,
    cotangent,
    fit_cotangents,
    prepare_xp,
)
from .._project import check_project_p
from . import generic

Array = Any

BISECTION_STEPS = 100


def eta_solver(x: Array) -> Callable[..., tuple[Array, Array]]:
    """The per-row ``eta`` solver (:data:`clipresc.backends.interface.SolveRows`) that the
    ``p = 2`` projection of ``x``'s rows uses: the CUDA kernels for a CuPy array or a CUDA
    tensor where CuPy runs them (one launch, as ``perturb``'s; the values were checked
    already), else the array-API solver.

    >>> import numpy as np
    >>> eta_solver(np.zeros((1, 2))) is generic.scale_rows
    True
    """
    lib = library_of(x)
    if lib == "cupy" and gpu_ready():
        from . import cupy_rows

        return cupy_rows.scale_rows
    if lib == "torch" and x.device.type == "cuda":
        from ..frameworks import _torch_device

        kernels = _torch_device.kernel_scale_rows(x)
        if kernels is not None:
            return kernels
    return generic.scale_rows


def _renamed(err: Exception) -> Exception:
    """The array-API checks call the second array ``delta``: here it is ``z``."""
    msg = str(err).replace("delta", "z")
    return type(err)(msg)


def _prepare(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    check_project_p(p)
    xp = array_api_compat.array_namespace(x, z)
    try:
        return prepare_xp(xp, x, z, eps, p, bounds, axis, "saturate")
    except (TypeError, ValueError) as e:
        raise _renamed(e) from None


def _rows_bounds(xp: Any, lo: Any, hi: Any, x: Array) -> tuple[Array, Array]:
    def full(b: Any) -> Array:
        if isinstance(b, float):
            return xp.full(x.shape, b, dtype=x.dtype)
        return xp.broadcast_to(xp.astype(b, x.dtype), x.shape)

    return full(lo), full(hi)


def _clip(xp: Any, v: Array, lo: Array, hi: Array) -> Array:
    return xp.minimum(xp.maximum(v, lo), hi)


class _Rows:
    """The rows in the working precision with everything both directions need."""

    def __init__(self, prob: Any) -> None:
        xp = prob.xp
        self.xp = xp
        wd = generic._work_dtype(xp, prob.x, array_api_compat.device(prob.x))

        def cast(a: Array) -> Array:
            return xp.astype(a, wd)

        self.x, self.z = cast(prob.x), cast(prob.delta)
        lo, hi = _rows_bounds(xp, prob.lower, prob.upper, prob.x)
        self.lo, self.hi = cast(lo), cast(hi)
        self.eps = xp.reshape(cast(prob.eps), (-1, 1))
        self.d = self.z - self.x
        self.clipped_z = _clip(xp, self.z, self.lo, self.hi)
        self.p = prob.p

    def solve(self) -> tuple[Array, Array]:
        """``(inside, mult)`` per row (``(rows, 1)``): ``inside`` marks rows where
        ``y = clip(z)``; ``mult`` is ``t`` (p = 2, 1 inside) or ``lam`` (p = 1, 0 inside).
        The only part that searches."""
        xp, x, d, eps = self.xp, self.x, self.d, self.eps
        zero_eps = eps == 0
        if self.p == float("inf"):
            return xp.zeros_like(eps, dtype=xp.bool), xp.zeros_like(eps)
        if self.p == 2.0:
            c = self.clipped_z - x
            inside = (xp.sum(c * c, axis=1, keepdims=True) <= eps * eps) & ~zero_eps
            solve = eta_solver(x)
            eta, _ = solve(x, d, xp.reshape(eps, (-1,)), 2.0, self.lo, self.hi)
            t = xp.where(inside, 1.0, xp.reshape(xp.astype(eta, x.dtype), (-1, 1)))
            return inside, t
        b, s = xp.abs(d), self._room()
        h0 = xp.sum(xp.minimum(b, s), axis=1, keepdims=True)
        inside = (h0 <= eps) & ~zero_eps
        lo_l = xp.zeros_like(eps)
        hi_l = xp.max(b, axis=1, keepdims=True)
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo_l + hi_l)
            above = self._h(b, s, mid) > eps
            lo_l = xp.where(above, mid, lo_l)
            hi_l = xp.where(above, hi_l, mid)
        lam = 0.5 * (lo_l + hi_l)
        # the linear piece at lam, solved exactly where it has a slope
        act = (b > lam) & (b - lam < s)
        sat = (b > lam) & (b - lam >= s)
        k = xp.sum(xp.astype(act, x.dtype), axis=1, keepdims=True)
        total = xp.sum(xp.where(act, b, 0.0) + xp.where(sat, s, 0.0), axis=1, keepdims=True)
        exact = (total - eps) / xp.where(k > 0, k, 1.0)
        lam = xp.where(k > 0, xp.minimum(xp.maximum(exact, lo_l), hi_l), lam)
        lam = xp.where(inside, 0.0, xp.where(zero_eps, hi_l, lam))
        return inside, lam

    def apply(self, inside: Array, mult: Array) -> Array:
        """``y`` from :meth:`solve`'s ``(inside, mult)``: closed form, no search."""
        xp, x, d, eps = self.xp, self.x, self.d, self.eps
        if self.p == float("inf"):
            return _clip(xp, self.z, xp.maximum(self.lo, x - eps), xp.minimum(self.hi, x + eps))
        if self.p == 2.0:
            moved = x + mult * d
        else:
            moved = xp.where(xp.abs(d) > mult, self.z - xp.sign(d) * mult, x)
        return xp.where(inside, self.clipped_z, _clip(xp, moved, self.lo, self.hi))

    def unpack(self, residual: Array) -> tuple[Array, Array]:
        """:meth:`solve`'s ``(inside, mult)`` from a residual of :func:`project_residual`
        (``mult``, negative where ``inside``)."""
        xp = self.xp
        r = xp.reshape(xp.astype(residual, self.x.dtype), (-1, 1))
        inside = r < 0
        return inside, xp.where(inside, 1.0 if self.p == 2.0 else 0.0, r)

    def _room(self) -> Array:
        xp = self.xp
        return xp.where(self.d > 0, self.hi - self.x, self.x - self.lo)

    def _h(self, b: Array, s: Array, lam: Array) -> Array:
        xp = self.xp
        return xp.sum(xp.minimum(xp.maximum(b - lam, 0.0), s), axis=1, keepdims=True)

    def vjp(
        self, g: Array, solved: tuple[Array, Array] | None = None
    ) -> tuple[Array, Array, Array]:
        """``(gx, gz, geps)`` for the cotangent ``g`` of ``y`` (see :func:`project_vjp`);
        ``solved``: the forward's ``(inside, mult)`` (:meth:`solve`), or ``None`` to solve."""
        xp, x, d, eps = self.xp, self.x, self.d, self.eps
        lo, hi = self.lo, self.hi
        inside, mult = self.solve() if solved is None else solved
        zeros = xp.zeros_like(x)
        zero_eps = eps == 0
        if self.p == float("inf"):
            bl, bh = x - eps, x + eps
            free = (self.z > xp.maximum(lo, bl)) & (self.z < xp.minimum(hi, bh))
            low = ~free & (self.z <= bl) & (bl > lo)
            up = ~free & ~low & (self.z >= bh) & (bh < hi)
            gz = xp.where(free, g, zeros)
            gx = xp.where(low | up, g, zeros)
            ge = xp.sum(xp.where(up, g, zeros) - xp.where(low, g, zeros), axis=1)
            return gx, gz, ge
        pass_z = xp.where((self.z > lo) & (self.z < hi), g, zeros)
        if self.p == 2.0:
            t = mult
            y = self.apply(inside, mult)
            free = (y > lo) & (y < hi)
            ssq = xp.sum(xp.where(free, d * d, zeros), axis=1, keepdims=True)
            gd = xp.sum(xp.where(free, g * d, zeros), axis=1, keepdims=True)
            c = xp.where(ssq > 0, gd / xp.where(ssq > 0, ssq, 1.0), 0.0)
            tsafe = xp.where(t > 0, t, 1.0)
            gz = xp.where(free, t * g - c * t * d, zeros)
            gx = xp.where(free, (1 - t) * g + c * t * d, c * (y - x) / tsafe)
            ge = xp.reshape(c * eps / tsafe, (-1,))
        else:
            lam = mult
            b, s = xp.abs(d), self._room()
            sign = xp.sign(d)
            strict_act = (b > lam) & (b - lam < s)
            k_strict = xp.sum(xp.astype(strict_act, x.dtype), axis=1, keepdims=True)
            strict = k_strict > 0
            moving = xp.where(strict, b > lam, (b >= lam) & (b > 0))
            act = moving & (b - lam < s)
            sat = moving & ~act
            k = xp.sum(xp.astype(act, x.dtype), axis=1, keepdims=True)
            gs = xp.sum(xp.where(act, g * sign, zeros), axis=1, keepdims=True)
            q = xp.where(k > 0, gs / xp.where(k > 0, k, 1.0), 0.0)
            gz = xp.where(act, g - sign * q, zeros)
            gx = xp.where(act | sat, sign * q, xp.where(moving, zeros, g))
            ge = xp.reshape(q, (-1,))
        gz = xp.where(inside, pass_z, xp.where(zero_eps, zeros, gz))
        gx = xp.where(inside, zeros, xp.where(zero_eps, g, gx))
        ge = xp.where(xp.reshape(inside | zero_eps, (-1,)) & (self.p == 2.0), 0.0, ge)
        ge = xp.where(xp.reshape(inside, (-1,)), 0.0, ge)
        return gx, gz, ge


def project(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> Any:
    """:func:`clipresc.project` on array-API arrays.

    >>> import numpy as np
    >>> project(np.array([[0.5, 0.9]]), np.array([[2.0, 0.9]]), 0.25, 1, (0.0, 1.0), None)
    array([[0.75, 0.9 ]])
    """
    return project_residual(x, z, eps, p, bounds, axis)[0]


def project_residual(x: Any, z: Any, eps: Any, p: Any, bounds: Any, axis: Any) -> tuple[Any, Any]:
    """:func:`project` and the residual its VJP needs (:func:`project_vjp`'s ``residual``):
    the per-vector multiplier (``t`` for p = 2, ``lam`` for p = 1, 0 for inf) in ``eta``'s
    shape and the work dtype, negative where ``clip(z)`` is inside the ball.

    >>> import numpy as np
    >>> x = np.array([[0.5, 0.9], [0.5, 0.9]]); z = np.array([[2.0, 0.9], [0.6, 0.9]])
    >>> y, r = project_residual(x, z, 0.25, 1, (0.0, 1.0), None)
    >>> r.tolist()  # lam = 1.5 - 0.25; the second row is inside
    [[1.25], [-1.0]]
    """
    prob = _prepare(x, z, eps, p, bounds, axis)
    xp, lay = prob.xp, prob.layout
    rows = _Rows(prob)
    inside, mult = rows.solve()
    y = xp.astype(lay.from_rows_xp(xp, rows.apply(inside, mult)), prob.dtype)
    return y, xp.reshape(xp.where(inside, -1.0, mult), lay.eta_shape)


def project_vjp(
    x: Any, z: Any, eps: Any, ybar: Any, p: Any, bounds: Any, axis: Any, residual: Any = None
) -> dict[str, Any]:
    """:func:`clipresc.project_vjp` on array-API arrays; with the forward's ``residual``
    (:func:`project_residual`) it searches nothing."""
    prob = _prepare(x, z, eps, p, bounds, axis)
    xp, lay = prob.xp, prob.layout
    rows = _Rows(prob)
    solved = None if residual is None else rows.unpack(residual)
    g = lay.to_rows_xp(xp, cotangent(xp, ybar, lay.shape, "ybar", prob.x))
    gx, gz, ge = rows.vjp(xp.astype(g, rows.x.dtype), solved)
    shapes = arg_shapes(eps, None, lay)
    out = fit_cotangents(
        xp,
        {"x": gx, "delta": gz, "eps": ge, "lower": None, "upper": None},
        lay,
        shapes,
        prob.dtype,
        prob.delta_dtype,
    )
    return {"x": out["x"], "z": out["delta"], "eps": out["eps"]}
