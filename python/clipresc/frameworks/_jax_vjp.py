"""The ``jax.custom_vjp`` plumbing shared by the JAX integrations (:mod:`clipresc.frameworks.jax`
for ``scale`` / ``perturb``, :mod:`clipresc.frameworks.jax_project` for ``project``).

Each integration describes one call by a static, hashable configuration ``cfg`` and gives two
functions of traced operands: ``forward(cfg, *operands) -> (out, residual)`` and
``backward(cfg, g, operands, residual) -> cotangents`` (one per operand, ``None`` for a
``None`` operand). :func:`custom_vjp` turns them into one differentiable function whose
backward gets the forward's residual (the scales ``eta``, so it never solves again), and
:func:`host_callback` runs a host function on NumPy copies through ``jax.pure_callback``
where no compiled XLA call is available.

>>> import jax, jax.numpy as jnp
>>> from clipresc.frameworks import _jax_vjp
>>> f = _jax_vjp.custom_vjp(lambda c, a: (a * c, None), lambda c, g, ops, res: (g * c,))
>>> float(jax.grad(lambda a: f(3.0, a))(jnp.float32(2.0)))
3.0
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["custom_vjp", "host_callback", "is_traced"]

Forward = Callable[..., tuple[Any, Any]]
Backward = Callable[[Any, Any, tuple[Any, ...], Any], Any]


def is_traced(*arrays: Any) -> bool:
    """Whether any of ``arrays`` is a JAX tracer (inside ``jit``, ``vmap``, ``grad``...).

    >>> is_traced(None, 1.0)
    False
    """
    jax = sys.modules["jax"]
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def custom_vjp(forward: Forward, backward: Backward) -> Callable[..., Any]:
    """``f(cfg, *operands)``: ``forward``'s output, differentiable in the operands through
    ``backward``, which gets the operands and ``forward``'s residual (``cfg`` is static).

    >>> import jax.numpy as jnp
    >>> f = custom_vjp(lambda c, a: (a + c, None), lambda c, g, ops, res: (g,))
    >>> float(f(1.0, jnp.float32(2.0)))
    3.0
    """
    jax = sys.modules["jax"]

    def call(cfg: Any, *ops: Any) -> Any:
        return forward(cfg, *ops)[0]

    fn: Any = jax.custom_vjp(call, nondiff_argnums=(0,))

    def fwd(cfg: Any, *ops: Any) -> tuple[Any, Any]:
        out, res = forward(cfg, *ops)
        return out, (ops, res)

    def bwd(cfg: Any, saved: Any, g: Any) -> tuple[Any, ...]:
        ops, res = saved
        return tuple(backward(cfg, g, ops, res))

    fn.defvjp(fwd, bwd)
    return fn  # type: ignore[no-any-return]


def host_callback(fn: Callable[..., Any], specs: Any, *ops: Any, vmap_method: str) -> Any:
    """``fn`` on host (NumPy) values of ``ops`` through ``jax.pure_callback``, returning
    arrays of ``specs`` (``jax.ShapeDtypeStruct``\\ s; ``None`` entries are no output).

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> spec = jax.ShapeDtypeStruct((2,), jnp.float32)
    >>> y = jax.jit(lambda a: host_callback(np.negative, spec, a, vmap_method="sequential"))
    >>> [float(v) for v in y(jnp.ones(2))]
    [-1.0, -1.0]
    """
    jax = sys.modules["jax"]
    return jax.pure_callback(fn, specs, *ops, vmap_method=vmap_method)
