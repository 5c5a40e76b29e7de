"""The real CuPy path on a CUDA device (``pytest -m gpu``; skipped without a device).

Compared with the float64 bisection oracle (forward) and with central finite
differences of the CuPy forward kernel in float64 (VJP).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support.gpu_cases import BOUND_KINDS, adversarial_row, bisect_eta, make_case

cupy = pytest.importorskip("cupy")


def _has_device() -> bool:
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # pragma: no cover - driver dependent
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_device(), reason="needs a CUDA device"),
]

from clipresc.backends import cupy_backend as cb  # noqa: E402

P_VALUES = (0.5, 1.0, 2.0, 3.0, math.inf)
MAX_PASSES = 1 + 8 + 66


def _dev(v: Any) -> Any:
    return cupy.asarray(v) if isinstance(v, np.ndarray) else v


def _host(v: Any) -> Any:
    return None if v is None else cupy.asnumpy(v)


@pytest.mark.parametrize("kind", BOUND_KINDS)
@pytest.mark.parametrize("n", (1, 7, 255, 256, 257, 5000, 50_000))
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=["f32", "f64"])
@pytest.mark.parametrize("p", P_VALUES, ids=lambda p: f"p{p}")
def test_forward_matches_oracle(p: float, dtype: Any, n: int, kind: str) -> None:
    rng = np.random.default_rng([int(min(p, 99) * 10), n, len(kind), np.dtype(dtype).itemsize])
    x, d, eps, lower, upper = make_case(rng, n, dtype, kind, p)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        y, eta, mask, passes = cb.forward_rows(
            _dev(x), _dev(d), _dev(eps), p, _dev(lower), _dev(upper), want_passes=True
        )
    stream.synchronize()
    eta_ref, unreach_ref = bisect_eta(x, d, eps, p, lower, upper)
    np.testing.assert_array_equal(_host(mask), unreach_ref)
    rtol = 2e-6 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(_host(eta).astype(np.float64), eta_ref, rtol=rtol)
    assert int(_host(passes).max()) <= MAX_PASSES
    lo = np.broadcast_to(-np.inf if lower is None else lower, x.shape).astype(np.float64)
    hi = np.broadcast_to(np.inf if upper is None else upper, x.shape).astype(np.float64)
    y_ref = np.clip(x.astype(np.float64) + eta_ref[:, None] * d.astype(np.float64), lo, hi)
    tol = 4e-7 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(_host(y).astype(np.float64), y_ref, rtol=tol, atol=tol)
    # scalar eps, host scalars for bounds, perturb_rows / scale_rows wrappers
    eta2, _ = cb.scale_rows(_dev(x), _dev(d), float(eps[0]), p, _dev(lower), _dev(upper))
    assert float(eta2[0]) == pytest.approx(float(eta_ref[0]), rel=rtol)


@pytest.mark.parametrize("p", (0.5, 1.0, 2.0, 3.0), ids=lambda p: f"p{p}")
def test_adversarial_chain_bounded(p: float) -> None:
    x, d, eps, lower, upper, newton = adversarial_row(p, K=40)
    _, _eta, mask, passes = cb.forward_rows(
        cupy.asarray(x[None]), cupy.asarray(d[None]), eps, p, lower, upper, want_passes=True
    )
    assert newton is not None and int(passes[0]) < newton
    assert int(passes[0]) <= MAX_PASSES and not bool(mask[0])


@pytest.mark.parametrize("kind", ("scalar", "full", "shared"))
@pytest.mark.parametrize("p", (0.7, 2.0, math.inf), ids=lambda p: f"p{p}")
def test_vjp_directional(p: float, kind: str) -> None:
    rng = np.random.default_rng([int(min(p, 99) * 10), len(kind), 9])
    x, d, eps, lower, upper = make_case(rng, 700, np.float64, kind, p)
    x, d, eps = x[:3], d[:3], eps[:3]
    if isinstance(lower, np.ndarray) and lower.ndim == 2:
        lower, upper = lower[:3], upper[:3]
    args = [x, d, eps, lower, upper]
    dirs = [rng.normal(size=np.shape(a)) * 1e-2 if isinstance(a, np.ndarray) else 0.0 for a in args]
    dirs[2] = dirs[2] * eps
    for a, v in zip(args[3:], dirs[3:]):
        if isinstance(a, np.ndarray):
            v[~np.isfinite(a)] = 0.0
    ybar = rng.normal(size=x.shape)
    etabar = rng.normal(size=x.shape[0])

    def moved(t: float) -> list[Any]:
        return [_dev(a + t * v) if isinstance(a, np.ndarray) else a for a, v in zip(args, dirs)]

    def perturb_loss(t: float) -> float:
        y, _, _ = cb.perturb_rows(*moved(t)[:3], p, *moved(t)[3:])
        return float((cupy.asarray(ybar) * y).sum())

    def scale_loss(t: float) -> float:
        eta, _ = cb.scale_rows(*moved(t)[:3], p, *moved(t)[3:])
        return float((cupy.asarray(etabar) * eta).sum())

    base = moved(0.0)
    h = 1e-5
    for loss, got in (
        (perturb_loss, cb.perturb_vjp_rows(*base[:3], p, *base[3:], cupy.asarray(ybar))),
        (scale_loss, cb.scale_vjp_rows(*base[:3], p, *base[3:], cupy.asarray(etabar))),
    ):
        fd = (loss(h) - loss(-h)) / (2 * h)
        an = sum(
            float((_host(g) * v).sum())
            for g, v in zip(got, dirs)
            if g is not None and isinstance(v, np.ndarray)
        )
        assert an == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_matches_opencl_backend() -> None:
    """Same kernel source, two compilers: CUDA and OpenCL results agree."""
    ob = pytest.importorskip("clipresc.backends.opencl_backend")
    pytest.importorskip("pyopencl")
    rng = np.random.default_rng(4)
    x, d, eps, lower, upper = make_case(rng, 1000, np.float64, "full", 2.0)
    eta_cl, _ = ob.scale_rows(x, d, eps, 2.0, lower, upper)
    eta_cu, _ = cb.scale_rows(_dev(x), _dev(d), _dev(eps), 2.0, _dev(lower), _dev(upper))
    np.testing.assert_allclose(_host(eta_cu), eta_cl, rtol=1e-13)


def _public_case(seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = cupy.asarray(rng.uniform(0.05, 0.95, (16, 3, 32, 32)).astype(np.float32))
    d = cupy.asarray(rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    return x, d


def test_public_path_no_check_mode_captures_in_a_cuda_graph() -> None:
    """``clipresc.perturb`` on CuPy arrays in no-check mode makes no host synchronisation:
    a CUDA graph captures it (capture fails on any sync), and a replay on new data gives
    the eager result for that data."""
    import clipresc
    from clipresc.backends import gpu_checks

    x, d = _public_case(31)
    want = clipresc.perturb(x[::-1], d[::-1], 1.0, p=2.0)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, gpu_checks.unchecked():
        clipresc.perturb(x, d, 1.0, p=2.0)  # kernels built, pool blocks on this stream
        stream.synchronize()
        stream.begin_capture()
        out = clipresc.perturb(x, d, 1.0, p=2.0)
        graph = stream.end_capture()
    stream.synchronize()
    x[...] = x[::-1].copy()
    d[...] = d[::-1].copy()
    cupy.cuda.Device().synchronize()
    graph.launch(stream)
    stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(out), cupy.asnumpy(want))


def test_public_path_checked_mode_reads_the_word_once() -> None:
    """The checked mode synchronises (the error word): capture refuses it; an invalid
    value found by the kernels raises the NumPy path's error."""
    import clipresc

    x, d = _public_case(32)
    clipresc.perturb(x, d, 1.0, p=2.0)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(Exception):  # noqa: B017 (CUDA's capture error, by version)
            clipresc.perturb(x, d, 1.0, p=2.0)
        try:
            stream.end_capture()
        except Exception:  # (the capture is invalidated: nothing to keep)
            pass
    bad = cupy.asnumpy(x)
    bad[3, 1, 2, 5] = np.nan
    with pytest.raises(ValueError) as want:
        clipresc.perturb(bad, cupy.asnumpy(d), 1.0, p=2.0)
    with pytest.raises(ValueError) as got:
        clipresc.perturb(cupy.asarray(bad), d, 1.0, p=2.0)
    assert str(got.value) == str(want.value)
