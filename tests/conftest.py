"""pytest configuration: hypothesis profiles, and fixtures several test files share.

``ci`` (default): moderate example counts, no deadline. ``fuzz``: 5000 examples per
property test (``CLIPRESC_FUZZ_EXAMPLES`` overrides; ``make fuzz`` passes FUZZ_EXAMPLES).
Select with ``HYPOTHESIS_PROFILE=fuzz pytest tests``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    parent=settings.get_profile("ci"),
    max_examples=int(os.environ.get("CLIPRESC_FUZZ_EXAMPLES", "5000")),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def no_vmap_fallback() -> Any:
    """Under ``torch.func.vmap``, ops without a batching rule raise instead of looping (and
    warning): a test using it proves the rule exists."""
    torch = pytest.importorskip("torch")
    before = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    yield
    torch._C._functorch._set_vmap_fallback_enabled(before)


#: Test files that execute the GPU kernels (as OpenCL C on a CPU device).
_KERNEL_EXEC_FILES = ("tests/gpu/test_opencl_exec.py", "tests/gpu/test_cupy_backend_emulated.py")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which OpenCL device executed the GPU kernels, and how many such tests ran."""
    counts = {
        outcome: sum(
            1
            for r in terminalreporter.stats.get(outcome, [])
            if getattr(r, "when", "call") == "call" or outcome != "passed"
            if str(getattr(r, "nodeid", "")).startswith(_KERNEL_EXEC_FILES)
        )
        for outcome in ("passed", "failed", "error", "skipped")
    }
    if not any(counts.values()):
        return
    opencl = sys.modules.get("clipresc.backends.opencl_backend")
    device = opencl.default_device_description() if opencl is not None else None
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    terminalreporter.write_sep("-", "GPU kernel execution")
    terminalreporter.write_line(f"OpenCL device: {device or 'none'}; kernel tests: {summary}")
