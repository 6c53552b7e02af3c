"""Gaussian latents of MGVAE (paper section 4, eq. 5 and 11): posteriors, priors, KL, matching.

One graph's latent at a level is d independent Gaussians over its N node slots, one per latent channel:

  mean        mu  [N, d]
  diagonal    sigma [N, d]                   Sigma_c = diag(sigma_c^2)            (eq. 5)
  full (MRF)  factor L [N, N, d]             Sigma_c = L_c L_c^T + eps I          (section 4.3)

The learnable prior of section 4.4 over a level's slots is the LearnablePrior module; prior_kl matches it to a
posterior's nodes.

Masking: only real nodes are random variables. Every function treats padded slots as absent: their covariance rows
are replaced by the identity and their means by 0 on both sides, and every sum (trace, log-determinant, Mahalanobis,
dimension) runs over real nodes only, so padded nodes contribute exactly 0. KLs use Cholesky factors and triangular
solves (no inverse, no NaN-zeroing): a non-finite result is a real error for the caller to report.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import equivariant
from mgvae_jax import linalg

Array = jnp.ndarray

DEFAULT_EPS = 1e-4


def full_covariance(factor: Array, mask: Array, eps: float = DEFAULT_EPS) -> Array:
  """Sigma_c = L_c L_c^T + eps I per channel, on real nodes; identity on padded slots.

  factor [N, N, d] -> [d, N, N] (channel-major, ready for batched linear algebra).
  """
  pm = equivariant.pair_mask(mask)
  l = jnp.where(pm[:, :, None], factor, 0.0).transpose(2, 0, 1)  # [d, N, N]
  sigma = l @ jnp.swapaxes(l, 1, 2)
  return sigma + jnp.diag(jnp.where(mask, eps, 1.0).astype(sigma.dtype))[None]


def diagonal_covariance(sigma: Array, mask: Array) -> Array:
  """diag(sigma^2) per channel; identity on padded slots.  sigma [N, d] -> [d, N, N]."""
  var = jnp.where(mask[:, None], sigma ** 2, 1.0).T  # [d, N]
  return jax.vmap(jnp.diag)(var)


def _masked_chol(cov: Array) -> Array:
  return linalg.cholesky(cov)  # [d, N, N] lower (not jnp.linalg.cholesky: see linalg.py)


def gaussian_kl(mu_q: Array, cov_q: Array, mu_p: Array, cov_p: Array, mask: Array) -> Array:
  """Eq. 11 summed over channels: KL(N(mu_q, Sigma_q) || N(mu_p, Sigma_p)) on the real nodes.

  mu_* [N, d], cov_* [d, N, N] (from full_covariance / diagonal_covariance: identity on padded slots) -> scalar.
    KL_c = 1/2 (tr(Sp^-1 Sq) + (mp - mq)^T Sp^-1 (mp - mq) - n + ln det Sp - ln det Sq)
  with tr, the quadratic form and the log-determinants from Cholesky factors: tr(Sp^-1 Sq) = ||Lp^-1 Lq||_F^2.
  """
  m = mask.astype(mu_q.dtype)
  lq, lp = _masked_chol(cov_q), _masked_chol(cov_p)  # [d, N, N]
  solve = linalg.solve_lower  # batched over channels; not jax.scipy (see linalg.py)
  # Columns of padded slots are identity columns on both sides: keep only real rows and columns in every sum.
  w = solve(lp, lq)  # [d, N, N] = Lp^-1 Lq
  trace = jnp.sum((w ** 2) * (m[None, :, None] * m[None, None, :]), axis=(1, 2))  # [d]
  diff = jnp.where(mask[:, None], mu_p - mu_q, 0.0).T  # [d, N]
  v = solve(lp, diff[..., None])[..., 0]  # [d, N]
  quad = jnp.sum((v ** 2) * m[None], axis=1)  # [d]
  logdet = lambda l: 2.0 * jnp.sum(jnp.log(jnp.diagonal(l, axis1=1, axis2=2)) * m[None], axis=1)  # [d]
  n = m.sum()
  return 0.5 * jnp.sum(trace + quad - n + logdet(lp) - logdet(lq))


def standard_normal_kl_diagonal(mu: Array, sigma: Array, mask: Array) -> Array:
  """KL(N(mu, diag sigma^2) || N(0, I)) over real nodes and all channels, closed form.  mu, sigma [N, d] -> scalar."""
  kl = 0.5 * (sigma ** 2 + mu ** 2 - 1.0) - jnp.log(sigma)
  return jnp.sum(jnp.where(mask[:, None], kl, 0.0))


def sample_full(mu: Array, factor: Array, mask: Array, noise: Array, jitter: Array,
                eps: float = DEFAULT_EPS) -> Array:
  """Reparameterised z = mu + L e + sqrt(eps) e' per channel: covariance exactly L L^T + eps I.

  mu [N, d], factor [N, N, d], noise, jitter [N, d] (standard normal) -> [N, d], 0 on padded slots.
  """
  pm = equivariant.pair_mask(mask)
  l = jnp.where(pm[:, :, None], factor, 0.0)
  z = mu + jnp.einsum("ijc,jc->ic", l, jnp.where(mask[:, None], noise, 0.0)) + jnp.sqrt(eps) * jitter
  return jnp.where(mask[:, None], z, 0.0)


def sample_diagonal(mu: Array, sigma: Array, mask: Array, noise: Array) -> Array:
  """Eq. 5's reparameterisation z = mu + sigma * e.  [N, d] -> [N, d], 0 on padded slots."""
  return jnp.where(mask[:, None], mu + sigma * noise, 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Matching posterior nodes to prior slots (section 4.4, eq. 12).


def free_matching(mu: Array, mu_prior: Array, mask: Array) -> Array:
  """Free matching: each real node i goes to argmin_j ||mu_i - mu_prior_j|| (several nodes may share a j).

  mu [N, d], mu_prior [M, d] -> [N] int32 (0 on padded slots, which nothing reads). Equivariant: permuting the nodes
  permutes the result, so the matched KL is invariant. O(N M d), jit-able.
  """
  d2 = (jnp.sum(mu ** 2, -1)[:, None] - 2.0 * mu @ mu_prior.T + jnp.sum(mu_prior ** 2, -1)[None, :])  # [N, M]
  return jnp.where(mask, jnp.argmin(d2, axis=-1), 0).astype(jnp.int32)


def hungarian_matching(mu: np.ndarray, mu_prior: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Optimal one-to-one matching (scipy's linear_sum_assignment, host side, outside jit) with cost ||mu_i - mu_j||.

  For evaluation and comparison with free matching. [N, d], [M, d], [N] -> [N] int (0 on padded slots).
  """
  from scipy.optimize import linear_sum_assignment  # pylint: disable=g-import-not-at-top

  mu, mu_prior, mask = np.asarray(mu, np.float64), np.asarray(mu_prior, np.float64), np.asarray(mask, bool)
  real = np.flatnonzero(mask)
  if real.size > mu_prior.shape[0]:
    raise ValueError(f"hungarian_matching: {real.size} real nodes but only {mu_prior.shape[0]} prior slots")
  cost = np.linalg.norm(mu[real][:, None, :] - mu_prior[None, :, :], axis=-1)
  rows, cols = linear_sum_assignment(cost)
  out = np.zeros(mu.shape[0], np.int64)
  out[real[rows]] = cols
  return out


def matched_prior(mu_prior: Array, factor_prior: Array, scale_prior: Array, match: Array):
  """The prior seen by the posterior's nodes: rows of mean, covariance factor and diagonal scale gathered by the match.

  mu_prior [M, d], factor_prior [M, M, d], scale_prior [M, d], match [N] -> ([N, d], [N, M, d], [N, d]).
  """
  return mu_prior[match], factor_prior[match], scale_prior[match]


def factor_covariance(factor: Array, mask: Array, eps: float = DEFAULT_EPS, scale: Optional[Array] = None) -> Array:
  """Sigma_c = F_c F_c^T + diag(scale_c^2) + eps I on the real nodes, identity on padded ones -> [d, N, N].

  factor [N, M, d] (any M), scale [N, d] or None.
  """
  f = jnp.where(mask[:, None, None], factor, 0.0).transpose(2, 0, 1)  # [d, N, M]
  sigma = f @ jnp.swapaxes(f, 1, 2)
  diag = jnp.where(mask, eps, 1.0).astype(sigma.dtype)[None, :]  # [1, N]
  if scale is not None:
    diag = diag + jnp.where(mask[:, None], scale ** 2, 0.0).T  # [d, N]
  return sigma + jax.vmap(jnp.diag)(jnp.broadcast_to(diag, sigma.shape[:2]))


def prior_kl(mu_q: Array, cov_q: Array, mu_prior: Optional[Array], factor_prior: Optional[Array],
             scale_prior: Optional[Array], mask: Array, matching: str = "free", eps: float = DEFAULT_EPS) -> Array:
  """KL of one level's posterior [N, d] / [d, N, N] against its prior, after matching.

  mu_prior None: the standard N(0, I) prior (permutation invariant: no matching). Otherwise the learnable prior over
  M slots, N(mu_hat, Sigma_hat) with Sigma_hat = L_hat L_hat^T + diag(s_hat^2) + eps I, matched to the real nodes by
  `matching`: "free" (each node to its nearest prior mean) or "none" (node i to slot i; needs M == N).

  The diagonal part is gathered per node, not per slot: free matching is not one-to-one, and two nodes sharing a
  slot would otherwise get identical covariance rows (a singular prior up to eps, with a KL of order 1/eps). With it,
  they stay correlated through L_hat but never perfectly; when the matching is a permutation P the matched prior is
  exactly N(P mu_hat, P Sigma_hat P^T).
  """
  if mu_prior is None:
    cov_p = jnp.broadcast_to(jnp.eye(mu_q.shape[0], dtype=mu_q.dtype), cov_q.shape)
    return gaussian_kl(mu_q, cov_q, jnp.zeros_like(mu_q), cov_p, mask)
  if matching == "free":
    match = free_matching(mu_q, mu_prior, mask)
  elif matching == "none":
    if mu_prior.shape[0] != mu_q.shape[0]:
      raise ValueError(f"matching='none' needs as many prior slots ({mu_prior.shape[0]}) as nodes ({mu_q.shape[0]})")
    match = jnp.arange(mu_q.shape[0])
  else:
    raise ValueError(f"matching must be 'free' or 'none' inside the loss, got {matching!r}")
  mu_p, f_p, s_p = matched_prior(mu_prior, factor_prior, scale_prior, match)
  return gaussian_kl(mu_q, cov_q, mu_p, factor_covariance(f_p, mask, eps, s_p), mask)


class LearnablePrior(nn.Module):
  """N(mu_hat, L_hat L_hat^T + diag(s_hat^2) + eps I) over `slots` node slots and `latent_dim` channels.

  The means start spread (standard normal) so free matching starts near one-to-one; s_hat starts at 1, so the prior
  starts close to N(mu_hat, I). See prior_kl for why the diagonal part is there.
  """
  slots: int
  latent_dim: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array, Array]:
    mu = self.param("mean", nn.initializers.normal(1.0), (self.slots, self.latent_dim))
    factor = self.param("factor", nn.initializers.normal(0.1 / np.sqrt(self.slots)),
                        (self.slots, self.slots, self.latent_dim))
    raw = self.param("scale", nn.initializers.constant(np.log(np.expm1(1.0))), (self.slots, self.latent_dim))
    return mu, factor, jax.nn.softplus(raw)
