"""Data: a checksummed registry of the staged files, molecule loaders, and a seeded fixed-shape batch pipeline.

Files live under `data_dir()` (`$MGVAE_DATA_DIR`, else a per-user cache); `fetch` downloads a missing one and checks
its sha256. Molecule loaders return SMILES (and targets); featurising them into graphs is a separate step. Generic
graph sets (community-small, ego-small) load as networkx graphs; `community_small` regenerates the former.
"""

from mgvae_jax.data.community import community_sizes
from mgvae_jax.data.community import community_small
from mgvae_jax.data.graph_datasets import load_graphs

from mgvae_jax.data.mnist import load_mnist
from mgvae_jax.data.molecules import load_qm9_targets
from mgvae_jax.data.molecules import load_smiles
from mgvae_jax.data.molecules import load_zinc12k
from mgvae_jax.data.molecules import QM9_RAW_COLUMNS
from mgvae_jax.data.molecules import QM9_RAW_UNITS
from mgvae_jax.data.molecules import QM9_TARGET_NAMES
from mgvae_jax.data.pipeline import batch_indices
from mgvae_jax.data.pipeline import batches
from mgvae_jax.data.pipeline import epoch_order
from mgvae_jax.data.pipeline import num_batches
from mgvae_jax.data.planetoid import Citation
from mgvae_jax.data.planetoid import EdgeSplit
from mgvae_jax.data.planetoid import load_planetoid
from mgvae_jax.data.planetoid import split_edges
from mgvae_jax.data.planetoid import train_adjacency
from mgvae_jax.data.registry import build
from mgvae_jax.data.registry import check_file
from mgvae_jax.data.registry import ChecksumError
from mgvae_jax.data.registry import data_dir
from mgvae_jax.data.registry import DataFormatError
from mgvae_jax.data.registry import DownloadError
from mgvae_jax.data.registry import entries
from mgvae_jax.data.registry import Entry
from mgvae_jax.data.registry import fetch
from mgvae_jax.data.registry import get
from mgvae_jax.data.registry import register
from mgvae_jax.data.registry import sha256_file
from mgvae_jax.data.registry import temporary_entry
from mgvae_jax.data.registry import unregister
