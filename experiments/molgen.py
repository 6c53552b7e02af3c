r"""All-at-once MGVAE molecule generation (paper section 5.1): train, sample, decode, evaluate, draw.

  python -m experiments.molgen --dataset=zinc                   # the CPU default (< 30 min on 2 cores)
  python -m experiments.molgen --dataset=qm9 --preset=paper     # the paper's settings (a GPU run)
  python -m experiments.molgen --dataset=zinc --set train.num_steps=5000 --set model.mgn.latent_dim=32

Writes to --workdir (default runs/molgen_<dataset>, plus _<preset> and _autoregressive where not the default):
config.json, checkpoints/ (orbax, the last k), metrics.jsonl (one record per logged step, then the evaluation),
eval.jsonl (quality during training), samples.smi (one line per sample, `None` for a failed decode) and
samples_uncorrected.smi, metrics.json, molecules.png, reconstruction.png, interpolation.png, loss_curve.png and
quality_curve.png.

Running the same command again resumes from the latest checkpoint with the same data order and ends with the same
parameters as an uninterrupted run. A workdir holding another config is refused before anything is written, and a
finished run is left as it is (experiments.sample samples it again, beside its results). Training is data parallel
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
from mgvae_jax import aggregate_prior
from mgvae_jax import autoregressive
from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax.chem import decode
from mgvae_jax.chem import draw
from mgvae_jax.chem import featurise
from mgvae_jax.chem import metrics as chem_metrics
from mgvae_jax.chem import reconstruction
from mgvae_jax.chem import statistics
from mgvae_jax.data import files
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
  held_out: graphs.GraphBatch  # featurised test molecules whose reconstruction is measured
  held_out_smiles: list[str]


def _read_smiles_file(path: str) -> list[str]:
  text = files.read_text(path, "training SMILES, one per line", role="train_file")
  smiles = [line.split()[0] for line in text.splitlines() if line.strip()]
  if not smiles:
    raise ValueError(f"train_file {path} is empty; expected one SMILES per line")
  return smiles


def load_data(config: MolgenConfig, feat: featurise.Featuriser) -> Data:
  """Featurised training molecules and the SMILES references; skipped molecules are counted and logged."""
  if config.train_file:
    smiles = _read_smiles_file(config.train_file)[:config.num_train]
  else:
    smiles = molecules.load_smiles(config.dataset, "train", num_train=config.num_train, seed=config.train.seed)
  batch, report = feat.featurise_many(smiles)
  print(f"training molecules: {report.summary()}", flush=True)
  if report.kept < config.train.batch_size:
    raise ValueError(f"only {report.kept} training molecules could be featurised ({report.summary()}); need at least "
                     f"train.batch_size={config.train.batch_size}")
  full_test = molecules.load_smiles(config.dataset, "test")
  test = full_test
  if config.num_test and config.num_test < len(test):
    keep = np.sort(np.random.default_rng(config.train.seed).choice(len(test), config.num_test, replace=False))
    test = [test[i] for i in keep]
  kept = [smiles[i] for i in report.kept_indices]
  held_out, held_out_smiles = held_out_molecules(config, feat, full_test)
  return Data(train=batch, train_smiles=kept, test_smiles=test, report=report, held_out=held_out,
              held_out_smiles=held_out_smiles)


def held_out_molecules(config: MolgenConfig, feat: featurise.Featuriser, test: list[str]
                       ) -> tuple[graphs.GraphBatch, list[str]]:
  """`config.num_reconstruct` molecules of the test split `test` (a seeded draw) that the featuriser can encode, and
  their SMILES."""
  rng = np.random.default_rng(config.train.seed + 1)
  pick = rng.permutation(len(test))[:max(2 * config.num_reconstruct, 16)]
  batch, report = feat.featurise_many([test[i] for i in pick])
  keep = min(config.num_reconstruct, report.kept)
  smiles = [test[pick[i]] for i in report.kept_indices[:keep]]
  return jax.tree_util.tree_map(lambda x: x[:keep], batch), smiles


# --- Decoding and pictures. ----------------------------------------------------------------------------------------


def decode_molecules(probs: dict[str, np.ndarray], feat: featurise.Featuriser, edge_threshold: float,
                     workers: Optional[int] = 1) -> tuple[list[Optional[str]], list[Optional[str]], dict]:
  """(corrected SMILES, uncorrected SMILES, failure counts by reason) of finest-level sample probabilities, decoded
  in `workers` processes (None: every core)."""
  corrected = decode.decode_samples(probs, feat, corrected=True, edge_threshold=edge_threshold, connect=True,
                                    workers=workers)
  raw = decode.decode_samples(probs, feat, corrected=False, edge_threshold=edge_threshold, workers=workers)
  failures = {}
  for r in corrected:
    if not r.valid:
      key = r.reason.split(":")[0]
      failures[key] = failures.get(key, 0) + 1
  return [r.smiles for r in corrected], [r.smiles for r in raw], failures


def summarise_samples(probs: dict[str, np.ndarray], feat: featurise.Featuriser, data: Data, edge_threshold: float,
                      compute_fcd: bool) -> dict:
  """One prior's samples in a line, against the test molecules: validity without correction, uniqueness, novelty,
  QED, FCD, rings and atoms a molecule (decoded and scored on every core)."""
  generated, uncorrected, _ = decode_molecules(probs, feat, edge_threshold, workers=None)
  gen = chem_metrics.generation_metrics(generated, data.train_smiles, data.test_smiles, uncorrected=uncorrected,
                                        compute_fcd=compute_fcd, compute_nspdk=False, workers=None)
  stats = statistics.molecule_statistics(generated, sa_score=False)
  return {**{k: gen[k] for k in ("validity_wo_correction", "uniqueness", "novelty", "qed_mean", "fcd")},
          "rings_mean": stats["rings_mean"], "atoms_mean": stats["atoms_mean"]}


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


def make_quality_fn(config: MolgenConfig, model: vae.MGVAE, feat: featurise.Featuriser, data: Data):
  """`fn(params, step) -> dict`: a quick reading of what the model has learned, for the quality curve.

  Held-out reconstruction of the first `quality_molecules` molecules (exact, corrected, bond AUC) and the validity,
  uniqueness and FCD of `quality_samples` prior samples against the test molecules.
  """
  pos_weight = vae.edge_pos_weight(data.train)
  size = min(config.quality_molecules, int(data.held_out.nodes.shape[0]))
  held_out = jax.tree_util.tree_map(lambda x: x[:size], data.held_out)
  smiles = data.held_out_smiles[:size]
  reconstructor = reconstruction.make_reconstructor(model, pos_weight)
  sample_batch = min(config.sample_batch_size, config.quality_samples)
  sampler = trainer.make_sampler(model, sample_batch, 0, pos_weight)

  def fn(params, step):
    del step
    params = jax.device_put(params, jax.local_devices()[0])
    recon = reconstruction.reconstruction_metrics(model, params, held_out, smiles, feat, edge_pos_weight=pos_weight,
                                                  edge_threshold=config.edge_threshold, batch_size=size,
                                                  reconstructor=reconstructor)
    probs = trainer.sample_probabilities(model, params, config.quality_samples, sample_batch, config.train.seed,
                                         edge_pos_weight=pos_weight, sampler=sampler)
    generated, uncorrected, _ = decode_molecules(probs, feat, config.sample_threshold)
    gen = chem_metrics.generation_metrics(generated, data.train_smiles, data.test_smiles, uncorrected=uncorrected,
                                          compute_fcd=config.compute_fcd, compute_nspdk=False)
    return {"exact": recon["exact"], "exact_corrected": recon["exact_corrected"], "bond_auc": recon["bond_auc"],
            "kl_nats": recon["kl_nats"], "validity_wo_correction": gen["validity_wo_correction"],
            "uniqueness": gen["uniqueness"], "fcd": gen.get("fcd")}

  return fn


def fitted_prior(config: MolgenConfig, model: vae.MGVAE, params, data: Data, workdir: str, step: int):
  """The density fitted to the training molecules' finest posterior means that config.sample_from names (a Gaussian
  mixture or a kernel density estimate, aggregate_prior.py), cached in `<workdir>/<kind>_prior_step<S>.npz`; and
  what was fitted, for metrics.json. Either has `sample(key, num) -> [num, N, d]`."""
  latents = lambda: aggregate_prior.posterior_means(model, params, data.train, config.sample_batch_size)
  t0 = time.perf_counter()
  if config.sample_from == "kernel":
    path, kind = os.path.join(workdir, f"kernel_prior_step{step}.npz"), aggregate_prior.KernelDensity
    fit = lambda: aggregate_prior.fit_kernel(latents(), config.prior_bandwidth)
  else:
    path, kind = os.path.join(workdir, f"aggregate_prior_step{step}.npz"), aggregate_prior.GaussianMixture
    fit = lambda: aggregate_prior.fit(latents(), config.prior_components, config.train.seed)
  if os.path.exists(path):
    prior = kind.load(path)
  else:
    prior = fit()
    prior.save(path)
  if kind is aggregate_prior.KernelDensity:  # the centres are the run's; the bandwidth is the config's
    prior = prior.replace(bandwidth=config.prior_bandwidth)
    report = {"kind": "kernel_density", "centres": int(prior.centres.shape[0]), "bandwidth": prior.bandwidth,
              "dimension": int(prior.centres.shape[1])}
  else:
    report = {"kind": "gaussian_mixture", "components": int(prior.weights.shape[0]),
              "dimension": int(prior.means.shape[1])}
  return prior, {**report, "file": os.path.basename(path), "seconds": time.perf_counter() - t0}


def sample_molecules(config: MolgenConfig, model: vae.MGVAE, params, data: Data, workdir: str, step: int,
                     num: int, seed: int, batch_size: int) -> tuple[dict[str, np.ndarray], Optional[dict]]:
  """`num` finest-level sample probabilities from the prior the config names (sample_from), and the fitted prior's
  report (None for the model's own prior)."""
  pos_weight = vae.edge_pos_weight(data.train)
  if config.sample_from != "prior":
    prior, report = fitted_prior(config, model, params, data, workdir, step)
    return aggregate_prior.sample_and_decode(model, params, prior, num, seed, batch_size, pos_weight,
                                             trainer.SAMPLE_STREAM), report
  return trainer.sample_probabilities(model, params, num, batch_size, seed, edge_pos_weight=pos_weight), None


# --- The job. ------------------------------------------------------------------------------------------------------


def train_and_evaluate(config: MolgenConfig, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Train (resuming if workdir has checkpoints), then sample, decode, evaluate and draw. Returns metrics.json."""
  finished = trainer.claim_workdir(config, workdir, stream)
  if finished is not None:
    return finished
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  feat = config.featuriser()
  data = load_data(config, feat)
  model = vae.MGVAE(config.model)
  construction = check_construction_steps(config, data.train, stream)
  evaluate = make_quality_fn(config, model, feat, data) if config.quality_every else None
  trained = trainer.train(config, workdir, model, data.train, mesh, stream, what="molecules", evaluate=evaluate,
                          evaluate_every=config.quality_every)
  state, summary = trained.state, trained.summary
  if construction:
    summary["autoregressive"] = construction
  if jax.process_index() != 0 or not config.evaluate:
    return {"training": summary}  # process 0 samples, evaluates and writes the artefacts
  params = jax.device_put(sharding.local_copy(state.params), jax.local_devices()[0])
  out = stream or sys.stdout

  t0 = time.perf_counter()
  pos_weight = summary["edge_pos_weight"]
  probs, prior_report = sample_molecules(config, model, params, data, workdir, int(summary["steps"]),
                                         config.num_samples, config.train.seed, config.sample_batch_size)
  t_sample = time.perf_counter() - t0
  generated, uncorrected, failures = decode_molecules(probs, feat, config.sample_threshold, workers=None)
  t_decode = time.perf_counter() - t0 - t_sample
  write_smiles(generated, os.path.join(workdir, "samples.smi"))
  write_smiles(uncorrected, os.path.join(workdir, "samples_uncorrected.smi"))
  print(f"sampled {config.num_samples} molecules in {t_sample:.1f} s, decoded in {t_decode:.1f} s; evaluating",
        file=out, flush=True)
  result = chem_metrics.generation_metrics(generated, data.train_smiles, data.test_smiles,
                                           num_samples=config.num_samples, uncorrected=uncorrected,
                                           compute_fcd=config.compute_fcd, compute_nspdk=config.compute_nspdk,
                                           workers=None)
  t_eval = time.perf_counter() - t0 - t_sample - t_decode
  recon = reconstruction.reconstruction_metrics(model, params, data.held_out, data.held_out_smiles, feat,
                                                edge_pos_weight=pos_weight, edge_threshold=config.edge_threshold,
                                                keep_examples=12)
  draw.reconstruction_pairs(recon.pop("examples"), os.path.join(workdir, "reconstruction.png"))
  sample_stats = statistics.molecule_statistics(generated)
  test_stats = statistics.molecule_statistics(data.test_smiles)
  t_diag = time.perf_counter() - t0 - t_sample - t_decode - t_eval
  if prior_report is not None:  # the same model's learnable prior beside the fitted one, measured the same way
    learned = trainer.sample_probabilities(model, params, config.num_samples, config.sample_batch_size,
                                           config.train.seed,
                                           edge_pos_weight=pos_weight)
    prior_report["learnable_prior_samples"] = summarise_samples(learned, feat, data, config.sample_threshold,
                                                                config.compute_fcd)

  drawn = draw.molecule_grid([s for s in generated if s], os.path.join(workdir, "molecules.png"),
                             max_molecules=config.grid_molecules)
  rng = np.random.default_rng(config.train.seed)
  pair = [data.test_smiles[i] for i in rng.choice(len(data.test_smiles), 2, replace=False)]
  strip = interpolation(model, params, feat, pair, config.interpolation_steps, config.edge_threshold, pos_weight)
  draw.interpolation_strip(strip, os.path.join(workdir, "interpolation.png"))
  plots.loss_curve(plots.read_jsonl(os.path.join(workdir, "metrics.jsonl")), os.path.join(workdir, "loss_curve.png"))
  if trained.records:
    plots.quality_curve(trained.records, os.path.join(workdir, "quality_curve.png"))

  report = {"dataset": config.dataset, "preset": config.preset, "step": config.train.num_steps, **result,
            "decode_failures": failures, "training": summary,
            "featurise": {"kept": data.report.kept, "total": data.report.total, "rejected": data.report.rejected},
            "reconstruction": recon, "sampled_from": config.sample_from, "fitted_prior": prior_report,
            "sample_statistics": {"samples": sample_stats, "test": test_stats,
                                  "gaps": statistics.compare(sample_stats, test_stats)},
            "interpolation": {"endpoints": pair, "decoded": strip}, "grid": drawn,
            "seconds": {"sample": t_sample, "decode": t_decode, "evaluate": t_eval, "diagnostics": t_diag}}
  report = trainer.write_report(report, workdir, {"step": config.train.num_steps, **{k: report[k] for k in result}})
  keys = ("validity", "validity_wo_correction", "uniqueness", "novelty", "qed_mean", "fcd", "nspdk_mmd")
  print("metrics: " + " ".join(f"{k}={report.get(k)}" for k in keys), file=out, flush=True)
  print(f"held-out reconstruction ({recon['molecules']} molecules): " + " ".join(
      f"{k}={recon[k]}" for k in ("exact", "exact_corrected", "valid", "bond_auc", "topk_precision", "node_accuracy",
                                  "missed_bonds_mean", "extra_bonds_mean", "overflow_atoms_mean", "kl_nats")),
        file=out, flush=True)
  print("samples against test: " + " ".join(
      f"{k}={sample_stats[k]}/{test_stats[k]}" for k in ("atoms_mean", "rings_mean", "qed_mean", "sa_mean")),
        file=out, flush=True)
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
    sharding.check_batch_size(config.train.batch_size, sharding.data_mesh())
    return config

  config = trainer.config_from_main(argv, build)
  trainer.run_job(train_and_evaluate, config, flags.FLAGS.workdir or default_workdir(config))


def default_workdir(config: MolgenConfig) -> str:
  """runs/molgen_<dataset>[_autoregressive][_<preset> unless cpu]."""
  parts = ("molgen", config.dataset) + (("autoregressive",) if config.model.decoder == "autoregressive" else ())
  return trainer.default_workdir(*parts, preset=config.preset)


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
                      "_<preset> appended for a preset other than cpu, and _autoregressive for that decoder.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. train.num_steps=5000 or "
                            "model.mgn.latent_dim=32 (repeatable).")
  trainer.define_distributed_flags()


if __name__ == "__main__":
  define_flags()
  app.run(main)
