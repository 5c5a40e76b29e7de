"""Compile every GPU kernel with NVRTC for several architectures, without a GPU.

NVRTC needs no driver when the target architecture is given explicitly. It comes from
the ``nvidia-cuda-nvrtc-cu12`` wheel, which CuPy (>= 14, via ``cuda-pathfinder``) finds
in site-packages on its own (see tests/gpu/requirements.txt).
"""

from __future__ import annotations

import io
import re

import pytest

cupy = pytest.importorskip("cupy")
compiler = pytest.importorskip("cupy.cuda.compiler")

from clipresc.backends.cupy_backend import nvrtc_options  # noqa: E402
from clipresc.kernels import KERNEL_NAMES, kernel_source  # noqa: E402

#: Architectures compiled for where the installed NVRTC supports them: CUDA 13 dropped
#: compute_70 and CUDA 12.8 added 100 and 120, so the list follows the toolkit.
WANTED_ARCHS = ("70", "80", "90", "100", "120")
#: Supported by every NVRTC the project accepts (CUDA 12 and 13); must always compile.
REQUIRED_ARCHS = ("80", "90")


def _supported_archs() -> frozenset[str]:
    from cupy_backends.cuda.libs import nvrtc

    return frozenset(str(a) for a in nvrtc.getSupportedArchs())


SUPPORTED_ARCHS = _supported_archs()
ARCHS = tuple(a for a in WANTED_ARCHS if a in SUPPORTED_ARCHS)
REALS = ("float", "double")


def _compile(src: str, options: tuple[str, ...], method: str = "ptx") -> tuple[str, str]:
    log = io.StringIO()
    prog = compiler._NVRTCProgram(src, "clipresc.cu", method=method)
    out, _ = prog.compile(options=options, log_stream=log)
    text = out.decode("latin-1") if isinstance(out, bytes) else str(out)
    return text, log.getvalue()


def test_required_architectures_are_supported() -> None:
    from cupy_backends.cuda.libs import nvrtc

    missing = sorted(set(REQUIRED_ARCHS) - SUPPORTED_ARCHS, key=int)
    assert not missing, f"NVRTC {nvrtc.getVersion()} cannot target compute_{missing}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("real", REALS)
def test_kernels_compile_to_ptx(real: str, arch: str) -> None:
    ptx, log = _compile(kernel_source(), nvrtc_options(real, f"compute_{arch}"))
    # NVRTC 12.x warns that targets before compute_75 are deprecated; nothing else allowed
    warnings = [
        line
        for line in log.splitlines()
        if "warning" in line.lower() and "are deprecated" not in line
    ]
    assert not warnings, log
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))
    assert entries == set(KERNEL_NAMES)
    assert f".target sm_{arch}" in ptx
    # float64 kernels load doubles from global memory; float32 ones load floats (typed
    # .f32/.f64 loads before sm_100; NVRTC 13 emits untyped .b32/.b64 loads for sm_100+)
    widths = {m[-2:] for m in re.findall(r"ld\.global(?:\.[\w:]+)*?\.[fb](?:32|64)\b", ptx)}
    assert ("64" if real == "double" else "32") in widths, sorted(widths)


@pytest.mark.parametrize("real", REALS)
def test_kernels_assemble_to_cubin(real: str) -> None:
    """ptxas (inside NVRTC) accepts the PTX and the block-shared memory fits."""
    _, log = _compile(kernel_source(), (*nvrtc_options(real, "sm_80"), "-Xptxas=-v"), "cubin")
    smem = [int(m) for m in re.findall(r"(\d+) bytes smem", log)]
    assert smem and max(smem) <= 48 * 1024, log


@pytest.mark.parametrize("real", REALS)
def test_no_flush_to_zero_under_cupy_options(real: str) -> None:
    """CuPy appends -ftz=true; float <-> double conversions must still keep subnormals.
    (libdevice's pow keeps a few flush-insensitive .ftz compares: not checked.)"""
    ptx, log = _compile(kernel_source(), (*nvrtc_options(real, "compute_80"), "-ftz=true"))
    assert "warning" not in log.lower(), log
    assert not re.findall(r"cvt[.\w]*\.ftz", ptx)
    if real == "float":
        assert re.findall(r"cvt\.f64\.f32", ptx)


def test_syntax_error_fails() -> None:
    broken = kernel_source().replace("CR_BARRIER();", "CR_BARRIER()", 1)
    with pytest.raises(compiler.CompileException):
        _compile(broken, nvrtc_options("float", "compute_80"))


def _fma_count(ptx: str) -> int:
    return len(re.findall(r"\bfma\.rn\.f(?:32|64)\b", ptx))


@pytest.mark.parametrize("real", REALS)
def test_fma_policy_no_contraction(real: str) -> None:
    """The documented FMA policy (cupy_backend.FMA_OPTIONS): NVRTC does not contract
    ``a + b * c``. NVRTC's default does (the same source then has more FMAs), and with the
    policy the only FMAs left are libdevice's own inside ``pow``: replacing ``pow`` by a
    product leaves none."""
    from clipresc.backends.cupy_backend import FMA_OPTIONS

    assert FMA_OPTIONS == ("--fmad=false",)
    opts = nvrtc_options(real, "compute_90")
    assert "--fmad=false" in opts and not any(o.startswith("--fmad=true") for o in opts)
    src = kernel_source()
    policy, _ = _compile(src, opts)
    default, _ = _compile(src, tuple(o for o in opts if o != "--fmad=false"))
    assert _fma_count(default) > _fma_count(policy)
    no_pow = src.replace("pow(v, p)", "(v * p)").replace("pow(t, 1.0 / p)", "(t * p)")
    no_pow = no_pow.replace("pow(v, p - 1.0)", "(v * p)")
    assert not re.search(r"\bpow\(", no_pow.split("#endif /* CLIPRESC_DIALECT_H */", 1)[1])
    bare, _ = _compile(no_pow, opts)
    assert _fma_count(bare) == 0


#: The main kernels' register budget: 64 per thread = 4 blocks of 256 threads per SM.
MAX_REGISTERS = 64


def _resources(log: str) -> dict[str, dict[str, int]]:
    """Per kernel: registers, spill stores / loads (bytes) and shared memory from ptxas -v."""
    out: dict[str, dict[str, int]] = {}
    name = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            out[name] = {"registers": -1, "spill_stores": 0, "spill_loads": 0, "smem": 0}
            continue
        if name is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and out[name]["registers"] < 0:
            out[name]["spill_stores"] = int(m.group(1))
            out[name]["spill_loads"] = int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[name]["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            out[name]["smem"] = int(s.group(1)) if s else 0
    return out


@pytest.mark.parametrize("arch", REQUIRED_ARCHS)
@pytest.mark.parametrize("real", REALS)
def test_registers_and_occupancy(real: str, arch: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Registers, spills and blocks per SM for sm_80 / sm_90 (printed: `pytest -s`), and the
    64-register budget the dialect's __launch_bounds__ asks for. (The uncapped build needs
    ~90-100 registers for the solve state; see kernels/dialect.h.)"""
    _, log = _compile(kernel_source(), (*nvrtc_options(real, f"sm_{arch}"), "-Xptxas=-v"), "cubin")
    res = _resources(log)
    assert set(res) == set(KERNEL_NAMES), log
    with capsys.disabled():
        print(f"\nsm_{arch} {real}:")
        for name, r in sorted(res.items()):
            threads = 256 * max(1, min(65536 // (max(r["registers"], 1) * 256), 8))
            print(
                f"  {name:28s} {r['registers']:3d} registers, spills {r['spill_stores']} B "
                f"stored / {r['spill_loads']} B loaded, {r['smem']} B smem, "
                f"<= {threads} threads per SM by registers"
            )
    for name, r in res.items():
        assert 0 < r["registers"] <= MAX_REGISTERS, (name, r)
        # what the cap costs: a bounded spill of the solve state, nothing unbounded
        assert r["spill_stores"] <= 1024, (name, r)
