"""Edge cases of docs/CONTRACT.md, memory layouts and input immutability."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import clipresc
from support import oracle

P_ALL = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, math.inf]
DTYPES = [np.float32, np.float64]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ulps(dtype):
    return float(np.finfo(dtype).eps)


def _data(dtype=np.float64, shape=(3, 17), seed=0, sat=0.3):
    rng = _rng(seed)
    x = rng.uniform(0, 1, shape)
    m = rng.random(shape)
    x[m < sat / 2] = 0.0
    x[(m >= sat / 2) & (m < sat)] = 1.0
    d = rng.normal(size=shape)
    return x.astype(dtype), d.astype(dtype)


# ------------------------------------------------------------------ eps == 0, zero delta


@pytest.mark.parametrize("p", P_ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_eps_zero_gives_eta_zero(p, dtype):
    x, d = _data(dtype)
    eta = clipresc.scale(x, d, 0.0, p=p)
    assert eta.shape == (3, 1) and eta.dtype == dtype
    assert np.all(eta == 0)
    y = clipresc.perturb(x, d, 0.0, p=p)
    assert np.array_equal(y, x)
    # per vector: only the zero entries are 0
    eta = clipresc.scale(x, d, np.array([0.0, 0.5, 0.0]), p=p)
    assert eta[0, 0] == 0 and eta[2, 0] == 0 and eta[1, 0] > 0


@pytest.mark.parametrize("p", P_ALL)
@pytest.mark.parametrize("unreachable", ["saturate", "raise"])
def test_zero_delta_vector_gives_eta_zero(p, unreachable):
    x, d = _data()
    d[1] = 0.0
    eps = np.array([0.3, 0.0, 0.3])
    eta = clipresc.scale(x, d, eps, p=p, unreachable=unreachable)
    assert eta[1, 0] == 0.0
    y = clipresc.perturb(x, d, eps, p=p, unreachable=unreachable)
    assert np.array_equal(y[1], x[1])


@pytest.mark.parametrize("p", P_ALL)
def test_zero_delta_vector_with_positive_eps_saturate(p):
    x = np.full((1, 4), 0.5)
    d = np.zeros((1, 4))
    assert clipresc.scale(x, d, 1.0, p=p)[0, 0] == 0.0
    assert np.array_equal(clipresc.perturb(x, d, 1.0, p=p), x)


# ------------------------------------------------------------------ no clipping


@pytest.mark.parametrize("p", P_ALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bounds", [None, (None, None), (-math.inf, math.inf)])
def test_no_bounds_is_naive_rescaling(p, dtype, bounds):
    rng = _rng(1)
    x = (rng.normal(size=(4, 33)) * 10).astype(dtype)  # far outside [0, 1]: no bounds
    d = rng.normal(size=(4, 33)).astype(dtype)
    eps = np.array([0.1, 1.0, 7.0, 1e3])
    eta = clipresc.scale(x, d, eps, p=p, bounds=bounds)
    nrm = oracle.lp_size(d.astype(np.float64), p)
    np.testing.assert_allclose(eta[:, 0], eps / nrm, rtol=1e-13 if dtype == np.float64 else 1e-5)
    y = clipresc.perturb(x, d, eps, p=p, bounds=bounds)
    np.testing.assert_allclose(
        y, x + eta * d, rtol=2 * _ulps(dtype), atol=2 * float(np.finfo(dtype).tiny)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_clipping_p2_matches_norm(dtype):
    rng = _rng(2)
    x = rng.uniform(0.4, 0.6, (5, 100)).astype(dtype)
    d = rng.normal(size=(5, 100)).astype(dtype)
    eps = 0.01
    eta = clipresc.scale(x, d, eps)
    expect = eps / np.linalg.norm(d.astype(np.float64), axis=1)
    np.testing.assert_allclose(eta[:, 0], expect, rtol=1e-14 if dtype == np.float64 else 1e-6)


# ------------------------------------------------------------------ unreachable eps


@pytest.mark.parametrize("p", [0.5, 0.7, 1.0, 2.0, 3.0, 4.2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unreachable_finite_p_gives_max_key(p, dtype):
    # rooms s = [0.5, 0.25, 0 (x on the upper bound, moving up), 0.5]
    # keys s/|d| = [0.5, 2, 0, 0.25]
    x = np.array([[0.5, 0.25, 1.0, 0.5]], dtype)
    d = np.array([[1.0, -0.125, 2.0, -2.0]], dtype)
    eta = clipresc.scale(x, d, 10.0, p=p)
    np.testing.assert_allclose(eta, [[2.0]], rtol=4 * _ulps(dtype))
    y = clipresc.perturb(x, d, 10.0, p=p)
    np.testing.assert_array_equal(y, np.array([[1.0, 0.0, 1.0, 0.0]], dtype))
    with pytest.raises(ValueError, match=r"for 1 of 1 vector; first: vector 0"):
        clipresc.scale(x, d, 10.0, p=p, unreachable="raise")


@pytest.mark.parametrize("dtype", DTYPES)
def test_unreachable_inf_p_min_over_largest_room(dtype):
    # rooms [1, 1, 0.5]; largest room 1 reached first by element 1 (key 0.25)
    x = np.array([[0.0, 0.0, 0.5]], dtype)
    d = np.array([[1.0, 4.0, 1.0]], dtype)
    eta = clipresc.scale(x, d, 2.0, p=math.inf)
    np.testing.assert_allclose(eta, [[0.25]], rtol=2 * _ulps(dtype))
    y = clipresc.perturb(x, d, 2.0, p=math.inf)
    np.testing.assert_allclose(y, [[0.25, 1.0, 0.75]], rtol=2 * _ulps(dtype))
    with pytest.raises(ValueError, match="eps exceeds the largest reachable size"):
        clipresc.perturb(x, d, 2.0, p=math.inf, unreachable="raise")


@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_p_reachable_uses_elements_with_enough_room(dtype):
    # naive eps/max|d| = 0.05 would give size 0.1 after clipping element 0
    x = np.array([[0.9, 0.0]], dtype)
    d = np.array([[10.0, 1.0]], dtype)
    eta = clipresc.scale(x, d, 0.5, p=math.inf)
    np.testing.assert_allclose(eta, [[0.5]], rtol=2 * _ulps(dtype))
    np.testing.assert_allclose(
        clipresc.perturb(x, d, 0.5, p=math.inf), [[1.0, 0.5]], rtol=2 * _ulps(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_p_flat_part_picks_smallest_eta(dtype):
    # size(eta) = max(min(2 eta, 0.5), min(eta, 2)) is flat (0.5) on [0.25, 0.5]
    x = np.array([[0.5, -1.0]], dtype)
    d = np.array([[2.0, 1.0]], dtype)
    eta = clipresc.scale(x, d, 0.5, p=math.inf, bounds=(-1.0, 1.0))
    np.testing.assert_allclose(eta, [[0.25]], rtol=2 * _ulps(dtype))


@pytest.mark.parametrize("p", P_ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_movable_elements_stuck(p, dtype):
    # every movable element already sits on the bound it moves to: max size 0
    x = np.array([[1.0, 0.0, 0.3]], dtype)
    d = np.array([[1.0, -2.0, 0.0]], dtype)
    eta = clipresc.scale(x, d, 0.5, p=p)
    assert eta[0, 0] == 0.0
    np.testing.assert_array_equal(clipresc.perturb(x, d, 0.5, p=p), x)
    with pytest.raises(ValueError, match=r"for 1 of 1 vector; first: vector 0"):
        clipresc.scale(x, d, 0.5, p=p, unreachable="raise")
    # eps == 0 is reachable
    assert clipresc.scale(x, d, 0.0, p=p, unreachable="raise")[0, 0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_eps_exactly_max_is_reachable(dtype):
    x = np.array([[0.5, 0.5, 0.75]], dtype)
    d = np.array([[1.0, 1.0, -0.5]], dtype)
    # p = 1: max size 0.5 + 0.5 + 0.75 = 1.75, reached first at eta = max key = 1.5
    eta = clipresc.scale(x, d, 1.75, p=1.0, unreachable="raise")
    np.testing.assert_allclose(eta, [[1.5]], rtol=4 * _ulps(dtype))
    # p = inf: max size 0.75 (element 2, key 1.5)
    eta = clipresc.scale(x, d, 0.75, p=math.inf, unreachable="raise")
    np.testing.assert_allclose(eta, [[1.5]], rtol=2 * _ulps(dtype))


def test_unreachable_count_and_first_vector():
    x = np.full((5, 3), 0.5)
    d = np.ones((5, 3))
    eps = np.array([0.1, 5.0, 0.1, 5.0, 5.0])  # max size for p=2: sqrt(3)/2
    with pytest.raises(
        ValueError,
        match=r"eps exceeds the largest reachable size for 3 of 5 vectors; first: vector 1",
    ):
        clipresc.scale(x, d, eps, unreachable="raise")
    eta = clipresc.scale(x, d, eps)
    np.testing.assert_allclose(eta[[1, 3, 4], 0], 0.5, rtol=1e-15)


def test_unreachable_vector_index_with_axis():
    # x of shape (3, 2, 4), vectors along axis 1 -> 3*4 = 12 vectors over the remaining axes
    # (0, 2); vector (1, 2) is unreachable. CONTRACT.md writes "vector {i}": accept the flat
    # C-order number (1*4 + 2 = 6) or the batch coordinates "(1, 2)".
    x = np.full((3, 2, 4), 0.5)
    d = np.ones((3, 2, 4))
    eps = np.full((3, 1, 4), 0.1)
    eps[1, 0, 2] = 5.0
    with pytest.raises(ValueError, match=r"for 1 of 12 vectors; first: vector (6|\(1, 2\))$"):
        clipresc.scale(x, d, eps, axis=1, unreachable="raise")


# ------------------------------------------------------------------ ties, one-sided


@pytest.mark.parametrize("dtype", DTYPES)
def test_tie_counts_as_saturated(dtype):
    # p = 1, rooms [0.5, 0.5], keys [0.5, 1]; eps = 0.75 lands exactly on key 0.5
    x = np.array([[0.5, 0.5]], dtype)
    d = np.array([[1.0, 0.5]], dtype)
    eta = clipresc.scale(x, d, 0.75, p=1.0)
    np.testing.assert_allclose(eta, [[0.5]], rtol=2 * _ulps(dtype))
    y = clipresc.perturb(x, d, 0.75, p=1.0)
    assert y[0, 0] == 1.0  # saturated exactly on the bound
    np.testing.assert_allclose(y[0, 1], 0.75, rtol=2 * _ulps(dtype))


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("upper", [None, math.inf])
def test_infinite_bound_never_saturates(p, upper):
    x = np.array([[0.5, 2.0, 0.25]])
    d = np.array([[1.0, 1.0, 3.0]])
    eps = 100.0
    eta = clipresc.scale(x, d, eps, p=p, bounds=(0.0, upper))
    np.testing.assert_allclose(eta[0, 0], eps / oracle.lp_size(d, p)[0], rtol=1e-14)
    eta = clipresc.scale(x, d, 1e6, p=p, bounds=(0.0, upper), unreachable="raise")
    np.testing.assert_allclose(eta[0, 0], 1e6 / oracle.lp_size(d, p)[0], rtol=1e-14)


def test_one_sided_mixed_directions():
    # bounds [0, inf): element 0 moves down (room 0.5), element 1 up (infinite room), p=1:
    # g = min(eta, 0.5) + eta
    x = np.array([[0.5, 0.5]])
    d = np.array([[-1.0, 1.0]])
    np.testing.assert_allclose(clipresc.scale(x, d, 1.0, p=1.0, bounds=(0.0, None)), [[0.5]])
    np.testing.assert_allclose(clipresc.scale(x, d, 2.0, p=1.0, bounds=(0.0, None)), [[1.5]])
    y = clipresc.perturb(x, d, 2.0, p=1.0, bounds=(0.0, None))
    np.testing.assert_allclose(y, [[0.0, 2.0]])
    # (-inf, 1]: now element 1 saturates
    np.testing.assert_allclose(clipresc.scale(x, d, 2.0, p=1.0, bounds=(None, 1.0)), [[1.5]])


def test_degenerate_interval_never_moves():
    lo = np.array([0.0, 0.3, 0.0])
    hi = np.array([1.0, 0.3, 1.0])
    x = np.array([[0.5, 0.3, 0.5]])
    d = np.array([[1.0, 5.0, -1.0]])
    y = clipresc.perturb(x, d, 0.2, bounds=(lo, hi))
    assert y[0, 1] == 0.3
    np.testing.assert_allclose(np.linalg.norm(y - x), 0.2, rtol=1e-14)


# ------------------------------------------------------------------ shapes and dtypes


@pytest.mark.parametrize(
    ("shape", "axis", "eta_shape"),
    [
        ((7,), None, (1,)),
        ((7,), 0, (1,)),
        ((7,), -1, (1,)),
        ((3, 7), None, (3, 1)),
        ((2, 3, 4, 5), None, (2, 1, 1, 1)),
        ((3, 4), 0, (1, 4)),
        ((2, 3, 4), (0, 2), (1, 3, 1)),
        ((2, 3, 4), -1, (2, 3, 1)),
        ((2, 3, 4), (2, 0), (1, 3, 1)),
        ((2, 3, 4), (0, 1, 2), (1, 1, 1)),
        ((1, 1), None, (1, 1)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_eta_shape_and_dtype(shape, axis, eta_shape, dtype):
    rng = _rng(3)
    x = rng.uniform(0, 1, shape).astype(dtype)
    d = rng.normal(size=shape).astype(dtype)
    kw = {} if axis is None else {"axis": axis}
    eta = clipresc.scale(x, d, 0.1, **kw)
    assert eta.shape == eta_shape and eta.dtype == dtype
    y = clipresc.perturb(x, d, 0.1, **kw)
    assert y.shape == shape and y.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_eps_spellings(dtype):
    x, d = _data(dtype, shape=(3, 2, 5))
    ref = clipresc.scale(x, d, np.array([0.2, 0.2, 0.2]))
    for eps in [
        0.2,
        np.float64(0.2),
        np.array(0.2),
        np.array([0.2]),
        np.full((3, 1, 1), 0.2),
        np.full((1, 1, 1), 0.2),
    ]:
        got = clipresc.scale(x, d, eps)
        np.testing.assert_array_equal(got, ref, err_msg=repr(eps))
    e = np.array([0.1, 0.2, 0.3])
    np.testing.assert_array_equal(clipresc.scale(x, d, e), clipresc.scale(x, d, e.reshape(3, 1, 1)))
    # int eps
    np.testing.assert_array_equal(clipresc.scale(x, d, 0), np.zeros((3, 1, 1), dtype))


def test_mixed_x_delta_dtypes():
    x, d = _data(np.float32)
    e32 = clipresc.scale(x, d, 0.3)
    e_d64 = clipresc.scale(x, d.astype(np.float64), 0.3)
    assert e_d64.dtype == np.float32
    np.testing.assert_array_equal(e32, e_d64)
    x64 = x.astype(np.float64)
    e64 = clipresc.scale(x64, d, 0.3)
    assert e64.dtype == np.float64
    np.testing.assert_array_equal(e64, clipresc.scale(x64, d.astype(np.float64), 0.3))


def test_single_element_vectors():
    x = np.array([[0.2], [0.9], [0.0]])
    d = np.array([[1.0], [1.0], [-1.0]])
    eta = clipresc.scale(x, d, 0.05)
    np.testing.assert_allclose(eta[:, 0], [0.05, 0.05, 0.0])
    y = clipresc.perturb(x, d, 0.05)
    np.testing.assert_allclose(y[:, 0], [0.25, 0.95, 0.0])


def test_bound_arrays_per_channel():
    rng = _rng(5)
    lo = np.array([0.0, -1.0, 0.5]).reshape(3, 1, 1)
    hi = np.array([1.0, 1.0, 0.75]).reshape(3, 1, 1)
    x = (lo + (hi - lo) * rng.uniform(0, 1, (2, 3, 4, 4))).astype(np.float64)
    d = rng.normal(size=x.shape)
    eta = clipresc.scale(x, d, 1.0, bounds=(lo, hi))
    x2 = x.reshape(2, -1)
    lo2 = np.broadcast_to(lo, x.shape).reshape(2, -1)
    hi2 = np.broadcast_to(hi, x.shape).reshape(2, -1)
    expect = oracle.oracle_eta(x2, d.reshape(2, -1), 1.0, 2.0, lo2, hi2)
    np.testing.assert_allclose(eta.reshape(-1), expect, rtol=1e-12)
    # same with the full (x-shaped) arrays
    eta_full = clipresc.scale(
        x, d, 1.0, bounds=(np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape))
    )
    np.testing.assert_array_equal(eta, eta_full)


def test_large_rows_match_oracle():
    rng = _rng(6)
    for dtype, rtol in [(np.float64, 1e-11), (np.float32, 1e-5)]:
        x = rng.uniform(0, 1, (2, 50_000))
        x[:, ::7] = 1.0
        d = rng.normal(size=x.shape)
        x, d = x.astype(dtype), d.astype(dtype)
        ms = oracle.max_size(x.astype(np.float64), d.astype(np.float64), 2.0, 0, 1)
        eps = ms * np.array([0.3, 0.9])
        eta = clipresc.scale(x, d, eps)
        expect = oracle.oracle_eta(x.astype(np.float64), d.astype(np.float64), eps, 2.0)
        np.testing.assert_allclose(eta[:, 0], expect, rtol=rtol)


# ------------------------------------------------------------------ layouts, immutability


def _layout_variants(a: np.ndarray):
    """(name, array equal in value to a) for many memory layouts of an N-D array."""
    out = [("contiguous", np.ascontiguousarray(a)), ("fortran", np.asfortranarray(a))]
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    sl = tuple(slice(None, None, 2) for _ in a.shape)
    big[sl] = a
    out.append(("strided", big[sl]))
    out.append(("neg_stride_last", np.ascontiguousarray(a[..., ::-1])[..., ::-1]))
    out.append(("neg_stride_first", np.ascontiguousarray(a[::-1])[::-1]))
    ro = a.copy()
    ro.flags.writeable = False
    out.append(("readonly", ro))
    other = ">" if a.dtype.byteorder in ("<", "=", "|") else "<"
    sw = a.astype(a.dtype.newbyteorder(other))
    assert not sw.dtype.isnative
    out.append(("byteswapped", sw))
    buf = np.zeros(a.size * a.dtype.itemsize + 1, np.uint8)
    mis = buf[1:].view(a.dtype).reshape(a.shape)
    mis[...] = a
    assert not mis.flags.aligned
    out.append(("misaligned", mis))
    for name, v in out:
        assert np.array_equal(v, a), name
    return out


LAYOUTS = [n for n, _ in _layout_variants(np.zeros((2, 3)))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.7, 2.0, math.inf])
@pytest.mark.parametrize("which", ["x", "delta", "x_and_delta", "lower", "eps"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_give_identical_results(dtype, p, which, layout):
    rng = _rng(7)
    x = rng.uniform(0, 1, (4, 37))
    x[:, ::5] = 1.0
    x = x.astype(dtype)
    d = rng.normal(size=x.shape).astype(dtype)
    lo = np.zeros(x.shape, dtype)
    hi = np.ones(x.shape, dtype)
    eps = np.array([0.5, 1.0, 2.0, 0.1])
    ref_eta = clipresc.scale(x, d, eps, p=p, bounds=(lo, hi))
    ref_y = clipresc.perturb(x, d, eps, p=p, bounds=(lo, hi))

    def variant(a):
        return dict(_layout_variants(a))[layout]

    xx = variant(x) if which in ("x", "x_and_delta") else x
    dd = variant(d) if which in ("delta", "x_and_delta") else d
    ll = variant(lo) if which == "lower" else lo
    ee = variant(eps) if which == "eps" else eps
    copies = [a.copy() for a in (xx, dd, ll, ee)]
    eta = clipresc.scale(xx, dd, ee, p=p, bounds=(ll, hi))
    y = clipresc.perturb(xx, dd, ee, p=p, bounds=(ll, hi))
    np.testing.assert_array_equal(eta, ref_eta)
    np.testing.assert_array_equal(y, ref_y)
    assert eta.dtype.kind == "f" and eta.dtype.itemsize == x.dtype.itemsize
    assert y.dtype.kind == "f" and y.dtype.itemsize == x.dtype.itemsize
    for a, c in zip((xx, dd, ll, ee), copies):
        assert a.tobytes() == c.tobytes() and a.dtype == c.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_layout_nd_with_axis(dtype):
    rng = _rng(8)
    x = rng.uniform(0, 1, (3, 4, 5)).astype(dtype)
    d = rng.normal(size=x.shape).astype(dtype)
    for axis in [None, 0, 1, (0, 2), -1]:
        kw = {} if axis is None else {"axis": axis}
        ref = clipresc.scale(x, d, 0.3, **kw)
        for xv in [np.asfortranarray(x), x.transpose(2, 0, 1).copy().transpose(1, 2, 0)]:
            assert np.array_equal(xv, x)
            np.testing.assert_array_equal(clipresc.scale(xv, d, 0.3, **kw), ref, err_msg=str(axis))
        np.testing.assert_array_equal(
            clipresc.scale(x[:, ::-1][:, ::-1], d[::-1][::-1], 0.3, **kw), ref
        )


def test_broadcast_view_inputs():
    # zero-stride (broadcast) inputs are valid read-only arrays
    x = np.broadcast_to(np.linspace(0, 1, 9), (4, 9))
    d = np.broadcast_to(np.ones(9), (4, 9))
    eta = clipresc.scale(x, d, 0.5)
    ref = clipresc.scale(np.ascontiguousarray(x), np.ascontiguousarray(d), 0.5)
    np.testing.assert_array_equal(eta, ref)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("fn", ["scale", "perturb"])
def test_inputs_not_modified(dtype, fn):
    rng = _rng(9)
    x = rng.uniform(0, 1, (3, 2, 11)).astype(dtype)
    x[:, :, ::4] = 1
    d = rng.normal(size=x.shape).astype(dtype)
    lo = np.zeros((2, 1), dtype)
    hi = np.ones(x.shape, dtype)
    eps = np.array([0.1, 0.5, 100.0])
    args = [x, d, eps, lo, hi]
    before = [a.copy() for a in args]
    f = getattr(clipresc, fn)
    f(x, d, eps, p=1.5, bounds=(lo, hi))
    f(x, d, eps, p=1.5, bounds=(lo, hi), axis=(1, 2))
    f(x[:, ::-1], d[:, ::-1], eps, p=math.inf, bounds=(lo, hi))
    for a, b in zip(args, before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "dtype, exponent",
    [(np.float32, k) for k in (-100, -60, -20, 20, 60, 100)]
    + [(np.float64, k) for k in (-900, -400, 400, 900)],
)
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 7.0])
def test_extreme_delta_magnitudes(dtype, exponent, p):
    """Tiny gradients or unnormalised noise: |delta|^p would underflow or overflow the
    dtype, yet eta scales exactly as 1 / |delta| (DESIGN: scale invariance)."""
    x, d = _data(np.float64, shape=(2, 600), seed=5)
    eps = 0.5 * oracle.oracle_max_size(x, d, p)
    want = oracle.oracle_eta(x, d, eps, p)
    factor = 2.0**exponent
    eta = clipresc.scale(x.astype(dtype), (d * factor).astype(dtype), eps, p=p)
    assert eta.dtype == dtype
    got = eta.ravel().astype(np.float64) * factor
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-9)


# ------------------------------------------------------------------ eta beyond the dtype

# (dtype, k): deltas of ordinary size times 2^-k are subnormal in dtype, so eta ~ 2^k
# overflows it
TINY_DELTAS = [(np.float16, 24), (np.float32, 140), (np.float64, 1062)]


def _tiny_delta_case(dtype, k, seed=3):
    x, d = _data(np.float64, shape=(2, 40), seed=seed)
    d[:, ::5] = 0.0
    tiny = (d * 2.0 ** (-(k // 2)) * 2.0 ** (-(k - k // 2))).astype(dtype)
    # the stored (rounded) deltas, brought back to ordinary sizes exactly
    ordinary = tiny.astype(np.float64) * 2.0 ** (k // 2) * 2.0 ** (k - k // 2)
    return x.astype(dtype), tiny, ordinary


@pytest.mark.parametrize("p", P_ALL)
@pytest.mark.parametrize(("dtype", "k"), TINY_DELTAS)
def test_perturb_is_exact_when_eta_exceeds_the_dtype(p, dtype, k):
    x, tiny, ordinary = _tiny_delta_case(dtype, k)
    x64 = x.astype(np.float64)
    eps = 0.5 * oracle.oracle_max_size(x64, ordinary, p)
    # eta * delta is the same for the tiny deltas and the ordinary ones
    eta = oracle.oracle_eta(x64, ordinary, eps, p)[:, None]
    want = np.clip(x64 + eta * ordinary, 0.0, 1.0)
    y = clipresc.perturb(x, tiny, eps, p=p)
    assert y.dtype == dtype
    tol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=0, atol=tol)
    np.testing.assert_array_equal(y[tiny == 0], x[tiny == 0])  # zero deltas stay put


@pytest.mark.parametrize(("dtype", "k"), TINY_DELTAS)
def test_scale_warns_when_eta_exceeds_the_dtype(dtype, k):
    x, tiny, _ = _tiny_delta_case(dtype, k)
    with pytest.warns(RuntimeWarning, match=rf"range of {np.dtype(dtype).name} for 2 of 2 vec"):
        eta = clipresc.scale(x, tiny, 0.5)
    assert eta.dtype == dtype and np.isinf(eta).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scale_within_the_dtype_does_not_warn(dtype):
    x, d = _data(np.float64, shape=(4, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eta = clipresc.scale(x.astype(dtype), (d * 1e-3).astype(dtype), 1.0)
    assert np.isfinite(eta).all()
