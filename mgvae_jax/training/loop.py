"""The one training loop every binary uses: restore-or-init, data position, evaluations, checkpoints, progress, stops.

  step_fn = training.make_train_step(loss_fn, optimizer, mesh)
  result = training.run(config.train, workdir, state, step_fn, batches, steps_per_epoch, mesh=mesh,
                        evaluate=..., evaluate_every=...)

`batches(epoch, start)` yields the step inputs of one epoch from its batch `start` on (host arrays, leading axis the
global batch). It must be a pure function of (epoch, start) (pipeline.batches is: seeded per epoch), so a run
restored at step s resumes at `data_position(s)` and sees exactly the batches an uninterrupted run would.

Evaluation records (`evaluate(params, step) -> dict`) are appended to `<workdir>/eval.jsonl`; a resumed run first
drops the records of steps after its checkpoint (it redoes them), so the file always matches the restored state.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable, Optional, TextIO

import jax
from jax.sharding import Mesh

from mgvae_jax.data import files
from mgvae_jax.training import checkpoint
from mgvae_jax.training import progress as progress_lib
from mgvae_jax.training import rundir
from mgvae_jax.training import sharding
from mgvae_jax.training import state as state_lib
from mgvae_jax.training.config import TrainConfig

EVAL_LOG = "eval.jsonl"


@dataclasses.dataclass
class RunResult:
  state: Any  # the TrainState after the last step (replicated over the mesh when one is given)
  records: list[dict]  # every evaluation record of the run, restored ones included, in step order
  summary: dict  # steps, resumed_from, seconds, examples_per_second, nonfinite_steps_total, devices, processes


def read_records(path: str, upto: int) -> list[dict]:
  """The JSON-lines records of `path` with step <= upto ([] if there is no file)."""
  if not os.path.exists(path):
    return []
  lines = files.read_text(path, "evaluation records (JSON lines)").splitlines()
  return [r for r in (json.loads(line) for line in lines if line.strip()) if r["step"] <= upto]


def run(config: TrainConfig, workdir: str, state: state_lib.TrainState, step_fn: state_lib.StepFn,
        batches: Callable[[int, int], Iterable[Any]], steps_per_epoch: int, *, mesh: Optional[Mesh] = None,
        shard_inputs: bool = True, evaluate: Optional[Callable[[Any, int], dict]] = None, evaluate_every: int = 0,
        evaluate_first: bool = False, evaluate_last: bool = False, stream: Optional[TextIO] = None,
        describe: str = "", examples_per_step: Optional[int] = None) -> RunResult:
  """Train `state` to `config.total_steps(steps_per_epoch)` steps in `workdir`, resuming from its checkpoints.

  Args:
    config: the run's TrainConfig (checkpoint / log intervals, fault injection, non-finite stop).
    workdir: checkpoints go to `<workdir>/checkpoints`, progress records to metrics.jsonl, evaluations to eval.jsonl.
    state: a freshly initialised TrainState (fixes shapes and dtypes; a checkpoint, if any, replaces its values).
    step_fn: `step_fn(state, inputs) -> (state, metrics)` (make_train_step).
    batches: `batches(epoch, start)` -> the step inputs of `epoch` from batch `start` on.
    steps_per_epoch: batches per epoch.
    mesh: a data mesh: the state is replicated over it, inputs split on their leading axis (`shard_inputs`) or
      replicated.
    evaluate: `evaluate(params, step) -> record` (params: a host copy), on process 0, every `evaluate_every` steps,
      at step 0 of a fresh run (`evaluate_first`) and after the last step (`evaluate_last`); always before the
      checkpoint of the same step, so a resumed run never skips one.
    describe: what the examples are, for the first log line ("10,000 molecules, batch 32").
    examples_per_step: for the summary's examples_per_second (default config.batch_size).
  """
  total = config.total_steps(steps_per_epoch)
  out = stream or sys.stdout
  if jax.process_index() != 0:  # one progress log, metrics.jsonl and eval.jsonl per run, from process 0
    out = io.StringIO()
  if mesh is not None:
    state = sharding.replicate(sharding.local_copy(state), mesh)
  manager = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
                                         save_interval_steps=config.checkpoint_every)
  state, restored = checkpoint.restore_or_init(manager, state)
  start = int(sharding.local_copy(state.step))
  eval_path = os.path.join(workdir, EVAL_LOG)
  records = read_records(eval_path, start) if jax.process_index() == 0 else []
  if jax.process_index() == 0 and os.path.exists(eval_path):
    rundir.write_json(eval_path, records, lines=True)
  devices = 1 if mesh is None else int(mesh.devices.size)
  print(f"{'resumed from step ' + str(start) if restored else 'initialised'}; training to step {total} on "
        f"{devices} device(s){', ' + describe if describe else ''}", file=out, flush=True)
  progress = progress_lib.Progress(total, config.log_every,
                                   os.path.join(workdir, "metrics.jsonl") if jax.process_index() == 0 else None, out)
  eval_seconds = 0.0

  def run_evaluation(step: int) -> None:
    nonlocal eval_seconds
    if evaluate is None or jax.process_index() != 0:
      return
    t = time.perf_counter()
    record = progress_lib.to_json({"step": step, **evaluate(sharding.local_copy(state.params), step)})
    with open(eval_path, "a") as f:
      f.write(json.dumps(record, allow_nan=False) + "\n")
    records.append(record)
    eval_seconds += time.perf_counter() - t

  def place(inputs):
    if mesh is None:
      return inputs
    return sharding.shard_batch(inputs, mesh) if shard_inputs else sharding.replicate(inputs, mesh)

  if evaluate_first and start == 0:
    run_evaluation(0)
  t0 = time.perf_counter()
  step = start
  try:
    while step < total:
      epoch, index = checkpoint.data_position(step, steps_per_epoch)
      for inputs in batches(epoch, index):
        if step >= total:
          break
        state, metrics = step_fn(state, place(inputs))
        step += 1
        progress.update(step, metrics)
        if (evaluate_every and step % evaluate_every == 0) or (evaluate_last and step == total):
          run_evaluation(step)
        if step % config.checkpoint_every == 0:
          manager.save(state)
        if config.kill_at_step and step == config.kill_at_step:
          os.kill(os.getpid(), signal.SIGKILL)  # fault injection: no cleanup, a save may be in flight
        state_lib.check_nonfinite(state, config.max_nonfinite_in_a_row)
    manager.save(state, force=True)
  finally:
    manager.wait()  # a stop on non-finite losses still leaves every started save committed
    manager.close()
  seconds = time.perf_counter() - t0 - eval_seconds
  per_step = examples_per_step or config.batch_size
  summary = {"steps": total, "resumed_from": start if restored else None, "train_seconds_this_run": seconds,
             "evaluate_seconds_this_run": eval_seconds,
             "examples_per_second": (step - start) * per_step / seconds if step > start and seconds > 0 else None,
             "seconds_per_step": seconds / (step - start) if step > start else None,
             "nonfinite_steps_total": int(sharding.local_copy(state.nonfinite_total)), "devices": devices,
             "processes": jax.process_count()}
  return RunResult(state=state, records=records, summary=summary)
