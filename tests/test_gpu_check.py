"""The CPU-side logic of ``benches/gpu_check.py`` (the check prepared for a lent GPU):
argument parsing, the plan, the wheel folder, step limits and the report files, with a
fake device list and small real subprocesses instead of GPU work."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benches" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_writes_both_reports(gc: Any, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "clipresc-0.1.0-cp39-abi3-manylinux2014_x86_64.whl").write_bytes(b"")
    out = tmp_path / "report"
    rc = gc.main(
        ["--out", str(out), "--wheels", str(wheels), "--dry-run", "--devices", "GPU 0: H100"]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["result"] == "dry run"
    assert rep["devices"] == ["GPU 0: H100"]
    assert rep["wheels"] == ["clipresc-0.1.0-cp39-abi3-manylinux2014_x86_64.whl"]
    names = [s["name"] for s in rep["steps"]]
    assert names == ["pytest-gpu-kernels", "pytest-gpu-frameworks", "bench-gpu-quick"]
    assert all(s["status"] == "planned" for s in rep["steps"])
    assert sum(s["limit_s"] for s in rep["steps"]) <= 360
    bench = rep["steps"][2]["argv"]
    assert "--quick" in bench
    assert [bench[i + 1] for i, a in enumerate(bench) if a == "--workload"] == list(
        gc.QUICK_WORKLOADS
    )
    assert rep["steps"][0]["argv"][-1] == "tests/gpu"
    assert rep["steps"][1]["argv"][-2:] == list(gc.FRAMEWORK_GPU_TESTS)
    for f in gc.FRAMEWORK_GPU_TESTS:
        assert (_PATH.parents[1] / f).is_file()
    text = (out / "report.txt").read_text()
    assert "dry run" in text and "bench-gpu-quick" in text and "GPU 0: H100" in text


def test_no_device_skips_everything(gc: Any, tmp_path: Path) -> None:
    rc = gc.main(["--out", str(tmp_path), "--devices", ""])
    assert rc == 2
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["result"] == "no device"
    assert {s["status"] for s in rep["steps"]} == {"skipped"}


def test_missing_clipresc_wheel_is_refused(gc: Any, tmp_path: Path) -> None:
    (tmp_path / "hypothesis-6.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(SystemExit, match="no clipresc wheel"):
        gc.install_wheels(tmp_path, tmp_path / "site", sys.executable)


def test_wheels_must_be_a_folder(gc: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        gc.main(["--out", str(tmp_path), "--wheels", str(tmp_path / "nope"), "--dry-run"])


@pytest.mark.parametrize(
    ("code", "status", "rc"),
    [("print('ok')", "passed", 0), ("import sys; sys.exit(3)", "failed", 3)],
)
def test_run_step_status(gc: Any, tmp_path: Path, code: str, status: str, rc: int) -> None:
    step = gc.Step("s", [sys.executable, "-c", code], 30.0)
    gc.run_step(step, {}, tmp_path / "s.log", 100.0)
    assert (step.status, step.rc) == (status, rc)
    if status == "passed":
        assert step.tail.strip() == "ok"


def test_run_step_limits(gc: Any, tmp_path: Path) -> None:
    slow = gc.Step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 30.0)
    gc.run_step(slow, {}, tmp_path / "slow.log", 1.5)  # the budget's rest, not the share
    assert slow.status == "timeout" and slow.seconds < 20
    late = gc.Step("late", [sys.executable, "-c", "print(1)"], 30.0)
    gc.run_step(late, {}, tmp_path / "late.log", 0.5)
    assert late.status == "skipped"


def test_failed_step_fails_the_check(gc: Any, tmp_path: Path, monkeypatch: Any) -> None:
    def fake_plan(python: str, out: Path) -> list[Any]:
        return [
            gc.Step("good", [python, "-c", "print(1)"], 30.0),
            gc.Step("bad", [python, "-c", "raise SystemExit(1)"], 30.0),
        ]

    monkeypatch.setattr(gc, "plan", fake_plan)
    assert gc.main(["--out", str(tmp_path), "--devices", "GPU 0: fake"]) == 1
    rep = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in rep["steps"]] == ["passed", "failed"]
    assert rep["result"] == "failed"
    assert (tmp_path / "bad.log").exists()
