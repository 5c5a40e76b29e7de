"""The Oclgrind check's API-error filter (.ci/oclgrind_api_errors.py) on stderr samples."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "oclgrind_api_errors.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oclgrind_api_errors", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(function: str, error: str, argument: str) -> str:
    return (
        "\nOclgrind - OpenCL runtime error detected\n"
        f"\tFunction: {function}\n\tError:    {error}\n\tFor argument '{argument}'\n\n"
    )


PROBE = _block("clGetDeviceInfo", "CL_INVALID_VALUE", "param_name")


def test_probes_pass_and_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "stderr.txt"
    log.write_text("....\n" + PROBE * 3 + "F\n")
    assert _load().main(str(log)) == 0
    assert "3 pyopencl property probe(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "block",
    [
        _block("clSetKernelArg", "CL_INVALID_ARG_SIZE", "arg_size"),
        _block("clGetDeviceInfo", "CL_INVALID_DEVICE", "device"),
        _block("clGetDeviceInfo", "CL_INVALID_VALUE", "param_value_size"),
    ],
)
def test_any_other_api_error_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str
) -> None:
    log = tmp_path / "stderr.txt"
    log.write_text(PROBE + block + PROBE)
    assert _load().main(str(log)) == 1
    err = capsys.readouterr().err
    assert "1 OpenCL API error(s)" in err
    function = block.split("Function: ")[1].split()[0]
    assert function in err


def test_empty_stderr_passes(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    log.write_text("")
    assert _load().main(str(log)) == 0
