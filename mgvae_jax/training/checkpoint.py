"""Orbax checkpoints of the whole TrainState (params, opt_state, step, key, non-finite counters) under a workdir.

Layout: `<workdir>/<step>/state/...`, one directory per saved step, the last `max_to_keep` kept. Saves are atomic:
orbax writes into `<step>.orbax-checkpoint-tmp-<timestamp>` and renames it to `<step>` only once every file is
written, and it lists only finalised step directories, so a run killed mid-save leaves the previous checkpoint as the
latest. Saves are asynchronous by default (`wait` blocks until the last one is committed); that is safe because JAX
arrays are immutable and the train step donates no buffers.

The state is saved as `flax.serialization.to_state_dict(state)` (nested dicts of arrays, optax's namedtuples turned
into dicts) and restored into the structure of a freshly initialised state, so dtypes and shapes come from the code,
not the files. The PRNG key is a raw uint32 array (TrainState.key), which serialises like any other array.
"""

from __future__ import annotations

import os
import time
from typing import Optional, TypeVar

from absl import logging
import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

State = TypeVar("State")

_ITEM = "state"


class CheckpointManager:
  """A thin wrapper over `ocp.CheckpointManager` for one TrainState item.

  Args:
    workdir: directory of the step directories (created if missing).
    max_to_keep: keep the last k checkpoints (None keeps all).
    save_interval_steps: `save` writes only when step % interval == 0, unless forced.
    async_save: save in a background thread (`wait` / `close` block on it).
  """

  def __init__(self, workdir: str, max_to_keep: Optional[int] = 3, save_interval_steps: int = 1,
               async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"CheckpointManager: max_to_keep must be >= 1 or None, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"CheckpointManager: save_interval_steps must be >= 1, got {save_interval_steps}")
    self.workdir = os.path.abspath(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.workdir, options=options, item_names=(_ITEM,))

  def save(self, state, force: bool = False) -> bool:
    """Save `state` at its own `state.step`; True if a save was started (False: off-interval or already saved)."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False  # e.g. a forced final save right after an interval save of the same step
    item = flax.serialization.to_state_dict(state)
    return self._manager.save(step, args=ocp.args.Composite(**{_ITEM: ocp.args.StandardSave(item)}), force=force)

  def restore(self, step: int, target: State) -> State:
    """The checkpoint of `step` restored into the structure (and dtypes, shapes) of `target`."""
    template = flax.serialization.to_state_dict(target)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{_ITEM: ocp.args.StandardRestore(abstract)}))
    return flax.serialization.from_state_dict(target, restored[_ITEM])

  def set_aside(self, step: int) -> str:
    """Rename the directory of `step` to `<step>.unrestorable-<time>` (orbax lists it no more); returns the path."""
    self.wait()
    src = os.path.join(self.workdir, str(step))
    dst = f"{src}.unrestorable-{int(time.time())}"
    os.rename(src, dst)
    self._manager.reload()
    return dst

  def saved_tree(self, step: int) -> Optional[dict]:
    """{key path: shape} of the arrays the checkpoint of `step` says it holds (its metadata); None if unreadable."""
    try:
      with ocp.StandardCheckpointer() as reader:
        meta = reader.metadata(os.path.join(self.workdir, str(step), _ITEM)).item_metadata
      if meta is None:
        return None
      tree = getattr(meta, "tree", meta)
      return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    except Exception:  # pylint: disable=broad-except
      return None

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def wait(self) -> None:
    """Block until every pending async save is committed (renamed into place)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def restore_or_init(manager: CheckpointManager, init_state: State) -> tuple[State, bool]:
  """(the latest checkpoint restored into init_state's structure, True), or (init_state, False) if there is none.

  A step directory that does not restore is told apart by what it says it holds (its orbax metadata):
  - damaged (files missing, truncated or corrupt; metadata unreadable, or metadata that fits this state while the
    data do not restore): logged as damaged, renamed to `<step>.unrestorable-<time>` (kept for inspection), and the
    step before it tried. Renaming, not skipping: orbax refuses to save steps below its latest one, so a broken
    latest directory would silently stop all later saves.
  - intact but of another shape (a checkpoint written by a different model config): RuntimeError naming what
    differs. Setting good checkpoints aside and silently starting over would lose the run.
  """
  for step in reversed(manager.all_steps()):
    try:
      return manager.restore(step, init_state), True
    except Exception as exc:  # pylint: disable=broad-except
      mismatch = _mismatch(manager.saved_tree(step), init_state)
      path = os.path.join(manager.workdir, str(step))
      if mismatch:
        raise RuntimeError(
            f"checkpoint of step {step} in {manager.workdir} is intact but does not fit this run's state ("
            f"{mismatch}): it was written with another config. Use another workdir, or move {path} aside to start "
            f"over.") from exc
      aside = manager.set_aside(step)
      logging.warning("checkpoint of step %d in %s is damaged (%s: %s); set it aside as %s and trying the one "
                      "before", step, manager.workdir, type(exc).__name__, str(exc)[:300], aside)
      print(f"WARNING: checkpoint of step {step} in {manager.workdir} is damaged ({type(exc).__name__}); set "
            f"aside as {aside}", flush=True)
  return init_state, False


def _mismatch(saved: Optional[dict], target) -> str:
  """Why an intact checkpoint tree (path -> shape, from its metadata) cannot hold `target`; "" if it can, or if the
  metadata could not be read (None: then the checkpoint is damaged, not foreign)."""
  if saved is None:
    return ""
  want = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in
          jax.tree_util.tree_leaves_with_path(flax.serialization.to_state_dict(target))}
  missing, extra = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
  shapes = [f"{k}: {saved[k]} saved, {want[k]} here" for k in sorted(set(want) & set(saved)) if saved[k] != want[k]]
  parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {extra[:3]}"] if extra else []) + shapes[:3]
  return "; ".join(parts)


def data_position(step: int, steps_per_epoch: int) -> tuple[int, int]:
  """(epoch, batch index within it) of the batch that step number `step` (0-based, = state.step) consumes.

  With pipeline.batches(..., seed, epoch) a pure function of (seed, epoch), a restored run resumes by skipping the
  first `batch_index` batches of `epoch`.
  """
  if steps_per_epoch < 1:
    raise ValueError(f"data_position: steps_per_epoch must be >= 1, got {steps_per_epoch}")
  if step < 0:
    raise ValueError(f"data_position: step must be >= 0, got {step}")
  return step // steps_per_epoch, step % steps_per_epoch
