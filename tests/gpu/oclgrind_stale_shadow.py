"""Oclgrind's stale shadow on a reused buffer index, for `.ci/oclgrind-check.sh`.

    python tests/gpu/oclgrind_stale_shadow.py free|retain

Under Oclgrind's uninitialised-value checker (OCLGRIND_UNINITIALIZED=1), a kernel fills
every element of a new buffer and a second kernel branches on each element it filled: a
correct program. ``free``: the new buffer is allocated right after a smaller one is
released, so Oclgrind gives it the smaller one's buffer index, and its checker, which
never frees the shadow it keeps per index, reports the second kernel's reads past the old
size as uninitialised (a false report: the first kernel wrote them). ``retain``: the same
with the OpenCL backend's allocator, which on Oclgrind never frees a buffer
(``opencl_backend._retained``), so the new buffer gets a fresh index: no report. The check
script requires the ``retain`` run to be clean, and says whether the ``free`` run still
shows the artefact (the reason for the retention). Not a pytest test: outside Oclgrind
there is nothing to see.
"""

from __future__ import annotations

import sys

import numpy as np
import pyopencl as cl

SOURCE = """
__kernel void fill(__global int *a, int n) {
    int i = get_global_id(0);
    if (i < n) a[i] = i;
}
__kernel void check(__global const int *a, __global int *out, int n) {
    int i = get_global_id(0);
    if (i < n) {
        if (a[i] == i) out[i] = 1; else out[i] = 2;  /* control flow on what fill wrote */
    }
}
"""

SMALL, BIG = 4, 1024


def main(mode: str) -> int:
    from clipresc.backends import opencl_backend as ob

    queue = ob.default_queue()
    ctx = queue.context
    program = cl.Program(ctx, SOURCE).build(options=["-cl-opt-disable"])
    fill, check = program.fill, program.check
    alloc = ob._allocator(queue) if mode == "retain" else None
    if mode == "retain" and alloc is None:
        print("oclgrind_stale_shadow: the device is not Oclgrind", file=sys.stderr)
        return 1

    def buffer(nbytes: int) -> cl.Buffer:
        if alloc is not None:
            return alloc(nbytes)
        return cl.Buffer(ctx, cl.mem_flags.READ_WRITE, nbytes)

    out = buffer(4 * BIG)
    small = buffer(4 * SMALL)
    fill(queue, (SMALL,), None, small, np.int32(SMALL))
    queue.finish()
    if alloc is None:
        small.release()  # (the backend's allocator never frees it)
    del small
    big = buffer(4 * BIG)
    fill(queue, (BIG,), None, big, np.int32(BIG))
    check(queue, (BIG,), None, big, out, np.int32(BIG))
    host = np.empty(BIG, np.int32)
    cl.enqueue_copy(queue, host, out)
    queue.finish()
    if not (host == 1).all():  # pragma: no cover - the kernels themselves are wrong
        print("oclgrind_stale_shadow: the kernels computed the wrong values", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("free", "retain"):
        sys.exit("usage: oclgrind_stale_shadow.py free|retain")
    sys.exit(main(sys.argv[1]))
