"""The Multiresolution Graph Network (paper Definitions 3.3-3.4) and the supervised MGN (section 3.4's MGN loss).

Levels are numbered as in the paper: level L is the input graph, level 1 the coarsest. Bottom-up, level l (N_l node
slots) is clustered into K_l clusters, each cluster's induced subgraph is encoded by a local encoder (weights shared
across clusters, the clusters batched as small graphs), optionally decoded by a local decoder, and pooled into one node
of level l - 1, whose adjacency is the coarsening of Definition 3.2. Every shape is static: N_L is the pad size and
N_{l-1} = K_l.

  level l graph:  nodes [B, N_l, F_l], edges [B, N_l, N_l, E_l], mask [B, N_l]
  clusters:       slots [B, K_l, C_l] (C_l = N_l unless a capacity is set)
  latents Z^(l):  [B, N_l, d]          local decoder logits: [B, K_l, C_l, C_l]
  level l - 1:    nodes = pooled latents [B, K_l, P], edges = coarse adjacency [B, K_l, K_l, 1]

With config.posterior set, the local encoders output a posterior (mean and diagonal scale, or the full-covariance
factor L of section 4.3) and the latents passed up are its samples: the MGN becomes MGVAE's encoder (vae.py). An
optional global encoder per level gives every node context from the whole level before clustering.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import clustering as clustering_lib
from mgvae_jax import decoders
from mgvae_jax import distributions
from mgvae_jax import equivariant
from mgvae_jax import fixed_clustering
from mgvae_jax import graphs
from mgvae_jax import hierarchy

Array = jnp.ndarray

CLUSTERINGS = ("learned", "spectral", "kmeans", "given")
DECODERS = ("none", "dot", "second_order")
POSTERIORS = ("none", "diagonal", "full")


@dataclasses.dataclass(frozen=True)
class MGNConfig:
  """Everything the MGN reads. `num_clusters[i]` is K at level L - i (bottom-up); L = len(num_clusters) + 1.

  Definition 3.3 has a single node on top (the last K is 1); any K is accepted.
  """
  num_clusters: tuple[int, ...] = (4, 1)
  capacity: Optional[tuple[Optional[int], ...]] = None  # per level; None entries mean exact (C_l = N_l)
  clustering: str = "learned"  # learned | spectral | kmeans | given
  cluster_order: int = 1  # order of the clustering GNN
  cluster_features: int = 32
  cluster_layers: int = 2
  cluster_norm: bool = False  # standardise node features before the clustering logits (clustering.LearnedClustering)
  # Gumbel noise multiplier of a learned clustering while training: 1 samples the assignment (Gumbel-max), 0 takes
  # the argmax as at evaluation, so the hierarchy a graph is encoded with does not change from step to step.
  cluster_noise: float = 1.0
  # With Gumbel noise, the balanced cut (eq. 2) scores the sampled clustering. That one can be balanced while the
  # noise-free argmax that evaluation encodes with puts most nodes in one cluster (the noise spreads nodes whose
  # logits nearly tie); with a bounded capacity those then overflow. True: the cut also scores the argmax clustering
  # (straight-through, at the same temperature), so the clusters a graph is evaluated with are balanced too. The
  # level's balanced_cut is then the sum of the two cuts while training (up to 2 log K) and the argmax's alone at
  # evaluation. Learned clusterings with cluster_noise > 0 only.
  balance_argmax: bool = False
  # Whether a learned clustering's assignment carries straight-through gradients from the rest of the model (the
  # pooling's member weights and the coarse adjacency). False: it learns from the balanced cut alone. (On Cora the
  # reconstruction's gradient through the assignment only sharpened each node's own-cluster probability: the softmax
  # saturated, the balanced cut lost its gradient, and the argmax collapsed into a few clusters.)
  cluster_task_gradient: bool = True
  kmeans_pca_dim: Optional[int] = None  # PCA before K-means on features (clustering="kmeans")
  encoder_order: int = 2  # order of the local encoders
  encoder_features: int = 32
  encoder_layers: int = 2
  # Layers of an optional global encoder on each whole level graph (0: none). Its node embeddings join the node
  # features before clustering and local encoding, so local latents also carry context from outside their cluster,
  # which a global decoder (all-at-once generation) needs to place edges between clusters.
  global_encoder_layers: int = 0
  latent_dim: int = 16
  local_decoder: str = "second_order"  # none | dot | second_order
  global_decoder: str = "none"  # none | dot | second_order (on all latents of the level)
  decoder_features: int = 16
  decoder_layers: int = 2
  pool_features: int = 32
  pool_top: bool = True  # pool the last level into the top graph's node features (False where nothing reads them)
  posterior: str = "none"  # none (deterministic MGN) | diagonal (eq. 5) | full (MRF, section 4.3)
  covariance_eps: float = 1e-4
  # With a bounded capacity and a posterior: nodes that overflow their cluster get an independent diagonal posterior
  # from a first-order head on their features (global-encoder context included) instead of no latent at all, so
  # every node has a latent for the decoder; only the local encoders' view is bounded.
  overflow_posterior: bool = False

  def __post_init__(self):
    if not self.num_clusters or any(int(k) < 1 for k in self.num_clusters):
      raise ValueError(f"MGNConfig.num_clusters must be a non-empty tuple of K >= 1 per level, got "
                       f"{self.num_clusters}")
    if self.capacity is not None and len(self.capacity) != len(self.num_clusters):
      raise ValueError(f"MGNConfig.capacity has {len(self.capacity)} entries for {len(self.num_clusters)} levels")
    if self.clustering not in CLUSTERINGS:
      raise ValueError(f"MGNConfig.clustering must be one of {CLUSTERINGS}, got {self.clustering!r}")
    for name in ("local_decoder", "global_decoder"):
      if getattr(self, name) not in DECODERS:
        raise ValueError(f"MGNConfig.{name} must be one of {DECODERS}, got {getattr(self, name)!r}")
    for name in ("cluster_order", "encoder_order"):
      if getattr(self, name) not in (1, 2):
        raise ValueError(f"MGNConfig.{name} must be 1 or 2, got {getattr(self, name)}")
    if self.posterior not in POSTERIORS:
      raise ValueError(f"MGNConfig.posterior must be one of {POSTERIORS}, got {self.posterior!r}")
    if self.posterior == "full" and self.encoder_order != 2:
      raise ValueError("MGNConfig.posterior='full' needs encoder_order=2: only a second-order encoder outputs the "
                       "covariance factor L (section 3.3)")

  @property
  def num_levels(self) -> int:
    return len(self.num_clusters) + 1

  def level_sizes(self, pad_size: int) -> tuple[int, ...]:
    """Node slots per level, bottom-up: (N_L, K_L, K_{L-1}, ...)."""
    return (pad_size,) + tuple(int(k) for k in self.num_clusters)


@flax.struct.dataclass
class LevelOutput:
  """What one level of the MGN computed (batched; bottom-up index 0 is level L)."""
  nodes: Array  # [B, N_l, F_l]  the level's graph
  edges: Array  # [B, N_l, N_l, E_l]
  mask: Array  # [B, N_l]
  clustering: clustering_lib.Clustering  # [B, N_l, K_l] ...
  cluster_logits: Optional[Array]  # [B, N_l, K_l] (learned clustering only)
  slots: hierarchy.ClusterSlots  # [B, K_l, C_l]
  latents: Array  # [B, N_l, d]  Z^(l), from the local encoders
  local_logits: Optional[Array]  # [B, K_l, C_l, C_l]
  global_logits: Optional[Array]  # [B, N_l, N_l]
  balanced_cut: Array  # [B]  eq. 2
  posterior_mean: Optional[Array] = None  # [B, N_l, d]   (posterior != none)
  posterior_scale: Optional[Array] = None  # [B, N_l, d]  sigma (posterior = diagonal)
  posterior_factor: Optional[Array] = None  # [B, N_l, N_l, d]  block-diagonal L (posterior = full)


@flax.struct.dataclass
class MGNOutput:
  levels: tuple[LevelOutput, ...]  # bottom-up: levels L, L-1, ..., 2
  top: graphs.GraphBatch  # level 1: pooled nodes [B, K_2, P], coarse adjacency [B, K_2, K_2, 1]

  @property
  def balanced_cut(self) -> Array:
    """[B, L - 1], bottom-up."""
    return jnp.stack([lv.balanced_cut for lv in self.levels], axis=-1)

  @property
  def num_overflow(self) -> Array:
    """[B, L - 1]: real nodes that did not fit their cluster's capacity, per level."""
    return jnp.stack([lv.slots.num_overflow for lv in self.levels], axis=-1)


@flax.struct.dataclass
class LocalLatents:
  """A local encoder's output for a batch of small graphs (the clusters)."""
  sample: Array  # [G, C, d]  the latents passed on (a posterior sample, or the mean when not sampling)
  mean: Optional[Array] = None  # [G, C, d]
  scale: Optional[Array] = None  # [G, C, d]      diagonal posterior sigma
  factor: Optional[Array] = None  # [G, C, C, d]  full posterior: Sigma_c = L_c L_c^T + eps I


class LocalEncoder(nn.Module):
  """e_local: an equivariant GNN on a batch of small graphs -> node latents [G, C, d], deterministic or a posterior.

  posterior="diagonal": mu and sigma from first-order heads (eq. 5); "full": mu from a first-order head and the
  covariance factor L from a second-order (2->2) head on the last second-order activation (section 4.3).
  __call__(nodes [G, C, F], edges [G, C, C, E], mask [G, C], noise=(e, e') [G, C, d] each or None).
  """
  order: int = 2
  features: int = 32
  layers: int = 2
  latent_dim: int = 16
  activation: Callable[[Array], Array] = nn.relu
  posterior: str = "none"
  eps: float = 1e-4
  init_scale: float = 0.1  # posterior standard deviation at initialisation

  @nn.compact
  def __call__(self, nodes: Array, edges: Array, mask: Array,
               noise: Optional[tuple[Array, Array]] = None) -> LocalLatents:
    a = edges.sum(-1)  # [G, C, C]
    h = None
    if self.order == 2:
      h = jax.vmap(equivariant.promote_to_second_order)(nodes, edges, mask)  # [G, C, C, F + E]
      for _ in range(self.layers):
        h = equivariant.SecondOrderLayer(self.features, activation=self.activation, self_term=True)(a, h, mask)
      z = jax.vmap(equivariant.contract_to_first_order)(h, mask)  # [G, C, 2 features]
    else:
      z = nn.Dense(self.features)(nodes) * mask[..., None]
      for _ in range(self.layers):
        z = z + equivariant.FirstOrderMPNN(self.features, self.activation)(a, z, mask)
    m = mask[..., None].astype(z.dtype)
    # Per-node LayerNorm (equivariant: it acts on each node's channels): the normalised sums above shrink activations
    # by about deg/n on sparse graphs, which would leave the latents far below the posterior noise at the start.
    z = nn.LayerNorm(name="norm")(z) * m
    mean = nn.Dense(self.latent_dim, name="mean")(z) * m
    if self.posterior == "none":
      return LocalLatents(sample=mean)
    if self.posterior == "diagonal":
      raw = nn.Dense(self.latent_dim, name="scale", kernel_init=nn.initializers.normal(0.01),
                     bias_init=nn.initializers.constant(np.log(np.expm1(self.init_scale))))(z)
      scale = (jax.nn.softplus(raw) + 1e-3) * m
      sample = mean if noise is None else jax.vmap(distributions.sample_diagonal)(mean, scale, mask, noise[0])
      return LocalLatents(sample=sample, mean=mean, scale=scale)
    # The diagonal bias starts at init_scale: L ~ init_scale I, not ~0 (a covariance near eps I, a KL of order
    # log 1/eps) and not I (posterior noise drowning the means, which slows learning badly).
    # The kernel starts small too, so that L starts close to that diagonal.
    factor = equivariant.EquivariantLinear2to2(self.latent_dim, diag_bias_init=self.init_scale, kernel_scale=0.01,
                                               name="factor")(h, mask)
    sample = mean
    if noise is not None:
      fn = functools.partial(distributions.sample_full, eps=self.eps)
      sample = jax.vmap(fn)(mean, factor, mask, noise[0], noise[1])
    return LocalLatents(sample=sample, mean=mean, factor=factor)


class OverflowPosterior(nn.Module):
  """A diagonal posterior for the nodes that overflowed their cluster, from a first-order head on their features.

  Merged into the level's posterior: the means and scales of the overflowed nodes [B, N] replace the zeros the
  clusters left there (for a full posterior the scale goes on the factor's diagonal: those nodes are independent of
  the rest), and so do their samples (mean + scale e, plus sqrt(eps) e' for a full posterior, whose covariance adds
  eps I).
  """
  latent_dim: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, nodes: Array, overflow: Array, post: dict, latents: Array,
               noise: Optional[tuple[Array, Array]], eps: float) -> tuple[dict, Array]:
    """noise: (e, e') [B, N, d] each in node space, or None for the means."""
    h = nn.LayerNorm(name="norm")(nodes)
    mean = nn.Dense(self.latent_dim, name="mean")(h)  # [B, N, d]
    raw = nn.Dense(self.latent_dim, name="scale", kernel_init=nn.initializers.normal(0.01),
                   bias_init=nn.initializers.constant(np.log(np.expm1(self.init_scale))))(h)
    scale = jax.nn.softplus(raw) + 1e-3  # [B, N, d]
    o = overflow[..., None]
    post = dict(post)
    post["posterior_mean"] = jnp.where(o, mean, post["posterior_mean"])
    sample = mean
    if "posterior_factor" in post:
      eye = jnp.eye(overflow.shape[1], dtype=scale.dtype)[None, :, :, None]
      post["posterior_factor"] = post["posterior_factor"] + eye * jnp.where(o, scale, 0.0)[:, :, None, :]
      if noise is not None:
        sample = mean + scale * noise[0] + jnp.sqrt(eps) * noise[1]
    else:
      post["posterior_scale"] = jnp.where(o, scale, post["posterior_scale"])
      if noise is not None:
        sample = mean + scale * noise[0]
    return post, jnp.where(o, sample, latents)


class ClusterPooling(nn.Module):
  """p: permutation-invariant pooling of each cluster's latents (DeepSets rho(sum, mean of phi)).

  z [G, C, d], weight [G, C] (the member's assignment value: 1 in the forward pass, carrying straight-through
  gradients back to the clustering), mask [G, C] -> [G, features]; empty clusters give 0.
  """
  features: int = 32
  activation: Callable[[Array], Array] = nn.relu

  @nn.compact
  def __call__(self, z: Array, weight: Array, mask: Array) -> Array:
    m = mask[..., None].astype(z.dtype)
    phi = self.activation(nn.Dense(self.features)(z)) * m * weight[..., None]  # [G, C, P]
    total = phi.sum(1)  # [G, P]
    mean = total / jnp.maximum(m.sum(1), 1.0)
    return nn.Dense(self.features)(jnp.concatenate([total, mean], -1)) * (m.sum(1) > 0)


def _edge_decoder(kind: str, features: int, layers: int, name: str) -> Optional[nn.Module]:
  if kind == "dot":
    return decoders.DotProductDecoder(name=name)
  if kind == "second_order":
    return decoders.SecondOrderDecoder(features=features, layers=layers, out_channels=1, name=name)
  return None


class MGN(nn.Module):
  """The L-level MGN. __call__(batch, train=...) -> MGNOutput.

  Randomness: the `gumbel` rng stream when training a learned clustering, unless `noise` gives the Gumbel samples
  per level ([B, N_l, K_l] each, bottom-up). `given_ids` (clustering="given") holds the cluster ids per level
  ([B, N_l] each), e.g. a quadtree for images. With a posterior (config.posterior != "none") the latents passed up
  are posterior samples when training (rng stream `latent`, or `latent_noise`: a pair of standard normal arrays
  [B, N_l, d] per level, in node space so that permuting nodes permutes the noise) and posterior means otherwise.
  """
  config: MGNConfig

  @nn.compact
  def __call__(self, batch: graphs.GraphBatch, *, train: bool, temperature: float | Array = 1.0,
               noise: Optional[Sequence[Array]] = None,
               given_ids: Optional[Sequence[Array]] = None,
               latent_noise: Optional[Sequence[tuple[Array, Array]]] = None) -> MGNOutput:
    cfg = self.config
    nodes, edges, mask = batch.nodes, batch.edges, batch.mask
    b = mask.shape[0]
    if cfg.clustering == "given" and (given_ids is None or len(given_ids) != len(cfg.num_clusters)):
      raise ValueError(f"clustering='given' needs given_ids for each of the {len(cfg.num_clusters)} levels")
    if noise is not None and len(noise) != len(cfg.num_clusters):
      raise ValueError(f"noise must hold one array per level ({len(cfg.num_clusters)}), got {len(noise)}")
    levels = []
    for i, k in enumerate(cfg.num_clusters):
      n = mask.shape[1]
      capacity = None if cfg.capacity is None else cfg.capacity[i]
      adjacency = edges.sum(-1)  # [B, N, N]
      level_nodes = nodes
      if cfg.global_encoder_layers:
        context = LocalEncoder(cfg.encoder_order, cfg.encoder_features, cfg.global_encoder_layers,
                               cfg.encoder_features, name=f"global_encoder_{i}")(nodes, edges, mask).sample
        nodes = jnp.concatenate([nodes, context], axis=-1)  # [B, N, F + features]
      # c^(l): the clustering.
      cluster_logits = None
      if k == 1:  # one cluster: every real node in it, nothing to learn (the top of Definition 3.3)
        clus = jax.vmap(clustering_lib.clustering_from_ids, in_axes=(0, 0, None))(jnp.zeros_like(mask, jnp.int32),
                                                                                   mask, 1)
      elif cfg.clustering == "learned":
        clus, cluster_logits = clustering_lib.LearnedClustering(
            num_clusters=k, order=cfg.cluster_order, features=cfg.cluster_features, layers=cfg.cluster_layers,
            norm=cfg.cluster_norm, noise_scale=cfg.cluster_noise, name=f"cluster_{i}")(
                nodes, edges, mask, train=train, temperature=temperature, noise=None if noise is None else noise[i])
      else:
        if cfg.clustering == "given":
          ids = given_ids[i]
        else:
          key = jax.random.fold_in(jax.random.PRNGKey(0), i)  # fixed clusterings are deterministic
          if cfg.clustering == "spectral":
            ids = jax.vmap(fixed_clustering.spectral_clustering, in_axes=(0, 0, None, None))(adjacency, mask, k, key)
          else:
            ids = jax.vmap(lambda x, m: fixed_clustering.feature_kmeans_clustering(
                x, m, k, key, pca_dim=cfg.kmeans_pca_dim))(nodes, mask)
        clus = jax.vmap(clustering_lib.clustering_from_ids, in_axes=(0, 0, None))(ids, mask, k)
      cut = jax.vmap(clustering_lib.balanced_cut_kl)(clus.assignment, mask)  # [B]
      if cfg.balance_argmax and train and cluster_logits is not None and cfg.cluster_noise > 0:
        argmax = clustering_lib.argmax_assignment(cluster_logits, mask, temperature)  # [B, N, K]
        cut = cut + jax.vmap(clustering_lib.balanced_cut_kl)(argmax, mask)
      if not cfg.cluster_task_gradient:
        clus = clus.replace(assignment=jax.lax.stop_gradient(clus.assignment))
      priority = None
      if capacity is not None and capacity < n:  # who overflows must not depend on slot order
        priority = overflow_priority(nodes, clus.ids, cluster_logits)
      slots = hierarchy.batched_cluster_slots(clus.ids, mask, k, capacity, priority)  # [B, K, C]
      # e_local on every cluster's induced subgraph, the clusters batched as small graphs.
      node_blocks = jax.vmap(hierarchy.gather_nodes)(nodes, slots)  # [B, K, C, F]
      edge_blocks = jax.vmap(hierarchy.gather_edges)(edges, slots)  # [B, K, C, C, E]
      flat_mask = hierarchy.flatten_clusters(slots.mask)  # [B*K, C]
      eps_nodes = None
      if cfg.posterior != "none" and (train or latent_noise is not None):
        if latent_noise is not None:
          eps_nodes = latent_noise[i]
        else:
          key = self.make_rng("latent")
          eps_nodes = tuple(jax.random.normal(kk, (b, n, cfg.latent_dim), nodes.dtype) for kk in jax.random.split(key))
      eps_blocks = None if eps_nodes is None else tuple(
          hierarchy.flatten_clusters(jax.vmap(hierarchy.gather_nodes)(e, slots)) for e in eps_nodes)
      local = LocalEncoder(cfg.encoder_order, cfg.encoder_features, cfg.encoder_layers, cfg.latent_dim,
                           posterior=cfg.posterior, eps=cfg.covariance_eps, name=f"local_encoder_{i}")(
                               hierarchy.flatten_clusters(node_blocks), hierarchy.flatten_clusters(edge_blocks),
                               flat_mask, noise=eps_blocks)
      z_blocks = local.sample  # [B*K, C, d]
      to_nodes = lambda x: jax.vmap(hierarchy.scatter_nodes, in_axes=(0, 0, None))(
          hierarchy.unflatten_clusters(x, b), slots, n)
      post = {}
      if local.mean is not None:
        post["posterior_mean"] = to_nodes(local.mean)
      if local.scale is not None:
        post["posterior_scale"] = to_nodes(local.scale)
      if local.factor is not None:  # block-diagonal L over the level: L L^T = the per-cluster covariances
        post["posterior_factor"] = jax.vmap(hierarchy.scatter_edges, in_axes=(0, 0, None))(
            hierarchy.unflatten_clusters(local.factor, b), slots, n)
      latents = to_nodes(z_blocks)  # [B, N, d]
      if cfg.overflow_posterior and capacity is not None and capacity < n and cfg.posterior != "none":
        post, latents = OverflowPosterior(cfg.latent_dim, name=f"overflow_posterior_{i}")(
            nodes, slots.overflow, post, latents, eps_nodes, cfg.covariance_eps)
      # d_local / d_global.
      local_logits = global_logits = None
      local_dec = _edge_decoder(cfg.local_decoder, cfg.decoder_features, cfg.decoder_layers, f"local_decoder_{i}")
      if local_dec is not None:
        local_logits = hierarchy.unflatten_clusters(local_dec(z_blocks, flat_mask)[..., 0], b)  # [B, K, C, C]
      global_dec = _edge_decoder(cfg.global_decoder, cfg.decoder_features, cfg.decoder_layers, f"global_decoder_{i}")
      if global_dec is not None:
        global_logits = global_dec(latents, mask)[..., 0]  # [B, N, N]
      # Level l - 1: pooled nodes, and the coarsening of Definition 3.2 as its adjacency.
      if i == len(cfg.num_clusters) - 1 and not cfg.pool_top:
        coarse_nodes = jnp.zeros((b, k, 0), nodes.dtype)
      else:  # p: each cluster's latents -> one node of the next level [B, K, P] (0 for empty clusters)
        member_weight = jax.vmap(hierarchy.gather_nodes)(
            jnp.take_along_axis(clus.assignment, jnp.minimum(clus.ids, k - 1)[..., None], -1)[..., 0], slots)
        pooled = ClusterPooling(cfg.pool_features, name=f"pool_{i}")(
            hierarchy.flatten_clusters(jax.vmap(hierarchy.gather_nodes)(latents, slots)),
            hierarchy.flatten_clusters(member_weight), flat_mask)
        coarse_nodes = pooled.reshape(b, k, -1) * clus.coarse_mask[..., None]  # [B, K, P]
      coarse_adj = jax.vmap(clustering_lib.coarsen)(adjacency, clus, mask)  # [B, K, K]
      levels.append(LevelOutput(
          nodes=level_nodes, edges=edges, mask=mask, clustering=clus, cluster_logits=cluster_logits, slots=slots,
          latents=latents, local_logits=local_logits, global_logits=global_logits,
          balanced_cut=cut, **post))
      nodes, edges, mask = coarse_nodes, coarse_adj[..., None], clus.coarse_mask
    return MGNOutput(levels=tuple(levels), top=graphs.GraphBatch(nodes=nodes, edges=edges, mask=mask))


def overflow_priority(nodes: Array, ids: Array, cluster_logits: Optional[Array]) -> Array:
  """[B, N]: which members a full cluster keeps first (hierarchy.cluster_slots), an equivariant score per node.

  A learned clustering ranks members by the logit of the cluster they were put in (the most confident stay). Fixed
  clusterings have no logits: a fixed projection of the node features stands in. Either way nodes tie only where the
  network cannot tell them apart. (cluster_slots stops its gradient.)
  """
  if cluster_logits is not None:
    k = cluster_logits.shape[-1]
    return jnp.take_along_axis(cluster_logits, jnp.minimum(ids, k - 1)[..., None], -1)[..., 0]
  return nodes @ jax.random.normal(jax.random.PRNGKey(0), (nodes.shape[-1],), nodes.dtype)


def masked_mean(x: Array, mask: Array) -> Array:
  """[B, N, d], [B, N] -> [B, d]: the mean over real nodes (the readout R; invariant)."""
  m = mask[..., None].astype(x.dtype)
  return (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def reconstruction_loss(output: MGNOutput, pos_weight: float | Array = 1.0) -> Array:
  """Binary cross-entropy of every local (and global) decoder against the level's adjacency, per graph: [B, L - 1].

  Local decoders are scored on their cluster's induced subgraph (real slot pairs only, diagonal excluded), global
  decoders on all real pairs of the level. Targets are A > 0. Each term is a mean over the pairs it covers.
  """
  per_level = []
  for lv in output.levels:
    total = jnp.zeros(lv.mask.shape[0], lv.latents.dtype)
    adjacency = lv.edges.sum(-1)
    if lv.local_logits is not None:
      target = jax.vmap(hierarchy.gather_edges)(adjacency, lv.slots) > 0  # [B, K, C, C]
      pm = lv.slots.mask[..., :, None] & lv.slots.mask[..., None, :]
      pm = pm & ~jnp.eye(pm.shape[-1], dtype=bool)
      total = total + masked_bce(lv.local_logits, target, pm, pos_weight, axes=(1, 2, 3))
    if lv.global_logits is not None:
      pm = (lv.mask[:, :, None] & lv.mask[:, None, :]) & ~jnp.eye(lv.mask.shape[1], dtype=bool)
      total = total + masked_bce(lv.global_logits, adjacency > 0, pm, pos_weight, axes=(1, 2))
    per_level.append(total)
  return jnp.stack(per_level, -1)


def masked_bce(logits: Array, target: Array, pair_mask: Array, pos_weight: float | Array = 1.0,
               axes: Sequence[int] = (-2, -1)) -> Array:
  """Weighted binary cross-entropy of edge logits over the pairs in pair_mask, averaged over `axes`."""
  t = target.astype(logits.dtype)
  # Numerically stable weighted BCE: pos_weight * t * softplus(-x) + (1 - t) * softplus(x).
  loss = pos_weight * t * jax.nn.softplus(-logits) + (1.0 - t) * jax.nn.softplus(logits)
  pm = pair_mask.astype(logits.dtype)
  return (loss * pm).sum(axes) / jnp.maximum(pm.sum(axes), 1.0)


class MGNPredictor(nn.Module):
  """Supervised MGN: readouts of every level's latents (and of the top level) concatenated -> MLP -> [B, outputs]."""
  config: MGNConfig
  num_outputs: int = 1
  hidden: tuple[int, ...] = (128, 128)

  @nn.compact
  def __call__(self, batch: graphs.GraphBatch, *, train: bool, temperature: float | Array = 1.0,
               noise: Optional[Sequence[Array]] = None,
               given_ids: Optional[Sequence[Array]] = None) -> tuple[Array, MGNOutput]:
    out = MGN(self.config, name="mgn")(batch, train=train, temperature=temperature, noise=noise, given_ids=given_ids)
    readouts = [masked_mean(lv.latents, lv.mask) for lv in out.levels]
    readouts.append(masked_mean(out.top.nodes, out.top.mask))
    h = jnp.concatenate(readouts, axis=-1)  # [B, (L - 1) d + P]
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.num_outputs)(h), out


def mgn_loss(prediction: Array, target: Array, output: MGNOutput, cut_weights: Sequence[float] | Array,
             task: str = "regression", reconstruction_weight: float = 0.0,
             pos_weight: float | Array = 1.0) -> dict[str, Array]:
  """The MGN loss: task loss + sum_l lambda_l KL(P_l || Q_l) (+ reconstruction of the local decoders, if weighted).

  regression: ||f - y||^2 summed over outputs (prediction, target [B, T]); classification: softmax cross-entropy
  (prediction [B, classes], integer target [B]). Returns per-graph terms ([B] each, `balanced_cut` [B, L - 1]) and
  `loss`, their weighted sum [B]; average it over real graphs in the training step.
  """
  if task == "regression":
    task_loss = jnp.sum((prediction - target) ** 2, axis=-1)
  elif task == "classification":
    logp = jax.nn.log_softmax(prediction, axis=-1)
    task_loss = -jnp.take_along_axis(logp, target.astype(jnp.int32)[:, None], -1)[:, 0]
  else:
    raise ValueError(f"mgn_loss: task must be 'regression' or 'classification', got {task!r}")
  cut = output.balanced_cut  # [B, L - 1]
  weights = jnp.asarray(cut_weights, cut.dtype)
  if weights.shape not in ((), (cut.shape[-1],)):
    raise ValueError(f"mgn_loss: cut_weights needs one lambda per level ({cut.shape[-1]}), got {weights.shape}")
  terms = {"task": task_loss, "balanced_cut": cut}
  loss = task_loss + (cut * weights).sum(-1)
  if reconstruction_weight:
    recon = reconstruction_loss(output, pos_weight)
    terms["reconstruction"] = recon
    loss = loss + reconstruction_weight * recon.sum(-1)
  terms["loss"] = loss
  return terms
