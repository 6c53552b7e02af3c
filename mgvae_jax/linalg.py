"""Batched Cholesky and triangular solve that are safe inside large jitted CPU programs.

Why not `jnp.linalg.cholesky` on CPU: jaxlib's LAPACK kernel for a *batched* Cholesky (lapack_spotrf_ffi) splits the
batch over XLA's intra-op thread pool and blocks a pool thread until its pieces finish (`ParallelBatchMap`). XLA's
CPU runtime runs independent ops of a program concurrently on that same pool, so once as many batched Cholesky
calls run at once as the pool has threads (2 on a 2-core machine: one per MGVAE level, forward and backward), every
thread waits for work queued behind it and the step never finishes. A jitted function with eight independent batched
Cholesky calls reproduces it on 2 cores (jaxlib 0.10.2; `tests/test_linalg.py` runs that program). Batched
triangular solves (lapack_strsm_ffi) share the same scheme and hang the same way.

On CPU `cholesky` and `solve_lower` therefore run as loops of plain XLA ops (one column / row per iteration, O(n^3)
like LAPACK, vectorised over the batch); on GPU/TPU they are the backend's own kernels. Both have hand-written
reverse-mode rules (the ones PyTorch and JAX use), so the backward pass is two more triangular solves, never a
differentiated loop with per-iteration copies. They support `jax.grad` / `jax.vjp`, not forward mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jnp.ndarray


def _sym(a: Array) -> Array:
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _loop_cholesky(a: Array) -> Array:
  """Lower Cholesky factor of symmetric [..., n, n] by columns; NaN where `a` is not positive definite (as LAPACK)."""
  n = a.shape[-1]
  rows = jnp.arange(n)

  def body(j, lower):
    # With columns >= j of `lower` still zero, sum_k<j L[i, k] L[j, k] is (lower @ lower[j])[i].
    v = a[..., :, j] - jnp.einsum("...ik,...k->...i", lower, lower[..., j, :])  # [..., n]
    pivot = jnp.sqrt(v[..., j])  # [...]
    col = jnp.where(rows > j, v / pivot[..., None], 0.0)
    col = jnp.where(rows == j, pivot[..., None], col)
    return lower.at[..., :, j].set(col)

  return jax.lax.fori_loop(0, n, body, jnp.zeros_like(a))


def _loop_solve(lower: Array, b: Array, transpose: bool) -> Array:
  """X with L X = B (forward substitution) or L^T X = B (back substitution).

  lower [..., n, n], b [..., n, m] -> [..., n, m]. Rows of x not yet solved are zero, so row i of op(L) times x sums
  over the solved rows only.
  """
  n = lower.shape[-1]

  def body(k, x):
    i = n - 1 - k if transpose else k
    row = lower[..., :, i] if transpose else lower[..., i, :]  # row i of L^T or of L
    r = b[..., i, :] - jnp.einsum("...k,...km->...m", row, x)
    return x.at[..., i, :].set(r / lower[..., i, i][..., None])

  return jax.lax.fori_loop(0, n, body, jnp.zeros_like(b))


def _factor(a: Array) -> Array:
  return jax.lax.platform_dependent(
      a, cpu=_loop_cholesky, default=lambda x: jnp.tril(jax.lax.linalg.cholesky(x, symmetrize_input=False)))


def _solve(lower: Array, b: Array, transpose: bool) -> Array:
  loop = lambda l, x: _loop_solve(l, x, transpose)
  native = lambda l, x: jax.lax.linalg.triangular_solve(l, x, left_side=True, lower=True, transpose_a=transpose)
  return jax.lax.platform_dependent(lower, b, cpu=loop, default=native)


@jax.custom_vjp
def cholesky(a: Array) -> Array:
  """Lower-triangular L with L L^T = (a + a^T) / 2, batched over leading axes: [..., n, n] -> [..., n, n]."""
  return _factor(_sym(a))


def _cholesky_fwd(a):
  lower = cholesky(a)
  return lower, lower


def _cholesky_bwd(lower, g):
  # abar = sym(L^-T Phi(L^T gbar) L^-1), Phi = lower triangle with the diagonal halved.
  n = lower.shape[-1]
  phi = jnp.tril(jnp.swapaxes(lower, -1, -2) @ g) * (1.0 - 0.5 * jnp.eye(n, dtype=g.dtype))
  s = _solve(lower, phi, transpose=True)  # L^-T Phi
  abar = jnp.swapaxes(_solve(lower, jnp.swapaxes(s, -1, -2), transpose=True), -1, -2)  # L^-T Phi L^-1
  return (_sym(abar),)


cholesky.defvjp(_cholesky_fwd, _cholesky_bwd)


@jax.custom_vjp
def solve_lower(lower: Array, b: Array) -> Array:
  """X with L X = B for lower-triangular L (entries above the diagonal are not read).

  lower [..., n, n], b [..., n, m] -> [..., n, m].
  """
  return _solve(lower, b, transpose=False)


def _solve_fwd(lower, b):
  x = solve_lower(lower, b)
  return x, (lower, x)


def _solve_bwd(res, g):
  lower, x = res
  bbar = _solve(lower, g, transpose=True)  # L^-T gbar
  lbar = -jnp.tril(jnp.einsum("...im,...jm->...ij", bbar, x))
  return lbar, bbar


solve_lower.defvjp(_solve_fwd, _solve_bwd)
