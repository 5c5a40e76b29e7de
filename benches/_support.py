"""Puts ``tests/`` on ``sys.path``: the benchmarks import the tests' ``support`` package
(the oracle, the workloads) rather than keeping copies."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
