"""The chunked job of ``clipresc noise`` / ``perturb``: whole vectors along axis 0, run in
this process or as tasks on Dask workers (a :class:`Job` is picklable)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .. import _errors
from .._noise import seed_sequence
from .npy_files import AtomicOutput, NpyInput, open_input, pwrite_all
from .progress import Progress


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


def globalize(err: ValueError, start: int) -> str:
    """The text of a chunk's error with its index moved to the whole input's rows.

    >>> globalize(_errors.outside_bounds(1, (2, 0, 5)), 100)
    'x has 1 value outside bounds; first at index (102, 0, 5)'
    """
    check = _errors.check_of(err)
    return str(err) if check is None else check.rebased(0, start).text()


def run_chunk(job: Job, start: int, stop: int) -> int:
    """Process rows ``start:stop`` and write them into the output; returns input bytes done."""
    from .. import _api, _noise

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
        rows = (start, stop) if len(job.x.shape) > 1 else None
        raise _errors.chunk_failed(job.x.path, globalize(e, start), rows) from None
    finally:
        del x, d
    data = memoryview(cast(Any, np.ascontiguousarray(y))).cast("B")
    fd = os.open(job.out_path, os.O_WRONLY)
    try:
        pwrite_all(fd, data, job.out_offset + start * job.x.row_bytes)
    except OSError as e:
        raise _errors.output_unwritable(e) from None
    finally:
        os.close(fd)
    return (stop - start) * job.x.row_bytes


def chunk_ranges(rows: int, row_bytes: int, chunk_mb: float) -> Iterator[tuple[int, int]]:
    """Row ranges of about ``chunk_mb`` MiB of input each.

    >>> list(chunk_ranges(10, 2**20, 4))
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
        raise _errors.no_distributed() from None
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except OSError as e:
                raise _errors.no_scheduler(scheduler, e) from None
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


def process(
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
            raise _errors.npy_shape_mismatch(delta_path, delta.shape, x.shape)
    seq = seed_sequence(seed) if kind == "noise" else None
    ranges = list(chunk_ranges(x.rows, x.row_bytes + (delta.row_bytes if delta else 0), chunk_mb))
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
