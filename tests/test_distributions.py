"""Gaussian KL (eq. 11), reparameterisation, free and Hungarian matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import distributions as dist
from mgvae_jax import testing

jax.config.update("jax_enable_x64", False)


def _spd(rng, n, d):
  f = rng.normal(size=(n, n, d)) * 0.5
  return f


def _np_kl(mu_q, s_q, mu_p, s_p):
  """Float64 closed form of eq. 11 for one channel."""
  n = mu_q.shape[0]
  inv = np.linalg.inv(s_p)
  diff = mu_p - mu_q
  return 0.5 * (np.trace(inv @ s_q) + diff @ inv @ diff - n + np.linalg.slogdet(s_p)[1] - np.linalg.slogdet(s_q)[1])


def _case(seed, n=5, pad=3, d=2):
  rng = np.random.default_rng(seed)
  big = n + pad
  mask = np.zeros(big, bool)
  mask[rng.permutation(big)[:n]] = True
  arr = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return rng, mask, arr(big, d), arr(big, big, d) * 0.5, arr(big, d), arr(big, big, d) * 0.5


@pytest.mark.parametrize("seed", range(3))
def test_full_kl_matches_float64_closed_form(seed):
  rng, mask, mu_q, f_q, mu_p, f_p = _case(seed)
  cov_q = dist.full_covariance(f_q, jnp.asarray(mask))
  cov_p = dist.full_covariance(f_p, jnp.asarray(mask))
  got = float(dist.gaussian_kl(mu_q, cov_q, mu_p, cov_p, jnp.asarray(mask)))
  real = np.flatnonzero(mask)
  want = 0.0
  for c in range(mu_q.shape[1]):
    lq = np.asarray(f_q, np.float64)[np.ix_(real, real)][..., c]
    lp = np.asarray(f_p, np.float64)[np.ix_(real, real)][..., c]
    want += _np_kl(np.asarray(mu_q, np.float64)[real, c], lq @ lq.T + 1e-4 * np.eye(len(real)),
                   np.asarray(mu_p, np.float64)[real, c], lp @ lp.T + 1e-4 * np.eye(len(real)))
  assert got == pytest.approx(want, rel=2e-3)


def test_kl_matches_monte_carlo():
  rng = np.random.default_rng(0)
  n, d = 4, 1
  mask = jnp.ones(n, bool)
  mu_q, mu_p = (jnp.asarray(rng.normal(size=(n, d)), jnp.float32) for _ in range(2))
  f_q = jnp.asarray(rng.normal(size=(n, n, d)) * 0.4 + np.eye(n)[..., None], jnp.float32)
  f_p = jnp.asarray(rng.normal(size=(n, n, d)) * 0.4 + np.eye(n)[..., None], jnp.float32)
  cov_q, cov_p = dist.full_covariance(f_q, mask), dist.full_covariance(f_p, mask)
  exact = float(dist.gaussian_kl(mu_q, cov_q, mu_p, cov_p, mask))
  # E_q[log q(z) - log p(z)] with 200k samples, in float64 numpy.
  sq, sp = np.asarray(cov_q[0], np.float64), np.asarray(cov_p[0], np.float64)
  z = rng.multivariate_normal(np.asarray(mu_q[:, 0], np.float64), sq, size=200_000)

  def logpdf(x, m, s):
    diff = x - m
    return -0.5 * (np.einsum("bi,ij,bj->b", diff, np.linalg.inv(s), diff) + np.linalg.slogdet(s)[1]
                   + len(m) * np.log(2 * np.pi))

  mc = np.mean(logpdf(z, np.asarray(mu_q[:, 0]), sq) - logpdf(z, np.asarray(mu_p[:, 0]), sp))
  assert exact == pytest.approx(mc, abs=0.03, rel=0.02)


def test_kl_zero_for_identical_distributions():
  _, mask, mu, f, _, _ = _case(4)
  cov = dist.full_covariance(f, jnp.asarray(mask))
  assert abs(float(dist.gaussian_kl(mu, cov, mu, cov, jnp.asarray(mask)))) < 1e-3
  sigma = jnp.abs(mu) + 0.5
  dcov = dist.diagonal_covariance(sigma, jnp.asarray(mask))
  assert abs(float(dist.gaussian_kl(mu, dcov, mu, dcov, jnp.asarray(mask)))) < 1e-4
  zero = dist.standard_normal_kl_diagonal(jnp.zeros_like(mu), jnp.ones_like(mu), jnp.asarray(mask))
  assert float(zero) == 0.0


def test_diagonal_closed_form_equals_general_kl():
  _, mask, mu, _, _, _ = _case(5)
  sigma = jnp.abs(mu) + 0.3
  m = jnp.asarray(mask)
  general = dist.prior_kl(mu, dist.diagonal_covariance(sigma, m), None, None, None, m)
  closed = dist.standard_normal_kl_diagonal(mu, sigma, m)
  assert float(general) == pytest.approx(float(closed), rel=1e-4)


def test_padded_nodes_contribute_exactly_zero():
  """The same real block in 5 slots and in 9 slots (garbage elsewhere) gives the same KL."""
  rng = np.random.default_rng(6)
  n, d = 5, 3
  mu_q, mu_p = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  f_q, f_p = rng.normal(size=(n, n, d)) * 0.5, rng.normal(size=(n, n, d)) * 0.5

  def embed(x, order, slots, big):
    out = rng.normal(size=(big,) * order + x.shape[order:]) * 100.0  # garbage
    out[np.ix_(*([slots] * order))] = x
    return jnp.asarray(out, jnp.float32)

  kls = []
  for big, slots in ((5, np.arange(5)), (9, np.array([0, 2, 3, 6, 8]))):
    mask = np.zeros(big, bool)
    mask[slots] = True
    m = jnp.asarray(mask)
    cov_q = dist.full_covariance(embed(f_q, 2, slots, big), m)
    cov_p = dist.full_covariance(embed(f_p, 2, slots, big), m)
    kls.append(float(dist.gaussian_kl(embed(mu_q, 1, slots, big), cov_q, embed(mu_p, 1, slots, big), cov_p, m)))
  assert kls[0] == pytest.approx(kls[1], rel=1e-5)


def test_free_matching_kl_is_permutation_invariant():
  rng, mask, mu_q, f_q, _, _ = _case(7, n=6, pad=2, d=2)
  m = jnp.asarray(mask)
  mu_prior = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
  f_prior = jnp.asarray(rng.normal(size=(8, 8, 2)) * 0.3, jnp.float32)
  s_prior = jnp.asarray(np.abs(rng.normal(size=(8, 2))) + 0.5, jnp.float32)
  kl = lambda mu, f, m: dist.prior_kl(mu, dist.full_covariance(f, m), mu_prior, f_prior, s_prior, m, matching="free")
  base = float(kl(mu_q, f_q, m))
  for seed in range(3):
    perm = jax.random.permutation(jax.random.PRNGKey(seed), 8)
    p = lambda x, o: testing.permute_array(x, perm, o, batched=False)
    assert float(kl(p(mu_q, 1), p(f_q, 2), p(m, 1))) == pytest.approx(base, rel=1e-5)
  # Nodes sharing a prior slot do not make the matched prior singular: the KL stays of the order of the data.
  assert base < 1e3


def test_permutation_matching_gives_permuted_prior():
  """With a one-to-one matching the matched prior is N(P mu_hat, P Sigma_hat P^T): KL(q || p) is unchanged."""
  rng, mask, mu_q, f_q, mu_p, f_p = _case(10, n=6, pad=0, d=2)
  m = jnp.asarray(mask)
  s_p = jnp.asarray(np.abs(rng.normal(size=(6, 2))) + 0.5, jnp.float32)
  cov_q = dist.full_covariance(f_q, m)
  direct = dist.gaussian_kl(mu_q, cov_q, mu_p, dist.factor_covariance(f_p, m, scale=s_p), m)
  perm = jnp.asarray(rng.permutation(6))
  inv = jnp.argsort(perm)
  prior = (mu_p[perm], f_p[perm][:, perm], s_p[perm])  # the same prior, slots relabelled
  mu, f, s = dist.matched_prior(*prior, inv)
  f = f[:, inv]  # columns back in the posterior's order (a rotation of the factor's columns: same covariance)
  matched = dist.gaussian_kl(mu_q, cov_q, mu, dist.factor_covariance(f, m, scale=s), m)
  assert float(matched) == pytest.approx(float(direct), rel=1e-5)


def test_matching_choices():
  mu = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [0.9, 1.1], [5.0, 5.0]])
  prior = jnp.asarray([[1.0, 1.0], [0.0, 0.1], [3.0, 3.0]])
  mask = jnp.asarray([True, True, True, False])
  np.testing.assert_array_equal(dist.free_matching(mu, prior, mask), [1, 0, 0, 0])  # nodes 1, 2 share slot 0
  hung = dist.hungarian_matching(np.asarray(mu), np.asarray(prior), np.asarray(mask))
  assert sorted(hung[:3].tolist()) == [0, 1, 2] and hung[0] == 1  # one-to-one
  with pytest.raises(ValueError, match="only 3 prior slots"):
    dist.hungarian_matching(np.asarray(mu), np.asarray(prior), np.ones(4, bool))
  with pytest.raises(ValueError, match="matching must be"):
    dist.prior_kl(mu, dist.diagonal_covariance(jnp.ones_like(mu), mask), prior, jnp.ones((3, 3, 2)), jnp.ones((3, 2)),
                  mask, "greedy")


def test_reparameterised_samples_have_covariance_sigma():
  rng = np.random.default_rng(8)
  n, d, samples = 4, 2, 100_000
  mask = jnp.asarray([True, True, False, True, True][:n])
  mu = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  f = jnp.asarray(rng.normal(size=(n, n, d)) * 0.6, jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  noise = jax.random.normal(keys[0], (samples, n, d))
  jitter = jax.random.normal(keys[1], (samples, n, d))
  z = np.asarray(jax.vmap(lambda e, j: dist.sample_full(mu, f, mask, e, j))(noise, jitter), np.float64)
  cov = np.asarray(dist.full_covariance(f, mask), np.float64)  # [d, N, N]
  real = np.flatnonzero(np.asarray(mask))
  for c in range(d):
    emp = np.cov(z[:, real, c].T)
    np.testing.assert_allclose(emp, cov[c][np.ix_(real, real)], atol=0.03 * np.abs(cov[c]).max() + 0.01)
    np.testing.assert_allclose(z[:, real, c].mean(0), np.asarray(mu)[real, c], atol=0.03)
  assert np.all(z[:, ~np.asarray(mask)] == 0)


def test_kl_gradients_are_finite():
  _, mask, mu_q, f_q, mu_p, f_p = _case(9)
  m = jnp.asarray(mask)
  s_p = jnp.ones_like(mu_p)
  g = jax.grad(lambda a, b: dist.prior_kl(a, dist.full_covariance(b, m), mu_p, f_p, s_p, m), argnums=(0, 1))(mu_q, f_q)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
  assert np.all(np.asarray(g[0])[~mask] == 0)
