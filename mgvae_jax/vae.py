"""MGVAE: the multiresolution graph VAE (paper section 4, eq. 6-12).

The encoder is the MGN (mgn.py) with a posterior at every level it encodes: q(Z^(L) | G^(L)) prod_l
q(Z^(l) | Z^(l+1), G^(l)) (eq. 7), each level's latents pooled into the node features of the next coarser level.
Every encoded level has a prior (standard N(0, I), or the learnable N(mu_hat, Sigma_hat) of section 4.4 over the
level's N_l slots, matched to the posterior's nodes by free matching) and a global decoder:

  finest level  Z [B, N, d] -> edge logits [B, N, N], edge-type logits [B, N, N, E], node-type logits [B, N, T]
  coarser level Z [B, N_l, d] -> the coarse weighted adjacency [B, N_l, N_l] (regression; Definition 3.2)

so a graph can be generated all at once from the prior at any level (default the finest). The loss is eq. 8 summed
over levels plus the balanced-cut terms, returned per graph and per level (MGVAEOutput).

Graph size: as in the paper's molecule setup, a data set pads each graph to N slots with "no node" nodes (a node type
of their own, one of the T classes, with no edges). Those are nodes of the model's graph and get latents; the batch
mask marks only padding beyond that (e.g. empty graphs filling the last batch), which contributes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import autoregressive
from mgvae_jax import decoders
from mgvae_jax import distributions
from mgvae_jax import graphs
from mgvae_jax import mgn as mgn_lib

Array = jnp.ndarray

PRIORS = ("standard", "learnable")
GRAPH_DECODERS = ("second_order", "mlp", "dot", "autoregressive")


@dataclasses.dataclass(frozen=True)
class MGVAEConfig:
  """Everything MGVAE reads. `mgn` is the hierarchy (its posterior must not be "none"); weights may be a float (all
  levels) or one value per encoded level, bottom-up."""
  mgn: mgn_lib.MGNConfig = mgn_lib.MGNConfig(num_clusters=(4, 1), posterior="full", local_decoder="none",
                                             global_encoder_layers=2)
  max_nodes: int = 9  # N: the static pad size of the finest level (the learnable prior and MLP decoder are sized by it)
  node_classes: int = 5  # T: the first T channels of batch.nodes one-hot encode the node type ("no node" included)
  edge_classes: int = 3  # E: batch.edges one-hot encodes the edge type (no "no edge" channel)
  prior: str = "learnable"  # standard | learnable
  matching: str = "free"  # free | none  (Hungarian matching is for evaluation: distributions.hungarian_matching)
  decoder: str = "second_order"  # second_order | mlp | dot | autoregressive  (finest level)
  decoder_features: int = 32
  decoder_layers: int = 3
  # The second-order decoders' pair input: "product" (z_i * z_j per channel) or "bilinear" (learned bilinear forms,
  # decoders.bilinear_pairs).
  decoder_pairs: str = "product"
  # The finest decoder also reads each node's rank (the last max_nodes channels of batch.nodes, one-hot, as
  # Featuriser(rank_features=True) writes them) and the rank distance of each pair; second_order decoder only.
  decoder_positions: bool = False
  rank_distances: int = 16  # pair channels |r_i - r_j| = 1, ..., rank_distances - 1 and ">= rank_distances"
  rank_pointers: int = 0  # channels of decoders.rank_pointer_pairs (each latent's score for a partner at each offset)
  mlp_hidden: tuple[int, ...] = (512, 512)  # Table 1's MLP decoder: two hidden layers of 512, sigmoid
  # The autoregressive decoder (autoregressive.py): the valence cap of each node class (the last class is "no atom",
  # cap 0; autoregressive.valence_table builds it from a featuriser's types) and the scan length (0: 3 * max_nodes).
  ar_valences: tuple[int, ...] = ()
  ar_steps: int = 0
  coarse_decoders: bool = True  # regression decoders for the coarse levels' weighted adjacencies
  # How the finest level's reconstruction terms are reduced over a graph: "mean" (per pair / per node, as the
  # authors' code) or "sum" (the log-likelihood of the whole graph, the ELBO's own scale: with kl_weight 1 the loss
  # is the negative ELBO, up to the edge BCE's positive-class weight).
  reconstruction: str = "mean"
  kl_weight: float | tuple[float, ...] = 1.0  # beta per level
  cut_weight: float | tuple[float, ...] = 1.0  # lambda per level (balanced cut)
  edge_weight: float = 1.0
  edge_type_weight: float = 1.0
  node_weight: float = 1.0
  coarse_weight: float = 1.0
  local_weight: float = 0.0  # the MGN's local decoders (if mgn.local_decoder != "none")

  def __post_init__(self):
    if self.mgn.posterior == "none":
      raise ValueError("MGVAEConfig.mgn.posterior must be 'diagonal' or 'full' (a VAE needs a posterior)")
    if self.prior not in PRIORS:
      raise ValueError(f"MGVAEConfig.prior must be one of {PRIORS}, got {self.prior!r}")
    if self.decoder not in GRAPH_DECODERS:
      raise ValueError(f"MGVAEConfig.decoder must be one of {GRAPH_DECODERS}, got {self.decoder!r}")
    if self.decoder == "autoregressive" and len(self.ar_valences) != self.node_classes:
      raise ValueError(f"MGVAEConfig.decoder='autoregressive' needs ar_valences, one valence cap per node class "
                       f"({self.node_classes}, 'no atom' last), got {self.ar_valences}")
    if self.reconstruction not in ("mean", "sum"):
      raise ValueError(f"MGVAEConfig.reconstruction must be 'mean' or 'sum', got {self.reconstruction!r}")
    if self.reconstruction == "sum" and self.decoder == "autoregressive":
      raise ValueError("MGVAEConfig.reconstruction='sum' is for the all-at-once decoders; the autoregressive decoder's "
                       "term is a mean NLL per construction step")
    if self.decoder_pairs not in decoders.PAIR_INPUTS:
      raise ValueError(f"MGVAEConfig.decoder_pairs must be one of {decoders.PAIR_INPUTS}, got {self.decoder_pairs!r}")
    if self.decoder_positions and self.decoder != "second_order":
      raise ValueError(f"MGVAEConfig.decoder_positions needs decoder='second_order', got {self.decoder!r}")
    if self.rank_distances < 1 or self.rank_pointers < 0:
      raise ValueError(f"MGVAEConfig needs rank_distances >= 1 and rank_pointers >= 0, got {self.rank_distances}, "
                       f"{self.rank_pointers}")
    if self.matching not in ("free", "none"):
      raise ValueError(f"MGVAEConfig.matching must be 'free' or 'none', got {self.matching!r}")
    if self.max_nodes < 1 or self.node_classes < 1 or self.edge_classes < 1:
      raise ValueError(f"MGVAEConfig needs max_nodes, node_classes, edge_classes >= 1, got {self.max_nodes}, "
                       f"{self.node_classes}, {self.edge_classes}")
    levels = len(self.mgn.num_clusters)
    for name in ("kl_weight", "cut_weight"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) and len(value) != levels:
        raise ValueError(f"MGVAEConfig.{name} needs one value per encoded level ({levels}), got {value}")

  @property
  def num_latent_levels(self) -> int:
    return len(self.mgn.num_clusters)

  def level_sizes(self) -> tuple[int, ...]:
    """Node slots of each encoded level, bottom-up: (N, K_L, K_{L-1}, ...) without the pooled top."""
    return self.mgn.level_sizes(self.max_nodes)[:self.num_latent_levels]

  @property
  def autoregressive_steps(self) -> int:
    return self.ar_steps or autoregressive.default_steps(self.max_nodes)

  def weights(self, name: str) -> jnp.ndarray:
    value = getattr(self, name)
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (self.num_latent_levels,))


@flax.struct.dataclass
class MGVAEOutput:
  """Per-graph loss terms ([B], or [B, levels] bottom-up) and what produced them."""
  loss: Array  # [B] the weighted total (eq. 8 with balanced cuts)
  reconstruction: Array  # [B, levels] per level: finest = edge + edge type + node terms; coarse = adjacency MSE
  kl: Array  # [B, levels]
  balanced_cut: Array  # [B, levels]
  edge: Array  # [B] BCE of edge existence (finest level)
  edge_type: Array  # [B] CE of the edge type on true edges
  node: Array  # [B] CE of the node type on real nodes
  local: Array  # [B, levels] the MGN's local decoder BCE (0 when unused)
  decoded: dict  # finest level logits: edge [B,N,N], edge_type [B,N,N,E], node [B,N,T]
  hierarchy: mgn_lib.MGNOutput


def edge_pos_weight(batches: Sequence[graphs.GraphBatch] | graphs.GraphBatch) -> float:
  """The positive-class weight for edge BCE from data: non-edges / edges over real off-diagonal pairs."""
  if isinstance(batches, graphs.GraphBatch):
    batches = [batches]
  pos = neg = 0.0
  for batch in batches:
    pm = np.asarray(batch.pair_mask) & ~np.eye(batch.pad_size, dtype=bool)
    edge = np.asarray(batch.adjacency) > 0
    pos += float((edge & pm).sum())
    neg += float((~edge & pm).sum())
  if pos == 0:
    raise ValueError("edge_pos_weight: the data have no edges")
  return neg / pos


def decoder_positions(cfg: MGVAEConfig, batch: graphs.GraphBatch) -> Array | None:
  """The one-hot ranks [B, N, N] the finest decoder reads (the last max_nodes node channels), or None when it reads
  none (config.decoder_positions)."""
  return batch.nodes[..., -cfg.max_nodes:] if cfg.decoder_positions else None


def _level_kl(cfg: MGVAEConfig, level: mgn_lib.LevelOutput, prior) -> Array:
  """KL of one level's posterior against its prior, per graph [B]; overflowed nodes are excluded unless they have a
  posterior of their own (mgn.overflow_posterior)."""
  mask = level.mask if cfg.mgn.overflow_posterior else level.mask & ~level.slots.overflow
  eps = cfg.mgn.covariance_eps
  if cfg.mgn.posterior == "diagonal":
    if prior is None:
      return jax.vmap(distributions.standard_normal_kl_diagonal)(level.posterior_mean, level.posterior_scale, mask)
    cov = jax.vmap(distributions.diagonal_covariance)(level.posterior_scale, mask)
  else:
    cov = jax.vmap(lambda f, m: distributions.full_covariance(f, m, eps))(level.posterior_factor, mask)
  if prior is None:
    return jax.vmap(lambda mu, c, m: distributions.prior_kl(mu, c, None, None, None, m))(level.posterior_mean, cov,
                                                                                         mask)
  mu_p, f_p, s_p = prior
  fn = lambda mu, c, m: distributions.prior_kl(mu, c, mu_p, f_p, s_p, m, cfg.matching, eps)
  return jax.vmap(fn)(level.posterior_mean, cov, mask)


class MGVAE(nn.Module):
  """__call__(batch, train=..., edge_pos_weight=...) -> MGVAEOutput. Methods `encode`, `decode`, `sample_prior`.

  rng streams: `gumbel` (learned clustering) and `latent` (posterior samples) when training; `sample` for
  sample_prior.
  """
  config: MGVAEConfig

  def setup(self):
    cfg = self.config
    self.mgn = mgn_lib.MGN(dataclasses.replace(cfg.mgn, pool_top=False))  # the pooled top node is not a latent level
    sizes = cfg.level_sizes()
    self.priors = ([distributions.LearnablePrior(n, cfg.mgn.latent_dim, name=f"prior_{i}")
                    for i, n in enumerate(sizes)] if cfg.prior == "learnable" else [])
    if cfg.decoder == "autoregressive":
      self.graph_decoder = autoregressive.AutoregressiveDecoder(
          cfg.node_classes, cfg.edge_classes, cfg.ar_valences, cfg.node_classes - 1, cfg.autoregressive_steps,
          cfg.decoder_features)
    else:
      self.graph_decoder = decoders.GraphDecoder(cfg.decoder, cfg.max_nodes, cfg.node_classes, cfg.edge_classes,
                                                 cfg.decoder_features, cfg.decoder_layers, cfg.mlp_hidden,
                                                 cfg.decoder_pairs, cfg.rank_distances, cfg.rank_pointers)
    if cfg.decoder_positions:
      # Which slots hold atoms, from each latent alone: where the ranks come from when decoding samples.
      self.atom_head = nn.Dense(1, name="atom_head")
    self.coarse_decoders = ([decoders.SecondOrderDecoder(cfg.decoder_features, cfg.decoder_layers, 1, diagonal=True,
                                                         name=f"coarse_decoder_{i}")
                             for i in range(1, len(sizes))] if cfg.coarse_decoders else [])

  def _check(self, batch: graphs.GraphBatch):
    cfg = self.config
    if batch.pad_size != cfg.max_nodes:
      raise ValueError(f"MGVAE is built for graphs padded to max_nodes={cfg.max_nodes} slots, got {batch.pad_size}")
    if batch.nodes.shape[-1] < cfg.node_classes:
      raise ValueError(f"node features have {batch.nodes.shape[-1]} channels, fewer than node_classes="
                       f"{cfg.node_classes} (the node-type one-hot comes first)")
    if cfg.decoder_positions and batch.nodes.shape[-1] < cfg.node_classes + cfg.max_nodes:
      raise ValueError(f"decoder_positions reads one-hot ranks from the last max_nodes={cfg.max_nodes} node channels, "
                       f"but nodes have only {batch.nodes.shape[-1]} channels (featurise with rank_features=True)")
    if batch.edges.shape[-1] != cfg.edge_classes:
      raise ValueError(f"edge features have {batch.edges.shape[-1]} channels, expected edge_classes="
                       f"{cfg.edge_classes}")

  def __call__(self, batch: graphs.GraphBatch, *, train: bool, edge_pos_weight: float | Array = 1.0,
               temperature: float | Array = 1.0, noise=None, latent_noise=None) -> MGVAEOutput:
    cfg = self.config
    self._check(batch)
    out = self.mgn(batch, train=train, temperature=temperature, noise=noise, latent_noise=latent_noise)
    levels = out.levels
    finest = levels[0]
    mask = batch.mask
    pm = batch.pair_mask & ~jnp.eye(batch.pad_size, dtype=bool)
    # Finest level: the global decoder on the (sampled) latents.
    edge_true = batch.adjacency > 0
    positions = decoder_positions(cfg, batch)  # [B, N, N] one-hot ranks, or None
    if cfg.decoder == "autoregressive":
      dec, edge = self._autoregressive_nll(finest.latents, batch, train)
    else:
      dec = self.graph_decoder(finest.latents, mask, positions)
      edge = mgn_lib.masked_bce(dec["edge"], edge_true, pm, edge_pos_weight, axes=(1, 2))
    on_edge = (pm & edge_true).astype(batch.edges.dtype)
    edge_type = jnp.zeros_like(edge)
    if cfg.edge_classes > 1 and cfg.decoder != "autoregressive":  # the autoregressive NLL includes bond types
      ce = -jnp.sum(jax.nn.log_softmax(dec["edge_type"], -1) * batch.edges, -1)  # [B, N, N]
      edge_type = (ce * on_edge).sum((1, 2)) / jnp.maximum(on_edge.sum((1, 2)), 1.0)
    node_target = batch.nodes[..., :cfg.node_classes]
    node_ce = -jnp.sum(jax.nn.log_softmax(dec["node"], -1) * node_target, -1)  # [B, N]
    m = mask.astype(node_ce.dtype)
    node = (node_ce * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    if positions is not None:  # the atom head, on the same per-slot mean
      ranked = positions.any(-1).astype(node_ce.dtype)  # [B, N]
      logit = self.atom_head(finest.latents)[..., 0]
      bce = ranked * jax.nn.softplus(-logit) + (1.0 - ranked) * jax.nn.softplus(logit)  # [B, N]
      node = node + (bce * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    if cfg.reconstruction == "sum":  # means -> sums; ordered pairs count each unordered pair twice
      edge = edge * jnp.maximum(pm.sum((1, 2)), 1).astype(edge.dtype) * 0.5
      edge_type = edge_type * jnp.maximum(on_edge.sum((1, 2)), 1.0) * 0.5
      node = node * jnp.maximum(m.sum(1), 1.0)
    recon = [cfg.edge_weight * edge + cfg.edge_type_weight * edge_type + cfg.node_weight * node]
    # Coarser levels: regress the weighted adjacency of Definition 3.2 (diagonal included: edges inside a cluster).
    for i, level in enumerate(levels[1:]):
      if not self.coarse_decoders:
        recon.append(jnp.zeros_like(edge))
        continue
      pred = self.coarse_decoders[i](level.latents, level.mask)[..., 0]
      lpm = (level.mask[:, :, None] & level.mask[:, None, :]).astype(pred.dtype)
      err = ((pred - level.edges.sum(-1)) ** 2) * lpm
      recon.append(cfg.coarse_weight * err.sum((1, 2)) / jnp.maximum(lpm.sum((1, 2)), 1.0))
    recon = jnp.stack(recon, -1)  # [B, levels]
    priors = [p() for p in self.priors] if self.priors else [None] * len(levels)
    kl = jnp.stack([_level_kl(cfg, lv, pr) for lv, pr in zip(levels, priors)], -1)  # [B, levels]
    cut = out.balanced_cut
    local = (mgn_lib.reconstruction_loss(out, edge_pos_weight) if cfg.mgn.local_decoder != "none"
             or cfg.mgn.global_decoder != "none" else jnp.zeros_like(cut))
    loss = (recon.sum(-1) + (kl * cfg.weights("kl_weight")).sum(-1) + (cut * cfg.weights("cut_weight")).sum(-1)
            + cfg.local_weight * local.sum(-1))
    graph_real = mask.any(-1).astype(loss.dtype)  # empty padding graphs contribute 0
    return MGVAEOutput(loss=loss * graph_real, reconstruction=recon * graph_real[:, None],
                       kl=kl * graph_real[:, None], balanced_cut=cut * graph_real[:, None], edge=edge * graph_real,
                       edge_type=edge_type * graph_real, node=node * graph_real,
                       local=local * graph_real[:, None], decoded=dec, hierarchy=out)

  def sample_positions(self, z: Array) -> Array:
    """Ranks for latents with no molecule behind them (prior samples): the slots the atom head calls atoms are ranked
    0, 1, ... in slot order, the rest unranked.  [B, N, d] -> one-hot [B, N, N].

    Slot order is the aggregate prior's canonical order, and the learnable prior's slots are exchangeable, so this
    ranks samples as training ranked molecules.
    """
    atom = self.atom_head(z)[..., 0] > 0  # [B, N]
    rank = jnp.cumsum(atom, -1) - 1
    return jax.nn.one_hot(rank, z.shape[1], dtype=z.dtype) * atom[..., None]

  def _autoregressive_nll(self, z: Array, batch: graphs.GraphBatch, train: bool) -> tuple[dict, Array]:
    """Node logits, and the teacher-forced NLL of the BFS construction per construction step [B] (a mean, like the
    other decoders' per-pair edge terms), from a random start atom when training (the first atom otherwise)."""
    cfg = self.config
    types = jnp.argmax(batch.nodes[..., :cfg.node_classes], -1)
    real = batch.real_node_mask(cfg.node_classes - 1)
    bonds = autoregressive.bond_orders(batch.edges)
    if train:
      keys = jax.random.split(self.make_rng("latent"), z.shape[0])
      start = jax.vmap(autoregressive.random_start)(keys, real)
    else:
      start = jnp.argmax(real, -1).astype(jnp.int32)
    nll, count = self.graph_decoder(z, types, real, bonds, start)
    return {"node": self.graph_decoder.node_logits(z)}, nll / jnp.maximum(count, 1).astype(nll.dtype)

  def encode(self, batch: graphs.GraphBatch) -> tuple[Array, ...]:
    """Posterior means of every encoded level, bottom-up: ([B, N, d], [B, K_L, d], ...). Deterministic."""
    self._check(batch)
    out = self.mgn(batch, train=False)
    return tuple(lv.posterior_mean for lv in out.levels)

  def decode(self, z: Array, level: int = 0, edge_pos_weight: float | Array = 1.0,
             positions: Array | None = None) -> dict[str, Array]:
    """Decode latents of one level (0 = finest) with every slot a node.

    Finest level: probabilities {edge [B,N,N], edge_type [B,N,N,E], node [B,N,T]}; coarser: {adjacency [B,K,K]}.
    `edge_pos_weight`: the positive-class weight w the edge BCE was trained with. A w-weighted BCE is minimised by
    p = w q / (w q + 1 - q), not by the edge probability q itself, so the logits are shifted by -log w to give q
    (without it, w ~ 27 on ZINC turns every pair with q > 1/28 into a likely edge).
    The autoregressive decoder returns the one-hot graph it built instead (`_decode_autoregressive`; rng `sample`).
    `positions` [B, N, N]: the nodes' one-hot ranks when the decoder reads them (config.decoder_positions): the
    encoded molecule's for a reconstruction, `sample_positions(z)` when None.
    """
    mask = jnp.ones(z.shape[:2], bool)
    if level == 0 and self.config.decoder == "autoregressive":
      return self._decode_autoregressive(z)
    if level == 0:
      if self.config.decoder_positions:
        logits = self.graph_decoder(z, mask, self.sample_positions(z) if positions is None else positions)
      else:
        logits = self.graph_decoder(z, mask)
      off = 1.0 - jnp.eye(z.shape[1], dtype=z.dtype)
      edge_logits = logits["edge"] - jnp.log(jnp.asarray(edge_pos_weight, z.dtype))
      return {"edge": jax.nn.sigmoid(edge_logits) * off, "edge_type": jax.nn.softmax(logits["edge_type"], -1),
              "node": jax.nn.softmax(logits["node"], -1)}
    if not self.coarse_decoders:
      raise ValueError("decode at a coarse level needs coarse_decoders=True")
    return {"adjacency": self.coarse_decoders[level - 1](z, mask)[..., 0]}

  def _decode_autoregressive(self, z: Array) -> dict[str, Array]:
    """Node types drawn from the node head, then the BFS construction: sampled with the `sample` rng when one is
    given, greedy otherwise. One-hot "probabilities" of the built (connected, valence-respecting) molecule."""
    cfg = self.config
    dec = self.graph_decoder
    logits = dec.node_logits(z)
    key = self.make_rng("sample") if self.has_rng("sample") else None
    if key is None:
      types = jnp.argmax(logits, -1)
    else:
      key, k_types = jax.random.split(key)
      types = jax.random.categorical(k_types, logits, -1)
    state, in_graph = dec.build(z, types, key)
    return autoregressive.to_probabilities(types, state, in_graph, cfg.node_classes, cfg.edge_classes,
                                           cfg.node_classes - 1)

  def sample_prior(self, num_samples: int, level: int = 0) -> Array:
    """Latents [num_samples, N_l, d] drawn from the prior of one level (rng stream `sample`)."""
    cfg = self.config
    sizes = cfg.level_sizes()
    if not 0 <= level < len(sizes):
      raise ValueError(f"level must be in [0, {len(sizes)}) (0 = finest), got {level}")
    n, d = sizes[level], cfg.mgn.latent_dim
    keys = jax.random.split(self.make_rng("sample"), 3)
    if not self.priors:
      return jax.random.normal(keys[0], (num_samples, n, d))
    mu, factor, scale = self.priors[level]()
    e1 = jax.random.normal(keys[0], (num_samples, n, d))
    e2 = jax.random.normal(keys[1], (num_samples, n, d))
    e3 = jax.random.normal(keys[2], (num_samples, n, d))
    return (mu + jnp.einsum("ijc,bjc->bic", factor, e1) + scale * e2
            + jnp.sqrt(cfg.mgn.covariance_eps) * e3)


# Molecules decoded per pass by `decode_in_chunks`: a chunk's [C, N, N, F] decoder tensors stay in the CPU caches
# (on ZINC, N = 38, F = 32: 2.9 MB a tensor at 16). Measured on 2 cores: 16 a pass decodes about 2.5 x as many
# molecules a second as 500 (README, benchmarks).
DECODE_CHUNK = 16


def decode_in_chunks(decode, z: Array, key: Array | None, chunk: int = DECODE_CHUNK):
  """`decode(z_chunk, key_chunk)` over the leading axis of z [B, ...] in chunks of `chunk`, concatenated.

  One `lax.map` body, so one compilation for any B. The last chunk is padded with zero latents (their outputs are
  dropped). Each chunk gets its own key split from `key` (None: decode gets None). B <= chunk, or chunk <= 0:
  a single call of decode(z, key).
  """
  b = z.shape[0]
  if chunk <= 0 or b <= chunk:
    return decode(z, key)
  n = -(-b // chunk)
  if n * chunk > b:
    z = jnp.concatenate([z, jnp.zeros((n * chunk - b,) + z.shape[1:], z.dtype)])
  zs = z.reshape((n, chunk) + z.shape[1:])  # [n, chunk, ...]
  keys = None if key is None else jax.random.split(key, n)  # None is an empty pytree: lax.map passes it through
  out = jax.lax.map(lambda args: decode(*args), (zs, keys))
  return jax.tree_util.tree_map(lambda x: x.reshape((n * chunk,) + x.shape[2:])[:b], out)


def masked_metrics(out: MGVAEOutput, graph_mask: Array) -> dict[str, Array]:
  """Means over real graphs (graph_mask [B]): [] for per-graph terms, [levels] for per-level ones."""
  gm = graph_mask.astype(jnp.float32)  # [B]
  count = jnp.maximum(gm.sum(), 1.0)

  def mean(x):  # [B] or [B, levels]; where, not *, so a NaN in a padding graph cannot leak in
    m = gm.reshape(gm.shape + (1,) * (x.ndim - 1))
    return jnp.where(m > 0, x, 0.0).sum(0) / count

  return {"loss": mean(out.loss), "edge": mean(out.edge), "edge_type": mean(out.edge_type), "node": mean(out.node),
          "reconstruction": mean(out.reconstruction), "kl": mean(out.kl), "balanced_cut": mean(out.balanced_cut)}


def make_loss_fn(model: MGVAE, edge_pos_weight: float, temperature: Optional[Callable[[Array], Array]] = None):
  """The training objective for `training.make_train_step`: `loss_fn(params, (batch, graph_mask [B]), key, step)
  -> (mean loss over real graphs, masked_metrics)`. `temperature(step)`: the learned clustering's Gumbel temperature
  (default 1); `key` feeds the gumbel and latent rng streams."""

  def loss_fn(params, inputs, key, step):
    batch, graph_mask = inputs
    k_gumbel, k_latent = jax.random.split(key)
    out = model.apply({"params": params}, batch, train=True, edge_pos_weight=edge_pos_weight,
                      temperature=1.0 if temperature is None else temperature(step),
                      rngs={"gumbel": k_gumbel, "latent": k_latent})
    count = jnp.maximum(graph_mask.sum(), 1).astype(jnp.float32)
    return jnp.where(graph_mask, out.loss, 0.0).sum() / count, masked_metrics(out, graph_mask)

  return loss_fn


def make_eval_step(model: MGVAE, edge_pos_weight: float) -> Callable[[Any, graphs.GraphBatch, Array], dict]:
  """A jitted `eval_fn(params, batch, graph_mask [B]) -> metrics` with train=False (posterior means, no sampling)."""

  @jax.jit
  def eval_fn(params, batch: graphs.GraphBatch, graph_mask: Array):
    out = model.apply({"params": params}, batch, train=False, edge_pos_weight=edge_pos_weight)
    metrics = masked_metrics(out, graph_mask)
    metrics["finite"] = jnp.isfinite(metrics["loss"])
    metrics["num_graphs"] = graph_mask.sum().astype(jnp.int32)  # to weight means across batches
    return metrics

  return eval_fn


def check_finite(output: MGVAEOutput) -> None:
  """Raise FloatingPointError naming every non-finite loss term, with its level and the graphs it hit.

  Host side (call on fetched values); the jit-side counterpart is `jnp.isfinite(output.loss).all()`.
  """
  problems = []
  for name in ("reconstruction", "kl", "balanced_cut", "local", "edge", "edge_type", "node"):
    value = np.asarray(getattr(output, name))
    bad = ~np.isfinite(value)
    if bad.any():
      if value.ndim == 2:
        for level in np.unique(np.nonzero(bad)[1]):
          graphs_hit = np.flatnonzero(bad[:, level]).tolist()
          problems.append(f"{name} at level {level} (0 = finest) for graphs {graphs_hit[:8]}")
      else:
        problems.append(f"{name} for graphs {np.flatnonzero(bad).tolist()[:8]}")
  if problems or not np.all(np.isfinite(np.asarray(output.loss))):
    raise FloatingPointError("non-finite MGVAE loss: " + ("; ".join(problems) or "the weighted total"))


def interpolate(model: MGVAE, params, graph_a: graphs.GraphBatch, graph_b: graphs.GraphBatch, steps: int = 7,
                align: bool = True, edge_pos_weight: float = 1.0) -> dict[str, Array]:
  """Figure 7: decode (1 - t) z_a + t z_b at the finest level for t in linspace(0, 1, steps).

  graph_a, graph_b: batches of one graph each. With `align`, z_b's nodes are first put in z_a's order by Hungarian
  matching of their posterior means (the latents of two graphs have no common node order otherwise).
  Returns the decoded probabilities with a leading [steps] axis (`edge_pos_weight` as in MGVAE.decode).
  """
  encode = jax.jit(lambda p, g: model.apply(p, g, method=MGVAE.encode)[0][0])  # [N, d]; eager apply compiles op by op
  za, zb = encode(params, graph_a), encode(params, graph_b)
  if align:
    order = distributions.hungarian_matching(np.asarray(za), np.asarray(zb), np.ones(za.shape[0], bool))
    zb = zb[jnp.asarray(order)]
  t = jnp.linspace(0.0, 1.0, steps)[:, None, None]
  z = (1.0 - t) * za[None] + t * zb[None]  # [steps, N, d]
  return jax.jit(lambda p, z: model.apply(p, z, 0, edge_pos_weight, method=MGVAE.decode))(params, z)
