"""Tests of mgvae_jax.data.planetoid: the Cora / Citeseer loader and the VGAE link-prediction edge split.

Tests that read the staged datasets need $MGVAE_DATA_DIR (CI sets it to ../shared/data) and skip without it.
"""

import contextlib
import dataclasses
import functools
import hashlib
import os
import pathlib
import pickle
import shutil

import hypothesis
from hypothesis import strategies as st
import networkx as nx
import numpy as np
import pytest
import scipy.sparse

from mgvae_jax.data import planetoid
from mgvae_jax.data import registry

_STAGED = os.environ.get(registry.ENV_VAR)
needs_data = pytest.mark.skipif(
    not _STAGED or not os.path.isdir(_STAGED),
    reason=f"${registry.ENV_VAR} is unset or not a directory; these tests read the staged datasets")

# nodes, features, classes, edges, self-loops dropped, isolated nodes, padded test ids (PROVENANCE section 4).
_EXPECTED = {"cora": (2708, 1433, 7, 5278, 0, 0, 0), "citeseer": (3327, 3703, 6, 4552, 124, 48, 15)}
_CITESEER_PADDED = [2407, 2489, 2553, 2682, 2781, 2953, 3042, 3063, 3212, 3214, 3250, 3292, 3305, 3306, 3309]
_SUFFIXES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


@functools.lru_cache(maxsize=None)
def _load(dataset: str) -> planetoid.Citation:
  return planetoid.load_planetoid(dataset, data_dir=_STAGED, download=False)


def _keys(pairs: np.ndarray, n: int) -> np.ndarray:
  return pairs[:, 0] * n + pairs[:, 1]


# ---------------------------------------------------------------------------------------------------------------------
# Loader on the real files.


@needs_data
@pytest.mark.parametrize("dataset", planetoid.DATASETS)
def test_counts(dataset):
  nodes, feats, classes, num_edges, self_loops, isolated, padded = _EXPECTED[dataset]
  c = _load(dataset)
  assert c.name == dataset and c.num_nodes == nodes
  assert c.features.shape == (nodes, feats) and c.features.dtype == np.float32
  assert set(np.unique(c.features)) == {0.0, 1.0}  # bag of words
  assert c.labels.shape == (nodes,) and c.labels.dtype == np.int64 and c.num_classes == classes
  assert c.labels.min() == (-1 if padded else 0) and np.sum(c.labels == -1) == padded
  assert c.edges.shape == (num_edges, 2) and c.edges.dtype == np.int64 and c.num_edges == num_edges
  assert np.all(c.edges[:, 0] < c.edges[:, 1]) and c.edges.max() < nodes
  keys = _keys(c.edges, nodes)
  assert np.all(np.diff(keys) > 0)  # unique and sorted
  assert (c.num_self_loops_removed, c.num_isolated_nodes, c.num_padded_test_nodes) == (self_loops, isolated, padded)
  assert np.sum(np.bincount(c.edges.reshape(-1), minlength=nodes) == 0) == isolated


@needs_data
def test_citeseer_padded_test_nodes():
  c = _load("citeseer")
  padded = np.flatnonzero(c.labels == -1)
  assert padded.tolist() == _CITESEER_PADDED
  assert not c.features[padded].any() and c.features.sum(axis=1).min() == 0
  # They are not the isolated nodes: each keeps one or two edges of `graph`.
  degree = np.bincount(c.edges.reshape(-1), minlength=c.num_nodes)
  assert degree[padded].min() >= 1


def _gcn_load_data(dataset: str):
  """gcn's / gae's `load_data`, as written there (scipy.sparse.lil + networkx)."""
  root = pathlib.Path(_STAGED) / dataset
  objs = {}
  for s in ("tx", "ty", "allx", "ally", "graph"):
    with open(root / f"ind.{dataset}.{s}", "rb") as f:
      objs[s] = pickle.load(f, encoding="latin1")
  tx, ty, allx, ally, graph = (objs[s] for s in ("tx", "ty", "allx", "ally", "graph"))
  test_idx_reorder = [int(line) for line in open(root / f"ind.{dataset}.test.index")]
  test_idx_range = np.sort(test_idx_reorder)
  if dataset == "citeseer":
    test_idx_range_full = range(min(test_idx_reorder), max(test_idx_reorder) + 1)
    tx_extended = scipy.sparse.lil_matrix((len(test_idx_range_full), tx.shape[1]))
    tx_extended[test_idx_range - min(test_idx_range), :] = tx
    tx = tx_extended
    ty_extended = np.zeros((len(test_idx_range_full), ty.shape[1]))
    ty_extended[test_idx_range - min(test_idx_range), :] = ty
    ty = ty_extended
  features = scipy.sparse.vstack((allx, tx)).tolil()
  features[test_idx_reorder, :] = features[test_idx_range, :]
  labels = np.vstack((ally, ty))
  labels[test_idx_reorder, :] = labels[test_idx_range, :]
  adj = nx.adjacency_matrix(nx.from_dict_of_lists(graph))
  return features.toarray(), labels, adj


@needs_data
@pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")  # scipy.sparse.csr, via pickle
@pytest.mark.parametrize("dataset", planetoid.DATASETS)
def test_matches_gcn_load_data(dataset):
  c = _load(dataset)
  features, onehot, adj = _gcn_load_data(dataset)
  np.testing.assert_array_equal(c.features, features)
  labelled = c.labels >= 0
  np.testing.assert_array_equal(c.labels[labelled], onehot[labelled].argmax(axis=1))
  assert not onehot[~labelled].any()
  adj = scipy.sparse.triu(adj, k=1).tocoo()  # gae drops the diagonal (self-loops) too
  np.testing.assert_array_equal(np.sort(_keys(np.stack([adj.row, adj.col], 1).astype(np.int64), c.num_nodes)),
                                _keys(c.edges, c.num_nodes))


def test_unknown_dataset():
  with pytest.raises(ValueError, match="cora.*citeseer"):
    planetoid.load_planetoid("pubmed")


# ---------------------------------------------------------------------------------------------------------------------
# Loader on bad files (a temp data dir with copies of the real Cora files; registry entries swapped where needed).


@pytest.fixture
def cora_copy(tmp_path):
  """Copies the 8 staged Cora files to tmp_path/cora; yields restage(suffix, bytes) to replace one of them."""
  if not _STAGED or not os.path.isdir(_STAGED):
    pytest.skip(f"${registry.ENV_VAR} is unset or not a directory")
  (tmp_path / "cora").mkdir()
  for s in _SUFFIXES:
    shutil.copy(pathlib.Path(_STAGED) / "cora" / f"ind.cora.{s}", tmp_path / "cora" / f"ind.cora.{s}")
  with contextlib.ExitStack() as stack:

    def restage(suffix: str, payload: bytes) -> pathlib.Path:
      name = f"cora/ind.cora.{suffix}"
      (tmp_path / name).write_bytes(payload)
      entry = dataclasses.replace(registry.get(name), size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
      stack.enter_context(registry.temporary_entry(entry))
      return tmp_path / name

    yield restage


def test_copy_loads(cora_copy, tmp_path):
  assert planetoid.load_planetoid("cora", data_dir=tmp_path, download=False).num_edges == 5278


def test_truncated_graph_file(cora_copy, tmp_path):
  path = tmp_path / "cora" / "ind.cora.graph"
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(registry.ChecksumError, match="truncated") as err:  # the registry's size check
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  assert "ind.cora.graph" in str(err.value)
  cora_copy("graph", (pathlib.Path(_STAGED) / "cora" / "ind.cora.graph").read_bytes()[:1000])  # registry accepts it
  with pytest.raises(registry.DataFormatError, match="not a readable python2 pickle") as err:
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  assert "ind.cora.graph" in str(err.value)


def test_garbage_graph_file_of_the_right_size(tmp_path, cora_copy):
  path = tmp_path / "cora" / "ind.cora.graph"
  garbage = b"\x00garbage" * (path.stat().st_size // 8) + b"\x00" * (path.stat().st_size % 8)
  path.write_bytes(garbage)
  with pytest.raises(registry.ChecksumError, match="ind.cora.graph has sha256"):  # the registry's sha256 check
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("graph", garbage)  # registry accepts it
  with pytest.raises(registry.DataFormatError, match="ind.cora.graph: not a readable python2 pickle"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)


def test_graph_id_out_of_range(cora_copy, tmp_path):
  graph = {0: [1, 2708], 1: [0]}
  cora_copy("graph", pickle.dumps(graph, protocol=2))
  with pytest.raises(registry.DataFormatError, match=r"ind.cora.graph: neighbour id 2708 is outside \[0, 2708\)"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("graph", pickle.dumps({0: [1], 2709: [0]}, protocol=2))
  with pytest.raises(registry.DataFormatError, match="node id 2709"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("graph", pickle.dumps([[1], [0]], protocol=2))
  with pytest.raises(registry.DataFormatError, match="expected a dict"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)


def test_shape_mismatch_and_bad_test_index(cora_copy, tmp_path):
  lines = (pathlib.Path(_STAGED) / "cora" / "ind.cora.test.index").read_text().split()
  cora_copy("test.index", ("\n".join(lines[:-1]) + "\n").encode())
  with pytest.raises(registry.DataFormatError, match="ind.cora.tx: has 1000; expected 999"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("test.index", ("\n".join(lines[:-1] + ["x"]) + "\n").encode())
  with pytest.raises(registry.DataFormatError, match="one integer node id per line"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("test.index", ("\n".join([str(int(s) + 1) for s in lines]) + "\n").encode())
  with pytest.raises(registry.DataFormatError, match="smallest test id is 1709; expected 1708"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)
  cora_copy("ty", pickle.dumps(np.ones((1000, 7), np.int32), protocol=2))
  cora_copy("test.index", ("\n".join(lines) + "\n").encode())
  with pytest.raises(registry.DataFormatError, match="ind.cora.ty: row 0 has 7 nonzero entries"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)


class _Evil:

  def __reduce__(self):
    return (os.system, ("true",))


def test_pickle_with_foreign_classes_is_refused(cora_copy, tmp_path):
  cora_copy("allx", pickle.dumps(_Evil(), protocol=2))
  with pytest.raises(registry.DataFormatError, match="ind.cora.allx.*refusing to load"):
    planetoid.load_planetoid("cora", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------------------------------
# Edge split.


def _check_split(split: planetoid.EdgeSplit, edges: np.ndarray, n: int):
  """Every invariant of a split of the undirected edge set `edges` (i < j) over n nodes."""
  full = set(_keys(edges, n).tolist())
  parts = [split.train_edges, split.val_edges, split.val_non_edges, split.test_edges, split.test_non_edges]
  for p in parts:
    assert p.dtype == np.int64 and p.ndim == 2 and p.shape[1] == 2
    assert np.all(p[:, 0] < p[:, 1]) and p.min() >= 0 and p.max() < n
  train, val, val_non, test, test_non = (set(_keys(p, n).tolist()) for p in parts)
  assert sum(map(len, (train, val, val_non, test, test_non))) == sum(len(p) for p in parts)  # distinct within each
  assert train | val | test == full and not (train & val or train & test or val & test)
  assert not (val_non | test_non) & full and not val_non & test_non
  assert len(val_non) == len(val) and len(test_non) == len(test)
  adj = planetoid.train_adjacency(split)
  assert adj.shape == (n, n) and adj.dtype == np.float32 and np.array_equal(adj, adj.T)
  assert not np.diag(adj).any() and set(np.unique(adj)) <= {0.0, 1.0} and adj.sum() == 2 * len(train)
  for p in (split.val_edges, split.test_edges):
    assert not adj[p[:, 0], p[:, 1]].any()


@needs_data
@pytest.mark.parametrize("dataset", planetoid.DATASETS)
def test_split_real_graph(dataset):
  c = _load(dataset)
  split = planetoid.split_edges(c.edges, c.num_nodes, seed=0)
  e = c.num_edges
  assert len(split.test_edges) == e // 10 and len(split.val_edges) == e // 20
  assert len(split.train_edges) == e - e // 10 - e // 20
  assert split.num_nodes == c.num_nodes and split.seed == 0
  _check_split(split, c.edges, c.num_nodes)


@needs_data
def test_split_is_deterministic():
  c = _load("cora")
  a, b = (planetoid.split_edges(c.edges, c.num_nodes, seed=3) for _ in range(2))
  other = planetoid.split_edges(c.edges, c.num_nodes, seed=4)
  # Input order and orientation do not matter: the split depends on the edge set and the seed.
  shuffled = np.random.default_rng(0).permutation(c.edges)[:, ::-1]
  c_ = planetoid.split_edges(np.concatenate([shuffled, c.edges[:10]]), c.num_nodes, seed=3)
  for f in ("train_edges", "val_edges", "val_non_edges", "test_edges", "test_non_edges"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(getattr(a, f), getattr(c_, f))
    assert not np.array_equal(getattr(a, f), getattr(other, f))


@hypothesis.given(n=st.integers(2, 30), density=st.floats(0.05, 1.0), seed=st.integers(0, 2**31))
def test_split_small_random_graphs(n, density, seed):
  rng = np.random.default_rng(seed)
  i, j = np.triu_indices(n, 1)
  keep = rng.random(len(i)) < density
  edges = np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
  e, pairs = len(edges), n * (n - 1) // 2
  need = e // 20 + e // 10
  if e // 20 < 1 or pairs - e < need:
    with pytest.raises(ValueError):
      planetoid.split_edges(edges, n, seed)
    return
  split = planetoid.split_edges(edges, n, seed)
  _check_split(split, edges, n)


def test_split_dense_graph_takes_every_free_pair():
  n = 12
  i, j = np.triu_indices(n, 1)
  edges = np.stack([i, j], 1)[:60]  # 66 pairs, 6 free; 60 edges need 3 + 6 non-edges: too few
  with pytest.raises(ValueError, match="only 6 non-edges; 9 are needed"):
    planetoid.split_edges(edges, n, seed=0)
  split = planetoid.split_edges(edges[:57], n, seed=0, val_fraction=0.05, test_fraction=0.1)  # 2 + 5 of 9 free
  _check_split(split, edges[:57], n)


@pytest.mark.parametrize("edges, n, kwargs, match", [
    (np.zeros((5, 3), np.int64), 10, {}, r"shape \[E, 2\]"),
    (np.zeros((5, 2), np.float32), 10, {}, r"integer edges"),
    (np.array([[0, 10]] * 40), 10, {}, r"must be in \[0, 10\)"),
    (np.array([[-1, 3]] * 40), 10, {}, r"must be in \[0, 10\)"),
    (np.array([[2, 2]] + [[0, 1]] * 40), 10, {}, "self-loop at node 2"),
    (np.stack(np.triu_indices(10, 1), 1), 10, {"val_fraction": 0.0}, r"in \(0, 1\)"),
    (np.stack(np.triu_indices(10, 1), 1), 10, {"test_fraction": 1.0}, r"in \(0, 1\)"),
    (np.stack(np.triu_indices(10, 1), 1), 10, {"val_fraction": 0.5, "test_fraction": 0.5}, "sum below 1"),
    (np.stack(np.triu_indices(10, 1), 1)[:15], 10, {}, "15 edges give 14 train, 0 validation and 1 test"),
    (np.zeros((0, 2), np.int64), 10, {}, "0 edges"),
    (np.array([[0, 1]]), 1, {}, "num_nodes must be at least 2"),
])
def test_split_bad_inputs(edges, n, kwargs, match):
  with pytest.raises(ValueError, match=match):
    planetoid.split_edges(edges, n, seed=0, **kwargs)
