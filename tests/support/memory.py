"""How much memory a call allocates, for the tests of the ``out=`` paths."""

from __future__ import annotations

import tracemalloc
from typing import Callable


def peak_traced_bytes(fn: Callable[[], object]) -> int:
    """The peak of the memory Python's allocators (NumPy's included) hand out during
    ``fn()``.

    >>> peak_traced_bytes(lambda: bytearray(1 << 20)) >= 1 << 20
    True
    """
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
