"""Dask arrays: lazy ``scale``, ``perturb`` and ``noise`` by ``map_blocks`` over batch chunks.

Each block is rechunked to hold whole vectors, and only the first batch axis stays chunked,
so the vectors of a block are a contiguous range ``a:b`` of the batch (in C order over the
batch axes). Each task runs the Rust core on its block through the NumPy backend; ``noise``
passes ``row_offset = a`` so the result is identical to the in-memory one for the same seed.

Argument checks that need no data (dtypes, shapes, ``p``, ``axis``, ``eps``, ``bounds``,
``distribution``, ``seed``) run eagerly; checks of the values (``x`` outside its bounds,
non-finite data, ``unreachable="raise"``) run in the tasks, at compute time, and report
indices in the coordinates of the whole array.

This module imports dask; clipresc imports it only when the caller passed a Dask array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from .. import _errors
from .._args import Axis, check_real_dtype, work_dtype
from .._call import describe
from .._layout import Layout
from .._noise import parse_distribution, parse_row_offset, prepare_noise, seed_key
from .._prepare import parse_bounds, parse_eps, prepare
from . import row_backend

__all__ = ["forward", "noise"]


class _Plan:
    """How a Dask array of ``shape`` with vector axes ``vec`` is split into blocks."""

    def __init__(self, shape: tuple[int, ...], vec: tuple[int, ...]) -> None:
        self.layout = Layout.of(shape, vec)
        batch = self.layout.batch_axes
        self.first = batch[0] if batch else None
        """The one batch axis that stays chunked (None: the array is a single vector)."""
        rest = [shape[a] for a in batch[1:]]
        self.rows_per_index = math.prod(rest)
        """Vectors per index of the first batch axis."""

    def rechunk(self, x: da.Array) -> da.Array:
        """``x`` with whole vectors per block (only the first batch axis chunked)."""
        whole = {a: -1 for a in range(x.ndim) if a != self.first}
        if all(len(x.chunks[a]) == 1 for a in whole):
            return x
        if self.first is not None:
            whole[self.first] = "auto"  # type: ignore[assignment]
        return x.rechunk(whole)

    def row_range(self, block_info: dict[Any, Any] | None) -> tuple[int, int]:
        """Global rows ``a:b`` of the block described by ``block_info``."""
        if self.first is None or block_info is None:
            return 0, self.layout.rows
        lo, hi = block_info[0]["array-location"][self.first]
        return lo * self.rows_per_index, hi * self.rows_per_index

    def globalize(self, err: ValueError, block_info: dict[Any, Any] | None) -> ValueError:
        """``err`` with the block's indices turned into indices of the whole array."""
        if self.first is None or block_info is None:
            return err
        start = block_info[0]["array-location"][self.first][0]
        context = f" (in the Dask block of vectors {self.row_range(block_info)})"
        check = _errors.check_of(err)
        if check is None:
            return ValueError(f"{err}{context}")
        return check.rebased(self.first, start, context).error()


Slots = list[tuple[str, Any]]
"""How a task rebuilds ``bounds``: per side ``("const", value)`` or ``("block", i)`` (the
``i``-th extra block it receives); ``None`` for ``bounds=None``."""


def _bound_args(
    bounds: Sequence[Any] | None, plan: _Plan, x: da.Array
) -> tuple[list[da.Array], Slots | None]:
    """Split ``bounds`` into Dask arrays that vary over the batch (passed blockwise) and
    values that do not (passed whole to every task), checking what can be checked eagerly."""
    if bounds is None:
        return [], None
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise _errors.bounds_not_pair()
    lay = plan.layout
    nd = len(lay.shape)
    arrays: list[da.Array] = []
    slots: Slots = []
    consts: list[Any] = []
    for side, value in zip(("lower", "upper"), bounds):
        v = value.compute() if isinstance(value, da.Array) and value.ndim == 0 else value
        shape = tuple(np.shape(v)) if v is not None else ()
        if len(shape) > nd or np.broadcast_shapes(shape, lay.shape) != lay.shape:
            raise _errors.bound_shape(side, shape, lay.shape)
        padded = (1,) * (nd - len(shape)) + shape
        if v is None or all(padded[a] == 1 for a in lay.batch_axes):
            v = v.compute() if isinstance(v, da.Array) else v
            slots.append(("const", v))
            consts.append(v)
        else:
            full = da.broadcast_to(da.asarray(v).reshape(padded), lay.shape)
            arrays.append(full.rechunk(x.chunks))
            slots.append(("block", len(arrays) - 1))
            consts.append(None)
    parse_bounds((consts[0], consts[1]), lay, work_dtype(x.dtype))  # NaN, crossing, types
    return arrays, slots


def _rebuild(slots: Slots | None, blocks: Sequence[Any]) -> Sequence[Any] | None:
    if slots is None:
        return None
    return tuple(v if kind == "const" else blocks[v] for kind, v in slots)


def _eps_block(eps: float | np.ndarray[Any, Any], a: int, b: int) -> Any:
    return eps if isinstance(eps, float) else eps[a:b]


class _Common:
    """The eager part shared by :func:`forward` and :func:`noise`."""

    def __init__(
        self, x: da.Array, eps: Any, p: Any, bounds: Any, axis: Any, unreachable: Any
    ) -> None:
        if any(math.isnan(s) for s in x.shape):
            raise _errors.unknown_dask_shape()
        shape = tuple(int(s) for s in x.shape)
        call = describe(shape, x.dtype, shape, x.dtype, p, axis, unreachable)
        self.plan = _Plan(shape, call.vec_axes)
        self.x = self.plan.rechunk(x)
        if isinstance(eps, da.Array):
            eps = eps.compute()
        self.eps = parse_eps(eps, self.plan.layout)
        self.arrays, self.slots = _bound_args(bounds, self.plan, self.x)
        self.args = (p, axis, unreachable)

    def map(self, kind: str, *arrays: da.Array, chunks: Any = None, **kw: Any) -> da.Array:
        """``kind`` by :func:`_block` over ``arrays`` and the bound blocks."""
        x = self.x
        token = tokenize(
            kind,
            *(a.name for a in (*arrays, *self.arrays)),
            self.eps,
            self.slots,
            self.args,
            kw,
        )
        return da.map_blocks(
            _block,
            *arrays,
            *self.arrays,
            chunks=chunks if chunks is not None else x.chunks,
            dtype=x.dtype,
            meta=np.empty((0,) * x.ndim, dtype=x.dtype),
            name=f"clipresc-{kind}-{token}",
            kind=kind,
            plan=self.plan,
            eps=self.eps,
            slots=self.slots,
            args=self.args,
            **kw,
        )


def _pair(x: Any, delta: Any) -> tuple[da.Array, da.Array]:
    """``x`` and ``delta`` as Dask arrays of one chunking (either may be NumPy)."""
    xs, ds = tuple(np.shape(x)), tuple(np.shape(delta))
    if xs != ds:
        raise _errors.shape_mismatch(ds, xs)
    like = x if isinstance(x, da.Array) else delta
    xd = x if isinstance(x, da.Array) else da.from_array(np.asarray(x), chunks=like.chunks)
    dd = (
        delta
        if isinstance(delta, da.Array)
        else da.from_array(np.asarray(delta), chunks=like.chunks)
    )
    check_real_dtype(dd.dtype, "delta")
    return xd, dd


def _block(
    *blocks: Any,
    kind: str,
    plan: _Plan,
    eps: Any,
    slots: Any,
    args: Any,
    noise: tuple[str, bytes, int] | None = None,
    block_info: Any = None,
) -> Any:
    """One task: ``kind`` on the block's rows ``a:b`` through the Rust core, value errors
    at the whole array's indices. ``blocks`` are ``x``, ``delta`` (not for ``noise``) and
    the bound blocks; ``noise`` is ``(distribution, key, row offset of the array)``."""
    a, b = plan.row_range(block_info)
    p, axis, unreachable = args
    core = row_backend("dask")
    try:
        if noise is not None:
            bounds = _rebuild(slots, blocks[1:])
            prob = prepare_noise(blocks[0], _eps_block(eps, a, b), p, bounds, axis, unreachable)
            distribution, key, base = noise
            return core.noise(prob, distribution, key, base + a)
        bounds = _rebuild(slots, blocks[2:])
        prob = prepare(blocks[0], blocks[1], _eps_block(eps, a, b), p, bounds, axis, unreachable)
        return core.scale(prob) if kind == "scale" else core.perturb(prob)
    except ValueError as e:
        raise plan.globalize(e, block_info) from None


def forward(
    kind: str,
    x: Any,
    delta: Any,
    eps: Any,
    p: float,
    bounds: Sequence[Any] | None,
    axis: int | Sequence[int] | None,
    unreachable: str,
) -> da.Array:
    """Lazy :func:`clipresc.scale` (``kind="scale"``: ``eta`` with ``x``'s shape, vector
    axes of size 1) or :func:`clipresc.perturb` (blockwise and fused)."""
    xd, dd = _pair(x, delta)
    c = _Common(xd, eps, p, bounds, axis, unreachable)
    chunks = None
    if kind == "scale":
        vec = set(c.plan.layout.vec_axes)
        chunks = tuple((1,) if a in vec else ch for a, ch in enumerate(c.x.chunks))
    return c.map(kind, c.x, dd.rechunk(c.x.chunks), chunks=chunks)


def noise(
    x: da.Array,
    eps: Any,
    *,
    p: float,
    bounds: Sequence[Any] | None,
    distribution: str,
    seed: np.random.SeedSequence,
    axis: Axis,
    row_offset: int,
    unreachable: str,
) -> da.Array:
    """Lazy :func:`clipresc.noise`, identical to the in-memory result for the same seed."""
    dist = parse_distribution(distribution)
    c = _Common(x, eps, p, bounds, axis, unreachable)
    base = parse_row_offset(row_offset, c.plan.layout.rows)
    return c.map("noise", c.x, noise=(dist, seed_key(seed), base))
