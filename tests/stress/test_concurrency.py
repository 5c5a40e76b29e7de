"""Eight Python threads on shared read-only inputs give the single-threaded bits, and
nothing deadlocks with rayon's pool, from Python threads or from inside Dask workers.

A watchdog (faulthandler) aborts the process with every thread's stack if a test hangs.
"""

from __future__ import annotations

import faulthandler
import functools
import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

import clipresc

THREADS = 8
HANG_S = 600


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = {}
    for name, shape in {
        "batch": (64, 3, 32, 32),  # many rows: rayon over rows
        "long": (2, 400_000),  # few long rows: rayon inside rows
        "tiny": (3, 5),
    }.items():
        x = rng.uniform(0, 1, shape).astype(np.float32)
        x[..., ::7] = 1.0
        d = rng.standard_normal(shape).astype(np.float32)
        x.flags.writeable = False
        d.flags.writeable = False
        out[name] = (x, d)
    return out


def _jobs(inputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[str, Callable[[], Any]]]:
    jobs: list[tuple[str, Callable[[], Any]]] = []
    for name, (x, d) in inputs.items():
        for p in (1.0, 2.0, 0.7, np.inf):
            jobs.append((f"scale/{name}/{p}", functools.partial(clipresc.scale, x, d, 3.0, p=p)))
            jobs.append(
                (f"perturb/{name}/{p}", functools.partial(clipresc.perturb, x, d, 3.0, p=p))
            )
        if hasattr(clipresc, "noise"):
            jobs.append((f"noise/{name}", functools.partial(clipresc.noise, x, 3.0, seed=11)))
        if hasattr(clipresc, "perturb_vjp"):
            jobs.append((f"perturb_vjp/{name}", functools.partial(_vjp_x, x, d)))
    return jobs


def _vjp_x(x: np.ndarray, d: np.ndarray) -> Any:
    return clipresc.perturb_vjp(x, d, 3.0, d)["x"]


def _bits(a: Any) -> bytes:
    a = np.asarray(a)
    return bytes(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes())


def test_eight_threads_match_single_thread(report: Any) -> None:
    inputs = _inputs()
    jobs = _jobs(inputs)
    reference = {name: _bits(f()) for name, f in jobs}
    rounds = 30
    work = [(name, f) for _ in range(rounds) for name, f in jobs]
    np.random.default_rng(0).shuffle(work)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda job: (job[0], _bits(job[1]())), work))
    elapsed = time.perf_counter() - t0
    bad = [name for name, b in results if b != reference[name]]
    assert not bad, f"{len(bad)} results differ from the single-threaded ones: {bad[:5]}"
    # the inputs were shared read-only and are unchanged
    assert all(not x.flags.writeable for x, _ in inputs.values())
    report("eight_threads", threads=THREADS, calls=len(work), seconds=round(elapsed, 2))


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs distributed")
def test_inside_dask_workers(report: Any) -> None:
    import dask.array as da
    from distributed import Client, LocalCluster

    inputs = _inputs()
    x, d = inputs["batch"]
    want = _bits(clipresc.perturb(x, d, 3.0))
    t0 = time.perf_counter()
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=4, processes=False, dashboard_address=None
    )
    client = Client(cluster)  # type: ignore[no-untyped-call]
    with cluster, client:
        # plain tasks calling the core from the workers' threads
        futures = [client.submit(clipresc.perturb, x, d, 3.0, pure=False) for _ in range(32)]
        got = client.gather(futures)  # type: ignore[no-untyped-call]
        assert all(_bits(g) == want for g in got)
        # clipresc's own Dask path, scheduled on the cluster
        xd = da.from_array(x, chunks=(8, 3, 32, 32))  # type: ignore[no-untyped-call]
        dd = da.from_array(d, chunks=(8, 3, 32, 32))  # type: ignore[no-untyped-call]
        y = clipresc.perturb(xd, dd, 3.0).compute()
        assert _bits(y) == want
    # and Dask's local threaded scheduler
    y = clipresc.perturb(xd, dd, 3.0).compute(scheduler="threads", num_workers=THREADS)
    assert _bits(y) == want
    report("dask_workers", seconds=round(time.perf_counter() - t0, 2))
