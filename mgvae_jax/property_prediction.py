"""Unsupervised property prediction (paper section 5.5): invariant molecule vectors from MGVAE, MLP heads per target.

A trained MGVAE's finest-level posterior means [B, N, d] are averaged over the real atoms of each molecule (slots of
type "no atom" and padding slots excluded) into one S_n-invariant vector [B, d]. An MLP per target (two hidden layers
of 512 with sigmoid and a linear output, as the paper) regresses each standardised target on it; the T heads are one
vmapped module with a leading target axis on every parameter, trained together on the sum of their per-target losses,
so each head's gradient (and Adam's per-parameter update) sees only its own target. Model selection is per target:
each head keeps the parameters of the epoch with its best validation MAE.

Targets are standardised z = (x - mean) / std; `destandardise` maps predictions back to physical units.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgvae_jax import graphs
from mgvae_jax import vae

Array = jnp.ndarray

ACTIVATIONS = {"sigmoid": nn.sigmoid, "relu": nn.relu, "tanh": jnp.tanh}
LOSSES = ("mse", "l1")


# --- Invariant molecule representations. ---------------------------------------------------------------------------


def masked_mean(x: Array, mask: Array) -> Array:
  """Mean of x [B, N, d] over the slots where mask [B, N] is True; 0 for a graph with none.  # [B, d]"""
  m = mask.astype(x.dtype)[..., None]  # [B, N, 1]
  return jnp.where(m > 0, x, 0.0).sum(1) / jnp.maximum(m.sum(1), 1.0)  # where: NaN in masked slots cannot leak


def molecule_representation(model: vae.MGVAE, params, batch: graphs.GraphBatch, no_atom: int) -> Array:
  """The finest level's posterior means averaged over real atoms (deterministic, train=False).  # [B, d]

  Invariant to any permutation of a molecule's N slots because the encoder is equivariant and the mean is masked.
  """
  finest = model.apply({"params": params}, batch, method=vae.MGVAE.encode)[0]  # [B, N, d]
  return masked_mean(finest, batch.real_node_mask(no_atom))


def make_encoder(model: vae.MGVAE, no_atom: int) -> Callable:
  """A jitted `encode(params, batch) -> [B, d]` of molecule_representation."""
  return jax.jit(lambda params, batch: molecule_representation(model, params, batch, no_atom))


def encode_all(encode: Callable, params, data: graphs.GraphBatch, batch_size: int) -> np.ndarray:
  """Representations of every graph of a stacked host batch, in fixed-size chunks (one compilation).  # [M, d]

  The last chunk is filled with copies of its first graph (outputs dropped) rather than empty graphs, so no chunk
  holds a graph the encoder never saw in training.
  """
  m = int(data.nodes.shape[0])
  if m == 0:
    raise ValueError("encode_all: no graphs to encode")
  if batch_size < 1:
    raise ValueError(f"encode_all: batch_size must be >= 1, got {batch_size}")
  batch_size = min(batch_size, m)
  out = []
  for start in range(0, m, batch_size):
    ids = np.arange(start, start + batch_size)
    ids = np.where(ids < m, ids, start)
    chunk = graphs.GraphBatch(nodes=data.nodes[ids], edges=data.edges[ids], mask=data.mask[ids])
    out.append(np.asarray(jax.device_get(encode(params, chunk)))[:m - start])
  reps = np.concatenate(out)  # [M, d]
  if not np.all(np.isfinite(reps)):
    bad = np.flatnonzero(~np.isfinite(reps).all(1))
    raise FloatingPointError(f"encode_all: non-finite representations for {bad.size} graphs (e.g. {bad[:8].tolist()})")
  return reps


# --- Standardisation. ----------------------------------------------------------------------------------------------


def destandardise(z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """x = z * std + mean per target (last axis).  # [..., T]"""
  z, mean, std = np.asarray(z), np.asarray(mean), np.asarray(std)
  if mean.shape != (z.shape[-1],) or std.shape != mean.shape:
    raise ValueError(f"destandardise: values [..., {z.shape[-1]}] need mean and std of shape [{z.shape[-1]}], got "
                     f"{mean.shape} and {std.shape}")
  return z * std + mean


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """z = (x - mean) / std per target (last axis); std must be positive.  # [..., T]"""
  x, mean, std = np.asarray(x), np.asarray(mean), np.asarray(std)
  if mean.shape != (x.shape[-1],) or std.shape != mean.shape:
    raise ValueError(f"standardise: values [..., {x.shape[-1]}] need mean and std of shape [{x.shape[-1]}], got "
                     f"{mean.shape} and {std.shape}")
  if not np.all(std > 0):
    raise ValueError(f"standardise: std must be positive, got {std}")
  return (x - mean) / std


def feature_scaler(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and std of training representations [M, d]; a constant feature gets std 1 (left centred)."""
  train = np.asarray(train, np.float64)
  mean, std = train.mean(0), train.std(0)
  return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


# --- Per-target MLP heads. -----------------------------------------------------------------------------------------


class PropertyMLP(nn.Module):
  """One target's head: [B, D] -> hidden layers with `activation` -> a linear output.  # [B]"""
  hidden: tuple[int, ...] = (512, 512)
  activation: str = "sigmoid"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    act = ACTIVATIONS[self.activation]
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


class PerTargetMLP(nn.Module):
  """`num_targets` independent PropertyMLPs on the same input (parameters carry a leading [T] axis).  # [B, T]"""
  num_targets: int
  hidden: tuple[int, ...] = (512, 512)
  activation: str = "sigmoid"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    heads = nn.vmap(PropertyMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                    out_axes=1, axis_size=self.num_targets)
    return heads(self.hidden, self.activation, name="heads")(x)


@dataclasses.dataclass
class HeadFit:
  """What fit_heads returns: the selected parameters and how they were selected."""
  params: dict  # per target, the parameters of its best validation epoch (leading [T] axis)
  best_epoch: np.ndarray  # [T] 1-based epoch of each head's selected parameters
  val_mae: np.ndarray  # [T] validation MAE of the selected parameters (standardised units)
  history: np.ndarray  # [epochs, T] validation MAE after each epoch
  train_loss: np.ndarray  # [epochs, T] mean training loss of each epoch


def predict(model: PerTargetMLP, params, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
  """Predictions [M, T] in chunks (hidden activations are [chunk, T, 512])."""
  return _predict(jax.jit(lambda p, xb: model.apply({"params": p}, xb)), params, x, batch_size)


def _predict(apply: Callable, params, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
  if x.shape[0] == 0:
    raise ValueError("predict: no representations")
  return np.concatenate([np.asarray(apply(params, jnp.asarray(x[i:i + batch_size])))
                         for i in range(0, x.shape[0], batch_size)])


def _check_xy(name: str, x: np.ndarray, y: np.ndarray, num_targets: Optional[int] = None) -> None:
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"fit_heads: {name} needs representations [M, D] and targets [M, T], got {x.shape} and "
                     f"{y.shape}")
  if x.shape[0] == 0:
    raise ValueError(f"fit_heads: {name} is empty")
  if num_targets is not None and y.shape[1] != num_targets:
    raise ValueError(f"fit_heads: {name} has {y.shape[1]} targets, the training set {num_targets}")
  for what, a in (("representations", x), ("targets", y)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"fit_heads: {name} {what} hold non-finite values")


def _sum_and_terms(per: Array) -> tuple[Array, Array]:
  return per.sum(), per


def fit_heads(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
              hidden: Sequence[int] = (512, 512), activation: str = "sigmoid", loss: str = "mse",
              learning_rate: float = 1e-3, batch_size: int = 128, epochs: int = 100, seed: int = 0,
              log: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None) -> tuple[PerTargetMLP, HeadFit]:
  """Train one MLP per target on standardised targets; keep each head's best validation epoch.

  Args:
    x_train, y_train: representations [M, D] (already scaled) and standardised targets [M, T].
    x_val, y_val: the validation set that selects each head's epoch (MAE).
    hidden, activation: the heads' hidden widths and nonlinearity (paper: (512, 512), sigmoid).
    loss: "mse" or "l1" on standardised targets, per target (mean over the batch).
    learning_rate, batch_size, epochs, seed: Adam; batches are a fresh seeded shuffle per epoch, the last partial
      batch dropped (batch_size is capped at M).
    log: called after every epoch with (epoch, train loss [T], validation MAE [T]).

  Raises:
    ValueError on bad shapes or settings; FloatingPointError when an epoch's training loss is not finite.
  """
  x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float32)
  x_val, y_val = np.asarray(x_val, np.float32), np.asarray(y_val, np.float32)
  _check_xy("training set", x_train, y_train)
  _check_xy("validation set", x_val, y_val, y_train.shape[1])
  if x_val.shape[1] != x_train.shape[1]:
    raise ValueError(f"fit_heads: validation representations have {x_val.shape[1]} features, training ones "
                     f"{x_train.shape[1]}")
  if activation not in ACTIVATIONS:
    raise ValueError(f"fit_heads: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
  if loss not in LOSSES:
    raise ValueError(f"fit_heads: loss must be one of {LOSSES}, got {loss!r}")
  if epochs < 1 or batch_size < 1 or not learning_rate > 0:
    raise ValueError(f"fit_heads: need epochs >= 1, batch_size >= 1, learning_rate > 0; got {epochs}, {batch_size}, "
                     f"{learning_rate}")
  m, num_targets = y_train.shape
  batch_size = min(batch_size, m)
  num_batches = m // batch_size
  model = PerTargetMLP(num_targets, tuple(hidden), activation)
  key_init, key_data = jax.random.split(jax.random.PRNGKey(seed))
  params = jax.jit(model.init)(key_init, jnp.asarray(x_train[:1]))["params"]
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)
  apply = jax.jit(lambda p, xb: model.apply({"params": p}, xb))  # one jit for every epoch's validation

  def per_target_loss(p, xb, yb):  # [T]
    err = model.apply({"params": p}, xb) - yb  # [b, T]
    return (err ** 2 if loss == "mse" else jnp.abs(err)).mean(0)

  @jax.jit
  def run_epoch(params, opt_state, key):
    ids = jax.random.permutation(key, m)[:num_batches * batch_size].reshape(num_batches, batch_size)

    def step(carry, idx):
      p, s = carry
      # The sum over targets: each head's parameters get only their own target's gradient.
      (_, per), grads = jax.value_and_grad(lambda q: _sum_and_terms(per_target_loss(q, x_dev[idx], y_dev[idx])),
                                           has_aux=True)(p)
      updates, s = optimizer.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), per

    (params, opt_state), per = jax.lax.scan(step, (params, opt_state), ids)
    return params, opt_state, per.mean(0)  # [T]

  select = jax.jit(lambda better, new, old: jax.tree_util.tree_map(
      lambda n, o: jnp.where(better.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old))
  best_params, best_mae = params, np.full(num_targets, np.inf)
  best_epoch = np.zeros(num_targets, np.int64)
  history, train_loss = [], []
  for epoch in range(1, epochs + 1):
    params, opt_state, per = run_epoch(params, opt_state, jax.random.fold_in(key_data, epoch))
    per = np.asarray(per)
    if not np.all(np.isfinite(per)):
      bad = np.flatnonzero(~np.isfinite(per)).tolist()
      raise FloatingPointError(f"fit_heads: non-finite training loss at epoch {epoch} for target heads {bad}; lower "
                               f"the learning rate or check the representations")
    mae = np.abs(_predict(apply, params, x_val) - y_val).mean(0)  # [T]
    better = mae < best_mae
    best_params = select(jnp.asarray(better), params, best_params)
    best_mae = np.where(better, mae, best_mae)
    best_epoch = np.where(better, epoch, best_epoch)
    history.append(mae)
    train_loss.append(per)
    if log is not None:
      log(epoch, per, mae)
  fit = HeadFit(params=best_params, best_epoch=best_epoch, val_mae=best_mae, history=np.stack(history),
                train_loss=np.stack(train_loss))
  return model, fit
