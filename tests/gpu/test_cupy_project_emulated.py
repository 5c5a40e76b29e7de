"""``clipresc.project`` p = 2 on the GPU path: ``eta`` from the CUDA kernels (run here as
OpenCL through the stand-in CuPy of ``test_cupy_backend_emulated``), the closed-form
apply around it; and which solver :func:`generic_project.eta_solver` picks for which arrays.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import test_cupy_backend_emulated as emu

import clipresc
from clipresc.backends import cupy_rows, generic, generic_project
from project_oracle import bisect_project

fake_cupy = emu.fake_cupy
LAUNCHED = emu.LAUNCHED


def _case(dtype: Any, seed: int, bounds: str) -> tuple[Any, ...]:
    """Rows of a PGD-like step ``z`` from ``x`` whose clipped size exceeds ``eps`` in most
    rows (the ball is active there) and is inside it in one."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (6, 257)).astype(dtype)
    z = (x + rng.normal(scale=0.3, size=x.shape)).astype(dtype)
    eps = rng.uniform(0.5, 2.0, 6)
    eps[2] = 100.0  # clip(z) inside the ball: y = clip(z)
    if bounds == "scalar":
        lo, hi = 0.0, 1.0
    else:  # per element
        lo = np.minimum(x, rng.uniform(0.0, 0.2, x.shape)).astype(dtype)
        hi = np.maximum(x, rng.uniform(0.8, 1.0, x.shape)).astype(dtype)
    return x, z, eps, lo, hi


@pytest.mark.parametrize("bounds", ["scalar", "elements"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_project_p2_with_the_kernels_eta(
    fake_cupy: None, monkeypatch: pytest.MonkeyPatch, dtype: Any, bounds: str
) -> None:
    """The array-API projection with the kernels as its eta solver gives the 120-bit
    oracle's projection (and the Rust core's), and the forward kernel is what ran."""
    x, z, eps, lo, hi = _case(dtype, 7, bounds)
    monkeypatch.setattr(generic_project, "eta_solver", lambda x: cupy_rows.scale_rows)
    LAUNCHED.clear()
    y, residual = generic_project.project_residual(x, z, eps, 2.0, (lo, hi), None)
    assert "clipresc_forward" in LAUNCHED
    assert y.dtype == dtype and residual.shape == (6, 1)
    assert residual[2, 0] < 0 and (residual[[0, 1, 3, 4, 5], 0] < 1).all()
    rtol, atol = (2e-6, 1e-6) if dtype == np.float32 else (1e-12, 1e-13)
    np.testing.assert_allclose(y, clipresc.project(x, z, eps, p=2, bounds=(lo, hi)), rtol, atol)
    lo_b, hi_b = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    for r in (0, 2, 5):
        want = bisect_project(x[r], z[r], lo_b[r], hi_b[r], eps[r], 2.0)
        np.testing.assert_allclose(y[r], want, rtol, atol, err_msg=f"row {r}")


class _Tensor:
    """Stands for a CUDA tensor as far as :func:`generic_project.eta_solver` looks."""

    device = types.SimpleNamespace(type="cuda")


def test_eta_solver_picks_the_kernels_for_gpu_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """CuPy arrays on a machine with a GPU: the CuPy kernels; CUDA tensors: the kernels
    through torch's stream (``_torch_device.kernel_scale_rows``), or the array-API solver
    where CuPy cannot run them; anything else: the array-API solver."""
    assert generic_project.eta_solver(np.zeros((2, 3))) is generic.scale_rows
    monkeypatch.setattr(generic_project, "library_of", lambda a: "cupy")
    monkeypatch.setattr(generic_project, "gpu_ready", lambda: True)
    assert generic_project.eta_solver(object()) is cupy_rows.scale_rows
    monkeypatch.setattr(generic_project, "gpu_ready", lambda: False)
    assert generic_project.eta_solver(object()) is generic.scale_rows
    torch_device = types.ModuleType("clipresc.frameworks._torch_device")
    sentinel = object()
    torch_device.kernel_scale_rows = lambda x: sentinel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "clipresc.frameworks._torch_device", torch_device)
    import clipresc.frameworks as frameworks

    monkeypatch.setattr(frameworks, "_torch_device", torch_device, raising=False)
    monkeypatch.setattr(generic_project, "library_of", lambda a: "torch")
    assert generic_project.eta_solver(_Tensor()) is sentinel
    torch_device.kernel_scale_rows = lambda x: None  # type: ignore[attr-defined]
    assert generic_project.eta_solver(_Tensor()) is generic.scale_rows
