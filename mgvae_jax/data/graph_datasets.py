"""Generic-graph generation data (paper section 5.2): community-small and ego-small, and their padded batches.

The graphs come from the registry's JSON edge lists (PROVENANCE section 5: GDSS's pickles, nodes relabelled 0..n-1 in
networkx order; built from the pickles when missing). The split is GDSS's: the first 20 % of the list is the test set,
the rest the training set, without shuffling, so train and test never share a graph index (the authors' MGVAE code
evaluated against graphs it had trained on).

Batches follow MGVAE's molecule convention (vae.py): every graph is padded to N slots with "no node" nodes, a node type
of their own, so the model's node head learns the graph size. Node features are the one-hot type [node, no node];
edges are one channel (the adjacency). Decoding keeps the slots typed "node" and the edges above a threshold among
them, then drops isolated nodes, as GDSS's `adjs_to_graphs` does before evaluating.
"""

from __future__ import annotations

import collections
import os
from typing import Optional, Sequence, Union

import networkx as nx
import numpy as np

from mgvae_jax import graphs
from mgvae_jax.data import files
from mgvae_jax.data import registry

PathLike = Union[str, os.PathLike]

DATASETS = ("community_small", "ego_small")
NODE_CLASSES = 2  # type 0: a node; type 1: "no node" (padding slot of the model's fixed-size graph)
TEST_FRACTION = 0.2


def _parse(records, what: str) -> list[nx.Graph]:
  if not isinstance(records, list) or not records:
    raise registry.DataFormatError(f"{what}: expected a non-empty JSON list of graphs")
  out = []
  for k, rec in enumerate(records):
    try:
      n, edges = int(rec["num_nodes"]), rec["edges"]
    except (TypeError, KeyError, ValueError) as e:
      raise registry.DataFormatError(f"{what}: graph {k} needs 'num_nodes' and 'edges' ({e!r})") from None
    if n < 1:
      raise registry.DataFormatError(f"{what}: graph {k} has num_nodes={n}; expected at least 1")
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for e in edges:
      if len(e) != 2 or not all(isinstance(v, int) and 0 <= v < n for v in e) or e[0] == e[1]:
        raise registry.DataFormatError(f"{what}: graph {k} has a bad edge {e!r}; expected two distinct node ids in "
                                       f"0..{n - 1}")
      g.add_edge(*e)
    out.append(g)
  return out


def load_graphs(dataset: str, data_dir: Optional[PathLike] = None, download: bool = True) -> list[nx.Graph]:
  """All graphs of `dataset` in the file's order (nodes 0..n-1)."""
  if dataset not in DATASETS:
    raise ValueError(f"unknown graph dataset {dataset!r}; expected one of {DATASETS}")
  name = f"{dataset}/derived/{dataset}_edgelists.json"
  path = registry.fetch(name, data_dir=data_dir, download=download)
  records = files.read_json(path, "JSON edge lists")
  return _parse(records, str(path))


def split(all_graphs: Sequence[nx.Graph], test_fraction: float = TEST_FRACTION) -> tuple[list, list]:
  """(train, test): the first ceil-free int(test_fraction * G) graphs are the test set (GDSS's protocol)."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  num_test = int(test_fraction * len(all_graphs))
  if num_test < 1 or num_test >= len(all_graphs):
    raise ValueError(f"{len(all_graphs)} graphs cannot be split {1 - test_fraction:.0%}/{test_fraction:.0%}")
  return list(all_graphs[num_test:]), list(all_graphs[:num_test])


NODE_ORDERS = ("given", "bfs")


def bfs_order(g: nx.Graph) -> list:
  """A canonical node order: breadth-first from the highest-degree node, neighbours by decreasing degree.

  Components follow one another, each started at its highest-degree node; ties go to the data's own node order. A
  non-equivariant decoder (the MLP) then sees, e.g., an ego graph's centre in slot 0 instead of anywhere (GraphRNN
  orders by BFS for the same reason).
  """
  position = {v: i for i, v in enumerate(g.nodes)}
  key = lambda v: (-g.degree(v), position[v])
  seen, order = set(), []
  for root in sorted(g.nodes, key=key):
    if root in seen:
      continue
    seen.add(root)
    queue = collections.deque([root])
    while queue:
      v = queue.popleft()
      order.append(v)
      for u in sorted(g.neighbors(v), key=key):
        if u not in seen:
          seen.add(u)
          queue.append(u)
  return order


def to_batch(graph_list: Sequence[nx.Graph], pad_size: int, node_order: str = "given") -> graphs.GraphBatch:
  """Stacked host arrays: nodes [G, N, 2] one-hot (node, no node), edges [G, N, N, 1], mask [G, N] all True.

  node_order: "given" (the data's node order) or "bfs" (`bfs_order`) decides which slot each node takes.
  """
  g_count = len(graph_list)
  if g_count == 0:
    raise ValueError("to_batch: no graphs")
  if node_order not in NODE_ORDERS:
    raise ValueError(f"to_batch: node_order must be one of {NODE_ORDERS}, got {node_order!r}")
  nodes = np.zeros((g_count, pad_size, NODE_CLASSES), np.float32)
  edges = np.zeros((g_count, pad_size, pad_size, 1), np.float32)
  for k, g in enumerate(graph_list):
    n = g.number_of_nodes()
    if n > pad_size:
      raise ValueError(f"graph {k} has {n} nodes, more than the pad size {pad_size}")
    if any(u == v for u, v in g.edges()):
      raise ValueError(f"graph {k} has a self-loop; these data sets have none")
    order = {v: i for i, v in enumerate(bfs_order(g) if node_order == "bfs" else g.nodes)}
    nodes[k, :n, 0] = 1.0
    nodes[k, n:, 1] = 1.0
    for u, v in g.edges():
      edges[k, order[u], order[v], 0] = edges[k, order[v], order[u], 0] = 1.0
  return graphs.GraphBatch(nodes=nodes, edges=edges, mask=np.ones((g_count, pad_size), bool))


def decode(probs: dict, edge_threshold: float = 0.5) -> list[nx.Graph]:
  """Graphs from decoded probabilities {node [G, N, 2], edge [G, N, N]} (MGVAE.decode at the finest level).

  Slots whose most likely type is "node" are the graph's nodes; pairs of them with edge probability above
  `edge_threshold` its edges; isolated nodes are then dropped (GDSS's convention), so a sample may come out empty.
  """
  node, edge = np.asarray(probs["node"]), np.asarray(probs["edge"])
  if node.ndim != 3 or node.shape[-1] != NODE_CLASSES or edge.shape != node.shape[:2] + node.shape[1:2]:
    raise ValueError(f"decode: expected node [G, N, {NODE_CLASSES}] and edge [G, N, N], got {node.shape} and "
                     f"{edge.shape}")
  out = []
  for k in range(node.shape[0]):
    real = np.flatnonzero(node[k].argmax(-1) == 0)
    adj = edge[k][np.ix_(real, real)] > edge_threshold
    adj = np.triu(adj, 1)
    g = nx.Graph()
    g.add_nodes_from(range(len(real)))
    g.add_edges_from(zip(*np.nonzero(adj)))
    g.remove_nodes_from([v for v in list(g.nodes) if g.degree(v) == 0])
    out.append(nx.convert_node_labels_to_integers(g))
  return out
