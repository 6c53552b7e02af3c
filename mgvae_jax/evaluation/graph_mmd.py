"""Graph-generation MMD: degree, clustering-coefficient and 4-node orbit statistics, GDSS and SPECTRE protocols.

The generic-graph benchmarks (community-small, ego-small, grid, ...) compare a set of generated graphs with the test
set by the squared MMD of three per-graph statistics:

  degree      `nx.degree_histogram`, normalised to a pmf;
  clustering  histogram of the nodes' clustering coefficients, 100 bins on [0, 1], normalised to a pmf;
  orbit       ORCA's 15 node-orbit counts of the graphlets with 2 to 4 nodes, summed over the nodes and divided by
              the number of nodes (a vector, not a histogram, so not normalised).

Two protocols differ only in the kernel between two such statistics (constants in `PROTOCOLS`, each with the source
file it was read from):

  "gdss"     GraphRNN's settings as kept by GDSS (Jo et al. 2022): Gaussian-EMD kernel for degree and clustering,
             Gaussian (L2) kernel for orbits.
  "spectre"  GRAN's settings as used by SPECTRE (Martinkus et al. 2022) and DiGress (Vignac et al. 2023), whose
             `spectre_utils.py` / `dist_helper.py` are the same code: Gaussian-TV kernel for all three.

Both use `compute_mmd`'s estimator, mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y) with the diagonal terms included:
the biased estimate of MMD^2 (not its root), which can come out a hair below 0 by rounding and is returned as is.

Orbits come from the `orbit-count` package (Python bindings of ORCA, Hocevar & Demsar 2014, the program the reference
code shells out to), with ORCA's orbit numbering. Deviations from the reference code, all about inputs it mishandles:

  * A graph with nodes but no edges has every orbit count 0 (orbit 0 is the degree). We return zeros without calling
    orbit-count, which raises on an empty edge list; the reference `orca()` wrappers fail or are skipped there.
  * A generated graph with no nodes is dropped with a warning (GDSS and SPECTRE drop them for degree and clustering;
    for orbits they divide by zero or skip the graph). A reference graph with no nodes is an error.
  * Self-loops, directed graphs and multigraphs are rejected with a ValueError instead of being skipped or miscounted
    (ORCA refuses self-loops; GDSS's `adjs_to_graphs` removes them before evaluating).

Only numpy/scipy do the kernel arithmetic, vectorised over all pairs: for 1-D histograms the EMD with ground distance
|i - j| / s equals the L1 distance between the two CDFs divided by s, so pyemd is not needed (see `gaussian_emd`).
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import networkx as nx
import numpy as np
import scipy.spatial.distance

NUM_ORBITS = 15  # ORCA's node orbits 0..14 of the connected graphlets with 2, 3 and 4 nodes
STATISTICS = ("degree", "clustering", "orbit")

GraphLike = Union[nx.Graph, np.ndarray, Any]  # a networkx graph or a dense 0/1 adjacency [n, n] (numpy, jax, lists)
Kernel = Union[str, Callable[..., float]]

_ORBIT_HINT = "install it with: pip install orbit-count==0.1.0"
_MAX_PAIRS_PER_BLOCK = 1 << 22  # kernel entries computed at once (32 MiB of float64), to bound memory on big sets


# ---------------------------------------------------------------------------------------------------------------------
# Inputs.


def as_networkx(graph: GraphLike, *, drop_isolated: bool = False) -> nx.Graph:
  """An undirected simple networkx graph from a networkx graph or a dense 0/1 adjacency matrix.

  A networkx graph is returned as is after checks (undirected, not a multigraph, no self-loops). A matrix must be a
  square, symmetric 0/1 array [n, n] (bool, int or float) with a zero diagonal; node i is row i.

  Args:
    graph: an `nx.Graph`, or an array-like adjacency [n, n].
    drop_isolated: remove isolated nodes, as GDSS's `adjs_to_graphs` does to generated padded adjacency matrices
      (padding rows are isolated); as there, a graph left with no nodes becomes a single isolated node, so an empty
      sample still counts (as a poor one). Off by default: an unpadded matrix's isolated nodes are real nodes.

  Returns:
    The graph (the same object when no node is dropped from a networkx input).

  Raises:
    ValueError: a directed graph or multigraph, self-loops, or a matrix that is not square, symmetric and 0/1.
  """
  if isinstance(graph, nx.Graph):
    if graph.is_directed() or graph.is_multigraph():
      raise ValueError(f"expected an undirected simple graph (nx.Graph), got a {type(graph).__name__}; convert it "
                       "with nx.Graph(graph.to_undirected()) first")
    loops = nx.number_of_selfloops(graph)
    if loops:
      raise ValueError(f"the graph has {loops} self-loop(s); ORCA and the MMD protocols take simple graphs: remove "
                       "them with graph.remove_edges_from(list(nx.selfloop_edges(graph)))")
    g = graph
  else:
    g = _from_adjacency(graph)
  if drop_isolated:
    isolated = list(nx.isolates(g))
    if isolated or g.number_of_nodes() == 0:
      g = g.copy()  # never modify the caller's graph
      g.remove_nodes_from(isolated)
    if g.number_of_nodes() == 0:
      g.add_node(0)
  return g


def _from_adjacency(adj: Any) -> nx.Graph:
  a = np.asarray(adj)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"an adjacency matrix must be square [n, n], got shape {a.shape}")
  if a.dtype == np.bool_:
    a = a.astype(np.int8)
  elif not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"an adjacency matrix must be bool, int or float, got dtype {a.dtype}")
  bad = (a != 0) & (a != 1)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise ValueError(f"an adjacency matrix must be 0/1, got {a[i, j]!r} at ({i}, {j}); threshold it first")
  asym = a != a.T
  if asym.any():
    i, j = np.argwhere(asym)[0]
    raise ValueError(f"an adjacency matrix must be symmetric, got {a[i, j]!r} at ({i}, {j}) but {a[j, i]!r} at "
                     f"({j}, {i})")
  loops = np.flatnonzero(np.diagonal(a))
  if loops.size:
    raise ValueError(f"an adjacency matrix must have a zero diagonal (no self-loops), got 1 at node(s) "
                     f"{loops[:5].tolist()}")
  g = nx.empty_graph(a.shape[0])
  g.add_edges_from(np.argwhere(np.triu(a, 1)).tolist())
  return g


def _graphs(graphs: Iterable[GraphLike], name: str) -> list[nx.Graph]:
  """Each entry of `graphs` as networkx; errors name the argument and the index."""
  if isinstance(graphs, nx.Graph) or (isinstance(graphs, np.ndarray) and graphs.ndim < 3):
    what = f"array of shape {graphs.shape}" if isinstance(graphs, np.ndarray) else type(graphs).__name__
    raise TypeError(f"{name} must be a sequence of graphs (or a stack of adjacency matrices [B, n, n]), got a single "
                    f"{what}")
  out = []
  for i, g in enumerate(graphs):
    try:
      out.append(as_networkx(g))
    except ValueError as e:
      raise ValueError(f"{name}[{i}]: {e}") from None
  if not out:
    raise ValueError(f"{name} is empty: the MMD needs at least one graph on each side")
  return out


# ---------------------------------------------------------------------------------------------------------------------
# Per-graph statistics.


def degree_histogram(graph: GraphLike) -> np.ndarray:
  """`nx.degree_histogram`: entry d counts the nodes of degree d.  # [max_degree + 1] int64 (empty for no nodes)"""
  return np.asarray(nx.degree_histogram(as_networkx(graph)), dtype=np.int64)


def clustering_histogram(graph: GraphLike, bins: int = 100) -> np.ndarray:
  """Histogram of the nodes' clustering coefficients, `bins` equal bins on [0, 1] (GraphRNN).  # [bins] int64"""
  if int(bins) < 1:
    raise ValueError(f"clustering_histogram: bins must be >= 1, got {bins}")
  coeffs = list(nx.clustering(as_networkx(graph)).values())
  hist, _ = np.histogram(coeffs, bins=int(bins), range=(0.0, 1.0))
  return hist.astype(np.int64)


def _orbit_count_module():
  try:
    import orbit_count  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"orbit statistics need the orbit-count package (ORCA bindings), which is not importable ({e}); "
                      f"{_ORBIT_HINT}") from e
  return orbit_count


def _orbit_counts_many(graphs: Sequence[nx.Graph]) -> list[np.ndarray]:
  """`orbit_counts` of several checked graphs, the ones with edges in one (OpenMP-parallel) orbit-count call."""
  out: list[Optional[np.ndarray]] = [None] * len(graphs)
  todo = []
  for i, g in enumerate(graphs):
    if g.number_of_edges() == 0:
      # orbit-count (like the ORCA file reader) cannot take an empty edge list; with no edge every count is 0.
      out[i] = np.zeros((g.number_of_nodes(), NUM_ORBITS), np.int64)
    else:
      todo.append(i)
  if todo:
    oc = _orbit_count_module()
    # orbit-count maps nodes through str(label), which would merge nodes 1 and "1": give it 0..n-1 in node order.
    relabelled = [nx.convert_node_labels_to_integers(graphs[i]) for i in todo]
    for i, counts in zip(todo, oc.batched_node_orbit_counts(relabelled, graphlet_size=4)):
      counts = np.asarray(counts, dtype=np.int64)
      if counts.shape != (graphs[i].number_of_nodes(), NUM_ORBITS):
        raise RuntimeError(f"orbit-count returned shape {counts.shape} for a graph with {graphs[i].number_of_nodes()} "
                           f"nodes; expected (n, {NUM_ORBITS})")
      if (counts < 0).any():  # the bindings return int32; a huge hub could overflow
        raise OverflowError("orbit-count returned negative counts (int32 overflow in the bindings?)")
      out[i] = counts
  return out  # type: ignore[return-value]


def orbit_counts(graph: GraphLike) -> np.ndarray:
  """ORCA's node-orbit counts for graphlets of 2 to 4 nodes, in `graph.nodes()` order.  # [n, 15] int64

  Orbits count *induced* graphlets. ORCA's numbering (Hocevar & Demsar 2014): 0 edge (the degree); 1 end and 2 middle
  of a 3-path; 3 triangle; 4 end and 5 inner node of a 4-path; 6 leaf and 7 centre of a 3-star; 8 4-cycle; 9 pendant,
  10 degree-2 and 11 degree-3 node of a paw (triangle with a pendant); 12 degree-2 and 13 degree-3 node of a diamond
  (K4 minus an edge); 14 K4. A graph with no edges gives zeros (see the module docstring).
  """
  return _orbit_counts_many([as_networkx(graph)])[0]


def orbit_statistic(graph: GraphLike) -> np.ndarray:
  """The orbit statistic of GraphRNN/GDSS: orbit counts summed over nodes / number of nodes.  # [15] float64"""
  g = as_networkx(graph)
  if g.number_of_nodes() == 0:
    raise ValueError("orbit_statistic: the graph has no nodes")
  return _orbit_counts_many([g])[0].sum(axis=0) / g.number_of_nodes()


# ---------------------------------------------------------------------------------------------------------------------
# Kernels between two 1-D statistics (shorter one zero-padded, as the reference `process_tensor`).


def _pad_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.ndim != 1 or y.ndim != 1:
    raise ValueError(f"kernels take 1-D vectors, got shapes {x.shape} and {y.shape}")
  n = max(x.size, y.size)
  return np.pad(x, (0, n - x.size)), np.pad(y, (0, n - y.size))


def _check_sigma(sigma: float, distance_scaling: float = 1.0) -> None:
  if not sigma > 0 or not distance_scaling > 0:
    raise ValueError(f"sigma and distance_scaling must be > 0, got sigma={sigma}, distance_scaling={distance_scaling}")


def gaussian_emd(x: Any, y: Any, sigma: float = 1.0, distance_scaling: float = 1.0) -> float:
  """exp(-EMD(x, y)^2 / (2 sigma^2)), the EMD with ground distance |i - j| / distance_scaling (GraphRNN, GDSS).

  x and y are pmfs (equal mass; `mmd_squared` normalises histograms). In 1-D the optimal transport cost between two
  equal-mass histograms on the bins 0..L-1 is sum_k |X_k - Y_k| times the bin spacing, X and Y the cumulative sums:
  mass crossing the boundary between bins k and k+1 is exactly |X_k - Y_k|. So this equals pyemd's `emd(x, y,
  toeplitz(range(L)) / distance_scaling)` of the reference code without pyemd.
  """
  _check_sigma(sigma, distance_scaling)
  x, y = _pad_pair(x, y)
  if not np.isclose(x.sum(), y.sum(), rtol=1e-4, atol=1e-12):
    raise ValueError(f"gaussian_emd needs equal masses (pmfs), got sums {x.sum()} and {y.sum()}")
  emd = np.abs(np.cumsum(x) - np.cumsum(y)).sum() / distance_scaling
  return float(np.exp(-emd * emd / (2 * sigma * sigma)))


def gaussian_tv(x: Any, y: Any, sigma: float = 1.0) -> float:
  """exp(-TV(x, y)^2 / (2 sigma^2)) with TV = sum |x - y| / 2 (GRAN, SPECTRE, DiGress)."""
  _check_sigma(sigma)
  x, y = _pad_pair(x, y)
  tv = np.abs(x - y).sum() / 2.0
  return float(np.exp(-tv * tv / (2 * sigma * sigma)))


def gaussian(x: Any, y: Any, sigma: float = 1.0) -> float:
  """exp(-||x - y||^2 / (2 sigma^2)) (GraphRNN/GDSS's kernel for orbit statistics)."""
  _check_sigma(sigma)
  x, y = _pad_pair(x, y)
  d2 = np.square(x - y).sum()
  return float(np.exp(-d2 / (2 * sigma * sigma)))


def _pairwise_sq_distance(name: str, a: np.ndarray, b: np.ndarray, len_a: np.ndarray, len_b: np.ndarray,
                          distance_scaling: float) -> np.ndarray:
  """Squared distances of the named kernel between the rows of a [m, L] and b [k, L] (true lengths len_*).  # [m, k]"""
  if name == "gaussian_emd":  # EMD = L1 between the CDFs / distance_scaling (see gaussian_emd)
    d = scipy.spatial.distance.cdist(np.cumsum(a, axis=1), np.cumsum(b, axis=1), "cityblock")
    # Past both true lengths the CDFs are flat at the two masses; the reference pads each pair only to the longer of
    # the two, so remove those (L - max length) * |mass difference| terms (0 for exact pmfs, tiny with hist_eps > 0).
    tail = (a.shape[1] - np.maximum(len_a[:, None], len_b[None, :])) * np.abs(a.sum(1)[:, None] - b.sum(1)[None, :])
    d = np.maximum(d - tail, 0.0) / distance_scaling
    return d * d
  if name == "gaussian_tv":
    d = scipy.spatial.distance.cdist(a, b, "cityblock") / 2.0
    return d * d
  return scipy.spatial.distance.cdist(a, b, "sqeuclidean")  # sums squares of differences: exactly 0 for equal rows


_KERNELS: Mapping[str, Callable[..., float]] = {"gaussian_emd": gaussian_emd, "gaussian_tv": gaussian_tv,
                                                "gaussian": gaussian}
_KERNEL_ARGS = {"gaussian_emd": {"sigma", "distance_scaling"}, "gaussian_tv": {"sigma"}, "gaussian": {"sigma"}}


def _kernel_name(kernel: Kernel) -> Optional[str]:
  """The name of a built-in kernel (given by name or function), or None for another callable."""
  if isinstance(kernel, str):
    if kernel not in _KERNELS:
      raise ValueError(f"unknown kernel {kernel!r}; known: {sorted(_KERNELS)}")
    return kernel
  for name, fn in _KERNELS.items():
    if kernel is fn:
      return name
  if not callable(kernel):
    raise TypeError(f"kernel must be a name in {sorted(_KERNELS)} or a callable k(x, y, **kwargs), got {kernel!r}")
  return None


# ---------------------------------------------------------------------------------------------------------------------
# MMD.


def _stack(samples: Sequence[np.ndarray], length: int) -> np.ndarray:
  """Zero-pad 1-D samples to `length` and stack them.  # [num_samples, length] float64"""
  out = np.zeros((len(samples), length), np.float64)
  for i, s in enumerate(samples):
    out[i, :s.size] = s
  return out


def _as_vectors(samples: Any, name: str) -> list[np.ndarray]:
  if isinstance(samples, np.ndarray) and samples.ndim == 2:
    samples = list(samples)
  vectors = []
  for i, s in enumerate(samples):
    v = np.asarray(s, dtype=np.float64)
    if v.ndim != 1:
      raise ValueError(f"{name}[{i}] must be a 1-D vector, got shape {v.shape}")
    if not np.isfinite(v).all():
      raise ValueError(f"{name}[{i}] has non-finite entries")
    vectors.append(v)
  if not vectors:
    raise ValueError(f"{name} is empty: the MMD needs at least one sample on each side")
  return vectors


def _normalise(x: np.ndarray, name: str, eps: float) -> np.ndarray:
  """Rows divided by their sums (+ eps, SPECTRE's 1e-6).  # [m, L]"""
  sums = x.sum(axis=1, keepdims=True) + eps
  if (sums <= 0).any():
    raise ValueError(f"{name}: a histogram sums to {float(sums.min())} and cannot be normalised (is_hist=True)")
  return x / sums


def _mean_kernel(a: np.ndarray, b: np.ndarray, len_a: np.ndarray, len_b: np.ndarray, name: str, sigma: float,
                 distance_scaling: float) -> float:
  """mean_ij k(a_i, b_j) over all pairs, in row blocks to bound memory."""
  rows = max(1, _MAX_PAIRS_PER_BLOCK // max(1, b.shape[0]))
  total = 0.0
  for start in range(0, a.shape[0], rows):
    d2 = _pairwise_sq_distance(name, a[start:start + rows], b, len_a[start:start + rows], len_b, distance_scaling)
    total += float(np.exp(-d2 / (2 * sigma * sigma)).sum())
  return total / (a.shape[0] * b.shape[0])


def mmd_squared(samples1: Any, samples2: Any, kernel: Kernel, is_hist: bool = True, *, hist_eps: float = 0.0,
                **kernel_args: float) -> float:
  """Biased squared MMD, mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y): GraphRNN/GDSS's `compute_mmd`.

  Args:
    samples1: 1-D statistics of the first set (any lengths; zero-padded to a common one), or a 2-D array of rows.
    samples2: the same for the second set.
    kernel: "gaussian_emd", "gaussian_tv", "gaussian" (or those functions), vectorised over all pairs; any other
      callable k(x, y, **kernel_args) -> float is applied pair by pair (slow) to the (normalised) samples as given,
      so it pads as it needs, like the reference kernels.
    is_hist: normalise each sample to sum 1 first (degree and clustering histograms; not orbit vectors).
    hist_eps: added to each sum before normalising: 0 in GDSS, 1e-6 in SPECTRE/DiGress (`dist_helper.compute_mmd`).
    **kernel_args: the kernel's `sigma` (and `distance_scaling` for gaussian_emd).

  Returns:
    The squared MMD; 0.0 exactly when both sets hold the same samples in the same order.
  """
  x = _as_vectors(samples1, "samples1")
  y = _as_vectors(samples2, "samples2")
  name = _kernel_name(kernel)
  length = max(v.size for v in x + y)
  a, b = _stack(x, length), _stack(y, length)
  if is_hist:
    a, b = _normalise(a, "samples1", hist_eps), _normalise(b, "samples2", hist_eps)
  if name is None:  # as the reference `disc`: each pair as given (normalised, unpadded); the kernel pads
    u = [row[:v.size] for row, v in zip(a, x)]
    w = [row[:v.size] for row, v in zip(b, y)]

    def mean_k(p: list[np.ndarray], q: list[np.ndarray]) -> float:
      return float(np.mean([[kernel(s, t, **kernel_args) for t in q] for s in p]))
    return mean_k(u, u) + mean_k(w, w) - 2 * mean_k(u, w)
  unknown = set(kernel_args) - _KERNEL_ARGS[name]
  if unknown:
    raise TypeError(f"{name} takes {sorted(_KERNEL_ARGS[name])}, got unexpected {sorted(unknown)}")
  sigma = float(kernel_args.get("sigma", 1.0))
  distance_scaling = float(kernel_args.get("distance_scaling", 1.0))
  _check_sigma(sigma, distance_scaling)
  len_a, len_b = np.array([v.size for v in x]), np.array([v.size for v in y])
  if name == "gaussian_emd":
    mass = np.concatenate([a.sum(1), b.sum(1)])
    if not np.allclose(mass, mass[0], rtol=1e-4, atol=1e-12):
      raise ValueError(f"gaussian_emd needs samples of equal mass (pmfs: is_hist=True), got sums from {mass.min()} to "
                       f"{mass.max()}")
  kxx = _mean_kernel(a, a, len_a, len_a, name, sigma, distance_scaling)
  kyy = _mean_kernel(b, b, len_b, len_b, name, sigma, distance_scaling)
  kxy = _mean_kernel(a, b, len_a, len_b, name, sigma, distance_scaling)
  return kxx + kyy - 2 * kxy


# ---------------------------------------------------------------------------------------------------------------------
# Protocols.


@dataclasses.dataclass(frozen=True)
class StatisticSetting:
  """How one statistic enters the MMD: `mmd_squared(..., kernel, is_hist, sigma=sigma[, distance_scaling=...])`."""

  kernel: str
  sigma: float
  is_hist: bool
  distance_scaling: Optional[float] = None  # gaussian_emd only: ground distance |i - j| / distance_scaling


@dataclasses.dataclass(frozen=True)
class Protocol:
  """The settings of one published evaluation protocol, and the files they were read from."""

  name: str
  degree: StatisticSetting
  clustering: StatisticSetting
  orbit: StatisticSetting
  clustering_bins: int
  hist_eps: float
  sources: tuple[str, ...]


PROTOCOLS: Mapping[str, Protocol] = types.MappingProxyType({
    # GDSS (harryjo97/GDSS): evaluation/stats.py degree_stats -> compute_mmd(ref, pred, kernel=KERNEL) with defaults
    # sigma=1.0, distance_scaling=1.0; clustering_stats -> compute_mmd(..., sigma=1.0 / 10, distance_scaling=bins),
    # bins=100; orbit_stats_all -> compute_mmd(..., kernel=gaussian, is_hist=False, sigma=30.0). The kernels are
    # utils/loader.py load_eval_settings: degree and cluster gaussian_emd, orbit gaussian. evaluation/mmd.py
    # compute_mmd normalises with s / np.sum(s) (no eps). GraphRNN's eval/stats.py (JiaxuanYou/graph-generation) has the
    # same kernels and constants.
    "gdss": Protocol(
        name="gdss",
        degree=StatisticSetting("gaussian_emd", sigma=1.0, is_hist=True, distance_scaling=1.0),
        clustering=StatisticSetting("gaussian_emd", sigma=0.1, is_hist=True, distance_scaling=100.0),
        orbit=StatisticSetting("gaussian", sigma=30.0, is_hist=False),
        clustering_bins=100,
        hist_eps=0.0,
        sources=("harryjo97/GDSS evaluation/stats.py", "harryjo97/GDSS evaluation/mmd.py",
                 "harryjo97/GDSS utils/loader.py"),
    ),
    # SPECTRE (KarolisMart/SPECTRE) util/eval_helper.py with compute_emd=False (the default; DiGress's
    # src/analysis/spectre_utils.py is the same code): degree_stats -> compute_mmd(..., kernel=gaussian_tv) with
    # default sigma=1.0; clustering_stats -> compute_mmd(..., kernel=gaussian_tv, sigma=1.0 / 10), bins=100;
    # orbit_stats_all -> compute_mmd(..., kernel=gaussian_tv, is_hist=False, sigma=30.0). util/dist_helper.py
    # (DiGress src/analysis/dist_helper.py) compute_mmd normalises with s / (np.sum(s) + 1e-6).
    "spectre": Protocol(
        name="spectre",
        degree=StatisticSetting("gaussian_tv", sigma=1.0, is_hist=True),
        clustering=StatisticSetting("gaussian_tv", sigma=0.1, is_hist=True),
        orbit=StatisticSetting("gaussian_tv", sigma=30.0, is_hist=False),
        clustering_bins=100,
        hist_eps=1e-6,
        sources=("KarolisMart/SPECTRE util/eval_helper.py", "KarolisMart/SPECTRE util/dist_helper.py",
                 "cvignac/DiGress src/analysis/spectre_utils.py", "cvignac/DiGress src/analysis/dist_helper.py"),
    ),
})


def _protocol(protocol: Union[str, Protocol]) -> Protocol:
  if isinstance(protocol, Protocol):
    return protocol
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
  return PROTOCOLS[protocol]


def _statistic_samples(graphs: Sequence[nx.Graph], statistic: str, p: Protocol) -> list[np.ndarray]:
  if statistic == "degree":
    return [degree_histogram(g) for g in graphs]
  if statistic == "clustering":
    return [clustering_histogram(g, p.clustering_bins) for g in graphs]
  counts = _orbit_counts_many(graphs)
  return [c.sum(axis=0) / g.number_of_nodes() for c, g in zip(counts, graphs)]


def generation_mmd(generated: Iterable[GraphLike], reference: Iterable[GraphLike],
                   protocol: Union[str, Protocol] = "gdss", statistics: Sequence[str] = STATISTICS) -> dict[str, float]:
  """Squared MMD between generated and reference graphs for degree, clustering and orbit statistics.

  Args:
    generated: networkx graphs or dense 0/1 adjacency matrices [n, n] (unpadded; see `as_networkx` for padded ones).
      Graphs with no nodes are dropped with a warning, as GDSS and SPECTRE do.
    reference: the same for the reference (test) set; a graph with no nodes is an error here.
    protocol: "gdss" (Gaussian-EMD / Gaussian kernels) or "spectre" (Gaussian-TV), see `PROTOCOLS`; or a `Protocol`.
    statistics: which of "degree", "clustering", "orbit" to compute.

  Returns:
    {statistic: squared MMD} for the requested statistics.

  Raises:
    ValueError: an empty set (naming the argument), a malformed graph (naming the argument and index), a reference
      graph with no nodes, or an unknown protocol/statistic.
  """
  p = _protocol(protocol)
  statistics = tuple(statistics)
  unknown = [s for s in statistics if s not in STATISTICS]
  if unknown or not statistics:
    raise ValueError(f"statistics must be a non-empty subset of {STATISTICS}, got {statistics}")
  gen = _graphs(generated, "generated")
  ref = _graphs(reference, "reference")
  empty_ref = [i for i, g in enumerate(ref) if g.number_of_nodes() == 0]
  if empty_ref:
    raise ValueError(f"reference[{empty_ref[0]}] has no nodes ({len(empty_ref)} such graphs); a reference set should "
                     "not contain empty graphs")
  kept = [g for g in gen if g.number_of_nodes() > 0]
  if len(kept) < len(gen):
    if not kept:
      raise ValueError(f"generated: all {len(gen)} graphs have no nodes; nothing to evaluate")
    warnings.warn(f"generated: dropped {len(gen) - len(kept)} of {len(gen)} graphs with no nodes (as GDSS/SPECTRE "
                  "do); the MMD is over the rest", stacklevel=2)
  result: dict[str, float] = {}
  for statistic in statistics:
    setting: StatisticSetting = getattr(p, statistic)
    kernel_args = {"sigma": setting.sigma}
    if setting.distance_scaling is not None:
      kernel_args["distance_scaling"] = setting.distance_scaling
    result[statistic] = mmd_squared(_statistic_samples(kept, statistic, p), _statistic_samples(ref, statistic, p),
                                    setting.kernel, setting.is_hist, hist_eps=p.hist_eps, **kernel_args)
  return result
