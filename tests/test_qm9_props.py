"""experiments.qm9_props and mgvae_jax.property_prediction: invariant representations, de-standardisation, heads,
and a tiny end-to-end run. The data come from MGVAE_DATA_DIR (CI points it at shared/data)."""

import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import qm9_props
from experiments import trainer
from experiments.configs import overrides
from experiments.configs import qm9_props as qm9_props_config
from mgvae_jax import graphs
from mgvae_jax import property_prediction as pp
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax.data import molecules
from markers import needs_qm9
from mgvae_jax import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sizes 3 to 9 heavy atoms, a ring, a charge, a triple bond: QM9-like molecules with "no atom" slots to spare.
SMILES = ["CCO", "C1CC1C#N", "OC1=NC=CN1", "C[NH3+]", "CC(C)(C)C(=O)OC", "FC(F)(F)C1CCO1", "N#CC1=CC=CC=C1C"]


@pytest.fixture(scope="module")
def trained_free():
  """A test-preset MGVAE with fresh parameters and the featurised SMILES (one-hot atom types only)."""
  config = qm9_props_config.get_config("test")
  feat = config.featuriser()
  batch, report = feat.featurise_many(SMILES)
  assert report.kept == len(SMILES)
  model = vae.MGVAE(config.model)
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda b: model.init(rngs, b, train=True))(batch)["params"]
  return model, params, batch, feat


# --- Config. -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", qm9_props_config.PRESETS)
def test_presets_are_valid_and_round_trip(preset):
  config = qm9_props_config.get_config(preset)
  assert config.preset == preset and not config.featuriser().chemical_features  # one-hot atom types only
  assert config.featuriser().num_node_features == config.model.node_classes
  again = overrides.from_dict(qm9_props_config.Qm9PropsConfig, json.loads(json.dumps(overrides.to_dict(config))))
  assert again == config


def test_paper_preset_follows_section_5_5():
  config = qm9_props_config.get_config("paper")
  assert config.model.mgn.latent_dim == 256 and config.model.num_latent_levels == 3  # "a vector of size 256"
  assert (config.head_hidden, config.head_activation) == ((512, 512), "sigmoid")
  assert (config.num_train, config.num_test) == (0, 0)  # every molecule of the split


def test_config_rejects_bad_settings():
  config = qm9_props_config.get_config("test")
  with pytest.raises(ValueError, match="test_percent must be one of"):
    overrides.apply(config, ["test_percent=15"])
  with pytest.raises(ValueError, match="head_activation must be one of"):
    overrides.apply(config, ["head_activation=gelu"])
  with pytest.raises(ValueError, match="val_fraction"):
    overrides.apply(config, ["val_fraction=1.0"])
  with pytest.raises(ValueError, match="node_classes"):
    overrides.apply(config, ["charged_types=False"])  # a model sized for charged types, a vocabulary without
  with pytest.raises(ValueError, match="head_epochs must be >= 1"):
    overrides.apply(config, ["head_epochs=0"])


def test_bad_flags_give_clear_errors():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.qm9_props", *args], cwd=ROOT, env=env,
                                     capture_output=True, text=True, timeout=120)
  out = run("--preset=test", "--set", "head_loss=huber")
  assert out.returncode != 0 and "head_loss must be one of" in out.stderr and "Traceback" not in out.stderr
  out = run("--preset=test", "stray")
  assert out.returncode != 0 and "unexpected arguments" in out.stderr and "Traceback" not in out.stderr


# --- Representations. ----------------------------------------------------------------------------------------------


def test_representation_is_invariant_to_atom_order(trained_free):
  model, params, batch, feat = trained_free
  b, n = batch.mask.shape
  rng = np.random.default_rng(0)
  perm = np.stack([rng.permutation(n) for _ in range(b)])  # [B, N]: atoms and "no atom" slots mixed
  permuted = graphs.permute_nodes(jax.tree_util.tree_map(jnp.asarray, batch), jnp.asarray(perm))
  assert not np.array_equal(np.asarray(permuted.nodes), batch.nodes)
  encode = pp.make_encoder(model, feat.no_atom)
  rep, rep_perm = encode(params, batch), encode(params, permuted)  # [B, d] each
  np.testing.assert_allclose(rep, rep_perm, rtol=1e-4, atol=1e-5)
  # The node latents themselves move with the atoms (equivariant, not constant), and molecules differ.
  finest = jax.jit(lambda g: model.apply({"params": params}, g, method=vae.MGVAE.encode)[0])
  z, z_perm = np.asarray(finest(batch)), np.asarray(finest(permuted))  # [B, N, d] each
  np.testing.assert_allclose(z_perm, np.take_along_axis(z, perm[..., None], 1), rtol=1e-4, atol=1e-5)
  assert not np.allclose(z_perm, z, atol=1e-3)
  assert np.abs(np.asarray(rep)[:, None] - np.asarray(rep)[None]).sum(-1)[np.triu_indices(b, 1)].min() > 1e-4
  # The mean runs over real atoms only: "no atom" slots (all molecules here but the last have some) are left out.
  atoms = batch.nodes[..., feat.no_atom] < 0.5  # [B, N]
  assert (~atoms).any(1).sum() == b - 1
  expected = np.stack([z[g][atoms[g]].mean(0) for g in range(b)])
  np.testing.assert_allclose(rep, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(rep, z.mean(1), atol=1e-4)


def test_masked_mean_ignores_masked_slots():
  x = np.random.default_rng(1).normal(size=(3, 5, 2)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  junk = np.where(mask[..., None], x, np.nan)  # anything in a masked slot, NaN included
  out = np.asarray(pp.masked_mean(jnp.asarray(junk), jnp.asarray(mask)))
  np.testing.assert_allclose(out[0], x[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_allclose(out[1], x[1].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(out[2], 0.0)  # an empty graph


def test_encode_all_matches_one_batch_and_pads_the_last_chunk(trained_free):
  model, params, batch, feat = trained_free
  encode = pp.make_encoder(model, feat.no_atom)
  whole = np.asarray(encode(params, batch))
  chunked = pp.encode_all(encode, params, batch, batch_size=3)  # 7 molecules: chunks of 3, 3, 1 (+ 2 fillers)
  assert chunked.shape == whole.shape
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="batch_size"):
    pp.encode_all(encode, params, batch, batch_size=0)


# --- Targets and metrics. ------------------------------------------------------------------------------------------


def test_standardise_round_trip_and_shape_checks():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(11, 13))
  mean, std = rng.normal(size=13) * 100, rng.uniform(0.01, 300, size=13)
  np.testing.assert_allclose(pp.standardise(pp.destandardise(z, mean, std), mean, std), z, atol=1e-10)
  with pytest.raises(ValueError, match="shape"):
    pp.destandardise(z, mean[:12], std[:12])
  with pytest.raises(ValueError, match="positive"):
    pp.standardise(z, mean, np.zeros(13))


@needs_qm9
def test_targets_destandardise_to_the_raw_units():
  stats = qm9_props.load_standardisation()
  names = molecules.QM9_TARGET_NAMES
  smiles, z = molecules.load_qm9_targets("test")
  smiles_raw, raw = molecules.load_qm9_targets("test", raw=True)
  assert smiles == smiles_raw
  qm9_props.check_destandardisation(z, raw, stats, "test split")  # raises beyond the CSV's rounding
  err = np.abs(pp.destandardise(z, stats.mean, stats.std) - raw).max(0)
  for t, name in enumerate(names):
    limit = 0.5 * 10.0 ** -qm9_props.RAW_DECIMALS.get(name, 9) + 1e-6
    assert err[t] <= limit, (name, err[t])
  np.testing.assert_allclose(pp.standardise(raw, stats.mean, stats.std)[:, :12], z[:, :12], atol=2e-3)
  # The energies are atomization energies in kcal/mol (Table 10: U0 mean -76.11 eV); HOMO in Hartree (-6.54 eV).
  u0, homo = names.index("U0"), names.index("HOMO")
  assert stats.units[u0] == "kcal/mol" and abs(stats.mean[u0] * qm9_props.PAPER_UNITS["U0"][1] + 76.11) < 0.01
  assert abs(stats.mean[homo] * qm9_props.PAPER_UNITS["HOMO"][1] + 6.536) < 0.01
  assert (stats.mean[-1], stats.std[-1]) == (0.0, 1.0)  # omega1 stays standardised
  # A one-row misalignment between target files is caught.
  with pytest.raises(Exception, match="do not match"):
    qm9_props.check_destandardisation(z, np.roll(raw, 1, axis=0), stats, "shifted")


@needs_qm9
def test_mae_is_in_physical_units():
  stats = qm9_props.load_standardisation()
  smiles, z = molecules.load_qm9_targets("test")
  _, raw = molecules.load_qm9_targets("test", raw=True)
  ids = np.arange(200)
  split = qm9_props.Split(graphs=None, z=z[ids], raw=raw[ids], smiles=[smiles[i] for i in ids])
  exact = qm9_props.mae_per_target(split.z, split, stats)
  assert all(exact[n]["mae"] < 1e-3 * stats.std[t] for t, n in enumerate(molecules.QM9_TARGET_NAMES))
  off = qm9_props.mae_per_target(split.z + 0.1, split, stats)  # 0.1 standard deviations off everywhere
  for t, name in enumerate(molecules.QM9_TARGET_NAMES):
    np.testing.assert_allclose(off[name]["mae"], 0.1 * stats.std[t], rtol=1e-2)
    np.testing.assert_allclose(off[name]["mae_standardised"], 0.1, rtol=1e-6)
  np.testing.assert_allclose(off["HOMO"]["mae_paper_units"], off["HOMO"]["mae"] * 27.211386, rtol=1e-6)
  np.testing.assert_allclose(off["U0"]["mae_paper_units"], off["U0"]["mae"] / 23.0605478, rtol=1e-6)


# --- Heads. --------------------------------------------------------------------------------------------------------


def _regression(seed=3, m=240):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(m, 6)).astype(np.float32)
  signal = np.tanh(x @ rng.normal(size=6))  # learnable
  y = np.stack([(signal - signal.mean()) / signal.std(), rng.normal(size=m)], 1).astype(np.float32)  # [M, 2]
  return x, y


def test_heads_learn_and_are_independent_per_target():
  x, y = _regression()
  kw = dict(hidden=(32, 32), activation="sigmoid", learning_rate=1e-2, batch_size=32, epochs=15, seed=0)
  model, fit = pp.fit_heads(x[:200], y[:200], x[200:], y[200:], **kw)
  assert fit.history.shape == (15, 2) and fit.best_epoch.shape == (2,)
  np.testing.assert_allclose(fit.val_mae, fit.history.min(0))  # each head keeps its own best epoch
  assert fit.val_mae[0] < 0.4 < fit.val_mae[1]  # the signal is learned, the noise is not
  pred = pp.predict(model, fit.params, x[200:])
  np.testing.assert_allclose(np.abs(pred - y[200:]).mean(0), fit.val_mae, rtol=1e-5)
  # Another second target leaves the first head's parameters untouched: one MLP per target.
  y2 = y.copy()
  y2[:, 1] = np.random.default_rng(9).normal(size=len(y)) * 3
  _, fit2 = pp.fit_heads(x[:200], y2[:200], x[200:], y2[200:], **kw)
  first = lambda tree: [np.asarray(a)[0] for a in jax.tree_util.tree_leaves(tree)]
  for a, b in zip(first(fit.params), first(fit2.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert fit.best_epoch[0] == fit2.best_epoch[0]


def test_heads_reject_bad_inputs_and_stop_on_nonfinite_loss():
  x, y = _regression(m=40)
  with pytest.raises(ValueError, match=r"\[M, D\]"):
    pp.fit_heads(x, y[:30], x, y)
  with pytest.raises(ValueError, match="non-finite"):
    pp.fit_heads(x, np.where(np.arange(40)[:, None] == 3, np.nan, y), x, y)
  with pytest.raises(ValueError, match="targets"):
    pp.fit_heads(x, y, x, y[:, :1])
  with pytest.raises(FloatingPointError, match="non-finite training loss"):
    pp.fit_heads(x, y * 1e30, x, y, hidden=(4,), epochs=1)  # squared errors overflow float32


# --- End to end. ---------------------------------------------------------------------------------------------------


@pytest.mark.heavy
@needs_qm9
def test_end_to_end_writes_metrics(tmp_path):
  workdir = str(tmp_path / "run")
  config = qm9_props_config.get_config("test")
  stream = io.StringIO()
  report = qm9_props.train_and_evaluate(config, workdir, stream)
  saved = json.load(open(os.path.join(workdir, "metrics.json")))
  assert saved["test"].keys() == set(molecules.QM9_TARGET_NAMES)
  for name, m in saved["test"].items():
    assert np.isfinite(m["mae"]) and m["mae"] > 0 and m["unit"] and m["paper_unit"], name
  assert saved["test"]["U0"]["unit"] == "kcal/mol" and saved["test"]["omega1"]["unit"].startswith("standardised")
  assert saved["molecules"]["test"] == config.num_test
  assert saved["molecules"]["train"] + saved["molecules"]["validation"] == config.num_train
  assert all(1 <= h["best_epoch"] <= config.head_epochs for h in saved["heads"].values())
  assert saved["training"]["nonfinite_steps_total"] == 0 and report["training"]["resumed_from"] is None
  text = stream.getvalue()
  assert "| U0 |" in text and "kcal/mol" in text and "Hartree" in text
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert records[-1]["phase"] == "eval" and "mae_U0" in records[-1]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(config.train.num_steps)))
  # A rerun of the finished run returns its report and touches nothing.
  before = testing.directory_snapshot(workdir)
  assert qm9_props.train_and_evaluate(config, workdir, io.StringIO()) == saved
  assert testing.directory_snapshot(workdir) == before


def test_rerun_with_another_config_is_refused_and_changes_nothing(tmp_path):
  config = qm9_props_config.get_config("test")
  workdir = str(tmp_path)
  assert trainer.claim_workdir(config, workdir) is None
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # a run under way
  before = testing.directory_snapshot(workdir)
  other = overrides.apply(config, ["train.seed=1", "head_epochs=4"])
  with pytest.raises(training.ConfigMismatchError, match=r"2 field\(s\) differ") as error:
    qm9_props.train_and_evaluate(other, workdir, io.StringIO())
  assert "head_epochs: 3 in the run, 4 now" in str(error.value)
  assert "train.seed: 0 in the run, 1 now" in str(error.value)
  assert testing.directory_snapshot(workdir) == before
