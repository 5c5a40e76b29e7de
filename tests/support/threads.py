"""A Python script run in a fresh process with a given rayon thread count (rayon reads
``RAYON_NUM_THREADS`` once, when its pool starts), for the thread tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def run_with_threads(
    script: str, n_threads: int | None, path: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -c script`` with ``n_threads`` rayon threads (``None``: rayon's default)
    and ``path`` before ``PYTHONPATH``; its output as text, its exit status unchecked."""
    env = dict(os.environ)
    env.pop("RAYON_NUM_THREADS", None)
    if n_threads is not None:
        env["RAYON_NUM_THREADS"] = str(n_threads)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*path, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
