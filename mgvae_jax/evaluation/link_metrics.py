"""Link-prediction metrics (AUC, AP) and balanced-cut statistics of a clustering (paper section 5.3, Tables 6-8).

AUC and AP come from scikit-learn. Positive and negative scores are cast together to one float64 array before
ranking: scored in two dtypes (positives in float64 and negatives in float32, as in the authors' code), rounding
alone can separate the two sets (a spurious AUC of 1.0). `auc_ap` also refuses non-finite scores, which would
otherwise rank arbitrarily.
"""

from __future__ import annotations

import numpy as np


def auc_ap(positive_scores, negative_scores) -> dict[str, float]:
  """{"auc", "ap"} of scores for positive pairs [P] and negative pairs [Q] (any real scores; higher = edge)."""
  pos = np.asarray(positive_scores)
  neg = np.asarray(negative_scores)
  for name, x in (("positive_scores", pos), ("negative_scores", neg)):
    if x.ndim != 1 or x.size == 0:
      raise ValueError(f"auc_ap: {name} must be a non-empty 1-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
      raise ValueError(f"auc_ap: {name} must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
      raise ValueError(f"auc_ap: {name} has {int((~np.isfinite(x)).sum())} non-finite values")
  from sklearn import metrics  # the `metrics` extra; imported here so the library imports without it
  scores = np.concatenate([pos.astype(np.float64), neg.astype(np.float64)])  # one dtype for both sets
  labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
  return {"auc": float(metrics.roc_auc_score(labels, scores)),
          "ap": float(metrics.average_precision_score(labels, scores))}


def cluster_balance(ids, num_clusters: int, mask=None) -> dict[str, float]:
  """Tables 7-8: min, max and std of the cluster sizes, and KL(sizes / N || uniform), over real nodes.

  ids [N] int (values outside [0, K) and masked-out nodes are not counted). Every one of the K clusters counts, an
  empty one as size 0 (also reported as `empty`), so a clustering that leaves clusters empty shows Min = 0.
  The KL is eq. 2's balanced-cut loss on the hard assignment: 0 for equal sizes, log K for one cluster.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(f"cluster_balance: ids must be 1-D [N], got shape {ids.shape}")
  if int(num_clusters) < 1:
    raise ValueError(f"cluster_balance: num_clusters must be >= 1, got {num_clusters}")
  keep = np.ones(ids.shape, bool) if mask is None else np.asarray(mask, bool)
  if keep.shape != ids.shape:
    raise ValueError(f"cluster_balance: mask shape {keep.shape} != ids shape {ids.shape}")
  keep &= (ids >= 0) & (ids < num_clusters)
  sizes = np.bincount(ids[keep].astype(np.int64), minlength=num_clusters).astype(np.float64)
  total = sizes.sum()
  if total == 0:
    raise ValueError("cluster_balance: no real node has a cluster")
  p = sizes / total
  nz = p > 0
  kl = float(np.sum(p[nz] * (np.log(p[nz]) + np.log(num_clusters))))
  return {"min": float(sizes.min()), "max": float(sizes.max()), "std": float(sizes.std()), "kl": kl,
          "mean": float(total / num_clusters), "empty": int((sizes == 0).sum()), "num_clusters": int(num_clusters),
          "num_nodes": int(total)}
