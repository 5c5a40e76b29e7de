"""Whether the GPU kernels can execute here, and what happens when they cannot.

``make test`` sets ``CLIPRESC_REQUIRE_OPENCL=1``: then a missing pyopencl or OpenCL device
fails the run with what to install, so the kernel-execution tests are never skipped
silently. A plain ``pytest`` run without it skips them, with the same reason shown by
``pytest -rs``.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

REQUIRE_ENV = "CLIPRESC_REQUIRE_OPENCL"


def reduced() -> bool:
    """CLIPRESC_KERNEL_TESTS=reduced: fewer lengths, for slow devices such as Oclgrind."""
    return os.environ.get("CLIPRESC_KERNEL_TESTS", "") == "reduced"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip (plain pytest) or fail (``make test``) because the kernels cannot execute."""
    if required():
        pytest.fail(f"{REQUIRE_ENV}=1 but the GPU kernels cannot execute: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_pyopencl() -> Any:
    try:
        import pyopencl
    except ImportError as exc:
        unavailable(f"pyopencl cannot be imported ({exc}); pip install pyopencl")
    return pyopencl


def opencl_queue() -> Any:
    """The backend's default queue (see clipresc.backends.opencl_device for the choice)."""
    from clipresc.backends import opencl_backend as ob

    try:
        return ob.default_queue()
    except RuntimeError as exc:
        unavailable(str(exc))
