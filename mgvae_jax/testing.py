"""Test helpers other pipelines can reuse: permutation equivariance checks and random padded graphs."""

from __future__ import annotations

import os

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Order = Optional[int]  # None: not permuted (invariant); k: k node axes


def permute_array(x: jnp.ndarray, perm: jnp.ndarray, order: Order, batched: bool = True) -> jnp.ndarray:
  """Apply a node permutation to the `order` node axes of x: out[i, j, ...] = x[perm[i], perm[j], ...].

  With `batched`, axis 0 is the batch, the node axes follow it, and perm is [B, N] (one permutation per graph);
  otherwise the node axes come first and perm is [N].
  """
  if order is None or order == 0:
    return x
  if batched:
    return jax.vmap(lambda xb, pb: permute_array(xb, pb, order, batched=False))(x, perm)
  for axis in range(order):
    x = jnp.take(x, perm, axis=axis)
  return x


def random_permutations(key: jax.Array, num_graphs: int, num_nodes: int) -> jnp.ndarray:
  """[B, N]: an independent random permutation of all N slots (padding included) per graph."""
  keys = jax.random.split(key, num_graphs)
  return jax.vmap(lambda k: jax.random.permutation(k, num_nodes))(keys)


def assert_permutation_equivariant(
    fn: Callable[..., Any],
    args: Sequence[Any],
    in_orders: Sequence[Order],
    out_orders: Any,
    key: jax.Array,
    num_nodes: Optional[int] = None,
    batched: bool = True,
    trials: int = 2,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
  """Check fn(sigma . args) == sigma . fn(args) for random permutations sigma of the node slots.

  Args:
    fn: the function under test; returns an array or a pytree of arrays.
    args: its positional arguments (arrays or anything not permuted).
    in_orders: for each argument, how many node axes it has (0/None: not permuted; 1: a mask or node features;
      2: adjacency / edge features ...). With `batched`, node axes start at axis 1.
    out_orders: an order, or a pytree of orders with the structure of fn's output (0/None means invariant).
    key: PRNG key for the permutations.
    num_nodes: N; default the size of the first node axis of the first permuted argument.
    batched: arguments carry a leading batch axis (each graph gets its own permutation).
    trials: how many random permutations to try.
  """
  if len(args) != len(in_orders):
    raise ValueError(f"{len(args)} args but {len(in_orders)} in_orders")
  if num_nodes is None:
    first = next(i for i, o in enumerate(in_orders) if o)
    num_nodes = args[first].shape[1 if batched else 0]
  num_graphs = next(a.shape[0] for a, o in zip(args, in_orders) if o) if batched else 1
  out = fn(*args)
  out_leaves, treedef = jax.tree_util.tree_flatten(out)
  if isinstance(out_orders, (int, type(None))):
    orders = [out_orders] * len(out_leaves)
  else:
    orders = treedef.flatten_up_to(out_orders)
  for trial in range(trials):
    key, sub = jax.random.split(key)
    perm = random_permutations(sub, num_graphs, num_nodes)
    if not batched:
      perm = perm[0]
    p_args = [permute_array(a, perm, o, batched) if o else a for a, o in zip(args, in_orders)]
    p_out = jax.tree_util.tree_leaves(fn(*p_args))
    for index, (y, py, o) in enumerate(zip(out_leaves, p_out, orders)):
      expected = permute_array(y, perm, o, batched) if o else y
      np.testing.assert_allclose(
          np.asarray(py), np.asarray(expected), atol=atol, rtol=rtol,
          err_msg=f"output leaf {index} (order {o}) is not permutation equivariant (trial {trial})")


def random_graph_batch(
    rng: np.random.Generator,
    sizes: Sequence[int],
    pad_size: int,
    node_dim: int = 3,
    edge_dim: int = 2,
    edge_prob: float = 0.5,
    garbage_padding: bool = True,
    scatter: bool = True,
):
  """Random undirected graphs as raw padded arrays (nodes [B,N,F], edges [B,N,N,E], mask [B,N]) in numpy.

  garbage_padding fills padded slots with random values, which every masked op must ignore. scatter places the real
  nodes in random slots instead of the first n.
  """
  b = len(sizes)
  nodes = rng.normal(size=(b, pad_size, node_dim)).astype(np.float32)
  edges = rng.normal(size=(b, pad_size, pad_size, edge_dim)).astype(np.float32)
  mask = np.zeros((b, pad_size), bool)
  for g, n in enumerate(sizes):
    slots = rng.permutation(pad_size)[:n] if scatter else np.arange(n)
    mask[g, slots] = True
    adj = np.triu(rng.random((n, n)) < edge_prob, 1)
    adj = adj | adj.T
    e = rng.normal(size=(n, n, edge_dim)).astype(np.float32)
    e = (e + e.transpose(1, 0, 2)) * adj[..., None]
    edges[g][np.ix_(slots, slots)] = e
  if not garbage_padding:
    nodes *= mask[..., None]
    edges *= (mask[:, :, None] & mask[:, None, :])[..., None]
  return nodes, edges, mask


def directory_snapshot(root: str) -> dict:
  """Every file and folder under `root` by relative path: (mtime_ns, contents; None for a folder). Two equal
  snapshots mean nothing under `root` was written, replaced, added or removed in between."""
  out = {}
  for here, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(here, name)
      contents = None
      if name in files:
        with open(path, "rb") as f:
          contents = f.read()
      out[os.path.relpath(path, root)] = (os.stat(path).st_mtime_ns, contents)
  return out
