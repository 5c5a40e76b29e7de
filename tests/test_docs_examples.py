"""Every ```python block of the documentation (``docs/**/*.md``) runs as written.

The blocks of one page run in order in one namespace (a tutorial builds on its earlier
blocks), one test per page. A block that imports an optional package the environment lacks
(or CuPy without a CUDA device) is skipped with the reason and the page goes on; a page
whose every block is skipped is skipped. The blocks assert their results themselves.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from markdown_blocks import blocks, missing

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if blocks(p) and "_build" not in p.parts)


def test_docs_have_examples() -> None:
    # user guide (5 pages), tutorials (5), index
    assert len(PAGES) >= 11, [p.name for p in PAGES]
    assert sum(len(blocks(p)) for p in PAGES) >= 30


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page_runs(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}  # torch.compile looks it up
    skipped = []
    for line, source in blocks(page):
        # third-party imports (foolbox, tensorflow) raise deprecation warnings of their own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            reason = missing(source)
            if reason is not None:
                skipped.append(f"line {line}: {reason}")
                continue
            exec(compile(source, f"{page.relative_to(DOCS.parent)}:{line}", "exec"), namespace)
    if len(skipped) == len(blocks(page)):
        pytest.skip("; ".join(skipped))
