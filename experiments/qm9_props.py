r"""Unsupervised molecular property prediction on QM9 (paper section 5.5, Tables 10-11).

  python -m experiments.qm9_props                               # the CPU default (20-30 min on 2 cores)
  python -m experiments.qm9_props --preset=paper                # section 5.5's settings (a GPU run)
  python -m experiments.qm9_props --set num_train=50000 --set head_epochs=200

1. MGVAE learns to reconstruct the training molecules (one-hot atom types, bonds and coarsened adjacencies; no
   chemical features, no targets).
2. Each molecule's representation is the mean over its real atoms of the finest level's posterior means (S_n
   invariant); features are then scaled by the training representations' mean and std.
3. One MLP per target (512-512, sigmoid) regresses the 13 standardised targets; a seeded `val_fraction` of the
   training molecules picks each head's epoch (best validation MAE), the test set is looked at once.
4. MAE on the test molecules in physical units: MoleculeNet's (energies are atomization energies in kcal/mol, HOMO,
   LUMO, gap and ZPVE in Hartree; PROVENANCE section 2) and the paper's (Table 10: eV) for Table 11. omega1 has no
   raw source, so it stays standardised.

Data: MGVAE's 130,462 QM9 rows and its `test_percent` split files (default 10 %: 117,421 train, 13,041 test).
Writes to --workdir (default runs/qm9_props, plus _<preset> where not cpu): config.json, checkpoints/ (MGVAE, orbax),
metrics.jsonl, metrics.json, and prints the table. Running the same command again resumes MGVAE from its latest
checkpoint. A workdir holding another config is refused before anything is written, and a finished run is left as it
is (its metrics.json is returned).
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import trainer
from experiments.configs import overrides
from experiments.configs import qm9_props as qm9_props_config
from mgvae_jax import graphs
from mgvae_jax import property_prediction as pp
from mgvae_jax import vae
from mgvae_jax.data import molecules
from mgvae_jax.data import registry
from mgvae_jax.training import sharding

Qm9PropsConfig = qm9_props_config.Qm9PropsConfig
NAMES = molecules.QM9_TARGET_NAMES
STANDARDISATION_FILE = "qm9/derived/qm9_mgvae_standardization.csv"
# Decimals of the derived raw CSV (MoleculeNet precision, PROVENANCE section 2): what de-standardising can match.
RAW_DECIMALS = {"mu": 4, "alpha": 2, "HOMO": 4, "LUMO": 4, "gap": 4, "R2": 4, "ZPVE": 6, "U0": 6, "U": 6, "H": 6,
                "G": 6, "Cv": 3}
_HARTREE_EV = 27.211386245988  # CODATA 2018
_KCAL_MOL_EV = 1.0 / 23.060547830619  # 1 eV = 23.0605... kcal/mol
# Table 10's units and the factors from MoleculeNet's units to them.
PAPER_UNITS = {"mu": ("D", 1.0), "alpha": ("bohr^3", 1.0), "HOMO": ("eV", _HARTREE_EV), "LUMO": ("eV", _HARTREE_EV),
               "gap": ("eV", _HARTREE_EV), "R2": ("bohr^2", 1.0), "ZPVE": ("eV", _HARTREE_EV),
               "U0": ("eV", _KCAL_MOL_EV), "U": ("eV", _KCAL_MOL_EV), "H": ("eV", _KCAL_MOL_EV),
               "G": ("eV", _KCAL_MOL_EV), "Cv": ("cal/(mol K)", 1.0), "omega1": ("standardised", 1.0)}
# Table 11's MGVAE row (omega1 in cm^-1 there), for comparison only.
PAPER_MGVAE_MAE = {"alpha": 2.83, "Cv": 0.91, "G": 1.78, "gap": 0.66, "H": 1.87, "HOMO": 0.34, "LUMO": 0.58,
                   "mu": 0.95, "omega1": 195.0, "R2": 90.0, "U": 1.89, "U0": 1.90, "ZPVE": 0.14}


# --- Data. -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Standardisation:
  """raw = z * std + mean per target, in NAMES order; omega1 has mean 0, std 1 (no raw source)."""
  mean: np.ndarray  # [13]
  std: np.ndarray  # [13]
  units: tuple[str, ...]


def load_standardisation(data_dir=None) -> Standardisation:
  """The derived standardisation table (PROVENANCE section 2), checked against the loader's columns and units."""
  path = registry.fetch(STANDARDISATION_FILE, data_dir=data_dir)
  lines = registry.read_lines(path, registry.get(STANDARDISATION_FILE).format)
  rows = {r["mgvae_target_file"]: r for r in csv.DictReader(lines)}
  if set(rows) != set(NAMES):
    raise registry.DataFormatError(f"{path}: expected one row per target {NAMES}, found {sorted(rows)}")
  mean, std, units = [], [], []
  for name, column, unit in zip(NAMES, molecules.QM9_RAW_COLUMNS, molecules.QM9_RAW_UNITS):
    row = rows[name]
    if name == "omega1":
      if row["mean"] != "unknown":
        raise registry.DataFormatError(f"{path}: omega1 was expected to have no raw statistics, found {row}")
      mean.append(0.0), std.append(1.0), units.append(unit)
      continue
    if row["moleculenet_column"] != column or row["unit"] != unit:
      raise registry.DataFormatError(f"{path}: {name} should map to MoleculeNet column {column} in {unit}, found "
                                     f"{row['moleculenet_column']} in {row['unit']}")
    mean.append(float(row["mean"])), std.append(float(row["std"])), units.append(unit)
  std = np.asarray(std)
  if not np.all(np.isfinite(mean)) or not np.all(std > 0):
    raise registry.DataFormatError(f"{path}: means must be finite and stds positive, got {mean}, {std.tolist()}")
  return Standardisation(np.asarray(mean), std, tuple(units))


@dataclasses.dataclass
class Split:
  """Featurised molecules of one split and their targets, row-aligned."""
  graphs: graphs.GraphBatch  # stacked host arrays [M, ...]
  z: np.ndarray  # [M, 13] standardised targets (MGVAE's files)
  raw: np.ndarray  # [M, 13] physical units (the derived CSV; omega1 standardised)
  smiles: list[str]

  def take(self, ids: np.ndarray) -> "Split":
    g = self.graphs
    return Split(graphs.GraphBatch(g.nodes[ids], g.edges[ids], g.mask[ids]), self.z[ids], self.raw[ids],
                 [self.smiles[i] for i in ids])


def load_split(config: Qm9PropsConfig, split: str, count: int, stats: Standardisation,
               stream: Optional[TextIO] = None) -> Split:
  """One MGVAE split (a seeded subset of `count` rows when count > 0), featurised; skipped molecules are counted."""
  smiles, z = molecules.load_qm9_targets(split, test_percent=config.test_percent)
  smiles_raw, raw = molecules.load_qm9_targets(split, raw=True, test_percent=config.test_percent)
  if smiles != smiles_raw:
    raise registry.DataFormatError(f"qm9 {split}: the standardised and the raw target files list different molecules")
  check_destandardisation(z, raw, stats, f"qm9 {split}")
  rows = np.arange(len(smiles))
  if count and count < len(rows):
    salt = 1 if split == "train" else 2  # different draws for the two splits, both fixed by the seed
    rows = np.sort(np.random.default_rng([config.train.seed, salt]).choice(len(rows), count, replace=False))
  batch, report = config.featuriser().featurise_many([smiles[i] for i in rows])
  print(f"qm9 {split} (MGVAE {config.test_percent} % split): {report.summary()}", file=stream or sys.stdout,
        flush=True)
  kept = rows[np.asarray(report.kept_indices, np.int64)]
  return Split(batch, z[kept], raw[kept], [smiles[i] for i in kept])


def check_destandardisation(z: np.ndarray, raw: np.ndarray, stats: Standardisation, what: str) -> None:
  """Raise if destandardise(z) misses the raw values by more than their rounding (a misaligned row or file)."""
  err = np.abs(pp.destandardise(z, stats.mean, stats.std) - raw).max(0)  # [13]
  tol = np.asarray([0.5 * 10.0 ** -RAW_DECIMALS[n] + 1e-6 if n in RAW_DECIMALS else 1e-9 for n in NAMES])
  bad = [f"{n} (max error {e:.3g}, rounding {t:.3g})" for n, e, t in zip(NAMES, err, tol) if not e <= t]
  if bad:
    raise registry.DataFormatError(f"{what}: de-standardised targets do not match the raw ones: {', '.join(bad)}")


def split_validation(num: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(head-training ids, validation ids) of `num` training molecules, a seeded split with >= 1 in each."""
  order = np.random.default_rng([seed, 3]).permutation(num)
  num_val = min(max(1, int(round(fraction * num))), num - 1)
  return np.sort(order[num_val:]), np.sort(order[:num_val])


# --- Metrics. ------------------------------------------------------------------------------------------------------


def mae_per_target(z_pred: np.ndarray, split: Split, stats: Standardisation) -> dict:
  """Per target: MAE in MoleculeNet units (against the raw values), in Table 10's units, and standardised."""
  pred = pp.destandardise(z_pred, stats.mean, stats.std)  # [M, 13]
  mae = np.abs(pred - split.raw).mean(0)
  mae_z = np.abs(z_pred - split.z).mean(0)
  out = {}
  for t, name in enumerate(NAMES):
    unit, factor = PAPER_UNITS[name]
    out[name] = {"mae": float(mae[t]), "unit": stats.units[t], "mae_paper_units": float(mae[t] * factor),
                 "paper_unit": unit, "mae_standardised": float(mae_z[t]),
                 "paper_mgvae_mae": PAPER_MGVAE_MAE[name]}
  return out


def format_table(report: dict) -> str:
  """Test MAE per target as markdown, with Table 11's MGVAE row beside it."""
  lines = ["| target | MAE | unit | MAE (Table 10 units) | paper MGVAE (Table 11) | val MAE (std.) | head epoch |",
           "|---|---|---|---|---|---|---|"]
  for name in NAMES:
    m, h = report["test"][name], report["heads"][name]
    paper = (f"{m['paper_mgvae_mae']:g} cm^-1 (not comparable)" if name == "omega1"
             else f"{m['paper_mgvae_mae']:g} {m['paper_unit']}")
    lines.append(f"| {name} | {m['mae']:.4g} | {m['unit']} | {m['mae_paper_units']:.4g} {m['paper_unit']} | {paper} "
                 f"| {h['val_mae_standardised']:.3f} | {h['best_epoch']} |")
  return "\n".join(lines)


# --- The job. ------------------------------------------------------------------------------------------------------


def train_and_evaluate(config: Qm9PropsConfig, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Train MGVAE (resuming if workdir has checkpoints), encode, fit the heads, evaluate. Returns metrics.json."""
  finished = trainer.claim_workdir(config, workdir, stream)
  if finished is not None:
    return finished
  out = stream or sys.stdout
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  stats = load_standardisation()
  t0 = time.perf_counter()
  train = load_split(config, "train", config.num_train, stats, out)
  test = load_split(config, "test", config.num_test, stats, out)
  fit_ids, val_ids = split_validation(len(train.smiles), config.val_fraction, config.train.seed)
  if train.graphs.nodes.shape[0] < config.train.batch_size:
    raise ValueError(f"only {train.graphs.nodes.shape[0]} training molecules; need at least train.batch_size="
                     f"{config.train.batch_size}")
  t_data = time.perf_counter() - t0

  model = vae.MGVAE(config.model)
  trained = trainer.train(config, workdir, model, train.graphs, mesh, stream, what="molecules")
  state, summary = trained.state, trained.summary
  if jax.process_index() != 0:
    return {"training": summary}  # process 0 encodes, fits and reports
  params = jax.device_put(sharding.local_copy(state.params), jax.local_devices()[0])

  t0 = time.perf_counter()
  encode = pp.make_encoder(model, config.featuriser().no_atom)
  reps_train = pp.encode_all(encode, params, train.graphs, config.encode_batch_size)  # [M, d]
  reps_test = pp.encode_all(encode, params, test.graphs, config.encode_batch_size)
  mean, std = pp.feature_scaler(reps_train[fit_ids])
  scale = lambda r: (r - mean) / std
  t_encode = time.perf_counter() - t0
  print(f"encoded {len(reps_train)} training and {len(reps_test)} test molecules into {reps_train.shape[1]}-d "
        f"representations in {t_encode:.1f} s; fitting {len(NAMES)} heads on {len(fit_ids)} molecules, selecting on "
        f"{len(val_ids)}", file=out, flush=True)

  t0 = time.perf_counter()
  log_every = max(1, config.head_epochs // 10)

  def log(epoch, loss, mae):
    if epoch % log_every == 0 or epoch == config.head_epochs:
      print(f"head epoch {epoch}/{config.head_epochs}: train {config.head_loss} {loss.mean():.4f}, validation MAE "
            f"(standardised, mean over targets) {mae.mean():.4f} [{time.perf_counter() - t0:.0f} s]", file=out,
            flush=True)

  head, fit = pp.fit_heads(scale(reps_train[fit_ids]), train.z[fit_ids], scale(reps_train[val_ids]), train.z[val_ids],
                           hidden=config.head_hidden, activation=config.head_activation, loss=config.head_loss,
                           learning_rate=config.head_learning_rate, batch_size=config.head_batch_size,
                           epochs=config.head_epochs, seed=config.train.seed, log=log)
  t_heads = time.perf_counter() - t0
  z_pred = pp.predict(head, fit.params, scale(reps_test))  # [M_test, 13]
  if not np.all(np.isfinite(z_pred)):
    raise FloatingPointError("non-finite test predictions")
  result = mae_per_target(z_pred, test, stats)
  heads = {name: {"best_epoch": int(fit.best_epoch[t]), "val_mae_standardised": float(fit.val_mae[t]),
                  "val_mae": float(fit.val_mae[t] * stats.std[t])} for t, name in enumerate(NAMES)}
  report = {"preset": config.preset, "test_percent": config.test_percent, "step": summary["steps"],
            "test": result, "heads": heads,
            "molecules": {"train": len(fit_ids), "validation": len(val_ids), "test": len(test.smiles),
                          "mgvae_train": len(train.smiles)},
            "representation_dim": int(reps_train.shape[1]), "training": summary,
            "seconds": {"data": t_data, "encode": t_encode, "heads": t_heads}}
  report = trainer.write_report(report, workdir, {"step": summary["steps"],
                                                  **{f"mae_{n}": result[n]["mae"] for n in NAMES}})
  print(format_table(report), file=out, flush=True)
  return report


# --- Command line. -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS

  def build():
    sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    config = overrides.apply(qm9_props_config.get_config(f.preset), f.set)
    sharding.check_batch_size(config.train.batch_size, sharding.data_mesh())
    return config

  config = trainer.config_from_main(argv, build)
  trainer.run_job(train_and_evaluate, config, f.workdir or default_workdir(config))


def default_workdir(config: Qm9PropsConfig) -> str:
  """runs/qm9_props[_<preset> unless cpu]."""
  return trainer.default_workdir("qm9_props", preset=config.preset)


def define_flags() -> None:
  """Flags, defined only when run as a program (importing this module defines none)."""
  flags.DEFINE_enum("preset", "cpu", qm9_props_config.PRESETS,
                    "cpu: the 20-30 min default; paper: section 5.5's settings; test: seconds.")
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory; default runs/qm9_props, with _<preset> "
                      "appended for a preset other than cpu.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. num_train=50000 (repeatable).")
  trainer.define_distributed_flags()


if __name__ == "__main__":
  define_flags()
  app.run(main)
