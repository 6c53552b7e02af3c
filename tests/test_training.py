"""Training core: the guarded step, the one loop (bit-exact resume, evaluation records), checkpoints (keep-last-k,
partial saves, damaged and foreign checkpoints), run directories that are never clobbered, progress."""

import io
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgvae_jax import graphs
from mgvae_jax import mgn
from mgvae_jax import vae
from mgvae_jax import training
from mgvae_jax.data import pipeline
from mgvae_jax.training import checkpoint

N, T, E = 9, 5, 3  # slots, node types ("no node" = T - 1), bond types
NUM_GRAPHS, BATCH, SEED = 8, 4, 7


def _molecules(seed, m=NUM_GRAPHS):
  """Random tree-shaped 'molecules' as stacked host arrays (unused slots are "no node" nodes)."""
  rng = np.random.default_rng(seed)
  nodes = np.zeros((m, N, T), np.float32)
  edges = np.zeros((m, N, N, E), np.float32)
  for g in range(m):
    k = int(rng.integers(3, N + 1))
    nodes[g, np.arange(k), rng.integers(0, T - 1, k)] = 1
    nodes[g, k:, T - 1] = 1
    for i in range(1, k):
      j, bt = int(rng.integers(0, i)), int(rng.integers(0, E))
      edges[g, i, j, bt] = edges[g, j, i, bt] = 1
  return graphs.GraphBatch(nodes, edges, np.ones((m, N), bool))


def _config():
  return vae.MGVAEConfig(
      mgn=mgn.MGNConfig(num_clusters=(3, 1), posterior="full", local_decoder="none", cluster_features=8,
                        encoder_features=8, latent_dim=4, pool_features=8, global_encoder_layers=1),
      max_nodes=N, node_classes=T, edge_classes=E, decoder_features=8, decoder_layers=1)


@pytest.fixture(scope="module")
def setup():
  """One model and one jitted step for the whole module (compilation dominates the runtime)."""
  data = _molecules(0)
  model = vae.MGVAE(_config())
  # clip_by_global_norm brings an EmptyState into opt_state: checkpoints must cope with it.
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  sample, _ = next(pipeline.batches(data, BATCH, seed=SEED, epoch=0))
  state = training.create_train_state(model, optimizer, sample, seed=0)
  loss_fn = vae.make_loss_fn(model, vae.edge_pos_weight(data), lambda s: jnp.maximum(0.5, 1.0 - 1e-3 * s))
  jitted = training.make_train_step(loss_fn, optimizer)
  step_fn = lambda state, batch, graph_mask: jitted(state, (batch, graph_mask))
  return dict(data=data, model=model, optimizer=optimizer, state=state, step_fn=step_fn, jitted=jitted)


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _run(setup, state, stop):
  """Train from state.step to `stop`, taking each step's batch from its (epoch, batch index) position."""
  steps_per_epoch = pipeline.num_batches(NUM_GRAPHS, BATCH)
  losses = []
  while int(state.step) < stop:
    epoch, index = checkpoint.data_position(int(state.step), steps_per_epoch)
    for i, (batch, graph_mask) in enumerate(pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=epoch)):
      if i < index:
        continue  # a resumed run skips the batches its checkpoint already consumed
      if int(state.step) >= stop:
        break
      state, metrics = setup["step_fn"](state, batch, graph_mask)
      losses.append(float(metrics["loss"]))
  return state, losses


def test_train_step_changes_params_and_loss_is_finite(setup):
  state, losses = _run(setup, setup["state"], 3)
  assert int(state.step) == 3
  assert not _leaves_equal(state.params, setup["state"].params)
  assert np.all(np.isfinite(losses))
  batch, graph_mask = next(pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=0))
  _, metrics = setup["step_fn"](state, batch, graph_mask)
  assert bool(metrics["finite"]) and int(metrics["nonfinite_in_a_row"]) == 0
  for name in ("reconstruction", "kl", "balanced_cut"):
    assert metrics[name].shape == (2,)  # one value per encoded level
  eval_fn = vae.make_eval_step(setup["model"], edge_pos_weight=1.0)
  ev = eval_fn(state.params, batch, graph_mask)
  assert bool(ev["finite"]) and int(ev["num_graphs"]) == BATCH


def test_graph_mask_excludes_padding_graphs(setup):
  batch, graph_mask = next(pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=0))
  half = np.array([True, True, False, False])
  _, m_all = setup["step_fn"](setup["state"], batch, graph_mask)
  _, m_half = setup["step_fn"](setup["state"], batch, half)
  # Same per-step randomness; the half mean differs from the full one, and is a mean (not a sum over 4).
  assert not np.isclose(float(m_all["loss"]), float(m_half["loss"]))
  assert np.isfinite(float(m_half["loss"]))


def test_nonfinite_steps_are_skipped_and_counted(setup):
  state = setup["state"]
  batch, graph_mask = next(pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=0))
  nodes = batch.nodes.copy()
  nodes[0, 0, 0] = np.nan  # a real graph: the loss is NaN
  bad = graphs.GraphBatch(nodes, batch.edges, batch.mask)
  step_fn = setup["step_fn"]

  s1, m1 = step_fn(state, bad, graph_mask)
  assert not bool(m1["finite"])
  assert _leaves_equal(s1.params, state.params) and _leaves_equal(s1.opt_state, state.opt_state)
  assert (int(s1.step), int(s1.nonfinite_in_a_row), int(s1.nonfinite_total)) == (1, 1, 1)
  training.check_nonfinite(s1, max_in_a_row=2)  # below the limit: no error

  s2, _ = step_fn(s1, bad, graph_mask)
  assert _leaves_equal(s2.params, state.params) and _leaves_equal(s2.opt_state, state.opt_state)
  assert (int(s2.step), int(s2.nonfinite_in_a_row), int(s2.nonfinite_total)) == (2, 2, 2)
  with pytest.raises(training.NonFiniteLossError, match=r"2 non-finite training steps in a row.*last good checkpoint"):
    training.check_nonfinite(s2, max_in_a_row=2)

  s3, m3 = step_fn(s2, batch, graph_mask)
  assert bool(m3["finite"])
  assert (int(s3.step), int(s3.nonfinite_in_a_row), int(s3.nonfinite_total)) == (3, 0, 2)
  assert not _leaves_equal(s3.params, state.params)
  training.check_nonfinite(s3, max_in_a_row=1)


def _loop(setup, workdir, num_steps, evaluate=None, **kw):
  """The shared loop on the module's data: checkpoints every 2 steps, evaluations every step (when given)."""
  config = training.TrainConfig(batch_size=BATCH, num_steps=num_steps, seed=SEED, log_every=1, checkpoint_every=2,
                                keep_checkpoints=5, **kw)
  batches = lambda epoch, start: pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=epoch, start=start)
  return training.run(config, str(workdir), setup["state"], setup["jitted"], batches,
                      pipeline.num_batches(NUM_GRAPHS, BATCH), evaluate=evaluate, evaluate_every=1 if evaluate else 0,
                      stream=io.StringIO())


def test_the_loop_resumes_bit_exact_and_keeps_evaluation_records_in_step(setup, tmp_path):
  """A run stopped after step 3 (its last checkpoint at 2) and run again ends bitwise where an uninterrupted one
  does; the evaluation record of step 3, written after the checkpoint it outlived, is dropped and redone."""
  evaluate = lambda params, step: {"norm": float(sum(np.abs(np.asarray(x)).sum()
                                                     for x in jax.tree_util.tree_leaves(params)))}
  straight = _loop(setup, tmp_path / "straight", 6, evaluate)
  assert [r["step"] for r in straight.records] == [1, 2, 3, 4, 5, 6]

  first = _loop(setup, tmp_path / "stopped", 3, evaluate)
  assert first.summary["resumed_from"] is None
  with training.CheckpointManager(str(tmp_path / "stopped" / "checkpoints")) as manager:
    manager.set_aside(3)  # as if killed after step 3's evaluation, before its checkpoint
  resumed = _loop(setup, tmp_path / "stopped", 6, evaluate)
  assert resumed.summary["resumed_from"] == 2
  if hasattr(setup["jitted"], "_cache_size"):  # a restored state must not recompile the step (committed arrays)
    assert setup["jitted"]._cache_size() == 1
  assert _leaves_equal(resumed.state.params, straight.state.params)
  assert _leaves_equal(resumed.state.opt_state, straight.state.opt_state)
  assert int(resumed.state.step) == int(straight.state.step) == 6
  np.testing.assert_array_equal(resumed.state.key, straight.state.key)
  on_disk = [json.loads(l) for l in open(tmp_path / "stopped" / "eval.jsonl")]
  assert [r["step"] for r in on_disk] == [r["step"] for r in resumed.records] == [1, 2, 3, 4, 5, 6]
  assert resumed.records == straight.records


def test_the_loop_stops_on_nonfinite_steps_with_checkpoints_committed(setup, tmp_path):
  def bad_batches(epoch, start):
    for batch, graph_mask in pipeline.batches(setup["data"], BATCH, seed=SEED, epoch=epoch, start=start):
      nodes = batch.nodes.copy()
      nodes[0, 0, 0] = np.nan
      yield graphs.GraphBatch(nodes, batch.edges, batch.mask), graph_mask

  config = training.TrainConfig(batch_size=BATCH, num_steps=10, log_every=1, checkpoint_every=1,
                                max_nonfinite_in_a_row=3)
  with pytest.raises(training.NonFiniteLossError, match="3 non-finite training steps in a row"):
    training.run(config, str(tmp_path), setup["state"], setup["jitted"], bad_batches, 2, stream=io.StringIO())
  with training.CheckpointManager(str(tmp_path / "checkpoints")) as manager:
    assert manager.latest_step() == 3  # every started save is committed before the error leaves the loop


def test_train_config_checks_its_fields():
  with pytest.raises(ValueError, match="train.batch_size must be >= 1"):
    training.TrainConfig(batch_size=0)
  with pytest.raises(ValueError, match="lr_schedule"):
    training.TrainConfig(lr_schedule="linear")
  assert training.TrainConfig(epochs=3).total_steps(7) == 21 and training.TrainConfig(num_steps=5).total_steps(7) == 5
  cosine = training.make_optimizer(training.TrainConfig(lr_schedule="cosine", grad_clip=0.0), 10)
  params = {"w": jnp.ones(())}
  opt = cosine.init(params)
  for _ in range(11):  # the 11th update is the first at the schedule's end
    update, opt = cosine.update({"w": jnp.ones(())}, opt, params)
  assert abs(float(update["w"])) == pytest.approx(1e-5, rel=0.05)  # 1 % of the rate at the last step


def test_restore_or_init_without_checkpoint(setup, tmp_path):
  with training.CheckpointManager(str(tmp_path)) as manager:
    state, ok = training.restore_or_init(manager, setup["state"])
    assert not ok and state is setup["state"] and manager.latest_step() is None


def test_checkpoint_of_another_config_raises_and_is_kept(setup, tmp_path):
  """A good checkpoint that does not fit this run's state is an error, never set aside (that would lose the run)."""
  with training.CheckpointManager(str(tmp_path)) as manager:
    manager.save(setup["state"], force=True)
    manager.wait()
  other = setup["state"].replace(params=jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape + (2,), x.dtype),
                                                               setup["state"].params))
  with training.CheckpointManager(str(tmp_path)) as manager:
    with pytest.raises(RuntimeError, match="intact but does not fit this run's state.*written with another config"):
      training.restore_or_init(manager, other)
    assert manager.all_steps() == [int(setup["state"].step)]  # still there
  assert not [p for p in tmp_path.iterdir() if "unrestorable" in p.name]


def _numbered(state, i):
  return state.replace(step=jnp.asarray(i, jnp.int32), params=jax.tree_util.tree_map(lambda x: x + i, state.params))


def test_keep_last_k_and_save_interval(setup, tmp_path):
  state = setup["state"]
  with training.CheckpointManager(str(tmp_path), max_to_keep=2) as manager:
    for i in range(1, 6):
      assert manager.save(_numbered(state, i))
    manager.wait()
    assert manager.all_steps() == [4, 5]
    assert sorted(d for d in os.listdir(tmp_path) if d.isdigit()) == ["4", "5"]
    restored, ok = training.restore_or_init(manager, state)
  assert ok and int(restored.step) == 5
  assert _leaves_equal(restored.params, _numbered(state, 5).params)

  with training.CheckpointManager(str(tmp_path / "interval"), save_interval_steps=3) as manager:
    saved = [manager.save(_numbered(state, i)) for i in range(1, 6)]
    assert manager.save(_numbered(state, 5), force=True)  # e.g. the final step
    assert not manager.save(_numbered(state, 5), force=True)  # already saved: no error
    manager.wait()
    # orbax always takes the first save of an empty directory, then every 3rd step.
    assert saved == [True, False, True, False, False]
    assert manager.latest_step() == 5 and manager.all_steps() == [1, 3, 5]


def test_unfinished_save_does_not_break_restore(setup, tmp_path):
  """A save killed before orbax's final rename leaves `<step>.orbax-checkpoint-tmp-<ts>`: orbax does not list it.

  A finalised-looking but broken step directory (here: empty, as after hand damage) is listed by orbax, so
  restore_or_init sets it aside and falls back to the previous good step.
  """
  state = setup["state"]
  with training.CheckpointManager(str(tmp_path), max_to_keep=5) as manager:
    manager.save(_numbered(state, 1))
    manager.save(_numbered(state, 2))
    manager.wait()
  partial = tmp_path / "3.orbax-checkpoint-tmp-1700000000000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\x00not a checkpoint")
  with training.CheckpointManager(str(tmp_path), max_to_keep=5) as manager:
    assert manager.latest_step() == 2
    restored, ok = training.restore_or_init(manager, state)
  assert ok and int(restored.step) == 2
  assert _leaves_equal(restored.params, _numbered(state, 2).params)

  (tmp_path / "4").mkdir()  # broken "final" directory
  with training.CheckpointManager(str(tmp_path), max_to_keep=5) as manager:
    assert manager.latest_step() == 4
    restored, ok = training.restore_or_init(manager, state)
    assert ok and int(restored.step) == 2
    # Set aside, so the resumed run's next save is not refused as older than the broken step 4.
    assert manager.all_steps() == [1, 2]
    assert any(d.startswith("4.unrestorable-") for d in os.listdir(tmp_path))
    assert manager.save(_numbered(state, 3))
    manager.wait()
    assert manager.latest_step() == 3


@pytest.mark.parametrize("damage", ["truncate_data", "remove_data", "truncate_manifest"])
def test_damaged_checkpoint_is_set_aside_and_the_previous_restored(setup, tmp_path, damage):
  """Truncated or missing files (not only empty folders) are damage, not another config."""
  state = setup["state"]
  with training.CheckpointManager(str(tmp_path), max_to_keep=5) as manager:
    manager.save(_numbered(state, 1))
    manager.save(_numbered(state, 2))
    manager.wait()
  item = tmp_path / "2" / "state"
  data = max((p for p in item.glob("ocdbt.process_*/d/*") if p.is_file()), key=lambda p: p.stat().st_size)
  if damage == "truncate_data":
    data.write_bytes(b"")
  elif damage == "remove_data":
    data.unlink()
  else:
    (item / "manifest.ocdbt").write_bytes(b"")
  with training.CheckpointManager(str(tmp_path), max_to_keep=5) as manager:
    restored, ok = training.restore_or_init(manager, state)
    assert ok and int(restored.step) == 2 - 1
    assert _leaves_equal(restored.params, _numbered(state, 1).params)
    assert manager.all_steps() == [1]
  assert any(p.name.startswith("2.unrestorable-") for p in tmp_path.iterdir())


def test_claim_refuses_another_config_and_touches_nothing(tmp_path):
  config = {"dataset": "qm9", "train": {"num_steps": 6, "kill_at_step": 0}, "num_samples": 24}
  assert training.rundir.claim(str(tmp_path / "run"), config)
  path = tmp_path / "run" / "config.json"
  before = (path.read_bytes(), path.stat().st_mtime_ns)
  assert not training.rundir.claim(str(tmp_path / "run"), config)
  # Fault injection does not change what a run computes: a rerun may differ in it.
  assert not training.rundir.claim(str(tmp_path / "run"), dict(config, train={"num_steps": 6, "kill_at_step": 3}))
  other = dict(config, num_samples=50, train={"num_steps": 9, "kill_at_step": 0})
  with pytest.raises(training.ConfigMismatchError, match=r"(?s)2 field\(s\) differ.*num_samples: 24 in the run, 50 "
                                                          r"now.*train.num_steps: 6 in the run, 9 now"):
    training.rundir.claim(str(tmp_path / "run"), other)
  path.write_bytes(b"\xff\xfe not json")
  with pytest.raises(training.ConfigMismatchError, match="cannot be read"):
    training.rundir.claim(str(tmp_path / "run"), config)
  assert path.read_bytes() == b"\xff\xfe not json"
  path.write_bytes(before[0])
  assert training.rundir.finished_report(str(tmp_path / "run")) is None
  # A field added after the run was made: the same run when this config leaves it at its default, else refused.
  newer = dict(config, rank_order="canonical", train={"num_steps": 6, "kill_at_step": 0, "warmup": 0})
  defaults = {"rank_order": "canonical", "train": {"warmup": 0}}
  assert not training.rundir.claim(str(tmp_path / "run"), newer, defaults=defaults)
  with pytest.raises(training.ConfigMismatchError, match=r"rank_order: <absent> in the run, \"smiles\" now"):
    training.rundir.claim(str(tmp_path / "run"), dict(newer, rank_order="smiles"), defaults=defaults)
  with pytest.raises(training.ConfigMismatchError, match="rank_order: <absent>"):
    training.rundir.claim(str(tmp_path / "run"), newer)  # without the defaults, nothing can be assumed
  assert path.read_bytes() == before[0]


def test_data_position():
  assert checkpoint.data_position(0, 2) == (0, 0)
  assert checkpoint.data_position(3, 2) == (1, 1)
  assert checkpoint.data_position(6, 2) == (3, 0)
  with pytest.raises(ValueError):
    checkpoint.data_position(1, 0)


def test_progress_prints_rate_and_eta_and_writes_jsonl(tmp_path):
  path = tmp_path / "logs" / "metrics.jsonl"
  out = io.StringIO()
  progress = training.Progress(total_steps=5, log_every=2, writer_path=str(path), stream=out)
  lines = [progress.update(s, {"loss": jnp.asarray(1.5 / s), "kl": jnp.asarray([0.5, np.nan]),
                               "finite": jnp.asarray(True)}) for s in range(1, 6)]
  assert [line is not None for line in lines] == [False, True, False, True, True]  # every 2 steps and the last
  printed = out.getvalue().splitlines()
  assert len(printed) == 3
  assert re.search(r"step 2/5 loss=0\.75 kl=\[0\.5,nan\] \| [\d.]+ steps/s ETA \d+:\d\d:\d\d", printed[0])
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4, 5]
  assert records[0]["kl"] == [0.5, None] and records[0]["finite"] is True
  assert records[1]["loss"] == pytest.approx(1.5 / 4)
  assert training.progress.format_duration(3725) == "1:02:05"
