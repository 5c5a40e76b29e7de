"""Root pytest configuration (tests and doctests alike).

PyTorch's PyPI wheel bundles Triton, whose LLVM clashes with TensorFlow's in one process
("Option ... registered more than once", then abort). PyTorch imports Triton lazily, on
the first custom-op call or ``torch.compile``; the CPU tests need neither Triton nor a
GPU, so when TensorFlow is installed Triton is kept out of the test process (PyTorch then
reports it absent).
"""

from __future__ import annotations

import importlib.util
import sys

if importlib.util.find_spec("tensorflow") is not None and "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
