"""Importing clipresc (and its GPU backend modules) never imports CuPy or pyopencl."""

from __future__ import annotations

import subprocess
import sys


def test_gpu_backends_import_lazily() -> None:
    code = (
        "import sys, clipresc, clipresc.kernels\n"
        "import clipresc.backends.cupy_backend, clipresc.backends.opencl_backend\n"
        "bad = sorted(m for m in ('cupy', 'pyopencl') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
