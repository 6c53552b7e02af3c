"""The training loop and sampler shared by the generation binaries (molgen, graphgen): config fields, not types.

A config here is any frozen dataclass with the optimisation, logging and checkpoint fields of
`configs.molgen.MolgenConfig` (batch_size, num_steps, learning_rate, grad_clip, temperature_*, seed,
max_nonfinite_in_a_row, log_every, checkpoint_every, keep_checkpoints, kill_at_step).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, TextIO

from absl import logging
import jax
import numpy as np
import optax

from experiments.configs import overrides
from mgvae_jax import clustering
from mgvae_jax import graphs
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax.data import pipeline
from mgvae_jax.training import sharding

SAMPLE_STREAM = 0x5A3B1E  # folded into the seed for sampling, so sampling never reuses training randomness


def write_json(path: str, value, lines: bool = False) -> None:
  """Atomically (write beside, then rename) `value` as indented JSON, or with `lines` one JSON line per element."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    if lines:
      f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in value)
    else:
      json.dump(value, f, indent=2, allow_nan=False)
  os.replace(tmp, path)


def read_records(path: str, upto: int) -> list[dict]:
  """The JSON-lines evaluation records of steps <= upto (a resumed run redoes later ones); [] if there is no file."""
  if not os.path.exists(path):
    return []
  records = [json.loads(line) for line in open(path) if line.strip()]
  return [r for r in records if r["step"] <= upto]


def mean_std(values) -> dict:
  """{"mean", "std", "n"} of per-seed figures (population std, float64)."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def write_report(report: dict, workdir: str, eval_record: dict) -> dict:
  """metrics.json (atomically, JSON-safe) and the evaluation's line in metrics.jsonl; returns the JSON-safe report."""
  report = training.progress.to_json(report)
  write_json(os.path.join(workdir, "metrics.json"), report)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(training.progress.to_json({"phase": "eval", **eval_record}), allow_nan=False) + "\n")
  return report


def define_distributed_flags() -> None:
  """The multi-host flags every training binary takes (read by sharding.initialize_distributed)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def make_optimizer(config) -> optax.GradientTransformation:
  adam = optax.adam(config.learning_rate)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip > 0 else adam


def temperature_fn(config):
  return lambda step: clustering.gumbel_temperature(step, config.temperature_start, config.temperature_end,
                                                    config.temperature_decay_steps)


def init_state(config, model: vae.MGVAE, optimizer, mesh, example: graphs.GraphBatch):
  """A fresh TrainState (seeded), replicated over the mesh; `example` fixes the input shapes."""
  state = training.create_train_state(model, optimizer, example, seed=config.seed)
  return sharding.replicate(sharding.local_copy(state), mesh)


def write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  new = overrides.to_dict(config)
  if os.path.exists(path):
    try:
      old = json.load(open(path))
    except (OSError, json.JSONDecodeError):
      old = None
    as_read = json.loads(json.dumps(new))  # tuples as lists, as the file holds them
    if old is not None and old != as_read:
      changed = sorted(k for k in set(old) | set(as_read) if old.get(k) != as_read.get(k))
      logging.warning("workdir %s was used with another config; fields now different: %s", workdir, changed)
  if jax.process_index() == 0:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=2)
    os.replace(tmp, path)


def end_of_step(config, state, step: int, metrics, progress: training.Progress,
                manager: training.CheckpointManager) -> None:
  """After train step `step`: log when due (metrics reach the host only then), checkpoint when due, the fault
  injection of config.kill_at_step, and the stop after config.max_nonfinite_in_a_row non-finite steps."""
  progress.update(step, metrics)
  if step % config.checkpoint_every == 0:
    manager.save(state)
  if config.kill_at_step and step == config.kill_at_step:
    os.kill(os.getpid(), signal.SIGKILL)  # fault injection: no cleanup, a save may be in flight
  training.check_nonfinite(state, config.max_nonfinite_in_a_row)


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


def train(config, workdir: str, model: vae.MGVAE, data: graphs.GraphBatch, mesh, stream: Optional[TextIO] = None,
          what: str = "graphs", evaluate: Optional[Callable[[Any, int], dict]] = None,
          evaluate_every: int = 0) -> tuple[Any, dict]:
  """Restore-or-init, then train to config.num_steps with checkpoints; returns (state, summary).

  data: every training graph, stacked host arrays [G, ...]; `what` names them in the log.
  evaluate(params, step) -> dict, run on process 0 every `evaluate_every` steps (0: never) and at step 0 of a fresh
  run; each result is printed and appended to metrics.jsonl as {"phase": "quality", "step": ..., ...}.
  """
  optimizer = make_optimizer(config)
  example, _ = next(pipeline.batches(data, config.batch_size, seed=config.seed, epoch=0))
  state = init_state(config, model, optimizer, mesh, example)
  pos_weight = vae.edge_pos_weight(data)
  num_graphs = int(data.nodes.shape[0])
  step_fn = training.make_train_step(model, optimizer, edge_pos_weight=pos_weight,
                                     temperature_fn=temperature_fn(config), mesh=mesh)
  manager = training.CheckpointManager(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
                                       save_interval_steps=config.checkpoint_every)
  state, restored = training.restore_or_init(manager, state)
  start = int(sharding.local_copy(state.step))
  if jax.process_index() != 0:  # one progress log and metrics.jsonl per run, from process 0
    stream = io.StringIO()
  print(f"{'resumed from step ' + str(start) if restored else 'initialised'}; training to step {config.num_steps} "
        f"on {mesh.devices.size} device(s), {num_graphs} {what}, batch {config.batch_size}",
        file=stream or sys.stdout, flush=True)
  progress = training.Progress(config.num_steps, config.log_every,
                               os.path.join(workdir, "metrics.jsonl") if jax.process_index() == 0 else None, stream)
  steps_per_epoch = pipeline.num_batches(num_graphs, config.batch_size)
  quality_log = os.path.join(workdir, "metrics.jsonl")

  def quality(step: int) -> None:
    if evaluate is None or not evaluate_every or jax.process_index() != 0:
      return
    record = training.progress.to_json({"phase": "quality", "step": step,
                                        **evaluate(sharding.local_copy(state.params), step)})
    with open(quality_log, "a") as f:
      f.write(json.dumps(record, allow_nan=False) + "\n")
    print("quality at step " + str(step) + ": " + " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
        if k not in ("phase", "step")), file=stream or sys.stdout, flush=True)

  if start == 0:
    quality(0)
  t0 = time.perf_counter()
  eval_seconds = 0.0
  step = start
  try:
    while step < config.num_steps:
      epoch, index = training.data_position(step, steps_per_epoch)
      for batch, graph_mask in pipeline.batches(data, config.batch_size, seed=config.seed, epoch=epoch,
                                                start=index):
        if step >= config.num_steps:
          break
        batch, graph_mask = sharding.shard_batch((batch, graph_mask), mesh)
        state, step_metrics = step_fn(state, batch, graph_mask)
        step += 1
        end_of_step(config, state, step, step_metrics, progress, manager)
        if evaluate_every and step % evaluate_every == 0:
          t_eval = time.perf_counter()
          quality(step)
          eval_seconds += time.perf_counter() - t_eval
    manager.save(state, force=True)
  finally:
    manager.wait()  # a stop on non-finite losses still leaves every started save committed
    manager.close()
  seconds = time.perf_counter() - t0 - eval_seconds
  summary = {"steps": config.num_steps, "resumed_from": start if restored else None,
             "train_seconds_this_run": seconds, "quality_seconds_this_run": eval_seconds,
             "graphs_per_second": (config.num_steps - start) * config.batch_size / seconds if step > start else None,
             "nonfinite_steps_total": int(sharding.local_copy(state.nonfinite_total)),
             "edge_pos_weight": pos_weight, "devices": int(mesh.devices.size), "processes": jax.process_count()}
  return state, summary


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
