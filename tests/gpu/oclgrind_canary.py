"""A kernel with a known data race and uninitialised read, for `.ci/oclgrind-check.sh`.

Run under Oclgrind with its checkers on, it must produce diagnostics; the check script
fails if it does not, so an inactive checker cannot make the kernel check pass. It is not
a pytest test (the name does not start with ``test_``): on a real device the bugs are
simply undefined behaviour.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

SOURCE = """
__kernel void canary(__global float *a) {
    __local float shared[1];
    int i = get_global_id(0);
    float unset;
    if (i > 100) unset = 1.0f;       /* never true: unset stays uninitialised */
    shared[0] = a[i];                /* every work-item writes shared[0]: a race */
    a[i] = shared[0] + unset;
}
"""


def main() -> None:
    ctx = cl.Context([cl.get_platforms()[0].get_devices()[0]])
    queue = cl.CommandQueue(ctx)
    program = cl.Program(ctx, SOURCE).build(options=["-cl-opt-disable"])
    host = np.zeros(8, np.float32)
    flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
    buf = cl.Buffer(ctx, flags, hostbuf=host)
    program.canary(queue, host.shape, host.shape, buf)
    queue.finish()


if __name__ == "__main__":
    main()
