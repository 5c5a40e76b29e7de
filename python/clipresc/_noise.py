"""``clipresc.noise``: seeded noise drawn in the Rust core, at an exact size after clipping.

The noise of vector ``r`` (its index in the batch, counted over the batch axes in C order)
depends only on the seed, ``row_offset + r``, the distribution and the dtype the core
computes in (float32 for float16/float32 input, float64 for float64). It does not depend on
the number of threads, on the batch size, on the vector length (element ``j`` of a vector
gets the same value in a longer vector) or on how a batch is split into calls: processing
rows ``a:b`` of a batch with ``row_offset=a`` gives rows ``a:b`` of the whole result.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from . import _errors
from ._args import Axis
from ._prepare import Problem, check_out, prepare

DISTRIBUTIONS: tuple[str, ...] = ("gaussian", "uniform", "laplace", "rademacher")
"""The noise distributions (their scale does not matter: ``eta`` rescales the noise)."""

DEFAULT_BOUNDS = (0.0, 1.0)
_MAX_STREAM = 2**64

_NATIVE = ("torch", "jax", "tensorflow", "cupy")
"""Libraries whose arrays :mod:`clipresc._noise_native` takes and returns."""

SeedLike = Union[None, int, np.integer[Any], np.random.SeedSequence]


def parse_distribution(distribution: Any) -> str:
    """Validate the distribution name.

    >>> parse_distribution("laplace")
    'laplace'
    >>> parse_distribution("cauchy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: distribution must be one of 'gaussian', 'uniform', ...; got 'cauchy'
    """
    if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
        names = ", ".join(repr(d) for d in DISTRIBUTIONS)
        raise _errors.bad_distribution(names, distribution)
    return distribution


def seed_sequence(seed: Any) -> np.random.SeedSequence:
    """The :class:`numpy.random.SeedSequence` behind ``seed``.

    ``None`` draws fresh entropy from the operating system; a non-negative int (or a
    ``SeedSequence``) is reproducible.

    >>> seed_sequence(5).entropy
    5
    >>> seed_sequence(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be None, a non-negative int or a numpy.random.SeedSequence; got -1
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise _errors.bad_seed(seed)
    return np.random.SeedSequence(int(seed))


def seed_key(seed: Any) -> bytes:
    """The 32-byte key of the core's noise stream for ``seed`` (see :func:`seed_sequence`).

    >>> len(seed_key(0)), seed_key(0) == seed_key(0), seed_key(0) == seed_key(1)
    (32, True, False)
    """
    words = seed_sequence(seed).generate_state(8, np.uint32)
    return words.astype("<u4").tobytes()


def parse_row_offset(row_offset: Any, rows: int) -> int:
    """Validate ``row_offset``: an int with ``0 <= row_offset`` and ``row_offset + rows <= 2**64``.

    >>> parse_row_offset(3, 10)
    3
    """
    if isinstance(row_offset, (bool, np.bool_)):
        raise _errors.row_offset_not_int(row_offset)
    try:
        off = operator.index(row_offset)
    except TypeError:
        raise _errors.row_offset_not_int(row_offset) from None
    if off < 0 or off + rows > _MAX_STREAM:
        raise _errors.row_offset_range(off)
    return off


def prepare_noise(
    x: Any,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    axis: Axis,
    unreachable: Any,
) -> Problem:
    """Check the arguments of :func:`noise` and lay ``x`` out as ``(rows, n)``.

    The problem's ``delta`` is ``x`` itself (unused: the core draws the direction).
    """
    return prepare(x, x, eps, p, bounds, axis, unreachable)


def noise(
    x: Any,
    eps: Any,
    *,
    p: float = 2.0,
    bounds: Sequence[Any] | None = DEFAULT_BOUNDS,
    distribution: str = "gaussian",
    seed: SeedLike = None,
    axis: Axis = None,
    row_offset: int = 0,
    unreachable: str = "saturate",
    out: np.ndarray[Any, Any] | None = None,
) -> Any:
    """Random noise added to ``x`` so that, after clipping, each vector moved exactly ``eps``.

    Returns ``clip(x + eta * n, lower, upper)`` where ``n`` is drawn in the Rust core (seeded,
    counter-based, one stream per vector) and ``eta`` is the exact clipping-aware scale of
    :func:`clipresc.scale`, computed fused: the only full-size array is the result.

    Args:
        x: points inside the box, a float16/32/64 (or bfloat16) array of NumPy, PyTorch,
            JAX, TensorFlow, CuPy or Dask (a lazy result); axis 0 is the batch by default.
            The result is in ``x``'s library, device and dtype with the NumPy path's bits
            (see :mod:`clipresc._noise_native`: CUDA tensors and CuPy arrays go through the
            host; no gradient flows, a tensor that requires grad gives one that does not).
        eps: the size wanted after clipping: a scalar or one value per vector.
        p: any real ``p > 0`` or ``math.inf``.
        bounds: ``(lower, upper)`` as in :func:`clipresc.perturb`; ``None`` for no clipping.
        distribution: ``"gaussian"``, ``"uniform"`` (on ``[-1, 1]``), ``"laplace"`` or
            ``"rademacher"`` (random signs).
        seed: ``None`` (fresh entropy), a non-negative int or a
            :class:`numpy.random.SeedSequence`; the same seed gives the same result whatever
            the thread count or chunking. An integer scalar of ``x``'s library counts as
            its int value; under ``jax.jit`` the seed must be given, static (the compiled
            function repeats its noise) or a traced JAX integer scalar.
        axis: the axes forming one vector (default: all but the first).
        row_offset: the global index of this batch's first vector, for processing a large
            batch in pieces: rows ``a:b`` with ``row_offset=a`` equal rows ``a:b`` of one call.
        unreachable: ``"saturate"`` or ``"raise"``, as in :func:`clipresc.perturb`.
        out: a NumPy array of ``x``'s shape and dtype to write the result into (``x`` must
            be a NumPy array then, else ``TypeError``). When it is C-contiguous and the
            vector axes are the trailing ones, the core writes into it directly, which
            saves allocating (and page-faulting) a result per call in a preprocessing loop.
            It must not overlap ``x``. If the call raises after checking its arguments,
            ``out`` is filled with NaN, never left half-written.

    Returns:
        An array of ``x``'s library, shape and dtype (``out`` itself when given).

    >>> import numpy as np, clipresc
    >>> x = np.random.default_rng(0).uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
    >>> y = clipresc.noise(x, 2.0, seed=0)
    >>> np.allclose(np.linalg.norm((y - x).reshape(4, -1), axis=1), 2.0, rtol=1e-5)
    True
    >>> bool(np.array_equal(clipresc.noise(x[2:], 2.0, seed=0, row_offset=2), y[2:]))
    True
    >>> buf = np.empty_like(x)
    >>> clipresc.noise(x, 2.0, seed=0, out=buf) is buf and bool(np.array_equal(buf, y))
    True
    >>> clipresc.noise(x, 2.0, distribution="normal")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: distribution must be one of 'gaussian', 'uniform', ...; got 'normal'
    """
    dist = parse_distribution(distribution)
    from ._libraries import compiling_torch_module

    kw: dict[str, Any] = {
        "p": p,
        "bounds": bounds,
        "distribution": dist,
        "axis": axis,
        "row_offset": row_offset,
        "unreachable": unreachable,
    }
    if out is None and compiling_torch_module(x) is not None:  # torch.compile: one operator
        from .frameworks import _torch_noise

        return _torch_noise.noise(x, eps, seed=seed, **kw)
    fam = _library_of(x, eps, bounds)
    if fam in _NATIVE:
        if out is not None:
            raise _errors.out_numpy_only(fam)
        from . import _noise_native

        return _noise_native.noise(fam, x, eps, seed=seed, **kw)
    seq = seed_sequence(seed)
    if fam == "dask":
        if out is not None:
            raise _errors.out_dask()
        from .backends import dask_backend

        return dask_backend.noise(x, eps, seed=seq, **kw)
    return noise_numpy(x, eps, p, bounds, dist, seq, axis, row_offset, unreachable, out=out)


setattr(noise, "autograph_info__", None)  # noqa: B010  # AutoGraph: see clipresc._api


def noise_numpy(
    x: Any,
    eps: Any,
    p: Any,
    bounds: Sequence[Any] | None,
    distribution: str,
    seed: Any,
    axis: Any,
    row_offset: Any,
    unreachable: Any,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """:func:`noise` of NumPy arrays in the Rust core: the reference the other libraries match.

    >>> x = np.full((2, 3), 0.5)
    >>> y = noise_numpy(x, 0.1, 2.0, (0.0, 1.0), "gaussian", 0, None, 0, "saturate")
    >>> bool(np.array_equal(y, noise(x, 0.1, seed=0)))
    True
    """
    from .backends import row_backend

    prob = prepare_noise(x, eps, p, bounds, axis, unreachable)
    off = parse_row_offset(row_offset, prob.layout.rows)
    key = seed_key(seed)
    if out is not None:
        check_out(out, prob, [("x", x), ("lower", prob.lower), ("upper", prob.upper)])
    res: np.ndarray[Any, Any] = row_backend("numpy").noise(prob, distribution, key, off, out=out)
    return res


def _library_of(x: Any, eps: Any, bounds: Any) -> str | None:
    """The library of ``x`` (``None`` for NumPy and plain values), checking that ``eps`` and
    array bounds are numbers, NumPy arrays or arrays of that same library."""
    from ._libraries import check_dense
    from ._libraries import library_of as family_of

    fam = family_of(x)
    check_dense("x", x, fam)
    if fam in (None, "numpy"):
        return None
    others = {"eps": eps}
    if bounds is not None and isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        others["lower"], others["upper"] = bounds[0], bounds[1]
    for name, v in others.items():
        f = family_of(v)
        if f not in (None, "numpy", fam) and not (fam == "dask" and f == "numpy"):
            raise _errors.mixed_libraries(f"x: {fam}, {name}: {f}")
    return fam


def sample(
    shape: tuple[int, int],
    *,
    distribution: str = "gaussian",
    seed: SeedLike = None,
    row_offset: int = 0,
    dtype: Any = np.float64,
) -> np.ndarray[Any, Any]:
    """The raw ``(rows, n)`` noise that :func:`noise` rescales (for checks and tests).

    ``noise(x, eps, seed=s)`` equals ``perturb(x, sample(...), eps)`` for ``x`` of shape
    ``(rows, n)`` and the same seed, distribution and dtype.

    >>> import numpy as np
    >>> sample((2, 3), distribution="rademacher", seed=1, dtype=np.float32)
    array([[-1., -1., -1.],
           [ 1.,  1.,  1.]], dtype=float32)
    """
    dist = parse_distribution(distribution)
    rows, n = (int(s) for s in shape)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise _errors.noise_dtype(dt)
    off = parse_row_offset(row_offset, rows)
    out = np.empty((rows, n), dtype=dt)
    from . import _clipresc

    _clipresc.sample_into(dist, seed_key(seed), off, out)
    return out
