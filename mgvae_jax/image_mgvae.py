"""MGVAE for images on a fixed quadtree (paper section 5.4), and the plain VAE it is compared with.

Level l (0 = finest, 32 x 32) is the grid graph of `image_graphs.quadtree_graphs`. Per level:
  global encoder e^(l)   `encoder_layers` rounds of message passing on the whole grid graph (node-wise, so
                          equivariant to any relabelling of the graph's nodes), then a readout of the node states
                          into Z^(l) in R^{d_z}. The paper sums all node latents; that readout ("sum", or "mean")
                          cannot say where on the image a pattern is. On MNIST, with the mean the posterior
                          collapsed (KL 3 nats at 32 x 32 after 1,500 steps), and with the sum over 1,024 nodes the
                          KL started near 5e6 nats and was still 4e4 after 300 steps (README). The default
                          "regions" averages the node states over each cell of a 4 x 4 grid (the quadtree's
                          coarse cells) and concatenates the 16 cell vectors;
  global decoder d^(l)   the DCGAN generator: Z^(l) -> a 4 x 4 feature map -> stride-2 transposed convolutions up to
                          the level's size -> per-pixel Bernoulli logits of the level's image;
  pooler p^(l)            an S_4-invariant DeepSets network on each 2 x 2 block of level l's node states, giving the
                          node features of level l + 1.
Level l's image is the 2 x 2 average pooling of level l - 1's (`image_graphs.image_pyramid`), and the model is
trained to reconstruct every level: per image, sum over levels of the pixels' binary cross-entropy plus beta * KL of
the diagonal-Gaussian posterior of Z^(l) to the N(0, I) prior, from which section 5.4 samples each level separately.

The latents are diagonal Gaussians, not the full-covariance ones of the graph models: Z^(l) is one global d_z = 256
vector per level, where a Cholesky factor would need d_z (d_z + 1) / 2 = 32,896 outputs per level, and the paper's
prior for images is the plain N(0, I).

DCGAN's generator uses batch norm; here it has none (a pure `apply` with no mutable batch statistics, like every
other model in the package). `ConvVAE` is the baseline: a DCGAN-discriminator-shaped conv encoder and the same
generator, for the finest level only.
"""

from __future__ import annotations

import dataclasses
import functools
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import fixed_clustering
from mgvae_jax import image_graphs

Array = jnp.ndarray
_MIN_SIGMA = 1e-4
READOUTS = ("sum", "mean", "regions")


@dataclasses.dataclass(frozen=True)
class ImageMGVAEConfig:
  image_size: int = 32  # a power of two >= 8 (MNIST's 28 x 28 padded to 32 x 32)
  levels: int = 3  # 32 x 32, 16 x 16, 8 x 8
  channels: int = 32  # node state width of the message passing
  encoder_layers: int = 10  # message-passing rounds of each level's global encoder (section 5.4: ten)
  latent_dim: int = 256  # d_z
  generator_width: int = 64  # DCGAN's ngf: channels of the generator's last transposed convolution
  kl_weight: float = 1.0  # beta
  # How node states become Z^(l): "sum" (section 5.4), "mean", or "regions": the mean over each of regions x regions
  # blocks of the grid (the quadtree's coarse cells), concatenated, so Z^(l) can say where a stroke is.
  readout: str = "regions"
  regions: int = 4

  def __post_init__(self):
    if self.readout not in READOUTS:
      raise ValueError(f"ImageMGVAEConfig.readout must be one of {READOUTS}, got {self.readout!r}")
    for name in ("image_size", "levels", "channels", "encoder_layers", "latent_dim", "generator_width"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"ImageMGVAEConfig.{name} must be a positive int, got {v!r}")
    if self.image_size & (self.image_size - 1):
      raise ValueError(f"ImageMGVAEConfig.image_size must be a power of two, got {self.image_size}")
    if self.image_size >> (self.levels - 1) < 4:
      raise ValueError(f"ImageMGVAEConfig: {self.levels} levels of a {self.image_size}-pixel image make the "
                       f"coarsest level smaller than the generator's 4 x 4 start")
    if not self.kl_weight >= 0:
      raise ValueError(f"ImageMGVAEConfig.kl_weight must be >= 0, got {self.kl_weight}")

  def sizes(self) -> tuple[int, ...]:
    return tuple(self.image_size >> l for l in range(self.levels))


@flax.struct.dataclass
class ImageOutput:
  loss: Array  # [B] sum over levels of reconstruction + beta * KL
  reconstruction: Array  # [B, L] binary cross-entropy summed over the level's pixels
  kl: Array  # [B, L]
  logits: tuple[Array, ...]  # L arrays [B, S_l, S_l]
  targets: tuple[Array, ...]  # L arrays [B, S_l, S_l]: the image pyramid


# ---------------------------------------------------------------------------------------------------------------------
# Pure per-example pieces.


def neighbour_mean(h: Array, graph: image_graphs.GridGraph) -> Array:
  """Weighted mean of each node's neighbours' states: h [N, C] -> [N, C] (a gather and a segment sum)."""
  w = jnp.asarray(graph.weights, h.dtype)[:, None]  # [E, 1]
  receivers = jnp.asarray(graph.receivers)
  total = jax.ops.segment_sum(h[jnp.asarray(graph.senders)] * w, receivers, num_segments=graph.num_nodes)
  degree = jax.ops.segment_sum(w, receivers, num_segments=graph.num_nodes)  # [N, 1], >= 1 on a grid
  return total / jnp.maximum(degree, 1e-6)


def bernoulli_nll(logits: Array, target: Array) -> Array:
  """Binary cross-entropy of targets in [0, 1] under per-pixel logits, summed over the pixels: [B, S, S] -> [B]."""
  per_pixel = jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(-1)


def diagonal_kl(mu: Array, sigma: Array) -> Array:
  """KL(N(mu, diag sigma^2) || N(0, I)): [B, D] -> [B]."""
  return 0.5 * jnp.sum(mu ** 2 + sigma ** 2 - 1.0 - 2.0 * jnp.log(sigma), axis=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Modules.


class GridMessagePassing(nn.Module):
  """One residual round h <- h + relu(W_s h + W_n mean_{j ~ i} h_j), then LayerNorm per node. h [B, N, C]."""
  graph: image_graphs.GridGraph

  @nn.compact
  def __call__(self, h: Array) -> Array:
    c = h.shape[-1]
    agg = jax.vmap(functools.partial(neighbour_mean, graph=self.graph))(h)  # [B, N, C]
    update = nn.relu(nn.Dense(c, name="self")(h) + nn.Dense(c, use_bias=False, name="neighbours")(agg))
    return nn.LayerNorm()(h + update)


class BlockPooler(nn.Module):
  """p^(l): DeepSets over each 2 x 2 block, rho(mean_i phi(h_i)); invariant to the order inside a block."""
  ids: np.ndarray  # [N_l] -> parent in [0, N_{l+1})
  num_parents: int

  @nn.compact
  def __call__(self, h: Array) -> Array:  # [B, N_l, C] -> [B, N_{l+1}, C]
    c = h.shape[-1]
    phi = nn.relu(nn.Dense(c, name="phi")(h))
    pooled = jax.vmap(lambda x: image_graphs.pool_mean(x, self.ids, self.num_parents))(phi)
    return nn.relu(nn.Dense(c, name="rho")(pooled))


class DCGANGenerator(nn.Module):
  """z [B, d_z] -> per-pixel logits [B, size, size]: Dense to 4 x 4, then log2(size / 4) stride-2 ConvTranspose."""
  size: int
  width: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    n_up = int(np.log2(self.size // 4))
    chs = [self.width * 2 ** k for k in reversed(range(n_up))] + [max(self.width // 2, 1)]  # e.g. 256 128 64 32
    x = nn.relu(nn.Dense(4 * 4 * chs[0], name="project")(z)).reshape(z.shape[0], 4, 4, chs[0])
    for i, c in enumerate(chs[1:]):
      x = nn.relu(nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", name=f"up_{i}")(x))
    return nn.Conv(1, (3, 3), padding="SAME", name="to_pixels")(x)[..., 0]


class _GaussianHead(nn.Module):
  """Pooled features [B, F] -> (mu, sigma) of a diagonal Gaussian in R^{d_z}."""
  latent_dim: int

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    out = nn.Dense(2 * self.latent_dim)(x)
    mu, raw = jnp.split(out, 2, axis=-1)
    return mu, jax.nn.softplus(raw) + _MIN_SIGMA


def _level_terms(logits, target, mu, sigma) -> tuple[Array, Array]:
  return bernoulli_nll(logits, target), diagonal_kl(mu, sigma)


class ImageMGVAE(nn.Module):
  """The multiresolution image VAE of section 5.4. Call: (images [B, S, S] in [0, 1], train) -> ImageOutput."""
  config: ImageMGVAEConfig

  def setup(self):
    cfg = self.config
    graphs, ids = image_graphs.quadtree_graphs(cfg.image_size, cfg.levels)
    self.graphs, self.ids = graphs, ids
    self.embed = nn.Dense(cfg.channels)
    self.encoders = [[GridMessagePassing(g, name=f"mp_{l}_{k}") for k in range(cfg.encoder_layers)]
                     for l, g in enumerate(graphs)]
    self.heads = [_GaussianHead(cfg.latent_dim, name=f"head_{l}") for l in range(cfg.levels)]
    self.poolers = [BlockPooler(ids[l], graphs[l + 1].num_nodes, name=f"pool_{l}") for l in range(cfg.levels - 1)]
    self.decoders = [DCGANGenerator(s, cfg.generator_width, name=f"decoder_{l}") for l, s in enumerate(cfg.sizes())]

  def encode(self, images: Array) -> list[tuple[Array, Array]]:
    """Posterior (mu, sigma) [B, d_z] of every level, finest first."""
    b = images.shape[0]
    h = self.embed(images.reshape(b, -1, 1))  # [B, N_0, C]: each node's colour
    out = []
    for l in range(self.config.levels):
      for layer in self.encoders[l]:
        h = layer(h)
      out.append(self.heads[l](self._readout(h, l)))  # node states pooled to Z^(l)
      if l + 1 < self.config.levels:
        h = self.poolers[l](h)
    return out

  def _readout(self, h: Array, level: int) -> Array:
    """[B, N_l, C] -> [B, C] (sum, mean) or [B, R * R * C] (regions)."""
    cfg = self.config
    if cfg.readout == "sum":
      return h.sum(axis=1)
    if cfg.readout == "mean":
      return h.mean(axis=1)
    side = cfg.image_size >> level
    r = min(cfg.regions, side)
    ids = fixed_clustering.grid_clustering(side, side, side // r)
    cells = jax.vmap(lambda x: image_graphs.pool_mean(x, ids, r * r))(h)  # [B, R * R, C]
    return cells.reshape(h.shape[0], -1)

  def decode(self, z: Array, level: int) -> Array:
    """Logits [B, S_l, S_l] of level `level`'s image from Z^(l) [B, d_z]."""
    return self.decoders[level](z)

  def __call__(self, images: Array, train: bool = True) -> ImageOutput:
    _check_images(images, self.config.image_size)
    targets = image_graphs.image_pyramid(images, self.config.levels)
    posteriors = self.encode(images)
    logits, rec, kl = [], [], []
    for l, (mu, sigma) in enumerate(posteriors):
      z = mu + sigma * jax.random.normal(self.make_rng("latent"), mu.shape) if train else mu
      lg = self.decode(z, l)
      r, k = _level_terms(lg, targets[l], mu, sigma)
      logits.append(lg), rec.append(r), kl.append(k)
    rec, kl = jnp.stack(rec, -1), jnp.stack(kl, -1)  # [B, L]
    return ImageOutput(loss=(rec + self.config.kl_weight * kl).sum(-1), reconstruction=rec, kl=kl,
                       logits=tuple(logits), targets=tuple(targets))

  def sample(self, num: int, level: int) -> Array:
    """Images [num, S_l, S_l] in [0, 1]: Z^(l) ~ N(0, I) (rng stream "latent") through d^(l), pixel means."""
    z = jax.random.normal(self.make_rng("latent"), (num, self.config.latent_dim))
    return jax.nn.sigmoid(self.decode(z, level))


@dataclasses.dataclass(frozen=True)
class ConvVAEConfig:
  image_size: int = 32
  latent_dim: int = 256
  encoder_width: int = 64  # channels of the first of three stride-2 convolutions (then x2, x4)
  generator_width: int = 64
  kl_weight: float = 1.0


class ConvVAE(nn.Module):
  """The baseline: one level, conv encoder (DCGAN discriminator shape) + the same DCGAN generator. Same interface."""
  config: ConvVAEConfig

  def setup(self):
    cfg = self.config
    self.convs = [nn.Conv(cfg.encoder_width * 2 ** i, (4, 4), strides=(2, 2), padding="SAME", name=f"conv_{i}")
                  for i in range(3)]
    self.head = _GaussianHead(cfg.latent_dim, name="head")
    self.decoder = DCGANGenerator(cfg.image_size, cfg.generator_width, name="decoder_0")

  def __call__(self, images: Array, train: bool = True) -> ImageOutput:
    _check_images(images, self.config.image_size)
    x = images[..., None]  # [B, S, S, 1]
    for conv in self.convs:
      x = nn.leaky_relu(conv(x), 0.2)
    mu, sigma = self.head(x.reshape(x.shape[0], -1))
    z = mu + sigma * jax.random.normal(self.make_rng("latent"), mu.shape) if train else mu
    logits = self.decoder(z)
    r, k = _level_terms(logits, images, mu, sigma)
    return ImageOutput(loss=r + self.config.kl_weight * k, reconstruction=r[:, None], kl=k[:, None],
                       logits=(logits,), targets=(images,))

  def sample(self, num: int, level: int = 0) -> Array:
    del level  # one level; coarser images are its samples average-pooled (image_graphs.image_pyramid)
    z = jax.random.normal(self.make_rng("latent"), (num, self.config.latent_dim))
    return jax.nn.sigmoid(self.decoder(z))


def _check_images(images: Array, size: int) -> None:
  if images.ndim != 3 or images.shape[1:] != (size, size):
    raise ValueError(f"expected images [B, {size}, {size}] with values in [0, 1], got shape {images.shape}")


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
