"""mgvae_jax: Multiresolution Equivariant Graph Variational Autoencoder (Hy & Kondor, 2023) in JAX/Flax.

The public face: what other JAX pipelines import and compose. Per-graph pure functions act on one padded graph and
are batched with `jax.vmap`; linen modules own parameters and batch internally.

`__all__` lists exactly these names. Performance variants (the (symmetric, antisymmetric) parts forms of the
equivariant layers, the fused layer-and-activation pass, chunked decoding) and internal helpers (masking, loss and
reshaping utilities, the autoregressive decoder's construction state) stay in their modules: import them from there
(e.g. `mgvae_jax.equivariant.EquivariantLinear2to2Parts`) where a pipeline needs them.
"""

from mgvae_jax.autoregressive import AutoregressiveDecoder
from mgvae_jax.clustering import balanced_cut_kl
from mgvae_jax.clustering import Clustering
from mgvae_jax.clustering import clustering_from_ids
from mgvae_jax.clustering import coarsen
from mgvae_jax.clustering import gumbel_temperature
from mgvae_jax.clustering import LearnedClustering
from mgvae_jax.clustering import straight_through_assignment
from mgvae_jax.decoders import dot_product_logits
from mgvae_jax.decoders import DotProductDecoder
from mgvae_jax.decoders import GraphDecoder
from mgvae_jax.decoders import outer_product_features
from mgvae_jax.decoders import SecondOrderDecoder
from mgvae_jax.distributions import diagonal_covariance
from mgvae_jax.distributions import factor_covariance
from mgvae_jax.distributions import free_matching
from mgvae_jax.distributions import full_covariance
from mgvae_jax.distributions import gaussian_kl
from mgvae_jax.distributions import hungarian_matching
from mgvae_jax.distributions import LearnablePrior
from mgvae_jax.distributions import prior_kl
from mgvae_jax.distributions import sample_diagonal
from mgvae_jax.distributions import sample_full
from mgvae_jax.distributions import standard_normal_kl_diagonal
from mgvae_jax.equivariant import basis_1to1
from mgvae_jax.equivariant import basis_1to2
from mgvae_jax.equivariant import basis_2to1
from mgvae_jax.equivariant import basis_2to2
from mgvae_jax.equivariant import contract_linear
from mgvae_jax.equivariant import contract_to_first_order
from mgvae_jax.equivariant import EquivariantLinear1to1
from mgvae_jax.equivariant import EquivariantLinear1to2
from mgvae_jax.equivariant import EquivariantLinear2to1
from mgvae_jax.equivariant import EquivariantLinear2to2
from mgvae_jax.equivariant import FirstOrderMPNN
from mgvae_jax.equivariant import linear_1to1
from mgvae_jax.equivariant import linear_1to2
from mgvae_jax.equivariant import linear_2to1
from mgvae_jax.equivariant import linear_2to2
from mgvae_jax.equivariant import mean_aggregate
from mgvae_jax.equivariant import promote_to_second_order
from mgvae_jax.equivariant import SecondOrderLayer
from mgvae_jax.equivariant import tensor_product_contractions
from mgvae_jax.fixed_clustering import feature_kmeans_clustering
from mgvae_jax.fixed_clustering import fixed_hierarchy
from mgvae_jax.fixed_clustering import grid_clustering
from mgvae_jax.fixed_clustering import kmeans
from mgvae_jax.fixed_clustering import quadtree_levels
from mgvae_jax.fixed_clustering import spectral_clustering
from mgvae_jax.fixed_clustering import spectral_embedding
from mgvae_jax.graphs import bucket_size
from mgvae_jax.graphs import from_arrays
from mgvae_jax.graphs import from_graphs_tuple
from mgvae_jax.graphs import from_networkx
from mgvae_jax.graphs import GraphBatch
from mgvae_jax.graphs import pad_batch
from mgvae_jax.graphs import permute_nodes
from mgvae_jax.graphs import size_buckets
from mgvae_jax.graphs import to_graphs_tuple
from mgvae_jax.hierarchy import batched_cluster_slots
from mgvae_jax.hierarchy import cluster_slots
from mgvae_jax.hierarchy import ClusterSlots
from mgvae_jax.hierarchy import gather_edges
from mgvae_jax.hierarchy import gather_nodes
from mgvae_jax.hierarchy import scatter_edges
from mgvae_jax.hierarchy import scatter_nodes
from mgvae_jax.image_graphs import GridGraph
from mgvae_jax.image_graphs import image_pyramid
from mgvae_jax.image_graphs import images_to_graphs_tuple
from mgvae_jax.image_graphs import quadtree_graphs
from mgvae_jax.image_mgvae import ImageMGVAE
from mgvae_jax.image_mgvae import ImageMGVAEConfig
from mgvae_jax.mgn import LevelOutput
from mgvae_jax.mgn import LocalEncoder
from mgvae_jax.mgn import MGN
from mgvae_jax.mgn import mgn_loss
from mgvae_jax.mgn import MGNConfig
from mgvae_jax.mgn import MGNOutput
from mgvae_jax.mgn import MGNPredictor
from mgvae_jax.mgn import reconstruction_loss
from mgvae_jax.testing import assert_permutation_equivariant
from mgvae_jax.vae import check_finite
from mgvae_jax.vae import edge_pos_weight
from mgvae_jax.vae import interpolate
from mgvae_jax.vae import MGVAE
from mgvae_jax.vae import MGVAEConfig
from mgvae_jax.vae import MGVAEOutput

__version__ = "0.1.0"

__all__ = [
    # Padded dense graph batches and the jraph conversions (graphs.py).
    "GraphBatch",
    "from_arrays",
    "from_networkx",
    "from_graphs_tuple",
    "to_graphs_tuple",
    "pad_batch",
    "permute_nodes",
    "size_buckets",
    "bucket_size",
    # S_n-equivariant contractions, bases, linear maps and layers (equivariant.py, sections 3.2-3.3).
    "promote_to_second_order",
    "tensor_product_contractions",
    "contract_linear",
    "contract_to_first_order",
    "mean_aggregate",
    "basis_2to2",
    "basis_2to1",
    "basis_1to2",
    "basis_1to1",
    "linear_2to2",
    "linear_2to1",
    "linear_1to2",
    "linear_1to1",
    "EquivariantLinear2to2",
    "EquivariantLinear2to1",
    "EquivariantLinear1to2",
    "EquivariantLinear1to1",
    "SecondOrderLayer",
    "FirstOrderMPNN",
    # Learning to cluster and coarsening (clustering.py, Definitions 3.2-3.4); fixed clusterings (fixed_clustering.py).
    "Clustering",
    "LearnedClustering",
    "clustering_from_ids",
    "straight_through_assignment",
    "gumbel_temperature",
    "balanced_cut_kl",
    "coarsen",
    "spectral_clustering",
    "spectral_embedding",
    "kmeans",
    "feature_kmeans_clustering",
    "fixed_hierarchy",
    "grid_clustering",
    "quadtree_levels",
    # The per-level padded cluster representation (hierarchy.py).
    "ClusterSlots",
    "cluster_slots",
    "batched_cluster_slots",
    "gather_nodes",
    "gather_edges",
    "scatter_nodes",
    "scatter_edges",
    # The multiresolution graph network (mgn.py).
    "MGNConfig",
    "MGN",
    "MGNOutput",
    "LevelOutput",
    "LocalEncoder",
    "MGNPredictor",
    "mgn_loss",
    "reconstruction_loss",
    # Gaussian latents: covariances, sampling, KL, matching, the learnable prior (distributions.py).
    "full_covariance",
    "diagonal_covariance",
    "factor_covariance",
    "sample_full",
    "sample_diagonal",
    "gaussian_kl",
    "standard_normal_kl_diagonal",
    "prior_kl",
    "free_matching",
    "hungarian_matching",
    "LearnablePrior",
    # Decoders from node latents to graphs (decoders.py, autoregressive.py).
    "dot_product_logits",
    "outer_product_features",
    "DotProductDecoder",
    "SecondOrderDecoder",
    "GraphDecoder",
    "AutoregressiveDecoder",
    # MGVAE (vae.py, section 4).
    "MGVAEConfig",
    "MGVAE",
    "MGVAEOutput",
    "edge_pos_weight",
    "check_finite",
    "interpolate",
    # Images as graphs and the image MGVAE (image_graphs.py, image_mgvae.py, section 5.4).
    "GridGraph",
    "quadtree_graphs",
    "image_pyramid",
    "images_to_graphs_tuple",
    "ImageMGVAEConfig",
    "ImageMGVAE",
    # Testing other pipelines' layers (testing.py).
    "assert_permutation_equivariant",
]
