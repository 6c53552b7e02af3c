r"""MGVAE link prediction on citation graphs (paper section 5.3): AUC / AP and balanced-cut statistics.

  python -m experiments.linkpred --dataset=cora                          # learned clustering, the CPU default
  python -m experiments.linkpred --dataset=citeseer --clustering=spectral
  python -m experiments.linkpred --dataset=cora --preset=paper           # 2,048 epochs per seed

Per seed (config.seeds): VGAE's edge split with that seed (85 % of the edges train; 5 % / 10 % validation / test,
each with as many non-edges, none of them an edge of the full graph), a model initialised with that seed, full-graph
training on the training edges only, and validation AUC every `eval_every` epochs. The reported test AUC / AP are
those at the epoch of best validation AUC (model selection on validation only; the test scores of other epochs are
never looked at). Scores of positive and negative pairs come from one float32 embedding and are ranked together in
float64 (`evaluation.link_metrics.auc_ap`).

Fixed clusterings ("spectral", "kmeans") are computed once per seed on the training graph (every level, then fed to
the MGN as given ids). Balanced-cut statistics (Tables 7-8) are those of the bottom level's clustering at the end.

Writes to --workdir (default runs/linkpred_<dataset>_<clustering>): config.json, seed_<s>/ (checkpoints/,
metrics.jsonl, eval.jsonl, result.json) and metrics.json (mean ± std over seeds, time per epoch, peak memory).
Each seed trains through the one training loop (mgvae_jax.training.run), one full-graph step per epoch, the graph
replicated over every device. Running the same command again resumes each unfinished seed from its latest
checkpoint and returns a finished run's metrics.json unchanged; a workdir of another config is refused.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import trainer
from experiments.configs import linkpred as linkpred_config
from experiments.configs import overrides
from mgvae_jax import fixed_clustering
from mgvae_jax import graphs
from mgvae_jax import link_prediction
from mgvae_jax import training
from mgvae_jax.data import files
from mgvae_jax.data import planetoid
from mgvae_jax.evaluation import link_metrics

LinkpredConfig = linkpred_config.LinkpredConfig
_EVAL_SETS = ("val", "test")


def load_graph(config: LinkpredConfig) -> planetoid.Citation:
  """The configured citation graph (the planted-partition graph for "synthetic"), checked against config.num_nodes."""
  if config.dataset == "synthetic":
    citation = planetoid.planted_partition(community_size=config.num_nodes // 4)
  else:
    citation = planetoid.load_planetoid(config.dataset)
  if citation.num_nodes != config.num_nodes:
    raise ValueError(f"{config.dataset} has {citation.num_nodes} nodes but config.num_nodes={config.num_nodes}")
  return citation


def _graph(citation: planetoid.Citation, adjacency: np.ndarray) -> graphs.GraphBatch:
  n = citation.num_nodes
  return graphs.GraphBatch(nodes=jnp.asarray(citation.features)[None], edges=jnp.asarray(adjacency)[None, ..., None],
                           mask=jnp.ones((1, n), bool))  # [1, N, F], [1, N, N, 1], [1, N]


def fixed_ids(config: LinkpredConfig, citation: planetoid.Citation, adjacency: np.ndarray, seed: int):
  """Given ids per level ([1, N_l] each) for a fixed clustering of the training graph; None for a learned one."""
  if config.clustering in ("learned", "none"):
    return None
  ids = fixed_clustering.fixed_hierarchy(
      adjacency, np.ones(citation.num_nodes, bool), config.model.mgn.num_clusters, config.clustering,
      jax.random.PRNGKey(seed), features=citation.features, pca_dim=config.pca_dim, spectral_dim=config.spectral_dim)
  return tuple(jnp.asarray(i)[None] for i in ids)


def seed_graph(config: LinkpredConfig, citation: planetoid.Citation, seed: int):
  """One seed's edge split, its training graph ([1, N, .]) and fixed clustering ids (None for learned / none)."""
  split = planetoid.split_edges(citation.edges, citation.num_nodes, seed, config.val_fraction, config.test_fraction)
  adjacency = planetoid.train_adjacency(split)
  return split, _graph(citation, adjacency), fixed_ids(config, citation, adjacency, seed)


def make_steps(config: LinkpredConfig, mesh):
  """(model, optimizer, step_fn(state, (graph, given)), jitted eval_step(params, graph, given, pairs)), shared by
  every seed (one compilation). The step runs on the one graph replicated over `mesh`."""
  model = link_prediction.LinkMGVAE(config.model)
  optimizer = training.make_optimizer(config.train, config.train.total_steps(1))
  temperature = trainer.temperature_fn(config.train)

  def loss_fn(params, inputs, key, step):
    graph, given = inputs
    k_gumbel, k_latent = jax.random.split(key)
    out = model.apply({"params": params}, graph, train=True, temperature=temperature(step), given_ids=given,
                      rngs={"gumbel": k_gumbel, "latent": k_latent})
    metrics = {"loss": out.loss[0], "edge": out.reconstruction[0, 0], "kl": out.kl[0],
               "balanced_cut": out.balanced_cut[0], "edge_cut": out.edge_cut[0], "num_overflow": out.num_overflow[0]}
    return out.loss.sum(), metrics

  @jax.jit
  def eval_step(params, graph: graphs.GraphBatch, given, pairs: dict):
    out = model.apply({"params": params}, graph, train=False, given_ids=given)
    scores = {name: link_prediction.pair_scores(out.embedding[0], p) for name, p in pairs.items()}  # float32 each
    bottom = out.cluster_ids[0][0] if out.cluster_ids else None  # [N]; None without a hierarchy
    return scores, bottom, out.num_overflow[0], out.edge_cut[0]

  return model, optimizer, training.make_train_step(loss_fn, optimizer, mesh, shard_inputs=False), eval_step


def run_seed(config: LinkpredConfig, citation: planetoid.Citation, seed: int, workdir: str, mesh,
             stream: Optional[TextIO] = None, steps=None) -> dict:
  """Split, train through the one loop (resuming from workdir's checkpoints), select on validation; returns the
  seed's result (result.json). A seed that has its result.json is finished: that result is returned as it is.

  steps: make_steps(config, mesh), to share across seeds, or None to build them.
  """
  result_path = os.path.join(workdir, "result.json")
  if os.path.isfile(result_path):  # rerunning it would train nothing and lose its timing
    return files.read_json(result_path, "seed result JSON")
  split, graph, given = seed_graph(config, citation, seed)
  pairs = {"val_pos": split.val_edges, "val_neg": split.val_non_edges, "test_pos": split.test_edges,
           "test_neg": split.test_non_edges}
  pairs = {k: jnp.asarray(v, jnp.int32) for k, v in pairs.items()}
  model, optimizer, step_fn, eval_step = steps or make_steps(config, mesh)
  train_cfg = dataclasses.replace(config.train, seed=seed)
  state = training.create_train_state(model, optimizer, graph, train_cfg.seed, init_kwargs={"given_ids": given})
  # Placed once: the loop's per-step replication of an already replicated graph is then a no-op.
  inputs = training.sharding.replicate((graph, given), mesh)

  def evaluate(params, step: int) -> dict:
    scores = jax.device_get(eval_step(params, graph, given, pairs)[0])
    return {name: link_metrics.auc_ap(scores[f"{name}_pos"], scores[f"{name}_neg"]) for name in _EVAL_SETS}

  result = training.run(train_cfg, workdir, state, step_fn, lambda epoch, start: [inputs][start:], 1, mesh=mesh,
                        shard_inputs=False, evaluate=evaluate, evaluate_every=config.eval_every, evaluate_last=True,
                        stream=stream, examples_per_step=1,
                        describe=f"seed {seed}: {len(split.train_edges)} training edges, {len(split.val_edges)} / "
                                 f"{len(split.test_edges)} validation / test edges (+ as many non-edges)")
  records = result.records
  if not records:
    raise RuntimeError(f"seed {seed}: no evaluation records in {workdir}")
  best = max(records, key=lambda r: (r["val"]["auc"], -r["step"]))  # the earliest of equal validation AUCs
  _, bottom_ids, overflow, edge_cut = jax.device_get(eval_step(result.state.params, graph, given, pairs))
  balance = None  # no hierarchy: no clusters
  if config.model.hierarchy:
    # Tables 7-8's sizes, and the share of the training graph's edges that run between bottom-level clusters.
    balance = dict(link_metrics.cluster_balance(np.asarray(bottom_ids), config.model.mgn.num_clusters[0]),
                   edge_cut=float(edge_cut[0]))
  out = {"seed": seed, "best_step": best["step"], "val": best["val"], "test": best["test"], "final": records[-1],
         "balance": balance, "num_overflow": [int(x) for x in overflow],
         "seconds_per_epoch": result.summary["seconds_per_step"],
         "nonfinite_steps_total": result.summary["nonfinite_steps_total"]}
  out = training.progress.to_json(out)
  training.rundir.write_json(result_path, out)
  return out


def train_and_evaluate(config: LinkpredConfig, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Every seed, then metrics.json: test AUC / AP (mean ± std), balanced cuts, time per epoch, peak memory.

  A workdir holding another config is refused (nothing written); one holding this config's finished run returns its
  metrics.json unchanged.
  """
  finished = trainer.claim_workdir(config, workdir, stream)
  if finished is not None:
    return finished
  out = stream or sys.stdout
  citation = load_graph(config)
  print(f"{config.dataset}: {citation.num_nodes} nodes, {citation.num_features} features, {citation.num_edges} "
        f"edges ({citation.num_self_loops_removed} self-loops dropped, {citation.num_isolated_nodes} isolated "
        f"nodes, {citation.num_padded_test_nodes} featureless padded test ids); clustering {config.clustering}, "
        f"levels {config.model.mgn.num_clusters}, capacity {config.model.mgn.capacity}", file=out, flush=True)
  mesh = training.sharding.data_mesh()
  steps = make_steps(config, mesh)
  results = [run_seed(config, citation, s, os.path.join(workdir, f"seed_{s}"), mesh, stream, steps)
             for s in config.seeds]
  timed = [r["seconds_per_epoch"] for r in results if r["seconds_per_epoch"]]
  report = {
      "dataset": config.dataset, "clustering": config.clustering, "preset": config.preset,
      "test": {m: trainer.mean_std([r["test"][m] for r in results]) for m in ("auc", "ap")},
      "val": {m: trainer.mean_std([r["val"][m] for r in results]) for m in ("auc", "ap")},
      "balance": ({k: trainer.mean_std([r["balance"][k] for r in results])
                   for k in ("min", "max", "std", "kl", "edge_cut")} if config.model.hierarchy else None),
      "num_overflow_bottom": (trainer.mean_std([r["num_overflow"][0] for r in results])
                              if config.model.hierarchy else None),
      "seconds_per_epoch": trainer.mean_std(timed) if timed else None,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "seeds": results,
  }
  report = training.progress.to_json(report)
  training.rundir.write_json(os.path.join(workdir, "metrics.json"), report)
  print(format_table(report), file=out, flush=True)
  return report


def format_table(report: dict) -> str:
  """AUC / AP in percent (mean ± std over seeds) and the bottom level's balanced-cut statistics, as markdown."""
  t, b = report["test"], report["balance"]
  pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
  cuts = "– | – | – | – | –"  # no hierarchy (VGAE): no clusters
  if b:
    cuts = (f"{b['min']['mean']:.0f} | {b['max']['mean']:.0f} | {b['std']['mean']:.2f} | {b['kl']['mean']:.3f} | "
            f"{100 * b['edge_cut']['mean']:.1f} %")
  lines = ["| data set | clustering | AUC | AP | min | max | std | KL | edges cut |",
           "|---|---|---|---|---|---|---|---|---|",
           f"| {report['dataset']} | {report['clustering']} | {pct(t['auc'])} | {pct(t['ap'])} | {cuts} |"]
  return "\n".join(lines)


# --- Command line. -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  config = trainer.config_from_main(
      argv, lambda: overrides.apply(linkpred_config.get_config(f.dataset, f.clustering, f.preset), f.set))
  trainer.run_job(train_and_evaluate, config,
                  f.workdir or trainer.default_workdir("linkpred", config.dataset, config.clustering, preset=config.preset))


def define_flags() -> None:
  """Flags, defined only when run as a program (importing this module defines none)."""
  flags.DEFINE_enum("dataset", "cora", linkpred_config.DATASETS, "Citation graph (synthetic: a planted partition).")
  flags.DEFINE_enum("clustering", "learned", linkpred_config.CLUSTERINGS,
                    "learned (learning to cluster), the fixed spectral / kmeans baselines of section 5.3, or none: "
                    "no hierarchy, i.e. VGAE at the same sizes.")
  flags.DEFINE_enum("preset", "cpu", linkpred_config.PRESETS,
                    "cpu: the paper's model, fewer epochs; paper: section 5.3's settings; test: seconds.")
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory; default runs/linkpred_<dataset>_<clustering>, "
                      "plus _<preset> unless cpu.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. train.epochs=1000 (repeatable).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
