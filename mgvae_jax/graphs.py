"""Padded dense graph batches: the one graph type every level of the hierarchy uses.

A batch of B graphs padded to N node slots holds

  nodes  [B, N, F]     node features (zero on padded slots)
  edges  [B, N, N, E]  edge features (zero on padded rows/columns; no "no edge" channel)
  mask   [B, N]        True on real nodes

The weighted adjacency is derived, `adjacency = edges.sum(-1)`: for one-hot bond types it is the 0/1 adjacency, for a
single weighted channel (coarse levels) it is the weight. Real nodes need not come first: every operation in this
library masks by `mask`, so a permutation of all N slots (padding included) is a valid input.

The constructors run on the host (numpy) and validate what they are given; what they return is a pytree of jnp arrays
that jit, vmap and grad treat like any other. Static shapes come from `bucket_size`, which rounds a size up to one of
a few buckets so a jitted step compiles once per bucket, not once per batch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import jraph
import numpy as np


@flax.struct.dataclass
class GraphBatch:
  """A batch of graphs padded to a static number of node slots."""

  nodes: jnp.ndarray  # [B, N, F]
  edges: jnp.ndarray  # [B, N, N, E]
  mask: jnp.ndarray  # [B, N] bool

  @property
  def num_graphs(self) -> int:
    return self.mask.shape[0]

  @property
  def pad_size(self) -> int:
    return self.mask.shape[1]

  @property
  def adjacency(self) -> jnp.ndarray:
    """Weighted adjacency, summed over edge channels.  # [B, N, N]"""
    return self.edges.sum(-1)

  @property
  def n_node(self) -> jnp.ndarray:
    """Real node count per graph.  # [B] int32"""
    return self.mask.sum(-1).astype(jnp.int32)

  def real_node_mask(self, no_node: int) -> jnp.ndarray:
    """True on slots holding a real node: inside the mask and not of the "no node" type, whose one-hot channel of
    `nodes` is `no_node` (molecules pad with a "no atom" type).  # [B, N] bool"""
    return self.mask & (self.nodes[..., no_node] < 0.5)

  @property
  def pair_mask(self) -> jnp.ndarray:
    """True where both endpoints are real nodes.  # [B, N, N]"""
    return self.mask[:, :, None] & self.mask[:, None, :]


# ---------------------------------------------------------------------------------------------------------------------
# Static sizes.


def size_buckets(max_size: int, multiple: int = 8, growth: float = 1.5) -> tuple[int, ...]:
  """A short increasing list of pad sizes ending at `max_size` (rounded up to `multiple`).

  Consecutive buckets grow geometrically, so a dataset whose graphs range over [1, max_size] compiles
  O(log max_size) programs while wasting at most a factor `growth` in padding.
  """
  if max_size < 1:
    raise ValueError(f"size_buckets: max_size must be >= 1, got {max_size}")
  if multiple < 1 or growth <= 1.0:
    raise ValueError(f"size_buckets: need multiple >= 1 and growth > 1, got {multiple}, {growth}")
  top = int(math.ceil(max_size / multiple) * multiple)
  buckets, b = [], multiple
  while b < top:
    buckets.append(b)
    b = int(math.ceil(b * growth / multiple) * multiple)
  buckets.append(top)
  return tuple(buckets)


def bucket_size(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `n` nodes (or graphs)."""
  for b in sorted(buckets):
    if n <= b:
      return int(b)
  raise ValueError(f"bucket_size: {n} is larger than the largest bucket {max(buckets)}")


# ---------------------------------------------------------------------------------------------------------------------
# Constructors (host side, validating).


def _check_finite(name: str, index: int, x: np.ndarray) -> None:
  if not np.all(np.isfinite(x)):
    bad = np.argwhere(~np.isfinite(x))[0].tolist()
    raise ValueError(f"graph {index}: {name} contains a non-finite value (first at {bad}); features must be finite")


def from_arrays(
    adjacencies: Sequence[np.ndarray],
    node_features: Optional[Sequence[np.ndarray]] = None,
    edge_features: Optional[Sequence[np.ndarray]] = None,
    pad_size: Optional[int] = None,
    num_graphs: Optional[int] = None,
    require_symmetric: bool = True,
    dtype: Any = jnp.float32,
) -> GraphBatch:
  """Build a padded batch from per-graph numpy arrays.

  Args:
    adjacencies: one [n_i, n_i] (weighted) adjacency per graph. Used as the single edge channel when `edge_features`
      is None; otherwise only its shape and symmetry are checked and the edges come from `edge_features`.
    node_features: one [n_i, F] array per graph; default a single all-ones feature.
    edge_features: one [n_i, n_i, E] array per graph (no "no edge" channel).
    pad_size: N, the static node count; default the largest n_i.
    num_graphs: B, the static batch size; extra graphs are empty (all-False mask). Default len(adjacencies).
    require_symmetric: reject adjacencies / edge features that are not symmetric (undirected graphs).
    dtype: float dtype of nodes and edges.

  Raises:
    ValueError naming the graph index and the problem: mismatched list lengths, non-square adjacency, a graph larger
    than `pad_size`, asymmetric input where symmetry is required, mismatched feature shapes, non-finite values.
  """
  num = len(adjacencies)
  for name, seq in (("node_features", node_features), ("edge_features", edge_features)):
    if seq is not None and len(seq) != num:
      raise ValueError(f"{name} has {len(seq)} entries but adjacencies has {num}; they must be the same length")
  adjs = []
  for i, a in enumerate(adjacencies):
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
      raise ValueError(f"graph {i}: adjacency must be a square [n, n] matrix, got shape {a.shape}")
    _check_finite("adjacency", i, a)
    if require_symmetric and not np.allclose(a, a.T):
      raise ValueError(f"graph {i}: adjacency is not symmetric; undirected graphs need A == A.T "
                       "(pass require_symmetric=False for directed graphs)")
    adjs.append(a)
  sizes = [a.shape[0] for a in adjs]
  n_pad = max(sizes, default=1) if pad_size is None else int(pad_size)
  b_pad = num if num_graphs is None else int(num_graphs)
  if b_pad < num:
    raise ValueError(f"num_graphs={b_pad} is smaller than the {num} graphs given")
  for i, n in enumerate(sizes):
    if n > n_pad:
      raise ValueError(f"graph {i}: has {n} nodes, more than the pad size {n_pad}")

  feat_dim = 1 if node_features is None else None
  if node_features is not None:
    for i, (f, n) in enumerate(zip(node_features, sizes)):
      f = np.asarray(f)
      if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"graph {i}: node features must have shape [{n}, F], got {f.shape}")
      if feat_dim is None:
        feat_dim = f.shape[1]
      elif f.shape[1] != feat_dim:
        raise ValueError(f"graph {i}: node features have {f.shape[1]} channels, graph 0 has {feat_dim}")
      _check_finite("node features", i, f)
    feat_dim = feat_dim if feat_dim is not None else 1
  edge_dim = 1
  if edge_features is not None:
    edge_dim = None
    for i, (e, n) in enumerate(zip(edge_features, sizes)):
      e = np.asarray(e)
      if e.ndim != 3 or e.shape[:2] != (n, n):
        raise ValueError(f"graph {i}: edge features must have shape [{n}, {n}, E], got {e.shape}")
      if edge_dim is None:
        edge_dim = e.shape[2]
      elif e.shape[2] != edge_dim:
        raise ValueError(f"graph {i}: edge features have {e.shape[2]} channels, graph 0 has {edge_dim}")
      _check_finite("edge features", i, e)
      if require_symmetric and not np.allclose(e, e.transpose(1, 0, 2)):
        raise ValueError(f"graph {i}: edge features are not symmetric in their two node axes")
    edge_dim = edge_dim if edge_dim is not None else 1

  nodes = np.zeros((b_pad, n_pad, feat_dim), np.float64)
  edges = np.zeros((b_pad, n_pad, n_pad, edge_dim), np.float64)
  mask = np.zeros((b_pad, n_pad), bool)
  for i, n in enumerate(sizes):
    mask[i, :n] = True
    nodes[i, :n] = 1.0 if node_features is None else np.asarray(node_features[i])
    edges[i, :n, :n] = adjs[i][..., None] if edge_features is None else np.asarray(edge_features[i])
  return GraphBatch(nodes=jnp.asarray(nodes, dtype), edges=jnp.asarray(edges, dtype), mask=jnp.asarray(mask))


def from_networkx(
    graphs: Sequence[Any],
    node_attr: Optional[str] = None,
    edge_attr: Optional[str] = None,
    pad_size: Optional[int] = None,
    num_graphs: Optional[int] = None,
    dtype: Any = jnp.float32,
) -> GraphBatch:
  """Build a padded batch from networkx graphs (undirected or directed).

  Nodes are taken in `graph.nodes` iteration order. `node_attr` names a node attribute holding a feature vector (or a
  scalar); `edge_attr` names an edge attribute used as the edge weight/feature (default weight 1).
  """
  import networkx as nx  # pylint: disable=g-import-not-at-top

  adjs, feats, efeats = [], [] if node_attr else None, [] if edge_attr else None
  for i, g in enumerate(graphs):
    if not isinstance(g, nx.Graph):
      raise ValueError(f"graph {i}: expected a networkx graph, got {type(g).__name__}")
    order = list(g.nodes)
    a = nx.to_numpy_array(g, nodelist=order, weight=None, dtype=np.float64)
    adjs.append(a)
    if node_attr:
      try:
        rows = [np.atleast_1d(np.asarray(g.nodes[v][node_attr], np.float64)) for v in order]
      except KeyError:
        raise ValueError(f"graph {i}: a node has no attribute {node_attr!r}") from None
      feats.append(np.stack(rows) if rows else np.zeros((0, 1)))
    if edge_attr:
      index = {v: k for k, v in enumerate(order)}
      first = next(iter(g.edges(data=True)), None)
      dim = 1 if first is None else np.atleast_1d(first[2].get(edge_attr, 1.0)).shape[0]
      e = np.zeros((len(order), len(order), dim))
      for u, v, data in g.edges(data=True):
        val = np.atleast_1d(np.asarray(data.get(edge_attr, 1.0), np.float64))
        e[index[u], index[v]] = val
        if not g.is_directed():
          e[index[v], index[u]] = val
      efeats.append(e)
  directed = any(g.is_directed() for g in graphs)
  return from_arrays(adjs, feats, efeats, pad_size=pad_size, num_graphs=num_graphs,
                     require_symmetric=not directed, dtype=dtype)


def from_graphs_tuple(
    graph: jraph.GraphsTuple,
    pad_size: Optional[int] = None,
    num_graphs: Optional[int] = None,
    require_symmetric: bool = True,
    dtype: Any = jnp.float32,
) -> GraphBatch:
  """Densify a jraph `GraphsTuple` (one directed edge per (sender, receiver) pair).

  `edges[b, s, r] = edge_features[e]` for each edge e from s to r (features summed where an edge repeats); without
  edge features each edge has weight 1. Undirected graphs must list both directions (as jraph's convention is); a
  graph missing one direction is reported when `require_symmetric` is set.
  """
  n_node = np.asarray(graph.n_node)
  n_edge = np.asarray(graph.n_edge)
  senders, receivers = np.asarray(graph.senders), np.asarray(graph.receivers)
  if n_node.ndim != 1 or n_edge.shape != n_node.shape:
    raise ValueError(f"GraphsTuple: n_node {n_node.shape} and n_edge {n_edge.shape} must be equal 1-D shapes")
  if senders.shape != receivers.shape or senders.shape[0] != n_edge.sum():
    raise ValueError(f"GraphsTuple: {senders.shape[0]} senders, {receivers.shape[0]} receivers, "
                     f"but n_edge sums to {n_edge.sum()}")
  nodes = None if graph.nodes is None else np.asarray(graph.nodes)
  if nodes is not None:
    nodes = nodes.reshape(nodes.shape[0], -1)
    if nodes.shape[0] != n_node.sum():
      raise ValueError(f"GraphsTuple: nodes has {nodes.shape[0]} rows but n_node sums to {n_node.sum()}")
  edges = None if graph.edges is None else np.asarray(graph.edges)
  if edges is not None:
    edges = edges.reshape(edges.shape[0], -1)
    if edges.shape[0] != senders.shape[0]:
      raise ValueError(f"GraphsTuple: edges has {edges.shape[0]} rows but there are {senders.shape[0]} senders")
  node_off = np.concatenate([[0], np.cumsum(n_node)])
  edge_off = np.concatenate([[0], np.cumsum(n_edge)])
  adjs, feats, efeats = [], [] if nodes is not None else None, [] if edges is not None else None
  for i, n in enumerate(n_node):
    s = senders[edge_off[i]:edge_off[i + 1]] - node_off[i]
    r = receivers[edge_off[i]:edge_off[i + 1]] - node_off[i]
    if s.size and (s.min() < 0 or r.min() < 0 or s.max() >= n or r.max() >= n):
      raise ValueError(f"graph {i}: an edge points outside the graph's {n} nodes")
    a = np.zeros((n, n))
    np.add.at(a, (s, r), 1.0)
    adjs.append(a)
    if nodes is not None:
      feats.append(nodes[node_off[i]:node_off[i + 1]])
    if edges is not None:
      e = np.zeros((n, n, edges.shape[1]))
      np.add.at(e, (s, r), edges[edge_off[i]:edge_off[i + 1]])
      efeats.append(e)
  return from_arrays(adjs, feats, efeats, pad_size=pad_size, num_graphs=num_graphs,
                     require_symmetric=require_symmetric, dtype=dtype)


def to_graphs_tuple(batch: GraphBatch) -> jraph.GraphsTuple:
  """Back to a jraph `GraphsTuple` of the real nodes of each graph (numpy arrays, host side).

  An edge is emitted for every ordered pair (s, r) of real nodes with a non-zero edge feature vector, so undirected
  graphs come out with both directions. Empty (all-masked) graphs keep their place with zero nodes.
  """
  nodes = np.asarray(batch.nodes)
  edges = np.asarray(batch.edges)
  mask = np.asarray(batch.mask)
  out_nodes, out_edges, senders, receivers, n_node, n_edge = [], [], [], [], [], []
  offset = 0
  for b in range(mask.shape[0]):
    idx = np.flatnonzero(mask[b])
    sub = edges[b][np.ix_(idx, idx)]  # [n, n, E]
    s, r = np.nonzero(np.any(sub != 0, axis=-1))
    out_nodes.append(nodes[b, idx])
    out_edges.append(sub[s, r])
    senders.append(s + offset)
    receivers.append(r + offset)
    n_node.append(idx.size)
    n_edge.append(s.size)
    offset += idx.size
  return jraph.GraphsTuple(
      nodes=np.concatenate(out_nodes), edges=np.concatenate(out_edges),
      senders=np.concatenate(senders).astype(np.int32), receivers=np.concatenate(receivers).astype(np.int32),
      n_node=np.asarray(n_node, np.int32), n_edge=np.asarray(n_edge, np.int32), globals=None)


def pad_batch(batch: GraphBatch, pad_size: Optional[int] = None, num_graphs: Optional[int] = None) -> GraphBatch:
  """Pad an existing batch to more node slots and/or more (empty) graphs. Works under jit (static sizes)."""
  b, n = batch.mask.shape
  n_new = n if pad_size is None else int(pad_size)
  b_new = b if num_graphs is None else int(num_graphs)
  if n_new < n or b_new < b:
    raise ValueError(f"pad_batch: cannot shrink a batch of [{b}, {n}] to [{b_new}, {n_new}]")
  dn, db = n_new - n, b_new - b
  return GraphBatch(
      nodes=jnp.pad(batch.nodes, ((0, db), (0, dn), (0, 0))),
      edges=jnp.pad(batch.edges, ((0, db), (0, dn), (0, dn), (0, 0))),
      mask=jnp.pad(batch.mask, ((0, db), (0, dn))))


def map_in_chunks(fn: Callable[[GraphBatch], Any], batch: GraphBatch, size: int) -> Any:
  """fn (a jitted function of a batch) over host arrays [G, ...] in chunks of `size` graphs, outputs concatenated
  on their leading axis and trimmed to G. The last chunk is filled with copies of its first graph, so fn compiles
  for one shape only."""
  g = int(batch.mask.shape[0])
  size = min(size, g)
  outs = []
  for start in range(0, g, size):
    chunk = jax.tree_util.tree_map(lambda x: np.asarray(x[start:start + size]), batch)
    real = chunk.mask.shape[0]
    if real < size:
      chunk = jax.tree_util.tree_map(lambda x: np.concatenate([x, np.repeat(x[:1], size - real, 0)]), chunk)
    out = jax.device_get(fn(jax.tree_util.tree_map(jnp.asarray, chunk)))
    outs.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[:real], out))
  return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)


def permute_nodes(batch: GraphBatch, perm: jnp.ndarray) -> GraphBatch:
  """Relabel node slots of every graph: slot i of the result is slot perm[i] of the input. perm: [N] or [B, N]."""
  perm = jnp.broadcast_to(perm, batch.mask.shape)
  take1 = lambda x: jnp.take_along_axis(x, perm.reshape(perm.shape + (1,) * (x.ndim - 2)), axis=1)
  edges = take1(batch.edges)
  edges = jnp.take_along_axis(edges, perm[:, None, :, None], axis=2)
  return GraphBatch(nodes=take1(batch.nodes), edges=edges, mask=take1(batch.mask))
