"""mgvae_jax: Multiresolution Equivariant Graph Variational Autoencoder (Hy & Kondor, 2023) in JAX/Flax.

The public face: what other JAX pipelines import and compose. Per-graph pure functions act on one padded graph and
are batched with `jax.vmap`; linen modules own parameters and batch internally.
"""

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
from mgvae_jax.graphs import bucket_size
from mgvae_jax.graphs import from_arrays
from mgvae_jax.graphs import from_graphs_tuple
from mgvae_jax.graphs import from_networkx
from mgvae_jax.graphs import GraphBatch
from mgvae_jax.graphs import pad_batch
from mgvae_jax.graphs import permute_nodes
from mgvae_jax.graphs import size_buckets
from mgvae_jax.graphs import to_graphs_tuple

__version__ = "0.1.0"
