r"""Does cluster membership add to a trained link-prediction model's score? Post hoc, on a finished linkpred run.

  python -m benchmarks.linkpred_membership --workdir=runs/linkpred_cora_learned

For each seed of the run (its own edge split) and each level l of the learned hierarchy: the share of held-out test
edges and test non-edges whose two nodes share an ancestor cluster at level l, and the test AUC of the score
z_i . z_j + a * [same cluster at l], with a chosen on the validation pairs from A_GRID (a = 0 is the model's own
score). If membership carried what the embedding lacks, some a > 0 would raise validation and test AUC.
The checkpoint read is each seed's latest (--step to choose another). Results:
benchmarks/results/linkpred_membership_<dataset>.json.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from experiments import linkpred
from experiments.configs import linkpred as linkpred_config
from experiments.configs import overrides
from mgvae_jax import link_prediction
from mgvae_jax import training
from mgvae_jax.data import files
from mgvae_jax.evaluation import link_metrics

A_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.linkpred run (learned or fixed clustering).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to read; default each seed's latest.")
_LEVELS = flags.DEFINE_integer("levels", 3, "How many levels, from the finest clustering up (never the top "
                               "clustering, whose clusters are the pooled top).")
_OUT = flags.DEFINE_string("out", None, "JSON path; default benchmarks/results/linkpred_membership_<dataset>.json.")


def seed_membership(config, model, params, split, graph, given, levels: int) -> dict:
  """One seed's row: its model's test AUC, and per level the membership shares and the AUC with a chosen a."""
  out = jax.jit(lambda p: model.apply({"params": p}, graph, train=False, given_ids=given))(params)
  embedding = out.embedding[0]  # [N, d]
  # Each finest node's ancestor slot at every level above it, i.e. its cluster at every level but the top one.
  chain = [np.asarray(a) for a in link_prediction.ancestors([ids[0] for ids in out.cluster_ids],
                                                               embedding.shape[0])[1:]]
  train_pairs = np.asarray(split.train_edges)
  pairs = {"val_pos": split.val_edges, "val_neg": split.val_non_edges, "test_pos": split.test_edges,
           "test_neg": split.test_non_edges}
  pairs = {k: np.asarray(v) for k, v in pairs.items()}
  scores = {k: np.asarray(link_prediction.pair_scores(embedding, v)) for k, v in pairs.items()}
  same = lambda ids, p: (ids[p[:, 0]] == ids[p[:, 1]]).astype(np.float64)
  auc = lambda part, a, ids: link_metrics.auc_ap(scores[f"{part}_pos"] + a * same(ids, pairs[f"{part}_pos"]),
                                                 scores[f"{part}_neg"] + a * same(ids, pairs[f"{part}_neg"]))["auc"]
  rows = []
  for level, ids in enumerate(chain[:levels]):
    best_val, best_a = max((auc("val", a, ids), -a) for a in A_GRID)  # ties: the smallest a
    best_a = -best_a
    rows.append({"level": level, "clusters": int(config.model.mgn.num_clusters[level]),
                 "same_cluster_train_edges": float(same(ids, train_pairs).mean()),
                 "same_cluster_test_edges": float(same(ids, pairs["test_pos"]).mean()),
                 "same_cluster_test_non_edges": float(same(ids, pairs["test_neg"]).mean()),
                 "a": best_a, "val_auc": best_val, "test_auc": auc("test", best_a, ids)})
  return {"val_auc": auc("val", 0.0, chain[0]), "test_auc": auc("test", 0.0, chain[0]), "levels": rows}


def main(argv: Sequence[str]) -> None:
  del argv
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required: a finished experiments.linkpred run")
  config = overrides.from_dict(linkpred_config.LinkpredConfig,
                               files.read_json(os.path.join(workdir, "config.json"), "linkpred run config"))
  if not config.model.hierarchy:
    raise app.UsageError(f"{workdir} has no hierarchy (clustering={config.clustering}): no clusters to test")
  citation = linkpred.load_graph(config)
  model, optimizer, _, _ = linkpred.make_steps(config, training.sharding.data_mesh())
  results = []
  for seed in config.seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    split, graph, given = linkpred.seed_graph(config, citation, seed)
    template = training.create_train_state(model, optimizer, graph, seed, init_kwargs={"given_ids": given})
    manager = training.checkpoint.CheckpointManager(os.path.join(seed_dir, "checkpoints"), max_to_keep=None)
    step = _STEP.value or manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"{seed_dir}/checkpoints: no checkpoint")
    params = manager.restore(step, template).params
    row = dict(seed=seed, step=step, **seed_membership(config, model, params, split, graph, given, _LEVELS.value))
    results.append(row)
    for r in row["levels"]:
      print(f"seed {seed} step {step} level {r['level']} ({r['clusters']} clusters): same cluster: train edges "
            f"{r['same_cluster_train_edges']:.3f}, test edges {r['same_cluster_test_edges']:.3f}, test non-edges "
            f"{r['same_cluster_test_non_edges']:.3f}; a={r['a']:g}: test AUC {100 * row['test_auc']:.2f} -> "
            f"{100 * r['test_auc']:.2f}", flush=True)
  common.report("linkpred_membership", results, _OUT.value if _OUT.value is not None else
                os.path.join("benchmarks", "results", f"linkpred_membership_{config.dataset}.json"))


if __name__ == "__main__":
  app.run(main)
