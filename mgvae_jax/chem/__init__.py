"""Chemistry for MGVAE (paper section 5.1): molecules <-> padded graphs, and model probabilities -> valid molecules.

  feat = Featuriser("zinc", chemical_features=True)       # vocabulary, N = 38, node features T + 24
  batch, report = feat.featurise_many(smiles_list)        # GraphBatch (numpy), FeaturiseReport
  results = decode_samples(model_probs, feat)             # [DecodeResult] via the correcting process
"""

from mgvae_jax.chem.decode import decode_argmax
from mgvae_jax.chem.decode import decode_argmax_batch
from mgvae_jax.chem.decode import decode_corrected
from mgvae_jax.chem.decode import decode_corrected_batch
from mgvae_jax.chem.decode import decode_samples
from mgvae_jax.chem.decode import DecodeResult
from mgvae_jax.chem.decode import MAX_VALENCE
from mgvae_jax.chem.decode import max_valence
from mgvae_jax.chem.featurise import atom_features_24
from mgvae_jax.chem.featurise import atom_type_name
from mgvae_jax.chem.featurise import canonical_smiles
from mgvae_jax.chem.featurise import DATASET_ATOM_TYPES
from mgvae_jax.chem.featurise import DATASET_MAX_NODES
from mgvae_jax.chem.featurise import FEATURE_NAMES_24
from mgvae_jax.chem.featurise import FeaturiseReport
from mgvae_jax.chem.featurise import Featuriser
from mgvae_jax.chem.featurise import NO_ATOM
from mgvae_jax.chem.featurise import parse_atom_type
