"""The ```python blocks of a Markdown file, and the skip rule for blocks that need an
optional package (used by test_readme.py and test_docs_examples.py).

A block right after ``<!-- readme-test: not run (REASON) -->`` is not collected: it needs
something no test machine has (a remote Dask scheduler, DataLoader worker processes).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

NOT_RUN = "<!-- readme-test: not run"


def blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, source)`` of each runnable python block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
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


def missing(source: str) -> str | None:
    """Why the block cannot run here (a package it imports is missing, or CuPy without a
    CUDA device), or None."""
    for mod in sorted(needs(source)):
        try:
            importlib.import_module(mod)
        except ImportError:
            return f"needs {mod}, not installed"
    if "cupy" in needs(source):
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError:
            count = 0
        if count == 0:
            return "needs a CUDA device"
    return None


def skip_if_missing(source: str) -> None:
    reason = missing(source)
    if reason is not None:
        pytest.skip(reason)
