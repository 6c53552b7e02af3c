"""MGVAE for link prediction on one large graph (paper section 5.3): embeddings per level, scored by inner products.

The whole graph is one padded graph (B = 1 in practice, any B works). Data flow, with N nodes and levels bottom-up:

  input encoder:   GCN layers on the training graph, D^-1/2 (A + I) D^-1/2 H W   nodes [B, N, F] -> h [B, N, H]
  hierarchy:       the deterministic MGN (mgn.py) on (h, A): per level a clustering (learned, or fixed ids computed
                   once), local second-order encoders on each cluster's padded slots [B, K, C, C, .], pooling and
                   coarsening; per level the level's node features x_l and local latents u_l [B, N_l, .]
  posterior:       per level q(z_l) = N(mu_l, diag sigma_l^2) from Dense heads on [x_l || u_l]     [B, N_l, d]
  (heads="gcn": the finest level's heads read A_hat [x || u], one more propagation over the training graph;
   combine="residual": u through kernels of its own that start at zero;
   unpool: the finest mean also gains gate * Dense(context), propagated by A_hat with heads="gcn"; context = each
   node's ancestors' normalised [x_l || u_l] at every coarser level, the gate [d] starting at zero)
  decoder:         per level logits z_l z_l^T against the level's adjacency (A > 0), weighted BCE
  link scores:     finest: z_i . z_j with z = mu_L; multiresolution: the same on [z_L || z_{L-1}[parent] || ...],
                   i.e. the sum over levels of the inner products of i's and j's ancestors (trained that way too)

hierarchy=False drops the MGN: one level whose posterior reads the input encoder's h. With heads="gcn" that is VGAE
(Kipf & Welling 2016): mean = A_hat relu(A_hat X W0) W1, the baseline for every hierarchy.

Why the posterior reads [x_l || u_l] and not the local latents alone: with a capacity C per cluster (needed at Cora's
size; N x N x channels at the finest level would not fit), a node whose cluster is over capacity has no local latent
(hierarchy.py reports it as overflow). The level's own features (the GCN output at the finest level) still give it a
posterior, so every node is scored; the local encoders refine what they can see. Fixed clusterings with a giant
cluster (Table 7's spectral baseline: one cluster of 2,020 of 2,708 nodes) therefore degrade to the input encoder,
not to garbage.

Loss per graph: finest BCE + coarse_weight * sum of coarse BCEs + kl_weight * sum_l KL_l / N_l^2 (VGAE's scaling:
the mean per-node KL divided by N) + cut_weight * sum_l balanced cut (eq. 2, learned clustering only) +
edge_cut_weight * sum_l edge cut (the share of edges between clusters, learned clustering only).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import clustering as clustering_lib
from mgvae_jax import decoders
from mgvae_jax import distributions
from mgvae_jax import equivariant
from mgvae_jax import graphs
from mgvae_jax import mgn as mgn_lib

Array = jnp.ndarray

SCORES = ("finest", "multiresolution")
HEADS = ("dense", "gcn")
COMBINES = ("concat", "residual")


def default_capacity(num_nodes: int, num_clusters: Sequence[int], factor: float = 2.0, minimum: int = 8
                     ) -> tuple[int, ...]:
  """Per-level cluster capacity: `factor` times the balanced size ceil(N_l / K_l), at least `minimum`, at most N_l."""
  sizes = (int(num_nodes),) + tuple(int(k) for k in num_clusters)
  return tuple(min(n, max(int(minimum), int(np.ceil(factor * np.ceil(n / k))))) for n, k in zip(sizes, num_clusters))


@dataclasses.dataclass(frozen=True)
class LinkPredictionConfig:
  """Everything `LinkMGVAE` reads. `mgn` must be deterministic (posterior "none"): the posteriors are this module's."""
  mgn: mgn_lib.MGNConfig = mgn_lib.MGNConfig(num_clusters=(4, 2), posterior="none", local_decoder="none",
                                             pool_top=False)
  input_layers: int = 1  # GCN layers on the whole graph before the hierarchy (0: a Dense projection only)
  input_features: int = 64
  latent_dim: int = 128
  score: str = "finest"
  # Multiresolution score: each coarse level's inner-product term gets a learned weight softplus(w_l), starting at
  # level_weight_init (softplus(-5) = 0.007: the score starts as the finest level's), the finest level's fixed at 1.
  # None: every level weighs 1 (the paper's concatenation; coarse latents' products are then unscaled).
  level_weight_init: Optional[float] = None
  # False: no hierarchy at all, which is VGAE (Kipf & Welling 2016) with heads="gcn": GCN input layers, then GCN
  # mean and scale heads, inner-product decoder. The baseline every hierarchy is measured against.
  hierarchy: bool = True
  # The finest level's posterior heads: "dense" reads each node's [x || u] alone; "gcn" propagates once more over the
  # training graph first (A_hat [x || u] W, VGAE's second layer). Coarse levels' heads are always dense.
  heads: str = "dense"
  # How the finest level's heads combine the input encoder's h with the local latents u: "concat" reads [h || u]
  # through one kernel; "residual" gives u a kernel of its own that starts at zero, so the model starts as VGAE and
  # the hierarchy enters only as far as training moves it.
  combine: str = "concat"
  # Whether the hierarchy's own terms (coarse reconstructions and KLs, the cuts) train the input encoder through h.
  # False: the MGN reads stop_gradient(h), so the GCN input layer learns from the finest level's loss alone, as in
  # VGAE, and the hierarchy's terms train the hierarchy (on Cora they are about 10 x the finest BCE).
  hierarchy_trains_input: bool = True
  # Whether the finest heads also read each node's ancestors: the features and local latents of the cluster that
  # holds it at every coarser level (unpooling, as a U-Net's decoder path). A cluster's pooled summary reaches every
  # member, however many hops apart, which the two GCN propagations cannot.
  unpool: bool = False
  kl_weight: float = 1.0
  cut_weight: float = 1.0
  # Weight of the edge cut (clustering.edge_cut: the share of edges between clusters, on the noise-free
  # straight-through assignment) of every learned level, beside eq. 2's balance: clusters that follow the graph.
  edge_cut_weight: float = 0.0
  coarse_weight: float = 1.0
  init_scale: float = 0.1  # posterior sigma at initialisation

  def __post_init__(self):
    if self.mgn.posterior != "none":
      raise ValueError("LinkPredictionConfig.mgn.posterior must be 'none': the hierarchy is deterministic and "
                       "LinkMGVAE owns the per-level posteriors")
    if self.mgn.balance_argmax:
      raise ValueError("LinkPredictionConfig.mgn.balance_argmax must be False: LinkMGVAE already adds the argmax "
                       "clustering's balanced cut (and its edge cut) itself")
    if self.combine not in COMBINES:
      raise ValueError(f"LinkPredictionConfig.combine must be one of {COMBINES}, got {self.combine!r}")
    if self.heads not in HEADS:
      raise ValueError(f"LinkPredictionConfig.heads must be one of {HEADS}, got {self.heads!r}")
    if not self.hierarchy and self.unpool:
      raise ValueError("LinkPredictionConfig.unpool needs the hierarchy (hierarchy=True)")
    if not self.hierarchy and self.score != "finest":
      raise ValueError("LinkPredictionConfig.score='multiresolution' needs the hierarchy (hierarchy=True)")
    if self.score not in SCORES:
      raise ValueError(f"LinkPredictionConfig.score must be one of {SCORES}, got {self.score!r}")
    if self.input_layers < 0 or self.input_features < 1 or self.latent_dim < 1:
      raise ValueError(f"LinkPredictionConfig needs input_layers >= 0, input_features >= 1, latent_dim >= 1, got "
                       f"{self.input_layers}, {self.input_features}, {self.latent_dim}")
    for name in ("kl_weight", "cut_weight", "coarse_weight", "edge_cut_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"LinkPredictionConfig.{name} must be >= 0, got {getattr(self, name)}")


def gcn_normalize(adjacency: Array, mask: Array) -> Array:
  """D^-1/2 (A + I) D^-1/2 over real nodes (Kipf & Welling's renormalisation).  [N, N], [N] -> [N, N]."""
  pm = equivariant.pair_mask(mask)
  a = jnp.where(pm, adjacency, 0.0) + jnp.diag(mask.astype(adjacency.dtype))
  deg = a.sum(1)
  inv_sqrt = jnp.where(deg > 0, jax.lax.rsqrt(jnp.where(deg > 0, deg, 1.0)), 0.0)
  return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def ancestors(ids: Sequence[Array], num_nodes: int) -> list[Array]:
  """For each level bottom-up, the slot of every finest node's ancestor there: [arange(N), ids_L, ids_{L-1}[ids_L], ...].

  ids: the clustering ids of each level ([N_l], K_l on padded nodes; clamped, padded nodes are masked anyway).
  Returns len(ids) arrays [N] (the finest level and each coarser level that has latents; the last ids lead to the
  pooled top, which has none).
  """
  out = [jnp.arange(num_nodes)]
  for level_ids in ids[:-1]:
    out.append(level_ids[jnp.minimum(out[-1], level_ids.shape[0] - 1)])
  return out


def multiresolution_embedding(latents: Sequence[Array], ids: Sequence[Array],
                               weights: Optional[Array] = None) -> Array:
  """[z_L || z_{L-1}[parent] || ...] for one graph: latents [N_l, d] per level, ids [N_l] per level -> [N, levels d].

  Inner products of these rows are sums over levels of the inner products of ancestors: two nodes in the same
  coarse cluster share that level's term. weights [levels] (>= 0): each level's term is multiplied by its weight
  (its part by the square root).
  """
  anc = ancestors(ids, latents[0].shape[0])
  parts = [z[jnp.minimum(a, z.shape[0] - 1)] for z, a in zip(latents, anc)]
  if weights is not None:
    parts = [p * jnp.sqrt(w) for p, w in zip(parts, weights)]
  return jnp.concatenate(parts, axis=-1)


def pair_scores(embedding: Array, pairs: Array) -> Array:
  """Logits z_i . z_j of node pairs: embedding [N, d], pairs [P, 2] int -> [P] (one dtype for every pair)."""
  return jnp.einsum("pd,pd->p", embedding[pairs[:, 0]], embedding[pairs[:, 1]])


@flax.struct.dataclass
class LinkOutput:
  """Per-graph loss terms ([B] or [B, levels] bottom-up) and the embeddings to score pairs with."""
  loss: Array  # [B]
  reconstruction: Array  # [B, levels] BCE per level (finest first)
  kl: Array  # [B, levels] KL_l (not yet divided by N_l^2)
  balanced_cut: Array  # [B, levels]
  edge_cut: Array  # [B, levels] share of each level's edges between its clusters (hard assignment)
  num_overflow: Array  # [B, levels] nodes over their cluster's capacity
  embedding: Array  # [B, N, d or levels d] what pair_scores reads (posterior means when not training)
  cluster_ids: tuple  # per level [B, N_l] int32 (empty without a hierarchy)
  hierarchy: Optional[mgn_lib.MGNOutput]  # None without a hierarchy


class GCNLayer(nn.Module):
  """relu(A_hat H W), Glorot-initialised (section 5.3). a_hat [B, N, N] (gcn_normalize), h [B, N, F], mask [B, N]."""
  features: int

  @nn.compact
  def __call__(self, a_hat: Array, h: Array, mask: Array) -> Array:
    hw = nn.Dense(self.features, use_bias=False, kernel_init=nn.initializers.glorot_uniform())(h)  # [B, N, H]
    return nn.relu(jnp.einsum("bij,bjc->bic", a_hat, hw)) * mask[..., None].astype(hw.dtype)


def _level_bce(logits: Array, adjacency: Array, mask: Array) -> Array:
  """Weighted BCE of logits [B, n, n] against adjacency > 0 over real off-diagonal pairs, per graph [B].

  The positive weight is the level's own non-edge / edge ratio (VGAE's pos_weight), a constant of the data.
  """
  n = mask.shape[-1]
  pm = (mask[:, :, None] & mask[:, None, :]) & ~jnp.eye(n, dtype=bool)
  target = (adjacency > 0) & pm
  pos = target.sum((1, 2)).astype(logits.dtype)
  neg = pm.sum((1, 2)).astype(logits.dtype) - pos
  pos_weight = jax.lax.stop_gradient(jnp.where(pos > 0, neg / jnp.maximum(pos, 1.0), 1.0))[:, None, None]
  return mgn_lib.masked_bce(logits, target, pm, pos_weight, axes=(1, 2))


def _noise_free_cuts(level: mgn_lib.LevelOutput, temperature: float | Array) -> tuple[Array, Array]:
  """Eq. 2 and the edge cut on the argmax assignment (softmax gradient) of a learned clustering's logits: 2 x [B]."""
  if level.cluster_logits is None:  # a one-cluster level: nothing to balance or cut
    zero = jnp.zeros(level.mask.shape[:1], level.latents.dtype)
    return zero, zero
  hard = clustering_lib.argmax_assignment(level.cluster_logits, level.mask, temperature)  # [B, N, K]
  return (jax.vmap(clustering_lib.balanced_cut_kl)(hard, level.mask),
          jax.vmap(clustering_lib.edge_cut)(hard, level.edges.sum(-1), level.mask))


class LinkMGVAE(nn.Module):
  """__call__(graph, train=..., temperature=..., given_ids=...) -> LinkOutput.

  graph: nodes [B, N, F] (any features), edges [B, N, N, 1] (the training graph), mask [B, N]. rng streams when
  training: `gumbel` (learned clustering) and `latent` (posterior samples). given_ids: fixed clusterings' ids per
  level ([B, N_l] each), with mgn.clustering = "given".
  """
  config: LinkPredictionConfig

  @nn.compact
  def __call__(self, graph: graphs.GraphBatch, *, train: bool, temperature: float | Array = 1.0,
               given_ids: Optional[Sequence[Array]] = None) -> LinkOutput:
    cfg = self.config
    mask = graph.mask
    adjacency = graph.edges.sum(-1)  # [B, N, N]
    a_hat = jax.vmap(gcn_normalize)(adjacency, mask)
    h = graph.nodes
    for i in range(cfg.input_layers):
      h = GCNLayer(cfg.input_features, name=f"gcn_{i}")(a_hat, h, mask)
    if cfg.input_layers == 0:
      h = nn.Dense(cfg.input_features, kernel_init=nn.initializers.glorot_uniform(), name="project")(h)
      h = h * mask[..., None].astype(h.dtype)
    if cfg.hierarchy:
      h_in = h if cfg.hierarchy_trains_input else jax.lax.stop_gradient(h)
      out = mgn_lib.MGN(cfg.mgn, name="mgn")(graph.replace(nodes=h_in), train=train, temperature=temperature,
                                             given_ids=given_ids)
      # [B, N_l], [B, N_l, F_l], [B, N_l, d_local]; the finest level's features are h itself (with its gradient).
      levels = [(lv.mask, h if i == 0 else lv.nodes, lv.latents) for i, lv in enumerate(out.levels)]
    else:
      out, levels = None, [(mask, h, None)]
    context = None
    if cfg.unpool:
      # Per node, per level LayerNorm: pooled sums grow with the clusters' sizes, level on level.
      parts = [nn.LayerNorm(name=f"unpool_norm_{l}")(jnp.concatenate([lv.nodes, lv.latents], -1))
               for l, lv in enumerate(out.levels[1:], 1)]  # [B, N_l, F_l + d_local] each
      # The ancestors' rows, as the multiresolution score gathers them; the finest level's own block has width 0.
      finest = jnp.zeros(mask.shape + (0,), h.dtype)  # [B, N, 0]
      context = jax.vmap(multiresolution_embedding)([finest] + parts, [lv.clustering.ids for lv in out.levels])
      context = context * mask[..., None].astype(context.dtype)  # [B, N, sum over coarse levels]
    latents, recon, kls = [], [], []
    for i, (level_mask, x, u) in enumerate(levels):
      m = level_mask[..., None].astype(x.dtype)
      if i == 0 and cfg.heads == "gcn":  # A_hat x W = (A_hat x) W: VGAE's second GCN layer
        x = jnp.einsum("bij,bjc->bic", a_hat, x)
        u = None if u is None else jnp.einsum("bij,bjc->bic", a_hat, u)
      residual = i == 0 and u is not None and cfg.combine == "residual"
      if u is not None and not residual:
        x = jnp.concatenate([x, u], axis=-1)  # [B, N_l, F_l + d_local]
      mean = nn.Dense(cfg.latent_dim, kernel_init=nn.initializers.glorot_uniform(), name=f"mean_{i}")(x)
      raw = nn.Dense(cfg.latent_dim, kernel_init=nn.initializers.normal(0.01),
                     bias_init=nn.initializers.constant(np.log(np.expm1(cfg.init_scale))), name=f"scale_{i}")(x)
      if residual:  # the hierarchy's share, zero at initialisation
        zeros = nn.initializers.zeros
        mean = mean + nn.Dense(cfg.latent_dim, use_bias=False, kernel_init=zeros, name=f"mean_{i}_local")(u)
        raw = raw + nn.Dense(cfg.latent_dim, use_bias=False, kernel_init=zeros, name=f"scale_{i}_local")(u)
      if i == 0 and context is not None:
        # Gated, not a zero kernel: a context row is shared by a whole cluster, so Adam's first steps on a zero
        # kernel would move every member's mean together by about lr x width and derail training.
        c = nn.Dense(cfg.latent_dim, kernel_init=nn.initializers.glorot_uniform(), name="unpool_0")(context)
        if cfg.heads == "gcn":
          c = jnp.einsum("bij,bjc->bic", a_hat, c)
        mean = mean + self.param("unpool_gate", nn.initializers.zeros, (cfg.latent_dim,)) * c
      mean = mean * m
      scale = (jax.nn.softplus(raw) + 1e-4) * m
      z = mean
      if train:
        eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
        z = jax.vmap(distributions.sample_diagonal)(mean, scale, level_mask, eps)
      latents.append(z)
      kls.append(jax.vmap(distributions.standard_normal_kl_diagonal)(mean, jnp.where(m > 0, scale, 1.0), level_mask))
    ids = [lv.clustering.ids for lv in out.levels] if cfg.hierarchy else []
    if cfg.score == "multiresolution":
      weights = None
      if cfg.level_weight_init is not None:
        raw = self.param("level_weights", nn.initializers.constant(cfg.level_weight_init), (len(latents) - 1,))
        weights = jnp.concatenate([jnp.ones((1,), raw.dtype), jax.nn.softplus(raw)])  # [levels], finest first
      embedding = jax.vmap(multiresolution_embedding, in_axes=(0, 0, None))(latents, ids, weights)  # [B, N, levels d]
    else:
      embedding = latents[0]
    # Finest level: the link scores' own logits; coarse levels: their latents against the coarsened adjacency.
    recon.append(_level_bce(jax.vmap(decoders.dot_product_logits)(embedding, mask), adjacency, mask))
    for lv, z in zip(out.levels[1:] if cfg.hierarchy else [], latents[1:]):
      recon.append(_level_bce(jax.vmap(decoders.dot_product_logits)(z, lv.mask), lv.edges.sum(-1), lv.mask))
    recon = jnp.stack(recon, -1)  # [B, levels]
    kl = jnp.stack(kls, -1)  # [B, levels]
    sizes = jnp.stack([level[0].sum(-1) for level in levels], -1).astype(kl.dtype)  # [B, levels]
    learned_edge_cut = jnp.zeros_like(recon[:, 0])  # [B]: the edge-cut term of the loss (learned clusterings)
    if not cfg.hierarchy:
      cut = balanced_cut = edge_cut = jnp.zeros(mask.shape[:1] + (0,), kl.dtype)  # [B, 0]: no clustering
      num_overflow = jnp.zeros(mask.shape[:1] + (0,), jnp.int32)
    elif cfg.mgn.clustering != "learned":
      balanced_cut, num_overflow = out.balanced_cut, out.num_overflow
      edge_cut = jnp.stack([jax.vmap(clustering_lib.edge_cut)(lv.clustering.assignment, lv.edges.sum(-1), lv.mask)
                            for lv in out.levels], -1)
      cut = jnp.zeros_like(balanced_cut)  # a fixed clustering has nothing to learn; reported by the caller's statistics
    else:
      balanced_cut, num_overflow = out.balanced_cut, out.num_overflow
      # Eq. 2 on the noise-free assignment as well (argmax forward, softmax gradient): with K = 128 the Gumbel noise
      # dominates small logits, so the noisy clusters are balanced by the noise alone while the argmax used at
      # evaluation put 2,000 of Cora's 2,708 nodes in one cluster.
      # Without noise (mgn.cluster_noise = 0) the MGN's own cut already scores that assignment: counted once.
      noise_free = [_noise_free_cuts(lv, temperature) for lv in out.levels]
      edge_cut = jnp.stack([e for _, e in noise_free], -1)  # [B, levels]
      cut = balanced_cut
      if cfg.mgn.cluster_noise > 0:
        cut = cut + jnp.stack([b for b, _ in noise_free], -1)
      learned_edge_cut = edge_cut.sum(-1)
    loss = (recon[:, 0] + cfg.coarse_weight * recon[:, 1:].sum(-1)
            + cfg.kl_weight * (kl / jnp.maximum(sizes, 1.0) ** 2).sum(-1) + cfg.cut_weight * cut.sum(-1)
            + cfg.edge_cut_weight * learned_edge_cut)
    return LinkOutput(loss=loss, reconstruction=recon, kl=kl, balanced_cut=balanced_cut,
                      edge_cut=jax.lax.stop_gradient(edge_cut), num_overflow=num_overflow, embedding=embedding,
                      cluster_ids=tuple(ids), hierarchy=out)
