"""Train state and jitted train / eval steps for MGVAE, with non-finite steps skipped rather than applied.

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

from mgvae_jax import graphs
from mgvae_jax import vae
from mgvae_jax.training import sharding

Array = jnp.ndarray
StepFn = Callable[["TrainState", graphs.GraphBatch, Array], tuple["TrainState", dict[str, Array]]]


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


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, sample_batch: graphs.GraphBatch,
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


def _masked_metrics(out: vae.MGVAEOutput, graph_mask: Array) -> dict[str, Array]:
  """Means over real graphs: [] for per-graph terms, [levels] for per-level ones."""
  gm = graph_mask.astype(jnp.float32)  # [B]
  count = jnp.maximum(gm.sum(), 1.0)

  def mean(x):  # [B] or [B, levels]; where, not *, so a NaN in a padding graph cannot leak in
    m = gm.reshape(gm.shape + (1,) * (x.ndim - 1))
    return jnp.where(m > 0, x, 0.0).sum(0) / count

  return {"loss": mean(out.loss), "edge": mean(out.edge), "edge_type": mean(out.edge_type), "node": mean(out.node),
          "reconstruction": mean(out.reconstruction), "kl": mean(out.kl), "balanced_cut": mean(out.balanced_cut)}


def _tree_all_finite(tree) -> Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def make_train_step(model: vae.MGVAE, optimizer: optax.GradientTransformation, *, edge_pos_weight: float,
                    temperature_fn: Optional[Callable[[Array], Array]] = None, mesh: Optional[Mesh] = None) -> StepFn:
  """A jitted `step_fn(state, batch, graph_mask [B]) -> (state, metrics)`.

  Args:
    model: the MGVAE.
    optimizer: an optax transformation (the one `create_train_state` initialised opt_state with).
    edge_pos_weight: positive-class weight of the edge BCE (vae.edge_pos_weight of the training data).
    temperature_fn: step [] int32 -> Gumbel-softmax temperature (jnp-traceable); default a constant 1.
    mesh: a data mesh (training/sharding.py): the step then takes the batch sharded over its "data" axis and keeps
      the state replicated; XLA all-reduces the gradients. None: whatever placement the inputs have.

  Returns:
    step_fn. metrics: loss/edge/edge_type/node [], reconstruction/kl/balanced_cut [levels] (means over real graphs),
    finite [] bool, step (after the update), nonfinite_in_a_row, nonfinite_total.
  """

  def loss_fn(params, batch, graph_mask, rngs, temperature):
    out = model.apply({"params": params}, batch, train=True, edge_pos_weight=edge_pos_weight,
                      temperature=temperature, rngs=rngs)
    count = jnp.maximum(graph_mask.sum(), 1).astype(jnp.float32)
    loss = jnp.where(graph_mask, out.loss, 0.0).sum() / count
    return loss, _masked_metrics(out, graph_mask)

  if mesh is None:
    jit = jax.jit
  else:
    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    jit = functools.partial(jax.jit, in_shardings=(rep, data, data), out_shardings=(rep, rep))

  @jit
  def step_fn(state: TrainState, batch: graphs.GraphBatch, graph_mask: Array):
    key = jax.random.fold_in(state.key, state.step)  # depends only on checkpointed state: resume is exact
    k_gumbel, k_latent = jax.random.split(key)
    temperature = 1.0 if temperature_fn is None else temperature_fn(state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, graph_mask, {"gumbel": k_gumbel, "latent": k_latent}, temperature)
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


def make_eval_step(model: vae.MGVAE, *, edge_pos_weight: float
                   ) -> Callable[[Any, graphs.GraphBatch, Array], dict[str, Array]]:
  """A jitted `eval_fn(params, batch, graph_mask [B]) -> metrics` with train=False (posterior means, no sampling)."""

  @jax.jit
  def eval_fn(params, batch: graphs.GraphBatch, graph_mask: Array):
    out = model.apply({"params": params}, batch, train=False, edge_pos_weight=edge_pos_weight)
    metrics = _masked_metrics(out, graph_mask)
    metrics["finite"] = jnp.isfinite(metrics["loss"])
    metrics["num_graphs"] = graph_mask.sum().astype(jnp.int32)  # to weight means across batches
    return metrics

  return eval_fn


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
