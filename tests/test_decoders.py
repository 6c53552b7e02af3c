"""Decoders from node latents to edge logits: equivariance, symmetry, masking, and the parts formulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import decoders
from mgvae_jax import testing


def _latents(seed, sizes=(5, 3, 6), pad=6, d=4):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(len(sizes), pad, d)).astype(np.float32)
  mask = np.zeros((len(sizes), pad), bool)
  for b, n in enumerate(sizes):
    mask[b, rng.permutation(pad)[:n]] = True  # real nodes in scattered slots
  return jnp.asarray(z), jnp.asarray(mask)


@pytest.mark.parametrize("module", [decoders.SecondOrderDecoder(features=8, layers=2, out_channels=3),
                                    decoders.SecondOrderDecoder(features=8, layers=1, diagonal=True),
                                    decoders.DotProductDecoder(features=5)], ids=["second_order", "diagonal", "dot"])
def test_decoders_are_equivariant_symmetric_and_masked(module):
  z, mask = _latents(0)
  params = module.init(jax.random.PRNGKey(0), z, mask)
  fn = jax.jit(lambda z, m: module.apply(params, z, m))
  out = fn(z, mask)
  np.testing.assert_allclose(out, jnp.swapaxes(out, 1, 2), atol=1e-6)
  pm = np.asarray(mask[:, :, None] & mask[:, None, :])
  assert np.all(np.asarray(out)[~pm] == 0), "logits off the real pairs must be exactly 0"
  testing.assert_permutation_equivariant(fn, (z, mask), (1, 1), 2, jax.random.PRNGKey(1))


def test_symmetric_decoder_equals_symmetrised_general_decoder():
  """The parts formulation (no transposes) computes the general 15-map stack, symmetrised, with the same params."""
  z, mask = _latents(2)
  fast = decoders.SecondOrderDecoder(features=8, layers=3, out_channels=2, diagonal=True)
  general = decoders.SecondOrderDecoder(features=8, layers=3, out_channels=2, diagonal=True, symmetric=False)
  params = fast.init(jax.random.PRNGKey(3), z, mask)
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(general.init(jax.random.PRNGKey(3), z, mask)))
  ref = general.apply(params, z, mask)
  np.testing.assert_allclose(fast.apply(params, z, mask), 0.5 * (ref + jnp.swapaxes(ref, 1, 2)), atol=1e-5,
                             rtol=1e-5)


def test_graph_decoder_heads_follow_the_node_permutation():
  z, mask = _latents(4, sizes=(6, 4), pad=6)
  dec = decoders.GraphDecoder("second_order", num_nodes=6, node_classes=3, edge_classes=2, features=8, layers=2)
  params = dec.init(jax.random.PRNGKey(0), z, mask)
  fn = jax.jit(lambda z, m: dec.apply(params, z, m))
  out = fn(z, mask)
  np.testing.assert_allclose(out["edge"], jnp.swapaxes(out["edge"], 1, 2), atol=1e-6)
  testing.assert_permutation_equivariant(fn, (z, mask), (1, 1), {"edge": 2, "edge_type": 2, "node": 1},
                                         jax.random.PRNGKey(5))


def test_rank_pair_features_are_rank_distances_of_ranked_pairs():
  positions = jax.nn.one_hot(jnp.array([[2, 0, 1, 7, 0]]), 8) * jnp.array([[1, 1, 1, 1, 0]])[..., None]  # slot 4: none
  mask = jnp.array([[True, True, True, True, True]])
  f = np.asarray(decoders.rank_pair_features(positions, mask, max_offset=3))[0]  # [5, 5, 3]
  assert f[0, 2].tolist() == [1, 0, 0] and f[1, 2].tolist() == [1, 0, 0]  # ranks 2-1, 0-1: distance 1
  assert f[0, 1].tolist() == [0, 1, 0]  # ranks 2-0
  assert f[0, 3].tolist() == [0, 0, 1] and f[1, 3].tolist() == [0, 0, 1]  # 5 and 7: the last channel, ">= 3"
  assert not f[4].any() and not f[:, 4].any(), "an unranked slot has no rank distance"
  assert not f[np.arange(5), np.arange(5)].any(), "nor does a node to itself"
  np.testing.assert_array_equal(f, f.transpose(1, 0, 2))


def test_graph_decoder_reading_ranks_is_equivariant_when_the_ranks_permute_too():
  z, mask = _latents(6, sizes=(6, 4), pad=6)
  ranks = jnp.stack([jnp.argsort(jnp.argsort(-z[b, :, 0])) for b in range(2)])  # any per-graph ranking
  positions = jax.nn.one_hot(ranks, 6) * mask[..., None]
  dec = decoders.GraphDecoder("second_order", num_nodes=6, node_classes=3, edge_classes=2, features=8, layers=2,
                              pair_input="bilinear")
  params = dec.init(jax.random.PRNGKey(0), z, mask, positions)
  fn = jax.jit(lambda z, m, p: dec.apply(params, z, m, p))
  testing.assert_permutation_equivariant(fn, (z, mask, positions), (1, 1, 1), {"edge": 2, "edge_type": 2, "node": 1},
                                         jax.random.PRNGKey(5))
  # The ranks are read: the same latents with other ranks decode to other logits.
  other = fn(z, mask, jnp.roll(positions, 1, axis=-1))["edge"]
  assert np.abs(np.asarray(other - fn(z, mask, positions)["edge"])).max() > 1e-3
  with pytest.raises(ValueError, match="second_order decoder only"):
    decoders.GraphDecoder("dot", 6, 3, 2).init(jax.random.PRNGKey(0), z, mask, positions)


def test_rank_pointer_pairs_read_each_nodes_score_at_the_pairs_offset():
  positions = jax.nn.one_hot(jnp.array([[0, 1, 2, 3, 4, 5]]), 6) * jnp.array([[1, 1, 1, 1, 1, 0]])[..., None]
  mask = jnp.ones((1, 6), bool)
  k = 3
  scores = np.zeros((1, 6, 2 * k + 1, 1), np.float32)
  scores[0, 0, k + 2, 0] = 1.0  # rank 0: a partner 2 ranks on
  scores[0, 4, k - 3, 0] = 2.0  # rank 4: a partner 3 or more ranks back
  f = np.asarray(decoders.rank_pointer_pairs(jnp.asarray(scores), positions, mask))[0, ..., 0]
  want = np.zeros((6, 6))
  want[0, 2] = want[2, 0] = 0.5
  want[4, 0] = want[0, 4] = 1.0  # 0 - 4 = -4, clipped to -3
  want[4, 1] = want[1, 4] = 1.0
  np.testing.assert_allclose(f, want)  # slot 5 has no rank: nothing
