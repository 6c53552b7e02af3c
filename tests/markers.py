"""Shared by the test files: skip markers for tests that need a staged data set (CI provides them in
MGVAE_DATA_DIR), and the compile options of the few tests whose time is spent running, not compiling."""

import pytest

from mgvae_jax.data import molecules


def _have_qm9() -> bool:
  try:
    molecules.load_smiles("qm9", "test", download=False)
    return True
  except (FileNotFoundError, OSError, ValueError):
    return False


needs_qm9 = pytest.mark.skipif(not _have_qm9(), reason="QM9 files not in MGVAE_DATA_DIR (CI provides them)")

# conftest.py compiles without LLVM's optimisations, which is right for programs that run a few times. A test that
# runs one step hundreds of times passes these to that step's jax.jit: compiling takes a few seconds longer, running
# it a third less (the overfitting test: 35 s against 48 s).
OPTIMISED_COMPILE = {"xla_backend_optimization_level": 2, "xla_llvm_disable_expensive_passes": False}
