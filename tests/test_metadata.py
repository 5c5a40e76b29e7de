"""Release metadata agrees with itself: pyproject.toml, Cargo.toml, CITATION.cff, CHANGELOG.md
and the README's Install section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPO = "https://github.com/clipresc/clipresc"
PAPER = ROOT.parent / "shared" / "reference" / "clipping-aware-rescaling-paper.txt"


def toml(path: Path) -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    with open(path, "rb") as f:
        return dict(tomllib.load(f))


def cargo_version() -> str:
    return str(toml(ROOT / "Cargo.toml")["workspace"]["package"]["version"])


def test_project_urls() -> None:
    urls = toml(ROOT / "pyproject.toml")["project"]["urls"]
    assert urls == {
        "Homepage": REPO,
        "Source": REPO,
        "Issues": f"{REPO}/issues",
        "Documentation": f"{REPO}#readme",
        "Changelog": f"{REPO}/blob/main/CHANGELOG.md",
    }
    assert toml(ROOT / "Cargo.toml")["workspace"]["package"]["repository"] == REPO
    assert (ROOT / "CHANGELOG.md").is_file()


def test_python_versions_agree() -> None:
    """requires-python, the abi3 floor of the extension and the version classifiers."""
    project = toml(ROOT / "pyproject.toml")["project"]
    assert project["requires-python"] == ">=3.9"
    pyo3 = toml(ROOT / "rust" / "py" / "Cargo.toml")["dependencies"]["pyo3"]
    assert "abi3-py39" in pyo3["features"]
    minors = [
        int(c.rsplit(".", 1)[1])
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert minors == list(range(9, 14))
    assert len(set(project["classifiers"])) == len(project["classifiers"])


def test_citation() -> None:
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert cff["version"] == cargo_version()
    assert cff["license"] == toml(ROOT / "pyproject.toml")["project"]["license"]["text"]
    assert cff["repository-code"] == REPO
    (paper,) = cff["references"]
    assert paper["title"] == "Fast Differentiable Clipping-Aware Normalization and Rescaling"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Jonas", "Rauber"),
        ("Matthias", "Bethge"),
    ]
    assert (paper["year"], paper["url"]) == (2020, "https://arxiv.org/abs/2007.07677")
    if PAPER.is_file():  # the paper's text, where the checkout has it
        lines = [ln.strip() for ln in PAPER.read_text(encoding="utf-8").splitlines() if ln]
        assert lines[0] == paper["title"]
        assert lines[1].startswith("Jonas Rauber ") and lines[2].startswith("Matthias Bethge ")
        assert "https://github.com/jonasrauber/clipping-aware-rescaling" in PAPER.read_text(
            encoding="utf-8"
        )


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    heads = re.findall(r"^## \[([^\]]+)\](.*)$", text, flags=re.MULTILINE)
    assert heads[0] == ("Unreleased", "")
    for version, rest in heads[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), rest
    assert cargo_version() in [v for v, _ in heads]
    links = dict(re.findall(r"^\[([^\]]+)\]: (\S+)$", text, flags=re.MULTILINE))
    assert set(links) == {v for v, _ in heads}
    assert links["Unreleased"].startswith(f"{REPO}/compare/v")
    sections = set(re.findall(r"^### (.+)$", text, flags=re.MULTILINE))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_readme_names_the_platforms() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme[readme.index("## Install") : readme.index("## Quick start")]
    for tag in (
        "manylinux2014",
        "musllinux_1_2",
        "macosx_10_12_x86_64",
        "macosx_11_0_arm64",
        "win_amd64",
    ):
        assert f"`{tag}`" in install, tag
    for doc in ("CHANGELOG.md", "docs/VERSIONING.md", "CITATION.cff"):
        assert f"]({doc})" in install and (ROOT / doc).is_file(), doc


def test_release_workflow_builds_the_listed_platforms() -> None:
    """The wheels of the README's table, the sdist, and trusted publishing on v* tags."""
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text("utf-8"))
    jobs = wf["jobs"]
    linux = {(m["target"], m["libc"]) for m in jobs["linux"]["strategy"]["matrix"]["include"]}
    assert linux == {
        (arch, libc)
        for arch in ("x86_64", "aarch64")
        for libc in ("manylinux2014", "musllinux_1_2")
    }
    assert {m["target"] for m in jobs["macos"]["strategy"]["matrix"]["include"]} == {
        "x86_64",
        "aarch64",
    }
    assert "windows" in jobs and "sdist" in jobs
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["tags"] == ["v*"]
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(publish["needs"]) == {"linux", "macos", "windows", "sdist"}
    uses = [step.get("uses", "") for step in publish["steps"]]
    assert "pypa/gh-action-pypi-publish@release/v1" in uses
