"""The L-level MGN and the supervised MGN: equivariance, padding, gradients, fixed clusterings, capacity."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgvae_jax import graphs
from mgvae_jax import hierarchy
from mgvae_jax import mgn
from mgvae_jax import testing

SMALL = dict(cluster_features=8, encoder_features=8, latent_dim=4, decoder_features=8, pool_features=8)


def _batch(seed, sizes=(6, 7), pad=8):
  x, e, m = testing.random_graph_batch(np.random.default_rng(seed), list(sizes), pad, node_dim=3, edge_dim=2)
  return graphs.GraphBatch(jnp.asarray(x), jnp.asarray(e), jnp.asarray(m))


def _init(model, batch):
  init = jax.jit(lambda b: model.init({"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1)}, b,
                                      train=True))
  return init(batch)


_scatter_edges = jax.jit(jax.vmap(hierarchy.scatter_edges, (0, 0, None)), static_argnums=2)


def _noise(key, batch, cfg):
  sizes = cfg.level_sizes(batch.pad_size)
  keys = jax.random.split(key, len(cfg.num_clusters))
  return [jax.random.gumbel(k, (batch.num_graphs, n, kk)) for k, n, kk in zip(keys, sizes, cfg.num_clusters)]


@pytest.mark.parametrize("cluster_order,encoder_order", [(1, 2), (2, 1)])
def test_whole_mgn_is_permutation_equivariant(cluster_order, encoder_order):
  cfg = mgn.MGNConfig(num_clusters=(3, 2, 1), cluster_order=cluster_order, encoder_order=encoder_order,
                      global_decoder="dot", **SMALL)
  model = mgn.MGNPredictor(cfg, num_outputs=2, hidden=(16,))
  batch = _batch(0)
  params = _init(model, batch)
  noise = _noise(jax.random.PRNGKey(7), batch, cfg)
  perm = testing.random_permutations(jax.random.PRNGKey(3), batch.num_graphs, batch.pad_size)
  p_batch = graphs.permute_nodes(batch, perm)
  p_noise = [testing.permute_array(noise[0], perm, 1)] + noise[1:]  # only level L's nodes move
  apply = jax.jit(lambda b, nz, train: model.apply(params, b, train=train, noise=nz), static_argnums=2)
  for train in (True, False):
    pred, out = apply(batch, noise, train)
    p_pred, p_out = apply(p_batch, p_noise, train)
    np.testing.assert_allclose(p_pred, pred, atol=1e-4, rtol=1e-4)  # graph-level output invariant
    lv, p_lv = out.levels[0], p_out.levels[0]
    np.testing.assert_array_equal(p_lv.clustering.assignment, testing.permute_array(lv.clustering.assignment, perm, 1))
    np.testing.assert_allclose(p_lv.latents, testing.permute_array(lv.latents, perm, 1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(p_lv.global_logits, testing.permute_array(lv.global_logits, perm, 2), atol=1e-4)
    local = _scatter_edges(lv.local_logits, lv.slots, 8)
    p_local = _scatter_edges(p_lv.local_logits, p_lv.slots, 8)
    np.testing.assert_allclose(p_local, testing.permute_array(local, perm, 2), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(p_out.balanced_cut, out.balanced_cut, atol=1e-6)
    # The coarse graphs are the same: cluster labels are output channels of an equivariant GNN, so the relabelling
    # that Definition 3.13 allows is the identity here.
    for coarse, p_coarse in zip(out.levels[1:], p_out.levels[1:]):
      np.testing.assert_allclose(p_coarse.edges, coarse.edges, atol=1e-5)
      np.testing.assert_allclose(p_coarse.nodes, coarse.nodes, atol=1e-4, rtol=1e-4)
      np.testing.assert_array_equal(p_coarse.mask, coarse.mask)
    np.testing.assert_allclose(p_out.top.nodes, out.top.nodes, atol=1e-4, rtol=1e-4)


def test_padded_nodes_are_never_assigned_and_change_nothing():
  cfg = mgn.MGNConfig(num_clusters=(3, 1), **SMALL)
  model = mgn.MGNPredictor(cfg, num_outputs=1, hidden=(8,))
  batch = _batch(1)
  params = _init(model, batch)
  big = graphs.pad_batch(batch, pad_size=12)
  rng = np.random.default_rng(0)
  garbage = ~np.asarray(big.pair_mask)
  big = graphs.GraphBatch(
      nodes=jnp.where(big.mask[..., None], big.nodes, jnp.asarray(rng.normal(size=big.nodes.shape), jnp.float32)),
      edges=jnp.where(garbage[..., None], jnp.asarray(rng.normal(size=big.edges.shape), jnp.float32), big.edges),
      mask=big.mask)
  noise = _noise(jax.random.PRNGKey(2), batch, cfg)
  big_noise = [jnp.pad(noise[0], ((0, 0), (0, 4), (0, 0)))] + noise[1:]
  apply = jax.jit(lambda b, nz, train: model.apply(params, b, train=train, noise=nz), static_argnums=2)
  for train in (False, True):
    pred, out = apply(batch, noise, train)
    big_pred, big_out = apply(big, big_noise, train)
    np.testing.assert_allclose(big_pred, pred, atol=1e-5, rtol=1e-5)
    ids = np.asarray(big_out.levels[0].clustering.ids)
    assert np.all(ids[~np.asarray(big.mask)] == 3), "padded nodes must be in no cluster"
    np.testing.assert_array_equal(ids[:, :8], np.asarray(out.levels[0].clustering.ids))
    np.testing.assert_allclose(big_out.levels[0].latents[:, :8], out.levels[0].latents, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(big_out.levels[0].latents)[:, 8:] == 0)
    np.testing.assert_allclose(big_out.levels[1].edges, out.levels[1].edges, atol=1e-5)


@pytest.mark.parametrize("kwargs,recon", [
    (dict(cluster_order=1, encoder_order=2, local_decoder="second_order", global_decoder="dot"), 1.0),
    (dict(cluster_order=2, encoder_order=1, local_decoder="dot", global_decoder="second_order"), 1.0),
    (dict(local_decoder="none"), 0.0),  # the paper's supervised MGN loss: task + balanced cut only
])
@pytest.mark.heavy
def test_every_parameter_gets_a_gradient_in_one_step(kwargs, recon):
  cfg = mgn.MGNConfig(num_clusters=(3, 2, 1), **SMALL, **kwargs)
  model = mgn.MGNPredictor(cfg, num_outputs=2, hidden=(16,))
  batch = _batch(4, sizes=(6, 7, 8, 8))  # enough graphs that every level has real pairs for its decoders
  params = _init(model, batch)
  target = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)), jnp.float32)

  def loss(p):
    pred, out = model.apply(p, batch, train=True, rngs={"gumbel": jax.random.PRNGKey(3)})
    return mgn.mgn_loss(pred, target, out, [0.5, 0.5, 0.5], reconstruction_weight=recon)["loss"].mean()

  grads = jax.jit(jax.grad(loss))(params)
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.abs(np.asarray(g)).max() > 0]
  assert not dead, f"parameters without gradient: {dead}"
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("task_gradient", [True, False])
def test_cluster_task_gradient_switch(task_gradient):
  """cluster_task_gradient=False: the clustering's parameters learn from the balanced cut alone."""
  cfg = mgn.MGNConfig(num_clusters=(3, 2, 1), local_decoder="none", cluster_norm=True,
                      cluster_task_gradient=task_gradient, **SMALL)
  model = mgn.MGNPredictor(cfg, num_outputs=1, hidden=(8,))
  batch = _batch(6, sizes=(6, 7, 8, 8))
  params = _init(model, batch)

  def loss(p, with_cut):
    pred, out = model.apply(p, batch, train=True, rngs={"gumbel": jax.random.PRNGKey(3)})
    return (pred ** 2).sum() + (out.balanced_cut.sum() if with_cut else 0.0)

  # Both gradients in one compiled function (one compilation instead of two).
  both = jax.jit(lambda p: (jax.grad(loss)(p, True), jax.grad(loss)(p, False)))(params)

  def cluster_grad(g):
    g = g["params"]["mgn"]
    return max(float(np.abs(np.asarray(x)).max()) for x in jax.tree_util.tree_leaves(g["cluster_0"]))

  with_cut, without_cut = (cluster_grad(g) for g in both)
  assert with_cut > 0
  if task_gradient:
    assert without_cut > 0
  else:
    assert without_cut == 0.0


def test_supervised_mgn_trains():
  cfg = mgn.MGNConfig(num_clusters=(2, 1), local_decoder="none", **SMALL)
  model = mgn.MGNPredictor(cfg, num_outputs=1, hidden=(16,))
  batch = _batch(5, sizes=(3, 5, 7, 8), pad=8)
  target = batch.adjacency.astype(bool).sum((1, 2))[:, None].astype(jnp.float32) / 10.0  # edge count
  params = _init(model, batch)
  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s, key):
    def loss(p):
      pred, out = model.apply(p, batch, train=True, rngs={"gumbel": key})
      return mgn.mgn_loss(pred, target, out, 0.1)["loss"].mean()
    value, g = jax.value_and_grad(loss)(p)
    updates, s = opt.update(g, s)
    return optax.apply_updates(p, updates), s, value

  losses = []
  for i in range(40):
    params, state, value = step(params, state, jax.random.PRNGKey(i))
    losses.append(float(value))
  assert losses[-1] < 0.5 * losses[0], losses


def test_mgn_loss_terms_and_classification():
  cfg = mgn.MGNConfig(num_clusters=(2, 1), **SMALL)
  model = mgn.MGNPredictor(cfg, num_outputs=3, hidden=(8,))
  batch = _batch(6)
  params = _init(model, batch)
  pred, out = jax.jit(lambda p, b: model.apply(p, b, train=False))(params, batch)
  terms = mgn.mgn_loss(pred, jnp.asarray([0, 2]), out, [1.0, 0.0], task="classification", reconstruction_weight=2.0)
  assert terms["loss"].shape == (2,) and terms["balanced_cut"].shape == (2, 2)
  want = terms["task"] + terms["balanced_cut"][:, 0] + 2.0 * terms["reconstruction"].sum(-1)
  np.testing.assert_allclose(terms["loss"], want, rtol=1e-6)
  with pytest.raises(ValueError, match="one lambda per level"):
    mgn.mgn_loss(pred, jnp.asarray([0, 2]), out, [1.0, 1.0, 1.0], task="classification")
  with pytest.raises(ValueError, match="task must be"):
    mgn.mgn_loss(pred, jnp.asarray([0, 2]), out, 1.0, task="ranking")


@pytest.mark.parametrize("name", ["spectral", "kmeans", "given"])
def test_fixed_clusterings_plug_in(name):
  cfg = mgn.MGNConfig(num_clusters=(3, 1), clustering=name, **SMALL)
  model = mgn.MGN(cfg)
  batch = _batch(8)
  given = None
  if name == "given":
    given = [jnp.tile(jnp.arange(8) // 3, (2, 1)), jnp.zeros((2, 3), jnp.int32)]
  params = jax.jit(lambda b: model.init(jax.random.PRNGKey(0), b, train=False, given_ids=given))(batch)
  out = jax.jit(lambda p, b: model.apply(p, b, train=False, given_ids=given))(params, batch)
  ids = np.asarray(out.levels[0].clustering.ids)
  real = np.asarray(batch.mask)
  assert np.all((ids[real] >= 0) & (ids[real] < 3)) and np.all(ids[~real] == 3)
  if name == "given":
    np.testing.assert_array_equal(ids[real], (np.tile(np.arange(8) // 3, (2, 1)))[real])
  assert "cluster_0" not in params["params"]  # fixed clusterings own no parameters


def test_capacity_overflow_reaches_the_output():
  cfg = mgn.MGNConfig(num_clusters=(2, 1), clustering="given", capacity=(3, None), **SMALL)
  model = mgn.MGN(cfg)
  batch = _batch(9, sizes=(8, 5), pad=8)
  given = [jnp.zeros((2, 8), jnp.int32), jnp.zeros((2, 2), jnp.int32)]  # everything in cluster 0
  params = jax.jit(lambda b: model.init(jax.random.PRNGKey(0), b, train=False, given_ids=given))(batch)
  out = jax.jit(lambda p, b: model.apply(p, b, train=False, given_ids=given))(params, batch)
  np.testing.assert_array_equal(out.num_overflow, [[5, 0], [2, 0]])
  assert out.levels[0].slots.index.shape == (2, 2, 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_clusters=()), "non-empty tuple"),
    (dict(num_clusters=(3, 0)), "non-empty tuple"),
    (dict(num_clusters=(3, 1), capacity=(2,)), "capacity has 1 entries for 2 levels"),
    (dict(clustering="louvain"), "clustering must be one of"),
    (dict(local_decoder="mlp"), "local_decoder must be one of"),
    (dict(encoder_order=3), "encoder_order must be 1 or 2"),
])
def test_bad_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mgn.MGNConfig(**kwargs)


def test_given_clustering_needs_ids():
  model = mgn.MGN(mgn.MGNConfig(num_clusters=(2, 1), clustering="given", **SMALL))
  with pytest.raises(ValueError, match="needs given_ids"):
    model.init(jax.random.PRNGKey(0), _batch(0), train=False)


def test_balance_argmax_scores_and_balances_the_evaluation_clustering():
  """The Gumbel-sampled clustering can be balanced while its argmax is not: balance_argmax adds the argmax's cut."""
  batch = _batch(8, sizes=(7, 8, 8, 6))
  configs = {flag: mgn.MGNConfig(num_clusters=(3, 1), local_decoder="none", balance_argmax=flag, **SMALL)
             for flag in (False, True)}
  models = {flag: mgn.MGN(cfg) for flag, cfg in configs.items()}
  params = _init(models[True], batch)
  # Every node leans to cluster 0 by a margin the Gumbel noise hides: the sampled clustering spreads, the argmax
  # puts every node in cluster 0.
  dense = [k for k in params["params"]["cluster_0"] if k.startswith("Dense")]
  head = max(dense, key=lambda k: int(k.split("_")[1]))
  params["params"]["cluster_0"][head]["bias"] = jnp.asarray([0.5, 0.0, 0.0])
  params["params"]["cluster_0"][head]["kernel"] = params["params"]["cluster_0"][head]["kernel"] * 0.01

  def cut(flag, p, train, key=jax.random.PRNGKey(5)):
    return models[flag].apply(p, batch, train=train, rngs={"gumbel": key}).balanced_cut  # [B, levels]

  np.testing.assert_allclose(cut(True, params, True) - cut(False, params, True), cut(False, params, False),
                             rtol=1e-5, atol=1e-6)
  assert float(cut(False, params, False)[:, 0].mean()) > 1.0  # nearly everything in one of 3 clusters (log 3 = 1.1)
  assert float(cut(False, params, True)[:, 0].mean()) < 0.2  # ... while the sampled clustering looks balanced

  def train_cut_only(flag, steps=60):
    opt = optax.adam(0.05)

    @jax.jit
    def step(p, s, i):
      g = jax.grad(lambda q: cut(flag, q, True, jax.random.fold_in(jax.random.PRNGKey(9), i)).sum())(p)
      u, s = opt.update(g, s)
      return optax.apply_updates(p, u), s

    p, s = params, opt.init(params)
    for i in range(steps):
      p, s = step(p, s, i)
    return float(cut(False, p, False)[:, 0].mean())

  assert train_cut_only(True) < 0.3
