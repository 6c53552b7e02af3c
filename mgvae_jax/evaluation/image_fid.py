"""FID-LeNet: the Frechet distance of image sets in the feature space of a small MNIST classifier trained here.

Section 5.4 reports Inception FID (Heusel et al. 2017). Inception weights cannot be fetched on the machines this
project runs on, so the features are instead the penultimate (84-unit) layer of a LeNet-5 trained by the project
itself on the MNIST training set. Its numbers are on their own scale: call them FID-LeNet, never FID, and compare
them only with other FID-LeNet numbers from the same saved weights.

The classifier sees 32 x 32 inputs. Coarser images (16 x 16, 8 x 8) are upsampled by pixel repetition (the quadtree's
inverse), and the classifier is trained on all three resolutions (each training image at a random one), so its
features stay meaningful for the blocky coarse images; its test accuracy per resolution is recorded with the weights.

  params, info = train_lenet(images32, labels, key)           # [n, 32, 32] in [0, 1]
  save_lenet(path, params, info); params, info = load_lenet(path)
  f = lenet_features(params, images)                           # [n, 84], any of 32 / 16 / 8 pixels square
  fid = frechet_distance(*feature_statistics(f_gen), *feature_statistics(f_ref))
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mgvae_jax import image_graphs

Array = jnp.ndarray
INPUT_SIZE = 32
FEATURE_DIM = 84
RESOLUTIONS = (32, 16, 8)


class LeNet(nn.Module):
  """LeNet-5 (LeCun et al. 1998) with ReLU: conv 6@5x5, pool, conv 16@5x5, pool, 120, 84, 10.

  Call: images [B, 32, 32] -> (logits [B, 10], features [B, 84]).
  """

  @nn.compact
  def __call__(self, images: Array) -> tuple[Array, Array]:
    x = images[..., None]
    x = nn.avg_pool(nn.relu(nn.Conv(6, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))  # [B, 14, 14, 6]
    x = nn.avg_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))  # [B, 5, 5, 16]
    x = nn.relu(nn.Dense(120)(x.reshape(x.shape[0], -1)))
    features = nn.relu(nn.Dense(FEATURE_DIM)(x))
    return nn.Dense(10)(features), features


def to_input(images: Array) -> Array:
  """[B, s, s] with s in RESOLUTIONS -> [B, 32, 32] (pixel repetition for s < 32)."""
  if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] not in RESOLUTIONS:
    raise ValueError(f"FID-LeNet takes square images of {RESOLUTIONS} pixels as [B, s, s], got {images.shape}")
  return image_graphs.upsample_nearest(images, INPUT_SIZE) if images.shape[1] != INPUT_SIZE else images


def at_resolution(images: Array, size: int) -> Array:
  """[B, 32, 32] -> the quadtree average at `size` pixels, shown at 32 x 32 (what the classifier sees)."""
  levels = int(np.log2(INPUT_SIZE // size)) + 1
  return image_graphs.upsample_nearest(image_graphs.image_pyramid(images, levels)[-1], INPUT_SIZE)


def _random_resolution(images: Array, key: jax.Array) -> Array:
  pyramid = image_graphs.image_pyramid(images, len(RESOLUTIONS))
  shown = jnp.stack([image_graphs.upsample_nearest(p, INPUT_SIZE) for p in pyramid])  # [R, B, 32, 32]
  pick = jax.random.randint(key, (images.shape[0],), 0, len(RESOLUTIONS))
  return shown[pick, jnp.arange(images.shape[0])]


def train_lenet(images: np.ndarray, labels: np.ndarray, key: jax.Array, epochs: int = 3, batch_size: int = 128,
                learning_rate: float = 1e-3, test: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[dict, dict]:
  """Train LeNet on [n, 32, 32] images in [0, 1] (each at a random resolution per step) -> (params, info).

  info: the training settings, seconds, and with `test` = (images, labels) the test accuracy at each resolution.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if images.ndim != 3 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE) or labels.shape != images.shape[:1]:
    raise ValueError(f"train_lenet: expected images [n, 32, 32] and labels [n], got {images.shape}, {labels.shape}")
  model = LeNet()
  k_init, k_data = jax.random.split(key)
  params = model.init(k_init, jnp.zeros((1, INPUT_SIZE, INPUT_SIZE)))["params"]
  opt = optax.adam(learning_rate)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, x, y, k):
    def loss_fn(p):
      logits, _ = model.apply({"params": p}, _random_resolution(x, k))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  t0 = time.perf_counter()
  n = images.shape[0]
  batch_size = min(batch_size, n)
  loss = jnp.nan
  for epoch in range(epochs):
    order = np.random.default_rng(epoch).permutation(n)
    for i in range(n // batch_size):
      idx = order[i * batch_size:(i + 1) * batch_size]
      key = jax.random.fold_in(k_data, epoch * n + i)
      params, opt_state, loss = step(params, opt_state, images[idx], labels[idx], key)
  info = {"architecture": "LeNet-5 (ReLU, average pooling), features: the 84-unit layer", "epochs": epochs,
          "batch_size": batch_size, "learning_rate": learning_rate, "train_images": n,
          "train_seconds": time.perf_counter() - t0, "final_batch_loss": float(loss)}
  if test is not None:
    info["test_accuracy"] = {str(s): accuracy(params, at_resolution(jnp.asarray(test[0]), s), test[1])
                             for s in RESOLUTIONS}
  return params, info


_forward = jax.jit(lambda params, x: LeNet().apply({"params": params}, to_input(x)))


def _apply(params, images: Array, batch_size: int = 1000):
  outs = [_forward(params, images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
  return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def accuracy(params, images: Array, labels: np.ndarray) -> float:
  logits, _ = _apply(params, jnp.asarray(images))
  return float((logits.argmax(-1) == np.asarray(labels)).mean())


def lenet_features(params, images) -> np.ndarray:
  """[n, s, s] images in [0, 1] (s in RESOLUTIONS) -> [n, 84] float64 features."""
  images = jnp.asarray(images, jnp.float32)
  return _apply(params, images)[1].astype(np.float64)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) of [n, D] features, n >= 2, in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"feature_statistics: need [n >= 2, D] features, got shape {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("feature_statistics: features are not all finite")
  return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}), the Frechet distance of two Gaussians.

  tr (C1 C2)^{1/2} is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
  C1^{1/2} C2 C1^{1/2} (same spectrum as C1 C2), which needs no complex matrix square root. Exactly 0 for equal
  inputs up to rounding; never negative.
  """
  r1 = _psd_sqrt(cov1)
  middle = r1 @ cov2 @ r1
  eig = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)
  value = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * np.sum(np.sqrt(eig)))
  return max(value, 0.0)


def fid_lenet(params, images, reference_stats: tuple[np.ndarray, np.ndarray]) -> float:
  """FID-LeNet of `images` [n, s, s] against reference (mean, covariance) of the same resolution."""
  return frechet_distance(*feature_statistics(lenet_features(params, images)), *reference_stats)


def save_lenet(path: str, params, info: dict) -> None:
  """Weights (msgpack) at `path` and `info` beside it (`path`.json), each written atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  for target, data in ((path, flax.serialization.to_bytes(params)),
                       (path + ".json", json.dumps(info, indent=2).encode())):
    with open(target + ".tmp", "wb") as f:
      f.write(data)
    os.replace(target + ".tmp", target)


def load_lenet(path: str) -> tuple[dict, dict]:
  """(params, info) saved by `save_lenet`; a missing, truncated or foreign file raises ValueError naming it."""
  template = LeNet().init(jax.random.PRNGKey(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE)))["params"]
  try:
    with open(path, "rb") as f:
      params = flax.serialization.from_bytes(template, f.read())
    info = json.load(open(path + ".json"))
  except (OSError, ValueError, KeyError, TypeError) as exc:
    raise ValueError(f"FID-LeNet weights {path} (and {path}.json) could not be read: {type(exc).__name__}: {exc}"
                     ) from exc
  shapes = jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, template)
  if not shapes:
    raise ValueError(f"FID-LeNet weights {path} do not have LeNet's shapes")
  return params, info


def reference_statistics(params, images32: np.ndarray, resolutions: Sequence[int] = RESOLUTIONS) -> dict:
  """{size: (mean, covariance)} of reference images [n, 32, 32] quadtree-averaged to each resolution."""
  pyramid = image_graphs.image_pyramid(jnp.asarray(images32, jnp.float32), len(RESOLUTIONS))
  by_size = {p.shape[-1]: p for p in pyramid}
  return {s: feature_statistics(lenet_features(params, by_size[s])) for s in resolutions}
