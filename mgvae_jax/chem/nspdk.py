"""NSPDK features and MMD: the graph-level "NSPDK MMD" that GDSS-era molecule benchmarks report.

The Neighbourhood Subgraph Pairwise Distance Kernel (Costa & De Grave, ICML 2010) represents a labelled graph by the
pairs of rooted neighbourhood subgraphs it contains: for every pair of nodes (v, u) at shortest-path distance D <= d
and every radius R <= r, one feature for the (unordered) pair of radius-R neighbourhoods of v and u at distance D.

This is a dependency-free re-implementation of the discrete Vectorizer of EDeN (github.com/fabriziocosta/EDeN), the
code GDSS's `compute_nspdk_mmd` calls as `vectorize(graphs, complexity=4, discrete=True)`. It follows EDeN exactly:

  * edges become nodes (the "edge-to-vertex" expansion), so bond labels enter the neighbourhoods and a radius R or
    distance D in the molecule is 2R or 2D in the expanded graph;
  * a neighbourhood of radius R is hashed from the sorted (label, degree) hashes of its nodes shell by shell;
  * each (v, u, R, D) adds a pair feature and a "half" (context) feature that ignores v;
  * features are hashed into 2**nbits buckets, each (R, D) block is scaled to unit norm, then the whole vector is;
  * r = d = 4 by default (EDeN's `complexity=4` sets both), with R and D each ranging over 0..4.

It differs only in the hash function: EDeN uses Python's `hash` of label strings, which is salted per process
(PYTHONHASHSEED), so its bucket assignments and hence collisions change run to run. Here labels are hashed with
BLAKE2b and everything else hashes tuples of ints, which Python does not salt, so features are reproducible across
processes. With 2**16 buckets the two agree up to hash collisions. The MMD is the linear-kernel MMD^2 of GDSS,
mean(K_XX) + mean(K_YY) - 2 mean(K_XY), computed exactly as ||mean(X) - mean(Y)||^2 without the Gram matrices.

Molecules become graphs as in GDSS's `mols_to_nx`: node label = atom symbol, edge label = int(bond order), so an
aromatic bond (order 1.5) carries the label 1, the same as a single bond. Keep that to compare with GDSS numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import scipy.sparse

# EDeN's seed for the running hash over neighbourhood shells.
_SHELL_SEED = 0xAAAAAAAA


@dataclasses.dataclass(frozen=True)
class LabeledGraph:
  """An undirected graph with hashable node and edge labels.

  Attributes:
    node_labels: one label per node; nodes are 0..len(node_labels)-1.
    edges: (i, j, label) triples, each undirected edge once; self-loops are ignored (as in EDeN).
  """

  node_labels: tuple[Hashable, ...]
  edges: tuple[tuple[int, int, Hashable], ...]


def from_mol(mol: Any) -> LabeledGraph:
  """The NSPDK graph of an RDKit molecule: atom symbols on nodes, int(bond order) on edges (GDSS's `mols_to_nx`)."""
  if mol is None:
    raise ValueError("from_mol: got None instead of an RDKit Mol (an unparsed SMILES?)")
  labels = tuple(atom.GetSymbol() for atom in mol.GetAtoms())
  edges = tuple((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())) for b in mol.GetBonds())
  return LabeledGraph(labels, edges)


def from_networkx(graph: Any, key: str = "label") -> LabeledGraph:
  """The NSPDK graph of a networkx graph whose nodes and edges carry a `key` attribute (EDeN's input convention)."""
  nodes = list(graph.nodes())
  index = {n: i for i, n in enumerate(nodes)}
  try:
    labels = tuple(graph.nodes[n][key] for n in nodes)
    edges = tuple((index[u], index[v], data[key]) for u, v, data in graph.edges(data=True))
  except KeyError as e:
    raise ValueError(f"from_networkx: every node and edge needs a {key!r} attribute; missing on {e}") from None
  return LabeledGraph(labels, edges)


def _label_hash(label: Hashable) -> int:
  # Type-qualified so the int 1 and the string "1" differ, as they do for Python's hash.
  text = f"{type(label).__name__}:{label!r}".encode()
  return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _graph_features(graph: LabeledGraph, r: int, d: int, bitmask: int, index: int) -> dict[int, float]:
  """One graph's normalised sparse feature vector {bucket: value}, buckets in 1..bitmask+1 (EDeN's layout)."""
  n = len(graph.node_labels)
  if n == 0:
    raise ValueError(f"NSPDK: graph {index} has no nodes; an empty graph has no features")
  edges = [(i, j, lab) for i, j, lab in graph.edges if i != j]
  for i, j, _ in edges:
    if not (0 <= i < n and 0 <= j < n):
      raise ValueError(f"NSPDK: graph {index} has an edge ({i}, {j}) to a node outside 0..{n - 1}")

  # Expanded graph: nodes 0..n-1, then one node per edge between its endpoints.
  labels = [_label_hash(lab) for lab in graph.node_labels] + [_label_hash(lab) for _, _, lab in edges]
  adj: list[list[int]] = [[] for _ in range(n)] + [[i, j] for i, j, _ in edges]
  for k, (i, j, _) in enumerate(edges):
    adj[i].append(n + k)
    adj[j].append(n + k)
  node_hash = [hash((labels[v], len(adj[v]))) for v in range(len(adj))]

  # Breadth-first shells around every original node, to depth 2 * max(r, d) in the expanded graph.
  max_depth = 2 * max(r, d)
  shells: list[list[list[int]]] = []
  neigh_hash: list[list[int]] = []
  for root in range(n):
    seen = {root}
    frontier = [root]
    root_shells = [frontier]
    while frontier and len(root_shells) <= max_depth:
      nxt = []
      for v in frontier:
        for u in adj[v]:
          if u not in seen:
            seen.add(u)
            nxt.append(u)
      if nxt:
        root_shells.append(nxt)
      frontier = nxt
    shells.append(root_shells)
    # Entry k hashes the whole radius-k neighbourhood: a running hash over the sorted shells 0..k.
    running, cumulative = _SHELL_SEED, []
    for k, shell in enumerate(root_shells):
      running ^= hash((running, hash(tuple(sorted(node_hash[u] for u in shell))), k))
      cumulative.append(running)
    neigh_hash.append(cumulative)

  blocks: dict[tuple[int, int], collections.Counter] = collections.defaultdict(collections.Counter)
  for v in range(n):
    hv, sv = neigh_hash[v], shells[v]
    for dist in range(d + 1):
      if 2 * dist >= len(sv):
        break
      for u in sv[2 * dist]:  # even shells hold original nodes only
        hu = neigh_hash[u]
        for rad in range(r + 1):
          k = 2 * rad
          if k >= len(hv) or k >= len(hu):
            break
          a, b = (hv[k], hu[k]) if hv[k] < hu[k] else (hu[k], hv[k])
          block = blocks[(rad, dist)]
          block[(hash((a, b, k, 2 * dist)) & bitmask) + 1] += 1
          block[(hash((hu[k], k, 2 * dist)) & bitmask) + 1] += 1

  # Unit norm per (radius, distance) block, then overall.
  features: dict[int, float] = collections.defaultdict(float)
  for block in blocks.values():
    norm = np.sqrt(sum(c * c for c in block.values()))
    for f, c in block.items():
      features[f] += c / norm
  total = np.sqrt(sum(x * x for x in features.values()))
  return {f: x / total for f, x in features.items()}


def features(graphs: Iterable[LabeledGraph], r: int = 4, d: int = 4, nbits: int = 16) -> scipy.sparse.csr_matrix:
  """NSPDK feature vectors of graphs, one unit-norm row each.

  Args:
    graphs: LabeledGraph instances (see `from_mol`, `from_networkx`).
    r: largest neighbourhood radius (EDeN's `r`, set by `complexity`).
    d: largest distance between the two roots (EDeN's `d`).
    nbits: features are hashed into 2**nbits buckets.

  Returns:
    A [num_graphs, 2**nbits + 1] float64 CSR matrix (column 0 unused, as in EDeN).
  """
  if r < 0 or d < 0 or not 1 <= nbits <= 30:
    raise ValueError(f"NSPDK: need r >= 0, d >= 0 and 1 <= nbits <= 30, got r={r}, d={d}, nbits={nbits}")
  bitmask = (1 << nbits) - 1
  rows, cols, vals = [], [], []
  num = 0
  for i, g in enumerate(graphs):
    for f, x in _graph_features(g, r, d, bitmask, i).items():
      rows.append(i)
      cols.append(f)
      vals.append(x)
    num = i + 1
  return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(num, bitmask + 2), dtype=np.float64)


def mmd_from_features(x: scipy.sparse.spmatrix, y: scipy.sparse.spmatrix) -> float:
  """Linear-kernel MMD^2 (biased, diagonal included, as GDSS) between two sets of feature rows."""
  if x.shape[0] == 0 or y.shape[0] == 0:
    raise ValueError(f"NSPDK MMD needs at least one graph on each side, got {x.shape[0]} and {y.shape[0]}")
  diff = np.asarray(x.mean(axis=0)).ravel() - np.asarray(y.mean(axis=0)).ravel()
  return float(max(diff @ diff, 0.0))


def mmd(x: Sequence[LabeledGraph], y: Sequence[LabeledGraph], r: int = 4, d: int = 4, nbits: int = 16) -> float:
  """NSPDK MMD^2 between two sets of graphs: GDSS's `compute_nspdk_mmd(x, y)` with EDeN's `complexity=4`."""
  return mmd_from_features(features(x, r, d, nbits), features(y, r, d, nbits))
