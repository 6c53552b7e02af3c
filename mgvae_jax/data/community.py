"""Community-small: a seeded generator of small two-community graphs, the recipe of GraphRNN, EDP-GNN and GDSS.

The recipe (You et al. 2018, "Community-small": 2 communities, 12 <= |V| <= 20; implemented by EDP-GNN/GDSS as
`n_community` in `data/data_generators.py`, after GraphRNN's `n_community`), per graph:

  1. draw the size n uniformly from {min_nodes, ..., max_nodes};
  2. split the nodes into `num_communities` consecutive blocks of sizes n // C or n // C + 1 (for C = 2: n // 2 and
     n - n // 2; nodes 0..n//2-1 form community 0), and make each block an Erdos-Renyi graph G(n_c, p_in);
  3. add inter-community edges: each node pair of different communities independently with probability
     q = p_out * n / sum_{a<b} n_a n_b, so p_out * n (0.05 |V|) are expected. This is GDSS's p_make_a_bridge =
     2 p_inter / ((C - 1) k) for C communities of size k (the same q), and the GraphRNN paper's "0.05|V|
     inter-community edges"; p_out is not a per-pair probability (0.05 per pair would give ~4 edges, not ~1);
  4. for connectivity, as `n_community`: the candidate pairs are taken between the connected components of step 2's
     graph, pair of components by pair of components, and a component pair that received no edge gets one edge. So
     every graph is connected; an intra-community component split (rare at p_in = 0.7) is bridged at the same rate q.

Where this deliberately differs from the reference generators: every graph draws its own size and its own random
community graphs from one numpy Generator. GraphRNN's and GDSS's `n_community` call `nx.gnp_random_graph(size, 0.7,
seed=i)` with the fixed seed i, so all graphs of one size share the same two community graphs and differ only in their
few inter-community edges (GraphRNN's `community` datasets also draw the community sizes once for the whole set). GDSS
rounds n down to an even number (communities of n // 2 each), so its sizes are 12, 14, ..., 20; here odd n keep all
their nodes. The forced edge of step 4 joins a uniformly drawn pair instead of each component's first nodes.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph


def community_sizes(n: int, num_communities: int = 2) -> list[int]:
  """Sizes of the consecutive communities of an n-node graph: n // C each, the last n % C one node larger."""
  base, extra = divmod(int(n), int(num_communities))
  return [base + (1 if c >= num_communities - extra else 0) for c in range(num_communities)]


def _one_graph(rng: np.random.Generator, n: int, num_communities: int, p_in: float, p_out: float) -> nx.Graph:
  sizes = community_sizes(n, num_communities)
  block = np.repeat(np.arange(num_communities), sizes)  # [n] community of each node
  same = block[:, None] == block[None, :]  # [n, n]
  upper = np.triu(np.ones((n, n), bool), 1)  # [n, n] each unordered pair once
  adj = upper & same & (rng.random((n, n)) < p_in)  # [n, n] intra-community edges, upper triangle

  cross_pairs = sum(sizes[a] * sizes[b] for a in range(num_communities) for b in range(a + 1, num_communities))
  q = p_out * n / cross_pairs
  if q > 1:
    raise ValueError(f"community_small: p_out={p_out} asks for {p_out * n:.3g} inter-community edges among only "
                     f"{cross_pairs} node pairs (n={n}); lower p_out")

  num_comp, comp = scipy.sparse.csgraph.connected_components(scipy.sparse.csr_matrix(adj), directed=False)
  members = [np.flatnonzero(comp == c) for c in range(num_comp)]  # components in order of their first node
  for i in range(num_comp):
    for j in range(i + 1, num_comp):
      u, v = members[i], members[j]
      hit = rng.random((u.size, v.size)) < q  # [|u|, |v|]
      if not hit.any():
        hit[rng.integers(u.size), rng.integers(v.size)] = True
      a, b = np.nonzero(hit)
      lo, hi = np.minimum(u[a], v[b]), np.maximum(u[a], v[b])
      adj[lo, hi] = True

  g = nx.Graph()
  g.add_nodes_from((i, {"community": int(c)}) for i, c in enumerate(block))
  g.add_edges_from(np.argwhere(adj).tolist())
  return g


def community_small(num_graphs: int, seed: int, *, min_nodes: int = 12, max_nodes: int = 20, num_communities: int = 2,
                    p_in: float = 0.7, p_out: float = 0.05) -> list[nx.Graph]:
  """`num_graphs` community-small graphs (see the module docstring for the recipe), a pure function of the arguments.

  Graph k depends only on (seed, k and the other arguments), so a longer set extends a shorter one with the same seed.

  Args:
    num_graphs: how many graphs (GDSS's data/community_small.pkl holds 100).
    seed: seeds one `np.random.default_rng` that draws every graph in turn.
    min_nodes: smallest graph size (inclusive).
    max_nodes: largest graph size (inclusive).
    num_communities: communities per graph (>= 2).
    p_in: intra-community edge probability.
    p_out: inter-community edges per node: p_out * n are expected per graph (the GraphRNN paper's 0.05 |V|).

  Returns:
    Connected networkx graphs on nodes 0..n-1; node attribute "community" gives each node's community.
  """
  if int(num_graphs) < 0:
    raise ValueError(f"community_small: num_graphs must be >= 0, got {num_graphs}")
  if int(num_communities) < 2:
    raise ValueError(f"community_small: num_communities must be >= 2, got {num_communities}")
  if not num_communities <= min_nodes <= max_nodes:
    raise ValueError(f"community_small: need num_communities <= min_nodes <= max_nodes, got {num_communities}, "
                     f"{min_nodes}, {max_nodes}")
  if not (0.0 <= p_in <= 1.0 and p_out >= 0.0):
    raise ValueError(f"community_small: need 0 <= p_in <= 1 and p_out >= 0, got p_in={p_in}, p_out={p_out}")
  rng = np.random.default_rng(int(seed))
  graphs = []
  for _ in range(int(num_graphs)):
    n = int(rng.integers(min_nodes, max_nodes + 1))
    graphs.append(_one_graph(rng, n, int(num_communities), float(p_in), float(p_out)))
  return graphs
