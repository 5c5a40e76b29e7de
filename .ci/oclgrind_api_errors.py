"""Fail on any OpenCL API error Oclgrind reported on stderr, except pyopencl's own probes.

Oclgrind implements OpenCL 1.2. pyopencl asks every device for a few later properties when
it builds a program and when it enqueues a kernel, and Oclgrind answers each such query
with ``clGetDeviceInfo: CL_INVALID_VALUE for argument 'param_name'``; pyopencl treats the
answer as "not supported". Those reports are counted and shown, not failed; every other API
error (any other function, error code or argument) fails the check.

Usage: python .ci/oclgrind_api_errors.py STDERR_FILE
"""

from __future__ import annotations

import re
import sys

HEADER = "Oclgrind - OpenCL runtime error detected"
EXPECTED_PROBE = ("clGetDeviceInfo", "CL_INVALID_VALUE", "param_name")


def reports(text: str) -> list[tuple[str, str, str]]:
    """(function, error, argument) of each API error block in Oclgrind's stderr text."""
    found = []
    for block in text.split(HEADER)[1:]:
        function = re.search(r"Function:\s*(\S+)", block)
        error = re.search(r"Error:\s*(\S+)", block)
        argument = re.search(r"For argument '([^']*)'", block)
        found.append(
            (
                function.group(1) if function else "?",
                error.group(1) if error else "?",
                argument.group(1) if argument else "?",
            )
        )
    return found


def main(path: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        found = reports(handle.read())
    unexpected = [r for r in found if r != EXPECTED_PROBE]
    probes = len(found) - len(unexpected)
    print(f"oclgrind check: {probes} pyopencl property probe(s) answered CL_INVALID_VALUE")
    if unexpected:
        print(f"Oclgrind reported {len(unexpected)} OpenCL API error(s):", file=sys.stderr)
        for function, error, argument in unexpected[:20]:
            print(f"  {function}: {error} (argument {argument!r})", file=sys.stderr)
        return 1
    print("oclgrind check: no other OpenCL API errors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
