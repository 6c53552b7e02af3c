"""Host-side work on every core: an order-preserving map of a function over chunks of a sequence, in processes.

RDKit decoding and the chemistry metrics are single-threaded Python; a process pool spreads them over the cores.
Workers are started with "spawn", never "fork": the parent runs JAX, which is multithreaded, and a forked child of a
multithreaded process can deadlock on a lock another thread held. Each worker imports the function's module once
(about 1.5 s for this package), so small inputs run inline, and the pool is kept for the next call.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import os
from typing import Callable, Optional, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items per worker, the workers' start-up costs more than it saves: run inline.
MIN_ITEMS_PER_WORKER = 500


def default_workers() -> int:
  """The cores this process may run on."""
  try:
    return max(len(os.sched_getaffinity(0)), 1)
  except AttributeError:  # not Linux
    return max(os.cpu_count() or 1, 1)


_POOLS: dict[int, concurrent.futures.ProcessPoolExecutor] = {}


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """One pool per worker count, kept for the life of the process: a run decodes and scores several sets, and each
  fresh pool would pay the workers' start-up again."""
  pool = _POOLS.get(workers)
  if pool is None:
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    _POOLS[workers] = pool
  return pool


def shutdown() -> None:
  """Stop the kept pools' workers (also done at interpreter exit)."""
  while _POOLS:
    _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def map_chunks(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], workers: Optional[int] = None,
               min_items_per_worker: int = MIN_ITEMS_PER_WORKER) -> list[R]:
  """fn(chunk) -> one result per item, over contiguous chunks of `items`, concatenated in input order.

  fn must be a module-level function or a functools.partial of one (it is pickled by name) and its results
  picklable. workers: None = every core; 1 (or too few items) = inline in this process.
  """
  items = list(items)
  workers = default_workers() if workers is None else int(workers)
  if workers < 1:
    raise ValueError(f"map_chunks: workers must be >= 1, got {workers}")
  workers = min(workers, len(items) // max(min_items_per_worker, 1))
  if workers <= 1:
    return list(fn(items))
  # A few chunks per worker, so one slow chunk does not leave the other cores idle at the end.
  num_chunks = 4 * workers
  bounds = [round(i * len(items) / num_chunks) for i in range(num_chunks + 1)]
  chunks = [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
  parts = list(_pool(workers).map(fn, chunks))
  out = []
  for chunk, part in zip(chunks, parts):
    part = list(part)
    if len(part) != len(chunk):
      raise RuntimeError(f"map_chunks: {fn.__name__} returned {len(part)} results for {len(chunk)} items")
    out.extend(part)
  return out
