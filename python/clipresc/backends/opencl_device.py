"""Choose the OpenCL device that runs the kernels, deliberately and with reasons.

The OpenCL backend exists mainly to execute the GPU kernels on a CPU (CI has no GPU), so
the choice favours a device that gives the same answers on every host:

1. ``CLIPRESC_OPENCL_DEVICE`` set: the first device whose ``"platform / device"`` name
   contains that text (case-insensitive). Nothing else is tried; no match is an error
   that lists the devices present. This is how the Oclgrind simulator is chosen.
2. Otherwise every device with ``cl_khr_fp64`` except simulators (Oclgrind: correct but
   some 40x slower), PoCL's CPU device first, then other CPU devices, then the rest.
   Each candidate must build and run a small float64 probe kernel; the first that does
   is used. A PoCL built with an LLVM that does not know the host CPU fails here
   ("unknown target CPU 'generic'"), so an old PoCL is passed over instead of failing
   every kernel build later.

Importing this module does not import pyopencl.

Example (needs pyopencl and an OpenCL driver; not run as a doctest):

>>> from clipresc.backends.opencl_device import select_device  # doctest: +SKIP
>>> print(select_device().description)  # doctest: +SKIP
Portable Computing Language / cpu-skylake-avx512-AMD EPYC (OpenCL C 1.2 PoCL)
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from .. import _errors

__all__ = ["DEVICE_ENV", "INSTALL_HINT", "ChosenDevice", "describe", "select_device"]

#: Environment variable naming the device to use (a case-insensitive substring).
DEVICE_ENV = _errors.OPENCL_DEVICE_ENV

#: What a user is told to install when no usable device is found.
INSTALL_HINT = _errors.OPENCL_INSTALL_HINT

_SIMULATORS = ("oclgrind",)
_PROBE = """
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
__kernel void probe(__global double *a) { size_t i = get_global_id(0); a[i] = a[i] * 2.0 + 1.0; }
"""


class ChosenDevice(NamedTuple):
    """A device that passed the probe, with the text tests and logs report."""

    device: Any
    description: str


def describe(device: Any) -> str:
    """``"platform / device (OpenCL C version)"`` for logs and test reports."""
    return f"{device.platform.name.strip()} / {device.name.strip()} ({device.version.strip()})"


def _rank(device: Any) -> tuple[int, int]:
    import pyopencl as cl

    is_pocl = "portable computing language" in device.platform.name.lower()
    is_cpu = bool(device.type & cl.device_type.CPU)
    return (0 if is_pocl else 1, 0 if is_cpu else 1)


def _probe(device: Any) -> str | None:
    """None when the device builds and runs the float64 probe correctly, else why not."""
    import numpy as np
    import pyopencl as cl

    if "cl_khr_fp64" not in device.extensions:
        return "no cl_khr_fp64"
    try:
        ctx = cl.Context([device])
        queue = cl.CommandQueue(ctx)
        prg = cl.Program(ctx, _PROBE).build(options=["-cl-opt-disable"])
        host = np.arange(4, dtype=np.float64)
        buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
        prg.probe(queue, host.shape, None, buf)
        out = np.empty_like(host)
        cl.enqueue_copy(queue, out, buf)
        queue.finish()
    except Exception as exc:  # any driver failure disqualifies the device
        first = next((ln for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc))
        return f"probe kernel failed: {first.strip()[:300]}"
    if not np.array_equal(out, host * 2.0 + 1.0):
        return f"probe kernel gave wrong results: {out.tolist()}"
    return None


def select_device(wanted: str | None = None) -> ChosenDevice:
    """The OpenCL device the backend uses (see the module docstring for the rules).

    ``wanted`` overrides ``CLIPRESC_OPENCL_DEVICE``. Raises ``RuntimeError`` naming every
    device seen and why it was passed over, with what to install, when none qualifies.
    """
    import pyopencl as cl

    wanted = wanted if wanted is not None else os.environ.get(DEVICE_ENV) or None
    try:
        devices = [d for pf in cl.get_platforms() for d in pf.get_devices()]
    except cl.Error as exc:  # "platform not found" when no ICD is registered
        devices = []
        seen_error = str(exc)
    else:
        seen_error = ""
    if wanted is not None:
        key = wanted.lower()
        candidates = [d for d in devices if key in f"{d.platform.name} / {d.name}".lower()]
    else:
        candidates = sorted(
            (d for d in devices if not any(s in d.platform.name.lower() for s in _SIMULATORS)),
            key=_rank,
        )
    rejected = []
    for device in candidates:
        why = _probe(device)
        if why is None:
            return ChosenDevice(device, describe(device))
        rejected.append(f"{describe(device)}: {why}")
    seen = [describe(d) for d in devices] or [f"none ({seen_error or 'no OpenCL platform'})"]
    raise _errors.no_opencl_device(wanted, seen, rejected)
