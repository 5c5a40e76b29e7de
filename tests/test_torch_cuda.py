"""PyTorch CUDA tensors through the CUDA kernels (``pytest -m gpu``; skipped without a
CUDA device and CuPy). Kept out of ``tests/gpu``, whose process must not load torch.

Oracles: the same calls on CPU tensors (the Rust core and its closed-form VJP), the
NumPy path's error messages, and ``torch.cuda.graph`` capture, which fails on any host
synchronisation inside the captured region.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _cuda_with_cupy() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


# (queried in the test, not at collection, like tests/test_jax_gpu.py)
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    if not _cuda_with_cupy():
        pytest.skip("needs a CUDA device and CuPy")


import clipresc  # noqa: E402
from clipresc.backends import gpu_checks  # noqa: E402
from clipresc.frameworks import torch as ct  # noqa: E402
from support.framework_cases import bad_cases, numpy_message  # noqa: E402

P_VALUES = (1.0, 2.0, math.inf)


def _inputs(shape: tuple[int, ...], dtype: Any, seed: int) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    d = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x, d


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=["f32", "f64"])
def test_autograd_cuda_matches_cpu(p: float, dtype: Any) -> None:
    x, d = _inputs((8, 3, 17, 19), dtype, 1)
    eps = 2.0 if p != math.inf else 0.05
    outs = {}
    for dev in ("cpu", "cuda"):
        xd = x.to(dev).requires_grad_()
        dd = d.to(dev).requires_grad_()
        y = ct.perturb(xd, dd, eps, p=p)
        g = torch.ones_like(y) * torch.linspace(-1, 1, y.numel(), device=dev).reshape(y.shape)
        gx, gd = torch.autograd.grad(y, (xd, dd), g.to(y.dtype))
        outs[dev] = (y.detach().cpu(), gx.cpu(), gd.cpu())
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    for a, b in zip(outs["cuda"], outs["cpu"]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("bad", [b for b in bad_cases() if b.data], ids=lambda b: b.name)
def test_errors_on_cuda_match_numpy(bad: Any) -> None:
    """Checked inside the kernels, reported with the NumPy path's message and index."""
    msg = numpy_message(bad)

    def T(a: Any) -> Any:
        return torch.from_numpy(np.array(a)).cuda()

    eps = T(bad.eps) if isinstance(bad.eps, np.ndarray) else bad.eps
    kw = dict(bad.kwargs)
    if isinstance(kw.get("bounds"), tuple):
        kw["bounds"] = tuple(
            T(b) if isinstance(b, np.ndarray) and b.ndim else b for b in kw["bounds"]
        )
    with pytest.raises(bad.exc) as info:
        ct.perturb(T(bad.x), T(bad.delta), eps, **kw)
    assert str(info.value) == msg


def test_unchecked_mode_captures_in_a_cuda_graph() -> None:
    x, d = _inputs((16, 3, 32, 32), torch.float32, 2)
    x, d = x.cuda(), d.cuda()
    want = ct.perturb(x, d, 1.0, p=2.0)
    ct.perturb(x, d, 1.0, p=2.0)  # compile the kernels before capturing
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), gpu_checks.unchecked():
        ct.perturb(x, d, 1.0, p=2.0)  # warm-up on the side stream
        with torch.cuda.graph(graph, stream=stream):
            out = ct.perturb(x, d, 1.0, p=2.0)
    torch.cuda.current_stream().wait_stream(stream)
    x.copy_(x.flip(0))
    d.copy_(d.flip(0))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want.flip(0), rtol=0, atol=0)


def test_checked_mode_cannot_capture() -> None:
    """The checked mode does synchronise (the error word): capture refuses it."""
    x, d = _inputs((4, 100), torch.float32, 3)
    x, d = x.cuda(), d.cuda()
    ct.perturb(x, d, 1.0, p=2.0)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with (
        torch.cuda.stream(stream),
        pytest.raises(RuntimeError),
        torch.cuda.graph(graph, stream=stream),
    ):
        ct.perturb(x, d, 1.0, p=2.0)


def test_non_default_stream_ordering() -> None:
    """Work queued on a side stream (inputs written just before the call) is seen by the
    kernels, which run on torch's current stream."""
    x, d = _inputs((64, 3 * 32 * 32), torch.float32, 4)
    want = ct.perturb(x, d, 3.0, p=2.0)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        xs = torch.empty_like(x, device="cuda")
        ds = torch.empty_like(d, device="cuda")
        torch.cuda._sleep(50_000_000)  # keep the stream busy: a wrong stream races
        xs.copy_(x.cuda(), non_blocking=True)
        ds.copy_(d.cuda(), non_blocking=True)
        y = ct.perturb(xs, ds, 3.0, p=2.0)
    stream.synchronize()
    torch.testing.assert_close(y.cpu(), want, rtol=2e-6, atol=2e-6)


def test_outputs_from_torch_allocator() -> None:
    import cupy

    x, d = _inputs((32, 4096), torch.float32, 5)
    x, d = x.cuda(), d.cuda()
    ct.perturb(x, d, 1.0, p=2.0)
    torch.cuda.synchronize()
    pool = cupy.get_default_memory_pool()
    before_cupy = pool.used_bytes()
    before_torch = torch.cuda.memory_allocated()
    y = ct.perturb(x, d, 1.0, p=2.0)
    assert pool.used_bytes() == before_cupy
    assert torch.cuda.memory_allocated() - before_torch >= y.numel() * 4


def test_batch_above_2_31_elements() -> None:
    """Flat indices past 2^31 (int64 addressing): the last rows against the CPU core."""
    rows, n = 2**16 + 8, 2**15  # 2^31 + 2^18 elements of float32: 8 GiB each of x and d
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * rows * n * 4 + (1 << 30):
        pytest.skip("needs about 26 GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(6)
    x = torch.rand((rows, n), generator=g, device="cuda")
    d = torch.randn((rows, n), generator=g, device="cuda")
    y = ct.perturb(x, d, 5.0, p=2.0)
    tail = slice(rows - 4, rows)
    want = clipresc.perturb(x[tail].cpu().numpy(), d[tail].cpu().numpy(), 5.0, p=2.0, axis=1)
    np.testing.assert_allclose(y[tail].cpu().numpy(), want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=["f32", "f64"])
def test_project_cuda_matches_cpu(p: float, dtype: Any) -> None:
    """``clipresc.project`` on CUDA tensors (``p = 2``: ``eta`` from the kernels) against the
    same call on CPU tensors (the Rust core), values and gradients."""
    x, d = _inputs((8, 3, 17, 19), dtype, 3)
    z = x + 0.5 * d
    eps = {1.0: 20.0, 2.0: 2.0, math.inf: 0.05}[p]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    outs = []
    for dev in ("cpu", "cuda"):
        xd, zd = x.to(dev).requires_grad_(), z.to(dev).requires_grad_()
        y = clipresc.project(xd, zd, eps, p=p)
        (y * torch.cos(xd)).sum().backward()
        outs.append((y.detach().cpu(), xd.grad.cpu(), zd.grad.cpu()))
    for cpu, cuda in zip(*outs):
        torch.testing.assert_close(cuda, cpu, **tol)
