"""Autoregressive MGN decoding (section 5.1, after CGVAE): BFS orders, valence masks, teacher forcing, sampling."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rdkit import Chem

from experiments import trainer
from experiments.configs import molgen as molgen_config
from markers import OPTIMISED_COMPILE
from mgvae_jax import autoregressive as ar
from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax.chem import decode
from mgvae_jax.chem import featurise

SMILES = ["CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1", "C1CC2CCC1C2", "[NH3+]CC(=O)[O-]", "C#N", "O=S(=O)(N)c1ccccc1",
          "C"]


@pytest.fixture(scope="module")
def molecules():
  feat = featurise.Featuriser("zinc", chemical_features=False)
  nodes, edges = zip(*[feat.featurise(s) for s in SMILES])
  types = np.stack(nodes)[..., :feat.num_types].argmax(-1)
  return feat, types, types != feat.no_atom, np.asarray(ar.bond_orders(np.stack(edges)))


def test_bfs_order_is_a_valid_order_of_the_input_graph(molecules):
  feat, _, real, bonds = molecules
  n = bonds.shape[-1]
  bfs = jax.jit(ar.bfs_actions, static_argnums=(3,))
  rng = np.random.default_rng(0)
  for i in range(len(SMILES)):
    for start in rng.choice(np.flatnonzero(real[i]), size=min(3, real[i].sum()), replace=False):
      actions, valid, final = bfs(bonds[i], real[i], jnp.int32(start), ar.default_steps(n))
      order = np.asarray(final.queue)[:int(final.qlen)]
      adjacency = bonds[i] > 0
      # A permutation of the (connected) molecule's atoms, starting at `start`.
      assert order[0] == start and sorted(order) == sorted(np.flatnonzero(real[i]))
      # Breadth first: each later atom is bonded to an earlier one, and the earliest such parents never go back.
      parents = [int(np.flatnonzero(adjacency[v, order[:k]])[0]) for k, v in enumerate(order) if k > 0]
      assert parents == sorted(parents)
      # Replaying the actions rebuilds the molecule exactly, one step per bond plus one stop per atom.
      assert np.array_equal(np.asarray(final.bonds), bonds[i])
      assert int(valid.sum()) == real[i].sum() + adjacency.sum() // 2
      state = ar.initial_state(jnp.asarray(real[i]), jnp.int32(start), jnp.full(n, 99, jnp.int32))
      for a in np.asarray(actions)[np.asarray(valid)]:
        state = ar.apply_action(state, jnp.int32(a), 3)
      assert np.array_equal(np.asarray(state.bonds), bonds[i])


def test_valence_masks_keep_every_partial_graph_possible():
  real = jnp.asarray([True, True, True, False])
  valence = jnp.asarray([4, 1, 2, 0])  # C, F, O, padding
  state = ar.initial_state(real, jnp.int32(0), valence)
  allowed = np.asarray(ar.allowed_actions(state, real, 3)).reshape(-1)
  # focus 0 (C): to F only a single bond, to O single or double, never to itself or the padding slot; stop allowed.
  expected = np.zeros(4 * 3 + 1, bool)
  expected[[1 * 3 + 0, 2 * 3 + 0, 2 * 3 + 1, 12]] = True
  np.testing.assert_array_equal(allowed, expected)
  state = ar.apply_action(state, jnp.int32(2 * 3 + 1), 3)  # C=O: O is now full
  allowed = np.asarray(ar.allowed_actions(state, real, 3))
  assert not allowed[6:9].any() and allowed[3] and allowed[12]
  assert int(state.valence[0]) == 2 and int(state.valence[2]) == 0 and list(np.asarray(state.queue)[:2]) == [0, 2]


def _decoder(feat, steps):
  return ar.AutoregressiveDecoder(feat.num_types, 3, ar.valence_table(feat.type_names, featurise.NO_ATOM),
                                  feat.no_atom, steps, features=8)


def test_teacher_forced_log_likelihood_increases_under_training(molecules):
  feat, types, real, bonds = molecules
  i = 1  # norbornane: rings, so ring closures are in the sequence
  n = bonds.shape[-1]
  dec = _decoder(feat, ar.default_steps(n))
  args = (jnp.asarray(types[i:i + 1]), jnp.asarray(real[i:i + 1]), jnp.asarray(bonds[i:i + 1]), jnp.zeros(1, jnp.int32))
  z = jax.random.normal(jax.random.PRNGKey(0), (1, n, 4))
  params = jax.jit(dec.init)(jax.random.PRNGKey(1), z, *args)
  opt = optax.adam(3e-2)
  opt_state = opt.init(params)

  @functools.partial(jax.jit, compiler_options=OPTIMISED_COMPILE)
  def step(params, opt_state):
    nll, grads = jax.value_and_grad(lambda p: dec.apply(p, z, *args)[0].sum())(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, nll

  params, opt_state, first = step(params, opt_state)
  for _ in range(15):  # each step replays the whole decoding sequence; it halves the NLL by about the 12th
    params, opt_state, last = step(params, opt_state)
  assert np.isfinite(first) and float(last) < 0.5 * float(first)


@pytest.fixture(scope="module")
def ar_model():
  config = molgen_config.get_config("zinc", "test", "autoregressive")
  model = vae.MGVAE(config.model)
  feat = config.featuriser()
  nodes, edges = feat.featurise(SMILES[0])
  batch = graphs.GraphBatch(nodes=jnp.asarray(np.stack([nodes] * 2)), edges=jnp.asarray(np.stack([edges] * 2)),
                            mask=jnp.ones((2, feat.max_nodes), bool))
  params = jax.jit(lambda b: model.init({"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1),
                                         "latent": jax.random.PRNGKey(2)}, b, train=True))(batch)["params"]
  return config, model, params, batch


def test_every_sampled_molecule_passes_sanitisation_and_one_compilation_serves_all(ar_model):
  config, model, params, _ = ar_model
  sampler = trainer.make_sampler(model, 32, 0)
  feat = config.featuriser()
  smiles = []
  for seed in range(3):
    probs = jax.device_get(sampler(params, jax.random.PRNGKey(seed)))
    for r in decode.decode_samples(probs, feat, corrected=False):
      assert r.valid, r.reason
      mol = Chem.MolFromSmiles(r.smiles)
      assert mol is not None and Chem.SanitizeMol(mol) == Chem.SanitizeFlags.SANITIZE_NONE
      assert len(Chem.GetMolFrags(mol)) == 1
      smiles.append(r.smiles)
  assert sampler._cache_size() == 1  # pylint: disable=protected-access
  assert len(set(smiles)) > 1


def test_mgvae_autoregressive_loss_is_finite_and_greedy_decode_is_deterministic(ar_model):
  config, model, params, batch = ar_model
  out = jax.jit(lambda p, b: model.apply({"params": p}, b, train=True, rngs={
      "gumbel": jax.random.PRNGKey(3), "latent": jax.random.PRNGKey(4)}))(params, batch)
  assert np.isfinite(out.loss).all() and (out.edge > 0).all() and (out.edge_type == 0).all()
  z = jax.jit(lambda p, b: model.apply({"params": p}, b, method=vae.MGVAE.encode)[0])(params, batch)
  decode = jax.jit(lambda p, z: model.apply({"params": p}, z, 0, method=vae.MGVAE.decode))
  a, b = decode(params, z), decode(params, z)
  for k in ("node", "edge", "edge_type"):
    np.testing.assert_array_equal(a[k], b[k])


def test_config_needs_one_valence_per_node_class():
  config = molgen_config.get_config("qm9", "test")
  with pytest.raises(ValueError, match="ar_valences"):
    dataclasses.replace(config.model, decoder="autoregressive", ar_valences=(4, 3))
