from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# pytester runs a pytest of its own, to check the plugin trioudp registers.
pytest_plugins = ["pytester"]

settings.register_profile(
    "ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
