"""Decoders from node latents to edge logits (Definition 3.4's local/global decoders; section 4).

Per-graph functions act on z [N, d] with mask [N]; modules take [B, N, d] and return logits (pre-sigmoid /
pre-softmax), exactly 0 off the real pairs. SecondOrderDecoder and DotProductDecoder are S_n-equivariant: permuting
the latents permutes the reconstructed adjacency. GraphDecoder is MGVAE's finest-level decoder (edges, edge types and
node types), equivariant except for its "mlp" kind (Table 1's baseline).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgvae_jax import equivariant

Array = jnp.ndarray


def dot_product_logits(z: Array, mask: Array) -> Array:
  """Example 3.9's decoder: logits z_i . z_j (sigmoid gives A-hat).  z [N, d] -> [N, N]."""
  z = equivariant.mask_first(z, mask)
  return z @ z.T


def outer_product_features(z: Array, mask: Array) -> Array:
  """Promote latents to second order: the per-channel outer product z_i * z_j, and z_i on the diagonal.

  z [N, d] -> [N, N, 2d]. The diagonal channels let a 2->2 decoder tell node terms from pair terms.
  """
  z = equivariant.mask_first(z, mask)
  n, d = z.shape
  # One broadcast multiply instead of concatenating two [N, N, d] halves (XLA's CPU concatenate costs several GEMMs):
  # channel c < d is z_ic * z_jc, channel d + c is z_ic * delta_ij.
  zz = jnp.concatenate([z, z], axis=-1)  # [N, 2d] (first order: cheap)
  first = (jnp.arange(2 * d) < d)[None, None, :]
  other = jnp.where(first, zz[None, :, :], jnp.eye(n, dtype=z.dtype)[:, :, None])  # [N, N, 2d]
  return zz[:, None, :] * other


def pair_products(z: Array, mask: Array) -> Array:
  """The per-channel outer product z_i * z_j of masked latents, batched.  [B, N, d] -> [B, N, N, d], symmetric."""
  zm = jnp.where(mask[..., None], z, jnp.zeros((), z.dtype))
  return zm[:, :, None, :] * zm[:, None, :, :]


class DotProductDecoder(nn.Module):
  """[B, N, d] -> edge logits [B, N, N, 1]: z_i . z_j after an optional per-node linear map."""
  features: int = 0  # 0: use the latents as they are

  @nn.compact
  def __call__(self, z: Array, mask: Array) -> Array:
    if self.features:
      z = nn.Dense(self.features)(z)
    return jax.vmap(dot_product_logits)(z, mask)[..., None]


def bilinear_pairs(u: Array, v: Array, mask: Array) -> Array:
  """Symmetrised per-channel products of two node maps: (u_i * v_j + v_i * u_j) / 2.  2 x [B, N, F] -> [B, N, N, F].

  Mixed by the next layer's kernel, sum_c w_c u_ic v_jc is any bilinear form z_i^T W z_j of rank <= F when u, v are
  linear maps of z; z_i * z_j alone gives only the diagonal forms sum_c w_c z_ic z_jc.
  """
  u = jnp.where(mask[..., None], u, jnp.zeros((), u.dtype))
  v = jnp.where(mask[..., None], v, jnp.zeros((), v.dtype))
  return 0.5 * (u[:, :, None, :] * v[:, None, :, :] + v[:, :, None, :] * u[:, None, :, :])


PAIR_INPUTS = ("product", "bilinear")


def _ranked_pairs(positions: Array, mask: Array) -> tuple[Array, Array]:
  """Ranks r [B, N] (argmax of the one-hot rows) and the pairs i != j of two ranked nodes [B, N, N]."""
  has = positions.any(-1) & mask  # [B, N]
  valid = has[:, :, None] & has[:, None, :] & ~jnp.eye(mask.shape[1], dtype=bool)
  return jnp.argmax(positions, -1), valid


def rank_pair_features(positions: Array, mask: Array, max_offset: int = 16) -> Array:
  """One-hot rank distance of every pair of ranked nodes: channel k-1 is |r_i - r_j| = k for k < max_offset, the
  last channel |r_i - r_j| >= max_offset; zero on the diagonal and wherever a node has no rank.

  positions [B, N, R] one-hot ranks (a zero row: no rank) -> [B, N, N, max_offset]. A function of the ranks, so it
  permutes with the nodes.
  """
  r, valid = _ranked_pairs(positions, mask)
  d = jnp.minimum(jnp.abs(r[:, :, None] - r[:, None, :]), max_offset)  # [B, N, N]
  return jax.nn.one_hot(d - 1, max_offset, dtype=positions.dtype) * valid[..., None]


def rank_pointer_pairs(scores: Array, positions: Array, mask: Array) -> Array:
  """Each node's score for a partner at every rank offset, read at each pair's offset: (s_i[r_j - r_i] +
  s_j[r_i - r_j]) / 2 per channel, offsets clipped to +-K; zero on the diagonal and wherever a node has no rank.

  scores [B, N, 2K + 1, C] (offset -K..K), positions [B, N, R] one-hot ranks -> [B, N, N, C], symmetric. The decoder
  counterpart of Featuriser(rank_bond_features=True): a latent that says "bonded to the atom 5 ranks on" scores the
  pair 5 ranks on, wherever the molecule puts it.
  """
  k = (scores.shape[2] - 1) // 2
  r, valid = _ranked_pairs(positions, mask)
  offset = jnp.clip(r[:, None, :] - r[:, :, None], -k, k) + k  # [B, N, N]: r_j - r_i at (i, j)
  onehot = jax.nn.one_hot(offset, 2 * k + 1, dtype=scores.dtype) * valid[..., None]  # [B, N, N, 2K + 1]
  f = jnp.einsum("bijo,bioc->bijc", onehot, scores)
  return 0.5 * (f + jnp.swapaxes(f, 1, 2))


def second_order_stack(z: Array, mask: Array, features: int, layers: int,
                       activation: Callable[[Array], Array], pair_input: str = "product",
                       pair_extra: Array | None = None) -> tuple[Array, Array]:
  """Outer-product features of z, then `layers` general 2->2 layers with gamma, carried as (symmetric, antisymmetric)
  parts (equivariant.linear_2to2_parts: no transposes). Call inside a compact module; the layers are named
  EquivariantLinear2to2_<k>, as stacking EquivariantLinear2to2 would name them.  [B, N, d] -> 2 x [B, N, N, features].

  The first layer gets the outer product's diagonal channels (z_i on i = j) as node channels: the same map as on
  `outer_product_features` (same kernel [15, 2d, features]), with a [B, N, N, d] input instead of [B, N, N, 2d].
  pair_input="bilinear" replaces z_i * z_j by `bilinear_pairs` of two learned linear maps of z (Dense layers
  pair_u, pair_v of `features` channels each). `pair_extra` [B, N, N, P]: symmetric pair channels appended to the
  first layer's pair input.
  """
  if pair_input not in PAIR_INPUTS:
    raise ValueError(f"pair_input must be one of {PAIR_INPUTS}, got {pair_input!r}")
  if layers == 0:
    return jax.vmap(outer_product_features)(z, mask), None  # [B, N, N, 2d], symmetric
  layer = lambda k: equivariant.EquivariantLinear2to2Parts(features, activation=activation,
                                                           name=f"EquivariantLinear2to2_{k}")
  if pair_input == "bilinear":
    pairs = bilinear_pairs(nn.Dense(features, name="pair_u")(z), nn.Dense(features, name="pair_v")(z), mask)
  else:
    pairs = pair_products(z, mask)
  if pair_extra is not None:
    pairs = jnp.concatenate([pairs, pair_extra.astype(pairs.dtype)], -1)
  s, a = layer(0)(pairs, None, mask, z)  # z: the diagonal channels (masked inside)
  for k in range(1, layers):
    s, a = layer(k)(s, a, mask)
  return s, a


class SecondOrderDecoder(nn.Module):
  """Latents -> outer-product features -> `layers` 2->2 equivariant linear maps with gamma -> `out_channels` logits.

  The output is symmetrised ((x + x^T) / 2) when `symmetric`, as undirected graphs need: then the stack runs on
  symmetric/antisymmetric parts and the head computes only the symmetric part (same parameters, no transposes).
  [B, N, d] -> [B, N, N, out_channels].
  """
  features: int = 32
  layers: int = 2
  out_channels: int = 1
  activation: Callable[[Array], Array] = nn.relu
  symmetric: bool = True
  diagonal: bool = False  # False: the output diagonal is unused (edges only), so it gets no bias of its own

  @nn.compact
  def __call__(self, z: Array, mask: Array) -> Array:
    if self.symmetric:
      s, a = second_order_stack(z, mask, self.features, self.layers, self.activation)
      return equivariant.EquivariantLinear2to2Parts(self.out_channels, use_diag_bias=self.diagonal,
                                                    symmetric_output=True,
                                                    name=f"EquivariantLinear2to2_{self.layers}")(s, a, mask)
    h = jax.vmap(outer_product_features)(z, mask)  # [B, N, N, 2d]
    for _ in range(self.layers):
      h = self.activation(equivariant.EquivariantLinear2to2(self.features)(h, mask))
    return equivariant.EquivariantLinear2to2(self.out_channels, use_diag_bias=self.diagonal)(h, mask)


class GraphDecoder(nn.Module):
  """The finest level's decoder: latents [B, N, d] -> dict(edge [B,N,N], edge_type [B,N,N,E], node [B,N,T]) logits.

  second_order: outer-product features -> 2->2 layers -> a 2->2 pair head and a 2->1 node head (equivariant).
  mlp: Table 1's baseline, the flattened latents through two sigmoid layers of 512 (not equivariant).
  dot: z_i . z_j edges; edge types from a Dense on z_i * z_j, node types from a Dense on z_i.
  """
  kind: str
  num_nodes: int
  node_classes: int
  edge_classes: int
  features: int = 32
  layers: int = 3
  mlp_hidden: tuple[int, ...] = (512, 512)
  pair_input: str = "product"
  rank_distances: int = 16  # rank_pair_features' channels when positions are given
  rank_pointers: int = 0  # rank_pointer_pairs' channels (offsets +-rank_distances) when positions are given; 0: none

  @nn.compact
  def __call__(self, z: Array, mask: Array, positions: Array | None = None) -> dict[str, Array]:
    """`positions` [B, N, R]: one-hot node ranks (zero rows for unranked slots) the second-order decoder reads beside
    the latents, as node channels, as rank distances of pairs (`rank_pair_features`) and, with rank_pointers, as each
    latent's scores read at the pair's offset (`rank_pointer_pairs`)."""
    b, n, _ = z.shape
    t, e = self.node_classes, self.edge_classes
    pm = (mask[:, :, None] & mask[:, None, :]).astype(z.dtype)
    if positions is not None and self.kind != "second_order":
      raise ValueError(f"decoder positions are read by the second_order decoder only, not {self.kind!r}")
    if self.kind == "second_order":
      extra = None
      if positions is not None:
        extra = rank_pair_features(positions, mask, self.rank_distances)
        if self.rank_pointers:
          k = self.rank_distances
          scores = nn.Dense((2 * k + 1) * self.rank_pointers, name="pointer_scores")(z).reshape(
              b, n, 2 * k + 1, self.rank_pointers)
          extra = jnp.concatenate([extra, rank_pointer_pairs(scores, positions, mask)], -1)
        z = jnp.concatenate([z, positions.astype(z.dtype)], -1)  # [B, N, d + R]
      # General 2->2 layers on (symmetric, antisymmetric) parts; the pair head needs only the symmetric part.
      hs, ha = second_order_stack(z, mask, self.features, self.layers, nn.relu, self.pair_input,
                                  extra)  # 2 x [B, N, N, F]
      pairs = equivariant.EquivariantLinear2to2Parts(1 + e, use_diag_bias=False, symmetric_output=True,
                                                     name="pair_head")(hs, ha, mask)
      node = equivariant.EquivariantLinear2to1Parts(t, name="node_head")(hs, ha, mask)  # [B, N, T]
    elif self.kind == "mlp":
      if n != self.num_nodes:
        raise ValueError(f"the MLP decoder is built for {self.num_nodes} nodes, got {n}")
      h = (z * mask[..., None]).reshape(b, -1)
      for width in self.mlp_hidden:
        h = nn.sigmoid(nn.Dense(width)(h))
      pairs = nn.Dense(n * n * (1 + e), name="pair_head")(h).reshape(b, n, n, 1 + e)
      node = nn.Dense(n * t, name="node_head")(h).reshape(b, n, t)
    else:
      prod = pair_products(z, mask)  # [B, N, N, d]
      pairs = jnp.concatenate([prod.sum(-1, keepdims=True), nn.Dense(e, name="pair_head")(prod)], -1)
      node = nn.Dense(t, name="node_head")(z)
    pairs = 0.5 * (pairs + jnp.swapaxes(pairs, 1, 2)) * pm[..., None]  # undirected
    return {"edge": pairs[..., 0], "edge_type": pairs[..., 1:], "node": node * mask[..., None]}
