"""Evaluation: MMD of degree, clustering and orbit statistics for graph generation (GDSS and SPECTRE protocols);
AUC / AP and balanced-cut statistics for link prediction.

  mmd2 = generation_mmd(generated_graphs, test_graphs, protocol="gdss")  # {"degree": .., "clustering": .., "orbit": ..}
  auc_ap(positive_scores, negative_scores)                               # {"auc": .., "ap": ..}

The entry point is not named after its module `graph_mmd`, so `import mgvae_jax.evaluation.graph_mmd` stays the module.
"""

from mgvae_jax.evaluation.graph_mmd import as_networkx
from mgvae_jax.evaluation.graph_mmd import clustering_histogram
from mgvae_jax.evaluation.graph_mmd import degree_histogram
from mgvae_jax.evaluation.graph_mmd import gaussian
from mgvae_jax.evaluation.graph_mmd import gaussian_emd
from mgvae_jax.evaluation.graph_mmd import gaussian_tv
from mgvae_jax.evaluation.graph_mmd import generation_mmd
from mgvae_jax.evaluation.graph_mmd import mmd_squared
from mgvae_jax.evaluation.graph_mmd import NUM_ORBITS
from mgvae_jax.evaluation.graph_mmd import orbit_counts
from mgvae_jax.evaluation.graph_mmd import orbit_statistic
from mgvae_jax.evaluation.graph_mmd import Protocol
from mgvae_jax.evaluation.graph_mmd import PROTOCOLS
from mgvae_jax.evaluation.graph_mmd import StatisticSetting
from mgvae_jax.evaluation.graph_mmd import STATISTICS
from mgvae_jax.evaluation.link_metrics import auc_ap
from mgvae_jax.evaluation.link_metrics import cluster_balance
