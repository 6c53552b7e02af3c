"""mgvae_jax: Multiresolution Equivariant Graph Variational Autoencoder (Hy & Kondor, 2023) in JAX/Flax.

The public face: what other JAX pipelines import and compose. Per-graph pure functions act on one padded graph and
are batched with `jax.vmap`; linen modules own parameters and batch internally.
"""

from mgvae_jax.clustering import balanced_cut_kl
from mgvae_jax.clustering import Clustering
from mgvae_jax.clustering import clustering_from_ids
from mgvae_jax.clustering import coarsen
from mgvae_jax.clustering import gumbel_temperature
from mgvae_jax.clustering import LearnedClustering
from mgvae_jax.clustering import straight_through_assignment
from mgvae_jax.decoders import dot_product_logits
from mgvae_jax.decoders import DotProductDecoder
from mgvae_jax.decoders import outer_product_features
from mgvae_jax.decoders import SecondOrderDecoder
from mgvae_jax.distributions import diagonal_covariance
from mgvae_jax.distributions import factor_covariance
from mgvae_jax.distributions import free_matching
from mgvae_jax.distributions import full_covariance
from mgvae_jax.distributions import gaussian_kl
from mgvae_jax.distributions import hungarian_matching
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
from mgvae_jax.mgn import LocalEncoder
from mgvae_jax.mgn import masked_bce
from mgvae_jax.mgn import masked_mean
from mgvae_jax.mgn import MGN
from mgvae_jax.mgn import mgn_loss
from mgvae_jax.mgn import MGNConfig
from mgvae_jax.mgn import MGNOutput
from mgvae_jax.mgn import MGNPredictor
from mgvae_jax.mgn import reconstruction_loss
from mgvae_jax.vae import check_finite
from mgvae_jax.vae import edge_pos_weight
from mgvae_jax.vae import GraphDecoder
from mgvae_jax.vae import interpolate
from mgvae_jax.vae import LearnablePrior
from mgvae_jax.vae import MGVAE
from mgvae_jax.vae import MGVAEConfig
from mgvae_jax.vae import MGVAEOutput

__version__ = "0.1.0"
