"""Graph-generation MMD (degree, clustering, ORCA orbits; GDSS and SPECTRE protocols) and the community-small data."""

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import scipy.stats

from mgvae_jax.data.community import community_sizes
from mgvae_jax.data.community import community_small
from mgvae_jax.evaluation import as_networkx
from mgvae_jax.evaluation import clustering_histogram
from mgvae_jax.evaluation import degree_histogram
from mgvae_jax.evaluation import gaussian
from mgvae_jax.evaluation import gaussian_emd
from mgvae_jax.evaluation import gaussian_tv
from mgvae_jax.evaluation import generation_mmd
from mgvae_jax.evaluation import mmd_squared
from mgvae_jax.evaluation import orbit_counts
from mgvae_jax.evaluation import orbit_statistic
from mgvae_jax.evaluation import PROTOCOLS
from mgvae_jax.evaluation import STATISTICS

KERNELS = {"gaussian_emd": gaussian_emd, "gaussian_tv": gaussian_tv, "gaussian": gaussian}

# Fixed graph sets for values checked against the reference code (no random generator involved).
GEN = ([nx.cycle_graph(n) for n in range(4, 12)] + [nx.wheel_graph(n) for n in range(5, 10)] +
       [nx.star_graph(n) for n in range(3, 8)])
REF = ([nx.path_graph(n) for n in range(4, 12)] + [nx.complete_graph(n) for n in range(3, 8)] +
       [nx.ladder_graph(n) for n in range(2, 7)])


def _add_random_edges(graphs, rate, seed=0):
  """Each non-edge becomes an edge with probability `rate`; the same draws for every rate, so sets are nested."""
  rng = np.random.default_rng(seed)
  out = []
  for g in graphs:
    n = g.number_of_nodes()
    u = rng.random((n, n))
    i, j = np.triu_indices(n, 1)
    add = u[i, j] < rate
    h = nx.Graph(g)
    h.add_edges_from(zip(i[add].tolist(), j[add].tolist()))
    out.append(h)
  return out


# ---------------------------------------------------------------------------------------------------------------------
# Orbit counts.

# Expected per-node rows, counted by hand. ORCA counts induced graphlets; orbits: 0 degree; 1 end / 2 middle of a
# 3-path; 3 triangle; 4 end / 5 inner of a 4-path; 6 leaf / 7 centre of a 3-star; 8 4-cycle; 9 pendant / 10 degree-2 /
# 11 degree-3 node of a paw; 12 degree-2 / 13 degree-3 node of a diamond; 14 K4.
#                       0  1  2  3  4  5  6  7  8  9 10 11 12 13 14
TRIANGLE_NODE = [2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # degree 2, in 1 triangle
PATH_END = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # 0-1-2-3 at 0: end of 3-path {0,1,2}, end of the 4-path
PATH_INNER = [2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # at 1: middle of {0,1,2}, end of {1,2,3}, inner of 4-path
STAR_CENTRE = [3, 0, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # middle of 3 three-paths, centre of the star
STAR_LEAF = [1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # end of 2 three-paths (via the centre), a leaf
CYCLE_NODE = [2, 2, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]  # middle of {prev, v, next}, end of 2 three-paths, C4
K4_NODE = [3, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # 3 triangles, no induced path, the K4
PAW_PENDANT = [1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # paw: triangle 0,1,2 with pendant 3 on 2
PAW_TRI = [2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]  # nodes 0, 1: 1 triangle, end of the 3-path {0,2,3}
PAW_HUB = [3, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # node 2: middle of {0,2,3} and {1,2,3}, 1 triangle
DIAMOND_2 = [2, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]  # K4 minus edge 0-1, at 0: 1 triangle, end of 2 three-paths
DIAMOND_3 = [3, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]  # at 2: 2 triangles, middle of {0,2,1}
ZERO = [0] * 15

HAND_COUNTED = {
    "triangle": (nx.complete_graph(3), [TRIANGLE_NODE] * 3),
    "4-path": (nx.path_graph(4), [PATH_END, PATH_INNER, PATH_INNER, PATH_END]),
    "4-star": (nx.star_graph(3), [STAR_CENTRE, STAR_LEAF, STAR_LEAF, STAR_LEAF]),
    "4-cycle": (nx.cycle_graph(4), [CYCLE_NODE] * 4),
    "K4": (nx.complete_graph(4), [K4_NODE] * 4),
    "paw": (nx.Graph([(0, 1), (0, 2), (1, 2), (2, 3)]), [PAW_TRI, PAW_TRI, PAW_HUB, PAW_PENDANT]),
    "diamond": (nx.Graph([(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]), [DIAMOND_2, DIAMOND_2, DIAMOND_3, DIAMOND_3]),
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_orbit_counts_equal_hand_counts(name):
  graph, expected = HAND_COUNTED[name]
  order = sorted(graph.nodes())
  counts = orbit_counts(graph)
  assert counts.shape == (graph.number_of_nodes(), 15) and counts.dtype == np.int64
  by_node = dict(zip(graph.nodes(), counts.tolist()))
  assert [by_node[v] for v in order] == expected


def test_orbit_counts_edge_cases():
  g = nx.complete_graph(3)
  g.add_node(3)  # isolated node: a zero row, the rest unchanged
  assert orbit_counts(g).tolist() == [TRIANGLE_NODE] * 3 + [ZERO]
  assert orbit_counts(nx.empty_graph(4)).tolist() == [ZERO] * 4  # no edges (orbit-count itself raises here)
  assert orbit_counts(nx.Graph()).shape == (0, 15)
  # Labels are mapped by position, not by str(label): 1 and "1" are two nodes of the path 1 - "1" - "x".
  mixed = nx.Graph([(1, "1"), ("1", "x")])
  assert orbit_counts(mixed).tolist() == [[1, 1] + [0] * 13, [2, 0, 1] + [0] * 12, [1, 1] + [0] * 13]
  np.testing.assert_allclose(orbit_statistic(nx.path_graph(4)), (np.array(PATH_END) + PATH_INNER) / 2)
  np.testing.assert_array_equal(orbit_statistic(nx.empty_graph(2)), np.zeros(15))
  with pytest.raises(ValueError, match="no nodes"):
    orbit_statistic(nx.Graph())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orbit_counts_satisfy_identities_on_random_graphs(seed):
  g = nx.gnp_random_graph(14, 0.4, seed=seed)
  c = orbit_counts(g)
  deg = np.array([g.degree(v) for v in g.nodes()])
  tri = np.array([nx.triangles(g, v) for v in g.nodes()])
  assert (c[:, 0] == deg).all() and (c[:, 3] == tri).all()
  assert (c[:, 2] == deg * (deg - 1) // 2 - tri).all()  # induced 3-path middles: neighbour pairs that are not adjacent
  ends = np.array([sum(g.degree(u) - 1 for u in g[v]) - 2 * nx.triangles(g, v) for v in g.nodes()])
  assert (c[:, 1] == ends).all()
  k4 = np.zeros(g.number_of_nodes(), np.int64)
  for quad in itertools.combinations(g.nodes(), 4):
    if g.subgraph(quad).number_of_edges() == 6:
      k4[list(quad)] += 1
  assert (c[:, 14] == k4).all()


# ---------------------------------------------------------------------------------------------------------------------
# Degree and clustering histograms.


def test_degree_and_clustering_histograms():
  paw = HAND_COUNTED["paw"][0]  # clustering: nodes 0, 1 -> 1, node 2 -> 1/3, pendant 3 -> 0
  assert degree_histogram(paw).tolist() == [0, 1, 2, 1]
  hist = clustering_histogram(paw)
  assert hist.shape == (100,) and hist.sum() == 4
  assert (hist[0], hist[33], hist[99]) == (1, 1, 2)  # 1.0 falls in the last bin, as np.histogram on [0, 1]
  assert clustering_histogram(paw, bins=3).tolist() == [1, 1, 2]
  assert degree_histogram(nx.empty_graph(3)).tolist() == [3]
  assert clustering_histogram(nx.empty_graph(3)).tolist() == [3] + [0] * 99
  with pytest.raises(ValueError, match="bins"):
    clustering_histogram(paw, bins=0)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels and MMD.


def test_kernels_on_hand_values():
  assert gaussian_tv([1, 0], [0, 1]) == pytest.approx(math.exp(-0.5))  # TV 1
  assert gaussian_tv([0.5, 0.5], [1]) == pytest.approx(math.exp(-0.125))  # padded to [1, 0]: TV 0.5
  assert gaussian_tv([1, 0], [0, 1], sigma=0.5) == pytest.approx(math.exp(-2.0))
  assert gaussian_tv([0.2, 0.8], [0.2, 0.8]) == 1.0
  assert gaussian([3, 4], [0], sigma=5.0) == pytest.approx(math.exp(-0.5))  # ||.||^2 = 25
  assert gaussian_emd([1, 0, 0], [0, 0, 1]) == pytest.approx(math.exp(-2.0))  # all mass moves 2 bins
  assert gaussian_emd([1, 0, 0], [0, 0, 1], distance_scaling=2.0) == pytest.approx(math.exp(-0.5))
  with pytest.raises(ValueError, match="equal masses"):
    gaussian_emd([1, 0], [0, 2])
  with pytest.raises(ValueError, match="sigma"):
    gaussian([1], [0], sigma=0.0)


def test_gaussian_emd_agrees_with_scipy_wasserstein():
  rng = np.random.default_rng(0)
  for _ in range(50):
    x, y = [rng.random(k) * (rng.random(k) < 0.7) + np.eye(k)[rng.integers(k)] for k in rng.integers(1, 30, 2)]
    x, y = x / x.sum(), y / y.sum()  # pmfs of different lengths, with zero bins
    scaling = rng.choice([1.0, 7.0, 100.0])
    w = scipy.stats.wasserstein_distance(np.arange(x.size), np.arange(y.size), x, y) / scaling
    sigma = w if w > 0 else 1.0  # then the kernel is exp(-1/2) iff our EMD equals w (to ~1e-9)
    assert gaussian_emd(x, y, sigma=sigma, distance_scaling=scaling) == pytest.approx(
        math.exp(-w * w / (2 * sigma * sigma)), rel=1e-9)


def test_mmd_squared_hand_values_include_the_diagonal():
  e = math.exp(-0.5)
  assert mmd_squared([[1, 0]], [[0, 1]], "gaussian_tv") == pytest.approx(2 - 2 * e)
  # K(X,X) = (2 + 2e) / 4, K(Y,Y) = 1, K(X,Y) = (1 + e) / 2: the biased estimate, diagonal terms included.
  assert mmd_squared([[1, 0], [0, 1]], [[1, 0]], gaussian_tv) == pytest.approx(0.5 - 0.5 * e)
  assert mmd_squared([[2, 0], [0, 5]], [[3]], gaussian_tv) == pytest.approx(0.5 - 0.5 * e)  # is_hist normalises
  assert mmd_squared([[2, 0]], [[0, 2]], gaussian_tv, is_hist=False) == pytest.approx(2 - 2 * math.exp(-2.0))


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("hist_eps", [0.0, 1e-6])
def test_vectorised_mmd_equals_pairwise_loop(kernel, hist_eps):
  rng = np.random.default_rng(1)
  xs = [rng.integers(0, 5, k) + np.eye(k, dtype=int)[0] for k in rng.integers(1, 12, 9)]  # counts, some bins 0
  ys = [rng.integers(0, 5, k) + np.eye(k, dtype=int)[-1] for k in rng.integers(1, 15, 7)]
  args = {"sigma": 0.3} | ({"distance_scaling": 4.0} if kernel == "gaussian_emd" else {})
  fast = mmd_squared(xs, ys, kernel, hist_eps=hist_eps, **args)
  slow_kernel = lambda x, y, **kw: KERNELS[kernel](x, y, **kw)  # not a built-in: pair-by-pair path
  slow = mmd_squared(xs, ys, slow_kernel, hist_eps=hist_eps, **args)
  # Literal: normalise, then mean over all pairs with the scalar kernel.
  norm = lambda s: [np.asarray(v, float) / (np.sum(v) + hist_eps) for v in s]
  mean = lambda p, q: np.mean([[KERNELS[kernel](u, v, **args) for v in q] for u in p])
  x, y = norm(xs), norm(ys)
  literal = mean(x, x) + mean(y, y) - 2 * mean(x, y)
  assert fast > 1e-3 and fast == pytest.approx(literal, rel=1e-10) and slow == pytest.approx(literal, rel=1e-10)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_mmd_of_a_set_with_itself_is_exactly_zero(kernel):
  rng = np.random.default_rng(2)
  samples = [rng.random(rng.integers(1, 40)) for _ in range(25)]
  assert mmd_squared(samples, samples, kernel) == 0.0
  assert mmd_squared(samples, samples, kernel, hist_eps=1e-6, sigma=0.1) == 0.0
  if kernel != "gaussian_emd":  # EMD needs equal masses
    assert mmd_squared(samples, samples, kernel, is_hist=False, sigma=0.7) == 0.0


def test_mmd_squared_rejects_bad_input():
  with pytest.raises(ValueError, match="samples1 is empty"):
    mmd_squared([], [[1]], "gaussian")
  with pytest.raises(ValueError, match="samples2 is empty"):
    mmd_squared([[1]], [], "gaussian")
  with pytest.raises(ValueError, match="unknown kernel"):
    mmd_squared([[1]], [[1]], "gaussian_l1")
  with pytest.raises(TypeError, match="distance_scaling"):
    mmd_squared([[1]], [[1]], "gaussian_tv", distance_scaling=2.0)
  with pytest.raises(ValueError, match="sigma"):
    mmd_squared([[1]], [[1]], "gaussian", sigma=-1.0)
  with pytest.raises(ValueError, match="equal mass"):
    mmd_squared([[1, 0]], [[0, 2]], "gaussian_emd", is_hist=False)
  with pytest.raises(ValueError, match="cannot be normalised"):
    mmd_squared([[0, 0]], [[1]], "gaussian_tv")
  with pytest.raises(ValueError, match=r"samples2\[0\] must be a 1-D"):
    mmd_squared([[1]], [np.ones((2, 2))], "gaussian")
  with pytest.raises(ValueError, match="non-finite"):
    mmd_squared([[np.nan]], [[1]], "gaussian")


# ---------------------------------------------------------------------------------------------------------------------
# Protocols and generation_mmd.


def test_protocol_constants():
  gdss, spectre = PROTOCOLS["gdss"], PROTOCOLS["spectre"]
  assert (gdss.degree.kernel, gdss.degree.sigma, gdss.degree.distance_scaling) == ("gaussian_emd", 1.0, 1.0)
  assert (gdss.clustering.kernel, gdss.clustering.sigma, gdss.clustering.distance_scaling) == ("gaussian_emd", 0.1, 100)
  assert (gdss.orbit.kernel, gdss.orbit.sigma, gdss.orbit.is_hist) == ("gaussian", 30.0, False)
  assert (gdss.clustering_bins, gdss.hist_eps) == (100, 0.0)
  assert [(s.kernel, s.sigma, s.is_hist) for s in (spectre.degree, spectre.clustering, spectre.orbit)] == [
      ("gaussian_tv", 1.0, True), ("gaussian_tv", 0.1, True), ("gaussian_tv", 30.0, False)]
  assert (spectre.clustering_bins, spectre.hist_eps) == (100, 1e-6)


@pytest.mark.parametrize("protocol, expected", [
    ("gdss", {"degree": 0.06480993843701288, "clustering": 0.15148063162495617, "orbit": 0.012882397693202652}),
    ("spectre", {"degree": 0.02763316332366017, "clustering": 0.11440634407383565, "orbit": 0.02443781778433607}),
])
def test_generation_mmd_matches_reference_code(protocol, expected):
  # Expected values: a literal port of GDSS's evaluation/{mmd,stats}.py and SPECTRE's util/dist_helper.py (pairwise
  # Python loops, pyemd 1.1 for the EMD, s / (sum + 1e-6) for SPECTRE) on the same statistics of GEN and REF.
  assert generation_mmd(GEN, REF, protocol) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_generation_mmd_of_a_set_with_itself_is_exactly_zero(protocol):
  graphs = community_small(30, seed=3) + [nx.empty_graph(5), nx.star_graph(4), HAND_COUNTED["paw"][0]]
  assert generation_mmd(graphs, graphs, protocol) == {s: 0.0 for s in STATISTICS}
  # Shuffled sets with relabelled nodes: zero up to rounding (sums in another order).
  rng = np.random.default_rng(0)
  shuffled = [nx.relabel_nodes(graphs[i], {v: f"n{v}" for v in graphs[i]}) for i in rng.permutation(len(graphs))]
  assert all(abs(v) < 1e-12 for v in generation_mmd(shuffled, graphs, protocol).values())


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_generation_mmd_grows_with_the_perturbation(protocol):
  base = community_small(48, seed=1)
  rows = [generation_mmd(_add_random_edges(base, rate), base, protocol) for rate in (0.0, 0.01, 0.03, 0.1, 0.2)]
  for statistic in STATISTICS:
    values = [r[statistic] for r in rows]
    assert values[0] == 0.0 and all(np.diff(values) > 0), (statistic, values)
  # Two independent draws of the recipe are closer than the 10% perturbation of one of them. Not for SPECTRE's
  # clustering: TV with sigma 0.1 on 100 bins makes k ~ 0 unless two histograms nearly coincide, so any two sets of
  # distinct small graphs sit at the floor mean K(X,X) + mean K(Y,Y) ~ 1/48 + 1/48 (both values above are ~0.042).
  fresh = generation_mmd(community_small(48, seed=2), base, protocol)
  checked = [s for s in STATISTICS if (protocol, s) != ("spectre", "clustering")]
  assert all(fresh[s] < rows[3][s] for s in checked), (fresh, rows[3])


def test_adjacency_input_matches_networkx_input():
  dense = [nx.to_numpy_array(g, dtype=np.int64) for g in GEN]
  assert generation_mmd(dense, REF) == generation_mmd(GEN, REF)
  assert generation_mmd(np.stack([nx.to_numpy_array(nx.cycle_graph(5), dtype=bool)] * 3), REF, statistics=["degree"]) \
      == generation_mmd([nx.cycle_graph(5)] * 3, REF, statistics=["degree"])
  padded = np.zeros((8, 8))
  padded[:5, :5] = nx.to_numpy_array(nx.cycle_graph(5))
  assert nx.is_isomorphic(as_networkx(padded, drop_isolated=True), nx.cycle_graph(5))
  assert as_networkx(padded).number_of_nodes() == 8
  assert as_networkx(np.zeros((4, 4)), drop_isolated=True).number_of_nodes() == 1  # as GDSS's adjs_to_graphs
  empty, star = nx.Graph(), nx.star_graph(3)
  star.add_node(9)
  assert as_networkx(empty, drop_isolated=True).number_of_nodes() == 1 and empty.number_of_nodes() == 0
  assert as_networkx(star, drop_isolated=True).number_of_nodes() == 4 and star.number_of_nodes() == 5  # input kept


def test_generation_mmd_drops_empty_generated_graphs():
  with pytest.warns(UserWarning, match="dropped 2 of 5 graphs with no nodes"):
    with_empty = generation_mmd([nx.Graph(), *GEN[:3], np.zeros((0, 0))], REF)
  assert with_empty == generation_mmd(GEN[:3], REF)
  with pytest.raises(ValueError, match="all 2 graphs have no nodes"):
    generation_mmd([nx.Graph(), nx.Graph()], REF)
  with pytest.raises(ValueError, match=r"reference\[1\] has no nodes"):
    generation_mmd(GEN, [REF[0], nx.Graph()])


def test_generation_mmd_rejects_bad_input():
  ok = nx.path_graph(3)
  cases = [
      (([], [ok]), ValueError, "generated is empty"),
      (([ok], iter([])), ValueError, "reference is empty"),
      (([ok, np.ones((2, 3))], [ok]), ValueError, r"generated\[1\]: .*square \[n, n\], got shape \(2, 3\)"),
      (([ok], [ok, np.zeros(4)]), ValueError, r"reference\[1\]: .*square"),
      (([np.array([[0, 1], [0, 0]])], [ok]), ValueError, r"generated\[0\]: .*symmetric"),
      (([np.array([[0, 2], [2, 0]])], [ok]), ValueError, "0/1"),
      (([np.eye(2)], [ok]), ValueError, "zero diagonal"),
      (([np.array([["0", "1"], ["1", "0"]])], [ok]), ValueError, "dtype"),
      (([nx.DiGraph([(0, 1)])], [ok]), ValueError, "undirected"),
      (([nx.MultiGraph([(0, 1)])], [ok]), ValueError, "MultiGraph"),
      (([nx.Graph([(0, 0), (0, 1)])], [ok]), ValueError, "self-loop"),
      ((ok, [ok]), TypeError, "sequence of graphs"),
      ((np.zeros((3, 3)), [ok]), TypeError, r"shape \(3, 3\)"),
  ]
  for args, error, match in cases:
    with pytest.raises(error, match=match):
      generation_mmd(*args)
  with pytest.raises(ValueError, match="unknown protocol"):
    generation_mmd([ok], [ok], protocol="graphrnn")
  with pytest.raises(ValueError, match="statistics"):
    generation_mmd([ok], [ok], statistics=["spectral"])


# ---------------------------------------------------------------------------------------------------------------------
# Community-small.


def _signature(graphs):
  return [(sorted(g.nodes(data="community")), sorted(g.edges())) for g in graphs]


def test_community_small_follows_the_recipe():
  graphs = community_small(300, seed=0)
  sizes = [g.number_of_nodes() for g in graphs]
  assert set(sizes) == set(range(12, 21))  # every size 12..20 occurs, odd ones included
  assert all(nx.is_connected(g) for g in graphs)
  intra_edges = intra_pairs = inter_edges = 0
  expected_inter = 0.0
  for g in graphs:
    n = g.number_of_nodes()
    labels = [g.nodes[v]["community"] for v in range(n)]
    assert sorted(g.nodes()) == list(range(n)) and labels == [0] * (n // 2) + [1] * (n - n // 2)
    cross = sum(labels[u] != labels[v] for u, v in g.edges())
    intra_edges += g.number_of_edges() - cross
    inter_edges += cross
    n1, n2 = community_sizes(n)
    intra_pairs += n1 * (n1 - 1) // 2 + n2 * (n2 - 1) // 2
    q = 0.05 * n / (n1 * n2)
    expected_inter += n1 * n2 * q + (1 - q)**(n1 * n2)  # Bernoulli edges, plus the forced one when none was drawn
  assert intra_edges / intra_pairs == pytest.approx(0.7, abs=0.02)
  assert inter_edges / len(graphs) == pytest.approx(expected_inter / len(graphs), abs=0.15)  # ~1.26 per graph


def test_community_small_is_seeded_and_varied():
  a = community_small(40, seed=7)
  assert _signature(a) == _signature(community_small(40, seed=7))
  assert _signature(a[:10]) == _signature(community_small(10, seed=7))  # a longer set extends a shorter one
  assert _signature(a) != _signature(community_small(40, seed=8))
  assert len({g.number_of_nodes() for g in a}) >= 6
  # Graphs of one size do not share their communities (GraphRNN's n_community seeds G(n, 0.7) with seed=i).
  by_size = {}
  for g in community_small(200, seed=1):
    first = [v for v, c in g.nodes(data="community") if c == 0]
    by_size.setdefault(g.number_of_nodes(), []).append(frozenset(g.subgraph(first).edges()))
  for size, communities in by_size.items():
    assert len(set(communities)) >= 0.9 * len(communities), size


def test_community_small_options_and_errors():
  assert community_sizes(13) == [6, 7] and community_sizes(12, 3) == [4, 4, 4] and community_sizes(14, 3) == [4, 5, 5]
  three = community_small(20, seed=0, num_communities=3, min_nodes=15, max_nodes=24)
  assert all(15 <= g.number_of_nodes() <= 24 and nx.is_connected(g) for g in three)
  assert {c for g in three for _, c in g.nodes(data="community")} == {0, 1, 2}
  assert community_small(0, seed=0) == []
  with pytest.raises(ValueError, match="num_communities"):
    community_small(1, seed=0, num_communities=1)
  with pytest.raises(ValueError, match="min_nodes <= max_nodes"):
    community_small(1, seed=0, min_nodes=20, max_nodes=12)
  with pytest.raises(ValueError, match="p_in"):
    community_small(1, seed=0, p_in=1.5)
  with pytest.raises(ValueError, match="lower p_out"):
    community_small(1, seed=0, p_out=5.0)
