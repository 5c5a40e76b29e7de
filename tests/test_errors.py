"""Every bad input of docs/CONTRACT.md: exception type and message fragments."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import clipresc

FNS = [clipresc.scale, clipresc.perturb]
DTYPES = [np.float16, np.float32, np.float64]


def _ok(shape=(2, 3, 4), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.9, shape).astype(dtype)
    d = rng.normal(size=shape).astype(dtype)
    return x, d


def _m(text: str) -> str:
    return re.escape(text)


# ------------------------------------------------------------------ non-finite x / delta


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_x(fn, dtype, bad):
    x, d = _ok(dtype=dtype)
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match=_m("x has 1 non-finite value; first at index (1, 2, 3)")):
        fn(x, d, 0.1)


@pytest.mark.parametrize("fn", FNS)
def test_nonfinite_x_count_and_first(fn):
    x, d = _ok()
    x[1, 0, 2] = np.nan
    x[0, 2, 1] = np.inf
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=_m("x has 3 non-finite values; first at index (0, 2, 1)")):
        fn(x, d, 0.1)


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_delta(fn, dtype):
    x, d = _ok(dtype=dtype)
    d[0, 1, 0] = np.nan
    d[1, 1, 1] = -np.inf
    with pytest.raises(
        ValueError, match=_m("delta has 2 non-finite values; first at index (0, 1, 0)")
    ):
        fn(x, d, 0.1)


def test_nonfinite_delta_after_cast():
    # a float64 delta that overflows float32 becomes inf after the cast to x's dtype
    x, d = _ok(dtype=np.float32)
    d = d.astype(np.float64)
    d[1, 0, 3] = 1e300
    with pytest.raises(
        ValueError, match=_m("delta has 1 non-finite value; first at index (1, 0, 3)")
    ):
        clipresc.scale(x, d, 0.1)


def test_nonfinite_index_in_original_coordinates_of_views():
    x, d = _ok(shape=(3, 5))
    xt = np.ascontiguousarray(x.T).T  # Fortran order
    xt[2, 4] = np.nan
    with pytest.raises(ValueError, match=_m("first at index (2, 4)")):
        clipresc.scale(xt, d, 0.1)
    x2 = x.copy()
    xr = x2[:, ::-1]
    xr[1, 0] = np.nan  # x2[1, 4]
    with pytest.raises(ValueError, match=_m("x has 1 non-finite value; first at index (1, 0)")):
        clipresc.scale(xr, d, 0.1)
    # with a non-default axis the index is still in x's own coordinates
    x3, d3 = _ok()
    x3[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=_m("first at index (1, 2, 3)")):
        clipresc.scale(x3, d3, 0.1, axis=(0, 2))


def test_nonfinite_1d_index():
    x, d = _ok(shape=(10,))
    x[7] = np.nan
    with pytest.raises(ValueError, match=_m("x has 1 non-finite value; first at index (7,)")):
        clipresc.scale(x, d, 0.1)


# ------------------------------------------------------------------ x outside bounds


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_x_outside_scalar_bounds(fn, dtype):
    x, d = _ok(dtype=dtype)
    x[0, 1, 2] = 1.5
    x[1, 0, 0] = -0.25
    with pytest.raises(
        ValueError, match=_m("x has 2 values outside bounds; first at index (0, 1, 2)")
    ):
        fn(x, d, 0.1)


def test_x_outside_array_bounds():
    x, d = _ok()  # values in [0.1, 0.9]
    lo = np.zeros((3, 1))
    lo[2, 0] = 0.92  # broadcast over x[:, 2, :]: 8 values below
    hi = np.full(x.shape, 0.95)
    with pytest.raises(
        ValueError, match=_m("x has 8 values outside bounds; first at index (0, 2, 0)")
    ):
        clipresc.scale(x, d, 0.1, bounds=(lo, hi))
    hi[1, 2, 0] = 0.05
    with pytest.raises(
        ValueError, match=_m("x has 1 value outside bounds; first at index (1, 2, 0)")
    ):
        clipresc.scale(x, d, 0.1, bounds=(0.0, hi))


def test_x_outside_one_sided_bounds():
    x, d = _ok(shape=(2, 5))
    x[1, 3] = -0.5
    with pytest.raises(ValueError, match=_m("x has 1 value outside bounds; first at index (1, 3)")):
        clipresc.scale(x, d, 0.1, bounds=(0.0, None))
    clipresc.scale(x, d, 0.1, bounds=(None, 1.0))  # fine
    clipresc.scale(x, d, 0.1, bounds=None)  # fine


# ------------------------------------------------------------------ bounds


@pytest.mark.parametrize("fn", FNS)
def test_lower_greater_than_upper(fn):
    x, d = _ok()
    lo = np.zeros(x.shape)
    hi = np.ones(x.shape)
    lo[0, 2, 1] = 2.0
    lo[1, 1, 1] = 1.5
    with pytest.raises(
        ValueError, match=_m("bounds: lower > upper at 2 positions; first at index (0, 2, 1)")
    ):
        fn(x, d, 0.1, bounds=(lo, hi))


def test_lower_greater_than_upper_scalars():
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("bounds: lower > upper at ")):
        clipresc.scale(x, d, 0.1, bounds=(1.0, 0.0))


@pytest.mark.parametrize("side", ["lower", "upper"])
def test_nan_in_bound(side):
    x, d = _ok()
    b = np.zeros(x.shape) if side == "lower" else np.ones(x.shape)
    b[1, 0, 2] = np.nan
    b[0, 0, 0] = np.nan
    bounds = (b, 1.0) if side == "lower" else (0.0, b)
    with pytest.raises(ValueError, match=_m(f"bounds: {side} has 2 NaN values")):
        clipresc.scale(x, d, 0.1, bounds=bounds)
    bounds = (np.nan, 1.0) if side == "lower" else (0.0, np.nan)
    with pytest.raises(ValueError, match=_m(f"bounds: {side} has 1 NaN value")):
        clipresc.scale(x, d, 0.1, bounds=bounds)


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("flaw", ["lower NaN", "upper NaN", "crossed"])
def test_bad_bound_arrays_found_by_the_core(fn, p, dtype, eps, flaw):
    """Per-element bound arrays are value-checked by the core's first pass (one pass over
    x, delta and both bounds), yet the error still names the bounds, whatever p, dtype or
    eps, even where delta is zero and x itself is bad too."""
    x, d = _ok(shape=(3, 2, 40), dtype=dtype)
    lo, hi = np.zeros(x.shape, dtype), np.ones(x.shape, dtype)
    d[1] = 0.0
    x[2, 0, 0] = np.nan
    for where in [(1, 1, 7), (2, 1, 33)]:
        if flaw == "lower NaN":
            lo[where] = np.nan
        elif flaw == "upper NaN":
            hi[where] = np.nan
        else:
            lo[where], hi[where] = 0.75, 0.25
    want = {
        "lower NaN": "bounds: lower has 2 NaN values; first at index (1, 1, 7)",
        "upper NaN": "bounds: upper has 2 NaN values; first at index (1, 1, 7)",
        "crossed": "bounds: lower > upper at 2 positions; first at index (1, 1, 7)",
    }[flaw]
    with pytest.raises(ValueError, match=_m(want)):
        fn(x, d, eps, p=p, bounds=(lo, hi))
    x[2, 0, 0] = 0.5  # x valid: the bounds alone
    with pytest.raises(ValueError, match=_m(want)):
        fn(x, d, eps, p=p, bounds=(lo, hi))


@pytest.mark.parametrize("side", ["lower", "upper"])
def test_bounds_not_broadcastable(side):
    x, d = _ok(shape=(2, 4))
    b = np.zeros(3) if side == "lower" else np.ones(3)
    bounds = (b, 1.0) if side == "lower" else (0.0, b)
    with pytest.raises(
        ValueError, match=_m(f"bounds: {side} of shape (3,) does not broadcast to x's shape (2, 4)")
    ):
        clipresc.scale(x, d, 0.1, bounds=bounds)
    # broadcasting that would enlarge x is not allowed either
    b = np.zeros((3, 2, 4)) if side == "lower" else np.ones((3, 2, 4))
    bounds = (b, 1.0) if side == "lower" else (0.0, b)
    with pytest.raises(
        ValueError,
        match=_m(f"bounds: {side} of shape (3, 2, 4) does not broadcast to x's shape (2, 4)"),
    ):
        clipresc.scale(x, d, 0.1, bounds=bounds)


@pytest.mark.parametrize("bounds", [(0.0,), (0.0, 1.0, 2.0), 1.0, [0.0]])
def test_bounds_not_a_pair(bounds):
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("bounds must be a (lower, upper) pair or None")):
        clipresc.scale(x, d, 0.1, bounds=bounds)


# ------------------------------------------------------------------ eps


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("bad", [-0.1, np.nan, -1e-300])
def test_eps_negative_or_nan_scalar(fn, bad):
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("eps has 1 negative or NaN value")):
        fn(x, d, bad)


def test_eps_negative_or_nan_array():
    x, d = _ok(shape=(5, 3))
    eps = np.array([0.1, 0.2, -0.3, np.nan, -1.0])
    with pytest.raises(
        ValueError, match=_m("eps has 3 negative or NaN values; first at index (2,)")
    ):
        clipresc.scale(x, d, eps)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_eps_infinite(bad):
    x, d = _ok(shape=(5, 3))
    eps = np.array([0.1, 0.2, 0.3, bad, 0.1])
    if bad < 0:
        # -inf is negative: either message is defensible, but it must be rejected
        with pytest.raises(ValueError, match=r"eps has 1 (negative or NaN|infinite) value;"):
            clipresc.scale(x, d, eps)
        return
    with pytest.raises(ValueError, match=_m("eps has 1 infinite value; first at index (3,)")):
        clipresc.scale(x, d, eps)
    with pytest.raises(ValueError, match=_m("eps has 1 infinite value")):
        clipresc.scale(x, d, math.inf)


@pytest.mark.parametrize(
    ("shape", "eps_shape"),
    [((5, 3), (4,)), ((5, 3), (5, 3)), ((5, 3), (6, 1)), ((2, 3, 4), (3,)), ((2, 3, 4), (2, 3))],
)
def test_eps_wrong_shape(shape, eps_shape):
    x, d = _ok(shape=shape)
    b = shape[0]
    with pytest.raises(
        ValueError,
        match=_m(
            f"eps must be a scalar or hold one value per vector ({b} vectors); "
            f"got shape {eps_shape}"
        ),
    ):
        clipresc.scale(x, d, np.full(eps_shape, 0.1))


def test_eps_wrong_shape_with_axis():
    x, d = _ok(shape=(2, 3, 4))
    # axis=1 -> 8 vectors
    with pytest.raises(ValueError, match=_m("(8 vectors); got shape (3,)")):
        clipresc.scale(x, d, np.full(3, 0.1), axis=1)
    clipresc.scale(x, d, np.full(8, 0.1), axis=1)  # one per vector: fine
    clipresc.scale(x, d, np.full((2, 1, 4), 0.1), axis=1)  # eta.shape: fine


# ------------------------------------------------------------------ p


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("p", [0.0, -1.5, -math.inf, math.nan, -0.0])
def test_p_not_positive(fn, p):
    x, d = _ok()
    with pytest.raises(ValueError, match=_m(f"p must be a positive number or inf; got {p!r}")):
        fn(x, d, 0.1, p=p)


@pytest.mark.parametrize("p", ["2", None, 1 + 2j, [2.0]])
def test_p_not_a_number(p):
    x, d = _ok()
    with pytest.raises(
        TypeError, match=_m("p must be a real number; got ") + ".*" + type(p).__name__
    ):
        clipresc.scale(x, d, 0.1, p=p)


@pytest.mark.parametrize("p", [2, np.float32(2.0), np.float64(2.0), np.int64(2), 2.0])
def test_p_numeric_types_accepted(p):
    x, d = _ok()
    np.testing.assert_array_equal(clipresc.scale(x, d, 0.1, p=p), clipresc.scale(x, d, 0.1))


# ------------------------------------------------------------------ shapes, axis


@pytest.mark.parametrize("fn", FNS)
def test_shape_mismatch(fn):
    x, _ = _ok(shape=(2, 3))
    d = np.ones((2, 4))
    with pytest.raises(
        ValueError, match=_m("delta must have the same shape as x; got (2, 4) and (2, 3)")
    ):
        fn(x, d, 0.1)
    with pytest.raises(
        ValueError, match=_m("delta must have the same shape as x; got (3,) and (2, 3)")
    ):
        fn(x, np.ones(3), 0.1)  # no broadcasting of delta


@pytest.mark.parametrize(("axis", "ndim"), [(3, 3), (-4, 3), (1, 1), (-2, 1)])
def test_axis_out_of_range(axis, ndim):
    x, d = _ok(shape=(2, 3, 4)[:ndim] if ndim > 1 else (5,))
    dims = "1 dimension" if ndim == 1 else f"{ndim} dimensions"
    with pytest.raises(ValueError, match=_m(f"axis {axis} is out of range for x with {dims}")):
        clipresc.scale(x, d, 0.1, axis=axis)


def test_axis_out_of_range_in_tuple():
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("axis 5 is out of range for x with 3 dimensions")):
        clipresc.scale(x, d, 0.1, axis=(0, 5))


def test_axis_duplicates():
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("axis contains duplicates: (1, 1)")):
        clipresc.scale(x, d, 0.1, axis=(1, 1))
    with pytest.raises(ValueError, match=_m("axis contains duplicates")):
        clipresc.scale(x, d, 0.1, axis=(2, -1))


@pytest.mark.parametrize("axis", [(), []])
def test_axis_empty(axis):
    x, d = _ok()
    with pytest.raises(ValueError, match=_m("axis must name at least one axis")):
        clipresc.scale(x, d, 0.1, axis=axis)


@pytest.mark.parametrize("fn", FNS)
def test_zero_dim_x(fn):
    with pytest.raises(ValueError, match=_m("x must have at least one dimension")):
        fn(np.array(0.5), np.array(1.0), 0.1)


# ------------------------------------------------------------------ unreachable, dtypes


@pytest.mark.parametrize("value", ["clip", "", None, "RAISE", 1])
def test_bad_unreachable(value):
    x, d = _ok()
    with pytest.raises(
        ValueError, match=_m(f"unreachable must be 'saturate' or 'raise'; got {value!r}")
    ):
        clipresc.scale(x, d, 0.1, unreachable=value)


@pytest.mark.parametrize("fn", FNS)
def test_unreachable_raise_message(fn):
    x = np.full((4, 3), 0.5)
    d = np.ones((4, 3))
    eps = np.array([0.1, 0.2, 9.0, 9.0])
    with pytest.raises(
        ValueError,
        match=_m("eps exceeds the largest reachable size for 2 of 4 vectors; first: vector 2"),
    ):
        fn(x, d, eps, unreachable="raise")


@pytest.mark.parametrize("which", ["x", "delta"])
@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.uint8, np.bool_, np.complex128, np.complex64]
)
def test_non_real_float_dtype(which, dtype):
    x, d = _ok()
    if which == "x":
        x = np.zeros(x.shape, dtype)
    else:
        d = np.ones(d.shape).astype(dtype)
    name = np.dtype(dtype).name
    with pytest.raises(
        TypeError, match=_m(f"{which} must be a real floating-point array; got dtype {name}")
    ):
        clipresc.scale(x, d, 0.1)
    with pytest.raises(TypeError, match=_m(f"{which} must be a real floating-point array")):
        clipresc.perturb(x, d, 0.1)


def test_first_error_in_documented_order_is_deterministic():
    """Repeated calls with the same bad input give the same message."""
    x, d = _ok(shape=(64, 1000))
    x[np.random.default_rng(1).random(x.shape) < 0.01] = np.nan
    msgs = set()
    for _ in range(5):
        with pytest.raises(ValueError) as ei:
            clipresc.scale(x, d, 0.1)
        msgs.add(str(ei.value))
    assert len(msgs) == 1
    count = int(np.isnan(x).sum())
    first = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
    assert f"x has {count} non-finite values; first at index {first}" in msgs.pop()


# ------------------------------------------------------------------ lists of ints, integer arrays


def test_integer_lists_are_read_as_float64():
    """Lists and tuples of Python ints are taken as NumPy's float functions take them."""
    y = clipresc.perturb([[0.5, 0.9]], [[1, 1]], 0.5)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, clipresc.perturb(np.array([[0.5, 0.9]]), np.ones((1, 2)), 0.5))
    np.testing.assert_allclose(y, [[0.5 + math.sqrt(0.25 - 0.01), 1.0]], rtol=1e-15)
    # x = 0 moves the whole 0.5; x = 1 sits on the upper bound
    eta = clipresc.scale([[0, 1]], ((1, 1),), 0.5, p=1)
    assert eta.dtype == np.float64 and eta.tolist() == [[0.5]]
    g = clipresc.perturb_vjp([[0, 1]], [[1, 1]], 0.5, 1.0)
    want = clipresc.perturb_vjp(np.array([[0.0, 1.0]]), np.ones((1, 2)), 0.5, 1.0)
    for k in ("x", "delta", "eps"):
        np.testing.assert_array_equal(g[k], want[k])
    # a float32 x casts an integer-list delta to float32, as it does any delta
    y32 = clipresc.perturb(np.array([[0.5, 0.9]], np.float32), [[1, 1]], 0.5)
    assert y32.dtype == np.float32


def test_integer_lists_with_an_array_api_x():
    xp = pytest.importorskip("array_api_strict")
    x = xp.asarray([[0.5, 0.9]], dtype=xp.float64)
    y = clipresc.perturb(x, [[1, 1]], 0.5)
    np.testing.assert_array_equal(np.asarray(y), clipresc.perturb([[0.5, 0.9]], [[1, 1]], 0.5))


U8_HINT = (
    "x must be a real floating-point array; got dtype uint8 (for 8-bit images, use "
    "x.astype(np.float32) / 255 with bounds=(0, 1), or x.astype(np.float32) with "
    "bounds=(0, 255))"
)


@pytest.mark.parametrize(
    ("x", "d", "message"),
    [
        (np.full((2, 3), 200, np.uint8), np.ones((2, 3)), U8_HINT),
        # a list of uint8 images is still uint8 data: not converted
        ([np.array([0, 255], np.uint8)], [[1.0, 1.0]], U8_HINT),
        (
            np.zeros((2, 3), np.uint16),
            np.ones((2, 3)),
            "x must be a real floating-point array; got dtype uint16 (for 16-bit images, use "
            "x.astype(np.float32) / 65535 with bounds=(0, 1), or x.astype(np.float32) with "
            "bounds=(0, 65535))",
        ),
        (
            np.zeros((2, 3)),
            np.ones((2, 3), np.int32),
            "delta must be a real floating-point array; got dtype int32 (convert it first, "
            "e.g. delta.astype(np.float32): integer arrays are not converted implicitly)",
        ),
        (
            np.zeros((2, 3), np.int64),
            np.ones((2, 3)),
            "x must be a real floating-point array; got dtype int64 (convert it first, "
            "e.g. x.astype(np.float32): integer arrays are not converted implicitly)",
        ),
        ([[True, False]], [[1.0, 1.0]], "x must be a real floating-point array; got dtype bool"),
    ],
)
def test_integer_arrays_are_refused_with_a_hint(x, d, message):
    for fn in FNS:
        with pytest.raises(TypeError) as ei:
            fn(x, d, 0.1)
        assert str(ei.value) == message


def test_uint8_hint_converts_to_data_that_works():
    img = np.array([[0, 128, 255]], np.uint8)
    a = clipresc.perturb(img.astype(np.float32) / 255, np.ones((1, 3), np.float32), 0.1)
    b = clipresc.perturb(img.astype(np.float32), np.ones((1, 3), np.float32), 25.5, bounds=(0, 255))
    np.testing.assert_allclose(a * 255, b, rtol=1e-6)


# ------------------------------------------------------------------ one thing, many things


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: clipresc.scale([[0.5, np.nan]], [[1.0, 1.0]], 0.1),
            "x has 1 non-finite value; first at index (0, 1)",
        ),
        (
            lambda: clipresc.scale([[np.nan, np.nan]], [[1.0, 1.0]], 0.1),
            "x has 2 non-finite values; first at index (0, 0)",
        ),
        (
            lambda: clipresc.scale([[0.5, 1.5]], [[1.0, 1.0]], 0.1),
            "x has 1 value outside bounds; first at index (0, 1)",
        ),
        (
            lambda: clipresc.scale([[0.5]], [[1.0]], [-1.0]),
            "eps has 1 negative or NaN value; first at index (0,)",
        ),
        (
            lambda: clipresc.scale([[0.5]], [[1.0]], [np.inf]),
            "eps has 1 infinite value; first at index (0,)",
        ),
        (
            lambda: clipresc.scale([[0.5]], [[1.0]], [0.1, 0.2]),
            "eps must be a scalar or hold one value per vector (1 vector); got shape (2,)",
        ),
        (
            lambda: clipresc.scale([[0.5, 0.5]], [[1.0, 1.0]], 0.1, bounds=([0.0, np.nan], 1.0)),
            "bounds: lower has 1 NaN value; first at index (1,)",
        ),
        (
            lambda: clipresc.scale(
                [[0.5, 0.5]], [[1.0, 1.0]], 0.1, bounds=([0.0, 1.0], [1.0, 0.0])
            ),
            "bounds: lower > upper at 1 position; first at index (1,)",
        ),
        (
            lambda: clipresc.scale([[0.5, 0.5]], [[1.0, 1.0]], 5.0, unreachable="raise"),
            "eps exceeds the largest reachable size for 1 of 1 vector; first: vector 0",
        ),
        (
            lambda: clipresc.scale([0.5, 0.5], [1.0, 1.0], 0.1, axis=1),
            "axis 1 is out of range for x with 1 dimension",
        ),
    ],
)
def test_counts_agree_with_their_noun(call, message):
    with pytest.raises(ValueError) as ei:
        call()
    assert str(ei.value) == message


def test_overflow_warning_counts_one_vector():
    x = np.full((1, 2), 0.5, np.float16)
    d = np.full((1, 2), 1e-7, np.float16)
    with pytest.warns(RuntimeWarning) as w:
        clipresc.scale(x, d, 1.0, bounds=None)
    assert str(w[0].message).startswith(
        "eta exceeds the range of float16 for 1 of 1 vector and is returned as inf"
    )


def test_the_binding_raises_the_catalogued_texts() -> None:
    """The compiled binding checks what a direct caller can get wrong; the texts of those
    errors come from ``clipresc._errors`` (one place for every text), not from Rust."""
    from clipresc import _clipresc, _errors

    x = np.full((2, 3), 0.5)
    narrow = np.zeros((2, 2))
    cases = [
        (
            lambda: _clipresc.scale_into(x, narrow, 0.0, 1.0, 1.0, 2.0, np.empty(2)),
            _errors.shape_mismatch((2, 2), (2, 3)),
        ),
        (
            lambda: _clipresc.solve_stats(x, narrow, 1.0, 2.0, 0.0, 1.0),
            _errors.shape_mismatch((2, 2), (2, 3)),
        ),
        (
            lambda: _clipresc.perturb_into(x, x, 0.0, 1.0, 1.0, 0.0, np.empty_like(x), np.empty(2)),
            _errors.p_not_positive(0.0),
        ),
        (
            lambda: _clipresc.project_into(x, x, 0.0, 1.0, 1.0, 3.0, np.empty_like(x)),
            _errors.project_p(3.0),
        ),
    ]
    for call, want in cases:
        with pytest.raises(type(want)) as info:
            call()
        assert str(info.value) == str(want)
