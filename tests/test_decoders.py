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
