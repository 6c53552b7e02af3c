"""What a molecule model learned: held-out reconstruction, sample statistics, the fitted prior, the process pool."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rdkit import Chem

from experiments import molgen
from experiments.configs import molgen as molgen_config
from experiments.configs import overrides
from mgvae_jax import aggregate_prior
from mgvae_jax import parallel
from mgvae_jax.chem import decode
from mgvae_jax.chem import featurise
from mgvae_jax.chem import reconstruction
from mgvae_jax.chem import statistics
from markers import needs_qm9

QM9_LIKE = ["CC1=CC=CC=C1", "OCC(N)=O", "C1CC1C#N", "CC(C)(O)C=O", "FC(F)F", "c1ccoc1"]


def test_a_perfect_reconstruction_scores_perfectly_and_a_wrong_one_does_not():
  feat = featurise.Featuriser("qm9")
  batch, report = feat.featurise_many(QM9_LIKE)
  assert report.kept == len(QM9_LIKE)
  t = feat.num_types

  def truth(params, b):  # the input itself as "probabilities": every molecule must count as reconstructed
    del params
    probs = {"node": b.nodes[..., :t], "edge": b.edges.sum(-1), "edge_type": b.edges + 1e-3}
    return probs, jnp.ones((b.nodes.shape[0], 2)), jnp.zeros(b.mask.shape, bool)

  res = reconstruction.reconstruction_metrics(None, None, batch, QM9_LIKE, feat, reconstructor=truth, batch_size=4,
                                              keep_examples=2)
  assert res["exact"] == res["exact_corrected"] == res["valid"] == 1.0
  assert res["bond_auc"] == res["topk_precision"] == res["node_accuracy"] == res["bond_type_accuracy"] == 1.0
  assert res["kl_nats"] == [1.0, 1.0] and np.isclose(res["kl_bits"][0], 1 / np.log(2))
  assert res["missed_bonds_mean"] == res["extra_bonds_mean"] == res["overflow_atoms_mean"] == 0.0
  assert res["examples"][0][0] == QM9_LIKE[0] and res["examples"][0][1] == featurise.canonical_smiles(QM9_LIKE[0])

  def no_bonds(params, b):
    probs, kl, overflow = truth(params, b)
    # and the first and last slots (an atom, a "no atom" slot) overflowed
    return dict(probs, edge=jnp.zeros_like(probs["edge"])), kl, overflow.at[:, 0].set(True).at[:, -1].set(True)

  res = reconstruction.reconstruction_metrics(None, None, batch, QM9_LIKE, feat, reconstructor=no_bonds)
  assert res["exact"] == 0.0 and res["valid"] == 0.0 and res["node_accuracy"] == 1.0
  assert res["overflow_slots_mean"] == 2.0 and res["molecules_with_overflow"] == 1.0
  assert res["overflow_atoms_mean"] == res["molecules_with_overflowed_atoms"] == 1.0
  bonds = [Chem.MolFromSmiles(s).GetNumBonds() for s in QM9_LIKE]
  assert res["missed_bonds_mean"] == pytest.approx(np.mean(bonds)) and res["extra_bonds_mean"] == 0.0
  assert res["bond_auc"] == 0.5  # all scores tie


def test_molecule_statistics_count_rings_atoms_and_types():
  stats = statistics.molecule_statistics(["c1ccccc1", "C1CC1C", None, "not a smiles", "CCO"])
  assert stats["molecules"] == 5 and stats["valid"] == 3
  assert stats["atoms_mean"] == pytest.approx((6 + 4 + 3) / 3)
  assert stats["rings_mean"] == pytest.approx(2 / 3) and stats["with_rings"] == pytest.approx(2 / 3)
  assert stats["ring_sizes"] == {"3": 0.5, "6": 0.5}
  assert stats["atom_types"]["C"] == pytest.approx(12 / 13) and stats["atom_types"]["O"] == pytest.approx(1 / 13)
  assert stats["bond_types"]["double"] == pytest.approx(3 / 12)  # benzene kekulised: 3 of 12 bonds
  assert 1.0 <= stats["sa_mean"] <= 10.0 and 0.0 < stats["qed_mean"] < 1.0
  gaps = statistics.compare(stats, stats)
  assert gaps["rings_mean_gap"] == 0.0 and gaps["atom_types_tv"] == 0.0


def _square(chunk):
  return [x * x for x in chunk]


def test_map_chunks_keeps_order_in_processes():
  items = list(range(50))
  assert parallel.map_chunks(_square, items, workers=2, min_items_per_worker=5) == [x * x for x in items]
  assert parallel.map_chunks(_square, items, workers=1) == [x * x for x in items]
  with pytest.raises(ValueError, match="workers must be >= 1"):
    parallel.map_chunks(_square, items, workers=0)


def test_parallel_decoding_equals_serial():
  feat = featurise.Featuriser("qm9")
  rng = np.random.default_rng(0)
  s, n, t = 12, feat.max_nodes, feat.num_types
  edge = rng.uniform(size=(s, n, n))
  probs = {"node": rng.dirichlet(np.ones(t), (s, n)), "edge": (edge + edge.transpose(0, 2, 1)) / 2,
           "edge_type": rng.dirichlet(np.ones(3), (s, n, n))}
  for corrected in (True, False):
    serial = decode.decode_samples(probs, feat, corrected=corrected, connect=corrected)
    pooled = [decode.decode_samples(probs, feat, corrected=corrected, connect=corrected, workers=w)
              for w in (2, None)]
    assert serial == pooled[0] == pooled[1]
  # Forcing the pool on a few samples: the same results.
  items = list(zip(probs["node"], probs["edge"], probs["edge_type"], [None] * s))
  import functools  # pylint: disable=g-import-not-at-top
  fn = functools.partial(decode._decode_each, fn=decode.decode_corrected, featuriser=feat, edge_threshold=0.5,
                         connect=True)
  assert parallel.map_chunks(fn, items, workers=2, min_items_per_worker=2) == decode.decode_samples(
      probs, feat, corrected=True, connect=True)


def test_aggregate_prior_fits_samples_saves_and_loads(tmp_path):
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(2, 3, 2)) * 5
  latents = np.concatenate([c + 0.1 * rng.normal(size=(100, 3, 2)) for c in centres])  # two clusters, [200, 3, 2]
  mixture = aggregate_prior.fit(latents, components=2, seed=0)
  z = np.asarray(mixture.sample(jax.random.PRNGKey(0), 400))
  assert z.shape == (400, 3, 2)
  nearest = np.linalg.norm(z[:, None] - centres[None], axis=(2, 3)).min(1)
  assert np.all(nearest < 1.5)  # every sample lies near one of the two clusters, none in the hole between them
  path = str(tmp_path / "prior.npz")
  mixture.save(path)
  again = aggregate_prior.GaussianMixture.load(path)
  np.testing.assert_array_equal(again.means, mixture.means)
  assert again.shape == (3, 2)
  with open(path, "wb") as f:
    f.write(b"not an npz")
  with pytest.raises(ValueError, match="not a readable aggregate prior"):
    aggregate_prior.GaussianMixture.load(path)
  with pytest.raises(ValueError, match="too few"):
    aggregate_prior.fit(latents[:3], components=2)


def test_kernel_density_prior_centres_noise_saves_and_loads(tmp_path):
  rng = np.random.default_rng(1)
  latents = rng.normal(size=(50, 3, 2)).astype(np.float32) * np.asarray([1.0, 10.0], np.float32)  # [G, N, d]
  exact = aggregate_prior.fit_kernel(latents, bandwidth=0.0)
  z = np.asarray(exact.sample(jax.random.PRNGKey(0), 200))
  assert z.shape == (200, 3, 2)
  flat = latents.reshape(50, -1)
  # Bandwidth 0: every sample is one of the training latents.
  assert np.all(np.abs(z.reshape(200, 1, -1) - flat[None]).max(-1).min(-1) < 1e-6)
  wide = aggregate_prior.fit_kernel(latents, bandwidth=0.5)
  z = np.asarray(wide.sample(jax.random.PRNGKey(0), 20000)).reshape(20000, -1)
  # Centre plus independent noise of bandwidth x each coordinate's own spread (the second channel's is 10 x the
  # first's): each coordinate's variance is the data's times 1 + h^2.
  np.testing.assert_allclose(z.std(0) / flat.std(0), np.sqrt(1 + 0.5 ** 2), rtol=0.04)
  path = str(tmp_path / "kernel.npz")
  wide.save(path)
  again = aggregate_prior.KernelDensity.load(path)
  assert again.bandwidth == 0.5 and again.shape == (3, 2)
  np.testing.assert_array_equal(np.asarray(again.sample(jax.random.PRNGKey(3), 5)),
                                np.asarray(wide.sample(jax.random.PRNGKey(3), 5)))
  with open(path, "wb") as f:
    f.write(b"\x00\x01 binary")
  with pytest.raises(ValueError, match="not a readable kernel density prior"):
    aggregate_prior.KernelDensity.load(path)
  with pytest.raises(ValueError, match="bandwidth"):
    aggregate_prior.fit_kernel(latents, bandwidth=-1.0)
  with pytest.raises(ValueError, match="bandwidth"):
    aggregate_prior.fit_kernel(latents, bandwidth=float("inf"))
  wide.replace(bandwidth=float("nan")).save(path)
  with pytest.raises(ValueError, match="bandwidth"):
    aggregate_prior.KernelDensity.load(path)
  with pytest.raises(ValueError, match="not all finite"):
    aggregate_prior.fit_kernel(np.full((4, 3, 2), np.inf, np.float32), bandwidth=0.1)
  with pytest.raises(ValueError, match=r"\[G, N, d\]"):
    aggregate_prior.fit_kernel(flat, bandwidth=0.1)


@pytest.mark.heavy
@needs_qm9
def test_a_short_qm9_run_learns_bonds(tmp_path):
  """A learning test, not a timing: held-out bond AUC after 150 steps beats the untrained model's."""
  config = overrides.apply(molgen_config.get_config("qm9", "test"), [
      "num_train=2000", "train.batch_size=32", "train.num_steps=150", "quality_every=150", "quality_molecules=64",
      "quality_samples=32", "evaluate=False", "train.log_every=50", "train.checkpoint_every=150", "num_reconstruct=64",
      "model.kl_weight=0.001"])
  workdir = str(tmp_path / "run")
  molgen.train_and_evaluate(config, workdir)
  from experiments import plots  # pylint: disable=g-import-not-at-top
  records = plots.read_jsonl(os.path.join(workdir, "eval.jsonl"))
  assert [r["step"] for r in records] == [0, 150]
  for r in records:  # the diagnostics of an untrained and a trained model are in range
    for key in ("exact", "exact_corrected", "bond_auc", "validity_wo_correction", "uniqueness"):
      assert 0.0 <= r[key] <= 1.0, (key, r)
    assert len(r["kl_nats"]) == config.model.num_latent_levels and min(r["kl_nats"]) >= 0
  assert records[1]["bond_auc"] > records[0]["bond_auc"] + 0.05, records
  plots.quality_curve(records, os.path.join(workdir, "quality_curve.png"))
  assert os.path.getsize(os.path.join(workdir, "quality_curve.png")) > 0
