"""Citation graphs for link prediction (paper section 5.3): Cora and Citeseer, and the VGAE edge split.

The data are the Planetoid files of `tkipf/gcn` (PROVENANCE section 4): python2 pickles `allx`/`tx` (scipy.sparse bag
of words), `ally`/`ty` (one-hot labels), `graph` (dict {node: [neighbours]}) and the text file `test.index`. Nodes
are put in id order as gcn's and gae's `load_data` do: the allx rows are nodes 0..A-1, and tx row k is node
`test.index[k]`. Citeseer's test ids (2312..3326) skip 15 ids whose documents have no features in the data set; as in
gcn they get zero feature rows (here also label -1). Contrary to gcn's comment they are not isolated in `graph` (each
has one or two edges); the 48 nodes with no edge are others, whose only neighbour in `graph` is themselves.

`split_edges` is gae's `mask_test_edges` (MGVAE's link-prediction code took it from gae), vectorised and without its
quirks: a seeded numpy Generator, floor(E * fraction) held-out edges, and non-edges drawn uniformly from the pairs that
are not edges of the full graph, distinct across validation and test.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import pickle
from typing import Optional, Union

import numpy as np
import scipy.sparse

from mgvae_jax.data import files
from mgvae_jax.data import registry

PathLike = Union[str, os.PathLike]

DATASETS = ("cora", "citeseer")
_FILES = ("allx", "ally", "tx", "ty", "graph")  # x / y (the 140 or 120 labelled training rows of allx) are not needed

# What Planetoid pickles (and numpy arrays re-pickled by python 3) reference; anything else is refused, not run.
_SAFE_CLASSES = {
    ("collections", "defaultdict"), ("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how python 3 writes bytes (numpy array data) at protocol 2
    *((b, n) for b in ("builtins", "__builtin__") for n in ("list", "dict", "set", "tuple", "int", "float"))
}
_SPARSE_CLASSES = ("csr_matrix", "csc_matrix", "coo_matrix")


class _Unpickler(pickle.Unpickler):
  """Loads only the classes above; maps scipy's old module names (scipy.sparse.csr, ...) to `scipy.sparse`."""

  def find_class(self, module, name):
    if module.split(".")[:2] == ["scipy", "sparse"] and name in _SPARSE_CLASSES:
      return getattr(scipy.sparse, name)
    if (module, name) not in _SAFE_CLASSES:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which a Planetoid file does not contain")
    return super().find_class(module, name)


@dataclasses.dataclass(frozen=True, eq=False)
class Citation:
  """One citation graph, nodes in id order.

  Attributes:
    name: "cora" or "citeseer".
    features: [N, F] float32 bag-of-words (0/1); zero rows for the padded test ids.
    labels: [N] int64 class ids; -1 for the padded test ids (they have no label).
    edges: [E, 2] int64 undirected edges, i < j, unique, sorted, no self-loops.
    num_nodes: N.
    num_self_loops_removed: distinct self-loops in `graph` that were dropped.
    num_isolated_nodes: nodes without an edge (after dropping self-loops).
    num_padded_test_nodes: ids missing from `test.index` between its min and max (given zero features, label -1).
  """

  name: str
  features: np.ndarray
  labels: np.ndarray
  edges: np.ndarray
  num_nodes: int
  num_self_loops_removed: int
  num_isolated_nodes: int
  num_padded_test_nodes: int

  @property
  def num_edges(self) -> int:
    return int(self.edges.shape[0])

  @property
  def num_features(self) -> int:
    return int(self.features.shape[1])

  @property
  def num_classes(self) -> int:
    return int(self.labels.max()) + 1


def _unpickle(path: pathlib.Path):
  files.require_file(path, "a python2 pickle")
  try:
    with open(path, "rb") as f:
      return _Unpickler(f, encoding="latin1").load()
  except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError, ValueError,
          OverflowError, MemoryError) as e:
    raise registry.DataFormatError(f"{path}: not a readable python2 pickle (empty, truncated or corrupt?): "
                                   f"{type(e).__name__}: {e}") from None


def _matrix(obj, path: pathlib.Path, what: str) -> np.ndarray:
  if scipy.sparse.issparse(obj):
    obj = obj.toarray()
  if not isinstance(obj, np.ndarray) or obj.ndim != 2 or not np.issubdtype(obj.dtype, np.number):
    got = f"{obj.ndim}-d {obj.dtype} array" if isinstance(obj, np.ndarray) else type(obj).__name__
    raise registry.DataFormatError(f"{path}: expected a 2-d numeric matrix of {what}, got a {got}")
  return obj


def _labels(onehot: np.ndarray, path: pathlib.Path) -> np.ndarray:
  ones = np.count_nonzero(onehot, axis=1)
  if ones.max(initial=0) > 1:
    raise registry.DataFormatError(f"{path}: row {int(np.argmax(ones > 1))} has {int(ones.max())} nonzero entries; "
                                   f"expected one-hot labels")
  return np.where(ones > 0, np.argmax(onehot, axis=1), -1).astype(np.int64)


def _test_index(path: pathlib.Path) -> np.ndarray:
  what = "one integer node id per line"
  lines = [s for s in files.read_text(path, what, encoding="ascii").split("\n") if s.strip()]
  try:
    ids = np.array([int(s) for s in lines], np.int64)
  except ValueError as e:
    raise registry.DataFormatError(f"{path}: expected {what} ({e})") from None
  if ids.size == 0 or len(np.unique(ids)) != ids.size:
    raise registry.DataFormatError(f"{path}: expected distinct test node ids, got {ids.size} ids of which "
                                   f"{len(np.unique(ids))} distinct")
  return ids


def _graph_edges(graph, path: pathlib.Path, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """(src, dst) of every adjacency-list entry, checked to be ids in [0, num_nodes)."""
  if not isinstance(graph, dict):
    raise registry.DataFormatError(f"{path}: expected a dict {{node: [neighbours]}}, got {type(graph).__name__}")
  try:
    lists = [list(v) for v in graph.values()]
    src = np.array(list(graph.keys())).reshape(-1)
    dst = np.array([w for v in lists for w in v]).reshape(-1)
  except (TypeError, ValueError):
    raise registry.DataFormatError(f"{path}: expected int keys and lists of int neighbour ids as values") from None
  for ids, what in ((src, "node"), (dst, "neighbour")):
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
      raise registry.DataFormatError(f"{path}: {what} ids must be integers, got {ids.dtype} values")
    bad = ids[(ids < 0) | (ids >= num_nodes)]
    if bad.size:
      raise registry.DataFormatError(f"{path}: {what} id {int(bad[0])} is outside [0, {num_nodes}), the nodes that "
                                     f"have feature rows (allx + test ids)")
  src = np.repeat(src.astype(np.int64), [len(v) for v in lists])
  return src, dst.astype(np.int64)


def load_planetoid(dataset: str, data_dir: Optional[PathLike] = None, download: bool = True) -> Citation:
  """Cora (2,708 nodes, 1,433 features, 5,278 edges) or Citeseer (3,327 nodes, 3,703 features, 4,552 edges).

  Nodes are in id order, built as gcn/gae's `load_data`: features = vstack(allx, tx) with tx row k moved to node
  `test.index[k]`. Test ids between min and max of `test.index` that it does not list are padded (gcn's `tx_extended`
  fix): 15 for Citeseer (0 for Cora), which get zero features and label -1. They keep their edges in `graph` (one or
  two each); the nodes that end up isolated are others: Citeseer has 124 self-loops, which are dropped, and 48 nodes
  whose only edge is a self-loop.

  Raises:
    ValueError: unknown `dataset`.
    registry.DataFormatError: a file does not unpickle or parse, shapes disagree, or `graph` names an id without a
      feature row.
    FileNotFoundError / registry.ChecksumError / registry.DownloadError: from `registry.fetch`.
  """
  if dataset not in DATASETS:
    raise ValueError(f"unknown citation dataset {dataset!r}; expected one of {DATASETS}")
  paths = {s: registry.fetch(f"{dataset}/ind.{dataset}.{s}", data_dir=data_dir, download=download)
           for s in (*_FILES, "test.index")}
  raw = {s: _unpickle(paths[s]) for s in _FILES}
  allx = _matrix(raw["allx"], paths["allx"], "features")
  tx = _matrix(raw["tx"], paths["tx"], "features")
  ally = _matrix(raw["ally"], paths["ally"], "one-hot labels")
  ty = _matrix(raw["ty"], paths["ty"], "one-hot labels")
  test_ids = _test_index(paths["test.index"])

  num_train = allx.shape[0]
  for got, want, file, what in ((tx.shape[1], allx.shape[1], "tx", "feature columns as allx"),
                                (ally.shape[0], num_train, "ally", "rows as allx"),
                                (ty.shape[1], ally.shape[1], "ty", "label columns as ally"),
                                (tx.shape[0], len(test_ids), "tx", "rows as test.index has ids"),
                                (ty.shape[0], len(test_ids), "ty", "rows as test.index has ids")):
    if got != want:
      raise registry.DataFormatError(f"{paths[file]}: has {got}; expected {want}, as many {what}")
  if test_ids.min() != num_train:
    raise registry.DataFormatError(f"{paths['test.index']}: the smallest test id is {int(test_ids.min())}; expected "
                                   f"{num_train}, the number of allx rows (test nodes follow the training nodes)")
  num_nodes = int(test_ids.max()) + 1

  features = np.zeros((num_nodes, allx.shape[1]), np.float32)
  features[:num_train] = allx
  features[test_ids] = tx
  labels = np.full(num_nodes, -1, np.int64)
  labels[:num_train] = _labels(ally, paths["ally"])
  labels[test_ids] = _labels(ty, paths["ty"])

  src, dst = _graph_edges(raw["graph"], paths["graph"], num_nodes)
  lo, hi = np.minimum(src, dst), np.maximum(src, dst)
  num_self_loops = len(np.unique(lo[lo == hi]))
  keys = np.unique(lo[lo != hi] * num_nodes + hi[lo != hi])
  edges = np.stack([keys // num_nodes, keys % num_nodes], axis=1)
  degree = np.bincount(edges.reshape(-1), minlength=num_nodes)
  return Citation(name=dataset, features=features, labels=labels, edges=edges, num_nodes=num_nodes,
                  num_self_loops_removed=num_self_loops, num_isolated_nodes=int(np.sum(degree == 0)),
                  num_padded_test_nodes=num_nodes - num_train - len(test_ids))


# ---------------------------------------------------------------------------------------------------------------------
# Link-prediction split.


@dataclasses.dataclass(frozen=True, eq=False)
class EdgeSplit:
  """Held-out edges and non-edges of one graph; every array is [K, 2] int64 with i < j."""

  train_edges: np.ndarray
  val_edges: np.ndarray
  val_non_edges: np.ndarray
  test_edges: np.ndarray
  test_non_edges: np.ndarray
  num_nodes: int
  seed: int


def _held_out(num_edges: int, fraction: float) -> int:
  return math.floor(round(num_edges * fraction, 9))  # round: 0.29 * 100 is 28.999999999999996


def _sample_non_edges(edge_keys: np.ndarray, num_nodes: int, count: int, rng: np.random.Generator) -> np.ndarray:
  """`count` distinct keys i * N + j (i < j) that are not in the sorted `edge_keys`, uniform over such pairs."""
  free = num_nodes * (num_nodes - 1) // 2 - len(edge_keys)
  if free < 2 * count:  # dense graph: rejection would stall; enumerate the free pairs and pick some
    i, j = np.triu_indices(num_nodes, 1)
    keys = i.astype(np.int64) * num_nodes + j
    return rng.permutation(keys[~np.isin(keys, edge_keys, assume_unique=True)])[:count]
  out = np.zeros(0, np.int64)
  while len(out) < count:
    accept = 2 * (free - len(out)) / num_nodes**2  # a draw is one of N^2 ordered pairs; two of them give a free pair
    batch = int(min(1 << 22, max(1024, 1.5 * (count - len(out)) / accept)))
    pairs = rng.integers(0, num_nodes, size=(batch, 2), dtype=np.int64)
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    keys = np.concatenate([out, pairs[:, 0] * num_nodes + pairs[:, 1]])
    _, first = np.unique(keys, return_index=True)
    keys = keys[np.sort(first)]  # distinct, in draw order
    out = keys[~np.isin(keys, edge_keys)]
  return out[:count]


def _pairs(keys: np.ndarray, num_nodes: int) -> np.ndarray:
  return np.stack([keys // num_nodes, keys % num_nodes], axis=1).astype(np.int64)


def split_edges(edges: np.ndarray, num_nodes: int, seed: int, val_fraction: float = 0.05,
                test_fraction: float = 0.10) -> EdgeSplit:
  """VGAE's link-prediction split (Kipf & Welling 2016; gae's `mask_test_edges`): 85/5/10 by default.

  The undirected edges are shuffled with `np.random.default_rng(seed)`; the first floor(E * test_fraction) are the
  test edges, the next floor(E * val_fraction) the validation edges, the rest the training edges. Validation and test
  each get as many non-edges: uniform pairs i < j that are not edges of the full graph, none shared. Only the training
  edges form the training graph (`train_adjacency`), so no held-out edge is in it; nodes whose edges were all held out
  become isolated there and are kept, as in gae.

  Args:
    edges: [E, 2] node pairs; taken as a set of undirected edges (each pair sorted, duplicates merged), so the split
      depends only on the edge set and the seed.
    num_nodes: N; ids must be in [0, N).
    seed: seed of the shuffle and the non-edge draws.
    val_fraction, test_fraction: in (0, 1), with a sum below 1.

  Raises:
    ValueError: bad shapes, ids or fractions, a self-loop, or too few edges (or non-edges) for non-empty splits.
  """
  edges = np.asarray(edges)
  if edges.ndim != 2 or edges.shape[1] != 2 or (edges.size and not np.issubdtype(edges.dtype, np.integer)):
    raise ValueError(f"split_edges: expected integer edges of shape [E, 2], got {edges.dtype} {edges.shape}")
  if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
    raise ValueError(f"split_edges: need val_fraction and test_fraction in (0, 1) with a sum below 1, got "
                     f"{val_fraction} and {test_fraction}")
  if num_nodes < 2:
    raise ValueError(f"split_edges: num_nodes must be at least 2, got {num_nodes}")
  if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
    raise ValueError(f"split_edges: node ids must be in [0, {num_nodes}), got ids from {edges.min()} to "
                     f"{edges.max()}")
  if np.any(edges[:, 0] == edges[:, 1]):
    raise ValueError(f"split_edges: self-loop at node {int(edges[edges[:, 0] == edges[:, 1]][0, 0])}; remove "
                     f"self-loops first (load_planetoid does)")
  edges = edges.astype(np.int64)
  keys = np.unique(edges.min(axis=1) * num_nodes + edges.max(axis=1))
  num_edges = len(keys)
  num_test, num_val = _held_out(num_edges, test_fraction), _held_out(num_edges, val_fraction)
  if num_test < 1 or num_val < 1 or num_edges - num_test - num_val < 1:
    raise ValueError(f"split_edges: {num_edges} edges give {num_edges - num_val - num_test} train, {num_val} "
                     f"validation and {num_test} test edges; each split needs at least one")
  free = num_nodes * (num_nodes - 1) // 2 - num_edges
  if free < num_val + num_test:
    raise ValueError(f"split_edges: the graph has only {free} non-edges; {num_val + num_test} are needed")

  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(keys)
  test, val, train = np.split(shuffled, [num_test, num_test + num_val])
  non_edges = _sample_non_edges(keys, num_nodes, num_val + num_test, rng)
  return EdgeSplit(train_edges=_pairs(train, num_nodes), val_edges=_pairs(val, num_nodes),
                   val_non_edges=_pairs(non_edges[:num_val], num_nodes), test_edges=_pairs(test, num_nodes),
                   test_non_edges=_pairs(non_edges[num_val:], num_nodes), num_nodes=int(num_nodes), seed=seed)


def train_adjacency(split: EdgeSplit) -> np.ndarray:
  """[N, N] float32 symmetric 0/1 adjacency of the training edges only (zero diagonal)."""
  adj = np.zeros((split.num_nodes, split.num_nodes), np.float32)
  i, j = split.train_edges[:, 0], split.train_edges[:, 1]
  adj[i, j] = adj[j, i] = 1.0
  return adj


def planted_partition(num_communities: int = 4, community_size: int = 12, p_in: float = 0.5, p_out: float = 0.02,
                      num_features: int = 16, feature_noise: float = 0.1, seed: int = 0) -> Citation:
  """A small synthetic citation-like graph for tests and smoke runs: a planted partition with informative features.

  Nodes of community c link with probability p_in inside it and p_out across; features are 0/1 with the community's
  own block of num_features / num_communities columns set, each bit flipped with probability feature_noise.
  """
  if num_communities < 1 or community_size < 2 or num_features < num_communities:
    raise ValueError(f"planted_partition needs num_communities >= 1, community_size >= 2 and num_features >= "
                     f"num_communities, got {num_communities}, {community_size}, {num_features}")
  for name, p in (("p_in", p_in), ("p_out", p_out), ("feature_noise", feature_noise)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"planted_partition: {name} must be in [0, 1], got {p}")
  rng = np.random.default_rng(seed)
  n = num_communities * community_size
  labels = np.repeat(np.arange(num_communities), community_size)
  same = labels[:, None] == labels[None, :]
  upper = np.triu(rng.random((n, n)) < np.where(same, p_in, p_out), k=1)
  edges = np.argwhere(upper).astype(np.int64)  # i < j, sorted
  block = num_features // num_communities
  features = np.zeros((n, num_features), np.float32)
  for c in range(num_communities):
    features[labels == c, c * block:(c + 1) * block] = 1.0
  flip = rng.random(features.shape) < feature_noise
  features = np.where(flip, 1.0 - features, features).astype(np.float32)
  degree = np.bincount(edges.reshape(-1), minlength=n)
  return Citation(name="planted_partition", features=features, labels=labels.astype(np.int64), edges=edges,
                  num_nodes=n, num_self_loops_removed=0, num_isolated_nodes=int((degree == 0).sum()),
                  num_padded_test_nodes=0)
