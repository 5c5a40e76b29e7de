"""The ``clipresc`` command: ``demo``, ``noise`` and ``perturb`` on ``.npy`` files.

``noise`` and ``perturb`` memory-map their inputs and process them in chunks of whole
vectors along axis 0 (axis 0 is the batch, every other axis forms one vector; a 1-D file is
one vector), so memory stays bounded whatever the file size. The result goes to a temporary
file beside OUT, renamed over OUT only when every chunk is written: an error, Ctrl-C or
SIGTERM leaves no OUT (and no temporary file). A chunked ``noise`` run gives the same bytes
as ``clipresc.noise`` on the whole array with the same seed.

``clipresc --version`` prints the version; ``python -m clipresc`` is the same command.

Exit status: 0 on success, 1 for bad files or data (one line on stderr), 2 for bad
arguments, 130 when interrupted.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, TextIO, cast

import click
import numpy as np

from . import __version__, _errors
from ._args import parse_p, parse_unreachable
from ._noise import DISTRIBUTIONS, seed_sequence

DEFAULT_CHUNK_MB = 32


class CliError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


class _Terminated(BaseException):
    """SIGTERM, handled like Ctrl-C."""


# ---------------------------------------------------------------------------------------
# progress


def _human_bytes(n: float) -> str:
    """``n`` bytes in binary units.

    >>> _human_bytes(3 * 2**30), _human_bytes(512)
    ('3.00 GiB', '512 B')
    """
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{int(n)} B"


class Progress:
    """A progress bar with throughput on ``stream`` (stderr): redrawn in place on a
    terminal, a line every 10 % otherwise; a summary line at the end."""

    def __init__(self, total: int, label: str, stream: TextIO, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def _rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        frac = min(self.done / self.total, 1.0)
        rate = self._rate()
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        text = (
            f"{self.label} {100 * frac:5.1f}% {_human_bytes(self.done)}/"
            f"{_human_bytes(self.total)} {_human_bytes(rate)}/s"
            + (f" ETA {eta:.0f}s" if math.isfinite(eta) else "")
        )
        if self.tty:
            if now - self._last_draw > 0.1 or self.done >= self.total:
                width = 24
                fill = int(width * frac)
                self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {text}\x1b[K")
                self.stream.flush()
                self._last_draw = now
        else:
            decile = int(10 * frac)
            if decile != self._last_decile:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_decile = decile

    def finish(self, message: str) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.start
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(
            f"{message}: {_human_bytes(self.done)} in {dt:.2f} s "
            f"({_human_bytes(self.done / max(dt, 1e-9))}/s)\n"
        )
        self.stream.flush()


# ---------------------------------------------------------------------------------------
# input and output files


@dataclass(frozen=True)
class NpyInput:
    """A C-ordered ``.npy`` file: where its data starts, its dtype and shape."""

    path: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:] if len(self.shape) > 1 else self.shape

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def rows_view(self, start: int, stop: int) -> np.ndarray[Any, Any]:
        """Rows ``start:stop`` memory-mapped read-only (unmapped when the view is dropped)."""
        shape = (stop - start, *self.row_shape) if len(self.shape) > 1 else self.shape
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=self.dtype)
        return np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r",
            offset=self.offset + start * self.row_bytes,
            shape=shape,
        )


NPY_MAGIC = b"\x93NUMPY"


def not_npy_reason(head: bytes) -> str | None:
    """Why a file starting with ``head`` (its first bytes) is no ``.npy`` file; ``None`` when
    it starts like one. NumPy itself would try such a file as a pickle and report
    "pickled (object) data", which says nothing useful about a text file.

    >>> print(not_npy_reason(NPY_MAGIC + b"\\x01\\x00"))
    None
    >>> not_npy_reason(b"0.5 0.25\\n1 0\\n")
    'it holds text (np.loadtxt reads text; save arrays with np.save)'
    >>> not_npy_reason(b"PK\\x03\\x04")
    'it is a zip archive (an .npz file?); save one array with np.save'
    """
    if head.startswith(NPY_MAGIC):
        return None
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "it is a zip archive (an .npz file?); save one array with np.save"
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head)
    if all(c.isprintable() or c in "\t\n\r" for c in text) and "\ufffd" not in text:
        return "it holds text (np.loadtxt reads text; save arrays with np.save)"
    return "it does not start with the .npy header; save arrays with np.save"


def open_input(path: str, name: str) -> NpyInput:
    """Check that ``path`` is a readable ``.npy`` file of a float dtype, C-ordered."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such file")
    if p.is_dir():
        raise CliError(f"{path}: is a directory, expected a .npy file")
    try:
        with open(path, "rb") as f:
            reason = not_npy_reason(f.read(512))
        if reason is not None:
            raise CliError(f"{path}: not a .npy file: {reason}")
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except (ValueError, OSError, EOFError) as e:
        raise CliError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    if not isinstance(a, np.memmap):
        raise CliError(f"{path}: not a .npy file (an .npz archive or empty array?)")
    try:
        dt = a.dtype
        if dt.kind != "f" or dt.itemsize > 8:
            raise CliError(f"{path}: {_errors.not_float_message(name, str(dt), cli=True)}")
        if a.ndim == 0:
            raise CliError(f"{path}: {name} must have at least one dimension")
        if not a.flags.c_contiguous:
            raise CliError(f"{path}: Fortran-ordered arrays are not supported; save it C-ordered")
        return NpyInput(path, dt, tuple(a.shape), int(a.offset))
    finally:
        del a


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class AtomicOutput:
    """A ``.npy`` file written through a temporary file in OUT's directory, renamed over OUT
    only by :meth:`commit`; :meth:`discard` (or an exception in the ``with`` block) removes
    it. The data area is preallocated, so a full disk fails before any computing."""

    def __init__(self, path: str, dtype: np.dtype[Any], shape: tuple[int, ...], force: bool):
        out = Path(path)
        if out.is_dir():
            raise CliError(f"{path}: is a directory")
        if out.exists() and not force:
            raise CliError(f"{path}: already exists (use --force to overwrite)")
        parent = out.parent
        if not parent.is_dir():
            raise CliError(f"{path}: directory {str(parent)!r} does not exist")
        self.path = str(out)
        self.dtype = dtype
        self.shape = shape
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=parent)
        except OSError as e:
            raise CliError(f"{path}: cannot create a file here ({_one_line(e)})") from None
        self.committed = False
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            with os.fdopen(fd, "wb", closefd=False) as f:
                header = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(f, header)
                self.offset = f.tell()
            total = self.offset + math.prod(shape) * dtype.itemsize
            try:
                os.posix_fallocate(fd, 0, total)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise
                os.ftruncate(fd, total)  # the filesystem cannot preallocate
        except OSError as e:
            os.close(fd)
            self.discard()
            raise CliError(f"{path}: cannot write ({_one_line(e)})") from None
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        os.close(fd)

    def commit(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        self.committed = True

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


# ---------------------------------------------------------------------------------------
# the chunked job (run in this process, or as Dask tasks)


@dataclass(frozen=True)
class Job:
    """Everything one chunk needs (picklable, for Dask workers)."""

    kind: str
    x: NpyInput
    delta: NpyInput | None
    out_path: str
    out_offset: int
    eps: float
    p: float
    bounds: tuple[float, float] | None
    distribution: str
    seed: np.random.SeedSequence | None
    unreachable: str


def _globalize(err: ValueError, start: int) -> str:
    """The text of a chunk's error with its index moved to the whole input's rows.

    >>> _globalize(_errors.outside_bounds(1, (2, 0, 5)), 100)
    'x has 1 value outside bounds; first at index (102, 0, 5)'
    """
    check = _errors.check_of(err)
    return str(err) if check is None else check.rebased(0, start).text()


def run_chunk(job: Job, start: int, stop: int) -> int:
    """Process rows ``start:stop`` and write them into the output; returns input bytes done."""
    from . import _api, _noise

    x = job.x.rows_view(start, stop)
    d = job.delta.rows_view(start, stop) if job.delta is not None else None
    try:
        if job.kind == "noise":
            y = _noise.noise(
                x,
                job.eps,
                p=job.p,
                bounds=job.bounds,
                distribution=job.distribution,
                seed=job.seed,
                row_offset=start,
                unreachable=job.unreachable,
            )
        else:
            y = _api.perturb(x, d, job.eps, job.p, job.bounds, None, job.unreachable)
    except ValueError as e:
        where = f" (in rows {start}:{stop})" if len(job.x.shape) > 1 else ""
        raise CliError(f"{job.x.path}: {_globalize(e, start)}{where}") from None
    finally:
        del x, d
    data = memoryview(cast(Any, np.ascontiguousarray(y))).cast("B")
    fd = os.open(job.out_path, os.O_WRONLY)
    try:
        _pwrite_all(fd, data, job.out_offset + start * job.x.row_bytes)
    except OSError as e:
        raise CliError(f"cannot write the output ({_one_line(e)})") from None
    finally:
        os.close(fd)
    return (stop - start) * job.x.row_bytes


def _chunks(rows: int, row_bytes: int, chunk_mb: float) -> Iterator[tuple[int, int]]:
    """Row ranges of about ``chunk_mb`` MiB of input each.

    >>> list(_chunks(10, 2**20, 4))
    [(0, 4), (4, 8), (8, 10)]
    """
    step = max(1, int(chunk_mb * 2**20) // max(row_bytes, 1))
    for a in range(0, rows, step):
        yield a, min(rows, a + step)


def _run_local(job: Job, ranges: list[tuple[int, int]], progress: Progress) -> None:
    for a, b in ranges:
        progress.update(run_chunk(job, a, b))


def _run_dask(
    job: Job,
    ranges: list[tuple[int, int]],
    progress: Progress,
    workers: int | None,
    scheduler: str | None,
) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise CliError(
            "--workers/--scheduler need dask.distributed: pip install 'clipresc[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except OSError as e:
                raise CliError(f"cannot reach the scheduler {scheduler} ({_one_line(e)})") from None
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    env={"RAYON_NUM_THREADS": "1"},
                )
            )
            client = stack.enter_context(Client(cluster))
        futures = [client.submit(run_chunk, job, a, b, pure=False) for a, b in ranges]
        try:
            for fut in as_completed(futures):
                progress.update(fut.result())
        except BaseException:
            client.cancel(futures)
            raise


def _process(
    kind: str,
    in_path: str,
    delta_path: str | None,
    out_path: str,
    *,
    eps: float,
    p: float,
    bounds: tuple[float, float] | None,
    distribution: str,
    seed: int | None,
    unreachable: str,
    force: bool,
    chunk_mb: float,
    quiet: bool,
    workers: int | None,
    scheduler: str | None,
) -> None:
    x = open_input(in_path, "x")
    delta = None
    if delta_path is not None:
        delta = open_input(delta_path, "delta")
        if delta.shape != x.shape:
            raise CliError(f"{delta_path}: {_errors.shape_mismatch(delta.shape, x.shape)}")
    seq = seed_sequence(seed) if kind == "noise" else None
    ranges = list(_chunks(x.rows, x.row_bytes + (delta.row_bytes if delta else 0), chunk_mb))
    if len(x.shape) == 1:
        ranges = [(0, 1)]
    out = AtomicOutput(out_path, x.dtype, x.shape, force)
    try:
        job = Job(
            kind, x, delta, out.tmp, out.offset, eps, p, bounds, distribution, seq, unreachable
        )
        progress = Progress(x.nbytes, f"clipresc {kind}", sys.stderr, enabled=not quiet)
        if workers is None and scheduler is None:
            _run_local(job, ranges, progress)
        else:
            _run_dask(job, ranges, progress, workers, scheduler)
        out.commit()
        note = (
            "" if seq is None else f" (seed {seq.entropy}: pass --seed {seq.entropy} to reproduce)"
        )
        progress.finish(f"clipresc {kind}: wrote {out_path}" + (note if seed is None else ""))
    finally:
        out.discard()


# ---------------------------------------------------------------------------------------
# command line


def _check_eps(eps: float) -> float:
    if not (math.isfinite(eps) and eps >= 0):
        raise click.BadParameter(f"must be a finite number >= 0; got {eps}", param_hint="--eps")
    return eps


def _check_p(p: float) -> float:
    try:
        return parse_p(p)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--p") from None


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = bounds
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise click.BadParameter(
            f"must be LOWER UPPER with LOWER <= UPPER; got {lo} {hi}", param_hint="--bounds"
        )
    if lo == -math.inf and hi == math.inf:
        return None
    return lo, hi


def _check_parallel(workers: int | None, scheduler: str | None, chunk_mb: float) -> None:
    if workers is not None and scheduler is not None:
        raise click.UsageError("--workers and --scheduler are mutually exclusive")
    if workers is not None and workers < 1:
        raise click.BadParameter(f"must be >= 1; got {workers}", param_hint="--workers")
    if not (chunk_mb > 0 and math.isfinite(chunk_mb)):
        raise click.BadParameter(f"must be > 0; got {chunk_mb}", param_hint="--chunk-mb")


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--eps", type=float, required=True, help="Size after clipping."),
        click.option(
            "--p", "p", type=float, default=2.0, show_default=True, help="Norm: p > 0 or inf."
        ),
        click.option(
            "--bounds",
            type=(float, float),
            default=(0.0, 1.0),
            show_default=True,
            metavar="LOWER UPPER",
            help="Data domain; '-inf inf' for no clipping.",
        ),
        click.option(
            "--unreachable",
            type=click.Choice(["saturate", "raise"]),
            default="saturate",
            show_default=True,
            help="When eps exceeds the largest reachable size: saturate, or fail.",
        ),
        click.option("--force", is_flag=True, help="Overwrite OUT if it exists."),
        click.option(
            "--chunk-mb",
            type=float,
            default=DEFAULT_CHUNK_MB,
            show_default=True,
            help="MiB of input per chunk (peak memory is a few chunks).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr."),
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Run on a local Dask cluster of N worker processes.",
        ),
        click.option(
            "--scheduler",
            default=None,
            metavar="ADDRESS",
            help="Run on an existing Dask cluster (e.g. tcp://host:8786); "
            "the files must be visible to its workers at the same paths.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="clipresc", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Exact clipping-aware rescaling of perturbations (see `clipresc COMMAND --help`)."""


@cli.command()
@click.option(
    "--out",
    "out",
    default="clipresc-demo.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the PNG figure.",
)
@click.option("--no-figure", is_flag=True, help="Print the table only.")
def demo(out: str, no_figure: bool) -> None:
    """Naive vs clipping-aware rescaling of noise on built-in sample images.

    Prints the target and achieved L2 sizes for both methods and writes a PNG figure
    (the images side by side and the achieved-size plot). No arguments, no downloads.
    """
    from . import demo as demo_mod

    click.echo(demo_mod.run())
    if no_figure:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        click.echo("(no figure: install matplotlib, e.g. pip install 'clipresc[cli]')", err=True)
        return
    try:
        demo_mod.figure(out)
    except OSError as e:
        raise CliError(f"{out}: cannot write the figure ({_one_line(e)})") from None
    click.echo(f"\nfigure: {out}")


@cli.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path())
@_common_options
@click.option(
    "--distribution",
    type=click.Choice(list(DISTRIBUTIONS)),
    default="gaussian",
    show_default=True,
    help="Noise distribution (its scale does not matter).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Non-negative int; without it, fresh entropy (printed, to reproduce).",
)
def noise(in_path: str, out_path: str, **kw: Any) -> None:
    """Add seeded noise of exact size EPS (per vector, after clipping) to IN, write OUT.

    IN is a .npy float array; axis 0 indexes the vectors (a 1-D file is one vector). The
    result equals clipresc.noise(np.load(IN), EPS, seed=SEED, ...).
    """
    _dispatch("noise", in_path, None, out_path, kw)


@cli.command()
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=True))
@click.argument("delta_path", metavar="DELTA", type=click.Path(dir_okay=True))
@click.argument("out_path", metavar="OUT", type=click.Path())
@_common_options
def perturb(in_path: str, delta_path: str, out_path: str, **kw: Any) -> None:
    """Write clip(IN + eta * DELTA) with eta giving each vector size EPS after clipping.

    IN and DELTA are .npy float arrays of one shape; axis 0 indexes the vectors.
    """
    _dispatch("perturb", in_path, delta_path, out_path, kw)


def _dispatch(
    kind: str, in_path: str, delta_path: str | None, out_path: str, kw: dict[str, Any]
) -> None:
    _check_parallel(kw["workers"], kw["scheduler"], kw["chunk_mb"])
    _process(
        kind,
        in_path,
        delta_path,
        out_path,
        eps=_check_eps(kw["eps"]),
        p=_check_p(kw["p"]),
        bounds=_check_bounds(kw["bounds"]),
        distribution=kw.get("distribution", "gaussian"),
        seed=kw.get("seed"),
        unreachable=parse_unreachable(kw["unreachable"]),
        force=kw["force"],
        chunk_mb=kw["chunk_mb"],
        quiet=kw["quiet"],
        workers=kw["workers"],
        scheduler=kw["scheduler"],
    )


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clipresc`` console script; returns the exit status."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=argv, prog_name="clipresc", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            click.echo(e.ctx.get_help())
            return 2
        hint = ""
        if e.ctx is not None:
            name = e.ctx.command_path if e.ctx.parent is not None else "clipresc"
            hint = f" (see '{name} --help')"
        click.echo(f"clipresc: error: {_one_line(Exception(e.format_message()))}{hint}", err=True)
        return 2
    except (CliError, click.ClickException) as e:
        msg = e.format_message() if isinstance(e, click.ClickException) else str(e)
        click.echo(f"clipresc: error: {_one_line(Exception(msg))}", err=True)
        return 1
    except (KeyboardInterrupt, _Terminated, click.exceptions.Abort):
        click.echo("clipresc: interrupted; no output written", err=True)
        return 130
    except MemoryError:
        click.echo("clipresc: error: out of memory (try a smaller --chunk-mb)", err=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def console() -> NoReturn:
    """Exit with :func:`main`'s status for ``sys.argv`` (the installed script runs
    :func:`clipresc.__main__.console`, which first checks that click is there)."""
    sys.exit(main())


if __name__ == "__main__":
    console()
