"""Section 5.4: images as grid graphs, the quadtree, the image MGVAE, FID-LeNet and the imagegen binary."""

import gzip
import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import imagegen
from experiments.configs import imagegen as imagegen_config
from experiments.configs import overrides
from mgvae_jax import fixed_clustering
from mgvae_jax import image_graphs
from mgvae_jax import image_mgvae
from mgvae_jax import training
from mgvae_jax.data import mnist
from mgvae_jax.data import registry
from mgvae_jax.evaluation import image_fid


# ---------------------------------------------------------------------------------------------------------------------
# The quadtree hierarchy.


@pytest.mark.parametrize("size,levels", [(32, 3), (16, 4), (8, 1)])
def test_quadtree_maps_every_pixel_to_its_parent_at_every_level(size, levels):
  _, ids = image_graphs.quadtree_graphs(size, levels)
  assert len(ids) == levels - 1
  node = np.arange(size * size)  # pixel (i, j) is node i * size + j
  i, j = np.divmod(node, size)
  for m, level_ids in enumerate(ids, start=1):
    assert level_ids.shape == ((size >> (m - 1)) ** 2,)
    node = level_ids[node]  # composed map: pixel -> its level-m ancestor
    side = size >> m
    np.testing.assert_array_equal(node, (i >> m) * side + (j >> m))


def test_coarsened_graphs_are_grids_with_doubling_weights():
  graphs, _ = image_graphs.quadtree_graphs(32, 3)
  for l, g in enumerate(graphs):
    side = 32 >> l
    assert (g.height, g.width, g.num_nodes) == (side, side, side * side)
    np.testing.assert_array_equal(g.adjacency() > 0, image_graphs.grid_adjacency(side, side) > 0)
    # 4 * side * (side - 1) directed edges; between adjacent blocks the coarsening counts 2**l fine edges
    assert g.senders.size == 4 * side * (side - 1)
    np.testing.assert_array_equal(g.weights, np.full(g.senders.size, 2.0 ** l, np.float32))


def test_pyramid_of_a_constant_image_is_constant_and_means_blocks():
  const = jnp.full((2, 32, 32), 0.37)
  for level in image_graphs.image_pyramid(const, 4):
    np.testing.assert_allclose(level, 0.37, rtol=1e-6)
  rng = np.random.default_rng(0)
  x = rng.random((3, 16, 16)).astype(np.float32)
  coarse = image_graphs.image_pyramid(jnp.asarray(x), 2)[1]
  np.testing.assert_allclose(coarse, x.reshape(3, 8, 2, 8, 2).mean((2, 4)), rtol=1e-5)
  np.testing.assert_allclose(image_graphs.upsample_nearest(coarse, 16)[:, ::2, ::2], coarse)


def test_block_pooler_is_invariant_inside_blocks_and_constant_on_constant_input():
  ids = fixed_clustering.grid_clustering(8, 8)
  pooler = image_mgvae.BlockPooler(ids, 16)
  h = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 5)), jnp.float32)
  params = pooler.init(jax.random.PRNGKey(0), h)
  out = pooler.apply(params, h)
  # Permute the pixels inside every block (a different permutation per block): the output does not change.
  perm = np.arange(64)
  for block in range(16):
    members = np.nonzero(ids == block)[0]
    perm[members] = np.random.default_rng(block).permutation(members)
  np.testing.assert_allclose(pooler.apply(params, h[:, perm]), out, rtol=1e-5, atol=1e-6)
  const = pooler.apply(params, jnp.broadcast_to(h[:, :1], h.shape))
  np.testing.assert_allclose(const, jnp.broadcast_to(const[:, :1], const.shape), rtol=1e-6)


def test_message_passing_is_equivariant_to_relabelling_the_graph():
  g = image_graphs.quadtree_graphs(8, 1)[0][0]
  perm = np.random.default_rng(2).permutation(g.num_nodes)  # new node k is old node perm[k]
  inv = np.argsort(perm)
  relabelled = image_graphs.GridGraph(g.height, g.width, inv[g.senders].astype(np.int32),
                                      inv[g.receivers].astype(np.int32), g.weights)
  h = jnp.asarray(np.random.default_rng(3).normal(size=(g.num_nodes, 3)), jnp.float32)
  np.testing.assert_allclose(image_mgvae.neighbour_mean(h[perm], relabelled),
                             image_mgvae.neighbour_mean(h, g)[perm], rtol=1e-5, atol=1e-6)


def test_images_to_graphs_tuple():
  gt = image_graphs.images_to_graphs_tuple(np.random.default_rng(0).random((3, 4, 5)))
  assert gt.nodes.shape == (60, 1) and list(gt.n_node) == [20, 20, 20]
  assert list(gt.n_edge) == [2 * (4 * 4 + 3 * 5)] * 3  # horizontal + vertical pairs, both directions
  assert gt.senders.max() < 60 and (gt.senders // 20 == gt.receivers // 20).all()  # no edge between images


# ---------------------------------------------------------------------------------------------------------------------
# The models.


@pytest.mark.parametrize("name", ["mgvae", "vae"])
def test_models_train_sample_and_validate_shapes(name):
  config = imagegen_config.get_config("mnist", "test", name)
  model = imagegen.build_model(config)
  x = jnp.asarray(np.random.default_rng(0).random((2, 32, 32)), jnp.float32)
  params = model.init({"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x)["params"]
  out = model.apply({"params": params}, x, rngs={"latent": jax.random.PRNGKey(2)})
  levels = 3 if name == "mgvae" else 1
  assert out.reconstruction.shape == (2, levels) and out.kl.shape == (2, levels)
  assert [t.shape for t in out.logits] == [(2, 32 >> l, 32 >> l) for l in range(levels)]
  assert np.isfinite(out.loss).all() and (out.kl >= 0).all()
  s = model.apply({"params": params}, 5, levels - 1, method=type(model).sample, rngs={"latent": jax.random.PRNGKey(3)})
  assert s.shape == (5, 32 >> (levels - 1), 32 >> (levels - 1)) and (s >= 0).all() and (s <= 1).all()
  with pytest.raises(ValueError, match=r"images \[B, 32, 32\]"):
    model.apply({"params": params}, x[:, :28, :28], rngs={"latent": jax.random.PRNGKey(2)})


def test_bernoulli_nll_and_kl_closed_forms():
  logits = jnp.asarray([[[0.0, 2.0]]])
  target = jnp.asarray([[[1.0, 0.0]]])
  np.testing.assert_allclose(image_mgvae.bernoulli_nll(logits, target), [np.log(2) + np.log1p(np.exp(2.0))],
                             rtol=1e-6)
  np.testing.assert_allclose(image_mgvae.diagonal_kl(jnp.zeros((1, 3)), jnp.ones((1, 3))), [0.0], atol=1e-7)
  np.testing.assert_allclose(image_mgvae.diagonal_kl(jnp.asarray([[1.0]]), jnp.asarray([[2.0]])),
                             [0.5 * (1 + 4 - 1 - 2 * np.log(2))], rtol=1e-6)


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="image_size must be a power of two"):
    image_mgvae.ImageMGVAEConfig(image_size=28)
  with pytest.raises(ValueError, match="smaller than the generator"):
    image_mgvae.ImageMGVAEConfig(image_size=32, levels=5)
  with pytest.raises(ValueError, match="model_name"):
    overrides.apply(imagegen_config.get_config("mnist", "test"), ["model_name=gan"])
  with pytest.raises(ValueError, match="train.batch_size must be >= 1"):
    overrides.apply(imagegen_config.get_config("mnist", "test"), ["train.batch_size=0"])


# ---------------------------------------------------------------------------------------------------------------------
# FID-LeNet.


def test_frechet_distance_closed_form_and_self_distance():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
  mu, cov = image_fid.feature_statistics(f)
  assert image_fid.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
  # Diagonal Gaussians: sum (m1 - m2)^2 + (s1 - s2)^2.
  m1, m2, s1, s2 = np.array([0.0, 1.0]), np.array([2.0, -1.0]), np.array([1.0, 3.0]), np.array([2.0, 0.5])
  got = image_fid.frechet_distance(m1, np.diag(s1 ** 2), m2, np.diag(s2 ** 2))
  assert got == pytest.approx(np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2), rel=1e-9)
  with pytest.raises(ValueError, match="n >= 2"):
    image_fid.feature_statistics(f[:1])


def test_fid_lenet_of_a_set_against_itself_is_zero_and_grows_with_noise(tmp_path):
  params = image_fid.LeNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32)))["params"]
  rng = np.random.default_rng(0)
  images = (rng.random((200, 32, 32)) < 0.2).astype(np.float32)
  ref = image_fid.reference_statistics(params, images)
  for s in image_fid.RESOLUTIONS:
    same = image_graphs.image_pyramid(jnp.asarray(images), int(np.log2(32 // s)) + 1)[-1]
    assert image_fid.fid_lenet(params, same, ref[s]) == pytest.approx(0.0, abs=1e-6)
  assert image_fid.fid_lenet(params, np.clip(images + 0.5, 0, 1), ref[32]) > 1e-3
  path = str(tmp_path / "lenet.msgpack")
  image_fid.save_lenet(path, params, {"epochs": 0})
  loaded, info = image_fid.load_lenet(path)
  assert info == {"epochs": 0}
  np.testing.assert_array_equal(image_fid.lenet_features(loaded, images[:3]), image_fid.lenet_features(params,
                                                                                                        images[:3]))
  with open(path, "wb") as f:
    f.write(b"not msgpack")
  with pytest.raises(ValueError, match="could not be read"):
    image_fid.load_lenet(path)


# ---------------------------------------------------------------------------------------------------------------------
# MNIST files.


def _idx(path, magic, shape, payload):
  with gzip.open(path, "wb") as f:
    f.write(struct.pack(">i", magic) + struct.pack(f">{len(shape)}i", *shape) + payload)


def test_read_idx_checks_the_header(tmp_path):
  good = tmp_path / "good.gz"
  _idx(good, 2051, (2, 3, 3), bytes(range(18)))
  assert mnist.read_idx(good, 3).shape == (2, 3, 3)
  bad_magic = tmp_path / "magic.gz"
  _idx(bad_magic, 2049, (2, 3, 3), bytes(18))
  with pytest.raises(registry.DataFormatError, match="magic 2049, expected 2051"):
    mnist.read_idx(bad_magic, 3)
  short = tmp_path / "short.gz"
  _idx(short, 2051, (2, 3, 3), bytes(10))
  with pytest.raises(registry.DataFormatError, match="truncated"):
    mnist.read_idx(short, 3)
  corrupt = tmp_path / "corrupt.gz"
  corrupt.write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(registry.DataFormatError, match="not a readable IDX"):
    mnist.read_idx(corrupt, 3)


def test_pad_images():
  x = np.full((1, 28, 28), 255, np.uint8)
  out = mnist.pad_images(x)
  assert out.shape == (1, 32, 32) and out.dtype == np.float32
  assert out[0, 2:30, 2:30].min() == 1.0 and out.sum() == 28 * 28
  with pytest.raises(ValueError, match="do not fit"):
    mnist.pad_images(np.zeros((1, 33, 33), np.uint8))


@pytest.mark.skipif(not os.path.exists(os.path.join(registry.data_dir(), "mnist", "t10k-labels-idx1-ubyte.gz")),
                    reason="MNIST is not in the data dir")
def test_load_mnist_test_split():
  images, labels = mnist.load_mnist("test")
  assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


# ---------------------------------------------------------------------------------------------------------------------
# The binary, end to end.


@pytest.mark.skipif(not os.path.exists(os.path.join(registry.data_dir(), "mnist", "train-images-idx3-ubyte.gz")),
                    reason="MNIST is not in the data dir")
@pytest.mark.heavy
def test_imagegen_end_to_end_writes_metrics_and_pictures(tmp_path):
  lenet = str(tmp_path / "lenet" / "lenet.msgpack")
  base = overrides.apply(imagegen_config.get_config("mnist", "test"), [f"fid_classifier={lenet}"])
  workdir = str(tmp_path / "run")
  report = imagegen.train_and_evaluate(base, workdir)
  assert report["train"]["steps"] == base.train.num_steps and report["train"]["resumed_from"] is None
  assert report["train"]["examples_per_second"] > 0
  for s in ("32", "16", "8"):
    assert report["fid_lenet"][s] >= 0 and report["fid_lenet_floor_train_vs_test"][s] >= 0
    assert os.path.getsize(os.path.join(workdir, f"samples_{s}.png")) > 0
  for name in ("reconstruction.png", "loss.png", "config.json", "metrics.jsonl"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert json.load(open(os.path.join(workdir, "metrics.json")))["fid_lenet"] == report["fid_lenet"]
  assert os.path.exists(lenet) and os.path.exists(lenet + ".json")
  # A rerun of the finished run returns its report; another config in its workdir is refused.
  assert imagegen.train_and_evaluate(base, workdir) == report
  with pytest.raises(training.ConfigMismatchError, match="train.num_steps"):
    imagegen.train_and_evaluate(overrides.apply(base, ["train.num_steps=6"]), workdir)
  # The baseline, without evaluation, then evaluated in a workdir of its own: it reuses the saved classifier and is
  # scored at the same resolutions.
  vae_base = overrides.apply(base, ["model_name=vae"])
  plain = imagegen.train_and_evaluate(overrides.apply(vae_base, ["evaluate=False"]), str(tmp_path / "vae_plain"))
  assert "fid_lenet" not in plain and plain["train"]["steps"] == base.train.num_steps
  vae = imagegen.train_and_evaluate(vae_base, str(tmp_path / "vae"))
  assert set(vae["fid_lenet"]) == {"32", "16", "8"}
  assert vae["fid_classifier"]["epochs"] == report["fid_classifier"]["epochs"]
