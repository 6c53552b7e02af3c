"""Bounded cluster capacity keeps MGVAE permutation equivariant: on real ZINC molecules, with nodes overflowing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import graphs
from mgvae_jax import hierarchy
from mgvae_jax import mgn
from mgvae_jax import testing
from mgvae_jax import vae
from mgvae_jax.chem import featurise

# Drug-like molecules of ZINC250k's test split (27-33 heavy atoms): four clusters of at most 16 atoms overflow.
ZINC = ("N#Cc1ccc(-c2ccc(O[C@@H](C(=O)N3CCCC3)c3ccccc3)cc2)cc1",
        "CCOc1ccc(OCC)c([C@H]2C(C#N)=C(N)N(c3ccccc3C(F)(F)F)C3=C2C(=O)CCC3)c1",
        "Cc1nc2c(c(Nc3ncc(C)s3)n1)CCN(C(=O)CCc1ccccc1)C2",
        "CC(=O)Nc1c2n(c3ccccc13)C[C@](C)(C(=O)NC1CCCCC1)N(C1CCCCC1)C2=O")


def _setup(rank_features=False, clustering="learned", decoder_positions=False, overflow_posterior=False):
  feat = featurise.Featuriser("zinc", chemical_features=True, rank_features=rank_features)
  batch, report = feat.featurise_many(ZINC)
  assert report.kept == len(ZINC)
  cfg = vae.MGVAEConfig(
      mgn=mgn.MGNConfig(num_clusters=(4, 2), capacity=(8, 2), clustering=clustering, posterior="full",
                        local_decoder="none", latent_dim=8, encoder_features=8, encoder_layers=1, cluster_features=8,
                        pool_features=8, global_encoder_layers=1, overflow_posterior=overflow_posterior),
      max_nodes=feat.max_nodes, node_classes=feat.num_types, edge_classes=feat.num_edge_types, decoder_features=8,
      decoder_layers=1, decoder_positions=decoder_positions)
  model = vae.MGVAE(cfg)
  batch = jax.tree_util.tree_map(jnp.asarray, batch)
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda b: model.init(rngs, b, train=True))(batch)
  return cfg, model, params, batch


@pytest.mark.heavy
@pytest.mark.parametrize("rank_features,decoder_positions", [(False, False), (True, False), (True, True)],
                         ids=["plain", "ranks", "ranks_read_by_the_decoder_and_overflow_posterior"])
def test_encoder_and_loss_are_equivariant_with_overflowing_clusters(rank_features, decoder_positions):
  cfg, model, params, batch = _setup(rank_features, "learned", decoder_positions, overflow_posterior=decoder_positions)
  b, n = batch.mask.shape
  gumbel = [jax.random.gumbel(jax.random.PRNGKey(5 + i), (b, s, k))
            for i, (s, k) in enumerate(zip(cfg.level_sizes(), cfg.mgn.num_clusters))]
  lnoise = [tuple(jax.random.normal(jax.random.PRNGKey(20 + 2 * i + j), (b, s, cfg.mgn.latent_dim)) for j in range(2))
            for i, s in enumerate(cfg.level_sizes())]

  no_atom = cfg.node_classes - 1

  def run(batch, g, ln, train):
    out = model.apply(params, batch, train=train, noise=g if train else None, latent_noise=ln if train else None,
                      edge_pos_weight=3.0)
    finest = out.hierarchy.levels[0]
    # "No atom" slots are identical isolated nodes: which of them a full cluster keeps is a tie the loss cannot see,
    # so node-wise outputs are compared on the real atoms.
    atom = batch.nodes[..., no_atom] == 0
    mean = jnp.where(atom[..., None], finest.posterior_mean, 0.0)
    return mean, finest.slots.overflow & atom, out.hierarchy.num_overflow, out.loss, out.kl, out.reconstruction

  for train in (False, True):
    jitted = jax.jit(lambda *a: run(*a, train))
    out = jitted(batch, gumbel, lnoise)
    assert int(np.asarray(out[2])[:, 0].max()) > 0, "the test needs overflowing clusters"
    if cfg.mgn.overflow_posterior:  # every atom has a latent, an overflowed one too
      over = np.asarray(out[1])
      assert over.any() and np.all(np.abs(np.asarray(out[0]))[over].max(-1) > 0)

    def fn(nodes, edges, mask, g0, e0, e1):
      return jitted(graphs.GraphBatch(nodes, edges, mask), [g0] + gumbel[1:], [(e0, e1)] + lnoise[1:])

    testing.assert_permutation_equivariant(
        fn, (batch.nodes, batch.edges, batch.mask, gumbel[0], *lnoise[0]), (1, 2, 1, 1, 1, 1),
        (1, 1, None, None, None, None), jax.random.PRNGKey(3), trials=2, atol=2e-4, rtol=2e-4)


@pytest.mark.heavy
def test_the_kl_counts_the_posterior_of_overflowing_atoms():
  cfg, model, params, batch = _setup(True, "learned", True, overflow_posterior=True)
  kl = jax.jit(lambda p: model.apply(p, batch, train=False).kl[:, 0])
  shifted = jax.tree_util.tree_map(lambda x: x, params)
  bias = shifted["params"]["mgn"]["overflow_posterior_0"]["mean"]["bias"]
  shifted["params"]["mgn"]["overflow_posterior_0"]["mean"]["bias"] = bias + 3.0
  over = np.asarray(jax.jit(lambda p: model.apply(p, batch, train=False).hierarchy.num_overflow[:, 0])(params))
  assert over.max() > 0
  moved = np.abs(np.asarray(kl(shifted) - kl(params)))
  assert np.all(moved[over > 0] > 1e-3) and np.all(moved[over == 0] < 1e-5), (over, moved)


def test_overflow_follows_priority_not_slot_order():
  ids = jnp.array([0, 0, 0, 1, 0, 2])
  mask = jnp.ones(6, bool)
  priority = jnp.array([0.1, 0.9, 0.5, 0.0, 0.7, 0.0])
  slots = hierarchy.cluster_slots(ids, mask, 3, capacity=2, priority=priority)
  np.testing.assert_array_equal(slots.index[0], [1, 4])  # the two of highest priority, in priority order
  np.testing.assert_array_equal(slots.overflow, [True, False, True, False, False, False])
  perm = jnp.array([5, 4, 3, 2, 1, 0])
  p_slots = hierarchy.cluster_slots(ids[perm], mask, 3, capacity=2, priority=priority[perm])
  np.testing.assert_array_equal(p_slots.overflow, slots.overflow[perm])
