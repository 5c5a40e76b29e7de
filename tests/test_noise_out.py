"""``clipresc.noise(..., out=buf)``: the same result as without ``out``, written into the
caller's array (directly, with no full-size temporary, when its layout allows), checked
arguments, and NaN rather than a partial result when the call fails."""

from __future__ import annotations

import numpy as np
import pytest

import clipresc
from support.memory import peak_traced_bytes
from test_noise import images, sizes


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [None, 1])
def test_out_holds_the_same_result(dtype: type, order: str, axis: int | None) -> None:
    x = images((5, 3, 4, 4), seed=1, dtype=dtype)
    want = clipresc.noise(x, 0.7, seed=4, axis=axis)
    buf = np.full(x.shape, -7.0, dtype=dtype, order=order)
    got = clipresc.noise(x, 0.7, seed=4, axis=axis, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, want)
    if axis is None and dtype is not np.float16:
        np.testing.assert_allclose(sizes(x, buf, 2.0), 0.7, rtol=1e-5)


def test_direct_path_allocates_no_result() -> None:
    x = images((16, 3, 64, 64), seed=2)
    buf = np.empty_like(x)
    clipresc.noise(x, 5.0, seed=1, out=buf)  # warm up (tables, thread pool)

    def peak(**kw: object) -> int:
        return peak_traced_bytes(lambda: clipresc.noise(x, 5.0, seed=1, **kw))

    assert peak() >= x.nbytes
    assert peak(out=buf) < x.nbytes // 8


@pytest.mark.parametrize(
    ("make_out", "exc", "match"),
    [
        (lambda x: x.tolist(), TypeError, "out must be a NumPy array; got list"),
        (lambda x: np.empty((2, 3), np.float32), ValueError, r"out must have x's shape \(3, 4\)"),
        (lambda x: np.empty((3, 4), np.float64), TypeError, "out must have x's dtype float32"),
        (lambda x: x, ValueError, "out must not overlap x"),
    ],
)
def test_out_argument_errors(make_out: object, exc: type, match: str) -> None:
    x = images((3, 4))
    with pytest.raises(exc, match=match):
        clipresc.noise(x, 1.0, out=make_out(x))  # type: ignore[operator]


def test_read_only_out_is_refused_untouched() -> None:
    x = images((3, 4))
    buf = np.zeros_like(x)
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        clipresc.noise(x, 1.0, out=buf)
    assert not buf.any()


def test_failed_call_leaves_nan_not_a_partial_result() -> None:
    x = images((64, 300), seed=3)
    bad = x.copy()
    bad[40, 7] = 2.0  # outside bounds: found by the core after other rows are written
    buf = np.zeros_like(x)
    with pytest.raises(ValueError, match="outside bounds"):
        clipresc.noise(bad, 1.0, seed=0, out=buf)
    assert np.isnan(buf).all()
    buf[:] = 0
    with pytest.raises(ValueError, match="eps exceeds the largest reachable size"):
        clipresc.noise(x, 1e6, seed=0, unreachable="raise", out=buf)
    assert np.isnan(buf).all()


def test_out_with_dask_is_refused() -> None:
    da = pytest.importorskip("dask.array")
    x = da.from_array(images((4, 6)), chunks=(2, 6))
    with pytest.raises(TypeError, match="out is not supported for Dask arrays"):
        clipresc.noise(x, 1.0, out=np.empty((4, 6), np.float32))
