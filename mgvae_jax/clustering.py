"""Learning to cluster, the balanced-cut loss and coarsening (paper section 3.4, Definitions 3.2 and 3.11-3.13).

A clustering of one graph padded to N slots into K clusters is carried as

  assignment  [N, K] float   one-hot rows on real nodes, zero rows on padded nodes (Pi of Definition 3.11);
                             when learned, hard in the forward pass with straight-through gradients
  ids         [N] int32      cluster index of each real node; K (no cluster) on padded nodes
  coarse_mask [K] bool       non-empty clusters: the real nodes of the coarse graph

Learned clusterings (here) and fixed ones (`fixed_clustering.py`) return the same `Clustering`, so either plugs into
the hierarchy. Functions act on one graph; the `LearnedClustering` module batches with vmap.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from mgvae_jax import equivariant

Array = jnp.ndarray


@flax.struct.dataclass
class Clustering:
  """Hard cluster assignment of one graph (or a batch: add a leading [B] to every field)."""

  assignment: Array  # [N, K] float
  ids: Array  # [N] int32, K on padded nodes
  coarse_mask: Array  # [K] bool

  @property
  def num_clusters(self) -> int:
    return self.assignment.shape[-1]


def clustering_from_ids(ids: Array, mask: Array, num_clusters: int, dtype=jnp.float32) -> Clustering:
  """A Clustering from integer ids [N] (values outside [0, K) or on padded nodes mean: no cluster)."""
  ids = jnp.where(mask & (ids >= 0) & (ids < num_clusters), ids, num_clusters).astype(jnp.int32)
  assignment = jax.nn.one_hot(ids, num_clusters, dtype=dtype)  # id K -> zero row
  return Clustering(assignment=assignment, ids=ids, coarse_mask=assignment.sum(0) > 0)


def straight_through_assignment(logits: Array, mask: Array, noise: Optional[Array] = None,
                                temperature: float | Array = 1.0) -> Clustering:
  """Gumbel-max hard assignment with straight-through gradients (or argmax when noise is None).

  Forward: one_hot(argmax_k(logits + g)); backward: the gradient of softmax((logits + g) / temperature). Padded
  rows are zero in both. logits [N, K], noise [N, K] (standard Gumbel samples) or None.
  """
  num_clusters = logits.shape[-1]
  perturbed = logits if noise is None else logits + noise
  ids = jnp.argmax(perturbed, axis=-1)
  hard = jax.nn.one_hot(ids, num_clusters, dtype=logits.dtype)
  soft = jax.nn.softmax(perturbed / temperature, axis=-1)
  m = mask[:, None].astype(logits.dtype)
  assignment = (soft + jax.lax.stop_gradient(hard - soft)) * m  # value: hard; gradient: soft
  ids = jnp.where(mask, ids, num_clusters).astype(jnp.int32)
  return Clustering(assignment=assignment, ids=ids, coarse_mask=jax.lax.stop_gradient(hard * m).sum(0) > 0)


def argmax_assignment(logits: Array, mask: Array, temperature: float | Array = 1.0) -> Array:
  """The noise-free clustering of learned logits [B, N, K] -> [B, N, K]: the argmax forward (what evaluation encodes
  with), the gradient of softmax(logits / temperature) backward; padded rows zero."""
  return jax.vmap(lambda x, m: straight_through_assignment(x, m, None, temperature).assignment)(logits, mask)


def gumbel_temperature(step: Array, start: float = 1.0, end: float = 0.1, decay_steps: int = 10_000) -> Array:
  """Exponential annealing from `start` to `end` over `decay_steps` steps, constant after."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(decay_steps, 1), 0.0, 1.0)
  return start * (end / start) ** frac


def balanced_cut_kl(assignment: Array, mask: Array) -> Array:
  """Eq. 2: KL(P || uniform) with P_k = |V_k| / |V| over real nodes; differentiable through `assignment`.

  assignment [N, K] -> scalar. 0 for an exactly balanced partition, log K when every node is in one cluster.
  """
  k = assignment.shape[-1]
  sizes = (assignment * mask[:, None].astype(assignment.dtype)).sum(0)  # [K]
  p = sizes / equivariant.num_real(mask, assignment.dtype)
  safe = jnp.where(p > 0, p, 1.0)
  return jnp.sum(jnp.where(p > 0, p * (jnp.log(safe) + jnp.log(float(k))), 0.0))


def edge_cut(assignment: Array, adjacency: Array, mask: Array) -> Array:
  """The share of the graph's edge weight that runs between clusters: 1 - sum_ij A_ij pi_i . pi_j / sum_ij A_ij.

  assignment [N, K] (hard, or straight-through: the gradient then moves a node towards its neighbours' clusters),
  adjacency [N, N] (weights >= 0, off-diagonal read), mask [N] -> scalar in [0, 1]; 0 when every edge stays inside
  a cluster or the graph has no edge. Eq. 2 balances cluster sizes only; this term makes clusters follow the edges.
  """
  n = adjacency.shape[0]
  pm = equivariant.pair_mask(mask) & ~jnp.eye(n, dtype=bool)
  a = jnp.where(pm, adjacency, 0.0).astype(assignment.dtype)
  pi = assignment * mask[:, None].astype(assignment.dtype)
  total = a.sum()
  inside = jnp.sum(pi * (a @ pi))
  return jnp.where(total > 0, 1.0 - inside / jnp.where(total > 0, total, 1.0), 0.0)


def coarsen(adjacency: Array, clustering: Clustering, mask: Array) -> Array:
  """Definition 3.2: the K x K weighted adjacency of the coarse graph, from Pi^T A Pi.

  Off the diagonal, the number (total weight) of edges between clusters k and k'; on it, the edges inside cluster k,
  i.e. half the in-cluster sum of A. adjacency [N, N] -> [K, K] (zero rows/columns for empty clusters).
  """
  pi = clustering.assignment  # [N, K]
  a = adjacency.astype(pi.dtype) * equivariant.pair_mask(mask).astype(pi.dtype)
  coarse = pi.T @ a @ pi  # [K, K]
  k = coarse.shape[0]
  return coarse * (1.0 - 0.5 * jnp.eye(k, dtype=coarse.dtype))


def node_standardize(x: Array, mask: Array, eps: float = 1e-5) -> Array:
  """Each channel centred and scaled over the real nodes of one graph: [N, C], [N] -> [N, C] (0 on padded nodes)."""
  m = mask[:, None].astype(x.dtype)
  n = equivariant.num_real(mask, x.dtype)
  mean = (x * m).sum(0) / n  # [C]
  var = (((x - mean) * m) ** 2).sum(0) / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * m


class LearnedClustering(nn.Module):
  """c^(l) of Definition 3.4: an equivariant GNN gives logits [B, N, K]; Gumbel-max straight-through when training,
  argmax when not (deterministic). Gumbel noise comes from the `gumbel` rng stream unless passed in (tests pass a
  permuted copy to check equivariance).

  order=1: `layers` FirstOrderMPNN steps on node features; order=2: SecondOrderLayer steps on the promoted
  second-order tensor, contracted to first order. A final per-node Dense gives the K logits.

  norm=True standardises each channel over the graph's real nodes before that Dense (`node_standardize`, GraphNorm
  style; equivariant, its statistics are invariant). Node features on a large graph share a strong common component
  (Cora's GCN outputs; coarse levels' pooled sums, whose scale grows with cluster size), so without it the logits
  barely vary across nodes, the argmax puts nearly every node in one cluster, and the saturated softmax gives the
  balanced cut no gradient to undo it.
  """
  num_clusters: int
  order: int = 1
  features: int = 32
  layers: int = 2
  activation: Callable[[Array], Array] = nn.relu
  norm: bool = False
  noise_scale: float = 1.0  # Gumbel noise multiplier when training (0: argmax, straight-through gradients only)

  @nn.compact
  def __call__(self, nodes: Array, edges: Array, mask: Array, *, train: bool, temperature: float | Array = 1.0,
               noise: Optional[Array] = None) -> tuple[Clustering, Array]:
    """nodes [B, N, F], edges [B, N, N, E], mask [B, N] -> (Clustering with [B, ...] fields, logits [B, N, K])."""
    if self.order not in (1, 2):
      raise ValueError(f"LearnedClustering.order must be 1 or 2, got {self.order}")
    a = edges.sum(-1)  # [B, N, N]
    if self.order == 1:
      h = nn.Dense(self.features)(nodes) * mask[..., None]
      for _ in range(self.layers):
        h = h + equivariant.FirstOrderMPNN(self.features, self.activation)(a, h, mask)
    else:
      h2 = jax.vmap(equivariant.promote_to_second_order)(nodes, edges, mask)  # [B, N, N, F + E]
      for _ in range(self.layers):
        h2 = equivariant.SecondOrderLayer(self.features, activation=self.activation, self_term=True)(a, h2, mask)
      h = jax.vmap(equivariant.contract_to_first_order)(h2, mask)  # [B, N, 2 features]
    if self.norm:
      h = jax.vmap(node_standardize)(h, mask)
      h = h * self.param("norm_scale", nn.initializers.ones, (h.shape[-1],)) + self.param(
          "norm_bias", nn.initializers.zeros, (h.shape[-1],))
    logits = nn.Dense(self.num_clusters)(h)  # [B, N, K]
    if train and noise is None:
      noise = self.noise_scale * jax.random.gumbel(self.make_rng("gumbel"), logits.shape, logits.dtype)
    fn = functools.partial(straight_through_assignment, temperature=temperature)
    clustering = jax.vmap(fn)(logits, mask, noise if train else None)
    return clustering, logits
