"""Host-side (numpy) input pipeline over pre-featurised graphs: seeded per-epoch shuffling, fixed-shape batches.

The order of epoch e is a pure function of (seed, e): a run resumed at epoch e sees the same batches as one that never
stopped, with no pipeline state to checkpoint. Every batch has the same shape [B, N, ...]; the last partial batch is
filled with empty graphs (all-False node mask, zero features) rather than dropped, and `graph_mask [B]` says which
graphs are real, so a jitted step compiles once and losses can average over real graphs only.

Batches are `GraphBatch`es of host numpy arrays (dtypes as given): move them with `jax.device_put` (or let jit do it)
where the training loop decides, e.g. to shard or prefetch.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from mgvae_jax.graphs import GraphBatch

_FIELDS = ("nodes", "edges", "mask")


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
  """Batches per epoch: ceil(M / B), or floor(M / B) with `drop_remainder`."""
  _check_sizes(num_examples, batch_size)
  return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The example order of one epoch, a permutation of range(M) that depends only on (seed, epoch).  # [M] int64"""
  if num_examples < 0:
    raise ValueError(f"epoch_order: num_examples must be >= 0, got {num_examples}")
  if not shuffle:
    return np.arange(num_examples, dtype=np.int64)
  if int(seed) < 0 or int(epoch) < 0:
    raise ValueError(f"epoch_order: seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
  # A fresh generator keyed on (seed, epoch): no state carried from earlier epochs.
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
  return rng.permutation(num_examples).astype(np.int64)


def batch_indices(num_examples: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  drop_remainder: bool = False) -> list[np.ndarray]:
  """Example ids of each batch of one epoch, -1 on padding slots.  # list of [B] int64

  The same ids `batches` uses: gather per-example targets with them (`targets[ids[ids >= 0]]`).
  """
  order = epoch_order(num_examples, seed, epoch, shuffle)
  n = num_batches(num_examples, batch_size, drop_remainder)
  padded = np.full(n * batch_size, -1, np.int64)
  take = min(num_examples, n * batch_size)
  padded[:take] = order[:take]
  return list(padded.reshape(n, batch_size))


Examples = Union[GraphBatch, Mapping[str, Any], Sequence[Any]]


def batches(examples: Examples, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
            drop_remainder: bool = False, pad_size: Optional[int] = None,
            start: int = 0) -> Iterator[tuple[GraphBatch, np.ndarray]]:
  """Yield one epoch of `(GraphBatch, graph_mask [B] bool)`, every batch with the same shape.

  Args:
    examples: all examples, either stacked (a `GraphBatch`, a dict with "nodes" [M, N, F], "edges" [M, N, N, E] and
      "mask" [M, N], or a (nodes, edges, mask) tuple of arrays) or a sequence of M per-example graphs (each a
      `GraphBatch`-like dict / object / tuple with nodes [n, F], edges [n, n, E], mask [n]). Per-example graphs may
      have different n; they are padded to `pad_size`. Stacked arrays are only indexed, never copied whole.
    batch_size: B, graphs per batch.
    seed: shuffling seed; with `epoch` it fixes the order (`epoch_order`).
    epoch: epoch number.
    shuffle: False keeps the given order.
    drop_remainder: drop the last partial batch instead of padding it.
    pad_size: N for per-example input (default the largest n); must equal N for stacked input if given.
    start: skip the first `start` batches of the epoch without building them (a resumed run's position, see
      training.data_position).

  Yields:
    `(graphs, graph_mask)`: `graphs.nodes` [B, N, F], `graphs.edges` [B, N, N, E], `graphs.mask` [B, N] bool, host
    numpy arrays; `graph_mask` [B] bool, False on padding graphs (whose node mask is all False and arrays all zero).
  """
  if start < 0:
    raise ValueError(f"batches: start must be >= 0, got {start}")
  source = _Source(examples, pad_size)
  for ids in batch_indices(source.num_examples, batch_size, seed, epoch, shuffle, drop_remainder)[start:]:
    yield source.take(ids), ids >= 0


class _Source:
  """Gathers a batch of examples by id (-1 = empty graph) into fixed-shape arrays."""

  def __init__(self, examples: Examples, pad_size: Optional[int]):
    stacked = _as_stacked(examples)
    if stacked is not None:
      nodes, edges, mask = stacked
      m, n = _check_stacked(nodes, edges, mask)
      if pad_size is not None and int(pad_size) != n:
        raise ValueError(f"batches: pad_size={pad_size} but the stacked examples have N={n} node slots")
      self.num_examples, self._stacked = m, (nodes, edges, mask)
      return
    self._stacked = None
    self._graphs = [_check_example(i, g) for i, g in enumerate(examples)]
    self.num_examples = len(self._graphs)
    if not self._graphs:
      self._shape = None
      return
    sizes = [g[2].shape[0] for g in self._graphs]
    n = max(sizes) if pad_size is None else int(pad_size)
    if max(sizes) > n:
      raise ValueError(f"batches: example {int(np.argmax(sizes))} has {max(sizes)} node slots, more than "
                       f"pad_size={n}")
    f, e = self._graphs[0][0].shape[1], self._graphs[0][1].shape[2]
    for i, (x, a, _) in enumerate(self._graphs):
      if x.shape[1] != f or a.shape[2] != e:
        raise ValueError(f"batches: example {i} has F={x.shape[1]}, E={a.shape[2]}; example 0 has F={f}, E={e}")
    self._shape = (n, f, e)
    self._dtypes = tuple(np.result_type(*[g[k] for g in self._graphs]) for k in range(2))

  def take(self, ids: np.ndarray) -> GraphBatch:
    real = ids >= 0
    if self._stacked is not None:
      nodes, edges, mask = self._stacked
      safe = np.where(real, ids, 0)
      out = []
      for x in (nodes, edges, mask):
        x = np.asarray(x[safe]).copy()  # fancy indexing copies only this batch
        x[~real] = 0
        out.append(x)
      return GraphBatch(nodes=out[0], edges=out[1], mask=out[2].astype(bool))
    n, f, e = self._shape
    nodes = np.zeros((ids.size, n, f), self._dtypes[0])
    edges = np.zeros((ids.size, n, n, e), self._dtypes[1])
    mask = np.zeros((ids.size, n), bool)
    for b, i in enumerate(ids):
      if i < 0:
        continue
      x, a, m = self._graphs[i]
      k = m.shape[0]
      nodes[b, :k], edges[b, :k, :k], mask[b, :k] = x, a, m
    return GraphBatch(nodes=nodes, edges=edges, mask=mask)


def _get(obj: Any, name: str) -> Any:
  return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _as_stacked(examples: Examples) -> Optional[tuple[Any, Any, Any]]:
  """(nodes, edges, mask) if `examples` holds stacked arrays, None for a sequence of per-example graphs."""
  if isinstance(examples, GraphBatch):
    return examples.nodes, examples.edges, examples.mask
  if isinstance(examples, Mapping):
    missing = [k for k in _FIELDS if k not in examples]
    if missing:
      raise ValueError(f"batches: examples dict needs keys {list(_FIELDS)}; missing {missing}")
    return tuple(examples[k] for k in _FIELDS)
  if isinstance(examples, tuple) and len(examples) == 3 and all(hasattr(x, "ndim") for x in examples):
    if np.ndim(examples[2]) == 2:  # (nodes [M,N,F], edges [M,N,N,E], mask [M,N]); a lone example has mask [n]
      return examples
  if not isinstance(examples, Sequence):
    raise TypeError(f"batches: examples must be a GraphBatch, a dict of stacked arrays or a sequence of graphs, got "
                    f"{type(examples).__name__}")
  return None


def _check_stacked(nodes, edges, mask) -> tuple[int, int]:
  shapes = {k: np.shape(x) for k, x in zip(_FIELDS, (nodes, edges, mask))}
  if len(shapes["nodes"]) != 3 or len(shapes["edges"]) != 4 or len(shapes["mask"]) != 2:
    raise ValueError(f"batches: stacked examples need nodes [M, N, F], edges [M, N, N, E], mask [M, N]; got {shapes}")
  m, n = shapes["mask"]
  if shapes["nodes"][:2] != (m, n) or shapes["edges"][:3] != (m, n, n):
    raise ValueError(f"batches: stacked example shapes disagree on M or N: {shapes}")
  return m, n


def _check_example(i: int, g: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  try:
    x, a, m = (g if isinstance(g, tuple) and len(g) == 3 else tuple(_get(g, k) for k in _FIELDS))
  except (KeyError, AttributeError, TypeError) as exc:
    raise ValueError(f"batches: example {i} must have nodes, edges and mask (a dict, GraphBatch-like object or "
                     f"(nodes, edges, mask) tuple); got {type(g).__name__}") from exc
  x, a, m = np.asarray(x), np.asarray(a), np.asarray(m)
  k = m.shape[0] if m.ndim == 1 else -1
  if x.ndim != 2 or a.ndim != 3 or m.ndim != 1 or x.shape[0] != k or a.shape[:2] != (k, k):
    raise ValueError(f"batches: example {i} needs nodes [n, F], edges [n, n, E], mask [n]; got {x.shape}, "
                     f"{a.shape}, {m.shape}")
  return x, a, m.astype(bool)


def _check_sizes(num_examples: int, batch_size: int) -> None:
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if int(num_examples) < 0:
    raise ValueError(f"num_examples must be >= 0, got {num_examples}")
