"""Shared test settings: CPU, float32, deterministic hypothesis runs sized for a 2-core CI."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import hypothesis  # pylint: disable=g-import-not-at-top

hypothesis.settings.register_profile(
    "ci", max_examples=20, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("dev", max_examples=100, deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
