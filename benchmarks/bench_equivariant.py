"""Forward+backward of one second-order equivariant layer (Example 3.10) against a plain matmul of equal FLOPs.

  python -m benchmarks.bench_equivariant                       # B=64, N=38, C in {64, 256}
  python -m benchmarks.bench_equivariant --channels=16 --batch=4 --repeats=2   # a quick smoke run

The layer maps [B, N, N, C] -> [B, N, N, C] (contractions of A (x) H, one linear map 6C -> C, ReLU); the step
differentiates a scalar loss with respect to the parameters and the input H, as inside a deep network.

FLOPs: the headline count is what this implementation executes (`contract_linear`: 10 N^2 C D + 4 N^3 D multiply-
adds x 2 per graph forward, backward twice the forward). The paper's contract-then-Dense formulation needs more
(12 N^2 C D + 8 N^3 C per graph forward): it is reported as `paper_gflop` and never used for the ratio, and XLA's own
count of the compiled step is reported beside both. The reference is one square float32 matmul d x d @ d x d with
2 d^3 ~= the executed FLOPs, jitted and timed in the same process. Prints a table and JSON, writes JSON.
"""

from __future__ import annotations

import statistics

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from benchmarks import common
from mgvae_jax import equivariant

_BATCH = flags.DEFINE_integer("batch", 64, "graphs per batch")
_NODES = flags.DEFINE_integer("nodes", 38, "padded nodes per graph (all real)")
_CHANNELS = flags.DEFINE_list("channels", ["64", "256"], "channel counts C to time")
_REPEATS = flags.DEFINE_integer("repeats", 7, "timed repetitions (median reported)")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed repetitions after compilation")
_OUT = flags.DEFINE_string("out", "benchmarks/results/equivariant.json", "where to write the JSON ('' = nowhere)")


def _xla_flops(jitted, *args) -> float | None:
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
  except Exception:  # pylint: disable=broad-except
    return None  # not every backend reports it


def layer_flops(batch: int, nodes: int, channels: int) -> float:
  """FLOPs contract_linear executes for forward + backward (C in = D out = channels)."""
  c = d = channels
  forward = 2 * (5 * nodes**2 * c * d + 2 * nodes**3 * d + c * d)
  return 3.0 * batch * forward


def paper_flops(batch: int, nodes: int, channels: int) -> float:
  """FLOPs of the paper's formulation: 4 contractions 2 N^3 C + a Dense 2 N^2 6C C per graph, forward + backward."""
  forward = 4 * 2 * nodes**3 * channels + 2 * nodes**2 * 6 * channels * channels
  return 3.0 * batch * forward


def bench_one(batch: int, nodes: int, channels: int, repeats: int, warmup: int) -> dict:
  key = jax.random.PRNGKey(0)
  k_a, k_h, k_p = jax.random.split(key, 3)
  upper = jnp.triu((jax.random.uniform(k_a, (batch, nodes, nodes)) < 0.1).astype(jnp.float32), 1)
  a = upper + jnp.swapaxes(upper, 1, 2)  # [B, N, N] symmetric, ~molecular sparsity
  h = jax.random.normal(k_h, (batch, nodes, nodes, channels), jnp.float32)  # [B, N, N, C]
  mask = jnp.ones((batch, nodes), bool)
  layer = equivariant.SecondOrderLayer(features=channels)
  params = layer.init(k_p, a, h, mask)

  def loss(p, h):
    return jnp.mean(layer.apply(p, a, h, mask) ** 2)

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  flops = layer_flops(batch, nodes, channels)
  t_layer = common.time_calls(step, params, h, repeats=repeats, warmup=warmup)

  d = max(64, int(round((flops / 2) ** (1 / 3) / 64)) * 64)
  x = jax.random.normal(k_a, (d, d), jnp.float32)
  y = jax.random.normal(k_h, (d, d), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  t_mm = common.time_calls(matmul, x, y, repeats=repeats, warmup=warmup)

  med_layer, med_mm = statistics.median(t_layer), statistics.median(t_mm)
  gflops_layer = flops / med_layer / 1e9
  gflops_mm = 2 * d**3 / med_mm / 1e9
  return {
      "batch": batch, "nodes": nodes, "channels": channels,
      "executed_gflop": flops / 1e9, "paper_gflop": paper_flops(batch, nodes, channels) / 1e9, "xla_gflop": (_xla_flops(step, params, h) or float("nan")) / 1e9,
      "layer_median_s": med_layer, "layer_times_s": t_layer, "layer_gflops": gflops_layer,
      "matmul_dim": d, "matmul_median_s": med_mm, "matmul_gflops": gflops_mm,
      "ratio_to_matmul": gflops_layer / gflops_mm,
  }


def main(argv):
  del argv
  results = [bench_one(_BATCH.value, _NODES.value, int(c), _REPEATS.value, _WARMUP.value) for c in _CHANNELS.value]
  header = f"{'B':>4} {'N':>4} {'C':>5} {'layer ms':>10} {'GFLOP/s':>9} {'matmul d':>9} {'mm GFLOP/s':>11} {'ratio':>7}"
  print(header)
  for r in results:
    print(f"{r['batch']:>4} {r['nodes']:>4} {r['channels']:>5} {1e3 * r['layer_median_s']:>10.1f} "
          f"{r['layer_gflops']:>9.1f} {r['matmul_dim']:>9} {r['matmul_gflops']:>11.1f} {r['ratio_to_matmul']:>7.2f}")
  common.report("bench_equivariant", results, _OUT.value)


if __name__ == "__main__":
  app.run(main)
