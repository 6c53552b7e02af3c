"""experiments.zinc_regression (paper section 5.6): config, data, model selection and tiny end-to-end runs."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import zinc_regression
from experiments.configs import overrides
from experiments.configs import zinc_regression as zinc_config
from mgvae_jax.data import registry

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_zinc12k = pytest.mark.skipif(
    not os.path.exists(os.path.join(registry.data_dir(), "zinc12k", "derived", "zinc12k_benchmark_derived.csv")),
    reason="the derived ZINC 12k benchmark CSV is not in the data dir (set MGVAE_DATA_DIR)")


def _binary(args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.zinc_regression", *args], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


# --- Config. -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", zinc_config.TARGETS)
@pytest.mark.parametrize("preset", zinc_config.PRESETS)
def test_presets_are_valid(target, preset):
  config = zinc_config.get_config(target, preset)
  assert (config.target, config.preset, config.seeds[:2]) == (target, preset, (0, 1))
  assert config.column == {"logp": "logP_rdkit", "penalized_logp": "penalized_logP_normalized_est"}[target]
  again = overrides.from_dict(zinc_config.ZincRegressionConfig, json.loads(json.dumps(overrides.to_dict(config))))
  assert again == config
  if preset != "test":
    assert config.seeds == (0, 1, 2, 3) and config.num_train is None and config.num_test is None


def test_paper_preset_follows_section_5_6():
  config = zinc_config.get_config("logp", "paper")
  m = config.model
  assert m.num_levels == 3 and m.encoder_order == 2 and m.latent_dim == m.pool_features == 256
  assert config.head_hidden == () and config.train.learning_rate == 1e-3  # 256 x L -> one linear layer; Adam 1e-3
  assert config.train.epochs == 512 and config.train.lr_schedule == "cosine"  # decayed over the whole run
  assert not config.chemical_features


def test_bad_target_and_settings_raise():
  with pytest.raises(ValueError, match="unknown target 'solubility'"):
    zinc_config.get_config("solubility")
  with pytest.raises(ValueError, match="unknown preset"):
    zinc_config.get_config("logp", "gpu")
  config = zinc_config.get_config("logp", "test")
  with pytest.raises(ValueError, match="unknown target"):
    overrides.apply(config, ["target=qed"])
  with pytest.raises(ValueError, match="cut_weight must be >= 0"):
    overrides.apply(config, ["cut_weight=-1.0"])
  with pytest.raises(ValueError, match="cut_weight has 3 entries"):
    overrides.apply(config, ["cut_weight=(1.0, 1.0, 1.0)"])
  with pytest.raises(ValueError, match="num_train must be >= 1"):
    overrides.apply(config, ["num_train=0"])
  with pytest.raises(ValueError, match="counts epochs"):
    overrides.apply(config, ["train.epochs=0"])
  with pytest.raises(ValueError, match="cannot be cut into 40 clusters"):
    overrides.apply(config, ["model.num_clusters=(40, 1)"])
  with pytest.raises(ValueError, match="posterior"):
    dataclasses.replace(config, model=dataclasses.replace(config.model, posterior="diagonal"))


def test_bad_flags_give_clear_errors():
  out = _binary(["--target=solubility"])
  assert out.returncode != 0 and "solubility" in out.stderr and "penalized_logp" in out.stderr
  out = _binary(["--target=logp", "--preset=test", "--set", "train.batch_size=0"])
  assert out.returncode != 0 and "train.batch_size must be >= 1" in out.stderr
  assert "Traceback" not in out.stderr


# --- Model selection and metrics. ----------------------------------------------------------------------------------


def _record(step, val, test):
  return {"epoch": step, "step": step, "val": {"mae": val}, "test": {"mae": test}}


def test_selection_reads_validation_only():
  records = [_record(1, 0.9, 0.50), _record(2, 0.4, 0.80), _record(3, 0.6, 0.30), _record(4, 0.4, 0.10)]
  best = zinc_regression.select_best(records)
  assert best["step"] == 2  # lowest validation MAE, the earliest of the tie; not step 4 or 3, the best on test
  shuffled = [_record(r["step"], r["val"]["mae"], -r["test"]["mae"]) for r in reversed(records)]
  assert zinc_regression.select_best(shuffled)["step"] == 2  # test values and record order play no part
  with pytest.raises(ValueError, match="no evaluation records"):
    zinc_regression.select_best([])


def test_mae_in_units_and_rejects_non_finite():
  assert zinc_regression.mae(np.asarray([1.0, 2.0, 4.0]), np.asarray([1.5, 2.0, 1.0])) == pytest.approx(3.5 / 3)
  with pytest.raises(FloatingPointError, match="1 of 2 predictions are not finite"):
    zinc_regression.mae(np.asarray([np.nan, 1.0]), np.zeros(2))


# --- Data. ---------------------------------------------------------------------------------------------------------


@needs_zinc12k
def test_splits_targets_and_masks():
  from rdkit import Chem  # pylint: disable=g-import-not-at-top

  config = zinc_config.get_config("penalized_logp", "test")
  feat = config.featuriser()
  split = zinc_regression.load_split(config, feat, "train", limit=20)
  # The first benchmark training molecule's row of the derived CSV.
  assert split.smiles[0] == "COc1ccc2ccc(O)c(CN3CCN(S(=O)(=O)c4ccn(C)c4)CC3)c2c1"
  assert split.targets[0] == pytest.approx(0.837321)
  logp = zinc_regression.load_split(dataclasses.replace(config, target="logp"), feat, "train", limit=20)
  assert logp.targets[0] == pytest.approx(2.399)
  g = split.graphs
  assert g.nodes.shape == (20, zinc_config.MAX_NODES, feat.num_types - 1)  # atom types without "no atom"
  assert g.edges.shape == (20, zinc_config.MAX_NODES, zinc_config.MAX_NODES, 3)
  atoms = np.asarray([Chem.MolFromSmiles(s).GetNumAtoms() for s in split.smiles])
  np.testing.assert_array_equal(g.mask.sum(1), atoms)  # real atoms only are nodes
  np.testing.assert_array_equal(g.nodes.sum(-1), g.mask.astype(np.float32))  # one type per atom, 0 on padding
  assert not g.edges[~g.mask].any()
  sizes = {s: len(zinc_regression.load_split(config, feat, s).smiles) for s in ("val", "test")}
  assert sizes == {"val": 1000, "test": 1000}


# --- End to end. ---------------------------------------------------------------------------------------------------


def _eval_records(workdir, seed):
  return [json.loads(line) for line in open(os.path.join(workdir, f"seed_{seed}", "eval.jsonl"))]


@needs_zinc12k
def test_tiny_run_writes_metrics(tmp_path):
  config = zinc_config.get_config("logp", "test")
  report = zinc_regression.train_and_evaluate(config, str(tmp_path))
  metrics = json.load(open(tmp_path / "metrics.json"))
  assert metrics["target"] == "logp" and metrics["column"] == "logP_rdkit"
  assert metrics["split_sizes"] == {"train": 48, "val": 16, "test": 16}
  assert metrics["test_mae"]["n"] == len(config.seeds) == len(metrics["seeds"])
  values = [r["test_mae"] for r in metrics["seeds"]]
  assert metrics["test_mae"]["mean"] == pytest.approx(np.mean(values))
  assert metrics["test_mae"]["std"] == pytest.approx(np.std(values))
  assert metrics["references"] == zinc_regression.REFERENCES["logp"]
  steps_per_epoch = 48 // config.train.batch_size
  for r in metrics["seeds"]:
    records = _eval_records(tmp_path, r["seed"])
    assert [x["epoch"] for x in records] == list(range(1, config.train.epochs + 1))
    assert [x["step"] for x in records] == [e * steps_per_epoch for e in range(1, config.train.epochs + 1)]
    best = min(records, key=lambda x: (x["val"]["mae"], x["step"]))
    assert (r["best_epoch"], r["val_mae"], r["test_mae"]) == (best["epoch"], best["val"]["mae"], best["test"]["mae"])
    assert all(np.isfinite(x["test"]["mae"]) and x["test"]["mae"] > 0 for x in records)
    assert os.path.exists(tmp_path / f"seed_{r['seed']}" / "result.json")
  assert len(set(values)) == len(values)  # each seed trained with its own seed
  assert "| logp (`logP_rdkit`) |" in zinc_regression.format_table(report)
  again = zinc_regression.train_and_evaluate(config, str(tmp_path))  # finished: its metrics.json, unchanged
  assert again == metrics
