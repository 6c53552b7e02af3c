r"""Ablations of the molecule model: one molgen run per variant, same data, seed and evaluation, one table.

  python -m benchmarks.molgen_ablations --dataset=qm9 --steps=1500                      # every variant
  python -m benchmarks.molgen_ablations --dataset=qm9 --only=base,rank_sum --steps=1500

Each variant is `experiments.molgen` with a few `--set` overrides on the dataset's cpu preset, in its own workdir
(`<root>/<dataset>_<steps>_<variant>`), one after another (never two at once: the minutes are part of the table).
A finished variant is not run again: its metrics.json is read. For each change the table has the
held-out exact reconstruction (posterior mean, without and with the correcting decoder), bond AUC, KL per level,
and the samples' validity without correction, uniqueness, FCD (1,000 samples against 1,000 test molecules), rings
and atoms per molecule against the test set's, QED. Results: benchmarks/results/molgen_ablations_<dataset>.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Sequence

from absl import app
from absl import flags

from benchmarks import common

# The cpu preset before these changes, as overrides of today's: mean reconstruction terms, beta 0.01, product pairs,
# no rank features, Adam 1e-3, the model's own prior (10 components where a variant fits a mixture).
BASE = ["rank_features=False", "model.decoder_pairs=product", "model.kl_weight=0.01", "train.learning_rate=0.001",
        "sample_from=prior", "prior_components=10"]
# name -> changes to BASE. Each adds one change to the variant it names in its comment.
CHANGES = {
    "base": [],
    "rank": ["rank_features=True"],  # + canonical-rank node features (base)
    "sum": ["model.reconstruction=sum", "model.kl_weight=1.0"],  # summed reconstruction, beta 1: the ELBO (base)
    "rank_sum": ["rank_features=True", "model.reconstruction=sum", "model.kl_weight=1.0"],  # both
    # What the architecture can reconstruct at all: almost no KL pressure (beta 1e-4).
    "ae": ["model.kl_weight=0.0001"],
    "ae_bilinear": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear"],  # + bilinear pair input (ae)
    "ae_rank_bilinear": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True"],
    "ae_rank_bilinear_g2": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True",
                            "model.mgn.global_encoder_layers=2"],
    "ae_rank_bilinear_d32": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True",
                             "model.mgn.latent_dim=32"],
    "ae_rank_bilinear_nonoise": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True",
                                 "model.mgn.cluster_noise=0.0"],
    # + samples from a Gaussian mixture fitted to the aggregate posterior (ae_rank_bilinear; its metrics.json also
    # scores the learnable prior of the same model under "fitted_prior").
    "ae_rank_bilinear_aggregate": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True",
                                   "sample_from=aggregate"],
    # + Adam 2e-3: today's cpu preset (ae_rank_bilinear_aggregate).
    "cpu_preset": ["model.kl_weight=0.0001", "model.decoder_pairs=bilinear", "rank_features=True",
                   "sample_from=aggregate", "train.learning_rate=0.002", "prior_components=20"],
}
VARIANTS = {name: BASE + changes for name, changes in CHANGES.items()}

flags.DEFINE_enum("dataset", "qm9", ("qm9", "zinc"), "Dataset (its cpu preset is the base).")
flags.DEFINE_integer("steps", 1500, "Training steps of every variant.")
flags.DEFINE_list("only", None, "Variants to run (default all).")
flags.DEFINE_string("root", "runs/ablations", "Where the variants' workdirs go.")
flags.DEFINE_integer("num_samples", 1000, "Prior samples per variant.")
flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/molgen_ablations_<dataset>.json).")

COLUMNS = ("minutes", "exact", "exact_corrected", "bond_auc", "kl_nats", "validity_wo_correction", "uniqueness",
           "fcd", "rings", "atoms", "qed")


def summarise(metrics: dict, minutes) -> dict:
  recon = metrics.get("reconstruction", {})
  stats = metrics.get("sample_statistics", {})
  samples, test = stats.get("samples", {}), stats.get("test", {})
  return {"minutes": minutes, "exact": recon.get("exact"), "exact_corrected": recon.get("exact_corrected"),
          "bond_auc": recon.get("bond_auc"), "kl_nats": recon.get("kl_nats"),
          "validity_wo_correction": metrics.get("validity_wo_correction"), "uniqueness": metrics.get("uniqueness"),
          "fcd": metrics.get("fcd"), "rings": [samples.get("rings_mean"), test.get("rings_mean")],
          "atoms": [samples.get("atoms_mean"), test.get("atoms_mean")], "qed": metrics.get("qed_mean")}


def run_variant(name: str, overrides: Sequence[str], workdir: str) -> dict:
  metrics_path = os.path.join(workdir, "metrics.json")
  timing_path = os.path.join(workdir, "ablation_seconds.json")
  if not os.path.exists(metrics_path):
    cmd = [sys.executable, "-m", "experiments.molgen", f"--dataset={flags.FLAGS.dataset}", f"--workdir={workdir}",
           "--set", f"train.num_steps={flags.FLAGS.steps}", "--set", f"num_samples={flags.FLAGS.num_samples}"]
    for o in overrides:
      cmd += ["--set", o]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "ablation.log"), "w") as log:
      subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(timing_path, "w") as f:
      json.dump({"seconds": time.perf_counter() - t0}, f)
  metrics = json.load(open(metrics_path))
  seconds = json.load(open(timing_path))["seconds"] if os.path.exists(timing_path) else None
  return summarise(metrics, None if seconds is None else seconds / 60.0)


def _fmt(v) -> str:
  if v is None:
    return "–"
  if isinstance(v, list):
    return " / ".join(_fmt(x) for x in v)
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  names = f.only or list(VARIANTS)
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    raise app.UsageError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
  out = f.out or os.path.join("benchmarks", "results", f"molgen_ablations_{f.dataset}.json")
  results = json.load(open(out)) if os.path.exists(out) else {}
  runs = results.setdefault("runs", {})
  for name in names:
    workdir = os.path.join(f.root, f"{f.dataset}_{f.steps}_{name}")
    row = run_variant(name, VARIANTS[name], workdir)
    runs[f"{name}@{f.steps}"] = {"variant": name, "steps": f.steps, "overrides": VARIANTS[name], **row}
    results["machine"] = common.cpu_model()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
      json.dump(results, fh, indent=2)
    print(f"| {name} | {f.steps} | " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
