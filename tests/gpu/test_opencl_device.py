"""How the OpenCL device for the kernels is chosen (clipresc.backends.opencl_device).

The rules are checked on a fake pyopencl whose platforms mimic what machines offer (an old
PyPI PoCL whose LLVM does not know the CPU, Debian's PoCL, the Oclgrind simulator, a GPU
driver); the probe itself is checked on the real device the kernel tests use.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _opencl_env import opencl_queue

from clipresc.backends import opencl_device as od

CPU, GPU = 2, 4


def _device(platform: str, name: str, kind: int = CPU, fp64: bool = True) -> Any:
    return types.SimpleNamespace(
        platform=types.SimpleNamespace(name=platform),
        name=name,
        version="OpenCL 3.0",
        type=kind,
        extensions="cl_khr_fp64" if fp64 else "cl_khr_icd",
    )


MACHINE = [
    _device("NVIDIA CUDA", "H100", GPU),
    _device("Oclgrind", "Oclgrind Simulator"),
    _device("Intel(R) OpenCL", "Xeon"),
    _device("Portable Computing Language", "pthread-generic (LLVM 14)"),
    _device("Portable Computing Language", "pthread-skylake-avx512"),
]


@pytest.fixture
def fake_cl(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A pyopencl offering MACHINE; returns the names probed, in order."""
    platforms: dict[str, list[Any]] = {}
    for d in MACHINE:
        platforms.setdefault(id(d.platform), []).append(d)
    fake = types.SimpleNamespace(
        get_platforms=lambda: [
            types.SimpleNamespace(get_devices=lambda ds=ds: ds) for ds in platforms.values()
        ],
        device_type=types.SimpleNamespace(CPU=CPU, GPU=GPU),
        Error=RuntimeError,
    )
    probed: list[str] = []

    def probe(device: Any) -> str | None:
        probed.append(device.name)
        if "LLVM 14" in device.name:
            return "probe kernel failed: error: unknown target CPU 'generic'"
        return None

    monkeypatch.setitem(sys.modules, "pyopencl", fake)
    monkeypatch.setattr(od, "_probe", probe)
    monkeypatch.delenv(od.DEVICE_ENV, raising=False)
    return probed


def test_pocl_cpu_preferred_and_broken_pocl_passed_over(fake_cl: list[str]) -> None:
    chosen = od.select_device()
    assert chosen.device.name == "pthread-skylake-avx512"
    assert chosen.description == "Portable Computing Language / pthread-skylake-avx512 (OpenCL 3.0)"
    # the LLVM 14 PoCL was tried first and rejected; the simulator never considered
    assert fake_cl == ["pthread-generic (LLVM 14)", "pthread-skylake-avx512"]


def test_other_cpu_drivers_before_gpus_when_no_pocl_works(
    fake_cl: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(od, "_probe", lambda d: None if d.name in ("Xeon", "H100") else "broken")
    assert od.select_device().device.name == "Xeon"


def test_environment_names_the_device(fake_cl: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(od.DEVICE_ENV, "OCLGRIND")
    assert od.select_device().device.name == "Oclgrind Simulator"
    assert od.select_device("nvidia").device.name == "H100"  # the argument wins


def test_no_match_lists_the_devices_seen(
    fake_cl: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(od.DEVICE_ENV, "amd gpu")
    with pytest.raises(RuntimeError) as err:
        od.select_device()
    text = str(err.value)
    assert "matching CLIPRESC_OPENCL_DEVICE='amd gpu'" in text
    assert "Oclgrind / Oclgrind Simulator (OpenCL 3.0)" in text and "NVIDIA CUDA / H100" in text
    assert "apt-get install pocl-opencl-icd" in text
    assert fake_cl == []


def test_nothing_usable_says_why_and_what_to_install(
    fake_cl: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(od, "_probe", lambda d: "no cl_khr_fp64")
    with pytest.raises(RuntimeError) as err:
        od.select_device()
    text = str(err.value)
    assert text.startswith("no usable OpenCL device with float64.")
    assert (
        "Passed over: Portable Computing Language / pthread-generic (LLVM 14) (OpenCL 3.0): "
        "no cl_khr_fp64" in text
    )
    assert od.INSTALL_HINT in text


def test_probe_accepts_the_device_the_kernel_tests_run_on() -> None:
    from clipresc.backends import opencl_backend as ob

    queue = opencl_queue()
    (device,) = queue.context.devices
    assert od._probe(device) is None
    assert ob.default_device_description() == od.describe(device)


def test_probe_rejects_a_device_without_float64() -> None:
    assert od._probe(_device("X", "no doubles", fp64=False)) == "no cl_khr_fp64"
