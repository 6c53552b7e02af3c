r"""All-at-once MGVAE generic graph generation (paper section 5.2): train, sample, MMD-evaluate, draw.

  python -m experiments.graphgen --dataset=community_small          # the CPU default (minutes)
  python -m experiments.graphgen --dataset=ego_small --preset=paper  # section 5.2's settings, 15 seeds
  python -m experiments.graphgen --dataset=ego_small --set train.num_steps=6000

Data: the first 20 % of the data set's graph list is the test set, the rest trains (GDSS's protocol; train and test
never overlap). Evaluation: for every sampling seed (config.eval_seeds) and every sample count (config.num_generated:
the test set's size and 1,024), squared MMDs of degree, clustering and orbit statistics against the test set under
both kernel protocols (GDSS/GraphRNN Gaussian-EMD, SPECTRE/DiGress Gaussian-TV), reported as mean and std over seeds,
next to the same MMDs between the training and test sets (the data's own floor).

Writes to --workdir (default runs/graphgen_<dataset>, plus _<preset> where not cpu): config.json, checkpoints/,
metrics.jsonl, samples.json (the first seed's graphs, as edge lists), metrics.json, graphs.png (generated above
training graphs) and loss_curve.png.
Running the same command again resumes from the latest checkpoint. A workdir holding another config is refused before
anything is written, and a finished run is left as it is (its metrics.json is returned).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
import jax
import networkx as nx
import numpy as np

from experiments import plots
from experiments import trainer
from experiments.configs import graphgen as graphgen_config
from experiments.configs import overrides
from mgvae_jax import vae
from mgvae_jax.data import graph_datasets
from mgvae_jax.evaluation import graph_mmd
from mgvae_jax.training import sharding

GraphgenConfig = graphgen_config.GraphgenConfig


def load_data(config: GraphgenConfig) -> tuple[list[nx.Graph], list[nx.Graph]]:
  """(train, test) graphs of the configured data set, checked against the model's pad size."""
  train, test = graph_datasets.split(graph_datasets.load_graphs(config.dataset))
  largest = max(g.number_of_nodes() for g in train + test)
  if largest > config.model.max_nodes:
    raise ValueError(f"{config.dataset} has a graph of {largest} nodes but model.max_nodes={config.model.max_nodes}")
  return train, test


def _edge_lists(graph_list: Sequence[nx.Graph]) -> list[dict]:
  return [{"num_nodes": g.number_of_nodes(), "edges": [[int(u), int(v)] for u, v in g.edges()]} for g in graph_list]


def _summary(values: Sequence[Optional[float]]) -> dict:
  """Mean and std over the seeds that produced a value (None: every sample of that seed was empty)."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return {"mean": None, "std": None, "values": list(values)}
  return {"mean": float(v.mean()), "std": float(v.std()), "values": [None if x is None else float(x) for x in values]}


def evaluate(config: GraphgenConfig, model: vae.MGVAE, params, pos_weight: float, train: Sequence[nx.Graph],
             test: Sequence[nx.Graph]) -> tuple[dict, list[nx.Graph]]:
  """MMDs per protocol, sample count and statistic (mean/std over seeds); also returns seed 0's largest sample."""
  results, first = {}, None
  empty = {}
  for count in config.num_generated:
    n = int(count) or len(test)
    per_seed = {p: {s: [] for s in graph_mmd.STATISTICS} for p in config.protocols}
    empty[n] = []
    sampler = trainer.make_sampler(model, min(config.sample_batch_size, n), edge_pos_weight=pos_weight)  # one compile
    for seed in range(config.eval_seeds):
      probs = trainer.sample_probabilities(model, params, n, config.sample_batch_size,
                                           config.train.seed + 1000 + seed,
                                           edge_pos_weight=pos_weight, sampler=sampler)
      generated = graph_datasets.decode(probs, config.edge_threshold)
      empty[n].append(sum(g.number_of_nodes() == 0 for g in generated))
      if seed == 0 and (first is None or n > len(first)):
        first = generated
      for protocol in config.protocols:
        if empty[n][-1] == n:  # nothing to compare (an untrained model): no MMD for this seed, counted in empty_samples
          mmds = {stat: None for stat in graph_mmd.STATISTICS}
        else:
          mmds = graph_mmd.generation_mmd(generated, test, protocol=protocol)
        for stat, value in mmds.items():
          per_seed[protocol][stat].append(value)
    for protocol in config.protocols:
      results.setdefault(protocol, {})[str(n)] = {s: _summary(v) for s, v in per_seed[protocol].items()}
  reference = {p: graph_mmd.generation_mmd(train, test, protocol=p) for p in config.protocols}
  return {"mmd": results, "train_vs_test": reference, "empty_samples": empty}, first


def train_and_evaluate(config: GraphgenConfig, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Train (resuming if workdir has checkpoints), then sample, evaluate and draw. Returns metrics.json."""
  finished = trainer.claim_workdir(config, workdir, stream)
  if finished is not None:
    return finished
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  train, test = load_data(config)
  if len(train) < config.train.batch_size:
    raise ValueError(f"{config.dataset} has {len(train)} training graphs, fewer than train.batch_size="
                     f"{config.train.batch_size}")
  out = stream or sys.stdout
  print(f"{config.dataset}: {len(train)} training and {len(test)} test graphs (test = the first 20 %), padded to "
        f"{config.model.max_nodes} nodes", file=out, flush=True)
  model = vae.MGVAE(config.model)
  batch = graph_datasets.to_batch(train, config.model.max_nodes, config.node_order)
  trained = trainer.train(config, workdir, model, batch, mesh, stream, what="graphs")
  state, summary = trained.state, trained.summary
  if jax.process_index() != 0 or not config.evaluate:
    return {"training": summary}
  params = jax.device_put(sharding.local_copy(state.params), jax.local_devices()[0])

  t0 = time.perf_counter()
  result, samples = evaluate(config, model, params, summary["edge_pos_weight"], train, test)
  seconds = time.perf_counter() - t0
  tmp = os.path.join(workdir, "samples.json.tmp")
  with open(tmp, "w") as f:
    json.dump(_edge_lists(samples), f)
  os.replace(tmp, os.path.join(workdir, "samples.json"))
  drawn = plots.graph_grid(samples, train, os.path.join(workdir, "graphs.png"), columns=config.grid_columns,
                           seed=config.train.seed)
  plots.loss_curve(plots.read_jsonl(os.path.join(workdir, "metrics.jsonl")), os.path.join(workdir, "loss_curve.png"))
  report = {"dataset": config.dataset, "preset": config.preset, "step": summary["steps"],
            "num_train": len(train), "num_test": len(test), "eval_seeds": config.eval_seeds, **result,
            "drawn": drawn, "training": summary, "seconds": {"evaluate": seconds}}
  report = trainer.write_report(report, workdir, {"step": summary["steps"], "mmd": report["mmd"]})
  print(format_table(report), file=out, flush=True)
  return report


def format_table(report: dict) -> str:
  """The MMDs as a markdown table: protocol, sample count, then mean ± std per statistic, and the data's floor."""
  lines = ["| protocol | graphs | degree | clustering | orbit |", "|---|---|---|---|---|"]
  for protocol, by_count in report["mmd"].items():
    for count, stats in by_count.items():
      cells = [f"{stats[s]['mean']:.4f} ± {stats[s]['std']:.4f}" if stats[s]["mean"] is not None else "n/a"
               for s in graph_mmd.STATISTICS]
      lines.append(f"| {protocol} | {count} | " + " | ".join(cells) + " |")
    ref = report["train_vs_test"][protocol]
    lines.append(f"| {protocol} | train vs test | " + " | ".join(f"{ref[s]:.4f}" for s in graph_mmd.STATISTICS)
                 + " |")
  return "\n".join(lines)


# --- Command line. -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS

  def build():
    sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    config = overrides.apply(graphgen_config.get_config(f.dataset, f.preset), f.set)
    sharding.check_batch_size(config.train.batch_size, sharding.data_mesh())
    return config

  config = trainer.config_from_main(argv, build)
  trainer.run_job(train_and_evaluate, config, f.workdir or default_workdir(config))


def default_workdir(config: GraphgenConfig) -> str:
  """runs/graphgen_<dataset>[_<preset> unless cpu]."""
  return trainer.default_workdir("graphgen", config.dataset, preset=config.preset)


def define_flags() -> None:
  """Flags, defined only when run as a program (importing this module defines none)."""
  flags.DEFINE_enum("dataset", "community_small", graphgen_config.DATASETS, "Graphs to learn.")
  flags.DEFINE_enum("preset", "cpu", graphgen_config.PRESETS,
                    "cpu: minutes on a laptop; paper: section 5.2's settings; test: seconds.")
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory; default runs/graphgen_<dataset>, with "
                      "_<preset> appended for a preset other than cpu.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. train.num_steps=5000 (repeatable).")
  trainer.define_distributed_flags()


if __name__ == "__main__":
  define_flags()
  app.run(main)
