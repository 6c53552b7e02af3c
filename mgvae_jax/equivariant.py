"""S_n-equivariant operations on graphs (paper sections 3.2-3.3).

Every function here acts on ONE graph padded to N slots; batch with `jax.vmap` (the linen modules at the bottom do).
Conventions for one graph:

  first order   x [N, C]       (node features / latents)
  second order  x [N, N, C]    (edge features, messages)
  adjacency     a [N, N]
  mask          m [N] bool     (True on real nodes; real nodes may sit in any slots)

Each function zeroes its inputs outside the mask before it contracts, so whatever sits in padded slots never reaches a
real output, and it zeroes its output there, so padded outputs are exactly 0. With `normalize=True` (the default) a
sum over one node index is divided by the real node count n (and a sum over two by n^2), never by the padded N: the
same graph padded to any N gives the same outputs.

The bases are the complete bases of linear equivariant maps (Maron et al., ICLR 2019): Bell(4) = 15 maps 2->2,
Bell(3) = 5 maps 2->1 and 1->2, Bell(2) = 2 maps 1->1. Their order is fixed and documented in each `basis_*`.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jnp.ndarray

# ---------------------------------------------------------------------------------------------------------------------
# Masking helpers.


def pair_mask(mask: Array) -> Array:
  """[N] -> [N, N]: True where both endpoints are real."""
  return mask[:, None] & mask[None, :]


def num_real(mask: Array, dtype=jnp.float32) -> Array:
  """Real node count as a float, at least 1 (an empty graph divides by 1 and stays all zero)."""
  return jnp.maximum(mask.sum(), 1).astype(dtype)


# Selects, not products with the mask: 0 even where a padded slot holds inf or NaN, and a mask XLA knows to be all
# true (sampling decodes every slot) costs nothing instead of a materialised tensor of ones.
def mask_first(x: Array, mask: Array) -> Array:
  return jnp.where(mask[:, None], x, jnp.zeros((), x.dtype))  # [N, C]


def mask_second(x: Array, mask: Array) -> Array:
  return jnp.where(pair_mask(mask)[:, :, None], x, jnp.zeros((), x.dtype))  # [N, N, C]


def _norms(mask: Array, dtype, normalize: bool):
  """1/n and 1/n^2 (or 1, 1 without normalisation)."""
  if not normalize:
    one = jnp.ones((), dtype)
    return one, one
  n = num_real(mask, dtype)
  return 1.0 / n, 1.0 / (n * n)


def diagonal(x: Array) -> Array:
  """x_ii of x [N, N, C] -> [N, C]: a strided slice of the flattened pairs. (jnp.diagonal moves the channel axis
  first, which XLA's CPU backend does as a full transpose of x, forward and backward.)"""
  n = x.shape[0]
  return x.reshape((n * n,) + x.shape[2:])[:: n + 1]


def _reductions_2(x: Array, mask: Array, normalize: bool):
  """The invariant-size pieces of a masked second-order tensor x [N, N, C]."""
  inv_n, inv_n2 = _norms(mask, x.dtype, normalize)
  diag = diagonal(x)  # [N, C]
  row = x.sum(1) * inv_n  # [N, C]   sum_k x_ik
  col = x.sum(0) * inv_n  # [N, C]   sum_k x_ki
  trace = diag.sum(0) * inv_n  # [C]
  total = x.sum((0, 1)) * inv_n2  # [C]
  return diag, row, col, trace, total


def _diag_embed(v: Array) -> Array:
  """[N, C] -> [N, N, C] with v on the diagonal."""
  n = v.shape[0]
  return jnp.eye(n, dtype=v.dtype)[:, :, None] * v[:, None, :]


# ---------------------------------------------------------------------------------------------------------------------
# Promotion and the paper's contractions.


def promote_to_second_order(nodes: Array, edges: Array, mask: Array) -> Array:
  """H_0 of Example 3.10: node features as self-loop edge features, concatenated with the edge features.

  nodes [N, F], edges [N, N, E] -> [N, N, F + E].
  """
  return mask_second(jnp.concatenate([_diag_embed(nodes), edges], axis=-1), mask)


def tensor_product_contractions(a: Array, h: Array, mask: Array, normalize: bool = True) -> Array:
  """All contractions of the fourth-order A (x) H along one pair of indices, concatenated on channels.

  With T_{i1 i2 i3 i4 c} = A_{i1 i2} H_{i3 i4 c} the six pairs give (each a sum over one index j, divided by n):
    {1,2}: tr(A) H_{ik}           {3,4}: A_{ik} tr(H)
    {1,3}: sum_j A_{ji} H_{jk}    {1,4}: sum_j A_{ji} H_{kj}
    {2,3}: sum_j A_{ij} H_{jk}    {2,4}: sum_j A_{ij} H_{kj}
  a [N, N], h [N, N, C] -> [N, N, 6 C] in that order.
  """
  pm = pair_mask(mask).astype(h.dtype)
  a = a.astype(h.dtype) * pm  # [N, N]
  h = h * pm[:, :, None]  # [N, N, C]
  inv_n, _ = _norms(mask, h.dtype, normalize)
  c12 = jnp.trace(a) * h  # [N, N, C]
  c34 = a[:, :, None] * jnp.trace(h)[None, None, :]  # [N, N, C]
  c13 = jnp.einsum("ji,jkc->ikc", a, h)
  c14 = jnp.einsum("ji,kjc->ikc", a, h)
  c23 = jnp.einsum("ij,jkc->ikc", a, h)
  c24 = jnp.einsum("ij,kjc->ikc", a, h)
  out = jnp.concatenate([c12, c34, c13, c14, c23, c24], axis=-1) * inv_n  # [N, N, 6C]
  return out * pm[:, :, None]


def contract_linear(a: Array, h: Array, mask: Array, kernel: Array, normalize: bool = True) -> Array:
  """tensor_product_contractions(a, h, mask) @ kernel without materialising the [N, N, 6C] contractions.

  A linear map on channels commutes with contractions over node indices. With W_0..W_5 the [C, D] row blocks of
  kernel [6C, D] (one per pair, in tensor_product_contractions' order) and n the real node count:
    n * out = tr(A) H W_0 + A (x) (tr(H) W_1) + A^T (H W_2 + H^T W_3) + A (H W_4 + H^T W_5),
  since the {1,4} and {2,4} contractions of H are the {1,3} and {2,3} contractions of H^T. The four weight products
  are one GEMM [H | H^T] @ [[W_2, W_4], [W_3, W_5]], the W_1 term acts on the [C] trace only: 5CD multiply-adds per
  node pair instead of 6CD, and no [N, N, 6C] intermediate. a [N, N], h [N, N, C] -> [N, N, D].
  """
  c, d = h.shape[-1], kernel.shape[-1]
  pm = pair_mask(mask).astype(h.dtype)
  a = a.astype(h.dtype) * pm  # [N, N]
  h = h * pm[:, :, None]  # [N, N, C]
  inv_n, _ = _norms(mask, h.dtype, normalize)
  w = kernel.reshape(6, c, d)  # [6, C, D]
  both = jnp.concatenate([h, jnp.swapaxes(h, 0, 1)], axis=-1)  # [N, N, 2C]
  w_pairs = jnp.concatenate([jnp.concatenate([w[2], w[4]], 1), jnp.concatenate([w[3], w[5]], 1)], 0)  # [2C, 2D]
  g = both @ w_pairs  # [N, N, 2D]
  out = jnp.einsum("ji,jkd->ikd", a, g[..., :d]) + jnp.einsum("ij,jkd->ikd", a, g[..., d:])
  out = out + jnp.trace(a) * (h @ w[0]) + a[:, :, None] * (jnp.trace(h) @ w[1])[None, None, :]
  return out * (pm * inv_n)[:, :, None]


def contract_to_first_order(h: Array, mask: Array, normalize: bool = True) -> Array:
  """Z = (+)_i H|_i of Example 3.10: the contraction of a second-order tensor along each of its two node indices.

  h [N, N, C] -> [N, 2 C] = [sum_j h_ij, sum_j h_ji] / n.
  """
  h = mask_second(h, mask)
  inv_n, _ = _norms(mask, h.dtype, normalize)
  return mask_first(jnp.concatenate([h.sum(1), h.sum(0)], axis=-1) * inv_n, mask)


def mean_aggregate(a: Array, h: Array, mask: Array) -> Array:
  """D^-1 A H of Example 3.9; nodes without neighbours get 0.  a [N, N], h [N, C] -> [N, C]."""
  a = a.astype(h.dtype) * pair_mask(mask).astype(h.dtype)
  h = mask_first(h, mask)
  deg = a.sum(1)  # [N]
  inv = jnp.where(deg > 0, 1.0 / jnp.where(deg > 0, deg, 1.0), 0.0)
  return mask_first(jnp.einsum("ij,jc->ic", a, h) * inv[:, None], mask)


# ---------------------------------------------------------------------------------------------------------------------
# Complete bases of linear equivariant maps (reference form: the basis tensors themselves).


def basis_2to2(x: Array, mask: Array, normalize: bool = True) -> Array:
  """The 15 linear equivariant maps [N, N, C] -> [N, N, C], stacked: [N, N, 15, C].

  With row_i = sum_k x_ik, col_i = sum_k x_ki, tr = sum_k x_kk, tot = sum_kl x_kl (sums over real nodes; divided by
  n per summed index when normalize) and d = delta_ij:
    0 x_ij     1 x_ji     2 d x_ii   3 d tr     4 d row_i  5 d col_i  6 d tot
    7 x_ii     8 x_jj     9 row_i   10 row_j   11 col_i   12 col_j   13 tr     14 tot
  """
  x = mask_second(x, mask)
  diag, row, col, trace, total = _reductions_2(x, mask, normalize)
  n = x.shape[0]
  full = lambda v: jnp.broadcast_to(v, (n, n) + v.shape[-1:])
  rows = lambda v: full(v[:, None, :])  # depends on i
  cols = lambda v: full(v[None, :, :])  # depends on j
  ops = [
      x, jnp.swapaxes(x, 0, 1),
      _diag_embed(diag), _diag_embed(full(trace)[0]), _diag_embed(row), _diag_embed(col), _diag_embed(full(total)[0]),
      rows(diag), cols(diag), rows(row), cols(row), rows(col), cols(col), full(trace), full(total),
  ]
  return jnp.stack(ops, axis=2) * pair_mask(mask)[:, :, None, None].astype(x.dtype)


def basis_2to1(x: Array, mask: Array, normalize: bool = True) -> Array:
  """The 5 linear equivariant maps [N, N, C] -> [N, C]: 0 x_ii, 1 row_i, 2 col_i, 3 tr, 4 tot.  -> [N, 5, C]."""
  x = mask_second(x, mask)
  diag, row, col, trace, total = _reductions_2(x, mask, normalize)
  b = lambda v: jnp.broadcast_to(v, diag.shape)
  return jnp.stack([diag, row, col, b(trace), b(total)], axis=1) * mask[:, None, None].astype(x.dtype)


def basis_1to2(x: Array, mask: Array, normalize: bool = True) -> Array:
  """The 5 linear equivariant maps [N, C] -> [N, N, C]: 0 d x_i, 1 x_i, 2 x_j, 3 d sum, 4 sum.  -> [N, N, 5, C]."""
  x = mask_first(x, mask)
  inv_n, _ = _norms(mask, x.dtype, normalize)
  s = x.sum(0) * inv_n  # [C]
  n = x.shape[0]
  full = lambda v: jnp.broadcast_to(v, (n, n, x.shape[-1]))
  ops = [_diag_embed(x), full(x[:, None]), full(x[None, :]), _diag_embed(jnp.broadcast_to(s, x.shape)), full(s)]
  return jnp.stack(ops, axis=2) * pair_mask(mask)[:, :, None, None].astype(x.dtype)


def basis_1to1(x: Array, mask: Array, normalize: bool = True) -> Array:
  """The 2 linear equivariant maps [N, C] -> [N, C]: 0 x_i, 1 sum.  -> [N, 2, C]."""
  x = mask_first(x, mask)
  inv_n, _ = _norms(mask, x.dtype, normalize)
  s = jnp.broadcast_to(x.sum(0) * inv_n, x.shape)
  return jnp.stack([x, s], axis=1) * mask[:, None, None].astype(x.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Linear equivariant layers as pure functions: sum_k basis_k(x) @ w[k] (+ biases), computed without materialising the
# basis where that would cost N^2 x ops x C memory.


def linear_2to2(x: Array, mask: Array, w: Array, bias: Array, diag_bias: Array, normalize: bool = True) -> Array:
  """x [N, N, C], w [15, C, D], bias/diag_bias [D] -> [N, N, D]. Equals einsum(basis_2to2(x), w) + biases."""
  x = mask_second(x, mask)
  diag, row, col, trace, total = _reductions_2(x, mask, normalize)
  mm = lambda v, k: v @ w[k]
  y = jnp.einsum("ijc,cd->ijd", x, w[0]) + jnp.einsum("jic,cd->ijd", x, w[1])  # [N, N, D]
  on_diag = mm(diag, 2) + mm(trace, 3) + mm(row, 4) + mm(col, 5) + mm(total, 6) + diag_bias  # [N, D]
  by_row = mm(diag, 7) + mm(row, 9) + mm(col, 11)  # [N, D]
  by_col = mm(diag, 8) + mm(row, 10) + mm(col, 12)  # [N, D]
  const = mm(trace, 13) + mm(total, 14) + bias  # [D]
  y = y + _diag_embed(on_diag) + by_row[:, None, :] + by_col[None, :, :] + const
  return mask_second(y, mask)


def _reductions_parts(s: Array, a: Array | None, mask: Array, normalize: bool, u: Array | None = None):
  """`_reductions_2` of x = s + a from its parts, using diag(a) = 0, col(a) = -row(a), tr(a) = tot(a) = 0.

  With node channels u [N, Cu], x also has Cu channels x_ij = delta_ij u_i after s's C (a diagonal tensor, never
  built): their reductions are u itself (diag), u / n (row and column), sum u / n (trace) and sum u / n^2 (total).
  Returns the masked (s, a) and (diag, row, col, trace, total) of x, each with C + Cu channels.
  """
  s = mask_second(s, mask)
  inv_n, _ = _norms(mask, s.dtype, normalize)
  diag = diagonal(s)  # [N, C]
  row_s = s.sum(1) * inv_n  # [N, C]  = col_s
  trace = diag.sum(0) * inv_n  # [C]
  total = row_s.sum(0) * inv_n  # [C]
  if a is None:
    row_a = jnp.zeros_like(row_s)
  else:
    a = mask_second(a, mask)
    row_a = a.sum(1) * inv_n  # [N, C]  = -col_a
  row, col = row_s + row_a, row_s - row_a
  if u is not None:
    u = mask_first(u, mask)  # [N, Cu]
    u_trace = u.sum(0) * inv_n  # [Cu]
    cat = lambda x, y: jnp.concatenate([x, y], -1)
    diag, row, col = cat(diag, u), cat(row, u * inv_n), cat(col, u * inv_n)
    trace, total = cat(trace, u_trace), cat(total, u_trace * inv_n)
  return s, a, (diag, row, col, trace, total)


@jax.custom_vjp
def channel_mix(x: Array, w: Array) -> Array:
  """x [..., C] @ w [C, D] -> [..., D]: a per-entry channel map, with a backward pass that XLA's CPU backend runs well.

  The kernel gradient contracts x and the incoming gradient g over every entry. Left to itself, XLA fuses the
  computation of g (the activation's derivative, the parts' sums) into the transpose that this contraction needs
  and then computes it in transposed order, several times slower than the GEMMs; an optimisation barrier makes it
  materialise g first.
  """
  return x @ w


def _channel_mix_fwd(x, w):
  return x @ w, (x, w)


def _channel_mix_bwd(res, g):
  x, w = res
  g = jax.lax.optimization_barrier(g)
  gw = jnp.einsum("...c,...d->cd", x, g)
  return g @ w.T, gw.astype(w.dtype)


channel_mix.defvjp(_channel_mix_fwd, _channel_mix_bwd)


def linear_2to2_parts(s: Array, a: Array | None, mask: Array, w: Array, bias: Array, diag_bias: Array,
                      normalize: bool = True, u: Array | None = None) -> tuple[Array, Array]:
  """`linear_2to2` on x = s + a given as its symmetric part s and antisymmetric part a, returned the same way.

  Undirected decoders start from a symmetric tensor, but their hidden layers are not symmetric (a row term u_i is not
  a column term u_j). Carrying (s, a) instead of x makes every transpose a sign flip, x^T = s - a, and XLA's CPU
  transpose of [N, N, C] costs more than the GEMMs themselves. With p, q the [N, D] row- and column-broadcast terms:
    y_s = s (W_0 + W_1) + d(diagonal terms) + (p + q)_i / 2 + (p + q)_j / 2 + const
    y_a = a (W_0 - W_1) + (p - q)_i / 2 - (p - q)_j / 2
  using diag(a) = 0, row(a) = -col(a), tr(a) = tot(a) = 0. Exactly `linear_2to2` (same weights [15, C, D]): y_s + y_a.

  u [N, Cu] (optional): node channels that x carries on its diagonal (x_ij = delta_ij u_i, after s's C channels; w is
  then [15, C + Cu, D]). Equal to passing them diagonal-embedded in s, at first-order cost: their pair ops 0 and 1
  act on the diagonal only, and every other op sees them through the [N]-sized reductions.
  s [N, N, C] symmetric, a [N, N, C] antisymmetric or None (zero) -> (y_s, y_a) [N, N, D].
  """
  c = s.shape[-1]
  s, a, reductions = _reductions_parts(s, a, mask, normalize, u)
  on_diag, p, q, const = _broadcast_terms(reductions, w, bias, diag_bias, c, u is not None)
  plus, minus = 0.5 * (p + q), 0.5 * (p - q)
  y_s = channel_mix(s, w[0, :c] + w[1, :c]) + (plus[:, None, :] + plus[None, :, :])
  y_s = mask_second(y_s + _diag_embed(on_diag) + const, mask)
  y_a = minus[:, None, :] - minus[None, :, :]
  if a is not None:
    y_a = y_a + channel_mix(a, w[0, :c] - w[1, :c])
  return y_s, mask_second(y_a, mask)


def _broadcast_terms(reductions, w: Array, bias: Array, diag_bias: Array, c: int, node_channels: bool):
  """The [N]- and []-sized terms of the 2->2 map from x's reductions (ops 2-14), in two GEMMs instead of thirteen.

  Returns on_diag [N, D] (ops 2-6, diag_bias, and ops 0-1 of node channels past c), p [N, D] (ops 7, 9, 11: broadcast
  along rows, depends on i), q [N, D] (ops 8, 10, 12: broadcast along columns, depends on j), const [D] (13, 14, bias).
  """
  diag, row, col, trace, total = reductions
  d = w.shape[-1]
  cat = jnp.concatenate
  nodes = cat([diag, row, col], -1)  # [N, 3C]
  w_nodes = cat([cat([w[2], w[7], w[8]], 1), cat([w[4], w[9], w[10]], 1), cat([w[5], w[11], w[12]], 1)], 0)
  per_node = nodes @ w_nodes  # [N, 3D]: on_diag | p | q
  w_glob = cat([cat([w[3], w[13]], 1), cat([w[6], w[14]], 1)], 0)  # [2C, 2D]
  glob = cat([trace, total]) @ w_glob  # [2D]: on_diag | const
  on_diag = per_node[:, :d] + glob[:d] + diag_bias
  if node_channels:
    on_diag = on_diag + diag[:, c:] @ (w[0, c:] + w[1, c:])  # ops 0 and 1 of the diagonal channels
  return on_diag, per_node[:, d:2 * d], per_node[:, 2 * d:], glob[d:] + bias


def linear_2to2_activation_parts(fn: Callable[[Array], Array], s: Array, a: Array | None, mask: Array, w: Array,
                                 bias: Array, diag_bias: Array, normalize: bool = True,
                                 u: Array | None = None) -> tuple[Array, Array]:
  """`activation_parts(fn, *linear_2to2_parts(s, a, mask, w, ...))` in one pass over the pairs (same result).

  With y = y_s + y_a, the activation needs y and y^T = y_s - y_a. Their broadcast terms simplify:
    y_ij   = G_s + G_a + p_i + q_j + delta_ij on_diag_i + const
    y^T_ij = G_s - G_a + q_i + p_j + delta_ij on_diag_i + const
  (G_s = s (W_0 + W_1), G_a = a (W_0 - W_1)), so no half-sums and differences of p and q are formed per pair. The
  [N, D] terms are materialised first: fused into the [N, N, D] loop, XLA's CPU backend recomputes their sums for
  every pair, and that loop, not the GEMMs, then dominates the decoder's time (measured: README, Benchmarks, "The
  main job's throughput").
  """
  c = s.shape[-1]
  s, a, reductions = _reductions_parts(s, a, mask, normalize, u)
  on_diag, p, q, const = _broadcast_terms(reductions, w, bias, diag_bias, c, u is not None)
  on_diag, p, q = jax.lax.optimization_barrier((on_diag, p + const, q))
  g = channel_mix(s, w[0, :c] + w[1, :c])  # [N, N, D]
  x = xt = g
  if a is not None:
    h = channel_mix(a, w[0, :c] - w[1, :c])  # [N, N, D]
    x, xt = g + h, g - h
  on = _diag_embed(on_diag)  # [N, N, D]
  up = fn(mask_second(x + p[:, None, :] + q[None, :, :] + on, mask))
  down = fn(mask_second(xt + q[:, None, :] + p[None, :, :] + on, mask))
  return 0.5 * (up + down), 0.5 * (up - down)


def activation_parts(fn: Callable[[Array], Array], s: Array, a: Array) -> tuple[Array, Array]:
  """fn applied entrywise to x = s + a, as parts: x^T = s - a, so fn(x)^T = fn(s - a). No transpose."""
  up, down = fn(s + a), fn(s - a)
  return 0.5 * (up + down), 0.5 * (up - down)


def linear_2to1_parts(s: Array, a: Array | None, mask: Array, w: Array, bias: Array,
                      normalize: bool = True) -> Array:
  """`linear_2to1` on x = s + a (see linear_2to2_parts).  s, a [N, N, C], w [5, C, D], bias [D] -> [N, D]."""
  _, _, (diag, row, col, trace, total) = _reductions_parts(s, a, mask, normalize)
  y = diag @ w[0] + row @ w[1] + col @ w[2] + trace @ w[3] + total @ w[4] + bias
  return mask_first(y, mask)


def linear_2to1(x: Array, mask: Array, w: Array, bias: Array, normalize: bool = True) -> Array:
  """x [N, N, C], w [5, C, D], bias [D] -> [N, D]."""
  return mask_first(jnp.einsum("nkc,kcd->nd", basis_2to1(x, mask, normalize), w) + bias, mask)


def linear_1to2(x: Array, mask: Array, w: Array, bias: Array, diag_bias: Array, normalize: bool = True) -> Array:
  """x [N, C], w [5, C, D], bias/diag_bias [D] -> [N, N, D]. Equals einsum(basis_1to2(x), w) + biases."""
  x = mask_first(x, mask)
  inv_n, _ = _norms(mask, x.dtype, normalize)
  s = x.sum(0) * inv_n  # [C]
  on_diag = x @ w[0] + s @ w[3] + diag_bias  # [N, D]
  y = (x @ w[1])[:, None, :] + (x @ w[2])[None, :, :] + (s @ w[4] + bias)  # [N, N, D]
  return mask_second(y + _diag_embed(on_diag), mask)


def linear_1to1(x: Array, mask: Array, w: Array, bias: Array, normalize: bool = True) -> Array:
  """x [N, C], w [2, C, D], bias [D] -> [N, D]."""
  return mask_first(jnp.einsum("nkc,kcd->nd", basis_1to1(x, mask, normalize), w) + bias, mask)


# ---------------------------------------------------------------------------------------------------------------------
# Thin linen modules: they own the weights and vmap the per-graph functions over the batch.

_BASIS_SIZE = {"2to2": 15, "2to1": 5, "1to2": 5, "1to1": 2}


def _basis_init(key, shape, dtype=jnp.float32):
  # Fan-in is every basis op times every input channel.
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)(
      key, shape, dtype)


class _EquivariantLinear(nn.Module):
  features: int
  normalize: bool = True
  kind: str = "2to2"
  use_diag_bias: bool = True  # 2to2 / 1to2 only; off where the diagonal is never read (edge-only outputs)
  diag_bias_init: float = 0.0
  kernel_scale: float = 1.0  # multiplies the initial kernel (small for heads that should start near their biases)

  def _params(self, channels: int, dtype):
    """(kernel [ops, C, features], bias, diag_bias) cast to dtype; diag_bias is zeros where unused."""
    init = lambda key, shape, dt=jnp.float32: self.kernel_scale * _basis_init(key, shape, dt)
    w = self.param("kernel", init, (_BASIS_SIZE[self.kind], channels, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    diag_bias = jnp.zeros((self.features,), jnp.float32)
    if self.kind in ("2to2", "1to2") and self.use_diag_bias:
      diag_bias = self.param("diag_bias", nn.initializers.constant(self.diag_bias_init), (self.features,),
                             jnp.float32)
    return w.astype(dtype), bias.astype(dtype), diag_bias.astype(dtype)

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    w, bias, diag_bias = self._params(x.shape[-1], x.dtype)
    if self.kind in ("2to2", "1to2"):
      fn = functools.partial(linear_2to2 if self.kind == "2to2" else linear_1to2, normalize=self.normalize)
      return jax.vmap(fn, in_axes=(0, 0, None, None, None))(x, mask, w, bias, diag_bias)
    fn = functools.partial(linear_2to1 if self.kind == "2to1" else linear_1to1, normalize=self.normalize)
    return jax.vmap(fn, in_axes=(0, 0, None, None))(x, mask, w, bias)


class EquivariantLinear2to2(_EquivariantLinear):
  """[B, N, N, C] -> [B, N, N, features] over the 15-map basis."""
  kind: str = "2to2"


class EquivariantLinear2to1(_EquivariantLinear):
  """[B, N, N, C] -> [B, N, features] over the 5-map basis."""
  kind: str = "2to1"


class EquivariantLinear2to2Parts(_EquivariantLinear):
  """EquivariantLinear2to2 on (symmetric, antisymmetric) parts: (s, a or None, mask[, u]) -> (y_s, y_a), or y_s alone
  with `symmetric_output` (the symmetrised output, all an undirected head needs). Same parameters as
  EquivariantLinear2to2, so the two are interchangeable on a checkpoint. Node channels u [B, N, Cu] (optional) are
  diagonal channels of the input, as in linear_2to2_parts (the kernel is then [15, C + Cu, features]). With
  `activation`, returns gamma of the output as parts (linear_2to2_activation_parts)."""
  kind: str = "2to2"
  symmetric_output: bool = False
  # gamma applied to the output (linear_2to2_activation_parts: one pass, same result as activation_parts after it).
  activation: Callable[[Array], Array] | None = None

  @nn.compact
  def __call__(self, s: Array, a: Array | None, mask: Array, u: Array | None = None):  # pylint: disable=arguments-differ
    w, bias, diag_bias = self._params(s.shape[-1] + (0 if u is None else u.shape[-1]), s.dtype)
    if self.activation is not None and self.symmetric_output:
      raise ValueError("activation and symmetric_output do not combine: the symmetric head is a linear output")
    if self.activation is None:
      fn = lambda s, a, m, w, b, db, u: linear_2to2_parts(s, a, m, w, b, db, self.normalize, u)
    else:
      fn = lambda s, a, m, w, b, db, u: linear_2to2_activation_parts(self.activation, s, a, m, w, b, db,
                                                                     self.normalize, u)
    axes = (0, None if a is None else 0, 0, None, None, None, None if u is None else 0)
    y_s, y_a = jax.vmap(fn, in_axes=axes)(s, a, mask, w, bias, diag_bias, u)
    return y_s if self.symmetric_output else (y_s, y_a)


class EquivariantLinear2to1Parts(_EquivariantLinear):
  """EquivariantLinear2to1 on (symmetric, antisymmetric) parts: (s, a or None, mask) -> [B, N, features]."""
  kind: str = "2to1"

  @nn.compact
  def __call__(self, s: Array, a: Array | None, mask: Array):  # pylint: disable=arguments-differ
    w, bias, _ = self._params(s.shape[-1], s.dtype)
    fn = functools.partial(linear_2to1_parts, normalize=self.normalize)
    return jax.vmap(fn, in_axes=(0, None if a is None else 0, 0, None, None))(s, a, mask, w, bias)


class EquivariantLinear1to2(_EquivariantLinear):
  """[B, N, C] -> [B, N, N, features] over the 5-map basis."""
  kind: str = "1to2"


class EquivariantLinear1to1(_EquivariantLinear):
  """[B, N, C] -> [B, N, features] over the 2-map basis."""
  kind: str = "1to1"


class SecondOrderLayer(nn.Module):
  """One step of Example 3.10: H_t = gamma(MLP[(+)_{pairs} (A (x) H_{t-1})|_pair]) (optionally with H_{t-1} too).

  The MLP acts on channels (hidden widths `hidden`, then `features`); gamma follows its last layer.
  __call__(a [B, N, N], h [B, N, N, C], mask [B, N]) -> [B, N, N, features], exactly 0 off the real pairs.
  """
  features: int
  hidden: Sequence[int] = ()
  activation: Callable[[Array], Array] = nn.relu
  normalize: bool = True
  # Also feed H itself (a per-entry channel map, the identity op of the 2->2 basis) into the first linear layer. The
  # paper's layer has none: without self-loops tr(A) = 0, every term goes through A and is divided by n, so on
  # sparse graphs activations shrink by about deg/n a layer. Stacks (encoders, clustering GNNs) turn it on.
  self_term: bool = False

  @nn.compact
  def __call__(self, a: Array, h: Array, mask: Array) -> Array:
    # The first linear layer of the MLP is fused with the contractions (contract_linear); its kernel has the shape
    # [6C, width] of a Dense on the concatenated contractions, so the two forms are interchangeable.
    widths = tuple(self.hidden) + (self.features,)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (6 * h.shape[-1], widths[0]), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (widths[0],), jnp.float32)
    fn = functools.partial(contract_linear, normalize=self.normalize)
    m = jax.vmap(fn, in_axes=(0, 0, 0, None))(a, h, mask, kernel.astype(h.dtype))  # [B, N, N, widths[0]]
    m = m + bias.astype(h.dtype)
    if self.self_term:
      m = m + nn.Dense(widths[0], use_bias=False, name="self")(h)
    m = self.activation(m)
    for width in widths[1:]:
      m = self.activation(nn.Dense(width)(m))
    return m * (mask[:, :, None] & mask[:, None, :])[..., None].astype(m.dtype)


class FirstOrderMPNN(nn.Module):
  """One step of Example 3.9: H_t = gamma(D^-1 A H_{t-1} W).  (a [B,N,N], h [B,N,C], mask [B,N]) -> [B,N,features]."""
  features: int
  activation: Callable[[Array], Array] = nn.relu

  @nn.compact
  def __call__(self, a: Array, h: Array, mask: Array) -> Array:
    m = jax.vmap(mean_aggregate)(a, nn.Dense(self.features, use_bias=False)(h), mask)  # [B, N, features]
    return self.activation(m) * mask[..., None].astype(m.dtype)
