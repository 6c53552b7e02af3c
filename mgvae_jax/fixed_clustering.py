"""Fixed (non-learned) clusterings: the baselines of paper section 5.3 and the image quadtree of section 5.4.

Section 5.3 compares learning to cluster with two fixed balanced-cut baselines: "Spectral" (k-means on a spectral
node embedding) and "K-Means" (k-means on PCA-compressed node features). Section 5.4 clusters images with fixed
2 x 2 blocks per level, a quadtree. Every function returns node cluster ids that feed
`clustering.clustering_from_ids(ids, mask, K)`, so a fixed clustering plugs into the hierarchy like a learned one.

Graph functions act on ONE graph padded to N slots and are batched with `jax.vmap`; they are jitted with the
cluster count, iteration counts and dimensions static. Real nodes may sit in any slots (`mask` [N] bool); padded
nodes get id K (no cluster), and whatever sits in padded slots (NaN included) never reaches a real node's result.
Random choices are made so that the real nodes' results depend only on the real nodes in their slot order, not on
how many padded slots there are or where (see `_sample_index`).

Image functions (`grid_clustering`, `quadtree_levels`) are static numpy index maps.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mgvae_jax import clustering as clustering_lib
from mgvae_jax import equivariant

Array = jnp.ndarray

# The normalised Laplacian's spectrum lies in [0, 2]; padded slots get this eigenvalue, so they sort after every real
# one. A modest value keeps ||L|| (and with it eigh's absolute error on the real block) small; anything > 2 works.
_PAD_EIGENVALUE = 3.0
# Embedding rows shorter than this are treated as zero (isolated nodes; eigh leaves ~1e-7 noise there). A real row
# of a node with degree d in a component of volume vol has norm >= sqrt(d / vol), far above this for dense graphs.
_ROW_NORM_EPS = 1e-4
_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks (static: they run once, at trace time).


def _check_int(name: str, value, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_mask(mask: Array, num_nodes: int) -> None:
  if mask.ndim != 1 or mask.shape[0] != num_nodes:
    raise ValueError(f"mask must have shape [N] = [{num_nodes}], got {mask.shape}")


def _check_points(points: Array, mask: Array, name: str = "points") -> None:
  if points.ndim != 2:
    raise ValueError(f"{name} must have shape [N, F] (one graph; vmap over a batch), got {points.shape}")
  _check_mask(mask, points.shape[0])


def _check_adjacency(adjacency: Array, mask: Array) -> None:
  if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
    raise ValueError(f"adjacency must have shape [N, N] (one graph; vmap over a batch), got {adjacency.shape}")
  _check_mask(mask, adjacency.shape[0])


def _float_dtype(x: Array):
  return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32


# ---------------------------------------------------------------------------------------------------------------------
# k-means.


def _sample_index(weights: Array, key: jax.Array) -> Array:
  """Index i with probability weights_i / sum(weights), by inverse CDF over the slots in order.

  One uniform draw against the running sum: zero-weight (padded) slots add nothing to it, so inserting them anywhere
  leaves the chosen real node unchanged, unlike a categorical draw with one noise value per slot. Only a slot with
  positive weight is returned; if rounding puts the threshold past the end, the last such slot. weights [N] >= 0.
  """
  cum = jnp.cumsum(weights)  # [N]
  threshold = jax.random.uniform(key, dtype=cum.dtype) * cum[-1]
  positive = weights > 0
  hit = (cum > threshold) & positive
  last = weights.shape[0] - 1 - jnp.argmax(positive[::-1])
  return jnp.where(hit.any(), jnp.argmax(hit), last)


def _kmeans_pp_init(points: Array, maskf: Array, num_clusters: int, key: jax.Array) -> Array:
  """k-means++ centres [K, F]: the first uniform over real points, each next one with probability proportional to the
  squared distance to the nearest centre chosen so far. Once every real point coincides with a centre (fewer distinct
  real points than K), centres are drawn uniformly again: duplicates, whose clusters stay empty."""
  keys = jax.random.split(key, num_clusters)
  sq_dist = lambda c: jnp.sum((points - c) ** 2, axis=-1) * maskf  # [N], exact 0 at c itself
  first = points[_sample_index(maskf, keys[0])]
  centroids = jnp.zeros((num_clusters, points.shape[1]), points.dtype).at[0].set(first)

  def body(k, carry):
    centroids, d2 = carry
    weights = jnp.where(d2.sum() > 0, d2, maskf)
    c = points[_sample_index(weights, keys[k])]
    return centroids.at[k].set(c), jnp.minimum(d2, sq_dist(c))

  centroids, _ = jax.lax.fori_loop(1, num_clusters, body, (centroids, sq_dist(first)))
  return centroids


def _nearest(points: Array, centroids: Array) -> Array:
  """argmin_k ||x - c_k||^2 for each point, via ||c_k||^2 - 2 x.c_k (||x||^2 does not change the argmin).

  A matmul, so no [N, K, F] intermediate. points [N, F], centroids [K, F] -> [N] int32.
  """
  scores = jnp.sum(centroids ** 2, axis=-1)[None, :] - 2.0 * jnp.matmul(points, centroids.T, precision=_HIGHEST)
  return jnp.argmin(scores, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iters"))
def kmeans(points: Array, mask: Array, num_clusters: int, key: jax.Array, num_iters: int = 30) -> tuple[Array, Array]:
  """k-means (k-means++ initialisation, then `num_iters` Lloyd iterations) of the real points of one graph.

  Deterministic for a fixed key. A cluster that loses all its points keeps its previous centroid; with fewer
  (distinct) real points than K some clusters end empty. Ids are the nearest final centroid (ties: lowest index).

  Args:
    points: [N, F] node embeddings; padded rows are ignored (may hold anything).
    mask: [N] bool, True on real nodes.
    num_clusters: K >= 1 (static).
    key: PRNG key for the initialisation.
    num_iters: Lloyd iterations >= 0 (static).

  Returns:
    ids [N] int32 in [0, K) on real nodes, K on padded nodes; centroids [K, F].
  """
  points, mask = jnp.asarray(points), jnp.asarray(mask, bool)
  _check_points(points, mask)
  _check_int("num_clusters", num_clusters, 1)
  _check_int("num_iters", num_iters, 0)
  dtype = _float_dtype(points)
  maskf = mask.astype(dtype)
  x = jnp.where(mask[:, None], points.astype(dtype), 0.0)  # where, not *, so NaN/inf padding cannot leak

  def lloyd(_, centroids):
    onehot = jax.nn.one_hot(_nearest(x, centroids), num_clusters, dtype=dtype) * maskf[:, None]  # [N, K]
    counts = onehot.sum(0)  # [K]
    sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)  # [K, F]
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centroids)

  centroids = jax.lax.fori_loop(0, num_iters, lloyd, _kmeans_pp_init(x, maskf, num_clusters, key))
  ids = jnp.where(mask, _nearest(x, centroids), num_clusters).astype(jnp.int32)
  return ids, centroids


# ---------------------------------------------------------------------------------------------------------------------
# Spectral clustering (the "Spectral" baseline of section 5.3).


@functools.partial(jax.jit, static_argnames=("dim",))
def spectral_embedding(adjacency: Array, mask: Array, dim: int) -> Array:
  """Ng-Jordan-Weiss embedding: the `dim` smallest eigenvectors of the symmetric normalised Laplacian, row-normalised.

  L = I - D^-1/2 A D^-1/2 over the real nodes, with A symmetrised as (A + A^T) / 2 and D_ii = sum_j A_ij (self-loops
  count). An isolated real node (degree 0) gets a zero row in D^-1/2 A D^-1/2, so L_ii = 1. Padded slots get
  `_PAD_EIGENVALUE` (> 2 >= every real eigenvalue) on the diagonal and zero off-diagonals: a decoupled block whose
  eigenvectors sort after all real ones. If dim exceeds the real node count, the extra columns are such padded
  eigenvectors and are 0 on real rows.

  Disconnected graphs need no special case: eigenvalue 0 has one eigenvector per connected component (with edges),
  spanning D^1/2 times the component indicators. With c <= dim components, those c directions come first, so after
  row normalisation the components separate; if dim == c exactly, every component collapses to one unit vector,
  orthogonal to the others' (the basis eigh picks inside the degenerate eigenspace is arbitrary, but k-means only
  sees distances, which do not depend on it). Isolated nodes have eigenvalue 1 and embed at the origin. Only where the
  dim-th and (dim+1)-th smallest eigenvalues are equal is the embedding itself not unique (eigh's choice decides).

  Args:
    adjacency: [N, N] non-negative edge weights; padded rows/columns are ignored.
    mask: [N] bool, True on real nodes.
    dim: embedding dimension, 1 <= dim <= N (static).

  Returns:
    [N, dim]: unit rows for real nodes with at least one edge, zero rows for isolated and padded nodes.
  """
  adjacency, mask = jnp.asarray(adjacency), jnp.asarray(mask, bool)
  _check_adjacency(adjacency, mask)
  n = adjacency.shape[0]
  _check_int("dim", dim, 1)
  if dim > n:
    raise ValueError(f"dim must be <= the padded node count N = {n}, got {dim}")
  dtype = jnp.promote_types(adjacency.dtype, jnp.float32)  # eigh needs float32 or wider
  a = jnp.where(equivariant.pair_mask(mask), adjacency.astype(dtype), 0.0)
  a = 0.5 * (a + a.T)
  deg = a.sum(1)  # [N]
  inv_sqrt = jnp.where(deg > 0, jax.lax.rsqrt(jnp.where(deg > 0, deg, 1.0)), 0.0)
  laplacian = jnp.diag(jnp.where(mask, 1.0, _PAD_EIGENVALUE).astype(dtype)) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
  _, vectors = jnp.linalg.eigh(laplacian)  # ascending eigenvalues
  u = jnp.where(mask[:, None], vectors[:, :dim], 0.0)  # [N, dim]
  norm = jnp.linalg.norm(u, axis=-1, keepdims=True)
  return jnp.where(norm > _ROW_NORM_EPS, u / jnp.where(norm > _ROW_NORM_EPS, norm, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iters", "dim"))
def spectral_clustering(adjacency: Array, mask: Array, num_clusters: int, key: jax.Array, num_iters: int = 30,
                        dim: Optional[int] = None) -> Array:
  """k-means on `spectral_embedding` (dim defaults to num_clusters). adjacency [N, N], mask [N] -> ids [N] int32.

  The paper's "Spectral" baseline scales each eigenvector by 1 / eigenvalue and uses 10 of them; this is the standard
  normalised (Ng-Jordan-Weiss) variant, which needs no division by the zero eigenvalue(s).

  Isolated real nodes embed at the origin, equidistant from every unit-vector centre k-means++ starts from: left in
  the fit, that tie would be broken by rounding and could pull the centroids into a different local optimum. So the
  centroids are fitted on the nodes with edges only, and isolated nodes then join the nearest centroid (the one of
  smallest norm; the lowest index on ties). An edgeless graph puts every real node in cluster 0.
  """
  _check_int("num_clusters", num_clusters, 1)
  embedding = spectral_embedding(adjacency, mask, num_clusters if dim is None else dim)
  mask = jnp.asarray(mask, bool)
  has_edge = jnp.linalg.norm(embedding, axis=-1) > 0  # exactly the non-isolated real nodes (rows are unit or zero)
  _, centroids = kmeans(embedding, mask & has_edge, num_clusters, key, num_iters)
  return jnp.where(mask, _nearest(embedding, centroids), num_clusters).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------------------------------
# Feature k-means (the "K-Means" baseline of section 5.3).


def _masked_pca(x: Array, mask: Array, pca_dim: int) -> Array:
  """Project the real rows, centred on their mean, onto the top `pca_dim` right singular vectors. [N, F] -> [N, P]."""
  maskf = mask.astype(x.dtype)
  mean = (x * maskf[:, None]).sum(0) / equivariant.num_real(mask, x.dtype)  # [F]; x is already 0 on padded rows
  centred = jnp.where(mask[:, None], x - mean, 0.0)
  _, _, vt = jnp.linalg.svd(centred, full_matrices=False)  # [min(N, F), F], singular values descending
  return jnp.matmul(centred, vt[:pca_dim].T, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("num_clusters", "pca_dim", "num_iters"))
def feature_kmeans_clustering(features: Array, mask: Array, num_clusters: int, key: jax.Array,
                              pca_dim: Optional[int] = None, num_iters: int = 30) -> Array:
  """k-means on node features, optionally PCA-compressed first (the paper uses pca_dim = 10 on bag-of-words features).

  Args:
    features: [N, F] node features; padded rows are ignored.
    mask: [N] bool, True on real nodes.
    num_clusters: K >= 1 (static).
    key: PRNG key for the k-means initialisation.
    pca_dim: None (no PCA) or 1 <= pca_dim <= min(N, F) (static). PCA centres on the real nodes' mean and keeps the
      directions of largest variance among the real nodes.
    num_iters: Lloyd iterations (static).

  Returns:
    ids [N] int32: K on padded nodes.
  """
  features, mask = jnp.asarray(features), jnp.asarray(mask, bool)
  _check_points(features, mask, "features")
  _check_int("num_clusters", num_clusters, 1)
  x = jnp.where(mask[:, None], features.astype(_float_dtype(features)), 0.0)
  if pca_dim is not None:
    _check_int("pca_dim", pca_dim, 1)
    if pca_dim > min(x.shape):
      raise ValueError(f"pca_dim must be <= min(N, F) = {min(x.shape)} for features of shape {x.shape}, got {pca_dim}")
    x = _masked_pca(x, mask, pca_dim)
  return kmeans(x, mask, num_clusters, key, num_iters)[0]


# ---------------------------------------------------------------------------------------------------------------------
# A whole fixed hierarchy, computed once (large graphs: an eigendecomposition per training step would dominate).

FIXED_METHODS = ("spectral", "kmeans")


def fixed_hierarchy(adjacency: Array, mask: Array, num_clusters: tuple[int, ...], method: str, key: jax.Array,
                    features: Optional[Array] = None, pca_dim: Optional[int] = 10, spectral_dim: int = 10,
                    num_iters: int = 30) -> list[np.ndarray]:
  """Cluster ids of every level of a fixed hierarchy of ONE graph, bottom-up: feed them to the MGN as `given_ids`.

  Level l is clustered into num_clusters[i] clusters, then coarsened (Definition 3.2) into the next level's graph.
  "spectral": k-means on the `spectral_dim`-dimensional spectral embedding of each level's (coarsened) adjacency
  (section 5.3 uses n_max = 10 eigenvectors); "kmeans": k-means on the node features, PCA-compressed to `pca_dim`
  dimensions at the finest level (section 5.3: 10); a coarse node's features are the mean of its members'.

  Args:
    adjacency: [N, N] edge weights; mask: [N] bool; features: [N, F] (needed for "kmeans").
    num_clusters: K per level, bottom-up.
    key: one PRNG key; level i uses fold_in(key, i).

  Returns:
    len(num_clusters) int32 numpy arrays: ids [N_l] of level l's nodes (K_l on padded nodes).
  """
  if method not in FIXED_METHODS:
    raise ValueError(f"fixed_hierarchy: method must be one of {FIXED_METHODS}, got {method!r}")
  if method == "kmeans" and features is None:
    raise ValueError("fixed_hierarchy: method='kmeans' needs node features")
  a = jnp.asarray(adjacency, jnp.float32)
  m = jnp.asarray(mask, bool)
  x = None
  if method == "kmeans":
    x = jnp.where(m[:, None], jnp.asarray(features, jnp.float32), 0.0)
    if pca_dim is not None and pca_dim < min(x.shape):
      x = jax.jit(_masked_pca, static_argnums=2)(x, m, int(pca_dim))
  out = []
  for i, k in enumerate(num_clusters):
    _check_int("num_clusters", k, 1)
    level_key = jax.random.fold_in(key, i)
    if k == 1:
      ids = jnp.where(m, 0, 1).astype(jnp.int32)
    elif method == "spectral":
      ids = spectral_clustering(a, m, int(k), level_key, num_iters, dim=min(int(spectral_dim), a.shape[0]))
    else:
      ids = kmeans(x, m, int(k), level_key, num_iters)[0]
    out.append(np.asarray(ids, np.int32))
    clus = clustering_lib.clustering_from_ids(ids, m, int(k))
    a = clustering_lib.coarsen(a, clus, m)
    if x is not None:
      count = clus.assignment.sum(0)[:, None]  # [K, 1]
      x = (clus.assignment.T @ x) / jnp.maximum(count, 1.0)
    m = clus.coarse_mask
  return out


# ---------------------------------------------------------------------------------------------------------------------
# Images: fixed block clusters per level, a quadtree for 2 x 2 blocks (section 5.4).


def grid_clustering(height: int, width: int, block: int = 2) -> np.ndarray:
  """Cluster ids of the pixels of a height x width grid graph (row-major) into block x block tiles.

  Pixel (i, j), node i * width + j, goes to parent (i // block, j // block), i.e. coarse node
  (i // block) * (width // block) + j // block: the coarse grid is again row-major, so levels compose. Every one of
  the (height // block) * (width // block) parents holds block**2 pixels.

  Returns:
    [height * width] int32 numpy array (static: use as a constant inside jit).
  """
  _check_int("height", height, 1)
  _check_int("width", width, 1)
  _check_int("block", block, 1)
  if height % block or width % block:
    raise ValueError(f"grid_clustering needs height and width divisible by block = {block}, got {height} x {width}")
  rows = np.arange(height)[:, None] // block
  cols = np.arange(width)[None, :] // block
  return (rows * (width // block) + cols).reshape(-1).astype(np.int32)


def quadtree_levels(size: int, levels: int) -> list[np.ndarray]:
  """The 2 x 2 block clusterings of a size x size image, finest first (e.g. 32x32 -> 16x16 -> 8x8 -> ...).

  Entry l maps the (size / 2**l)**2 nodes of level l (row-major) to the (size / 2**(l+1))**2 nodes of level l + 1, so
  composing the first m entries maps pixel (i, j) to coarse node (i // 2**m) * (size // 2**m) + j // 2**m.

  Returns:
    `levels` int32 numpy arrays (an empty list for levels = 0).
  """
  _check_int("size", size, 1)
  _check_int("levels", levels, 0)
  if size % (2 ** levels):
    raise ValueError(f"quadtree_levels needs size divisible by 2**levels = {2 ** levels}, got size {size}")
  return [grid_clustering(size >> l, size >> l, 2) for l in range(levels)]
