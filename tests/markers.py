"""Skip markers shared by the test files: tests that need a staged data set (CI provides them in MGVAE_DATA_DIR)."""

import pytest

from mgvae_jax.data import molecules


def _have_qm9() -> bool:
  try:
    molecules.load_smiles("qm9", "test", download=False)
    return True
  except (FileNotFoundError, OSError, ValueError):
    return False


needs_qm9 = pytest.mark.skipif(not _have_qm9(), reason="QM9 files not in MGVAE_DATA_DIR (CI provides them)")
