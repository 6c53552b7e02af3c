"""Learning to cluster, balanced-cut KL and coarsening (Definitions 3.2, 3.11-3.13; eq. 1-2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rdkit import Chem

from mgvae_jax import clustering
from mgvae_jax import testing


def _partition(ids, n_pad, k):
  ids = np.asarray(ids)
  mask = np.zeros(n_pad, bool)
  mask[:len(ids)] = True
  full = np.full(n_pad, k)
  full[:len(ids)] = ids
  return clustering.clustering_from_ids(jnp.asarray(full), jnp.asarray(mask), k), jnp.asarray(mask)


def _reference_coarsening(a, ids, k):
  """Definition 3.2 written out with loops."""
  out = np.zeros((k, k))
  n = len(ids)
  for i in range(n):
    for j in range(n):
      if ids[i] == ids[j]:
        out[ids[i], ids[i]] += 0.5 * a[i, j]
      else:
        out[ids[i], ids[j]] += a[i, j]
  return out


def test_coarsen_path_graph():
  a = np.zeros((6, 6))
  for i in range(3):  # path 0-1-2-3 padded to 6
    a[i, i + 1] = a[i + 1, i] = 1
  clus, mask = _partition([0, 0, 1, 1], 6, 2)
  coarse = clustering.coarsen(jnp.asarray(a, jnp.float32), clus, mask)
  np.testing.assert_allclose(coarse, [[1, 1], [1, 1]])


def test_coarsen_aspirin_three_clusters():
  """Figure 1's example: aspirin split into acetyl ester, benzene ring and carboxylic acid."""
  mol = Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O")
  a = Chem.GetAdjacencyMatrix(mol).astype(np.float64)  # 13 heavy atoms, 13 bonds
  ids = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2]  # ester {C,C,=O,O}, ring, acid {C,=O,O}
  clus, mask = _partition(ids, 16, 3)
  a_pad = np.zeros((16, 16))
  a_pad[:13, :13] = a
  coarse = np.asarray(clustering.coarsen(jnp.asarray(a_pad, jnp.float32), clus, mask))
  want = np.array([[3, 1, 0], [1, 6, 1], [0, 1, 2]], np.float64)  # in-cluster bonds on the diagonal
  np.testing.assert_allclose(coarse, want)
  np.testing.assert_allclose(coarse, _reference_coarsening(a, ids, 3))
  assert np.triu(coarse).sum() == mol.GetNumBonds()


def test_coarsen_matches_definition_on_random_weighted_graphs():
  rng = np.random.default_rng(0)
  for _ in range(5):
    n, k = rng.integers(3, 9), rng.integers(1, 4)
    w = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
    a = np.triu(w, 1) + np.triu(w, 1).T
    ids = rng.integers(0, k, n)
    clus, mask = _partition(ids, n + 2, k)
    a_pad = np.zeros((n + 2, n + 2))
    a_pad[:n, :n] = a
    a_pad[n:, :] = a_pad[:, n:] = 7.0  # garbage on padded rows/columns
    np.testing.assert_allclose(clustering.coarsen(jnp.asarray(a_pad, jnp.float32), clus, mask),
                               _reference_coarsening(a, ids, k), rtol=1e-5, atol=1e-5)


def test_balanced_cut_kl_values():
  balanced, mask = _partition([0, 1, 2, 0, 1, 2], 8, 3)
  assert float(clustering.balanced_cut_kl(balanced.assignment, mask)) == pytest.approx(0.0, abs=1e-7)
  lumped, mask = _partition([1, 1, 1, 1], 6, 4)
  assert float(clustering.balanced_cut_kl(lumped.assignment, mask)) == pytest.approx(np.log(4), rel=1e-6)
  uneven, mask = _partition([0, 0, 0, 1], 9, 2)
  want = 0.75 * np.log(0.75 * 2) + 0.25 * np.log(0.25 * 2)
  assert float(clustering.balanced_cut_kl(uneven.assignment, mask)) == pytest.approx(want, rel=1e-6)


def test_edge_cut_values_and_gradient():
  # Two triangles {0,1,2} and {3,4,5} joined by the edge 2-3, in 8 slots (2 padded, with garbage edges).
  a = np.zeros((8, 8), np.float32)
  for i, j in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3), (6, 7), (0, 7)]:
    a[i, j] = a[j, i] = 1.0
  communities, mask = _partition([0, 0, 0, 1, 1, 1], 8, 2)
  a = jnp.asarray(a)
  assert float(clustering.edge_cut(communities.assignment, a, mask)) == pytest.approx(1 / 7, rel=1e-6)
  slices, _ = _partition([0, 1, 0, 1, 0, 1], 8, 2)  # every triangle split: 5 of 7 edges cross
  assert float(clustering.edge_cut(slices.assignment, a, mask)) == pytest.approx(5 / 7, rel=1e-6)
  one, _ = _partition([0] * 6, 8, 2)
  assert float(clustering.edge_cut(one.assignment, a, mask)) == pytest.approx(0.0, abs=1e-7)
  assert float(clustering.edge_cut(one.assignment, jnp.zeros_like(a), mask)) == 0.0  # no edges: nothing cut
  # Straight-through: the gradient moves node 2 (assigned alone to cluster 1) towards its neighbours' cluster 0.
  logits = jnp.asarray(np.where(np.arange(2)[None, :] == np.array([0, 0, 1, 1, 1, 1, 0, 0])[:, None], 2.0, 0.0),
                       jnp.float32)
  grad = jax.grad(lambda x: clustering.edge_cut(
      clustering.straight_through_assignment(x, mask).assignment, a, mask))(logits)
  assert float(grad[2, 0]) < 0 < float(grad[2, 1])
  assert not np.asarray(grad[6:]).any()  # padded slots get nothing


def test_straight_through_forward_is_hard_and_gradient_is_soft():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  mask = jnp.asarray([1, 1, 1, 1, 0, 0], bool)
  noise = jax.random.gumbel(jax.random.PRNGKey(0), (6, 3))
  clus = clustering.straight_through_assignment(logits, mask, noise, temperature=0.5)
  a = np.asarray(clus.assignment)
  assert set(np.unique(a)) <= {0.0, 1.0}
  np.testing.assert_array_equal(a[:4].sum(1), 1)
  np.testing.assert_array_equal(a[4:], 0)
  np.testing.assert_array_equal(np.asarray(clus.ids)[4:], 3)
  np.testing.assert_array_equal(np.asarray(clus.ids)[:4], np.argmax(np.asarray(logits + noise), -1)[:4])
  grad = jax.jit(jax.grad(lambda l: clustering.balanced_cut_kl(
      clustering.straight_through_assignment(l, mask, noise, 0.5).assignment, mask)))(logits)
  assert np.abs(np.asarray(grad[:4])).max() > 0, "straight-through gradient must reach the logits"
  np.testing.assert_array_equal(np.asarray(grad[4:]), 0)


def test_argmax_without_noise_is_deterministic_equation_1():
  logits = jnp.asarray([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
  clus = clustering.straight_through_assignment(logits, jnp.ones(3, bool))
  np.testing.assert_array_equal(clus.ids, [1, 0, 1])


def test_gumbel_temperature_schedule():
  assert float(clustering.gumbel_temperature(0, 1.0, 0.1, 100)) == pytest.approx(1.0)
  assert float(clustering.gumbel_temperature(100, 1.0, 0.1, 100)) == pytest.approx(0.1)
  assert float(clustering.gumbel_temperature(1000, 1.0, 0.1, 100)) == pytest.approx(0.1)
  assert 0.1 < float(clustering.gumbel_temperature(50, 1.0, 0.1, 100)) < 1.0


@pytest.mark.parametrize("order", [1, 2])
def test_learned_clustering_module(order):
  rng = np.random.default_rng(2)
  x, e, m = testing.random_graph_batch(rng, [5, 3], 7, node_dim=3, edge_dim=2)
  x, e, m = jnp.asarray(x), jnp.asarray(e), jnp.asarray(m)
  module = clustering.LearnedClustering(num_clusters=3, order=order, features=8)
  params = jax.jit(lambda x, e, m: module.init({"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1)},
                                               x, e, m, train=True))(x, e, m)
  evaluate = jax.jit(lambda p, x, e, m: module.apply(p, x, e, m, train=False))
  eval1, logits = evaluate(params, x, e, m)
  eval2, _ = evaluate(params, x, e, m)
  np.testing.assert_array_equal(eval1.ids, eval2.ids)  # deterministic without the rng
  np.testing.assert_array_equal(np.asarray(eval1.ids)[~np.asarray(m)], 3)  # padded: no cluster
  assert np.all(np.asarray(eval1.assignment)[~np.asarray(m)] == 0)

  def loss(p):
    clus, _ = module.apply(p, x, e, m, train=True, rngs={"gumbel": jax.random.PRNGKey(5)})
    return jax.vmap(clustering.balanced_cut_kl)(clus.assignment, m).sum(), clus

  (_, train), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  np.testing.assert_array_equal(np.asarray(train.ids)[~np.asarray(m)], 3)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, f"no straight-through gradient at {jax.tree_util.keystr(path)}"


def test_node_standardize_is_masked_and_equivariant():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(3.0, 5.0, size=(9, 4)), jnp.float32)
  mask = jnp.asarray([True] * 6 + [False] * 3)
  y = np.asarray(clustering.node_standardize(x, mask))
  np.testing.assert_allclose(y[:6].mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(y[:6].std(0), 1.0, atol=1e-3)
  assert np.all(y[6:] == 0)  # padded rows: zero, and their garbage did not enter the statistics
  x2 = x.at[6:].set(1e6)
  np.testing.assert_allclose(clustering.node_standardize(x2, mask), y, atol=1e-6)
  perm = jnp.asarray([3, 0, 5, 1, 4, 2, 6, 7, 8])
  np.testing.assert_allclose(clustering.node_standardize(x[perm], mask[perm]), y[np.asarray(perm)], atol=1e-5)


def test_norm_spreads_nodes_that_share_a_common_component():
  """Features = a large shared vector + small node-specific parts (Cora's GCN outputs look like this): without the
  standardisation nearly every node takes the same argmax cluster; with it, the clusters spread."""
  rng = np.random.default_rng(0)
  n, k = 64, 8
  x = 50.0 + 0.1 * rng.normal(size=(1, n, 6))
  e = np.zeros((1, n, n, 1), np.float32)
  m = np.ones((1, n), bool)
  x, e, m = jnp.asarray(x, jnp.float32), jnp.asarray(e), jnp.asarray(m)
  used = {}
  for norm in (False, True):
    module = clustering.LearnedClustering(num_clusters=k, features=16, layers=1, norm=norm)
    params = jax.jit(lambda x, e, m: module.init({"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1)},
                                                 x, e, m, train=False))(x, e, m)
    clus, _ = jax.jit(lambda p, x, e, m: module.apply(p, x, e, m, train=False))(params, x, e, m)
    used[norm] = len(np.unique(np.asarray(clus.ids)))
  assert used[False] <= 2 and used[True] >= k // 2, used


def test_learned_clustering_rejects_bad_order():
  module = clustering.LearnedClustering(num_clusters=2, order=3)
  with pytest.raises(ValueError, match="order must be 1 or 2"):
    module.init(jax.random.PRNGKey(0), jnp.ones((1, 3, 1)), jnp.ones((1, 3, 3, 1)), jnp.ones((1, 3), bool),
                train=False)
