"""Stress tests (``make stress``): leaks, threads, Ctrl-C. Minutes long, so they run only
with ``CLIPRESC_STRESS=1`` (``make test`` leaves them out).

Measured figures are printed and appended to ``target/stress-report.txt``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CLIPRESC_STRESS") != "1":
    collect_ignore_glob = ["test_*.py"]

REPORT = Path(__file__).resolve().parents[2] / "target" / "stress-report.txt"


@pytest.fixture
def report() -> Any:
    """``report(name, **figures)``: print the figures and append them to the report file."""

    def write(name: str, **figures: Any) -> None:
        line = json.dumps({"test": name, **figures}, default=str)
        print(line)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        with REPORT.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    return write
