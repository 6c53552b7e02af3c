"""A prior fitted after training to the aggregate posterior of the finest level (ex-post density estimation).

The learnable prior of section 4.4 is one Gaussian per channel over the node slots. When the posterior carries the
information reconstruction needs, the training molecules' latents fill a region that Gaussian covers badly: prior
samples land in its holes and decode to molecules unlike the data. Fitting a Gaussian mixture with full covariances
to the training set's posterior means (Ghosh et al. 2020, "From variational to deterministic autoencoders"; Dai and
Wipf 2019, two-stage VAE) keeps every correlation between nodes and channels that the data have.

The latents are flattened in slot order, which for featurised molecules is RDKit's canonical atom order, so slot k
holds comparable atoms across molecules. Sampling draws a flattened [N * d] vector and reshapes it to [N, d]; the
decoder is equivariant, so the sampled graph does not depend on that order, only its distribution does.

Where a few Gaussians cannot follow the latents (on ZINC, where each latent carries its atom's bonds as pointers to
other positions, the mixture's samples break the pointers and decode to ring-free chains), a kernel density estimate
keeps every training molecule as a centre: a sample is one training molecule's posterior mean plus Gaussian noise
of `bandwidth` times the latents' per-coordinate standard deviation. The bandwidth trades likeness to the data
against novelty (README measures the trade-off); at 0 it returns the training molecules' reconstructions.
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mgvae_jax import graphs
from mgvae_jax import vae


def _save_npz(path: str, **arrays) -> None:
  """Written under a temporary name, then renamed: a reader never sees half a prior."""
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


@struct.dataclass
class GaussianMixture:
  """weights [K], means [K, D], cholesky [K, D, D] (lower factors of the covariances); D = N * d."""
  weights: np.ndarray
  means: np.ndarray
  cholesky: np.ndarray
  shape: tuple[int, int] = struct.field(pytree_node=False)  # (N, d) of one sample

  def sample(self, key: jax.Array, num: int) -> jnp.ndarray:
    """[num, N, d] latents (a pytree: jit takes the mixture as an argument)."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.choice(k_comp, self.weights.shape[0], (num,), p=jnp.asarray(self.weights))
    eps = jax.random.normal(k_noise, (num, self.means.shape[1]))
    z = jnp.asarray(self.means)[comp] + jnp.einsum("bij,bj->bi", jnp.asarray(self.cholesky)[comp], eps)
    return z.reshape((num,) + tuple(self.shape))

  def save(self, path: str) -> None:
    _save_npz(path, weights=self.weights, means=self.means, cholesky=self.cholesky, shape=np.asarray(self.shape))

  @classmethod
  def load(cls, path: str) -> "GaussianMixture":
    try:
      with np.load(path) as f:
        mixture = cls(f["weights"], f["means"], f["cholesky"], tuple(int(x) for x in f["shape"]))
    except (OSError, KeyError, ValueError, TypeError) as exc:
      raise ValueError(f"{path} is not a readable aggregate prior ({exc}); delete it to refit") from exc
    k, dim = mixture.means.shape
    if mixture.weights.shape != (k,) or mixture.cholesky.shape != (k, dim, dim) or np.prod(mixture.shape) != dim:
      raise ValueError(f"{path}: inconsistent aggregate prior shapes {mixture.weights.shape}, {mixture.means.shape}, "
                       f"{mixture.cholesky.shape}, {mixture.shape}")
    return mixture


@struct.dataclass
class KernelDensity:
  """centres [G, D] (posterior means, flattened), scale [D] (their per-coordinate std), bandwidth h; D = N * d."""
  centres: np.ndarray
  scale: np.ndarray
  bandwidth: float
  shape: tuple[int, int] = struct.field(pytree_node=False)  # (N, d) of one sample

  def sample(self, key: jax.Array, num: int) -> jnp.ndarray:
    """[num, N, d] latents: a uniformly drawn centre plus N(0, (h scale)^2) noise (a pytree: jit takes the centres
    as an argument instead of baking them into the program)."""
    k_centre, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_centre, (num,), 0, self.centres.shape[0])
    eps = jax.random.normal(k_noise, (num, self.centres.shape[1]))
    z = jnp.asarray(self.centres)[idx] + self.bandwidth * jnp.asarray(self.scale) * eps
    return z.reshape((num,) + tuple(self.shape))

  def save(self, path: str) -> None:
    _save_npz(path, centres=self.centres, scale=self.scale, bandwidth=np.asarray(self.bandwidth),
              shape=np.asarray(self.shape))

  @classmethod
  def load(cls, path: str) -> "KernelDensity":
    try:
      with np.load(path) as f:
        density = cls(f["centres"], f["scale"], float(f["bandwidth"]), tuple(int(x) for x in f["shape"]))
    except (OSError, KeyError, ValueError, TypeError) as exc:
      raise ValueError(f"{path} is not a readable kernel density prior ({exc}); delete it to refit") from exc
    if (density.centres.ndim != 2 or density.scale.shape != density.centres.shape[1:] or len(density.shape) != 2
        or np.prod(density.shape) != density.centres.shape[1]):
      raise ValueError(f"{path}: inconsistent kernel density shapes {density.centres.shape}, {density.scale.shape}, "
                       f"{density.shape}")
    _check_kernel(density.centres, density.bandwidth, path)
    if not np.isfinite(density.scale).all():
      raise ValueError(f"{path}: the kernel density's scale is not all finite")
    return density


def _check_kernel(centres: np.ndarray, bandwidth: float, what: str) -> None:
  if not np.isfinite(centres).all():
    raise ValueError(f"{what}: the latents are not all finite")
  if not (bandwidth >= 0 and np.isfinite(bandwidth)):
    raise ValueError(f"{what}: bandwidth must be a finite number >= 0, got {bandwidth}")


def fit_kernel(latents: np.ndarray, bandwidth: float) -> KernelDensity:
  """The kernel density estimate of latents [G, N, d] (flattened per graph) with bandwidth h >= 0."""
  latents = np.asarray(latents, np.float32)
  if latents.ndim != 3:
    raise ValueError(f"aggregate_prior.fit_kernel needs latents [G, N, d], got shape {latents.shape}")
  if latents.shape[0] < 1:
    raise ValueError("aggregate_prior.fit_kernel: no latents to centre kernels on")
  _check_kernel(latents, bandwidth, "aggregate_prior.fit_kernel")
  x = latents.reshape(latents.shape[0], -1)
  return KernelDensity(x, x.std(0).astype(np.float32), float(bandwidth), tuple(latents.shape[1:]))


def posterior_means(model: vae.MGVAE, params, data: graphs.GraphBatch, batch_size: int = 500) -> np.ndarray:
  """The finest level's posterior means of every graph in `data` (host arrays [G, ...]): [G, N, d]."""
  encode = jax.jit(lambda b: model.apply({"params": params}, b, method=vae.MGVAE.encode)[0])
  return graphs.map_in_chunks(encode, data, batch_size)


def fit(latents: np.ndarray, components: int = 10, seed: int = 0, reg: float = 1e-3,
        max_iter: int = 200) -> GaussianMixture:
  """A full-covariance Gaussian mixture (scikit-learn's EM) on latents [G, N, d], flattened per graph.

  `reg` is added to every covariance's diagonal (relative to the latents' overall variance), so that directions the
  training set does not span still get some spread and the factors exist.
  """
  from sklearn import mixture  # pylint: disable=g-import-not-at-top

  latents = np.asarray(latents, np.float64)
  if latents.ndim != 3:
    raise ValueError(f"aggregate_prior.fit needs latents [G, N, d], got shape {latents.shape}")
  g = latents.shape[0]
  if g < 2 * components:
    raise ValueError(f"aggregate_prior.fit: {g} graphs are too few for {components} components")
  if not np.isfinite(latents).all():
    raise ValueError("aggregate_prior.fit: the latents are not all finite")
  x = latents.reshape(g, -1)
  scale = float(x.var(0).mean()) or 1.0
  gmm = mixture.GaussianMixture(components, covariance_type="full", reg_covar=reg * scale, random_state=seed,
                                max_iter=max_iter)
  gmm.fit(x)
  chol = np.linalg.cholesky(gmm.covariances_)
  return GaussianMixture(gmm.weights_.astype(np.float32), gmm.means_.astype(np.float32), chol.astype(np.float32),
                         tuple(latents.shape[1:]))


def sample_and_decode(model: vae.MGVAE, params, prior, num: int, seed: int,
                      batch_size: int = 500, edge_pos_weight: float = 1.0, key_stream: Optional[int] = None
                      ) -> dict[str, np.ndarray]:
  """`num` graphs decoded from a fitted prior's samples (a GaussianMixture or KernelDensity: anything with
  `sample(key, num) -> [num, N, d]`): MGVAE.decode's finest-level probabilities as host arrays."""
  size = min(batch_size, num)

  @jax.jit
  def draw(p, prior, key):
    z = prior.sample(key, size)
    decode = lambda zc, _: model.apply({"params": p}, zc, 0, edge_pos_weight, method=vae.MGVAE.decode)
    return vae.decode_in_chunks(decode, z, None)

  prior = jax.device_put(prior)  # once, not with every chunk (the kernel's centres are G x N x d)
  key = jax.random.PRNGKey(seed)
  if key_stream is not None:
    key = jax.random.fold_in(key, key_stream)
  chunks = [jax.device_get(draw(params, prior, jax.random.fold_in(key, i))) for i in range(-(-num // size))]
  return {k: np.concatenate([c[k] for c in chunks])[:num] for k in chunks[0]}
