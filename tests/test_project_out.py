"""``clipresc.project(..., out=buf)``: the same bits as without ``out``, written into the
caller's array (directly, with no full-size temporary, when its layout allows), checked
arguments, and NaN rather than a partial result when the call fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

import clipresc
from project_oracle import bisect_project
from support.memory import out_argument_cases, peak_traced_bytes
from test_noise import images


def steps(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``z``: a PGD-like step from ``x``, partly outside the box."""
    rng = np.random.default_rng(seed)
    return (x + 0.3 * rng.normal(size=x.shape)).astype(x.dtype)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [None, 1])
def test_out_holds_the_same_result(p: float, dtype: type, order: str, axis: int | None) -> None:
    x = images((5, 3, 4, 4), seed=1, dtype=dtype)
    z = steps(x, seed=2)
    eps = 0.1 if math.isinf(p) else 0.5
    want = clipresc.project(x, z, eps, p=p, axis=axis)
    buf = np.full(x.shape, -7.0, dtype=dtype, order=order)
    got = clipresc.project(x, z, eps, p=p, axis=axis, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, want)
    if axis is None and dtype is np.float64:
        for r in range(x.shape[0]):
            exact = bisect_project(
                x[r].ravel(), z[r].ravel(), np.zeros(48), np.ones(48), eps, p
            ).reshape(x.shape[1:])
            np.testing.assert_allclose(buf[r], exact, atol=1e-12)


def test_out_with_per_element_bounds() -> None:
    x = images((4, 2, 8, 8), seed=5)
    z = steps(x, seed=6)
    lo, hi = np.minimum(x, 0.1), np.maximum(x, 0.8)
    for p in (1.0, 2.0):
        want = clipresc.project(x, z, 1.5, p=p, bounds=(lo, hi))
        buf = np.empty_like(x)
        assert clipresc.project(x, z, 1.5, p=p, bounds=(lo, hi), out=buf) is buf
        np.testing.assert_array_equal(buf, want)
        assert (buf >= lo).all() and (buf <= hi).all()


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_direct_path_allocates_no_result(p: float) -> None:
    x = images((16, 3, 64, 64), seed=2)
    z = steps(x, seed=3)
    eps = 0.05 if math.isinf(p) else 5.0
    buf = np.empty_like(x)
    clipresc.project(x, z, eps, p=p, out=buf)  # warm up (thread pool)

    def peak(**kw: object) -> int:
        return peak_traced_bytes(lambda: clipresc.project(x, z, eps, p=p, **kw))

    assert peak() >= x.nbytes
    assert peak(out=buf) < x.nbytes // 8


@pytest.mark.parametrize(("make_out", "exc", "match"), out_argument_cases("z"))
def test_out_argument_errors(make_out: object, exc: type, match: str) -> None:
    x = images((3, 4))
    z = steps(x)
    lo = np.zeros_like(x)
    with pytest.raises(exc, match=match):
        clipresc.project(x, z, 1.0, bounds=(lo, 1.0), out=make_out(x, z, lo))  # type: ignore[operator]


def test_refused_out_is_untouched() -> None:
    x = images((3, 4))
    z = steps(x)
    buf = np.zeros_like(x)
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        clipresc.project(x, z, 1.0, out=buf)
    buf.flags.writeable = True
    with pytest.raises(ValueError, match="project supports p = 1, 2 or inf"):
        clipresc.project(x, z, 1.0, p=3.0, out=buf)
    assert not buf.any()


def test_failed_call_leaves_nan_not_a_partial_result() -> None:
    x = images((64, 300), seed=3)
    z = steps(x, seed=4)
    bad = x.copy()
    bad[40, 7] = 2.0  # outside bounds: found by the core after other rows are written
    buf = np.zeros_like(x)
    with pytest.raises(ValueError, match="outside bounds"):
        clipresc.project(bad, z, 1.0, p=1, out=buf)
    assert np.isnan(buf).all()


def test_out_with_other_libraries_is_refused() -> None:
    torch = pytest.importorskip("torch")
    x, z = torch.rand(2, 5), torch.rand(2, 5)
    with pytest.raises(TypeError, match="out is supported for NumPy inputs only; got torch"):
        clipresc.project(x, z, 1.0, out=np.empty((2, 5), np.float32))
