"""Sphinx configuration of clipresc's documentation (``make docs`` builds it into
``target/docs/html`` with warnings as errors, nitpicky)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "figures"))

# PyPI's torch wheel bundles Triton, whose LLVM clashes with TensorFlow's in one process;
# autodoc imports both frameworks' modules (the test suite does the same in conftest.py)
sys.modules["triton"] = None  # type: ignore[assignment]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices

import clipresc  # noqa: E402  (after the Triton guard)

project = "clipresc"
author = "the clipresc developers"
copyright = "the clipresc developers, BSD-3-Clause"
release = clipresc.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt", "figures/*.py"]
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"clipresc {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every reference must resolve, except to the names of other libraries: the build runs
# without network access to their inventories (no intersphinx)
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|jax|tensorflow|tf|cupy|dask|collections|typing|types)(\..*)?"),
    (r"py:.*", r"(Any|Sequence|Callable|SeedLike|ModuleType|Operand|NDArray)"),
    (r"py:class", r"(int|float|str|bool|dict|tuple|list|None|object)"),
    # internals the docstrings name for readers of the source; not part of the reference
    (r"py:.*", r"clipresc(\.\w+)*\._\w+(\..*)?"),
    (r"py:.*", r"clipresc\.frameworks\.(module_for|framework_of)"),
]

# Markdown files outside docs/ that pages link to, and the page that shows each; links to
# other files outside docs/ go to the file in the repository
REPO_LINKS = {"CHANGELOG.md": "changelog"}
REPO_URL = "https://github.com/clipresc/clipresc/blob/main/"
_LINK = re.compile(r"\]\(((?:\.\./)+[^)#\s]+)(#[^)\s]*)?\)")


def _adapt_source(app: Any, docname: str, source: list[str]) -> None:
    """Point links to repository files outside docs/ at their pages or at the repository,
    and drop ``ARCHITECTURE`` from the table of contents while that page does not exist."""
    here = (DOCS / docname).parent

    def relink(m: re.Match[str]) -> str:
        target = (here / m.group(1)).resolve()
        if target.is_relative_to(DOCS):
            return m.group(0)
        path = target.relative_to(ROOT).as_posix()
        if path in REPO_LINKS:
            page = os.path.relpath(DOCS / REPO_LINKS[path], here)
            return f"]({page}.md{m.group(2) or ''})"
        return f"]({REPO_URL}{path}{m.group(2) or ''})"

    source[0] = _LINK.sub(relink, source[0])
    if docname == "index" and not (DOCS / "ARCHITECTURE.md").exists():
        source[0] = "\n".join(
            line for line in source[0].splitlines() if line.strip() != "ARCHITECTURE"
        )


def _make_figures(app: Any) -> None:
    """Draw the figures from clipresc itself (``docs/figures/*.py``) before reading."""
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    for script in sorted((DOCS / "figures").glob("*.py")):
        subprocess.run([sys.executable, str(script), str(out)], check=True)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _make_figures)
    app.connect("source-read", _adapt_source)
    return {"parallel_read_safe": True}
