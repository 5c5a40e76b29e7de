"""Smoke tests of an installed clipresc (``make dist-check`` runs them against the wheel and
the sdist, each installed into a fresh virtual environment with only its dependencies and
pytest). They also pass in the development environment.

Self-contained: no conftest, no test helpers, nothing beyond NumPy and pytest.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clipresc

SOURCE_PACKAGE = Path(__file__).resolve().parents[2] / "python" / "clipresc"
# what the extras bring ([torch], [jax], [tensorflow], [cupy], [dask], [cli]) and the other
# integrations:
# importing and using clipresc's NumPy path must load none of them
FRAMEWORKS = (
    "torch",
    "jax",
    "jaxlib",
    "tensorflow",
    "cupy",
    "dask",
    "distributed",
    "click",
    "matplotlib",
    "foolbox",
    "eagerpy",
    "pyopencl",
)


def test_imports_the_installed_package() -> None:
    where = Path(clipresc.__file__).resolve()
    if os.environ.get("CLIPRESC_SMOKE_INSTALLED") == "1":
        assert SOURCE_PACKAGE not in where.parents, f"imported the source tree: {where}"
        assert "site-packages" in where.parts, where
    assert clipresc.__version__ != "0+unknown"


def test_closed_forms() -> None:
    x = np.array([[0.5, 0.9]])
    d = np.array([[1.0, 1.0]])
    # p = 1: the second element saturates after 0.1, the first moves the remaining 0.4
    assert np.allclose(clipresc.scale(x, d, 0.5, p=1), [[0.4]], rtol=0, atol=1e-15)
    assert np.allclose(clipresc.perturb(x, d, 0.5, p=1), [[0.9, 1.0]], rtol=0, atol=1e-15)
    # nothing saturates: eta = eps / ||delta||_p
    for p in (0.5, 1.0, 2.0, 3.0):
        eta = clipresc.scale(x, d * 1e-3, 1e-4, p=p, bounds=None)
        assert math.isclose(float(eta[0, 0]), 1e-4 / (2 ** (1 / p) * 1e-3), rel_tol=1e-12)
    # p = inf: eps / max |delta_i| over elements with room >= eps
    assert float(clipresc.scale(x, d, 0.05, p=math.inf)[0, 0]) == 0.05
    # float32 in, float32 out; a batch of images
    rng = np.random.default_rng(0)
    xi = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
    y = clipresc.perturb(xi, rng.standard_normal(xi.shape).astype(np.float32), 2.0)
    assert y.dtype == np.float32
    assert np.allclose(np.linalg.norm((y - xi).reshape(4, -1), axis=1), 2.0, rtol=1e-5)
    with pytest.raises(ValueError, match="x has 1 non-finite value"):
        clipresc.scale(np.array([[np.nan, 0.5]]), d, 0.5)


def test_other_entry_points() -> None:
    x = np.random.default_rng(1).uniform(0, 1, (3, 50))
    if hasattr(clipresc, "noise"):
        y = clipresc.noise(x, 1.5, seed=0)
        assert np.allclose(np.linalg.norm(y - x, axis=1), 1.5, rtol=1e-9)
        assert np.array_equal(y, clipresc.noise(x, 1.5, seed=0))
    if hasattr(clipresc, "scale_vjp"):
        g = clipresc.scale_vjp(x, np.ones_like(x), 1.0, np.ones((3, 1)))
        assert g["x"].shape == x.shape and np.all(np.isfinite(g["x"]))


def test_package_data() -> None:
    pkg = importlib.resources.files("clipresc")
    assert pkg.joinpath("py.typed").is_file()
    assert pkg.joinpath("_clipresc.pyi").is_file()
    # every kernel source of the source tree is installed
    src_kernels = SOURCE_PACKAGE / "kernels"
    wanted = sorted(p.name for p in src_kernels.glob("*") if p.suffix in (".cu", ".h"))
    if wanted:
        installed = pkg.joinpath("kernels")
        got = sorted(p.name for p in installed.iterdir() if p.name.endswith((".cu", ".h")))
        assert got == wanted, (got, wanted)
    for name in ("_clipresc.pyi", "py.typed"):
        if (SOURCE_PACKAGE / name).is_file():
            assert pkg.joinpath(name).read_bytes() == (SOURCE_PACKAGE / name).read_bytes(), name


def test_extras_are_declared() -> None:
    from importlib.metadata import metadata

    extras = set(metadata("clipresc").get_all("Provides-Extra") or [])
    assert {"torch", "jax", "tensorflow", "cupy", "dask", "cli"} <= extras, extras


def test_compiled_module_is_abi3() -> None:
    from clipresc import _clipresc

    name = Path(_clipresc.__file__).name
    assert ".abi3." in name, name


def test_import_pulls_no_framework() -> None:
    code = (
        "import sys, clipresc\n"
        "x, d = [[0.5, 0.5]], [[1.0, -1.0]]\n"
        "clipresc.scale(x, d, 0.1)\n"
        "clipresc.perturb(x, d, 0.1)\n"
        "if hasattr(clipresc, 'noise'):\n"
        "    clipresc.noise(x, 0.1, seed=0)\n"
        "if hasattr(clipresc, 'perturb_vjp'):\n"
        "    clipresc.perturb_vjp(x, d, 0.1, 1.0)\n"
        f"bad = sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script() -> None:
    """The installed ``clipresc`` script: its version with click, the extra to install without."""
    script = Path(sys.executable).parent / "clipresc"
    if not script.exists():
        pytest.skip("the clipresc console script is not installed")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    try:
        import click  # noqa: F401
    except ImportError:
        assert r.returncode == 1
        assert r.stderr.strip().endswith('pip install "clipresc[cli]"'), r.stderr
    else:
        assert (r.returncode, r.stdout) == (0, f"clipresc {clipresc.__version__}\n"), r.stderr


def test_project_urls_in_metadata() -> None:
    from importlib.metadata import metadata

    entries = metadata("clipresc").get_all("Project-URL") or []
    urls = dict(entry.split(", ", 1) for entry in entries)
    repo = "https://github.com/clipresc/clipresc"
    assert urls == {
        "Homepage": repo,
        "Source": repo,
        "Issues": f"{repo}/issues",
        "Documentation": f"{repo}#readme",
        "Changelog": f"{repo}/blob/main/CHANGELOG.md",
    }
