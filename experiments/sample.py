r"""Sample a trained molgen run: batched, jitted, one compilation for all batches.

  python -m experiments.sample --workdir=runs/molgen_zinc --num_samples=10000 [--level=0] [--seed=1]
  python -m experiments.sample --workdir=runs/molgen_qm9 --protocol=gdss     # GDSS's 10,000-sample protocol

Reads the run's config.json and latest checkpoint. Level 0 (the finest, the molecule) writes
`<workdir>/samples/step<S>_n<num>_seed<seed>.smi` (one SMILES per line, `None` for a failed decode), the uncorrected
decodes beside it and the generation metrics as `.metrics.json`, with the held-out reconstruction and the samples'
statistics against the test set (as molgen's metrics.json). A coarser level l >= 1 (the coarsened graphs of K_l nodes;
the library's 0 = finest numbering) has no molecules to decode: it writes the sampled weighted adjacencies as
`.npz` with summary statistics in `.metrics.json`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import molgen
from experiments import trainer
from experiments.configs import molgen as molgen_config
from experiments.configs import overrides
from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax import training
from mgvae_jax.chem import metrics as chem_metrics
from mgvae_jax.chem import reconstruction
from mgvae_jax.chem import statistics
from mgvae_jax.data import files
from mgvae_jax.data import molecules
from mgvae_jax.training import progress


def load_config(workdir: str) -> molgen_config.MolgenConfig:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} has no config.json: is it a workdir of experiments.molgen?")
  config = files.read_json(path, "molgen config JSON")
  try:
    return overrides.from_dict(molgen_config.MolgenConfig, config)
  except (TypeError, ValueError) as exc:
    raise ValueError(f"{path} is not a readable molgen config: {exc}") from exc


def check_level(config: molgen_config.MolgenConfig, level: int) -> None:
  levels = config.model.num_latent_levels
  if not 0 <= level < levels:
    raise ValueError(f"level must be in [0, {levels}) for this model (0 = the molecule; {levels} latent levels of "
                     f"{config.model.level_sizes()} nodes), got {level}")


def load_run(workdir: str, config: Optional[molgen_config.MolgenConfig] = None
             ) -> tuple[molgen_config.MolgenConfig, vae.MGVAE, dict, int]:
  """(config, model, params, step) of a molgen workdir's latest checkpoint (`config`: its already-read config)."""
  config = config or load_config(workdir)
  model = vae.MGVAE(config.model)
  manager = training.CheckpointManager(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    if manager.latest_step() is None:
      raise FileNotFoundError(f"{workdir}/checkpoints has no checkpoint: train first (python -m experiments.molgen)")
    feat = config.featuriser()
    n = config.model.max_nodes
    example = graphs.GraphBatch(np.zeros((1, n, feat.num_node_features), np.float32),
                                np.zeros((1, n, n, feat.num_edge_types), np.float32), np.ones((1, n), bool))
    optimizer = training.make_optimizer(config.train, config.train.num_steps)
    state = training.create_train_state(model, optimizer, example, seed=config.train.seed)
    state, restored = training.restore_or_init(manager, state)
    if not restored:
      raise FileNotFoundError(f"{workdir}/checkpoints: no checkpoint could be restored")
  finally:
    manager.close()
  return config, model, state.params, int(state.step)


def run(workdir: str, num_samples: int, level: int = 0, seed: int = 1, batch_size: Optional[int] = None,
        out_dir: Optional[str] = None, compute_fcd: Optional[bool] = None, stream: Optional[TextIO] = None) -> dict:
  """Sample `num_samples` graphs at `level` from the run in `workdir`; write the files and return the metrics."""
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  config = load_config(workdir)
  check_level(config, level)
  config, model, params, step = load_run(workdir, config)
  out_dir = out_dir or os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f"step{step}_n{num_samples}_seed{seed}" + (f"_level{level}" if level else ""))
  out = stream or sys.stdout
  batch_size = batch_size or config.sample_batch_size
  feat = config.featuriser()
  data = None
  if level == 0:  # molecules: the run's training set gives edge_pos_weight, novelty and the test subset
    data = molgen.load_data(config, feat)
  t0 = time.perf_counter()
  if level == 0:  # the prior the run samples from (its config's sample_from)
    probs, _ = molgen.sample_molecules(config, model, params, data, workdir, step, num_samples, seed, batch_size)
  else:
    probs = trainer.sample_probabilities(model, params, num_samples, batch_size, seed, level, 1.0)
  t_sample = time.perf_counter() - t0
  result = {"workdir": workdir, "step": step, "level": level, "num_samples": num_samples, "seed": seed}
  if level > 0:
    adj = probs["adjacency"]  # [S, K, K]
    np.savez_compressed(f"{stem}.npz", adjacency=adj)
    result.update(nodes=int(adj.shape[1]), mean_weight=float(adj.mean()),
                  mean_offdiagonal=float((adj.sum((1, 2)) - np.trace(adj, axis1=1, axis2=2)).mean()))
  else:
    generated, uncorrected, failures = molgen.decode_molecules(probs, feat, config.sample_threshold)
    molgen.write_smiles(generated, f"{stem}.smi")
    molgen.write_smiles(uncorrected, f"{stem}.uncorrected.smi")
    result.update(chem_metrics.generation_metrics(
        generated, data.train_smiles, data.test_smiles, num_samples=num_samples, uncorrected=uncorrected,
        compute_fcd=config.compute_fcd if compute_fcd is None else compute_fcd,
        compute_nspdk=config.compute_nspdk))
    result["decode_failures"] = failures
    # What the model learned, as molgen reports it: held-out reconstruction and the samples against the test set.
    result["reconstruction"] = reconstruction.reconstruction_metrics(
        model, params, data.held_out, data.held_out_smiles, feat, edge_pos_weight=vae.edge_pos_weight(data.train),
        edge_threshold=config.edge_threshold)
    sample_stats = statistics.molecule_statistics(generated)
    test_stats = statistics.molecule_statistics(data.test_smiles)
    result["sample_statistics"] = {"samples": sample_stats, "test": test_stats,
                                   "gaps": statistics.compare(sample_stats, test_stats)}
  result["seconds"] = {"sample": t_sample, "total": time.perf_counter() - t0}
  result = progress.to_json(result)
  training.rundir.write_json(f"{stem}.metrics.json", result)
  print(f"wrote {stem}.* ({num_samples} samples at level {level}, {num_samples / t_sample:.0f} samples/s "
        "model only)", file=out, flush=True)
  return result




GDSS_SAMPLES = 10_000


def gdss_protocol(workdir: str, seed: int = 1, batch_size: Optional[int] = None, workers: Optional[int] = None,
                  stream: Optional[TextIO] = None, num_samples: int = GDSS_SAMPLES, compute_fcd: bool = True) -> dict:
  """GDSS's molecule protocol (Jo et al. 2022): 10,000 prior samples; validity w/o correction, uniqueness, novelty;
  FCD and NSPDK MMD against the whole test split. Beside them, the floor: the same metrics for 10,000 training
  molecules against the test split (what a model that reproduced the training distribution would score).

  Decoding and the RDKit metrics run on `workers` processes (None: every core). Writes
  `<workdir>/samples/gdss_step<S>_seed<seed>.json` (and the SMILES beside it); the floor is cached per run in
  `<workdir>/samples/gdss_floor.json`. `num_samples` and `compute_fcd` exist for tests; the protocol is 10,000 with FCD.
  """
  config = load_config(workdir)
  config, model, params, step = load_run(workdir, config)
  out = stream or sys.stdout
  feat = config.featuriser()
  data = molgen.load_data(config, feat)
  test = molecules.load_smiles(config.dataset, "test")  # the whole split, not the run's subset
  out_dir = os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  t0 = time.perf_counter()
  probs, _ = molgen.sample_molecules(config, model, params, data, workdir, step, num_samples, seed,
                                     batch_size or config.sample_batch_size)
  t_sample = time.perf_counter() - t0
  generated, uncorrected, failures = molgen.decode_molecules(probs, feat, config.sample_threshold, workers)
  t_decode = time.perf_counter() - t0 - t_sample
  stem = os.path.join(out_dir, f"gdss_step{step}_seed{seed}")
  molgen.write_smiles(generated, f"{stem}.smi")
  molgen.write_smiles(uncorrected, f"{stem}.uncorrected.smi")
  result = chem_metrics.generation_metrics(generated, data.train_smiles, test, uncorrected=uncorrected,
                                           compute_fcd=compute_fcd, workers=workers)
  t_fcd = result.pop("fcd_seconds", 0.0)
  t_metrics = time.perf_counter() - t0 - t_sample - t_decode - t_fcd
  floor_path = os.path.join(out_dir, f"gdss_floor_n{num_samples}.json")
  if os.path.exists(floor_path):
    floor = files.read_json(floor_path, "train-vs-test floor metrics")
  else:
    reference = molecules.load_smiles(config.dataset, "train", num_train=num_samples, seed=config.train.seed + 7)
    floor = chem_metrics.generation_metrics(reference, [], test, compute_fcd=compute_fcd, workers=workers)
    floor = {k: floor[k] for k in ("fcd", "nspdk_mmd", "fcd_num_generated", "fcd_num_test")}
    training.rundir.write_json(floor_path, floor)
  result = progress.to_json({
      "protocol": "gdss", "workdir": workdir, "step": step, "seed": seed, **result, "decode_failures": failures,
      "floor_train_vs_test": floor,
      "seconds": {"sample": t_sample, "decode": t_decode, "metrics_without_fcd": t_metrics, "fcd": t_fcd,
                  "end_to_end_without_fcd": t_sample + t_decode + t_metrics}})
  training.rundir.write_json(f"{stem}.json", result)
  print(f"GDSS protocol, {num_samples} samples at step {step}: validity w/o correction "
        f"{result['validity_wo_correction']:.3f}, uniqueness {result['uniqueness']:.3f}, novelty "
        f"{result['novelty']:.3f}, FCD {_f(result['fcd'])} (train vs test floor {_f(floor['fcd'])}), NSPDK "
        f"{_f(result['nspdk_mmd'])} (floor {_f(floor['nspdk_mmd'])}); {t_sample + t_decode + t_metrics:.1f} s end "
        f"to end without FCD (sampling {t_sample:.1f}, decoding {t_decode:.1f}, metrics {t_metrics:.1f}), FCD "
        f"{t_fcd:.1f} s; wrote {stem}.json", file=out, flush=True)
  return result


def _f(x) -> str:
  return "n/a" if x is None else f"{x:.4g}"


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if flags.FLAGS.num_samples < 1:
    raise app.UsageError(f"--num_samples must be >= 1, got {flags.FLAGS.num_samples}")
  if flags.FLAGS.batch_size is not None and flags.FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {flags.FLAGS.batch_size}")
  try:
    check_level(load_config(flags.FLAGS.workdir), flags.FLAGS.level)
  except (ValueError, FileNotFoundError) as exc:
    raise app.UsageError(str(exc)) from exc
  f = flags.FLAGS
  if f.protocol == "gdss":
    if f.level != 0 or f["num_samples"].present or f.out_dir:
      raise app.UsageError("--protocol=gdss samples 10,000 molecules at level 0 into <workdir>/samples; it takes no "
                           "--level, --num_samples or --out_dir")
    gdss_protocol(f.workdir, f.seed, f.batch_size, None if f.workers == 0 else f.workers)
    return
  run(f.workdir, f.num_samples, f.level, f.seed, f.batch_size, f.out_dir, False if f.no_fcd else None)


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so importing this module (tests, the
  benchmark, other binaries) defines none."""
  flags.DEFINE_string("workdir", None, "A workdir of experiments.molgen.", required=True)
  flags.DEFINE_integer("num_samples", 10_000, "How many graphs to sample.")
  flags.DEFINE_integer("level", 0, "Prior level to sample from: 0 = the molecule (finest), 1.. coarser.")
  flags.DEFINE_integer("seed", 1, "Sampling seed.")
  flags.DEFINE_integer("batch_size", None, "Samples per compiled batch; default the run's sample_batch_size.")
  flags.DEFINE_string("out_dir", None, "Where to write; default <workdir>/samples.")
  flags.DEFINE_bool("no_fcd", False, "Skip FCD.")
  flags.DEFINE_enum("protocol", None, ("gdss",), "gdss: 10,000 samples, FCD and NSPDK against the whole test split, "
                    "with the train-vs-test floor beside them.")
  flags.DEFINE_integer("workers", 0, "Processes for decoding and the RDKit metrics (0: every core).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
