"""The CuPy backend's host code (argument preparation, kernel argument lists, launch
geometry, output shapes) without a GPU: a stand-in ``cupy`` module backed by numpy whose
``RawModule`` runs the requested kernel through pyopencl (the same kernel source, built
as OpenCL C). A mismatch between the argument list the CuPy backend passes and a kernel's
signature fails here, before it can fail on a GPU.
"""

from __future__ import annotations

import math
import os
import sys
import types
from typing import Any, Callable

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import import_pyopencl, opencl_queue

from support.gpu_cases import bisect_eta, make_case

cl = import_pyopencl()
import pyopencl.array as cla  # noqa: E402

from clipresc.backends import cupy_backend as cb  # noqa: E402
from clipresc.backends import opencl_backend as ob  # noqa: E402

#: Names of the kernels launched through the stand-in, in order.
LAUNCHED: list[str] = []


class _FakeKernel:
    def __init__(self, name: str, real: str) -> None:
        self.name = name
        self.real = real

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        LAUNCHED.append(self.name)
        queue = ob.default_queue()
        kernel = ob._kernels(queue, self.real)[self.name]
        dev: list[Any] = []
        copies: list[tuple[np.ndarray, Any]] = []
        for a in args:
            if isinstance(a, np.ndarray):
                if a.size == 0:
                    pytest.skip("zero-size buffers are not possible in OpenCL")
                buf = cla.to_device(queue, np.ascontiguousarray(a))
                copies.append((a, buf))
                dev.append(buf.data)
            else:
                assert isinstance(a, np.generic), f"kernel argument of type {type(a)}"
                dev.append(a)
        kernel(queue, (grid[0] * block[0],), (block[0],), *dev)
        for host, buf in copies:
            if host.flags.writeable:  # outputs (inputs are copied back unchanged)
                host[...] = buf.get().reshape(host.shape)


class _FakeModule:
    def __init__(self, code: str, options: tuple[str, ...]) -> None:
        assert "clipresc_forward" in code
        self.real = next(o.split("=", 1)[1] for o in options if o.startswith("-DREAL="))

    def get_function(self, name: str) -> _FakeKernel:
        return _FakeKernel(name, self.real)


def _memoize(for_each_device: bool = False) -> Callable[[Callable[..., Any]], Any]:
    assert for_each_device
    return lambda f: f


class _FakeDevice:
    """``cupy.cuda.Device``: a device with 2 multiprocessors."""

    def __init__(self, device_id: int = 0) -> None:
        self.id = device_id
        self.attributes = {"MultiProcessorCount": 2}


def _fake_cupy() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        ndarray=np.ndarray,
        ascontiguousarray=np.ascontiguousarray,
        asarray=np.asarray,
        empty=np.empty,
        zeros=np.zeros,
        broadcast_to=np.broadcast_to,
        float64=np.float64,
        int32=np.int32,
        uint8=np.uint8,
        bool_=np.bool_,
        RawModule=_FakeModule,
        memoize=_memoize,
        cuda=types.SimpleNamespace(Device=_FakeDevice),
    )


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    opencl_queue()
    monkeypatch.setattr(cb, "_cupy", _fake_cupy)
    cb._module_factory.cache_clear()
    yield
    cb._module_factory.cache_clear()


@pytest.mark.parametrize("kind", ("scalar", "full", "shared", "half_inf"))
@pytest.mark.parametrize("p", (0.5, 2.0, math.inf), ids=lambda p: f"p{p}")
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=["f32", "f64"])
def test_cupy_backend_forward(fake_cupy: None, p: float, kind: str, dtype: Any) -> None:
    rng = np.random.default_rng([len(kind), 17])
    x, d, eps, lower, upper = make_case(rng, 300, dtype, kind, p)
    y, eta, mask, passes = cb.forward_rows(x, d, eps, p, lower, upper, want_passes=True)
    ref = ob.forward_rows(x, d, eps, p, lower, upper, want_passes=True)
    np.testing.assert_array_equal(eta, ref.eta)
    np.testing.assert_array_equal(mask, ref.unreachable)
    np.testing.assert_array_equal(y, ref.y)
    np.testing.assert_array_equal(passes, ref.passes)
    assert eta.dtype == dtype and y is not None and y.dtype == dtype and mask.dtype == bool
    eta_ref, _ = bisect_eta(x, d, eps, p, lower, upper)
    np.testing.assert_allclose(eta, eta_ref, rtol=2e-6 if dtype == np.float32 else 1e-10)
    # wrappers, scalar eps, host-list eps
    eta2, _ = cb.scale_rows(x, d, float(eps[0]), p, lower, upper)
    assert eta2[0] == eta[0]
    y3, eta3, _ = cb.perturb_rows(x, d, list(eps), p, lower, upper)
    np.testing.assert_array_equal(y3, y)
    np.testing.assert_array_equal(eta3, eta)


@pytest.mark.parametrize("kind", ("scalar", "full", "shared", "half_inf", "row", "zero_d"))
@pytest.mark.parametrize("p", (0.5, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_cupy_backend_vjp(fake_cupy: None, p: float, kind: str) -> None:
    rng = np.random.default_rng([len(kind), 19])
    base = {"row": "full", "zero_d": "full"}.get(kind, kind)
    x, d, eps, lower, upper = make_case(rng, 300, np.float64, base, p)
    if kind == "row":  # one bound per row (B, 1): reduced on the host
        upper = np.full((x.shape[0], 1), np.inf)
        upper[:3, 0] = 2.0
    if kind == "zero_d":  # 0-d device array bound
        lower = np.asarray(-0.5)
    ybar = rng.normal(size=x.shape)
    etabar = rng.normal(size=x.shape[0])
    for got, ref in (
        (
            cb.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar),
            ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar),
        ),
        (
            cb.scale_vjp_rows(x, d, eps, p, lower, upper, etabar),
            ob.scale_vjp_rows(x, d, eps, p, lower, upper, etabar),
        ),
    ):
        for g, r in zip(got, ref):
            if r is None:
                assert g is None
            else:
                assert g.shape == r.shape
                np.testing.assert_allclose(g, r, rtol=1e-13, atol=1e-15)
    if isinstance(lower, np.ndarray):
        assert got[3] is not None and got[3].shape == np.shape(lower)
    if isinstance(upper, np.ndarray):
        assert got[4] is not None and got[4].shape == np.shape(upper)


@pytest.mark.parametrize("p", (0.5, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_cupy_rows_passes_the_forward_eta(fake_cupy: None, p: float) -> None:
    """The RowBackend adapter hands the forward's eta to the kernel (which then does not
    solve); with float64 data the result is bitwise that of the solving kernel, and a
    different eta (finite p) gives the generic backend's VJP at that eta."""
    from clipresc.backends import cupy_rows, generic

    rng = np.random.default_rng([int(min(p, 9) * 10), 29])
    x, d, eps, lower, upper = make_case(rng, 300, np.float64, "full", p)
    ybar = rng.normal(size=x.shape)
    eta, _ = cupy_rows.scale_rows(x, d, eps, p, lower, upper)
    given = cupy_rows.perturb_vjp_rows(x, d, eps, p, lower, upper, eta, ybar)
    solved = cupy_rows.perturb_vjp_rows(x, d, eps, p, lower, upper, None, ybar)
    for k in ("x", "delta", "eps", "lower", "upper"):
        np.testing.assert_array_equal(given[k], solved[k], err_msg=k)
    if not math.isinf(p):
        other = eta * 0.8
        got = cupy_rows.perturb_vjp_rows(x, d, eps, p, lower, upper, other, ybar)
        ref = generic.perturb_vjp_rows(x, d, eps, p, lower, upper, other, ybar)
        assert not np.allclose(got["x"], solved["x"])
        for k in ("x", "delta", "eps", "lower", "upper"):
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("p", (0.5, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_cupy_backend_split_rows(fake_cupy: None, p: float) -> None:
    """Long rows over several blocks: the CuPy backend's launch sequence and scratch give
    the OpenCL backend's results for the same plan, bit for bit, and the oracle's eta; the
    automatic plan (2 multiprocessors: 8 blocks) splits a batch of one long row."""
    from clipresc.kernels import SplitPlan, split_plan

    rng = np.random.default_rng(21)
    x, d, eps, lower, upper = make_case(rng, 3000, np.float64, "full", p)
    plan = SplitPlan(3, 1024)
    err = np.zeros(1, np.int32)
    y, eta, mask, passes = cb.forward_rows(
        x, d, eps, p, lower, upper, want_passes=True, err=err, split=plan
    )
    err_ref = np.zeros(1, np.int32)
    ref = ob.forward_rows(x, d, eps, p, lower, upper, want_passes=True, err=err_ref, split=plan)
    np.testing.assert_array_equal(eta, ref.eta)
    np.testing.assert_array_equal(mask, ref.unreachable)
    np.testing.assert_array_equal(passes, ref.passes)
    np.testing.assert_array_equal(y, ref.y)
    assert int(err[0]) == int(err_ref[0])
    eta_ref, _ = bisect_eta(x, d, eps, p, lower, upper)
    np.testing.assert_allclose(eta, eta_ref, rtol=1e-10)

    n = 2 * 32768 + 5
    x1 = rng.random((1, n))
    d1 = rng.standard_normal((1, n))
    assert split_plan(1, n, 8) is not None
    LAUNCHED.clear()
    _, eta1, _, _ = cb.forward_rows(x1, d1, 3.0, p, want_y=False, want_passes=True)
    assert "clipresc_split_pass" in LAUNCHED and "clipresc_forward" not in LAUNCHED
    one = ob.forward_rows(x1, d1, 3.0, p, want_y=False, split=False)
    np.testing.assert_allclose(eta1, one.eta, rtol=1e-12)
    LAUNCHED.clear()
    cb.forward_rows(x1, d1, 3.0, p, want_y=False, split=False)
    assert LAUNCHED == ["clipresc_forward"]

    # the backward given eta (finite p): the same launch sequence as the OpenCL backend's
    if not math.isinf(p):
        ybar = rng.standard_normal(x.shape)
        got = cb.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, eta=eta, split=plan)
        want = ob.perturb_vjp_rows(x, d, eps, p, lower, upper, ybar, eta=eta, split=plan)
        for g, w in zip(got, want):
            assert (g is None) == (w is None)
            if w is not None:
                np.testing.assert_array_equal(g, w)
