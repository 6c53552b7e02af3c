"""Link prediction (section 5.3): metrics, the fixed hierarchy, the LinkMGVAE model and the linkpred binary."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import linkpred
from experiments.configs import linkpred as linkpred_config
from experiments.configs import overrides
from mgvae_jax import fixed_clustering
from mgvae_jax import graphs
from mgvae_jax import link_prediction as lp
from mgvae_jax import mgn
from mgvae_jax.data import planetoid
from mgvae_jax.evaluation import link_metrics


# --- Metrics. -------------------------------------------------------------------------------------------------------


def test_constant_scores_give_auc_one_half():
  assert link_metrics.auc_ap(np.full(50, 0.7, np.float32), np.full(80, 0.7, np.float32))["auc"] == 0.5


def test_constant_model_gets_auc_one_half():
  """A model whose embedding is constant scores every pair alike: AUC 0.5, AP = the positive fraction."""
  emb = jnp.ones((10, 4), jnp.float32)
  pos = jnp.asarray([[0, 1], [2, 3], [4, 5]])
  neg = jnp.asarray([[0, 9], [1, 8], [2, 7], [3, 6]])
  m = link_metrics.auc_ap(lp.pair_scores(emb, pos), lp.pair_scores(emb, neg))
  assert m["auc"] == 0.5
  assert m["ap"] == pytest.approx(3 / 7)


def test_auc_ap_perfect_and_reversed():
  assert link_metrics.auc_ap([3.0, 2.0], [1.0, 0.0]) == {"auc": 1.0, "ap": 1.0}
  assert link_metrics.auc_ap([0.0, 1.0], [2.0, 3.0])["auc"] == 0.0


def test_auc_ranks_in_one_dtype():
  """Equal scores stay tied even when the two sets arrive in different dtypes (no float32/float64 rounding order)."""
  pos = np.asarray([0.25, 0.5], np.float64)  # exactly representable: the same numbers in both dtypes
  neg = np.asarray([0.25, 0.5], np.float32)
  assert link_metrics.auc_ap(pos, neg)["auc"] == 0.5


@pytest.mark.parametrize("pos,neg,match", [
    (np.zeros((2, 2)), np.zeros(3), "1-D"),
    (np.zeros(0), np.zeros(3), "non-empty"),
    (np.asarray([np.nan, 1.0]), np.zeros(3), "non-finite"),
    (np.asarray(["a"]), np.zeros(3), "real numbers"),
])
def test_auc_ap_rejects_bad_scores(pos, neg, match):
  with pytest.raises(ValueError, match=match):
    link_metrics.auc_ap(pos, neg)


def test_cluster_balance_hand_counted():
  b = link_metrics.cluster_balance(np.asarray([0, 0, 0, 1, 2, 2, 9]), 4, mask=np.asarray([1, 1, 1, 1, 1, 1, 0], bool))
  assert (b["min"], b["max"], b["empty"], b["num_nodes"]) == (0.0, 3.0, 1, 6)
  assert b["std"] == pytest.approx(np.std([3, 1, 2, 0]))
  p = np.asarray([3, 1, 2]) / 6
  assert b["kl"] == pytest.approx(np.sum(p * np.log(p * 4)))
  assert link_metrics.cluster_balance(np.arange(8) % 4, 4)["kl"] == pytest.approx(0.0, abs=1e-12)
  assert link_metrics.cluster_balance(np.zeros(8, int), 4)["kl"] == pytest.approx(np.log(4))
  with pytest.raises(ValueError, match="no real node"):
    link_metrics.cluster_balance(np.full(3, 7), 4)


# --- The fixed hierarchy. --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
  citation = planetoid.planted_partition(num_communities=4, community_size=10, feature_noise=0.0, seed=3)
  a = np.zeros((citation.num_nodes,) * 2, np.float32)
  a[citation.edges[:, 0], citation.edges[:, 1]] = a[citation.edges[:, 1], citation.edges[:, 0]] = 1
  return citation, a


@pytest.mark.parametrize("method", ["spectral", "kmeans"])
def test_fixed_hierarchy_levels(toy, method):
  citation, a = toy
  ids = fixed_clustering.fixed_hierarchy(a, np.ones(40, bool), (4, 2), method, jax.random.PRNGKey(0),
                                         features=citation.features, pca_dim=4, spectral_dim=4)
  assert [i.shape for i in ids] == [(40,), (4,)]
  assert ids[0].min() >= 0 and ids[0].max() < 4 and ids[1].max() < 2
  # Planted communities with informative features and p_in >> p_out: both methods recover them.
  for c in range(4):
    assert len(set(ids[0][citation.labels == c])) == 1
  assert len(set(ids[0])) == 4


def test_fixed_hierarchy_rejects_bad_method(toy):
  _, a = toy
  with pytest.raises(ValueError, match="method"):
    fixed_clustering.fixed_hierarchy(a, np.ones(40, bool), (4,), "louvain", jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="features"):
    fixed_clustering.fixed_hierarchy(a, np.ones(40, bool), (4,), "kmeans", jax.random.PRNGKey(0))


# --- The model. ------------------------------------------------------------------------------------------------------


def test_ancestors_and_multiresolution_embedding():
  ids = [jnp.asarray([1, 0, 1, 2]), jnp.asarray([0, 1, 1]), jnp.asarray([0, 0])]
  anc = lp.ancestors(ids, 4)
  np.testing.assert_array_equal(anc[1], [1, 0, 1, 2])
  np.testing.assert_array_equal(anc[2], [1, 0, 1, 1])
  z = [jnp.eye(4), 10 * jnp.eye(3), 100 * jnp.eye(2)]
  e = lp.multiresolution_embedding(z, ids)
  assert e.shape == (4, 9)
  s = e @ e.T  # same bottom cluster (0, 2): 100 + 10000; nodes 1, 3 share only the top cluster
  assert float(s[0, 2]) == 10100.0 and float(s[1, 3]) == 0.0 and float(s[0, 3]) == 10000.0
  w = lp.multiresolution_embedding(z, ids, jnp.asarray([1.0, 0.5, 0.01]))  # each level's term times its weight
  np.testing.assert_allclose((w @ w.T)[0, 2], 0.5 * 100 + 0.01 * 10000, rtol=1e-6)


def test_default_capacity():
  assert lp.default_capacity(2708, (128, 64, 32)) == (44, 8, 8)
  assert lp.default_capacity(10, (2,)) == (10,)  # never above the level size


def _model_and_graph(score="finest", clustering="learned", capacity=None, **kw):
  citation = planetoid.planted_partition(num_communities=3, community_size=6, seed=1)
  n = citation.num_nodes
  a = np.zeros((n, n), np.float32)
  a[citation.edges[:, 0], citation.edges[:, 1]] = a[citation.edges[:, 1], citation.edges[:, 0]] = 1
  cfg = lp.LinkPredictionConfig(
      mgn=mgn.MGNConfig(num_clusters=(3, 2), capacity=capacity, clustering=clustering, posterior="none",
                        local_decoder="none", pool_top=False, encoder_features=8, latent_dim=8, cluster_features=8,
                        pool_features=8),
      input_features=8, latent_dim=6, score=score, **kw)
  g = graphs.GraphBatch(nodes=jnp.asarray(citation.features)[None], edges=jnp.asarray(a)[None, ..., None],
                        mask=jnp.ones((1, n), bool))
  return lp.LinkMGVAE(cfg), g


@pytest.mark.parametrize("score,kw", [("finest", {}), ("multiresolution", {}), ("finest", {"heads": "gcn"}),
                                      ("finest", {"heads": "gcn", "combine": "residual"}),
                                      ("finest", {"heads": "gcn", "combine": "residual", "unpool": True}),
                                      ("multiresolution", {"level_weight_init": -5.0}),
                                      ("finest", {"hierarchy": False, "heads": "gcn"})])
def test_model_is_permutation_equivariant(score, kw):
  """Eval-mode embeddings permute with the nodes (learned clustering, exact slots: nothing can overflow), with dense
  or GCN heads, and without a hierarchy (VGAE)."""
  model, g = _model_and_graph(score, **kw)
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  perm = np.random.default_rng(0).permutation(g.pad_size)
  gp = graphs.GraphBatch(nodes=g.nodes[:, perm], edges=g.edges[:, perm][:, :, perm], mask=g.mask)
  embed = jax.jit(lambda p, g: model.apply({"params": p}, g, train=False).embedding[0])
  e = embed(params, g)
  ep = embed(params, gp)
  np.testing.assert_allclose(ep, e[perm], rtol=1e-4, atol=1e-5)


def test_model_loss_terms_and_overflow():
  model, g = _model_and_graph(capacity=(2, 1))  # far below the clusters' sizes: most nodes overflow
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  out = jax.jit(lambda p, g: model.apply({"params": p}, g, train=True, rngs={"gumbel": jax.random.PRNGKey(3),
                                                                           "latent": jax.random.PRNGKey(4)}))(params, g)
  assert out.reconstruction.shape == out.kl.shape == out.balanced_cut.shape == out.edge_cut.shape == (1, 2)
  assert bool(((out.edge_cut >= 0) & (out.edge_cut <= 1)).all())
  assert int(out.num_overflow[0, 0]) >= 18 - 3 * 2
  assert np.isfinite(float(out.loss[0]))
  # Every node still has an embedding (from the level's own features): none is all zero.
  assert bool((jnp.abs(out.embedding[0]).sum(-1) > 0).all())
  # The edge cut enters the loss with its weight (same noise, same parameters).
  cut_model = lp.LinkMGVAE(dataclasses.replace(model.config, edge_cut_weight=0.5))
  keys = {"gumbel": jax.random.PRNGKey(3), "latent": jax.random.PRNGKey(4)}
  out2 = jax.jit(lambda p, g: cut_model.apply({"params": p}, g, train=True, rngs=keys))(params, g)
  np.testing.assert_allclose(out2.loss, out.loss + 0.5 * out.edge_cut.sum(-1), rtol=1e-5)


def test_without_a_hierarchy_the_model_is_vgae():
  """hierarchy=False: no MGN parameters, one level; the mean is A_hat relu(A_hat X W0) W1 + b (two GCN layers)."""
  model, g = _model_and_graph(hierarchy=False, heads="gcn")
  rngs = {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  assert set(params) == {"gcn_0", "mean_0", "scale_0"}
  out = model.apply({"params": params}, g, train=False)
  assert out.reconstruction.shape == out.kl.shape == (1, 1) and out.balanced_cut.shape == (1, 0)
  assert out.cluster_ids == () and out.hierarchy is None
  a_hat = lp.gcn_normalize(g.edges[0, ..., 0], g.mask[0])
  h = jax.nn.relu(a_hat @ g.nodes[0] @ params["gcn_0"]["Dense_0"]["kernel"])
  want = a_hat @ h @ params["mean_0"]["kernel"] + params["mean_0"]["bias"]
  np.testing.assert_allclose(out.embedding[0], want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="multiresolution"):
    lp.LinkPredictionConfig(hierarchy=False, score="multiresolution")
  with pytest.raises(ValueError, match="heads"):
    lp.LinkPredictionConfig(heads="mlp")
  with pytest.raises(ValueError, match="combine"):
    lp.LinkPredictionConfig(combine="sum")


def test_residual_combination_starts_as_vgae():
  """combine="residual": at initialisation the finest embedding is VGAE's on the same GCN and head parameters; the
  local latents' kernels start at zero and get a gradient."""
  model, g = _model_and_graph(heads="gcn", combine="residual")
  vgae, _ = _model_and_graph(hierarchy=False, heads="gcn")
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  assert not np.asarray(params["mean_0_local"]["kernel"]).any()
  shared = {k: params[k] for k in ("gcn_0", "mean_0", "scale_0")}
  embed = lambda m: jax.jit(lambda p: m.apply({"params": p}, g, train=False).embedding)
  np.testing.assert_allclose(embed(model)(params), embed(vgae)(shared), rtol=1e-5, atol=1e-6)
  keys = {"gumbel": jax.random.PRNGKey(3), "latent": jax.random.PRNGKey(4)}
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, g, train=True, rngs=keys).loss.sum()))(params)
  assert np.abs(np.asarray(grads["mean_0_local"]["kernel"])).sum() > 0


def test_unpooling_starts_as_vgae_and_reads_each_nodes_ancestors():
  """unpool=True: the finest mean gains gate * A_hat Dense(context), the gate zero at initialisation (so the model
  starts as VGAE) and trained; the context of a node is its ancestors' normalised [features || latents], so nodes in
  one bottom cluster share it, and changing one cluster's pooled features changes the context of its members only."""
  model, g = _model_and_graph(heads="gcn", combine="residual", unpool=True)
  vgae, _ = _model_and_graph(hierarchy=False, heads="gcn")
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  assert not np.asarray(params["unpool_gate"]).any()
  shared = {k: params[k] for k in ("gcn_0", "mean_0", "scale_0")}
  embed = lambda m: jax.jit(lambda p: m.apply({"params": p}, g, train=False).embedding)
  np.testing.assert_allclose(embed(model)(params), embed(vgae)(shared), rtol=1e-5, atol=1e-6)
  keys = {"gumbel": jax.random.PRNGKey(3), "latent": jax.random.PRNGKey(4)}
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, g, train=True, rngs=keys).loss.sum()))(params)
  assert np.abs(np.asarray(grads["unpool_gate"])).sum() > 0
  # With the gate open and heads="dense" (no propagation after the context), the context term is Dense(context):
  # equal for the members of one bottom cluster whenever their coarser ancestors agree, which they do (one path up).
  dense, _ = _model_and_graph(combine="residual", unpool=True)
  p = jax.jit(lambda g: dense.init(rngs, g, train=True))(g)["params"]
  p = dict(p, unpool_gate=jnp.ones_like(p["unpool_gate"]))
  closed = dict(p, unpool_gate=jnp.zeros_like(p["unpool_gate"]))
  run = jax.jit(lambda p: dense.apply({"params": p}, g, train=False))
  out = run(p)
  term = np.asarray(out.embedding[0] - run(closed).embedding[0])  # [N, d]
  ids = np.asarray(out.cluster_ids[0][0])
  assert len(set(ids.tolist())) > 1
  for k in set(ids.tolist()):
    np.testing.assert_allclose(term[ids == k], np.broadcast_to(term[ids == k][0], term[ids == k].shape), atol=1e-5)
  assert np.abs(term).sum() > 0


def test_hierarchy_can_leave_the_input_encoder_to_the_finest_loss():
  """hierarchy_trains_input=False: the input GCN's gradient is the one of the finest level's terms alone (with
  combine="residual" at initialisation, VGAE's gradient), while the hierarchy's parameters still learn."""
  model, g = _model_and_graph(heads="gcn", combine="residual", hierarchy_trains_input=False, coarse_weight=1.0)
  vgae, _ = _model_and_graph(hierarchy=False, heads="gcn")
  rngs = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1), "latent": jax.random.PRNGKey(2)}
  params = jax.jit(lambda g: model.init(rngs, g, train=True))(g)["params"]
  keys = {"gumbel": jax.random.PRNGKey(3), "latent": jax.random.PRNGKey(4)}
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, g, train=True, rngs=keys).loss.sum()))(params)
  shared = {k: params[k] for k in ("gcn_0", "mean_0", "scale_0")}
  # The finest term is VGAE's loss with its KL weighted per level as in the full model: same latent noise stream.
  want = jax.jit(jax.grad(lambda p: vgae.apply({"params": p}, g, train=True, rngs=keys).loss.sum()))(shared)
  np.testing.assert_allclose(grads["gcn_0"]["Dense_0"]["kernel"], want["gcn_0"]["Dense_0"]["kernel"], rtol=1e-4,
                             atol=1e-6)
  assert any(np.abs(np.asarray(x)).sum() > 0 for x in jax.tree_util.tree_leaves(grads["mgn"]))


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="posterior"):
    lp.LinkPredictionConfig(mgn=mgn.MGNConfig(posterior="diagonal"))
  with pytest.raises(ValueError, match="score"):
    lp.LinkPredictionConfig(score="max")
  with pytest.raises(ValueError, match="balance_argmax"):  # LinkMGVAE adds the argmax clustering's cut itself
    lp.LinkPredictionConfig(mgn=mgn.MGNConfig(posterior="none", balance_argmax=True))
  with pytest.raises(ValueError, match="clustering"):
    linkpred_config.get_config("cora", "louvain")
  cfg = linkpred_config.get_config("cora", "spectral")
  assert cfg.model.mgn.clustering == "given" and cfg.model.mgn.num_clusters[0] == 128
  with pytest.raises(ValueError, match="model.mgn.clustering"):
    overrides.apply(cfg, ["clustering=learned"])
  with pytest.raises(ValueError, match="seeds"):
    overrides.apply(cfg, ["seeds=(1, 1)"])
  assert overrides.apply(cfg, ["train.epochs=7"]).train.epochs == 7
  with pytest.raises(ValueError, match="train.epochs"):
    overrides.apply(cfg, ["train.epochs=0"])
  with pytest.raises(ValueError, match="batch_size"):
    overrides.apply(cfg, ["train.batch_size=4"])
  vgae = linkpred_config.get_config("cora", "none")
  assert not vgae.model.hierarchy and vgae.model.heads == "gcn"
  with pytest.raises(ValueError, match="model.hierarchy"):
    overrides.apply(vgae, ["model.hierarchy=True"])
  with pytest.raises(ValueError, match="unpool needs the hierarchy"):
    lp.LinkPredictionConfig(hierarchy=False, heads="gcn", unpool=True)
  # The cpu preset is the design that adds to VGAE; the paper preset is section 5.3 as written.
  cpu, paper = linkpred_config.get_config("cora"), linkpred_config.get_config("cora", preset="paper")
  assert cpu.model.unpool and cpu.model.combine == "residual" and cpu.model.mgn.cluster_noise == 0
  assert not paper.model.unpool and paper.model.heads == "dense" and paper.model.mgn.cluster_noise == 1
  assert paper.train.epochs == 2048


# --- The binary, on the synthetic graph. ----------------------------------------------------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("clustering", ["learned", "kmeans", "none"])
def test_tiny_run_writes_metrics(tmp_path, clustering):
  config = linkpred_config.get_config("synthetic", clustering, "test")
  report = linkpred.train_and_evaluate(config, str(tmp_path))
  metrics = json.load(open(tmp_path / "metrics.json"))
  assert metrics["test"]["auc"]["n"] == len(config.seeds)
  for r in metrics["seeds"]:
    assert 0.0 <= r["test"]["auc"] <= 1.0 and 0.0 <= r["test"]["ap"] <= 1.0
    assert r["best_step"] % config.eval_every == 0 or r["best_step"] == config.train.epochs
    if clustering == "none":  # VGAE: no clusters to count
      assert r["balance"] is None and r["num_overflow"] == []
    else:
      assert r["balance"]["num_nodes"] == config.num_nodes
    records = [json.loads(line) for line in open(tmp_path / f"seed_{r['seed']}" / "eval.jsonl")]
    assert [x["step"] for x in records] == list(range(config.eval_every, config.train.epochs + 1, config.eval_every))
    best = max(records, key=lambda x: (x["val"]["auc"], -x["step"]))
    assert r["test"] == best["test"]  # the test numbers are those at the best validation epoch
  assert os.path.exists(tmp_path / "config.json")
  assert report == metrics
  assert linkpred.train_and_evaluate(config, str(tmp_path)) == metrics  # finished: its report, nothing redone
