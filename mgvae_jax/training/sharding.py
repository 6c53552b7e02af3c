"""Data parallelism with JAX's own engine: a 1-D `Mesh` over every device (of every process) on a "data" axis.

Batches are sharded along their leading (graph) axis, params and optimizer state replicated; the jitted train step
is unchanged, and XLA inserts the gradient all-reduce. Multi-host runs call `initialize_distributed` first (a thin
check around `jax.distributed.initialize`); each process then feeds its own slice of every global batch
(`shard_batch`), so all processes must iterate the same global batches in the same order (pipeline.batches is a
pure function of seed and epoch, so they do).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: Optional[str], num_processes: Optional[int],
                           process_id: Optional[int], local_device_ids: Optional[Sequence[int]] = None) -> bool:
  """`jax.distributed.initialize` when a coordinator is given (True), nothing otherwise (False).

  All three of coordinator_address ("host:port"), num_processes and process_id are needed together; on managed
  clusters (SLURM, Cloud TPU) pass none and call `jax.distributed.initialize()` with no arguments instead.
  """
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if not any(given):
    return False
  if not all(given):
    raise ValueError("multi-process runs need coordinator_address, num_processes and process_id together; got "
                     f"coordinator_address={coordinator_address!r}, num_processes={num_processes}, "
                     f"process_id={process_id}")
  if ":" not in coordinator_address:
    raise ValueError(f"coordinator_address must be host:port, got {coordinator_address!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, got {num_processes}, "
                     f"{process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids)
  return True


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("data_mesh: no devices")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the mesh's devices (and so over processes)."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"batch_size={batch_size} does not divide over the {n} devices of the data mesh; use a "
                     f"multiple of {n}")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (graph) axis split over the mesh's first axis ("data" for data_mesh)."""
  return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Place every leaf of `tree` fully replicated on the mesh (host values must be equal on every process)."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)), tree)


def process_slice(global_batch: int) -> slice:
  """This process's rows of a global batch (processes own equal consecutive blocks, in process order)."""
  per = global_batch // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """A host pytree of global-batch arrays (leading axis B, identical on every process) -> arrays sharded on "data".

  Each process contributes only its own rows (`process_slice`); single-process runs put the whole batch.
  """
  sharding = batch_sharded(mesh)
  leaves = jax.tree_util.tree_leaves(tree)
  b = np.shape(leaves[0])[0]
  check_batch_size(b, mesh)
  rows = process_slice(b)

  def put(x):
    x = np.asarray(x)
    if x.shape[:1] != (b,):
      raise ValueError(f"shard_batch: every leaf needs the leading batch axis {b}, got shape {x.shape}")
    return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)

  return jax.tree_util.tree_map(put, tree)


def local_copy(tree: Any) -> Any:
  """Host numpy copy of replicated arrays, readable on every process (multi-process arrays are not fully
  addressable, so `jax.device_get` alone would fail there)."""

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree_util.tree_map(get, tree)
