"""Images as grid graphs and their quadtree hierarchy (paper section 5.4).

An H x W image is a graph of H * W pixel nodes (row-major: pixel (i, j) is node i * W + j), each joined to its 4
neighbours, with the pixel's colour as node feature. Levels are coarsened with the fixed 2 x 2 block clustering of
`fixed_clustering.quadtree_levels`, through the same `clustering.coarsen` (Definition 3.2) as learned clusterings:
the coarse graph of a 4-neighbour grid is again a 4-neighbour grid (weight 2 between adjacent blocks, 4 inner edges
per block on the diagonal), which `quadtree_graphs` checks rather than assumes.

Graphs are static numpy edge lists (`GridGraph`), used as constants inside jit: message passing is a gather over
`senders` and a `segment_sum` onto `receivers`, O(E) rather than the O(N^2) of a dense 1024 x 1024 adjacency.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from mgvae_jax import clustering as clustering_lib
from mgvae_jax import fixed_clustering

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class GridGraph:
  """One level's grid graph: static numpy arrays (hashable by identity, so they can close over jitted code)."""
  height: int
  width: int
  senders: np.ndarray  # [E] int32, both directions of every undirected edge
  receivers: np.ndarray  # [E] int32
  weights: np.ndarray  # [E] float32 edge weights (the coarsened adjacency's entries)

  @property
  def num_nodes(self) -> int:
    return self.height * self.width

  def adjacency(self) -> np.ndarray:
    """The dense [N, N] adjacency (off-diagonal weights; for tests and small graphs)."""
    a = np.zeros((self.num_nodes, self.num_nodes), np.float32)
    a[self.receivers, self.senders] = self.weights
    return a


def grid_adjacency(height: int, width: int) -> np.ndarray:
  """The [H*W, H*W] 0/1 adjacency of the 4-neighbour grid graph (row-major nodes, no self-loops)."""
  n = height * width
  a = np.zeros((n, n), np.float32)
  idx = np.arange(n).reshape(height, width)
  for u, v in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):  # horizontal, vertical neighbours
    a[u.ravel(), v.ravel()] = 1.0
    a[v.ravel(), u.ravel()] = 1.0
  return a


def _edge_list(adjacency: np.ndarray, height: int, width: int) -> GridGraph:
  off = adjacency * (1.0 - np.eye(adjacency.shape[0], dtype=adjacency.dtype))  # self-loops: the node's own term
  receivers, senders = np.nonzero(off)
  return GridGraph(height, width, senders.astype(np.int32), receivers.astype(np.int32),
                   off[receivers, senders].astype(np.float32))


@functools.lru_cache(maxsize=None)
def quadtree_graphs(size: int, levels: int) -> tuple[tuple[GridGraph, ...], tuple[np.ndarray, ...]]:
  """The grid graphs of a size x size image and of its `levels - 1` quadtree coarsenings, finest first.

  Returns (graphs, ids): graphs[l] is the (size / 2**l)^2-node grid of level l, and ids[l] ([N_l] int32) maps level
  l's nodes to level l + 1's (`levels - 1` maps). Each coarse adjacency is `clustering.coarsen` of the finer one;
  its support is asserted to be the coarse 4-neighbour grid. Cached, and computed eagerly even when first called
  while tracing (a model's setup inside jit): the results are static constants.
  """
  if levels < 1:
    raise ValueError(f"quadtree_graphs: levels must be >= 1, got {levels}")
  ids = fixed_clustering.quadtree_levels(size, levels - 1)
  a = grid_adjacency(size, size)
  graphs = [_edge_list(a, size, size)]
  with jax.ensure_compile_time_eval():
    for l, level_ids in enumerate(ids):
      side = size >> (l + 1)
      a = _coarsen(a, level_ids, side)
      graphs.append(_coarse_graph(a, side, l + 1))
  return tuple(graphs), tuple(ids)


def _coarsen(a: np.ndarray, ids: np.ndarray, side: int) -> np.ndarray:
  mask = jnp.ones(a.shape[0], bool)
  clus = clustering_lib.clustering_from_ids(jnp.asarray(ids), mask, side * side)
  return np.asarray(clustering_lib.coarsen(jnp.asarray(a), clus, mask))


def _coarse_graph(a: np.ndarray, side: int, level: int) -> GridGraph:
  support = (a * (1.0 - np.eye(side * side)) > 0).astype(np.float32)
  if not np.array_equal(support, grid_adjacency(side, side)):
    raise AssertionError(f"coarsened level {level} is not the {side} x {side} grid graph")
  return _edge_list(a, side, side)


def pool_mean(x: Array, ids: np.ndarray, num_clusters: int) -> Array:
  """Mean of each cluster's node features: x [N, C], ids [N] -> [K, C]. One example; vmap over a batch.

  On a quadtree level this is 2 x 2 average pooling of the image, the "zoomed-out version" of section 5.4.
  """
  sums = jax.ops.segment_sum(x, jnp.asarray(ids), num_segments=num_clusters)
  counts = jax.ops.segment_sum(jnp.ones_like(x[:, :1]), jnp.asarray(ids), num_segments=num_clusters)
  return sums / jnp.maximum(counts, 1.0)


def image_pyramid(images: Array, levels: int) -> list[Array]:
  """[B, S, S] images -> `levels` images [B, S / 2**l, S / 2**l], each the quadtree mean of the one before."""
  size = images.shape[-1]
  out = [images]
  for l, ids in enumerate(fixed_clustering.quadtree_levels(size, levels - 1)):
    side = size >> (l + 1)
    flat = out[-1].reshape(images.shape[0], -1, 1)  # [B, N_l, 1]
    coarse = jax.vmap(lambda x, ids=ids, k=side * side: pool_mean(x, ids, k))(flat)
    out.append(coarse.reshape(images.shape[0], side, side))
  return out


def upsample_nearest(images: Array, size: int) -> Array:
  """[B, s, s] -> [B, size, size], each pixel repeated (size / s)^2 times: the inverse map of the quadtree."""
  factor = size // images.shape[-1]
  if factor * images.shape[-1] != size:
    raise ValueError(f"upsample_nearest: {images.shape[-1]} does not divide {size}")
  return jnp.repeat(jnp.repeat(images, factor, axis=-2), factor, axis=-1)


def images_to_graphs_tuple(images: np.ndarray) -> jraph.GraphsTuple:
  """[B, H, W] (or [B, H, W, C]) images -> one jraph.GraphsTuple of B grid graphs (nodes: pixel colours [.., C])."""
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"images_to_graphs_tuple: expected [B, H, W] or [B, H, W, C], got shape {images.shape}")
  b, h, w, c = images.shape
  g = _edge_list(grid_adjacency(h, w), h, w)
  offsets = (np.arange(b) * h * w)[:, None]
  return jraph.GraphsTuple(
      nodes=images.reshape(b * h * w, c), edges=np.tile(g.weights, b)[:, None],
      senders=(g.senders[None] + offsets).reshape(-1), receivers=(g.receivers[None] + offsets).reshape(-1),
      n_node=np.full(b, h * w, np.int32), n_edge=np.full(b, g.senders.size, np.int32), globals=None)
