"""pytest configuration: hypothesis profiles.

``ci`` (default): moderate example counts, no deadline. ``fuzz``: 5000 examples per
property test (``CLIPRESC_FUZZ_EXAMPLES`` overrides; ``make fuzz`` passes FUZZ_EXAMPLES).
Select with ``HYPOTHESIS_PROFILE=fuzz pytest tests``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    parent=settings.get_profile("ci"),
    max_examples=int(os.environ.get("CLIPRESC_FUZZ_EXAMPLES", "5000")),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
