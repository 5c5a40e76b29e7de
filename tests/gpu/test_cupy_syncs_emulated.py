"""Host synchronisations and copies of the public CuPy path, counted without a GPU.

The stand-in ``cupy`` of ``test_cupy_backend_emulated`` (kernels run as OpenCL on PoCL) with
device arrays of a numpy subclass that records every read to the host (``bool``, ``int``,
``float``, ``item``, ``tolist``, ``get``): what a real CuPy array would synchronise for.
:mod:`clipresc.backends.cupy_call` must read at most once per call (the error word), never
in no-check mode, raise the NumPy path's errors (same text, count, first index), make no
full-size copies of inputs that are already contiguous in the work dtype, and give the
Rust core's values.
"""

from __future__ import annotations

import math
import os
import sys
import types
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import test_cupy_backend_emulated as emu

import clipresc
from clipresc import _dispatch
from clipresc.backends import cupy_backend as cb
from clipresc.backends import cupy_call, cupy_rows, gpu_checks

#: Every host read of a device array during the counted region.
SYNCS: list[str] = []
#: Sizes (elements) of the device arrays allocated or copied during the counted region.
ALLOCS: list[int] = []


class Dev(np.ndarray):
    """A "device" array: reading its values on the host is recorded as a synchronisation."""

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        return np.asarray(arr).view(Dev)  # (0-d results stay device arrays)

    def _read(self, what: str) -> np.ndarray:
        SYNCS.append(what)
        return np.asarray(self)

    def __bool__(self) -> bool:
        return bool(self._read("bool"))

    def __int__(self) -> int:
        return int(self._read("int"))

    def __float__(self) -> float:
        return float(self._read("float"))

    def __index__(self) -> int:
        return int(self._read("index"))

    def item(self, *args: Any) -> Any:
        return self._read("item").item(*args)

    def tolist(self) -> Any:
        return self._read("tolist").tolist()

    def get(self) -> np.ndarray:
        return self._read("get").copy()


def dev(a: Any) -> Dev:
    return np.asarray(a).view(Dev)


def _alloc(fn: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> Dev:
        out = fn(*args, **kwargs)
        ALLOCS.append(int(out.size))
        return out.view(Dev)

    return make


def _ascontiguous(a: Any, dtype: Any = None) -> Dev:
    out = np.ascontiguousarray(a, dtype=dtype)
    if not (isinstance(a, np.ndarray) and np.shares_memory(out, a)):
        ALLOCS.append(int(out.size))
    return out.view(Dev)


def _counting_cupy() -> types.SimpleNamespace:
    fake = emu._fake_cupy()
    fake.ndarray = Dev
    fake.ascontiguousarray = _ascontiguous
    fake.asarray = lambda a, dtype=None: _ascontiguous(np.asarray(a, dtype=dtype))
    fake.empty = _alloc(np.empty)
    fake.zeros = _alloc(np.zeros)
    fake.broadcast_to = lambda a, shape: np.broadcast_to(a, shape).view(Dev)
    fake.isinf = np.isinf
    fake.concatenate = lambda arrs: _alloc(np.concatenate)(arrs)
    return fake


class _CountingXp:
    """``array_api_compat.numpy`` whose ``astype`` records the copies it makes."""

    def __init__(self) -> None:
        import array_api_compat.numpy as npx

        self._npx = npx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._npx, name)

    def asarray(self, a: Any, **kwargs: Any) -> Any:
        return self._npx.asarray(a, **kwargs).view(Dev)  # (on the "device")

    def astype(self, a: Any, dtype: Any, copy: bool = True) -> Any:
        out = self._npx.astype(a, dtype, copy=copy)
        if not np.shares_memory(out, a):
            ALLOCS.append(int(out.size))
        return out.view(Dev)


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    emu.opencl_queue()
    monkeypatch.setattr(cb, "_cupy", _counting_cupy)
    cb._module_factory.cache_clear()
    yield
    cb._module_factory.cache_clear()


def _counted(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[str], list[int]]:
    SYNCS.clear()
    ALLOCS.clear()
    out = fn(*args, **kwargs)
    return out, list(SYNCS), list(ALLOCS)


def _case(seed: int, shape: tuple[int, ...], dtype: Any = np.float32) -> tuple[Dev, Dev]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, shape).astype(dtype)
    d = rng.standard_normal(shape).astype(dtype)
    return dev(x), dev(d)


def _old_path(kind: str, xp: Any, *args: Any) -> Any:
    """The array-API path the CuPy arrays took before (host checks, then the kernels)."""
    return _dispatch._forward_rows(kind, xp, cupy_rows, *args)


BOUNDS = {
    "numbers": (0.0, 1.0),
    "none": None,
    "device shared": "shared",
    "device per vector": "per_vector",
    "device full": "full",
}


def _bounds(kind: Any, shape: tuple[int, ...]) -> Any:
    if not isinstance(kind, str):
        return kind
    n = shape[-1]
    if kind == "shared":
        return dev(np.zeros(n, np.float32)), dev(np.ones(n, np.float32))
    if kind == "per_vector":
        return dev(np.zeros((*shape[:-1], 1), np.float32)), 1.0
    return dev(np.zeros(shape, np.float32)), dev(np.full(shape, 1.0, np.float32))


@pytest.mark.parametrize("bounds", list(BOUNDS), ids=list(BOUNDS))
@pytest.mark.parametrize("kind", ("perturb", "scale"))
@pytest.mark.parametrize("eps", ("number", "device"))
def test_at_most_one_sync_and_the_cores_values(
    fake_cupy: None, kind: str, bounds: str, eps: str
) -> None:
    shape = (5, 300)
    x, d = _case(len(bounds) + len(kind), shape)
    b = _bounds(BOUNDS[bounds], shape)
    e: Any = 1.5 if eps == "number" else dev(np.linspace(0.5, 3.0, shape[0]))
    xp = _CountingXp()
    got, syncs, allocs = _counted(cupy_call.forward, kind, xp, x, d, e, 2.0, b, None, "saturate")
    assert len(syncs) <= 1, syncs
    # nothing of x's size besides the output (perturb) is allocated or copied
    full = [a for a in allocs if a >= x.size]
    assert full == ([x.size] if kind == "perturb" else []), allocs
    nb = None if b is None else tuple(np.asarray(v) if isinstance(v, Dev) else v for v in b)
    fn = clipresc.perturb if kind == "perturb" else clipresc.scale
    want = fn(np.asarray(x), np.asarray(d), np.asarray(e), p=2.0, bounds=nb)
    assert type(got) is Dev and got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-6)
    # the same call in no-check mode reads nothing back
    with gpu_checks.unchecked():
        again, syncs, _ = _counted(cupy_call.forward, kind, xp, x, d, e, 2.0, b, None, "saturate")
    assert syncs == []
    np.testing.assert_array_equal(np.asarray(again), np.asarray(got))


def test_the_old_path_synchronised_more(fake_cupy: None) -> None:
    """The figures the new path is measured against (``pytest -s`` prints them): the
    array-API checks read the device once per check (eps twice, each bound's NaN, crossed
    bounds, x, delta, x outside; ``scale`` once more for its overflow count) and copied
    ``delta`` and the result with ``astype``."""
    x, d = _case(3, (5, 300))
    cases = {
        "eps and bounds numbers": (1.5, (0.0, 1.0)),
        "eps and shared bounds on the device": (
            dev(np.full(5, 1.5)),
            (dev(np.zeros(300, np.float32)), dev(np.ones(300, np.float32))),
        ),
    }
    for name, (eps, b) in cases.items():
        for kind in ("perturb", "scale"):
            counts = []
            for fn in (_old_path, cupy_call.forward):
                _, syncs, allocs = _counted(
                    fn, kind, _CountingXp(), x, d, eps, 2.0, b, None, "saturate"
                )
                counts.append((len(syncs), sum(a >= x.size for a in allocs)))
            (old, old_full), (new, new_full) = counts
            print(
                f"{kind:8s} {name:38s} host syncs {old} -> {new}, "
                f"full-size arrays allocated {old_full} -> {new_full} (bool masks not counted)"
            )
            assert new == 1 and old >= 5, (old, new)
            assert new_full == (1 if kind == "perturb" else 0) < old_full


@pytest.mark.parametrize("kind", ("perturb", "scale"))
def test_vjp_one_sync_and_the_cores_values(fake_cupy: None, kind: str) -> None:
    shape = (4, 200)
    x, d = _case(11, shape, np.float64)
    rng = np.random.default_rng(12)
    cot = dev(rng.standard_normal(shape if kind == "perturb" else (shape[0], 1)))
    lo, hi = dev(np.zeros(shape[-1])), dev(np.ones(shape[-1]))
    xp = _CountingXp()
    for unreachable in ("saturate", "raise"):
        got, syncs, allocs = _counted(
            cupy_call.vjp, kind, xp, x, d, 1.0, cot, 2.0, (lo, hi), None, unreachable
        )
        assert len(syncs) <= 1, syncs
        # besides the two (rows, n) cotangents, no full-size array
        assert len([a for a in allocs if a >= x.size]) == 2, allocs
        fn = clipresc.perturb_vjp if kind == "perturb" else clipresc.scale_vjp
        want = fn(
            np.asarray(x), np.asarray(d), 1.0, np.asarray(cot), p=2.0,
            bounds=(np.asarray(lo), np.asarray(hi)), unreachable=unreachable,
        )  # fmt: skip
        for k in ("x", "delta", "eps", "lower", "upper"):
            np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-9, atol=1e-12)
        with gpu_checks.unchecked():
            _, syncs, _ = _counted(
                cupy_call.vjp, kind, xp, x, d, 1.0, cot, 2.0, (lo, hi), None, "saturate"
            )
        assert syncs == []


def _errors_of(call: Any) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return str(info.value)


BAD = {
    "eps negative (device)": lambda x, d: dict(eps=dev(np.array([1.0, -1.0, 2.0, -3.0]))),
    "eps NaN (number)": lambda x, d: dict(eps=math.nan),
    "eps infinite (device)": lambda x, d: dict(eps=dev(np.array(math.inf))),
    "x NaN": lambda x, d: dict(x=_poison(x, (2, 7), math.nan)),
    "x outside": lambda x, d: dict(x=_poison(x, (1, 3), 1.5)),
    "delta inf": lambda x, d: dict(d=_poison(d, (3, 0), math.inf)),
    "lower NaN": lambda x, d: dict(bounds=(dev(np.where(np.arange(50) == 9, np.nan, 0.0)), 1.0)),
    "crossed": lambda x, d: dict(
        bounds=(dev(np.full(50, 0.5)), dev(np.where(np.arange(50) == 4, 0.2, 1.0)))
    ),
    "crossed numbers": lambda x, d: dict(bounds=(1.0, 0.0)),
}


def _poison(a: Dev, at: tuple[int, int], v: float) -> Dev:
    b = np.array(a)
    b[at] = v
    return dev(b)


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_errors_as_the_numpy_path(fake_cupy: None, case: str) -> None:
    """Invalid values found by the kernels (or the host, for numbers) raise the NumPy
    path's error: the same text, count and first index."""
    import array_api_compat.numpy as xp

    x, d = _case(5, (4, 50), np.float64)
    args: dict[str, Any] = dict(x=x, d=d, eps=1.0, bounds=(0.0, 1.0))
    args.update(BAD[case](x, d))

    def host(v: Any) -> Any:
        return np.asarray(v) if isinstance(v, Dev) else v

    nb = args["bounds"]
    want = _errors_of(
        lambda: clipresc.perturb(
            host(args["x"]), host(args["d"]), host(args["eps"]), p=2.0,
            bounds=tuple(host(v) for v in nb),
        )
    )  # fmt: skip
    SYNCS.clear()
    got = _errors_of(
        lambda: cupy_call.forward(
            "perturb", xp, args["x"], args["d"], args["eps"], 2.0, nb, None, "saturate"
        )
    )
    assert got == want
    if case.endswith("(number)") or case == "crossed numbers":
        assert SYNCS == []  # found on the host, before any launch
    got_vjp = _errors_of(
        lambda: cupy_call.vjp(
            "perturb", xp, args["x"], args["d"], args["eps"], dev(np.ones((4, 50))), 2.0, nb,
            None, "saturate",
        )
    )  # fmt: skip
    assert got_vjp == want


def test_unreachable_raise_as_the_numpy_path(fake_cupy: None) -> None:
    import array_api_compat.numpy as xp

    x, d = _case(6, (4, 50), np.float64)
    eps = np.array([0.5, 100.0, 0.5, 200.0])
    want = _errors_of(
        lambda: clipresc.perturb(np.asarray(x), np.asarray(d), eps, unreachable="raise")
    )
    SYNCS.clear()
    got = _errors_of(
        lambda: cupy_call.forward("perturb", xp, x, d, dev(eps), 2.0, (0.0, 1.0), None, "raise")
    )
    assert got == want and "2 of 4" in got
    # no unreachable row: one read
    _, syncs, _ = _counted(
        cupy_call.forward, "perturb", xp, x, d, 0.5, 2.0, (0.0, 1.0), None, "raise"
    )
    assert len(syncs) == 1


def test_public_path_routes_cupy_arrays_here(
    fake_cupy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``clipresc.perturb`` on (stand-in) CuPy arrays takes :mod:`cupy_call`."""
    seen: list[str] = []
    real = cupy_call.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(cupy_call, "forward", spy)
    monkeypatch.setattr(_dispatch, "library_of_call", lambda named: ("cupy", None, []))
    monkeypatch.setattr(_dispatch, "_path", lambda lib, arrays, vjp: "cupy")
    monkeypatch.setattr(
        _dispatch, "_namespace", lambda *a: __import__("array_api_compat.numpy").numpy
    )
    x, d = _case(8, (3, 40))
    y = clipresc.perturb(x, d, 1.0)
    assert seen == ["perturb"]
    np.testing.assert_allclose(
        np.asarray(y), clipresc.perturb(np.asarray(x), np.asarray(d), 1.0), rtol=2e-6
    )


def test_lists_other_axes_and_float16(fake_cupy: None) -> None:
    """Host lists for ``eps`` and the bounds (checked on the host), vectors along a leading
    axis, float16 data (computed in float32): one read, the core's values."""
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(41)
    xh = rng.uniform(0.1, 0.9, (60, 4)).astype(np.float16)
    dh = rng.standard_normal((60, 4)).astype(np.float16)
    eps = [[0.5, 1.0, 1.5, 2.0]]
    bounds = ([0.0] * 4, 1.0)
    for kind, fn in (("perturb", clipresc.perturb), ("scale", clipresc.scale)):
        got, syncs, _ = _counted(
            cupy_call.forward, kind, xp, dev(xh), dev(dh), eps, 2.0, bounds, 0, "saturate"
        )
        assert len(syncs) <= 1, syncs
        want = fn(xh, dh, np.asarray(eps), p=2.0, bounds=(np.zeros(4), 1.0), axis=0)
        assert got.dtype == np.float16 and got.shape == want.shape
        np.testing.assert_allclose(
            np.asarray(got, np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-3
        )
    # a NumPy eps and bound (host arrays next to device data): checked on the host too
    got, syncs, _ = _counted(
        cupy_call.forward, "scale", xp, dev(xh), dev(dh), np.asarray(eps), 2.0,
        (np.zeros(4), 1.0), 0, "saturate",
    )  # fmt: skip
    assert len(syncs) <= 1
    want = clipresc.scale(xh, dh, np.asarray(eps), p=2.0, bounds=(np.zeros(4), 1.0), axis=0)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError) as info:
        cupy_call.forward(
            "perturb", xp, dev(xh), dev(dh), [[1.0, -1.0, 1, 1]], 2.0, None, 0, "saturate"
        )
    with pytest.raises(ValueError) as ref:
        clipresc.perturb(xh, dh, np.array([[1.0, -1.0, 1, 1]]), axis=0, bounds=None)
    assert str(info.value) == str(ref.value)
