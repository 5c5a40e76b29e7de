"""What the tests and the benchmarks share: the independent references and the inputs.

- :mod:`support.oracle`: the one bisection oracle (high-precision breakpoint walk and a
  float64 bisection on the bits of ``eta``).
- :mod:`support.strategies`: hypothesis strategies for whole calls (shapes, axes, bounds,
  saturation, ``eps`` modes).
- :mod:`support.framework_cases`: value and error cases shared by the framework tests.
- :mod:`support.gpu_cases`: ``(rows, n)`` inputs for the GPU kernel tests, the adversarial
  chain included.
- :mod:`support.workloads`: the benchmarks' workloads and their seeded data.
- :mod:`support.threads`: a script run in a fresh process with a given thread count.
- :mod:`support.checks`: assertions against the oracle; :mod:`support.fd`: finite
  differences.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in ``pyproject.toml``); the
benchmarks do it in ``benches/_support.py``.
"""
