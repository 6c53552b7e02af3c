"""Per-level padded cluster representation: the nodes of each cluster gathered into static slots.

For one graph of N slots clustered into K clusters with capacity C per cluster:

  index [K, C] int32   node slot held by each cluster slot; N marks an empty slot
  mask  [K, C] bool    True where a cluster slot holds a real node
  overflow [N] bool    real nodes that did not fit (their cluster had more than C members)

Members are placed by a stable sort on cluster id; every shape is static, so the whole hierarchy jits and vmaps. With
C = N (exact, the default) nothing can overflow. With a smaller C (large graphs), a cluster keeps its C members of
highest `priority` and the rest overflow. The priority must be an equivariant node score (the MGN passes each node's
clustering logit, or a fixed projection of its features), so which nodes overflow does not depend on slot order;
only nodes with equal scores fall back to slot order. Overflowing nodes are reported in `overflow` and
`num_overflow`, never silently dropped: callers log or raise on them. Induced subgraph blocks are gathered as
[K, C, C, E] and results scattered back to [N, ...].
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jnp.ndarray


@flax.struct.dataclass
class ClusterSlots:
  """Static-shape cluster membership of one graph (add a leading [B] to every field for a batch)."""

  index: Array  # [K, C] int32, N on empty slots
  mask: Array  # [K, C] bool
  overflow: Array  # [N] bool

  @property
  def num_overflow(self) -> Array:
    return self.overflow.sum(-1).astype(jnp.int32)


def cluster_slots(ids: Array, mask: Array, num_clusters: int, capacity: int | None = None,
                  priority: Array | None = None) -> ClusterSlots:
  """Gather slots for ids [N] (K or out of range on padded / unassigned nodes), mask [N] -> ClusterSlots.

  priority [N] (optional): within a cluster, members are placed by decreasing priority (ties in slot order), so with
  a bounded capacity the lowest-priority members overflow. None: slot order (equivariant only when nothing
  overflows).
  """
  n = ids.shape[0]
  k = num_clusters
  c = n if capacity is None else int(capacity)
  if c < 1:
    raise ValueError(f"cluster_slots: capacity must be >= 1, got {c}")
  key = jnp.where(mask & (ids >= 0) & (ids < k), ids, k).astype(jnp.int32)  # [N], K = no cluster
  score = jnp.zeros((n,), jnp.float32) if priority is None else jax.lax.stop_gradient(priority).astype(jnp.float32)
  order = jnp.lexsort((-score, key))  # [N] by cluster, then decreasing priority, then slot (lexsort is stable)
  sorted_key = key[order]
  counts = jnp.bincount(key, length=k + 1)  # [K + 1]
  starts = jnp.cumsum(counts) - counts  # [K + 1]
  rank = jnp.arange(n) - starts[sorted_key]  # position within its cluster
  assigned = sorted_key < k
  fits = assigned & (rank < c)
  rows = jnp.where(fits, sorted_key, k)  # row K is out of bounds: dropped
  cols = jnp.where(fits, rank, 0)
  index = jnp.full((k, c), n, jnp.int32).at[rows, cols].set(order.astype(jnp.int32), mode="drop")
  overflow = jnp.zeros((n,), bool).at[order].set(assigned & ~fits)
  return ClusterSlots(index=index, mask=index < n, overflow=overflow)


def gather_nodes(x: Array, slots: ClusterSlots) -> Array:
  """x [N, ...] -> [K, C, ...], zero on empty slots."""
  return x.at[slots.index].get(mode="fill", fill_value=0)


def gather_edges(e: Array, slots: ClusterSlots) -> Array:
  """Induced subgraph blocks: e [N, N, ...] -> [K, C, C, ...], zero where either slot is empty."""
  return e.at[slots.index[:, :, None], slots.index[:, None, :]].get(mode="fill", fill_value=0)


def scatter_nodes(y: Array, slots: ClusterSlots, num_nodes: int) -> Array:
  """y [K, C, ...] -> [N, ...]; nodes in no slot (padded, overflowed) get 0."""
  out = jnp.zeros((num_nodes,) + y.shape[2:], y.dtype)
  return out.at[slots.index].set(y, mode="drop")


def scatter_edges(y: Array, slots: ClusterSlots, num_nodes: int) -> Array:
  """y [K, C, C, ...] -> block-diagonal [N, N, ...]; pairs across clusters get 0."""
  out = jnp.zeros((num_nodes, num_nodes) + y.shape[3:], y.dtype)
  return out.at[slots.index[:, :, None], slots.index[:, None, :]].set(y, mode="drop")


def flatten_clusters(x: Array) -> Array:
  """[B, K, C, ...] -> [B * K, C, ...]: each cluster becomes one small graph of a batch (local nets run on it)."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unflatten_clusters(x: Array, num_graphs: int) -> Array:
  """[B * K, C, ...] -> [B, K, C, ...]."""
  return x.reshape((num_graphs, x.shape[0] // num_graphs) + x.shape[1:])


def batched_cluster_slots(ids: Array, mask: Array, num_clusters: int, capacity: int | None = None,
                          priority: Array | None = None) -> ClusterSlots:
  """cluster_slots over a batch: ids, mask, priority [B, N] -> ClusterSlots with [B, ...] fields."""
  return jax.vmap(lambda i, m, p: cluster_slots(i, m, num_clusters, capacity, p))(ids, mask, priority)
