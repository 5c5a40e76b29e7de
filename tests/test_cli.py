"""The ``clipresc`` console script, driven as a user would: a subprocess on real files.

Every run checks the exit status, that errors are one line on stderr, and that a failed or
interrupted run leaves neither OUT nor a temporary file behind.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clipresc

pytest.importorskip("click")

SCRIPT = Path(sys.executable).parent / "clipresc"
if not SCRIPT.exists():  # pragma: no cover - the package is not installed with its scripts
    found = shutil.which("clipresc")
    SCRIPT = Path(found) if found else SCRIPT


def run(*args: Any, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip("the clipresc console script is not installed")
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, **kw
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """Exit status ``code`` and one error line (the last; progress lines may precede it)."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("clipresc: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert fragment in errors[0], errors[0]


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (37, 3, 8, 8)).astype(np.float32)
    x[x < 0.05] = 0.0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "d.npy", rng.standard_normal(x.shape).astype(np.float32))
    return tmp_path


def test_noise_matches_the_library_across_chunks(files: Path) -> None:
    r = run("noise", "x.npy", "y.npy", "--eps", 2, "--seed", 7, "--chunk-mb", 0.01, cwd=files)
    assert r.returncode == 0, r.stderr
    assert "wrote y.npy" in r.stderr and "/s" in r.stderr  # summary with throughput
    assert "%" in r.stderr  # progress
    x = np.load(files / "x.npy")
    y = np.load(files / "y.npy")
    np.testing.assert_array_equal(y, clipresc.noise(x, 2.0, seed=7))
    sizes = np.linalg.norm((y.astype(np.float64) - x).reshape(37, -1), axis=1)
    np.testing.assert_allclose(sizes, 2.0, rtol=1e-5)
    assert leftovers(files) == []
    assert (os.stat(files / "y.npy").st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize(
    "extra",
    [
        ["--p", "inf", "--distribution", "rademacher"],
        ["--p", "1", "--distribution", "laplace", "--bounds", "-inf", "inf"],
        ["--distribution", "uniform", "--bounds", "-1", "2"],
    ],
)
def test_noise_options(files: Path, extra: list[str]) -> None:
    r = run("noise", "x.npy", "y.npy", "--eps", 0.5, "--seed", 1, "-q", *extra, cwd=files)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    opts = dict(zip(extra[::2], extra[1::2]))
    x = np.load(files / "x.npy")
    lo, hi = (-1.0, 2.0) if "2" in extra else (0.0, 1.0)
    bounds = None if "-inf" in extra else (lo, hi)
    want = clipresc.noise(
        x,
        0.5,
        p=float(opts["--p"]) if "--p" in opts else 2.0,
        bounds=bounds,
        distribution=opts["--distribution"],
        seed=1,
    )
    np.testing.assert_array_equal(np.load(files / "y.npy"), want)


def test_noise_without_seed_prints_one_to_reproduce(files: Path) -> None:
    r = run("noise", "x.npy", "a.npy", "--eps", 1, cwd=files)
    assert r.returncode == 0
    seed = r.stderr.split("--seed ")[1].split()[0].rstrip(")")
    r2 = run("noise", "x.npy", "b.npy", "--eps", 1, "--seed", seed, "-q", cwd=files)
    assert r2.returncode == 0
    np.testing.assert_array_equal(np.load(files / "a.npy"), np.load(files / "b.npy"))


def test_perturb_matches_the_library(files: Path) -> None:
    r = run(
        "perturb", "x.npy", "d.npy", "z.npy", "--eps", 3, "--p", 2, "--chunk-mb", 0.005, cwd=files
    )
    assert r.returncode == 0, r.stderr
    x, d = np.load(files / "x.npy"), np.load(files / "d.npy")
    np.testing.assert_array_equal(np.load(files / "z.npy"), clipresc.perturb(x, d, 3.0))


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_dtypes_one_vector_and_empty(tmp_path: Path, dtype: type) -> None:
    x = np.random.default_rng(1).uniform(0, 1, (5, 40)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "v.npy", x[0])
    np.save(tmp_path / "e.npy", x[:0])
    for name in ("x", "v", "e"):
        r = run("noise", f"{name}.npy", f"{name}_out.npy", "--eps", 1, "--seed", 2, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got = np.load(tmp_path / f"{name}_out.npy")
        src = np.load(tmp_path / f"{name}.npy")
        assert got.dtype == dtype and got.shape == src.shape
        np.testing.assert_array_equal(got, clipresc.noise(src, 1.0, seed=2))


def test_refuses_to_overwrite_without_force(files: Path) -> None:
    (files / "y.npy").write_bytes(b"keep me")
    r = run("noise", "x.npy", "y.npy", "--eps", 1, cwd=files)
    one_line_error(r, 1, "y.npy: already exists (use --force to overwrite)")
    assert (files / "y.npy").read_bytes() == b"keep me"
    r = run("noise", "x.npy", "y.npy", "--eps", 1, "--seed", 0, "--force", cwd=files)
    assert r.returncode == 0
    np.testing.assert_array_equal(
        np.load(files / "y.npy"), clipresc.noise(np.load(files / "x.npy"), 1.0, seed=0)
    )


def test_file_errors(files: Path) -> None:
    (files / "text.npy").write_text("not an array")
    np.save(files / "ints.npy", np.arange(12).reshape(3, 4))
    np.save(files / "fortran.npy", np.asfortranarray(np.zeros((3, 4))))
    np.save(files / "small.npy", np.zeros((2, 3), np.float32))
    np.savez(files / "arch.npz", a=np.zeros(3))
    cases = [
        (("noise", "missing.npy", "o.npy"), "missing.npy: no such file"),
        (
            ("noise", "text.npy", "o.npy"),
            "text.npy: not a .npy file: it holds text "
            "(np.loadtxt reads text; save arrays with np.save)",
        ),
        (("noise", "ints.npy", "o.npy"), "x must be a real floating-point array; got dtype int64"),
        (("noise", "fortran.npy", "o.npy"), "Fortran-ordered arrays are not supported"),
        (("noise", "arch.npz", "o.npy"), "arch.npz: not a .npy file"),
        (("noise", ".", "o.npy"), "is a directory"),
        (("noise", "x.npy", "nodir/o.npy"), "does not exist"),
        (("noise", "x.npy", "."), "is a directory"),
        (("perturb", "x.npy", "small.npy", "o.npy"), "delta must have the same shape as x"),
        (("perturb", "x.npy", "missing.npy", "o.npy"), "missing.npy: no such file"),
    ]
    for args, fragment in cases:
        one_line_error(run(*args, "--eps", 1, cwd=files), 1, fragment)
        assert not (files / "o.npy").exists()
        assert leftovers(files) == []


def test_files_that_are_not_npy_or_not_float(files: Path) -> None:
    """Exact messages for what users put in a .npy by mistake (NumPy alone would say
    "pickled (object) data" for a text file)."""
    (files / "text.npy").write_text("0.5 0.25\n1 0\n")
    (files / "empty.npy").write_bytes(b"")
    (files / "blob.npy").write_bytes(bytes(range(128, 256)))
    np.save(files / "u8.npy", np.full((2, 3), 7, np.uint8))
    np.save(files / "i32.npy", np.zeros((2, 3), np.int32))
    cases = [
        (
            ("noise", "text.npy", "o.npy"),
            "text.npy: not a .npy file: it holds text "
            "(np.loadtxt reads text; save arrays with np.save)",
        ),
        (("noise", "empty.npy", "o.npy"), "empty.npy: not a .npy file: the file is empty"),
        (
            ("noise", "blob.npy", "o.npy"),
            "blob.npy: not a .npy file: it does not start with the .npy header; "
            "save arrays with np.save",
        ),
        (
            ("noise", "u8.npy", "o.npy"),
            "u8.npy: x must be a real floating-point array; got dtype uint8 (save 8-bit "
            "images as float32: x.astype(np.float32) / 255 with --bounds 0 1, or "
            "x.astype(np.float32) with --bounds 0 255)",
        ),
        (
            ("perturb", "x.npy", "i32.npy", "o.npy"),
            "i32.npy: delta must be a real floating-point array; got dtype int32 (save it as "
            "float32 or float64, e.g. delta.astype(np.float32))",
        ),
    ]
    for args, message in cases:
        r = run(*args, "--eps", 1, cwd=files)
        assert (r.returncode, r.stderr) == (1, f"clipresc: error: {message}\n")
        assert not (files / "o.npy").exists() and leftovers(files) == []


def test_data_outside_bounds_leaves_no_output(files: Path) -> None:
    x = np.load(files / "x.npy")
    x[30, 1, 2, 3] = 1.5
    np.save(files / "bad.npy", x)
    r = run("noise", "bad.npy", "o.npy", "--eps", 1, "--chunk-mb", 0.01, cwd=files)
    one_line_error(r, 1, "x has 1 value outside bounds; first at index (30, 1, 2, 3)")
    assert not (files / "o.npy").exists() and leftovers(files) == []
    x[30, 1, 2, 3] = np.nan
    np.save(files / "bad.npy", x)
    r = run("perturb", "bad.npy", "d.npy", "o.npy", "--eps", 1, cwd=files)
    one_line_error(r, 1, "x has 1 non-finite value; first at index (30, 1, 2, 3)")
    r = run("noise", "x.npy", "o.npy", "--eps", 1e6, "--unreachable", "raise", cwd=files)
    one_line_error(r, 1, "eps exceeds the largest reachable size")
    assert not (files / "o.npy").exists() and leftovers(files) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--eps", "-1"), "Invalid value for --eps: must be a finite number >= 0"),
        (("--eps", "nan"), "must be a finite number >= 0"),
        (("--eps", "abc"), "'abc' is not a valid float"),
        ((), "Missing option '--eps'"),
        (("--eps", "1", "--p", "0"), "p must be a positive number or inf"),
        (("--eps", "1", "--bounds", "1", "0"), "LOWER <= UPPER"),
        (("--eps", "1", "--bounds", "0"), "requires 2 arguments"),
        (("--eps", "1", "--distribution", "cauchy"), "'cauchy' is not one of"),
        (("--eps", "1", "--seed", "-3"), "-3 is not in the range"),
        (("--eps", "1", "--workers", "0"), "Invalid value for --workers: must be >= 1"),
        (
            ("--eps", "1", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"),
            "mutually exclusive",
        ),
        (("--eps", "1", "--chunk-mb", "0"), "Invalid value for --chunk-mb"),
        (("--eps", "1", "--bogus"), "No such option '--bogus'"),
    ],
)
def test_bad_arguments(files: Path, args: tuple[str, ...], fragment: str) -> None:
    one_line_error(run("noise", "x.npy", "o.npy", *args, cwd=files), 2, fragment)
    assert not (files / "o.npy").exists()


def test_usage_and_help(files: Path) -> None:
    one_line_error(run("bogus", cwd=files), 2, "No such command 'bogus'")
    one_line_error(run("noise", "x.npy", cwd=files), 2, "Missing argument 'OUT'")
    r = run(cwd=files)
    assert r.returncode == 2 and "Commands:" in r.stdout
    for cmd in ("demo", "noise", "perturb"):
        r = run(cmd, "--help", cwd=files)
        assert r.returncode == 0 and "Usage: clipresc " + cmd in r.stdout


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_full_disk_leaves_no_output(tmp_path: Path) -> None:
    """A write that fails (here: the file-size limit, as a full disk would) is one line."""
    np.save(tmp_path / "x.npy", np.full((64, 1024), 0.5, np.float32))  # 256 KiB
    r = run("noise", "x.npy", "o.npy", "--eps", 1, cwd=tmp_path, preexec_fn=_limit_file_size)
    one_line_error(r, 1, "o.npy: cannot write (")
    assert not (tmp_path / "o.npy").exists() and leftovers(tmp_path) == []


def _interrupt(tmp_path: Path, sig: int) -> None:
    np.save(tmp_path / "x.npy", np.full((256, 3, 128, 128), 0.5, np.float32))  # 48 MiB
    proc = subprocess.Popen(
        [str(SCRIPT), "noise", "x.npy", "o.npy", "--eps", "10", "--chunk-mb", "0.5"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    with proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is writing
            line = proc.stderr.readline()
            if "%" in line or not line:
                break
        assert not (tmp_path / "o.npy").exists()
        proc.send_signal(sig)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    if code == 0:  # finished before the signal arrived: nothing to check
        pytest.skip("the run finished before the signal")
    assert code == 130, rest
    assert "clipresc: interrupted; no output written" in rest
    assert not (tmp_path / "o.npy").exists()
    assert leftovers(tmp_path) == []


def test_ctrl_c_leaves_no_output(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("the clipresc console script is not installed")
    _interrupt(tmp_path, signal.SIGINT)


def test_sigterm_leaves_no_output(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("the clipresc console script is not installed")
    _interrupt(tmp_path, signal.SIGTERM)


def test_demo_prints_the_table_and_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = run("demo", "--out", "fig.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "naive" in r.stdout and "clipresc" in r.stdout and "figure: fig.png" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit() and "|" in ln]
    assert len(rows) == 5
    for row in rows:  # target | naive mean worst | clipresc mean worst rel
        target = float(row.split("|")[0])
        naive_mean = float(row.split("|")[1].split()[0])
        ours_mean, ours_worst = (float(v) for v in row.split("|")[2].split()[:2])
        assert naive_mean < target  # naive undershoots where pixels saturate
        assert abs(ours_mean - target) < 1e-4 * target and abs(ours_worst - target) < 1e-4 * target
    png = (tmp_path / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_dask_workers_give_the_same_bytes(files: Path) -> None:
    pytest.importorskip("distributed")
    r = run(
        "noise",
        "x.npy",
        "w.npy",
        "--eps",
        2,
        "--seed",
        7,
        "--chunk-mb",
        0.01,
        "--workers",
        2,
        cwd=files,
    )
    assert r.returncode == 0, r.stderr
    x = np.load(files / "x.npy")
    np.testing.assert_array_equal(np.load(files / "w.npy"), clipresc.noise(x, 2.0, seed=7))
    r = run("noise", "x.npy", "u.npy", "--eps", 2, "--scheduler", "tcp://127.0.0.1:9", cwd=files)
    one_line_error(r, 1, "cannot reach the scheduler tcp://127.0.0.1:9")
    assert not (files / "u.npy").exists() and leftovers(files) == []
