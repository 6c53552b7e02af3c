"""What the binaries share around the one training loop (mgvae_jax.training.run): claiming a run directory, MGVAE
training on stacked graphs (molgen, graphgen, qm9_props), reports, flags, and prior sampling.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional, TextIO

from absl import logging
import jax
import numpy as np

from experiments.configs import overrides
from mgvae_jax import clustering
from mgvae_jax import graphs
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax.data import pipeline

SAMPLE_STREAM = 0x5A3B1E  # folded into the seed for sampling, so sampling never reuses training randomness


def mean_std(values) -> dict:
  """{"mean", "std", "n"} of per-seed figures (population std, float64)."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def write_report(report: dict, workdir: str, eval_record: dict) -> dict:
  """metrics.json (atomically, JSON-safe) and the evaluation's line in metrics.jsonl; returns the JSON-safe report."""
  report = training.progress.to_json(report)
  training.rundir.write_json(os.path.join(workdir, "metrics.json"), report)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(training.progress.to_json({"phase": "eval", **eval_record}), allow_nan=False) + "\n")
  return report


def define_distributed_flags() -> None:
  """The multi-host flags every training binary takes (read by sharding.initialize_distributed)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def claim_workdir(config, workdir: str, stream: Optional[TextIO] = None) -> Optional[dict]:
  """Before anything is written: make `workdir` this config's run (training.rundir.claim; a different config is
  refused, touching no file). Returns the finished run's metrics.json if it has one (the caller returns it instead
  of redoing the run), else None."""
  training.rundir.claim(workdir, overrides.to_dict(config), defaults=overrides.field_defaults(type(config)))
  report = training.rundir.finished_report(workdir)
  if report is not None:
    print(f"{workdir} holds a finished run of this config; its results are unchanged in "
          f"{os.path.join(workdir, 'metrics.json')}", file=stream or sys.stdout, flush=True)
  return report


def temperature_fn(train: training.TrainConfig):
  """step -> the learned clustering's Gumbel-softmax temperature under `train`'s schedule (jnp-traceable)."""
  return lambda step: clustering.gumbel_temperature(step, train.temperature_start, train.temperature_end,
                                                    train.temperature_decay_steps)


def mgvae_state(config, model: vae.MGVAE, example: graphs.GraphBatch, total_steps: int):
  """(optimizer, a fresh TrainState seeded by config.train.seed) for an MGVAE config; `example` fixes shapes."""
  optimizer = training.make_optimizer(config.train, total_steps)
  return optimizer, training.create_train_state(model, optimizer, example, seed=config.train.seed)


def config_from_main(argv, build):
  """A binary's main prologue: no stray arguments, WARNING logging unless --verbosity is given (orbax logs every
  save at INFO; progress lines are printed anyway), then build() -> config, a ValueError becoming a usage message."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    return build()
  except ValueError as exc:  # bad flags: the message, not a traceback
    raise app.UsageError(str(exc)) from exc


def default_workdir(*parts: str, preset: str, default_preset: str = "cpu") -> str:
  """runs/<part>_<part>..., plus _<preset> when the preset is not the default one: runs of different presets never
  share a directory by default."""
  name = "_".join(parts) + ("" if preset == default_preset else f"_{preset}")
  return os.path.join("runs", name)


def run_job(job: Callable[..., dict], config, workdir: str) -> dict:
  """A binary's `job(config, workdir)`; a workdir that holds another config ends the program with the refusal (which
  names the differing fields), not a traceback."""
  try:
    return job(config, workdir)
  except training.ConfigMismatchError as exc:
    sys.exit(f"error: {exc}")


def train(config, workdir: str, model: vae.MGVAE, data: graphs.GraphBatch, mesh, stream: Optional[TextIO] = None,
          what: str = "graphs", evaluate: Optional[Callable[[Any, int], dict]] = None,
          evaluate_every: int = 0) -> training.RunResult:
  """MGVAE on stacked graphs `data` [G, ...] through the one loop (training.run), data-parallel over `mesh`.

  evaluate(params, step) -> dict: every `evaluate_every` steps (0: never) and at step 0 of a fresh run, into
  eval.jsonl. The summary adds the edge BCE's positive-class weight, which sampling needs.
  """
  train_cfg = config.train
  num_graphs = int(data.nodes.shape[0])
  steps_per_epoch = pipeline.num_batches(num_graphs, train_cfg.batch_size)
  total = train_cfg.total_steps(steps_per_epoch)
  example, _ = next(pipeline.batches(data, train_cfg.batch_size, seed=train_cfg.seed, epoch=0))
  optimizer, state = mgvae_state(config, model, example, total)
  pos_weight = vae.edge_pos_weight(data)
  step_fn = training.make_train_step(vae.make_loss_fn(model, pos_weight, temperature_fn(train_cfg)), optimizer, mesh)
  batches = lambda epoch, start: pipeline.batches(data, train_cfg.batch_size, seed=train_cfg.seed, epoch=epoch,
                                                  start=start)
  result = training.run(train_cfg, workdir, state, step_fn, batches, steps_per_epoch, mesh=mesh, stream=stream,
                        evaluate=evaluate, evaluate_every=evaluate_every if evaluate else 0,
                        evaluate_first=bool(evaluate and evaluate_every),
                        describe=f"{num_graphs} {what}, batch {train_cfg.batch_size}")
  result.summary["edge_pos_weight"] = pos_weight
  return result


def make_sampler(model: vae.MGVAE, batch_size: int, level: int = 0, edge_pos_weight: float = 1.0,
                 chunk: int = vae.DECODE_CHUNK):
  """A jitted `sample(params, key) -> probabilities` of `batch_size` graphs drawn from the prior of `level`.

  Level 0 returns MGVAE.decode's finest-level {node, edge, edge_type} (edge probabilities calibrated for the
  training BCE's `edge_pos_weight`); coarser levels {adjacency}. One compilation serves every batch. The latents
  are decoded `chunk` graphs at a time inside the one compiled call (vae.decode_in_chunks: cache-sized passes).
  """

  @jax.jit
  def sample(params, key):
    k_prior, k_decode = jax.random.split(key)
    z = model.apply({"params": params}, batch_size, level, method=vae.MGVAE.sample_prior, rngs={"sample": k_prior})
    if level:
      decode = lambda zc, _: model.apply({"params": params}, zc, level, method=vae.MGVAE.decode)
    else:
      # The autoregressive decoder samples its choices with the `sample` stream; the others ignore it.
      decode = lambda zc, kc: model.apply({"params": params}, zc, 0, edge_pos_weight, method=vae.MGVAE.decode,
                                          rngs={"sample": kc})
    return vae.decode_in_chunks(decode, z, k_decode, chunk)

  return sample


def sample_probabilities(model: vae.MGVAE, params, num_samples: int, batch_size: int, seed: int,
                         level: int = 0, edge_pos_weight: float = 1.0, sampler=None) -> dict[str, np.ndarray]:
  """`num_samples` decoded prior samples as host arrays, in fixed-size batches (the last one truncated).

  `sampler`: a `make_sampler(model, min(batch_size, num_samples), level, edge_pos_weight)` to reuse (and so reuse its
  compilation) across calls; made here if None.
  """
  batch_size = min(batch_size, num_samples)
  sampler = sampler or make_sampler(model, batch_size, level, edge_pos_weight)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLE_STREAM)
  chunks = []
  for i in range(-(-num_samples // batch_size)):
    chunks.append(jax.device_get(sampler(params, jax.random.fold_in(key, i))))
  return {k: np.concatenate([c[k] for c in chunks])[:num_samples] for k in chunks[0]}
