r"""The main job's throughput: training molecules/s, sampling molecules/s (model only) and end to end, peak memory.

  python -m benchmarks.bench_molgen [--threads=1] [--presets=authors,cpu] [--batches=20,64] \
      [--num_samples=10000] [--workdir=runs/molgen_zinc]

Presets (ZINC, N = 38):
  authors  the size of the authors' PyTorch 2nd-order ZINC model, the throughput reference: first-order GCN
           encoders of 4 layers x 256 channels (diagonal posterior, as a first-order encoder gives), 2 levels of
           2 clusters, a second-order decoder of 3 layers x 64 channels on the per-channel outer product of the
           latents (d_z = 256, the paper's), and the KL to N(0, I) their code trains with. --authors_baseline is
           their code's own throughput at that size, batch 20, one thread, measured on the same machine (README says
           how); the table prints our ratio to it.
  authors_learnable_prior  the same with the learnable prior of section 4.4 (full covariance, free matching).
  cpu      experiments.molgen's default model (configs/molgen.py, preset cpu).
  cpu_autoregressive  the same with the autoregressive decoder (`--decoder=autoregressive`): node types
           from the latents, then the BFS construction (3 N = 114 scan steps, valence masks), sampled.

Training: one jitted train step (forward, backward, Adam) on real featurised ZINC batches, median of --repeats.
Sampling, model only: prior sample + decoder for --num_samples molecules in batches of --sample_batch (one
compilation), median of --repeats; each batch is decoded in chunks of vae.DECODE_CHUNK inside the compiled call,
and, in the same run, in one pass (chunk 0) for comparison. End to end: the same sampling, then RDKit decoding
(corrected and uncorrected) and the generation metrics without FCD (validity, uniqueness, novelty, QED, NSPDK
against 1,000 test molecules), once.
Without --workdir the parameters are freshly initialised (what is decoded then differs from a trained model's
molecules, and so may RDKit's time); with it, the run's latest checkpoint (preset cpu only).

--threads pins the process to that many CPUs before JAX starts (XLA sizes its thread pools by the CPUs it may use),
so --threads=1 compares thread for thread with a single-threaded PyTorch run.
"""

from __future__ import annotations

import os
import sys


def _pin_threads() -> int:
  """Apply --threads=K (read from argv before jax is imported); returns K or 0."""
  for arg in sys.argv[1:]:
    if arg.startswith("--threads="):
      k = int(arg.split("=", 1)[1])
      if k > 0:
        cpus = sorted(os.sched_getaffinity(0))[:k]
        os.sched_setaffinity(0, cpus)
        os.environ.setdefault("OMP_NUM_THREADS", str(k))
        return k
  return 0


_PINNED = _pin_threads()

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from experiments import molgen
from experiments import trainer
from experiments.configs import molgen as molgen_config
from mgvae_jax import mgn
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax.chem import metrics as chem_metrics
from mgvae_jax.data import molecules
from mgvae_jax.data import pipeline
from mgvae_jax.training import sharding

_THREADS = flags.DEFINE_integer("threads", 0, "CPUs to pin the process to (0: all); read before JAX starts.")
_PRESETS = flags.DEFINE_list("presets", ["authors", "cpu"], "model sizes to time")
_BATCHES = flags.DEFINE_list("batches", ["20", "64"], "training batch sizes")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 10_000, "molecules to sample")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 1000, "molecules per compiled sampling call")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repetitions (median reported)")
_E2E = flags.DEFINE_bool("end_to_end", True, "also time decoding + metrics (without FCD)")
_WORKDIR = flags.DEFINE_string("workdir", None, "a molgen run whose checkpoint to sample from (preset cpu)")
_WORKDIR_AR = flags.DEFINE_string("workdir_autoregressive", None,
                                  "a molgen --decoder=autoregressive run to sample from (preset cpu_autoregressive)")
_AUTHORS = flags.DEFINE_float("authors_baseline", 30.5,
                               "training molecules/s of the authors' PyTorch code at the authors preset's size, batch "
                               "20, one thread, on this machine (default: README, Benchmarks, \"The main job's "
                               "throughput\")")
_OUT = flags.DEFINE_string("out", "benchmarks/results/molgen.json", "where to write the JSON ('' = nowhere)")


def model_config(preset: str) -> molgen_config.MolgenConfig:
  base = molgen_config.get_config("zinc", "cpu")
  if preset == "cpu":
    return base
  if preset == "cpu_autoregressive":
    return molgen_config.get_config("zinc", "cpu", "autoregressive")
  if preset not in ("authors", "authors_learnable_prior"):
    raise ValueError(f"unknown preset {preset!r}; expected authors, authors_learnable_prior, cpu or "
                     "cpu_autoregressive")
  # The authors' code regularises with the KL to N(0, I); the learnable prior (section 4.4) adds d_z Cholesky
  # factorisations and triangular solves of N x N covariances per molecule and level.
  model = dataclasses.replace(
      base.model, prior="standard" if preset == "authors" else "learnable",
      mgn=mgn.MGNConfig(num_clusters=(2, 2), posterior="diagonal", local_decoder="none", encoder_order=1,
                        encoder_features=256, encoder_layers=4, cluster_order=1, cluster_features=256,
                        cluster_layers=2, pool_features=256, global_encoder_layers=0, latent_dim=256),
      decoder_features=64, decoder_layers=3)
  return dataclasses.replace(base, model=model, chemical_features=True)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mb() -> float | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def bench_training(config, model, data, batch_size: int) -> dict:
  batches = list(pipeline.batches(data, batch_size, seed=0, epoch=0))[:_REPEATS.value + 2]
  mesh = sharding.data_mesh(jax.local_devices()[:1])
  optimizer, state = trainer.mgvae_state(config, model, batches[0][0], config.train.num_steps)
  state = sharding.replicate(state, mesh)
  loss_fn = vae.make_loss_fn(model, vae.edge_pos_weight(data), trainer.temperature_fn(config.train))
  step = training.make_train_step(loss_fn, optimizer, mesh)
  put = lambda b: sharding.shard_batch(b, mesh)
  t0 = time.perf_counter()
  state, _ = step(state, put(batches[0]))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(_REPEATS.value):
    b = put(batches[1 + i % (len(batches) - 1)])
    t = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"batch": batch_size, "step_median_s": med, "molecules_per_s": batch_size / med,
          "first_step_s (compile)": compile_s, "loss": float(m["loss"])}


def time_sampling(model, params, n: int, sb: int, chunk: int) -> float:
  """Median seconds to sample n molecules (model only) in batches of sb, decoded in chunks of `chunk`."""
  sampler = trainer.make_sampler(model, sb, chunk=chunk)
  key = jax.random.PRNGKey(0)
  jax.block_until_ready(sampler(params, key))  # compile
  times = []
  for r in range(_REPEATS.value):
    t = time.perf_counter()
    for i in range(-(-n // sb)):
      jax.block_until_ready(sampler(params, jax.random.fold_in(key, 1000 * r + i)))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_sampling(config, model, params, train_smiles, test_smiles, e2e: bool) -> dict:
  n, sb = _NUM_SAMPLES.value, min(_SAMPLE_BATCH.value, _NUM_SAMPLES.value)
  med = time_sampling(model, params, n, sb, vae.DECODE_CHUNK)
  one_pass = time_sampling(model, params, n, sb, 0)
  out = {"num_samples": n, "sample_batch": sb, "decode_chunk": vae.DECODE_CHUNK, "sample_median_s": med,
         "samples_per_s (model only)": n / med, "samples_per_s (model only, one pass)": n / one_pass}
  if e2e:
    t = time.perf_counter()
    probs = trainer.sample_probabilities(model, params, n, sb, seed=0)
    t_sample = time.perf_counter() - t
    generated, raw, _ = molgen.decode_molecules(probs, config.featuriser(), config.sample_threshold)
    t_decode = time.perf_counter() - t - t_sample
    result = chem_metrics.generation_metrics(generated, train_smiles, test_smiles, num_samples=n, uncorrected=raw,
                                             compute_fcd=False, compute_nspdk=True)
    total = time.perf_counter() - t
    out.update({"end_to_end_s": total, "e2e_sample_s": t_sample, "e2e_decode_s": t_decode,
                "e2e_metrics_s": total - t_sample - t_decode, "validity": result["validity"],
                "uniqueness": result["uniqueness"]})
  return out


def main(argv):
  del argv
  results = []
  smiles = molecules.load_smiles("zinc", "train", num_train=1000, seed=0)
  test = molecules.load_smiles("zinc", "test")[:1000]
  for preset in _PRESETS.value:
    config = model_config(preset)
    feat = config.featuriser()
    data, _ = feat.featurise_many(smiles)
    model = vae.MGVAE(config.model)
    row = {"preset": preset, "threads": _PINNED or len(os.sched_getaffinity(0)),
           "params": None, "training": [], "sampling": None}
    for b in _BATCHES.value:
      row["training"].append(bench_training(config, model, data, int(b)))
      if preset == "authors" and int(b) == 20 and _PINNED == 1:
        row["training"][-1]["ratio_to_authors_code"] = row["training"][-1]["molecules_per_s"] / _AUTHORS.value
      print(f"{preset} train batch {b}: {row['training'][-1]['molecules_per_s']:.1f} mol/s", flush=True)
    workdir = {"cpu": _WORKDIR.value, "cpu_autoregressive": _WORKDIR_AR.value}.get(preset)
    if workdir:
      from experiments import sample  # pylint: disable=g-import-not-at-top
      _, _, params, step = sample.load_run(workdir)
      row["checkpoint_step"] = step
    else:
      example, _ = next(pipeline.batches(data, 1, seed=0))
      params = trainer.mgvae_state(config, model, example, config.train.num_steps)[1].params
    row["params"] = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
    row["sampling"] = bench_sampling(config, model, params, smiles, test, _E2E.value)
    print(f"{preset} sampling: {row['sampling']['samples_per_s (model only)']:.0f} mol/s model only", flush=True)
    row["peak_rss_mb"] = peak_rss_mb()
    row["device_peak_mb"] = device_peak_mb()
    results.append(row)
  common.report("bench_molgen", results, _OUT.value)
  print("\n| preset | threads | train mol/s (B=20) | x authors' code | train mol/s (B=64) | sample mol/s (model; "
        "one pass) | e2e s | peak RSS MB |")
  print("|---|---|---|---|---|---|---|---|")
  nan = float("nan")
  for r in results:
    tr = {t["batch"]: t for t in r["training"]}
    s = r["sampling"]
    print(f"| {r['preset']} | {r['threads']} | {tr.get(20, {}).get('molecules_per_s', nan):.1f} | "
          f"{tr.get(20, {}).get('ratio_to_authors_code', nan):.2f} | {tr.get(64, {}).get('molecules_per_s', nan):.1f} | "
          f"{s['samples_per_s (model only)']:.0f}; {s['samples_per_s (model only, one pass)']:.0f} | "
          f"{s.get('end_to_end_s', nan):.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
  app.run(main)
