"""float64 inside a block for the JAX tests, on every JAX the suite runs under."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def x64() -> Iterator[None]:
    """float64 inside the block only (``jax.enable_x64`` where it exists, else the older
    ``jax.experimental.enable_x64``)."""
    import jax

    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # older JAX
        from jax.experimental import enable_x64 as ctx
    with ctx(True):
        yield
