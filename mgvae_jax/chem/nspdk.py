"""NSPDK features and MMD: the graph-level "NSPDK MMD" that GDSS-era molecule benchmarks report.

The Neighbourhood Subgraph Pairwise Distance Kernel (Costa & De Grave, ICML 2010) represents a labelled graph by the
pairs of rooted neighbourhood subgraphs it contains: for every pair of nodes (v, u) at shortest-path distance D <= d
and every radius R <= r, one feature for the (unordered) pair of radius-R neighbourhoods of v and u at distance D.

This is a dependency-free re-implementation of the discrete Vectorizer of EDeN (github.com/fabriziocosta/EDeN), the
code GDSS's `compute_nspdk_mmd` calls as `vectorize(graphs, complexity=4, discrete=True)`. It computes EDeN's features:

  * edges become nodes (the "edge-to-vertex" expansion), so bond labels enter the neighbourhoods and a radius R or
    distance D in the molecule is 2R or 2D in the expanded graph;
  * a neighbourhood of radius R is hashed shell by shell from the (label, degree) hashes of its nodes;
  * each (v, u, R, D) adds a pair feature and a "half" (context) feature that ignores v;
  * features are hashed into 2**nbits buckets, each (R, D) block is scaled to unit norm, then the whole vector is;
  * r = d = 4 by default (EDeN's `complexity=4` sets both), with R and D each ranging over 0..4.

EDeN (like this module's first, line-by-line port, kept as tests/nspdk_reference.py) walks each root's breadth-first
shells in Python. Here the work is vectorised with numpy over dozens of graphs at once: distances by batched
breadth-first matrix products, then all shells, neighbourhoods and features of a batch in a few array operations
(about 18x faster, 0.1 ms per ZINC molecule). That takes different hash functions, not a different kernel. EDeN hashes
a shell by sorting its node hashes and combines everything with Python's `hash`, salted per process (PYTHONHASHSEED),
so its buckets and hence collisions change run to run. Here labels are hashed with BLAKE2b, a shell's multiset of node
hashes by their sum mod 2**64 (order-free, so nothing is sorted), and the running shell hash and the pair and half
features with the splitmix64 mixer; none is salted, so features are reproducible across processes. Both decide which
neighbourhoods and features are equal in the same way, up to 64-bit collisions (about 2**-64 a pair), so they agree up
to bucket collisions: with 2**16 buckets as closely as two EDeN runs do, and with 2**30, where collisions vanish on a
few dozen molecules, they give the same Gram matrix (a test checks this against the port).

The MMD is the linear-kernel MMD^2 of GDSS, mean(K_XX) + mean(K_YY) - 2 mean(K_XY), computed exactly as
||mean(X) - mean(Y)||^2 without the Gram matrices.

Molecules become graphs as in GDSS's `mols_to_nx`: node label = atom symbol, edge label = int(bond order), so an
aromatic bond (order 1.5) carries the label 1, the same as a single bond. Keep that to compare with GDSS numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import scipy.sparse

_U64 = np.uint64
# splitmix64's finaliser multipliers and the 64-bit golden ratio (an odd constant to spread small integers).
_M1, _M2, _GOLDEN = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), _U64(0x9E3779B97F4A7C15)
# Seeds that keep node, shell, pair and half hashes apart (the shell one is EDeN's running-hash seed).
_NODE_TAG, _SHELL_TAG, _PAIR_TAG, _HALF_TAG = _U64(0x6E6F6465), _U64(0xAAAAAAAA), _U64(0x70616972), _U64(0x68616C66)
# Padded array entries per chunk of graphs (30 to 80 ZINC molecules): enough to amortise numpy's per-call cost, small
# enough for the working set to stay in cache, which measured faster than larger chunks.
_CHUNK_ENTRIES = 1 << 17


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


def _mix(z: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser on a uint64 array (wrapping): a bijection whose outputs behave like independent draws."""
  z = z ^ (z >> _U64(30))
  z *= _M1
  z ^= z >> _U64(27)
  z *= _M2
  z ^= z >> _U64(31)
  return z


def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(owner, position, starts[owner] + position) for the concatenated ranges starts[i] + 0..counts[i]-1."""
  owner = np.repeat(np.arange(len(counts)), counts)
  pos = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
  return owner, pos, starts[owner] + pos


@dataclasses.dataclass(frozen=True)
class _Parsed:
  """All graphs' nodes and (non-loop) edges as flat arrays, with each node's (label, degree) hash."""

  sizes: np.ndarray  # [G] nodes per graph
  num_edges: np.ndarray  # [G] edges per graph
  node_start: np.ndarray  # [G] offset of each graph's nodes in node_hash
  edge_start: np.ndarray  # [G] offset of each graph's edges in ends / edge_hash
  node_hash: np.ndarray  # [N] uint64
  edge_hash: np.ndarray  # [E] uint64, the hash of the edge's node in the expanded graph (degree 2)
  ends: np.ndarray  # [E, 2] endpoints, numbered within their graph


def _parse(graphs: Iterable[LabeledGraph]) -> _Parsed:
  """Checks the graphs and flattens them; labels are interned so each distinct one is BLAKE2b-hashed once."""
  table: dict[tuple[type, Hashable], int] = {}
  sizes, num_edges, node_ids, edge_ids, ends = [], [], [], [], []
  for g in graphs:
    sizes.append(len(g.node_labels))
    node_ids += [table.setdefault((type(x), x), len(table)) for x in g.node_labels]
    kept = [e for e in g.edges if e[0] != e[1]]
    num_edges.append(len(kept))
    ends += [e[:2] for e in kept]
    edge_ids += [table.setdefault((type(e[2]), e[2]), len(table)) for e in kept]
  sizes, num_edges = np.array(sizes, np.int64), np.array(num_edges, np.int64)
  ends = np.array(ends, np.int64).reshape(-1, 2)

  # Report the first bad graph, in order, as the per-graph implementation did (no nodes before bad edges).
  edge_graph = np.repeat(np.arange(len(sizes)), num_edges)
  bad = np.flatnonzero(((ends < 0) | (ends >= sizes[edge_graph][:, None])).any(axis=1))
  empty = np.flatnonzero(sizes == 0)
  first_empty = empty[0] if empty.size else len(sizes)
  if bad.size and edge_graph[bad[0]] < first_empty:
    index, (i, j) = edge_graph[bad[0]], ends[bad[0]].tolist()
    raise ValueError(f"NSPDK: graph {index} has an edge ({i}, {j}) to a node outside 0..{sizes[index] - 1}")
  if empty.size:
    raise ValueError(f"NSPDK: graph {first_empty} has no nodes; an empty graph has no features")

  label_hash = np.array([_label_hash(lab) for _, lab in table], np.uint64)
  node_start = np.cumsum(sizes) - sizes
  degree = np.bincount((ends + node_start[edge_graph][:, None]).ravel(), minlength=int(sizes.sum()))
  node_hash = _mix(label_hash[np.array(node_ids, np.int64)] ^ _mix(degree.astype(np.uint64) + _NODE_TAG))
  edge_hash = _mix(label_hash[np.array(edge_ids, np.int64)] ^ _mix(np.full(len(edge_ids), 2, np.uint64) + _NODE_TAG))
  return _Parsed(sizes, num_edges, node_start, np.cumsum(num_edges) - num_edges, node_hash, edge_hash, ends)


def _key_bits(num_graphs: int, max_nodes: int, r: int, d: int) -> tuple[int, int, int]:
  """Widths of the graph, block and count fields of a chunk's sort keys (the bucket field has nbits)."""
  return (num_graphs - 1).bit_length(), ((r + 1) * (d + 1) - 1).bit_length(), max(max_nodes, 2).bit_length()


def _chunks(parsed: _Parsed, r: int, d: int, nbits: int) -> list[np.ndarray]:
  """Graph indices in size order, cut into chunks whose padded arrays hold about _CHUNK_ENTRIES entries each."""
  order = np.argsort(parsed.sizes, kind="stable")
  sizes, num_edges = parsed.sizes[order].tolist(), parsed.num_edges[order].tolist()
  blocks = (r + 1) * (d + 1)

  def fits(num: int, p: int, q: int) -> bool:
    # The largest arrays are [B, P, P] distances, [B, P, Q] edge distances and [B, P, D, R] context counts.
    return num * p * (p + q + blocks) <= _CHUNK_ENTRIES and nbits + sum(_key_bits(num, p, r, d)) <= 63

  chunks, start = [], 0
  while start < len(order):
    p, q, end = sizes[start], num_edges[start], start + 1
    if nbits + sum(_key_bits(1, p, r, d)) > 63:
      raise ValueError(f"NSPDK: r={r}, d={d}, nbits={nbits} and a graph of {p} nodes overflow the 63-bit sort key")
    while end < len(order) and fits(end + 1 - start, max(p, sizes[end]), max(q, num_edges[end])):
      p, q, end = max(p, sizes[end]), max(q, num_edges[end]), end + 1
    chunks.append(order[start:end])
    start = end
  return chunks


def _chunk_features(parsed: _Parsed, ids: np.ndarray, r: int, d: int, nbits: int) -> scipy.sparse.csr_matrix:
  """Feature rows of the graphs `ids`, all at once on arrays padded to [B, P] nodes and [B, Q] edges."""
  num, sizes, num_edges = len(ids), parsed.sizes[ids], parsed.num_edges[ids]
  p, q = int(sizes.max()), max(int(num_edges.max()), 1)
  nb, npos, nidx = _ranges(parsed.node_start[ids], sizes)
  eb, epos, eidx = _ranges(parsed.edge_start[ids], num_edges)
  node_w = np.zeros((num, p), np.uint64)
  node_w[nb, npos] = parsed.node_hash[nidx]
  edge_w = np.zeros((num, q), np.uint64)  # padding edges weigh 0, so they leave every shell sum as it is
  edge_w[eb, epos] = parsed.edge_hash[eidx]
  ends = np.zeros((num, q, 2), np.int64)
  ends[eb, epos] = parsed.ends[eidx]
  adj = np.zeros((num, p, p), np.float32)
  adj[eb, ends[eb, epos, 0], ends[eb, epos, 1]] = 1
  adj[eb, ends[eb, epos, 1], ends[eb, epos, 0]] = 1

  # Distances between original nodes by breadth-first matrix products, capped at max(r, d) (`far` beyond). In the
  # expanded graph original nodes are 2 * dist apart and an edge node is 2 * min(dist to its ends) + 1 from a node.
  far = max(r, d) + 1
  dist = np.full((num, p, p), far, np.int8 if far < 127 else np.int32)
  diag = np.arange(p)
  dist[:, diag, diag] = 0
  frontier = (dist == 0).astype(np.float32)
  for t in range(1, far):
    new = (frontier @ adj > 0) & (dist == far)
    if not new.any():
      break
    dist[new] = t
    frontier = new.astype(np.float32)
  edge_dist = np.minimum(np.take_along_axis(dist, ends[:, None, :, 0], axis=2),
                         np.take_along_axis(dist, ends[:, None, :, 1], axis=2))
  # Largest radius each root has (shell 2R is non-empty iff some node is R away), -1 on padding.
  radii = np.arange(r + 1)
  valid = np.zeros((num, p), bool)
  valid[nb, npos] = True
  rad = np.where(valid, np.minimum(np.where(dist < far, dist, -1).max(axis=2), r), -1)

  # Shell s of root v as a multiset hash: the uint64 sum of its nodes' hashes, summed exactly in float64 as two 32-bit
  # halves (a shell has far fewer than 2**21 nodes). Shell 2s holds the nodes at distance s, shell 2s+1 the edges.
  def halves(w: np.ndarray) -> np.ndarray:
    return np.stack([w & _U64(0xFFFFFFFF), w >> _U64(32)], axis=-1).astype(np.float64)

  def shell_sum(distance: np.ndarray, w_halves: np.ndarray, s: int) -> np.ndarray:
    sums = ((distance == s).astype(np.float64) @ w_halves).astype(np.uint64)
    return sums[..., 0] + (sums[..., 1] << _U64(32))

  # Neighbourhood hash of radius R: a running hash over shells 0..2R, as EDeN's (but over multiset hashes).
  node_halves, edge_halves = halves(node_w), halves(edge_w)
  cum = np.full((num, p), _SHELL_TAG, np.uint64)
  neigh = np.empty((num, p, r + 1), np.uint64)
  for k in range(2 * r + 1):
    shell = shell_sum(dist, node_halves, k // 2) if k % 2 == 0 else shell_sum(edge_dist, edge_halves, k // 2)
    cum = _mix(cum ^ _mix(shell + _U64(k * int(_GOLDEN) % 2**64)))
    if k % 2 == 0:
      neigh[:, :, k // 2] = cum

  # Every feature becomes one 63-bit sort key (graph, bucket, block, count): sorting gathers equal features, and the
  # count rides in the low bits so that a pair or context seen several times needs only one entry.
  _, blkbits, wbits = _key_bits(num, p, r, d)
  bitmask = (1 << nbits) - 1
  blocks = (radii[None, :] * (d + 1) + np.arange(d + 1)[:, None]).astype(np.uint64)  # [D, R]

  def pack(graph: np.ndarray, hashed: np.ndarray, block: np.ndarray, count: np.ndarray) -> np.ndarray:
    bucket = hashed & _U64(bitmask)
    return ((((graph.astype(np.uint64) << _U64(nbits)) | bucket) << _U64(blkbits) | block) << _U64(wbits)) | count

  # Pair features of (v, u, R) at distance D, with the unordered pair taken once as v <= u and counted twice if v != u.
  # Rows are pairs and columns radii, so the gathers fetch whole rows; radii a root lacks are dropped at the end.
  pair_rad = np.minimum(rad[:, :, None], rad[:, None, :])
  flat = np.flatnonzero((dist <= d) & (pair_rad >= 0) & np.triu(np.ones((p, p), bool)))
  bv, u = np.divmod(flat, p)
  graph1 = bv // p
  rows = neigh.reshape(-1, r + 1)
  hv, hu = rows[bv], rows[graph1 * p + u]
  dist1 = dist.reshape(-1)[flat].astype(np.int64)
  lo, hi = np.minimum(hv, hu), np.maximum(hv, hu)
  block1 = blocks[dist1]
  hash1 = _mix(_mix(lo ^ _PAIR_TAG) + hi + block1 * _GOLDEN)
  keys1 = pack(graph1[:, None], hash1, block1, np.where(dist1 == 0, 1, 2).astype(np.uint64)[:, None])
  keys1 = keys1[radii <= pair_rad.reshape(-1)[flat][:, None]]

  # Half features of (u, R, D): counted once per root v at distance D from u that has radius R too. Dense over
  # [B, P, D, R], then the cells with no such v (or a radius u lacks) are dropped.
  has_rad = (radii <= rad[:, :, None]).astype(np.float32)
  counts = np.stack([(dist == dd).astype(np.float32) @ has_rad for dd in range(d + 1)], axis=2)  # [B, P, D, R]
  hash2 = _mix(_mix(neigh ^ _HALF_TAG)[:, :, None, :] + blocks * _GOLDEN)
  keys2 = pack(np.arange(num)[:, None, None, None], hash2, blocks, counts.astype(np.uint64))
  keys2 = keys2[(counts > 0) & (radii <= rad[:, :, None, None])]

  keys = np.concatenate([keys1, keys2])
  keys.sort()
  group = keys >> _U64(wbits)
  new_group = np.concatenate([[0], np.cumsum(group[1:] != group[:-1])])
  count = np.bincount(new_group, (keys & _U64((1 << wbits) - 1)).astype(np.float64))
  group = group[np.concatenate([[True], group[1:] != group[:-1]])]

  # Unit norm per (graph, block), then sum a graph's blocks that share a bucket and scale the row to unit norm.
  block_id = ((group >> _U64(blkbits + nbits)) << _U64(blkbits) | (group & _U64((1 << blkbits) - 1))).astype(np.int64)
  value = count / np.sqrt(np.bincount(block_id, count * count))[block_id]
  cell = group >> _U64(blkbits)
  change = cell[1:] != cell[:-1]
  value = np.bincount(np.concatenate([[0], np.cumsum(change)]), value)
  cell = cell[np.concatenate([[True], change])]
  row = (cell >> _U64(nbits)).astype(np.int64)
  value /= np.sqrt(np.bincount(row, value * value, minlength=num))[row]
  indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=num))])
  col = (cell & _U64(bitmask)).astype(np.int64) + 1
  return scipy.sparse.csr_matrix((value, col, indptr), shape=(num, bitmask + 2))


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
  parsed = _parse(graphs)
  if parsed.sizes.size == 0:
    return scipy.sparse.csr_matrix((0, (1 << nbits) + 1), dtype=np.float64)
  chunks = _chunks(parsed, r, d, nbits)
  x = scipy.sparse.vstack([_chunk_features(parsed, ids, r, d, nbits) for ids in chunks], format="csr")
  # Chunks run in size order; put the rows back in input order.
  return x[np.argsort(np.concatenate(chunks))]


def mmd_from_features(x: scipy.sparse.spmatrix, y: scipy.sparse.spmatrix) -> float:
  """Linear-kernel MMD^2 (biased, diagonal included, as GDSS) between two sets of feature rows."""
  if x.shape[0] == 0 or y.shape[0] == 0:
    raise ValueError(f"NSPDK MMD needs at least one graph on each side, got {x.shape[0]} and {y.shape[0]}")
  diff = np.asarray(x.mean(axis=0)).ravel() - np.asarray(y.mean(axis=0)).ravel()
  return float(max(diff @ diff, 0.0))


def mmd(x: Sequence[LabeledGraph], y: Sequence[LabeledGraph], r: int = 4, d: int = 4, nbits: int = 16) -> float:
  """NSPDK MMD^2 between two sets of graphs: GDSS's `compute_nspdk_mmd(x, y)` with EDeN's `complexity=4`."""
  return mmd_from_features(features(x, r, d, nbits), features(y, r, d, nbits))
