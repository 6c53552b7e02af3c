"""K local decoders against one global decoder as the graph grows (Definition 3.4; section 3.1's cost argument).

  python -m benchmarks.bench_hierarchy                                   # N in {38, 128, 512, 2048}
  python -m benchmarks.bench_hierarchy --nodes=38,128 --repeats=2       # quick run

For each N the graph is split into K = round(N / cluster_size) balanced clusters held in per-level padded slots of
capacity C = ceil(N / K). The timed step is what training a decoder costs: decode the latents [N, d] to edge logits,
weighted BCE against the adjacency, gradients for the decoder parameters and the latents. "global" decodes all N^2
pairs at once; "local" decodes the K induced subgraphs [K, C, C] (one decoder, its weights shared, vmapped over the
clusters). Memory is XLA's compiled estimate for the step (temporaries + outputs, the arguments excluded),
deterministic and comparable across decoders. The paper says local decoding costs about K times less
(N^2 / K pairs instead of N^2); the table gives the measured ratios.
"""

from __future__ import annotations

import math

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from mgvae_jax import decoders
from mgvae_jax import hierarchy
from mgvae_jax import mgn

_NODES = flags.DEFINE_list("nodes", ["38", "128", "512", "2048"], "graph sizes N")
_CLUSTER = flags.DEFINE_integer("cluster_size", 24, "target nodes per cluster (16-32 is the range of interest)")
_LATENT = flags.DEFINE_integer("latent_dim", 16, "latent channels d")
_DECODERS = flags.DEFINE_list("decoders", ["second_order", "dot"], "decoder kinds to time")
_FEATURES = flags.DEFINE_integer("features", 16, "channels of the second-order decoder")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repetitions (median reported)")
_OUT = flags.DEFINE_string("out", "benchmarks/results/hierarchy.json", "where to write the JSON ('' = nowhere)")


def _memory_bytes(jitted, *args) -> int:
  stats = jitted.lower(*args).compile().memory_analysis()
  return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def _graph(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  upper = np.triu(rng.random((n, n)) < min(1.0, 3.0 / n), 1)  # ~3 neighbours a node, like a sparse molecule/mesh
  a = (upper | upper.T).astype(np.float32)
  return jnp.asarray(a), jnp.asarray(rng.normal(size=(n, _LATENT.value)), jnp.float32)


def bench_one(n: int, kind: str) -> dict:
  k = max(1, round(n / _CLUSTER.value))
  c = math.ceil(n / k)
  a, z = _graph(n)
  mask = jnp.ones((n,), bool)
  slots = hierarchy.cluster_slots(jnp.arange(n) // c, mask, k, c)  # balanced contiguous clusters
  dec = (decoders.SecondOrderDecoder(features=_FEATURES.value, layers=2) if kind == "second_order"
         else decoders.DotProductDecoder(features=_LATENT.value))
  params = dec.init(jax.random.PRNGKey(0), z[None], mask[None])
  no_diag = ~jnp.eye(n, dtype=bool)

  def global_loss(p, z):
    logits = dec.apply(p, z[None], mask[None])[0, ..., 0]  # [N, N]
    return mgn.masked_bce(logits, a > 0, no_diag, pos_weight=10.0)

  target = hierarchy.gather_edges(a, slots) > 0  # [K, C, C]
  pm = slots.mask[:, :, None] & slots.mask[:, None, :] & ~jnp.eye(c, dtype=bool)

  def local_loss(p, z):
    zb = hierarchy.gather_nodes(z, slots)  # [K, C, d]
    logits = dec.apply(p, zb, slots.mask)[..., 0]  # [K, C, C]
    return mgn.masked_bce(logits, target, pm, pos_weight=10.0, axes=(0, 1, 2))

  row = {"nodes": n, "clusters": k, "capacity": c, "decoder": kind}
  for name, loss in (("global", global_loss), ("local", local_loss)):
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    row[f"{name}_median_s"] = common.median_time(step, params, z, repeats=_REPEATS.value)
    row[f"{name}_bytes"] = _memory_bytes(step, params, z)
  row["time_ratio"] = row["global_median_s"] / row["local_median_s"]
  row["memory_ratio"] = row["global_bytes"] / row["local_bytes"]
  return row


def main(argv):
  del argv
  rows = [bench_one(int(n), kind) for kind in _DECODERS.value for n in _NODES.value]
  print(f"{'decoder':>13} {'N':>5} {'K':>4} {'C':>3} {'global ms':>10} {'local ms':>9} {'time x':>7} "
        f"{'global MiB':>11} {'local MiB':>10} {'mem x':>6}")
  for r in rows:
    print(f"{r['decoder']:>13} {r['nodes']:>5} {r['clusters']:>4} {r['capacity']:>3} "
          f"{1e3 * r['global_median_s']:>10.2f} {1e3 * r['local_median_s']:>9.2f} {r['time_ratio']:>7.1f} "
          f"{r['global_bytes'] / 2**20:>11.1f} {r['local_bytes'] / 2**20:>10.2f} {r['memory_ratio']:>6.1f}")
  common.report("bench_hierarchy", rows, _OUT.value)


if __name__ == "__main__":
  app.run(main)
