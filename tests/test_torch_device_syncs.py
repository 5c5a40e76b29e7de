"""Host synchronisations and streams of the torch CUDA path, counted without a GPU.

:mod:`clipresc.frameworks._torch_device` runs CUDA tensors through the CuPy kernels. Here
CPU tensors take that path with a stand-in CuPy (``from_dlpack`` keeps the tensor, the
"kernels" compute with :mod:`clipresc.backends.generic` and set the error word's bits as the
CUDA kernels do) and every host read of a tensor (``item``, ``int``, ``bool``, ``tolist``,
``nonzero``...) is recorded: a call must read at most once (the error word), never in
no-check mode, raise the NumPy path's errors, and give the Rust core's values. A second
part checks that CuPy work reached from torch CUDA tensors (the kernels of
``_torch_device`` and the public ``clipresc.*_vjp`` on CUDA tensors) runs on torch's
current stream, with torch's allocator.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clipresc  # noqa: E402
from clipresc import _dispatch  # noqa: E402
from clipresc.backends import cupy_call, generic, gpu_checks  # noqa: E402
from clipresc.frameworks import _torch_device  # noqa: E402
from clipresc.frameworks import torch as ct  # noqa: E402
from clipresc.kernels import ERR_BITS  # noqa: E402

#: Host reads of tensors while counting (the name of the method that read).
READS: list[str] = []
#: The CuPy stream handles the stand-in kernels ran on (None: CuPy's own stream).
LAUNCH_STREAMS: list[Any] = []
_STATE = {"counting": False, "stream": None, "allocator": None}

_READERS = ("item", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")
_TORCH_STREAM = 0xC0FFEE


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The stand-in kernels' own work: device work, not host reads of the caller's call."""
    was = _STATE["counting"]
    _STATE["counting"] = False
    try:
        yield
    finally:
        _STATE["counting"] = was


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _READERS:
        orig = getattr(torch.Tensor, name)

        def read(self: Any, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            if _STATE["counting"]:
                READS.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    orig_nonzero = torch.nonzero

    def nonzero(*a: Any, **k: Any) -> Any:
        if _STATE["counting"]:
            READS.append("torch.nonzero")
        return orig_nonzero(*a, **k)

    monkeypatch.setattr(torch, "nonzero", nonzero)
    yield


def _counted(fn: Any, *args: Any) -> tuple[Any, list[str]]:
    READS.clear()
    _STATE["counting"] = True
    try:
        return fn(*args), list(READS)
    finally:
        _STATE["counting"] = False


# --------------------------------------------------------------------------- stand-ins


def _word_bits(x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> int:
    """The bits the CUDA kernels OR into the error word for these operands."""
    e = torch.as_tensor(eps, dtype=torch.float64)
    lo_t, hi_t = torch.as_tensor(lo, dtype=x.dtype), torch.as_tensor(hi, dtype=x.dtype)
    tests = {
        "eps negative or NaN": bool((torch.isnan(e) | (e < 0)).any()),
        "eps infinite": bool(torch.isinf(e).any()),
        "lower NaN": bool(torch.isnan(lo_t).any()),
        "upper NaN": bool(torch.isnan(hi_t).any()),
        "lower > upper": bool((lo_t > hi_t).any()),
        "x non-finite": bool((~torch.isfinite(x)).any()),
        "delta non-finite": bool((~torch.isfinite(d)).any()),
        "x outside bounds": bool(((x < lo_t) | (x > hi_t)).any()),
    }
    return sum(ERR_BITS[k] for k, hit in tests.items() if hit)


def _launch(err: Any, x: Any, d: Any, eps: Any, lo: Any, hi: Any) -> Any:
    LAUNCH_STREAMS.append(_STATE["stream"])
    er = torch.as_tensor(eps, dtype=torch.float64).broadcast_to((x.shape[0],)).contiguous()
    if err is not None:
        err[0] |= _word_bits(x, d, eps, lo, hi)
    return er


def _fake_forward_rows(
    x: Any, d: Any, eps: Any, p: float, lo: Any, hi: Any, *, want_y: bool, err: Any
) -> tuple[Any, ...]:
    with _quiet():
        er = _launch(err, x, d, eps, lo, hi)
        y, eta, flag = generic.perturb_rows(x, d.to(x.dtype), er.to(x.dtype), p, lo, hi)
        if err is not None and bool(flag.any()):
            err[0] |= ERR_BITS["unreachable"]
        return (y if want_y else None), eta, flag, None


def _fake_vjp(kind: str) -> Any:
    def vjp_rows(
        x: Any, d: Any, eps: Any, p: float, lo: Any, hi: Any, cot: Any, eta: Any, *, err: Any
    ) -> tuple[Any, ...]:
        with _quiet():
            er = _launch(err, x, d, eps, lo, hi).to(x.dtype)
            if eta is None:
                eta, _ = generic.scale_rows(x, d, er, p, lo, hi)
            fn = generic.scale_vjp_rows if kind == "scale" else generic.perturb_vjp_rows
            g = fn(x, d, er, p, lo, hi, eta, cot)
            return g["x"], g["delta"], g["eps"], g["lower"], g["upper"]

    return vjp_rows


@contextlib.contextmanager
def _set(key: str, value: Any) -> Iterator[None]:
    old = _STATE[key]
    _STATE[key] = value
    try:
        yield
    finally:
        _STATE[key] = old


def _fake_cupy() -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(
        Device=lambda index: contextlib.nullcontext(),
        ExternalStream=lambda handle: _set("stream", handle),
        using_allocator=lambda alloc: _set("allocator", alloc),
        is_available=lambda: True,
    )
    return types.SimpleNamespace(cuda=cuda, from_dlpack=lambda a: a)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, counting: None) -> types.SimpleNamespace:
    """CPU tensors through the CUDA kernels' path, with torch's "current stream" known."""
    cupy = _fake_cupy()
    backend = types.SimpleNamespace(
        forward_rows=_fake_forward_rows,
        scale_rows=lambda *a: _fake_forward_rows(*a, want_y=False, err=None)[1:3],
        scale_vjp_rows=_fake_vjp("scale"),
        perturb_vjp_rows=_fake_vjp("perturb"),
    )
    monkeypatch.setattr(_torch_device, "_cupy_for", lambda x: (cupy, backend))
    stream = types.SimpleNamespace(cuda_stream=_TORCH_STREAM)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    LAUNCH_STREAMS.clear()
    return cupy


def _case(seed: int = 0, rows: int = 4, n: int = 50) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(0.0, 1.0, (rows, 2, n // 2)))
    d = torch.tensor(rng.normal(size=(rows, 2, n // 2)))
    return x, d


def _args(x: Any, d: Any, eps: Any, bounds: Any = (0.0, 1.0), **kw: Any) -> tuple[Any, ...]:
    unreachable = kw.pop("unreachable", "saturate")
    return ct._prepare_args(x, d, eps, kw.pop("p", 2.0), bounds, None, unreachable)


# --------------------------------------------------------------------------- syncs


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("kind", ["scale", "perturb"])
def test_one_read_per_call_and_the_cores_values(fake_gpu: Any, kind: str, p: float) -> None:
    x, d = _case()
    eps = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64).reshape(4, 1, 1)
    args = _args(x, d, eps, p=p)
    got, reads = _counted(_torch_device.forward, kind, *args)
    assert reads == ["item"], reads  # the error word: the call's one synchronisation
    want = getattr(clipresc, kind)(x.numpy(), d.numpy(), eps.numpy(), p=p, bounds=(0.0, 1.0))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert LAUNCH_STREAMS == [_TORCH_STREAM]
    with gpu_checks.unchecked():
        got2, reads = _counted(_torch_device.forward, kind, *args)
    assert reads == []  # no-check mode: nothing read back (CUDA-graph capture)
    assert torch.equal(got, got2)


@pytest.mark.parametrize("kind", ["scale", "perturb"])
def test_vjp_one_read_and_the_cores_values(fake_gpu: Any, kind: str) -> None:
    x, d = _case(1)
    lo = torch.zeros(2, 25, dtype=torch.float64)
    args = _args(x, d, 0.8, bounds=(lo, 1.0))
    y, eta = _torch_device.forward_eta(kind, *args)
    g = torch.ones_like(y)
    got, reads = _counted(lambda: _torch_device.vjp(kind, g, *args, eta=eta))
    assert reads == ["item"], reads
    xn, dn = x.numpy(), d.numpy()
    want = getattr(clipresc, f"{kind}_vjp")(xn, dn, 0.8, g.numpy(), bounds=(lo.numpy(), 1.0))
    np.testing.assert_allclose(got[0].numpy(), want["x"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[1].numpy(), want["delta"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[3].numpy(), want["lower"], rtol=1e-9, atol=1e-12)
    with gpu_checks.unchecked():
        _, reads = _counted(lambda: _torch_device.vjp(kind, g, *args, eta=eta))
    assert reads == []


def _numpy_error(x: Any, d: Any, eps: Any, bounds: Any) -> str:
    with pytest.raises(ValueError) as info:
        clipresc.perturb(x.numpy(), d.numpy(), eps, bounds=bounds)
    return str(info.value)


@pytest.mark.parametrize("case", ["x nan", "delta inf", "outside", "eps negative", "crossed"])
def test_errors_as_the_numpy_path(fake_gpu: Any, case: str) -> None:
    x, d = _case(2)
    eps: Any = 1.0
    hi = torch.ones(2, 25, dtype=torch.float64)
    if case == "x nan":
        x[2, 1, 3] = math.nan
    elif case == "delta inf":
        d[1, 0, 7] = math.inf
        d[3, 1, 0] = -math.inf
    elif case == "outside":
        x[0, 0, 4] = 1.5
    elif case == "eps negative":
        eps = torch.tensor([1.0, -1.0, 0.5, -2.0], dtype=torch.float64).reshape(4, 1, 1)
    else:
        hi[1, 2] = -0.5
    want = _numpy_error(x, d, eps.numpy() if torch.is_tensor(eps) else eps, (0.0, hi.numpy()))
    with pytest.raises(ValueError) as info:
        _counted(_torch_device.forward, "perturb", *_args(x, d, eps, bounds=(0.0, hi)))
    assert str(info.value) == want
    assert READS[0] == "item"  # the word first; the exact checks only on the way out


def test_unreachable_raise_reads_flags_only_when_the_word_says_so(fake_gpu: Any) -> None:
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    d = torch.ones(3, 4, dtype=torch.float64)
    eps = torch.tensor([[0.1], [3.0], [0.1]], dtype=torch.float64)  # row 1: at most 1
    args = _args(x, d, eps, unreachable="raise")
    with pytest.raises(ValueError, match="1 of 3 vectors; first: vector 1"):
        _counted(_torch_device.forward, "perturb", *args)
    assert READS[0] == "item" and len(READS) > 1  # the flags: read on the way to the error
    ok = _args(x, d, 0.1, unreachable="raise")
    _, reads = _counted(_torch_device.forward, "perturb", *ok)
    assert reads == ["item"]


# --------------------------------------------------------------------------- streams


def test_cupy_scope_uses_torchs_stream_and_allocator(fake_gpu: Any) -> None:
    x = torch.zeros(3)
    with _torch_device.cupy_scope(fake_gpu, x):
        assert _STATE["stream"] == _TORCH_STREAM
        assert _STATE["allocator"] is not None
    assert _STATE["stream"] is None


def test_public_vjp_on_cuda_tensors_runs_on_torchs_stream(
    fake_gpu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``clipresc.perturb_vjp`` on CUDA tensors goes to the CuPy path (DLPack): its
    kernels and outputs (CuPy's allocations) must be on torch's current stream, not CuPy's."""
    seen: list[Any] = []
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake_gpu)
    monkeypatch.setattr(_dispatch, "_path", lambda lib, arrays, vjp: "cupy")
    monkeypatch.setattr(_dispatch, "_CONVERT", {"cupy": (lambda a, lib: a, lambda r, lib: r)})

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((_STATE["stream"], _STATE["allocator"] is not None))
        return {"x": args[2]}

    monkeypatch.setattr(cupy_call, "vjp", spy)
    x, d = _case(3)
    got = clipresc.perturb_vjp(x, d, 1.0, torch.ones_like(x), bounds=(0.0, 1.0))
    assert got["x"] is x
    assert seen == [(_TORCH_STREAM, True)]


def test_project_eta_from_the_kernels_on_torchs_stream(fake_gpu: Any) -> None:
    """The ``p = 2`` projection of CUDA tensors takes ``eta`` from the kernels
    (``kernel_scale_rows``): on torch's stream, reading nothing back, with the values of
    the array-API solver; and none is offered where CuPy cannot run them."""
    x, d = _case(5)
    xr, dr = x.reshape(4, -1), d.reshape(4, -1)
    eps = torch.full((4,), 0.7, dtype=x.dtype)
    solve = _torch_device.kernel_scale_rows(x)
    assert solve is not None
    (eta, flag), reads = _counted(solve, xr, dr, eps, 2.0, 0.0, 1.0)
    assert reads == [] and LAUNCH_STREAMS == [_TORCH_STREAM]
    want, want_flag = generic.scale_rows(xr, dr, eps, 2.0, 0.0, 1.0)
    torch.testing.assert_close(eta, want, rtol=0, atol=0)
    assert torch.equal(flag, want_flag)


def test_no_kernel_eta_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_torch_device, "_cupy_for", lambda x: None)
    assert _torch_device.kernel_scale_rows(torch.zeros(3)) is None
