"""The public functions on every array library: one ``xp`` fixture runs the contract on NumPy,
array-api-strict on its CPU device (Rust core through DLPack) and on a non-CPU device (the
pure array-API backend), and PyTorch / JAX on the CPU when installed.

Oracles: the NumPy path's results (themselves checked against bisection and finite
differences elsewhere) and its exact error messages on the same values; data pointers for
the zero-copy claim; a fresh interpreter for the no-import claim.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import clipresc
from clipresc import _dispatch
from clipresc.backends import numpy_backend
from support.framework_cases import Bad, bad_cases


@dataclass
class Backend:
    name: str
    path: str  # the dispatch path of the forward; the VJP's is the same except for frameworks
    asarray: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    is_mine: Callable[[Any], bool]
    dtypes: tuple[Any, ...]  # NumPy dtypes the library keeps as they are

    def arr(self, a: Any) -> Any:
        return a if a is None or isinstance(a, float) else self.asarray(np.asarray(a))


def _strict(device: str) -> Backend:
    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device(device)
    cpu = xs.Device("CPU_DEVICE")

    def mine(a: Any) -> bool:
        return type(a).__module__.startswith("array_api_strict") and a.device == dev

    return Backend(
        f"strict-{device}",
        "cpu" if device == "CPU_DEVICE" else "generic",
        lambda a: xs.asarray(a, device=dev),
        lambda a: np.from_dlpack(a.to_device(cpu)),
        mine,
        (np.float32, np.float64),
    )


def _torch() -> Backend:
    torch = pytest.importorskip("torch")
    return Backend(
        "torch",
        "framework",
        lambda a: torch.asarray(a),
        lambda a: a.detach().numpy(),
        lambda a: isinstance(a, torch.Tensor) and a.device.type == "cpu",
        (np.float32, np.float64),
    )


def _jax() -> Backend:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x64 = bool(jax.config.jax_enable_x64)
    return Backend(
        "jax",
        "framework",
        jnp.asarray,
        np.asarray,
        lambda a: isinstance(a, jax.Array),
        (np.float32, np.float64) if x64 else (np.float32,),
    )


@pytest.fixture(params=["numpy", "strict-cpu", "strict-device1", "torch", "jax"])
def xp(request: pytest.FixtureRequest) -> Backend:
    if request.param == "numpy":
        return Backend(
            "numpy",
            "numpy",
            np.asarray,
            np.asarray,
            lambda a: isinstance(a, np.ndarray),
            (np.float16, np.float32, np.float64),
        )
    if request.param == "strict-cpu":
        return _strict("CPU_DEVICE")
    if request.param == "strict-device1":
        return _strict("device1")
    return _torch() if request.param == "torch" else _jax()


def problem(dtype: Any, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (4, 3, 5)).astype(dtype)
    d = rng.standard_normal((4, 3, 5)).astype(dtype)
    lo = np.array([0.0, -0.1, 0.02]).reshape(3, 1)
    hi = np.array([1.0, 0.98, 1.1]).reshape(3, 1)
    eps = np.array([0.4, 1.0, 2.5, 30.0])  # the last one is unreachable
    return {"x": x, "delta": d, "eps": eps, "lower": lo, "upper": hi}


def tol(dtype: Any) -> float:
    return {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}[np.dtype(dtype).type]


def check_same(be: Backend, got: Any, want: np.ndarray, dtype: Any, what: str) -> None:
    assert be.is_mine(got), f"{what}: {type(got)} is not a {be.name} array"
    g = be.to_numpy(got)
    assert g.shape == want.shape, what
    assert g.dtype == want.dtype == np.dtype(dtype), what
    t = tol(dtype)
    np.testing.assert_allclose(
        g.astype(np.float64), want.astype(np.float64), rtol=t, atol=t, err_msg=what
    )


@pytest.mark.parametrize("p", [0.7, 2.0, math.inf])
@pytest.mark.parametrize("kind", ["scale", "perturb"])
def test_forward_in_the_callers_library(xp: Backend, p: float, kind: str) -> None:
    for dtype in xp.dtypes:
        a = problem(dtype)
        fn = clipresc.scale if kind == "scale" else clipresc.perturb
        want = fn(a["x"], a["delta"], a["eps"], p=p, bounds=(a["lower"], a["upper"]))
        args = {k: xp.arr(v) for k, v in a.items()}
        named = {"x": args["x"], "delta": args["delta"], "eps": args["eps"]}
        assert _dispatch.route(named, vjp=False)[1] == xp.path
        got = fn(args["x"], args["delta"], args["eps"], p=p, bounds=(args["lower"], args["upper"]))
        check_same(xp, got, want, dtype, f"{kind} {dtype.__name__}")


@pytest.mark.parametrize("p", [0.7, 2.0, math.inf])
@pytest.mark.parametrize("kind", ["scale", "perturb"])
def test_vjp_in_the_callers_library(xp: Backend, p: float, kind: str) -> None:
    for dtype in xp.dtypes:
        a = problem(dtype, seed=1)
        rng = np.random.default_rng(2)
        shape = (4, 1, 1) if kind == "scale" else a["x"].shape
        cot = rng.standard_normal(shape).astype(dtype)
        fn = clipresc.scale_vjp if kind == "scale" else clipresc.perturb_vjp
        bounds = (a["lower"].astype(dtype), 1.0)  # an array side and a number side
        want = fn(a["x"], a["delta"], a["eps"].astype(dtype), cot, p=p, bounds=bounds)
        args = {k: xp.arr(v) for k, v in a.items()}
        path = "cpu" if xp.path == "framework" else xp.path
        named = {"x": args["x"], "delta": args["delta"]}
        assert _dispatch.route(named, vjp=True)[1] == path
        got = fn(
            args["x"],
            args["delta"],
            xp.arr(a["eps"].astype(dtype)),
            xp.arr(cot),
            p=p,
            bounds=(xp.arr(bounds[0]), 1.0),
        )
        assert set(got) == {"x", "delta", "eps", "lower", "upper"}
        assert got["upper"] is None
        for key in ("x", "delta", "eps", "lower"):
            check_same(xp, got[key], want[key], dtype, f"{kind} {key} {dtype.__name__}")


def test_scalar_eps_and_shared_bounds(xp: Backend) -> None:
    a = problem(np.float32)
    lo = np.full((3, 5), -0.05, dtype=np.float32)
    want = clipresc.perturb_vjp(a["x"], a["delta"], 0.8, 1.0, bounds=(lo, None), axis=(1, 2))
    got = clipresc.perturb_vjp(
        xp.arr(a["x"]), xp.arr(a["delta"]), 0.8, 1.0, bounds=(xp.arr(lo), None), axis=(1, 2)
    )
    check_same(xp, got["eps"], want["eps"], np.float32, "eps")
    check_same(xp, got["lower"], want["lower"], np.float32, "lower")
    assert want["eps"].shape == () and got["upper"] is None


def _call_with(be: Backend, bad: Bad, vjp: bool) -> tuple[type, str]:
    kwargs = dict(bad.kwargs)
    if "bounds" in kwargs and len(kwargs["bounds"]) == 2:
        kwargs["bounds"] = tuple(
            be.arr(b) if isinstance(b, np.ndarray) else b for b in kwargs["bounds"]
        )
    eps = be.arr(bad.eps) if isinstance(bad.eps, np.ndarray) else bad.eps
    x, d = be.arr(bad.x), be.arr(bad.delta)
    try:
        if vjp:
            clipresc.perturb_vjp(x, d, eps, 1.0, **kwargs)
        else:
            clipresc.perturb(x, d, eps, **kwargs)
    except (ValueError, TypeError) as e:
        return type(e), str(e)
    raise AssertionError(f"{be.name}: no error for {bad.name}")


@pytest.mark.parametrize("bad", bad_cases(), ids=lambda b: b.name)
@pytest.mark.parametrize("vjp", [False, True], ids=["forward", "vjp"])
def test_same_errors(xp: Backend, bad: Bad, vjp: bool) -> None:
    # the NumPy path's message on the values as this library holds them (jax may narrow
    # float64 to float32 and int64 to int32)
    as_held = Bad(
        bad.name,
        bad.exc,
        xp.to_numpy(xp.arr(bad.x)),
        xp.to_numpy(xp.arr(bad.delta)),
        xp.to_numpy(xp.arr(bad.eps)) if isinstance(bad.eps, np.ndarray) else bad.eps,
        bad.kwargs,
    )
    want = _call_with(
        Backend("numpy", "numpy", np.asarray, np.asarray, lambda a: True, ()), as_held, vjp
    )
    assert want[0] is bad.exc
    assert _call_with(xp, bad, vjp) == want


def test_zero_copy_for_contiguous_torch_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    x = torch.rand(4, 3, 8)
    d = torch.randn(4, 3, 8)
    seen: dict[str, Any] = {}
    perturb_eta, vjp_rows = numpy_backend.perturb_eta, numpy_backend.vjp_rows

    def spy_perturb(prob: Any) -> Any:
        seen["x"], seen["delta"] = prob.x.ctypes.data, prob.delta.ctypes.data
        y, eta = perturb_eta(prob)
        seen["y"] = y
        return y, eta

    def spy_vjp(prob: Any, *args: Any) -> Any:
        seen["vx"], seen["vdelta"] = prob.x.ctypes.data, prob.delta.ctypes.data
        seen["g"] = vjp_rows(prob, *args)
        return seen["g"]

    monkeypatch.setattr(numpy_backend, "perturb_eta", spy_perturb)
    monkeypatch.setattr(numpy_backend, "vjp_rows", spy_vjp)
    y = clipresc.perturb(x, d, 1.0)
    assert seen["x"] == x.data_ptr() and seen["delta"] == d.data_ptr()
    assert y.data_ptr() == seen["y"].ctypes.data
    g = clipresc.perturb_vjp(x, d, 1.0, torch.ones_like(x))
    assert seen["vx"] == x.data_ptr() and seen["vdelta"] == d.data_ptr()
    assert g["x"].data_ptr() == seen["g"]["x"].ctypes.data
    assert g["delta"].data_ptr() == seen["g"]["delta"].ctypes.data


def test_mixed_libraries_raise_type_error() -> None:
    x = np.full((2, 3), 0.5)
    d = np.ones((2, 3))
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(
        TypeError,
        match=r"different libraries in one call \(x: numpy, "
        r"delta: array_api_strict\)",
    ):
        clipresc.scale(x, xs.asarray(d), 0.5)
    with pytest.raises(TypeError, match=r"eps: numpy"):
        clipresc.perturb_vjp(xs.asarray(x), xs.asarray(d), np.array([0.5, 0.2]), 1.0)
    with pytest.raises(TypeError, match=r"upper: array_api_strict"):
        clipresc.perturb(x, d, 0.5, bounds=(0.0, xs.asarray(np.ones(3))))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"x: numpy, delta: torch"):
        clipresc.perturb(x, torch.ones(2, 3, dtype=torch.float64), 0.5)
    # numbers, lists and 0-d NumPy values fit every library
    out = clipresc.scale(
        xs.asarray(x), xs.asarray(d), np.float64(0.5), bounds=(np.array(0.0), [1.0] * 3)
    )
    assert type(out).__module__.startswith("array_api_strict")


def test_jit_traced_vjp_uses_the_array_api_backend() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    a = problem(np.float32, seed=3)
    x, d = jnp.asarray(a["x"]), jnp.asarray(a["delta"])
    eps = jnp.asarray(a["eps"], dtype=jnp.float32)

    def f(x: Any, d: Any, eps: Any) -> Any:
        return clipresc.perturb_vjp(x, d, eps, jnp.ones_like(x), p=3.0)["x"]

    eager = clipresc.perturb_vjp(a["x"], a["delta"], a["eps"].astype(np.float32), 1.0, p=3.0)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x, d, eps)), eager["x"], rtol=1e-4, atol=1e-4)


def test_importing_and_using_clipresc_imports_no_framework() -> None:
    code = (
        "import sys, numpy as np, clipresc\n"
        "x = np.full((2, 3), 0.5)\n"
        "clipresc.perturb(x, np.ones_like(x), 0.5)\n"
        "clipresc.perturb_vjp(x, np.ones_like(x), 0.5, 1.0)\n"
        "bad = {'torch', 'jax', 'tensorflow', 'cupy', 'dask', 'array_api_strict', 'eagerpy'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_numpy_forward_calls_do_not_import_array_api_compat() -> None:
    # the array-API layer costs tens of milliseconds to import; NumPy forwards never need it
    code = (
        "import sys, numpy as np, clipresc\n"
        "x = np.full((2, 3), 0.5)\n"
        "clipresc.perturb(x, np.ones_like(x), 0.5)\n"
        "clipresc.perturb(x, [[1.0, 2.0, 3.0]] * 2, np.full(2, 0.5), bounds=(0.0, 1.0))\n"
        "clipresc.scale(x, np.ones_like(x), 0.5)\n"
        "clipresc.noise(x, 0.5, seed=0)\n"
        "clipresc.project(x, np.ones_like(x), 0.5)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'array_api_compat'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- cheap paths


def _plain_case():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (5, 3, 4, 4)).astype(np.float32)
    return x, rng.standard_normal(x.shape).astype(np.float32)


@pytest.mark.parametrize("fn", ["scale", "perturb"])
def test_plain_float_arguments_match_the_general_path(fn):
    """A Python float eps and a pair of float bounds skip conversions (the per-call cost of
    small batches); the results must be the bits of the same values given as arrays."""
    x, d = _plain_case()
    f = getattr(clipresc, fn)
    plain = f(x, d, 0.75, bounds=(0.0, 1.0))
    for eps, bounds in [
        (np.float64(0.75), (0.0, 1.0)),
        (np.full(5, 0.75), (0.0, 1.0)),
        (0.75, (np.float32(0.0), np.array(1.0))),
        (0.75, [0.0, 1.0]),
    ]:
        np.testing.assert_array_equal(f(x, d, eps, bounds=bounds), plain)
    one_sided = f(x, d, 0.75, bounds=(-math.inf, 1.0))
    np.testing.assert_array_equal(one_sided, f(x, d, 0.75, bounds=(None, np.float64(1.0))))


@pytest.mark.parametrize(
    ("eps", "bounds", "message"),
    [
        (-1.0, (0.0, 1.0), r"eps has 1 negative or NaN value; first at index \(\)"),
        (math.nan, (0.0, 1.0), r"eps has 1 negative or NaN value"),
        (math.inf, (0.0, 1.0), r"eps has 1 infinite value"),
        (0.5, (1.0, 0.0), r"bounds: lower > upper at 1 position"),
        (0.5, (math.nan, 1.0), r"bounds: lower has 1 NaN value"),
        (0.5, (0.0, math.nan), r"bounds: upper has 1 NaN value"),
    ],
)
def test_plain_float_arguments_still_get_the_errors(eps, bounds, message):
    x, d = _plain_case()
    with pytest.raises(ValueError, match=message):
        clipresc.scale(x, d, eps, bounds=bounds)


def test_layouts_are_shared_and_contiguous_rows_are_views():
    from clipresc._layout import Layout

    a = Layout.of((5, 3, 4, 4), (1, 2, 3))
    assert Layout.of((5, 3, 4, 4), (1, 2, 3)) is a
    x, _ = _plain_case()
    rows = a.to_rows(x, np.dtype(np.float32))
    assert rows.shape == (5, 48) and np.shares_memory(rows, x)
    # anything else is still converted: another dtype, a strided view
    assert not np.shares_memory(a.to_rows(x, np.dtype(np.float64)), x)
    strided = x[:, :, ::-1, :]
    np.testing.assert_array_equal(
        a.to_rows(strided, np.dtype(np.float32)), np.ascontiguousarray(strided).reshape(5, 48)
    )
