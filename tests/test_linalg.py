"""linalg: values and gradients against LAPACK, and the concurrent-Cholesky program that deadlocks jaxlib's kernel."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgvae_jax import linalg


def _spd(rng, shape, n):
  x = rng.normal(size=shape + (n, n))
  return x @ np.swapaxes(x, -1, -2) + 0.5 * np.eye(n)


def test_cholesky_and_solve_match_numpy():
  rng = np.random.default_rng(0)
  a = _spd(rng, (3, 2), 7)
  b = rng.normal(size=(3, 2, 7, 4))
  lower = np.asarray(jax.jit(linalg.cholesky)(jnp.asarray(a, jnp.float32)))
  np.testing.assert_allclose(lower, np.linalg.cholesky(a), rtol=1e-4, atol=1e-4)
  assert np.all(np.triu(lower, 1) == 0)
  x = np.asarray(jax.jit(linalg.solve_lower)(jnp.asarray(lower), jnp.asarray(b, jnp.float32)))
  np.testing.assert_allclose(lower @ x, b, rtol=1e-4, atol=1e-4)


def test_not_positive_definite_gives_nan_like_lapack():
  assert np.isnan(np.asarray(linalg.cholesky(-jnp.eye(3)))).any()


def test_gradients_match_jax_lapack_rules():
  rng = np.random.default_rng(1)
  a = jnp.asarray(_spd(rng, (2,), 6), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2, 6, 3)), jnp.float32)

  def ours(a, b):
    lower = linalg.cholesky(a)
    return jnp.sum(jnp.sin(linalg.solve_lower(lower, b))) + jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2,
                                                                                        axis2=-1)))

  def reference(a, b):
    lower = jnp.linalg.cholesky(a)
    x = jax.scipy.linalg.solve_triangular(lower, b, lower=True)
    return jnp.sum(jnp.sin(x)) + jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)))

  for arg in (0, 1):
    np.testing.assert_allclose(jax.jit(jax.grad(ours, arg))(a, b), jax.grad(reference, arg)(a, b), rtol=2e-3,
                               atol=2e-4)


def test_many_concurrent_batched_factorisations_finish():
  """Eight independent batched Cholesky + solves in one program: jnp.linalg's LAPACK kernels hang here on 2 cores."""
  program = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from mgvae_jax import linalg
      xs = [jnp.eye(38)[None].repeat(128, 0) * (2.0 + i) for i in range(8)]
      f = jax.jit(lambda xs: [linalg.solve_lower(linalg.cholesky(x), x) for x in xs])
      for _ in range(5):
        jax.block_until_ready(f(xs))
      print("done")
  """)
  try:
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
  except subprocess.TimeoutExpired:
    pytest.fail("concurrent batched factorisations did not finish in 120 s (thread-pool deadlock)")
  assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
