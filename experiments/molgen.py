r"""All-at-once MGVAE molecule generation (paper section 5.1): train, sample, decode, evaluate, draw.

  python -m experiments.molgen --dataset=zinc                   # the CPU default (< 30 min on 2 cores)
  python -m experiments.molgen --dataset=qm9 --preset=paper     # the paper's settings (a GPU run)
  python -m experiments.molgen --dataset=zinc --set num_steps=5000 --set model.mgn.latent_dim=32

Writes to --workdir (default runs/molgen_<dataset>): config.json, checkpoints/ (orbax, the last k), metrics.jsonl
(one record per logged step, then the evaluation), samples.smi (one line per sample, `None` for a failed decode) and
samples_uncorrected.smi, metrics.json, molecules.png, interpolation.png and loss_curve.png.

Running the same command again resumes from the latest checkpoint with the same data order and ends with the same
parameters as an uninterrupted run; a finished run only redoes sampling and evaluation. Training is data parallel
over every device (jax.sharding); multi-host runs pass --coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import plots
from experiments import trainer
from experiments.configs import molgen as molgen_config
from experiments.configs import overrides
from mgvae_jax import autoregressive
from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax.chem import decode
from mgvae_jax.chem import draw
from mgvae_jax.chem import featurise
from mgvae_jax.chem import metrics as chem_metrics
from mgvae_jax.data import molecules
from mgvae_jax.training import sharding

MolgenConfig = molgen_config.MolgenConfig


# --- Data. -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
  train: graphs.GraphBatch  # stacked host arrays of the kept training molecules
  train_smiles: list[str]  # their SMILES (novelty reference)
  test_smiles: list[str]  # FCD / NSPDK reference
  report: featurise.FeaturiseReport


def _read_smiles_file(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"train_file {path} does not exist")
  smiles = [line.split()[0] for line in open(path).read().splitlines() if line.strip()]
  if not smiles:
    raise ValueError(f"train_file {path} is empty; expected one SMILES per line")
  return smiles


def load_data(config: MolgenConfig, feat: featurise.Featuriser) -> Data:
  """Featurised training molecules and the SMILES references; skipped molecules are counted and logged."""
  if config.train_file:
    smiles = _read_smiles_file(config.train_file)[:config.num_train]
  else:
    smiles = molecules.load_smiles(config.dataset, "train", num_train=config.num_train, seed=config.seed)
  batch, report = feat.featurise_many(smiles)
  print(f"training molecules: {report.summary()}", flush=True)
  if report.kept < config.batch_size:
    raise ValueError(f"only {report.kept} training molecules could be featurised ({report.summary()}); need at least "
                     f"batch_size={config.batch_size}")
  test = molecules.load_smiles(config.dataset, "test")
  if config.num_test and config.num_test < len(test):
    keep = np.sort(np.random.default_rng(config.seed).choice(len(test), config.num_test, replace=False))
    test = [test[i] for i in keep]
  kept = [smiles[i] for i in report.kept_indices]
  return Data(train=batch, train_smiles=kept, test_smiles=test, report=report)


# --- Decoding and pictures. ----------------------------------------------------------------------------------------


def decode_molecules(probs: dict[str, np.ndarray], feat: featurise.Featuriser,
                     edge_threshold: float) -> tuple[list[Optional[str]], list[Optional[str]], dict]:
  """(corrected SMILES, uncorrected SMILES, failure counts by reason) of finest-level sample probabilities."""
  corrected = decode.decode_samples(probs, feat, corrected=True, edge_threshold=edge_threshold, connect=True)
  raw = decode.decode_samples(probs, feat, corrected=False, edge_threshold=edge_threshold)
  failures = {}
  for r in corrected:
    if not r.valid:
      key = r.reason.split(":")[0]
      failures[key] = failures.get(key, 0) + 1
  return [r.smiles for r in corrected], [r.smiles for r in raw], failures


def write_smiles(samples: Sequence[Optional[str]], path: str) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.writelines(f"{s if s else 'None'}\n" for s in samples)
  os.replace(tmp, path)


def interpolation(model: vae.MGVAE, params, feat: featurise.Featuriser, smiles: Sequence[str], steps: int,
                  edge_threshold: float, edge_pos_weight: float = 1.0) -> list[Optional[str]]:
  """Figure 7: the molecules decoded along the line between the latents of two molecules."""
  batch, report = feat.featurise_many(list(smiles)[:2])
  if report.kept < 2:
    raise ValueError(f"interpolation needs two featurisable molecules: {report.summary()}")
  one = lambda i: jax.tree_util.tree_map(lambda x: jnp.asarray(x[i:i + 1]), batch)
  probs = vae.interpolate(model, {"params": params}, one(0), one(1), steps=steps, edge_pos_weight=edge_pos_weight)
  results = decode.decode_samples(jax.device_get(probs), feat, corrected=True, edge_threshold=edge_threshold,
                                  connect=True)
  return [r.smiles for r in results]


def check_construction_steps(config: MolgenConfig, train: graphs.GraphBatch, stream: Optional[TextIO] = None
                             ) -> Optional[dict]:
  """For the autoregressive decoder: how many training molecules need more construction steps (atoms + bonds) than
  the scan has. Those are learned from their first steps only (counted, logged, recorded in metrics.json)."""
  if config.model.decoder != "autoregressive":
    return None
  real = np.asarray(train.real_node_mask(config.model.node_classes - 1))
  need = autoregressive.construction_steps(real, np.asarray(autoregressive.bond_orders(train.edges)))
  steps = config.model.autoregressive_steps
  over = int((need > steps).sum())
  if over:
    print(f"WARNING: {over} of {need.size} training molecules need more than the {steps} construction steps "
          f"(most: {int(need.max())}); they are learned from their first {steps} steps only (set model.ar_steps)",
          file=stream or sys.stdout, flush=True)
  return {"steps": steps, "most_needed": int(need.max()), "training_molecules_truncated": over}


# --- The job. ------------------------------------------------------------------------------------------------------


def train_and_evaluate(config: MolgenConfig, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Train (resuming if workdir has checkpoints), then sample, decode, evaluate and draw. Returns metrics.json."""
  os.makedirs(workdir, exist_ok=True)
  trainer.write_config(config, workdir)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  feat = config.featuriser()
  data = load_data(config, feat)
  model = vae.MGVAE(config.model)
  construction = check_construction_steps(config, data.train, stream)
  state, summary = trainer.train(config, workdir, model, data.train, mesh, stream, what="molecules")
  if construction:
    summary["autoregressive"] = construction
  if jax.process_index() != 0 or not config.evaluate:
    return {"training": summary}  # process 0 samples, evaluates and writes the artefacts
  params = jax.device_put(sharding.local_copy(state.params), jax.local_devices()[0])
  out = stream or sys.stdout

  t0 = time.perf_counter()
  pos_weight = summary["edge_pos_weight"]
  probs = trainer.sample_probabilities(model, params, config.num_samples, config.sample_batch_size, config.seed,
                               edge_pos_weight=pos_weight)
  t_sample = time.perf_counter() - t0
  generated, uncorrected, failures = decode_molecules(probs, feat, config.edge_threshold)
  t_decode = time.perf_counter() - t0 - t_sample
  write_smiles(generated, os.path.join(workdir, "samples.smi"))
  write_smiles(uncorrected, os.path.join(workdir, "samples_uncorrected.smi"))
  print(f"sampled {config.num_samples} molecules in {t_sample:.1f} s, decoded in {t_decode:.1f} s; evaluating",
        file=out, flush=True)
  result = chem_metrics.generation_metrics(generated, data.train_smiles, data.test_smiles,
                                           num_samples=config.num_samples, uncorrected=uncorrected,
                                           compute_fcd=config.compute_fcd, compute_nspdk=config.compute_nspdk)
  t_eval = time.perf_counter() - t0 - t_sample - t_decode

  drawn = draw.molecule_grid([s for s in generated if s], os.path.join(workdir, "molecules.png"),
                             max_molecules=config.grid_molecules)
  rng = np.random.default_rng(config.seed)
  pair = [data.test_smiles[i] for i in rng.choice(len(data.test_smiles), 2, replace=False)]
  strip = interpolation(model, params, feat, pair, config.interpolation_steps, config.edge_threshold, pos_weight)
  draw.interpolation_strip(strip, os.path.join(workdir, "interpolation.png"))
  plots.loss_curve(plots.read_jsonl(os.path.join(workdir, "metrics.jsonl")), os.path.join(workdir, "loss_curve.png"))

  report = {"dataset": config.dataset, "preset": config.preset, "step": config.num_steps, **result,
            "decode_failures": failures, "training": summary,
            "featurise": {"kept": data.report.kept, "total": data.report.total, "rejected": data.report.rejected},
            "interpolation": {"endpoints": pair, "decoded": strip}, "grid": drawn,
            "seconds": {"sample": t_sample, "decode": t_decode, "evaluate": t_eval}}
  report = trainer.write_report(report, workdir, {"step": config.num_steps, **{k: report[k] for k in result}})
  keys = ("validity", "validity_wo_correction", "uniqueness", "novelty", "qed_mean", "fcd", "nspdk_mmd")
  print("metrics: " + " ".join(f"{k}={report.get(k)}" for k in keys), file=out, flush=True)
  return report


# --- Command line. -------------------------------------------------------------------------------------------------


def config_from_flags() -> MolgenConfig:
  return overrides.apply(molgen_config.get_config(flags.FLAGS.dataset, flags.FLAGS.preset, flags.FLAGS.decoder),
                         flags.FLAGS.set)


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS

  def build():
    sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    config = config_from_flags()
    sharding.check_batch_size(config.batch_size, sharding.data_mesh())
    return config

  config = trainer.config_from_main(argv, build)
  suffix = "_autoregressive" if config.model.decoder == "autoregressive" else ""
  train_and_evaluate(config, flags.FLAGS.workdir or os.path.join("runs", f"molgen_{config.dataset}{suffix}"))


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so importing this module (tests, the
  benchmark, other binaries) defines none."""
  flags.DEFINE_enum("dataset", "zinc", molgen_config.DATASETS, "Molecules to learn.")
  flags.DEFINE_enum("preset", "cpu", molgen_config.PRESETS,
                    "cpu: the < 30 min default; paper: section 5.1's settings; test: seconds.")
  flags.DEFINE_enum("decoder", "all_at_once", molgen_config.DECODERS,
                    "The finest level's decoder: all_at_once (second-order, section 5.1) or autoregressive (BFS "
                    "construction with valence masks, after CGVAE).")
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory; default runs/molgen_<dataset>, with "
                      "_autoregressive appended for --decoder=autoregressive.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. num_steps=5000 or "
                            "model.mgn.latent_dim=32 (repeatable).")
  trainer.define_distributed_flags()


if __name__ == "__main__":
  define_flags()
  app.run(main)
