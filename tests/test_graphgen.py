"""experiments.graphgen and its data: the split, batches, decoding, presets, and an end-to-end tiny run."""

import json
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from experiments import graphgen
from experiments import trainer
from experiments.configs import graphgen as graphgen_config
from experiments.configs import overrides
from mgvae_jax import training
from mgvae_jax.data import graph_datasets
from mgvae_jax.data import registry
from mgvae_jax import testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dataset,count,test_count", [("community_small", 100, 20), ("ego_small", 200, 40)])
def test_split_is_gdss_first_fifth_and_disjoint(dataset, count, test_count):
  graphs = graph_datasets.load_graphs(dataset)
  assert len(graphs) == count
  train, test = graph_datasets.split(graphs)
  assert len(test) == test_count and len(train) == count - test_count
  assert all(a is b for a, b in zip(test, graphs[:test_count]))  # the first 20 %, unshuffled
  assert not {id(g) for g in train} & {id(g) for g in test}
  assert max(g.number_of_nodes() for g in graphs) == graphgen_config.MAX_NODES[dataset]
  assert all(nx.is_connected(g) for g in graphs)


def test_bfs_order_starts_at_the_hub_and_keeps_the_graph():
  star = nx.relabel_nodes(nx.star_graph(4), {0: 7, 1: 0, 2: 1, 3: 2, 4: 3})  # hub is node 7, listed last
  order = graph_datasets.bfs_order(star)
  assert order[0] == 7 and sorted(order) == sorted(star.nodes)
  g = nx.disjoint_union(nx.path_graph(3), nx.star_graph(3))  # components in turn, the denser hub first
  order = graph_datasets.bfs_order(g)
  assert order[0] == 3 and set(order[:4]) == {3, 4, 5, 6} and order[4] == 1
  # The batch in BFS order is the same graph, the hub in slot 0.
  batch = graph_datasets.to_batch([star], 6, node_order="bfs")
  assert batch.edges[0, 0, 1:5, 0].sum() == 4
  probs = {"node": batch.nodes, "edge": batch.edges[..., 0]}
  assert nx.is_isomorphic(graph_datasets.decode(probs)[0], star)
  with pytest.raises(ValueError, match="node_order"):
    graph_datasets.to_batch([star], 6, node_order="dfs")


def test_batch_and_decode_round_trip():
  graphs = [nx.cycle_graph(5), nx.path_graph(3), nx.star_graph(4)]
  batch = graph_datasets.to_batch(graphs, 6)
  assert batch.nodes.shape == (3, 6, 2) and batch.edges.shape == (3, 6, 6, 1) and batch.mask.all()
  np.testing.assert_array_equal(batch.nodes[1, :, 0], [1, 1, 1, 0, 0, 0])
  probs = {"node": batch.nodes, "edge": batch.edges[..., 0] * 0.9}
  back = graph_datasets.decode(probs)
  for g, h in zip(graphs, back):
    assert nx.is_isomorphic(g, h)
  # Isolated nodes are dropped (GDSS's convention); an edgeless sample comes out empty.
  probs["edge"][0] = 0.0
  assert graph_datasets.decode(probs)[0].number_of_nodes() == 0
  with pytest.raises(ValueError, match="more than the pad size 4"):
    graph_datasets.to_batch(graphs, 4)
  with pytest.raises(ValueError, match="expected node"):
    graph_datasets.decode({"node": batch.nodes[..., :1], "edge": batch.edges[..., 0]})


def test_corrupt_edge_list_file_is_a_clear_error(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps([{"num_nodes": 3, "edges": [[0, 5]]}]))
  with pytest.raises(registry.DataFormatError, match=r"bad edge \[0, 5\]"):
    graph_datasets._parse(json.loads(path.read_text()), str(path))  # pylint: disable=protected-access
  with pytest.raises(registry.DataFormatError, match="non-empty JSON list"):
    graph_datasets._parse([], "empty.json")  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="unknown graph dataset"):
    graph_datasets.load_graphs("grid")


def test_presets_and_overrides():
  for dataset in graphgen_config.DATASETS:
    for preset in graphgen_config.PRESETS:
      config = graphgen_config.get_config(dataset, preset)
      assert config.model.max_nodes == graphgen_config.MAX_NODES[dataset]
    assert graphgen_config.get_config(dataset, "paper").model.prior == (
        "learnable" if dataset == "ego_small" else "standard")
    assert graphgen_config.get_config(dataset, "paper").model.decoder == "mlp"
  config = overrides.apply(graphgen_config.get_config("ego_small", "cpu"), ["train.num_steps=7", "eval_seeds=5"])
  assert config.train.num_steps == 7 and config.eval_seeds == 5
  with pytest.raises(ValueError, match="protocols"):
    overrides.apply(config, ["protocols=('gdss','nope')"])


@pytest.mark.heavy
def test_end_to_end_tiny_run_writes_metrics_and_picture(tmp_path):
  config = graphgen_config.get_config("ego_small", "test")
  report = graphgen.train_and_evaluate(config, str(tmp_path))
  for name in ("config.json", "metrics.json", "metrics.jsonl", "samples.json", "graphs.png", "loss_curve.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert set(report["mmd"]) == {"gdss", "spectre"}
  assert set(report["mmd"]["gdss"]) == {"40", "24"}  # the test set's size, and the configured count
  for protocol in ("gdss", "spectre"):
    ref = report["train_vs_test"][protocol]
    assert all(0 <= ref[s] < 0.2 for s in ("degree", "clustering", "orbit")), ref
  samples = json.loads((tmp_path / "samples.json").read_text())
  assert len(samples) == 40
  assert json.loads((tmp_path / "metrics.json").read_text())["num_test"] == 40
  # A rerun of the finished run returns its report and touches nothing.
  before = testing.directory_snapshot(tmp_path)
  assert graphgen.train_and_evaluate(config, str(tmp_path)) == json.loads((tmp_path / "metrics.json").read_text())
  assert testing.directory_snapshot(tmp_path) == before


def test_rerun_with_another_config_is_refused_and_changes_nothing(tmp_path):
  config = graphgen_config.get_config("ego_small", "test")
  assert trainer.claim_workdir(config, str(tmp_path)) is None
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # a run under way
  before = testing.directory_snapshot(tmp_path)
  other = overrides.apply(config, ["train.num_steps=7"])
  with pytest.raises(training.ConfigMismatchError, match=r"train\.num_steps: 6 in the run, 7 now"):
    graphgen.train_and_evaluate(other, str(tmp_path))
  assert testing.directory_snapshot(tmp_path) == before


def test_bad_flags_exit_with_a_message():
  for args, message in ((["--dataset=grid"], "dataset"), (["--set", "model.mgn.num_clusters=(40,2)"], "clusters"),
                        (["--set", "train.batch_size=0"], "train.batch_size")):
    run = subprocess.run([sys.executable, "-m", "experiments.graphgen", "--preset=test", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
