"""Every ```python block of the README runs as written, each in a fresh namespace.

Blocks that import an optional package the environment lacks (or CuPy without a CUDA
device) are skipped with the reason; ``make test`` installs all of them but CuPy's device.
A block right after ``<!-- readme-test: not run (REASON) -->`` is not collected: it needs
something no test machine has (a remote Dask scheduler).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from markdown_blocks import blocks as blocks_of
from markdown_blocks import skip_if_missing

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks() -> list[tuple[int, str]]:
    """``(line, source)`` of each runnable python block of the README."""
    return blocks_of(README)


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
