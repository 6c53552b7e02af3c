"""Fixed clusterings: recovery of planted clusters, padding invariance, batching and the image quadtree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import clustering
from mgvae_jax import fixed_clustering as fc

KEY = jax.random.PRNGKey(0)


def _blobs(seed, num_blobs=3, per_blob=8, dim=2, spread=10.0, sigma=0.3):
  """Well-separated Gaussian blobs: points [n, dim], labels [n]."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_blobs, dim)) * spread
  labels = np.repeat(np.arange(num_blobs), per_blob)
  points = centres[labels] + sigma * rng.normal(size=(labels.size, dim))
  return points.astype(np.float32), labels


def _cliques(sizes, bridge=False):
  """Disjoint cliques (no self-loops), optionally the first two joined by one edge: adjacency [n, n], labels [n]."""
  labels = np.repeat(np.arange(len(sizes)), sizes)
  a = (labels[:, None] == labels[None, :]).astype(np.float32) - np.eye(labels.size, dtype=np.float32)
  if bridge:
    a[sizes[0] - 1, sizes[0]] = a[sizes[0], sizes[0] - 1] = 1.0
  return a, labels


def _scatter(rng, x, pad_size, order):
  """x's rows (order 1) or rows and columns (order 2) in random slots, in order, of a garbage-filled array; + mask."""
  n = x.shape[0]
  slots = np.sort(rng.permutation(pad_size)[:n])
  shape = (pad_size,) * order + x.shape[order:]
  out = rng.normal(size=shape).astype(np.float32) * 1e4  # far from every real point
  out.reshape(-1)[::7] = np.nan  # padded slots may even hold NaN
  if order == 1:
    out[slots] = x
  else:
    out[np.ix_(slots, slots)] = x
  mask = np.zeros(pad_size, bool)
  mask[slots] = True
  return jnp.asarray(out), jnp.asarray(mask), slots


def _assert_same_partition(ids, labels):
  """ids and labels induce the same partition of the real nodes (equal up to relabelling)."""
  ids, labels = np.asarray(ids), np.asarray(labels)
  assert ids.shape == labels.shape
  pairs = set(zip(ids.tolist(), labels.tolist()))
  assert len(pairs) == len(set(ids.tolist())) == len(set(labels.tolist())), f"partitions differ: {ids} vs {labels}"


def _assert_padded_ids(ids, mask, k):
  ids, mask = np.asarray(ids), np.asarray(mask)
  assert ids.dtype == np.int32
  assert np.all(ids[~mask] == k) and np.all((ids[mask] >= 0) & (ids[mask] < k))


# ---------------------------------------------------------------------------------------------------------------------
# k-means.


def test_kmeans_recovers_blobs():
  points, labels = _blobs(0)
  ids, centroids = fc.kmeans(points, np.ones(len(points), bool), 3, KEY)
  _assert_same_partition(ids, labels)
  for k in range(3):  # each centroid is the mean of its cluster
    np.testing.assert_allclose(centroids[k], points[np.asarray(ids) == k].mean(0), atol=1e-4)


def test_kmeans_padding_invariant():
  """Real points scattered (in order) among garbage slots: the same ids (labels included) and centroids as unpadded."""
  points, labels = _blobs(1)
  ref_ids, ref_centroids = fc.kmeans(points, np.ones(len(points), bool), 3, KEY)
  rng = np.random.default_rng(1)
  for pad_size in (len(points), 40):
    padded, mask, slots = _scatter(rng, points, pad_size, order=1)
    ids, centroids = fc.kmeans(padded, mask, 3, KEY)
    _assert_padded_ids(ids, mask, 3)
    np.testing.assert_array_equal(np.asarray(ids)[slots], ref_ids)
    np.testing.assert_allclose(centroids, ref_centroids, atol=1e-5)
  _assert_same_partition(ref_ids, labels)


def test_kmeans_deterministic_for_fixed_key():
  points, _ = _blobs(2, num_blobs=4, per_blob=5, spread=1.0, sigma=1.0)  # overlapping: the init matters
  mask = np.ones(len(points), bool)
  a = fc.kmeans(points, mask, 4, KEY, num_iters=2)
  b = fc.kmeans(points, mask, 4, KEY, num_iters=2)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def test_kmeans_fewer_points_than_clusters():
  points = jnp.asarray([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [9.0, 9.0]])
  mask = jnp.asarray([True, True, True, False])
  ids, centroids = fc.kmeans(points, mask, 5, KEY)
  _assert_padded_ids(ids, mask, 5)
  assert len(set(np.asarray(ids)[:3].tolist())) == 3  # each real point alone; two clusters empty
  np.testing.assert_allclose(centroids[np.asarray(ids)[:3]], points[:3], atol=1e-6)
  assert np.all(np.isfinite(np.asarray(centroids)))


# ---------------------------------------------------------------------------------------------------------------------
# Spectral clustering.


@pytest.mark.parametrize("bridge", [False, True], ids=["disjoint", "bridged"])
def test_spectral_separates_cliques(bridge):
  a, labels = _cliques([5, 4], bridge=bridge)
  ids = fc.spectral_clustering(a, np.ones(len(labels), bool), 2, KEY)
  _assert_same_partition(ids, labels)


def test_spectral_embedding_rows():
  """Unit rows on real nodes with edges; zero rows on isolated and padded nodes."""
  a, _ = _cliques([3, 3])
  a = np.pad(a, ((0, 2), (0, 2)))  # slot 6: an isolated real node; slot 7: padding
  a[7, :] = a[:, 7] = 5.0  # garbage
  mask = np.array([True] * 7 + [False])
  emb = np.asarray(fc.spectral_embedding(a, mask, 2))
  np.testing.assert_allclose(np.linalg.norm(emb[:6], axis=-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(emb[6:], 0.0)
  # Disconnected: each clique collapses to one unit vector, orthogonal to the other clique's.
  np.testing.assert_allclose(emb[:3], np.broadcast_to(emb[0], (3, 2)), atol=1e-4)
  np.testing.assert_allclose(emb[0] @ emb[3], 0.0, atol=1e-4)


@pytest.mark.parametrize("bridge", [False, True], ids=["disjoint", "bridged"])
def test_spectral_padding_invariant(bridge):
  """Real nodes in random slots among garbage rows/columns: the same partition as the unpadded graph."""
  a, labels = _cliques([4, 5, 3], bridge=bridge)
  ref = fc.spectral_clustering(a, np.ones(len(labels), bool), 3, KEY)
  _assert_same_partition(ref, labels)
  rng = np.random.default_rng(3)
  for _ in range(2):
    padded, mask, slots = _scatter(rng, a, 20, order=2)
    ids = fc.spectral_clustering(padded, mask, 3, KEY)
    _assert_padded_ids(ids, mask, 3)
    _assert_same_partition(np.asarray(ids)[slots], ref)


def test_spectral_isolated_nodes_do_not_move_the_cut():
  """Isolated nodes (at the embedding's origin) get a cluster but leave the other nodes' partition as without them."""
  a, labels = _cliques([4, 5, 3], bridge=True)
  ref = fc.spectral_clustering(a, np.ones(len(labels), bool), 3, KEY)
  _assert_same_partition(ref, labels)
  a = np.pad(a, ((0, 3), (0, 3)))  # three isolated real nodes
  rng = np.random.default_rng(7)
  for pad_size in (15, 20):
    padded, mask, slots = _scatter(rng, a, pad_size, order=2)
    ids = fc.spectral_clustering(padded, mask, 3, KEY)
    _assert_padded_ids(ids, mask, 3)
    _assert_same_partition(np.asarray(ids)[slots[:12]], ref)


# ---------------------------------------------------------------------------------------------------------------------
# Feature k-means.


def test_feature_kmeans_pca_recovers_blobs():
  points, labels = _blobs(4, num_blobs=3, per_blob=10, dim=64, spread=3.0, sigma=0.5)
  ids = fc.feature_kmeans_clustering(points, np.ones(len(points), bool), 3, KEY, pca_dim=4)
  _assert_same_partition(ids, labels)
  rng = np.random.default_rng(4)
  padded, mask, slots = _scatter(rng, points, 45, order=1)
  padded_ids = fc.feature_kmeans_clustering(padded, mask, 3, KEY, pca_dim=4)
  _assert_padded_ids(padded_ids, mask, 3)
  _assert_same_partition(np.asarray(padded_ids)[slots], labels)


# ---------------------------------------------------------------------------------------------------------------------
# Images.


def test_grid_clustering_maps_pixels_to_parents():
  ids = fc.grid_clustering(8, 8, 2)
  assert ids.shape == (64,) and ids.dtype == np.int32
  for i in range(8):
    for j in range(8):
      assert ids[i * 8 + j] == (i // 2) * 4 + j // 2, (i, j)
  np.testing.assert_array_equal(np.bincount(ids), np.full(16, 4))
  rect = fc.grid_clustering(6, 9, 3)  # non-square, other block
  np.testing.assert_array_equal(np.bincount(rect), np.full(6, 9))
  assert rect[5 * 9 + 8] == 5


def test_quadtree_levels_compose():
  levels = fc.quadtree_levels(32, 3)
  assert [lv.size for lv in levels] == [1024, 256, 64]
  assert [int(lv.max()) + 1 for lv in levels] == [256, 64, 16]
  composed = levels[2][levels[1][levels[0]]]  # [1024] pixel -> node of the 4x4 level
  i, j = np.divmod(np.arange(1024), 32)
  np.testing.assert_array_equal(composed, (i // 8) * 4 + j // 8)
  assert fc.quadtree_levels(4, 0) == []


@pytest.mark.parametrize("call", [
    lambda: fc.grid_clustering(7, 8),
    lambda: fc.grid_clustering(8, 6, block=4),
    lambda: fc.grid_clustering(8, 8, block=0),
    lambda: fc.quadtree_levels(28, 3),
    lambda: fc.quadtree_levels(32, -1),
], ids=["height", "width", "block", "quadtree_size", "quadtree_levels"])
def test_image_bad_arguments_raise(call):
  with pytest.raises(ValueError):
    call()


# ---------------------------------------------------------------------------------------------------------------------
# Shared contract: Clustering compatibility, vmap, argument checks.


def _padded_graph():
  """Two cliques in random slots of 12, garbage elsewhere: (adjacency, features, mask)."""
  rng = np.random.default_rng(5)
  a, labels = _cliques([4, 4], bridge=True)
  adjacency, mask, slots = _scatter(rng, a, 12, order=2)
  features = rng.normal(size=(12, 6)).astype(np.float32) * 1e3
  features[slots] = 4.0 * labels[:, None] + rng.normal(size=(8, 6)) * 0.1
  return adjacency, jnp.asarray(features), mask


_CALLS = {
    "kmeans": lambda a, x, m, k: fc.kmeans(x, m, 3, k)[0],
    "spectral_clustering": lambda a, x, m, k: fc.spectral_clustering(a, m, 3, k),
    "feature_kmeans_clustering": lambda a, x, m, k: fc.feature_kmeans_clustering(x, m, 3, k, pca_dim=2),
}


@pytest.mark.parametrize("name", list(_CALLS))
def test_ids_make_a_clustering(name):
  a, x, m = _padded_graph()
  ids = _CALLS[name](a, x, m, KEY)
  _assert_padded_ids(ids, m, 3)
  c = clustering.clustering_from_ids(ids, m, 3)
  pi = np.asarray(c.assignment)
  np.testing.assert_array_equal(pi[np.asarray(m)].sum(-1), 1.0)
  assert set(np.unique(pi).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(pi[~np.asarray(m)], 0.0)
  np.testing.assert_array_equal(c.ids, ids)


def test_grid_ids_make_a_clustering():
  ids = fc.grid_clustering(4, 4)
  c = clustering.clustering_from_ids(jnp.asarray(ids), jnp.ones(16, bool), 4)
  np.testing.assert_array_equal(c.assignment.sum(0), 4.0)
  assert bool(c.coarse_mask.all())


@pytest.mark.parametrize("name", list(_CALLS))
def test_vmap_matches_per_graph(name):
  rng = np.random.default_rng(6)
  graphs = []
  for sizes in ([4, 4], [3, 5], [5, 2, 3]):
    a, labels = _cliques(sizes, bridge=True)
    adjacency, mask, slots = _scatter(rng, a, 12, order=2)
    features = rng.normal(size=(12, 6)).astype(np.float32)
    features[slots] = 4.0 * labels[:, None] + rng.normal(size=(len(labels), 6)) * 0.1
    graphs.append((adjacency, jnp.asarray(features), mask))
  a, x, m = (jnp.stack(t) for t in zip(*graphs))
  keys = jax.random.split(KEY, 3)
  batched = jax.vmap(_CALLS[name])(a, x, m, keys)
  for g in range(3):
    np.testing.assert_array_equal(batched[g], _CALLS[name](a[g], x[g], m[g], keys[g]))


@pytest.mark.parametrize("call", [
    lambda: fc.kmeans(jnp.zeros((4, 2)), jnp.ones(4, bool), 0, KEY),
    lambda: fc.kmeans(jnp.zeros((2, 4, 2)), jnp.ones((2, 4), bool), 2, KEY),
    lambda: fc.kmeans(jnp.zeros((4, 2)), jnp.ones(5, bool), 2, KEY),
    lambda: fc.kmeans(jnp.zeros((4, 2)), jnp.ones(4, bool), 2, KEY, num_iters=-1),
    lambda: fc.spectral_embedding(jnp.zeros((4, 3)), jnp.ones(4, bool), 2),
    lambda: fc.spectral_embedding(jnp.zeros((4, 4)), jnp.ones(4, bool), 5),
    lambda: fc.spectral_clustering(jnp.zeros((4, 4)), jnp.ones(4, bool), 0, KEY),
    lambda: fc.feature_kmeans_clustering(jnp.zeros(4), jnp.ones(4, bool), 2, KEY),
    lambda: fc.feature_kmeans_clustering(jnp.zeros((4, 3)), jnp.ones(4, bool), 2, KEY, pca_dim=4),
], ids=["k0", "batched_points", "mask_shape", "iters", "adjacency_shape", "dim", "spectral_k0", "features_ndim",
        "pca_dim"])
def test_bad_arguments_raise(call):
  with pytest.raises(ValueError):
    call()
