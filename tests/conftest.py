"""Shared test settings: CPU, float32, deterministic hypothesis runs sized for a 2-core CI."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole run, shared by the xdist workers and by the subprocesses tests
# start (they inherit the environment): tests build the same tiny models again and again, and on CPU compiling them
# costs more than running them. The key covers the HLO, the jax version and the backend, so a stale entry is never hit.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mgvae_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# Tests compile hundreds of tiny programs and run each for milliseconds, so compile time is what they cost: LLVM's
# optimisation passes buy nothing here (test_vae + test_mgn: 4:49 against 7:04), and XLA's CPU fusion emitters take
# twice as long to generate code as the older elemental emitters (one MGN gradient: 7.8 s against 3.7 s; the whole
# suite 16:00 against 10:12 on 2 cores). Results do not depend on either; the subprocesses tests start inherit them.
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()

import hypothesis  # pylint: disable=g-import-not-at-top

hypothesis.settings.register_profile(
    "ci", max_examples=20, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("dev", max_examples=100, deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
  """Tests marked `heavy` (a minute or more on one CI core: whole binaries, subprocesses, training runs) first, in
  their file order: two workers then share them from the start instead of one worker finishing a file of them while
  the other idles. The rest keep pytest's order."""
  del config
  items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable
