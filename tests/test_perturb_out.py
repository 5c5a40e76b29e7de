"""``clipresc.perturb(..., out=buf)``: the same result as without ``out``, written into the
caller's array (directly, with no full-size temporary, when its layout allows), checked
arguments, and NaN rather than a partial result when the call fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

import clipresc
from support.memory import out_argument_cases, peak_traced_bytes
from test_noise import images, sizes


def deltas(shape: tuple[int, ...], seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [None, 1])
def test_out_holds_the_same_result(p: float, dtype: type, order: str, axis: int | None) -> None:
    x, d = images((5, 3, 4, 4), seed=1, dtype=dtype), deltas((5, 3, 4, 4), seed=2, dtype=dtype)
    eps = 0.3 if math.isinf(p) else 0.7
    want = clipresc.perturb(x, d, eps, p=p, axis=axis)
    buf = np.full(x.shape, -7.0, dtype=dtype, order=order)
    got = clipresc.perturb(x, d, eps, p=p, axis=axis, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, want)
    if axis is None and dtype is not np.float16:
        np.testing.assert_allclose(sizes(x, buf, p), eps, rtol=1e-5)


def test_out_with_per_element_bounds() -> None:
    x, d = images((4, 2, 8, 8), seed=5), deltas((4, 2, 8, 8), seed=6)
    lo, hi = np.minimum(x, 0.1), np.maximum(x, 0.8)
    want = clipresc.perturb(x, d, 1.5, bounds=(lo, hi))
    buf = np.empty_like(x)
    assert clipresc.perturb(x, d, 1.5, bounds=(lo, hi), out=buf) is buf
    np.testing.assert_array_equal(buf, want)
    assert (buf >= lo).all() and (buf <= hi).all()
    np.testing.assert_allclose(sizes(x, buf, 2.0), 1.5, rtol=1e-5)


def test_direct_path_allocates_no_result() -> None:
    x, d = images((16, 3, 64, 64), seed=2), deltas((16, 3, 64, 64), seed=3)
    buf = np.empty_like(x)
    clipresc.perturb(x, d, 5.0, out=buf)  # warm up (thread pool)

    def peak(**kw: object) -> int:
        return peak_traced_bytes(lambda: clipresc.perturb(x, d, 5.0, **kw))

    assert peak() >= x.nbytes
    assert peak(out=buf) < x.nbytes // 8


@pytest.mark.parametrize(("make_out", "exc", "match"), out_argument_cases("delta"))
def test_out_argument_errors(make_out: object, exc: type, match: str) -> None:
    x, d = images((3, 4)), deltas((3, 4))
    lo = np.zeros_like(x)
    with pytest.raises(exc, match=match):
        clipresc.perturb(x, d, 1.0, bounds=(lo, 1.0), out=make_out(x, d, lo))  # type: ignore[operator]


def test_refused_out_is_untouched() -> None:
    x, d = images((3, 4)), deltas((3, 4))
    buf = np.zeros_like(x)
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        clipresc.perturb(x, d, 1.0, out=buf)
    buf.flags.writeable = True
    with pytest.raises(ValueError, match="p must be"):
        clipresc.perturb(x, d, 1.0, p=-1.0, out=buf)
    assert not buf.any()


def test_failed_call_leaves_nan_not_a_partial_result() -> None:
    x, d = images((64, 300), seed=3), deltas((64, 300), seed=4)
    bad = x.copy()
    bad[40, 7] = 2.0  # outside bounds: found by the core after other rows are written
    buf = np.zeros_like(x)
    with pytest.raises(ValueError, match="outside bounds"):
        clipresc.perturb(bad, d, 1.0, out=buf)
    assert np.isnan(buf).all()
    buf[:] = 0
    with pytest.raises(ValueError, match="eps exceeds the largest reachable size"):
        clipresc.perturb(x, d, 1e6, unreachable="raise", out=buf)
    assert np.isnan(buf).all()


def test_out_with_other_libraries_is_refused() -> None:
    torch = pytest.importorskip("torch")
    x, d = torch.rand(2, 5), torch.randn(2, 5)
    with pytest.raises(TypeError, match="out is supported for NumPy inputs only; got torch"):
        clipresc.perturb(x, d, 1.0, out=np.empty((2, 5), np.float32))
