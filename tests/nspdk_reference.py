"""A pure-Python NSPDK vectorizer: the slow, step-by-step reference for the vectorised mgvae_jax.chem.nspdk.

It follows EDeN's discrete Vectorizer step by step (Python BFS, sorted shell hashes, one Counter per (R, D) block), so
tests can check that the vectorised module still computes the same kernel: with 2**30 buckets, where collisions
vanish, both give the same Gram matrix and the same number of features per graph.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Hashable, Iterable

import numpy as np
import scipy.sparse

from mgvae_jax.chem.nspdk import LabeledGraph

# EDeN's seed for the running hash over neighbourhood shells.
_SHELL_SEED = 0xAAAAAAAA


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


