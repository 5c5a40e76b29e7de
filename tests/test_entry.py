"""``clipresc --version``, ``python -m clipresc`` and the console script without click.

Each case runs in a subprocess on this checkout's package; the missing extra is simulated by
``sys.modules["click"] = None``, which makes ``import click`` fail as if it were not
installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipresc
from clipresc.__main__ import MISSING_CLI

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_PARENT = str(Path(clipresc.__file__).resolve().parent.parent)
BLOCK_CLICK = "import sys; sys.modules['click'] = None; "


def python(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env
    )


def entry_point() -> tuple[str, str]:
    """``(module, function)`` of the ``clipresc`` script in pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["clipresc"]
    module, _, function = target.partition(":")
    return module, function


def run_script(*argv: str, block_click: bool) -> subprocess.CompletedProcess[str]:
    """The console script as pip installs it: import the entry point, call it."""
    module, function = entry_point()
    code = (BLOCK_CLICK if block_click else "import sys; ") + (
        f"sys.argv = ['clipresc', *{list(argv)!r}]; from {module} import {function}; {function}()"
    )
    return python("-c", code)


def test_version() -> None:
    pytest.importorskip("click")
    r = python("-m", "clipresc", "--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"clipresc {clipresc.__version__}\n", "")
    r = run_script("--version", block_click=False)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"clipresc {clipresc.__version__}\n", "")


def test_python_m_is_the_command() -> None:
    pytest.importorskip("click")
    r = python("-m", "clipresc", "noise", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: clipresc noise [OPTIONS] IN OUT")
    r = python("-m", "clipresc", "bogus")
    assert r.returncode == 2
    assert r.stderr == "clipresc: error: No such command 'bogus'. (see 'clipresc --help')\n"


@pytest.mark.parametrize("argv", [(), ("--version",), ("noise", "x.npy", "y.npy", "--eps", "1")])
def test_missing_click_names_the_extra(argv: tuple[str, ...]) -> None:
    expected = (
        "clipresc: error: the command line needs click; "
        'install it with: pip install "clipresc[cli]"\n'
    )
    r = run_script(*argv, block_click=True)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", expected)
    r = python(
        "-c",
        BLOCK_CLICK + f"sys.argv = ['clipresc', *{list(argv)!r}]; "
        "import runpy; runpy.run_module('clipresc', run_name='__main__')",
    )
    assert (r.returncode, r.stdout, r.stderr) == (1, "", expected)
    assert expected == MISSING_CLI + "\n"


def test_the_script_module_imports_without_click() -> None:
    module, _ = entry_point()
    r = python("-c", BLOCK_CLICK + f"import {module}; print('clipresc.cli' in sys.modules)")
    assert (r.returncode, r.stdout, r.stderr) == (0, "False\n", "")
