"""``clipresc.noise`` under a JAX trace (``jit``, ``vmap``) as an XLA FFI custom call on CPU
(the handler ``noise`` of ``_clipresc.jax_ffi_targets``): the core draws the noise on XLA's
buffers, with the bits of the NumPy path for the same seed.

The seed reaches the handler as an operand: a static seed (a Python int or
``SeedSequence``) as the 8 words of its key, computed here as the NumPy path computes it; a
traced JAX integer scalar as itself, turned into ``SeedSequence(seed)``'s key by the handler,
so ``seed=step`` gives the noise of ``seed=int(step)``. Under ``vmap`` every mapped element
gets its own key and its rows use streams ``row_offset ...``, as a loop over the elements
would. Where the handlers are not registered, or on a platform other than CPU, the caller's
``pure_callback`` runs instead (see :func:`clipresc.frameworks._jax_ffi.select`).

>>> import jax, jax.numpy as jnp, numpy as np, clipresc
>>> x = jnp.full((2, 3), 0.5)
>>> y = jax.jit(lambda x, s: clipresc.noise(x, 0.1, seed=s))(x, jnp.int32(4))
>>> bool(np.array_equal(np.asarray(y), clipresc.noise(np.asarray(x), 0.1, seed=4)))
True
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

import numpy as np

from .._noise import noise_numpy, seed_key
from . import _jax_ffi
from . import jax as cj


class NoiseConfig(NamedTuple):
    """What the handler needs besides :class:`clipresc.frameworks.jax._Config`."""

    call: Any  # the _Config of the call
    distribution: str
    row_offset: int
    seed_is_key: bool


def noise(
    x: Any, eps: Any, bounds: Any, seed: Any, kw: dict[str, Any], fallback: Callable[[], Any]
) -> Any:
    """The noisy ``x`` (traced), through the FFI handler where it can run, else ``fallback()``
    (the ``pure_callback`` path). ``seed`` is a ``SeedSequence``, an int or a traced integer
    scalar; ``kw`` holds ``p``, ``distribution``, ``axis``, ``row_offset``, ``unreachable``.
    """
    jax = sys.modules["jax"]
    jnp = sys.modules["jax.numpy"]
    parsed = cj.parse("noise", x, x, eps, kw["p"], bounds, kw["axis"], kw["unreachable"])
    is_key = not isinstance(seed, jax.core.Tracer)
    if is_key:
        seeds = jnp.asarray(np.frombuffer(seed_key(seed), dtype="<u4").astype(np.uint32))
    elif seed.dtype in (jnp.int32, jnp.int64, jnp.uint32, jnp.uint64):
        seeds = seed
    else:  # narrower integers: widened (the value is the same)
        seeds = seed.astype(
            jnp.int64 if jnp.issubdtype(seed.dtype, jnp.signedinteger) else jnp.uint32
        )
    ncfg = NoiseConfig(parsed.cfg, kw["distribution"], int(kw["row_offset"]), is_key)
    traced = jax.core.Tracer
    ops = [jax.lax.stop_gradient(a) if isinstance(a, traced) else a for a in parsed[1:6]]
    x_, _, e, lo, hi = ops

    def ffi(_: Any) -> Any:
        return _jax_ffi.noise(ncfg, x_, e, lo, hi, seeds)

    y = _jax_ffi.select(ffi, lambda _: fallback(), None)
    return y if y.dtype == parsed.out_dtype else y.astype(parsed.out_dtype)


def explain(ncfg: NoiseConfig, arrays: tuple[Any, ...], inv: tuple[int, ...], k: int) -> str:
    """The NumPy path's message for the first mapped element of a rejected handler call.

    ``arrays`` are the handler's operands (``x`` twice, ``eps``, array bounds, seeds) with
    ``k`` leading mapped axes; ``inv`` puts ``x``'s axes back in the caller's order.
    """
    cfg = ncfg.call
    x, _, e = arrays[:3]
    rest = list(arrays[3:])
    seeds = rest.pop()
    sides = [
        rest.pop(0) if shape is not None else None for shape in (cfg.lower_shape, cfg.upper_shape)
    ]
    xs = np.transpose(x, inv)
    sides = [None if b is None else np.transpose(b, inv) for b in sides]
    for idx in np.ndindex(*x.shape[:k]):
        pair = [s if b is None else b[idx] for b, s in zip(sides, (cfg.lower_s, cfg.upper_s))]
        # a static seed's key cannot be wrong: any seed gives the same checks
        seed = 0 if ncfg.seed_is_key else int(seeds[idx])
        try:
            noise_numpy(
                xs[idx],
                e[idx],
                cfg.p,
                tuple(pair),
                ncfg.distribution,
                seed,
                cfg.axes,
                ncfg.row_offset,
                cfg.unreachable,
            )
        except Exception as err:
            return str(err)
    return "clipresc: invalid input"
