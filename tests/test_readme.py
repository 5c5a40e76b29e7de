"""Every ```python block of the README runs as written, each in a fresh namespace.

Blocks that import an optional package the environment lacks (or CuPy without a CUDA
device) are skipped with the reason; ``make test`` installs all of them but CuPy's device.
A block right after ``<!-- readme-test: not run (REASON) -->`` is not collected: it needs
something no test machine has (a remote Dask scheduler).
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = "<!-- readme-test: not run"


def blocks() -> list[tuple[int, str]]:
    """``(line, source)`` of each runnable python block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    found, start = [], None
    for i, line in enumerate(lines):
        if start is None and line.strip() == "```python":
            start = i + 1
        elif start is not None and line.strip() == "```":
            marked = any(lines[j].startswith(NOT_RUN) for j in range(max(0, start - 3), start))
            if not marked:
                found.append((start + 1, "\n".join(lines[start:i])))
            start = None
    return found


def needs(source: str) -> set[str]:
    """Top-level packages the block imports."""
    pat = re.compile(r"^(?:import|from)\s+([A-Za-z_][\w]*)", re.MULTILINE)
    return set(pat.findall(source))


def skip_if_missing(source: str) -> None:
    for mod in sorted(needs(source)):
        try:
            importlib.import_module(mod)
        except ImportError:
            pytest.skip(f"needs {mod}, not installed")
    if "cupy" in needs(source):
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError:
            count = 0
        if count == 0:
            pytest.skip("needs a CUDA device")


def test_readme_has_examples() -> None:
    # at least the NumPy, framework, noise and Dask examples are collected
    assert len(blocks()) >= 12


@pytest.mark.parametrize(("line", "source"), [pytest.param(*b, id=f"line{b[0]}") for b in blocks()])
def test_readme_block_runs(line: int, source: str) -> None:
    code = compile(source, f"README.md:{line}", "exec")
    # third-party imports (foolbox, tensorflow) raise deprecation warnings of their own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        skip_if_missing(source)
        exec(code, {"__name__": "__main__"})  # torch.compile looks the module up by name
