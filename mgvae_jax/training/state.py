"""Train state and the jitted train step of any model and loss, with non-finite steps skipped rather than applied.

Per-step randomness is `fold_in(state.key, state.step)`: a pure function of the checkpointed state, so a run resumed
from a checkpoint draws the same numbers as one that never stopped. A step whose loss or gradients are not finite
leaves params and opt_state bitwise unchanged, counts itself in `nonfinite_in_a_row` / `nonfinite_total`, and still
advances `step` so the data order stays aligned with the step counter (see checkpoint.data_position). The host decides
when to give up (`check_nonfinite`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from mgvae_jax.training import sharding

Array = jnp.ndarray
StepFn = Callable[["TrainState", Any], tuple["TrainState", dict[str, Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs; all leaves are arrays so the whole state checkpoints as one pytree."""
  step: Array  # [] int32, optimizer steps taken (skipped non-finite steps included)
  params: Any
  opt_state: Any
  key: Array  # [2] uint32, a raw (legacy) PRNG key: serialises as a plain array
  nonfinite_in_a_row: Array  # [] int32, reset by every finite step
  nonfinite_total: Array  # [] int32


class NonFiniteLossError(RuntimeError):
  """Too many non-finite steps in a row; training should stop (the skipped steps changed no parameters)."""


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, sample_batch: Any,
                       seed: int, init_kwargs: Optional[dict] = None) -> TrainState:
  """Initialise params (rng streams params / gumbel / latent) and the optimizer; `sample_batch` fixes the shapes.

  model: any linen module called as model(batch, train=True, **init_kwargs) (init_kwargs: arrays, e.g. given_ids).
  """
  root = jax.random.PRNGKey(seed)
  k_params, k_gumbel, k_latent, k_train = jax.random.split(root, 4)

  rngs = {"params": k_params, "gumbel": k_gumbel, "latent": k_latent}
  variables = jax.jit(lambda batch, kw: model.init(rngs, batch, train=True, **kw))(sample_batch, init_kwargs or {})
  extra = set(variables) - {"params"}
  if extra:  # the step only threads params through; other collections would be silently frozen
    raise ValueError(f"create_train_state: the model has variable collections besides params: {sorted(extra)}")
  params = variables["params"]
  zero = jnp.zeros((), jnp.int32)
  state = TrainState(step=zero, params=params, opt_state=jax.jit(optimizer.init)(params), key=k_train,
                     nonfinite_in_a_row=zero, nonfinite_total=zero)
  # Commit to a device as a restored checkpoint is: jit keys its cache on committedness, so an uncommitted fresh
  # state and a committed restored one would each compile the train step.
  return jax.device_put(state, jax.local_devices()[0])


def _tree_all_finite(tree) -> Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


LossFn = Callable[[Any, Any, Array, Array], tuple[Array, dict[str, Array]]]


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, mesh: Optional[Mesh] = None,
                    shard_inputs: bool = True) -> StepFn:
  """A jitted `step_fn(state, inputs) -> (state, metrics)`: one guarded optimizer step on `loss_fn`.

  Args:
    loss_fn: `(params, inputs, key, step) -> (loss [], metrics)`; key is this step's PRNG key, step the number of
      steps taken before it ([] int32: for schedules such as a Gumbel temperature).
    optimizer: the optax transformation `create_train_state` initialised opt_state with.
    mesh: a data mesh (sharding.data_mesh): state replicated over it; every leaf of `inputs` split on its leading axis
      over the "data" axis (`shard_inputs`) or replicated (a single full graph); XLA all-reduces the gradients.
      None: whatever placement the inputs have.

  Returns:
    step_fn; metrics: loss_fn's, plus finite [] bool, step (after the update), nonfinite_in_a_row, nonfinite_total.
  """
  if mesh is None:
    jit = jax.jit
  else:
    rep = sharding.replicated(mesh)
    data = sharding.batch_sharded(mesh) if shard_inputs else rep
    jit = functools.partial(jax.jit, in_shardings=(rep, data), out_shardings=(rep, rep))

  @jit
  def step_fn(state: TrainState, inputs):
    key = jax.random.fold_in(state.key, state.step)  # depends only on checkpointed state: resume is exact
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, inputs, key, state.step)
    new_state, guard = guarded_update(state, optimizer, loss, grads)
    return new_state, dict(metrics, **guard)

  return step_fn


def guarded_update(state: TrainState, optimizer: optax.GradientTransformation, loss: Array, grads: Any
                   ) -> tuple[TrainState, dict[str, Array]]:
  """Apply one optimizer step unless the loss or a gradient is non-finite; count skipped steps (traceable).

  Returns the new state (step + 1 either way) and metrics finite / step / nonfinite_in_a_row / nonfinite_total.
  """
  updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & _tree_all_finite(grads)
  # Select whole trees: a skipped step returns the old leaves themselves, bitwise.
  keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
  in_a_row = jnp.where(finite, 0, state.nonfinite_in_a_row + 1).astype(jnp.int32)
  total = (state.nonfinite_total + (~finite).astype(jnp.int32)).astype(jnp.int32)
  new_state = state.replace(step=state.step + 1, params=keep(new_params, state.params),
                            opt_state=keep(new_opt, state.opt_state), nonfinite_in_a_row=in_a_row,
                            nonfinite_total=total)
  return new_state, dict(finite=finite, step=new_state.step, nonfinite_in_a_row=in_a_row, nonfinite_total=total)


def check_nonfinite(state: TrainState, max_in_a_row: int) -> None:
  """Host side: raise NonFiniteLossError once `max_in_a_row` consecutive steps were non-finite (<= 0 disables)."""
  in_a_row = int(np.asarray(state.nonfinite_in_a_row))
  if max_in_a_row <= 0 or in_a_row < max_in_a_row:
    return
  step = int(np.asarray(state.step))
  total = int(np.asarray(state.nonfinite_total))
  raise NonFiniteLossError(
      f"{in_a_row} non-finite training steps in a row (steps {step - in_a_row + 1}..{step}, limit {max_in_a_row}; "
      f"{total} in total). Those updates were skipped, so params and the last good checkpoint are intact; lower the "
      f"learning rate or inspect the data before resuming.")
