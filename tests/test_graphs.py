"""Padded dense graph batches: constructors, round trips, validation and static sizes."""

import jax
import jax.numpy as jnp
import jraph
import networkx as nx
import numpy as np
import pytest

from mgvae_jax import graphs
from mgvae_jax import testing


def _path(n):
  a = np.zeros((n, n))
  for i in range(n - 1):
    a[i, i + 1] = a[i + 1, i] = 1
  return a


def test_from_arrays_pads_and_masks():
  batch = graphs.from_arrays([_path(3), _path(5)], node_features=[np.ones((3, 2)), 2 * np.ones((5, 2))],
                             pad_size=6, num_graphs=3)
  assert batch.nodes.shape == (3, 6, 2) and batch.edges.shape == (3, 6, 6, 1) and batch.mask.shape == (3, 6)
  np.testing.assert_array_equal(batch.n_node, [3, 5, 0])
  np.testing.assert_array_equal(batch.adjacency[0, :3, :3], _path(3))
  assert float(jnp.abs(batch.nodes[0, 3:]).sum()) == 0 and float(jnp.abs(batch.edges[2]).sum()) == 0
  assert bool(batch.pair_mask[1, 4, 4]) and not bool(batch.pair_mask[1, 4, 5])


def test_graphs_tuple_round_trip():
  rng = np.random.default_rng(0)
  nodes, edges, mask = testing.random_graph_batch(rng, [4, 1, 6], 7, node_dim=2, edge_dim=3, garbage_padding=False,
                                                  scatter=False)
  batch = graphs.GraphBatch(jnp.asarray(nodes), jnp.asarray(edges), jnp.asarray(mask))
  gt = graphs.to_graphs_tuple(batch)
  np.testing.assert_array_equal(gt.n_node, [4, 1, 6])
  assert gt.senders.shape == gt.receivers.shape == (int(gt.n_edge.sum()),)
  back = graphs.from_graphs_tuple(gt, pad_size=7)
  np.testing.assert_allclose(back.nodes, batch.nodes, atol=1e-6)
  np.testing.assert_allclose(back.edges, batch.edges, atol=1e-6)
  np.testing.assert_array_equal(back.mask, batch.mask)


def test_from_graphs_tuple_accepts_jraph_padding():
  gt = jraph.GraphsTuple(nodes=np.arange(3.0)[:, None], edges=None, senders=np.array([0, 1, 1, 2]),
                         receivers=np.array([1, 0, 2, 1]), n_node=np.array([3]), n_edge=np.array([4]), globals=None)
  padded = jraph.pad_with_graphs(gt, n_node=5, n_edge=6, n_graph=2)
  batch = graphs.from_graphs_tuple(padded, pad_size=4, require_symmetric=False)
  np.testing.assert_array_equal(batch.n_node, [3, 2])
  np.testing.assert_array_equal(batch.adjacency[0, :3, :3], _path(3))


def test_from_networkx_matches_arrays():
  g1 = nx.cycle_graph(4)
  for v in g1.nodes:
    g1.nodes[v]["x"] = [float(v), 1.0]
  g2 = nx.path_graph(3)
  for v in g2.nodes:
    g2.nodes[v]["x"] = [0.0, float(v)]
  nx.set_edge_attributes(g2, 2.5, "w")
  batch = graphs.from_networkx([g1, g2], node_attr="x", pad_size=5)
  np.testing.assert_allclose(batch.adjacency[0, :4, :4], nx.to_numpy_array(g1))
  np.testing.assert_allclose(batch.nodes[0, :4, 0], [0, 1, 2, 3])
  weighted = graphs.from_networkx([g2], edge_attr="w")
  np.testing.assert_allclose(weighted.adjacency[0], 2.5 * _path(3))


@pytest.mark.parametrize("kwargs,match", [
    (dict(adjacencies=[_path(3), np.ones((2, 3))]), r"graph 1: adjacency must be a square"),
    (dict(adjacencies=[_path(3), _path(5)], pad_size=4), r"graph 1: has 5 nodes, more than the pad size 4"),
    (dict(adjacencies=[np.triu(np.ones((3, 3)), 1)]), r"graph 0: adjacency is not symmetric"),
    (dict(adjacencies=[_path(2), _path(3)], node_features=[np.ones((2, 1)), np.array([[1.0], [np.nan], [0]])]),
     r"graph 1: node features contains a non-finite value"),
    (dict(adjacencies=[_path(2), _path(3)], node_features=[np.ones((2, 1))]), r"node_features has 1 entries"),
    (dict(adjacencies=[_path(3)], node_features=[np.ones((2, 1))]), r"graph 0: node features must have shape \[3, F\]"),
    (dict(adjacencies=[_path(2)], edge_features=[np.ones((2, 2, 1)) * np.array([[[0], [1]], [[2], [0]]])]),
     r"graph 0: edge features are not symmetric"),
    (dict(adjacencies=[_path(2)], num_graphs=0), r"num_graphs=0 is smaller than the 1 graphs"),
])
def test_bad_input_raises_named_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    graphs.from_arrays(**kwargs)


def test_directed_input_allowed_when_asked():
  a = np.triu(np.ones((3, 3)), 1)
  batch = graphs.from_arrays([a], require_symmetric=False)
  np.testing.assert_allclose(batch.adjacency[0], a)


def test_graphs_tuple_edge_out_of_range():
  gt = jraph.GraphsTuple(nodes=None, edges=None, senders=np.array([0]), receivers=np.array([5]),
                         n_node=np.array([2]), n_edge=np.array([1]), globals=None)
  with pytest.raises(ValueError, match="graph 0: an edge points outside"):
    graphs.from_graphs_tuple(gt)


def test_size_buckets_and_bucket_size():
  buckets = graphs.size_buckets(38)
  assert buckets[-1] == 40 and list(buckets) == sorted(set(buckets)) and len(buckets) <= 5
  assert graphs.bucket_size(9, buckets) == min(b for b in buckets if b >= 9)
  assert graphs.bucket_size(40, buckets) == 40
  with pytest.raises(ValueError, match="larger than the largest bucket"):
    graphs.bucket_size(41, buckets)


def test_pad_batch_under_jit_keeps_real_content():
  batch = graphs.from_arrays([_path(3), _path(2)])
  padded = jax.jit(lambda b: graphs.pad_batch(b, pad_size=5, num_graphs=4))(batch)
  assert padded.mask.shape == (4, 5)
  np.testing.assert_array_equal(padded.n_node, [3, 2, 0, 0])
  np.testing.assert_allclose(padded.edges[:2, :3, :3], batch.edges)
  with pytest.raises(ValueError, match="cannot shrink"):
    graphs.pad_batch(padded, pad_size=2)


def test_permute_nodes_matches_array_permutation():
  rng = np.random.default_rng(1)
  nodes, edges, mask = testing.random_graph_batch(rng, [3, 5], 6)
  batch = graphs.GraphBatch(jnp.asarray(nodes), jnp.asarray(edges), jnp.asarray(mask))
  perm = testing.random_permutations(jax.random.PRNGKey(0), 2, 6)
  out = graphs.permute_nodes(batch, perm)
  np.testing.assert_allclose(out.edges, testing.permute_array(batch.edges, perm, 2))
  np.testing.assert_allclose(out.nodes, testing.permute_array(batch.nodes, perm, 1))
  np.testing.assert_array_equal(out.mask, testing.permute_array(batch.mask, perm, 1))


def test_batch_is_a_pytree():
  batch = graphs.from_arrays([_path(3)])
  doubled = jax.tree_util.tree_map(lambda x: x * 2 if x.dtype != bool else x, batch)
  assert isinstance(doubled, graphs.GraphBatch)
  np.testing.assert_allclose(doubled.adjacency, 2 * batch.adjacency)
