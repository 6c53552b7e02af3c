"""Per-level padded cluster slots: gather, scatter, capacity and overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import hierarchy


def _random_case(rng, n_pad=10, k=3):
  n = int(rng.integers(1, n_pad + 1))
  mask = np.zeros(n_pad, bool)
  mask[rng.permutation(n_pad)[:n]] = True
  ids = np.where(mask, rng.integers(0, k, n_pad), k)
  return jnp.asarray(ids), jnp.asarray(mask)


# One compilation shared by every call with the same shapes (instead of op-by-op dispatch each time).
_cluster_slots = jax.jit(hierarchy.cluster_slots, static_argnums=(2, 3))


@pytest.mark.parametrize("seed", range(5))
def test_exact_slots_hold_every_real_node_once(seed):
  rng = np.random.default_rng(seed)
  ids, mask = _random_case(rng)
  slots = _cluster_slots(ids, mask, 3)
  index, smask = np.asarray(slots.index), np.asarray(slots.mask)
  assert index.shape == (3, 10)
  held = index[smask]
  np.testing.assert_array_equal(np.sort(held), np.flatnonzero(np.asarray(mask)))
  for k in range(3):
    members = index[k][smask[k]]
    np.testing.assert_array_equal(members, np.flatnonzero(np.asarray(ids) == k))  # stable: slot order kept
    assert np.all(~smask[k][len(members):])  # members first, then empty slots
  assert int(slots.num_overflow) == 0


def test_gather_and_scatter_round_trip():
  rng = np.random.default_rng(0)
  ids, mask = _random_case(rng, 8, 3)
  slots = hierarchy.cluster_slots(ids, mask, 3)
  x = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
  e = jnp.asarray(rng.normal(size=(8, 8, 2)), jnp.float32)
  back = hierarchy.scatter_nodes(hierarchy.gather_nodes(x, slots), slots, 8)
  np.testing.assert_allclose(back, x * mask[:, None])
  blocks = hierarchy.gather_edges(e, slots)  # [K, C, C, 2]
  index, smask = np.asarray(slots.index), np.asarray(slots.mask)
  for k in range(3):
    members = index[k][smask[k]]
    np.testing.assert_allclose(blocks[k][:len(members), :len(members)], np.asarray(e)[np.ix_(members, members)])
    assert np.all(np.asarray(blocks[k])[len(members):] == 0)
  same = (np.asarray(ids)[:, None] == np.asarray(ids)[None, :]) & np.asarray(mask)[:, None] & np.asarray(mask)[None]
  np.testing.assert_allclose(hierarchy.scatter_edges(blocks, slots, 8), np.asarray(e) * same[..., None])


def test_capacity_overflow_is_reported_not_dropped_silently():
  ids = jnp.asarray([0, 0, 0, 0, 1, 1, 2, 3])
  mask = jnp.asarray([1, 1, 1, 1, 1, 1, 1, 0], bool)
  slots = hierarchy.cluster_slots(ids, mask, 3, capacity=2)
  assert slots.index.shape == (3, 2)
  assert int(slots.num_overflow) == 2
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(slots.overflow)), [2, 3])  # the excess of cluster 0
  np.testing.assert_array_equal(np.asarray(slots.mask).sum(1), [2, 2, 1])
  with pytest.raises(ValueError, match="capacity must be >= 1"):
    hierarchy.cluster_slots(ids, mask, 3, capacity=0)


def test_batched_slots_under_jit():
  rng = np.random.default_rng(3)
  cases = [_random_case(rng) for _ in range(4)]
  ids = jnp.stack([c[0] for c in cases])
  mask = jnp.stack([c[1] for c in cases])
  slots = jax.jit(hierarchy.batched_cluster_slots, static_argnums=(2, 3))(ids, mask, 3, 4)
  assert slots.index.shape == (4, 3, 4)
  for b in range(4):
    single = _cluster_slots(ids[b], mask[b], 3, 4)
    np.testing.assert_array_equal(slots.index[b], single.index)
    want = sum(max(int((np.asarray(ids[b])[np.asarray(mask[b])] == k).sum()) - 4, 0) for k in range(3))
    assert int(slots.num_overflow[b]) == want


def test_flatten_unflatten_clusters():
  x = jnp.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
  flat = hierarchy.flatten_clusters(x)
  assert flat.shape == (6, 4, 5)
  np.testing.assert_array_equal(hierarchy.unflatten_clusters(flat, 2), x)
