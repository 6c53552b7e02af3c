"""experiments.molgen / experiments.sample: end to end on the tiny config, kill-and-resume, sharding, bad flags.

Runs that must be separate processes (a real SIGKILL, a 4-device CPU platform, two jax.distributed processes) are
subprocesses; everything else runs in-process. The data come from MGVAE_DATA_DIR (CI points it at shared/data).
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import molgen
from experiments import sample
from experiments import trainer
from experiments.configs import molgen as molgen_config
from experiments.configs import overrides
from markers import needs_qm9
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTEFACTS = ("config.json", "metrics.jsonl", "metrics.json", "samples.smi", "samples_uncorrected.smi",
             "molecules.png", "interpolation.png", "loss_curve.png", "reconstruction.png")


def _env(**extra):
  """The test environment (its compile flags included) plus `extra`; an XLA_FLAGS in `extra` is added to those."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  flags = " ".join(filter(None, [env.get("XLA_FLAGS", ""), extra.pop("XLA_FLAGS", "")]))
  env.update(extra, XLA_FLAGS=flags)
  return env


def _molgen(args, timeout=300, **env):
  return subprocess.run([sys.executable, "-m", "experiments.molgen", *args], cwd=ROOT, env=_env(**env),
                        capture_output=True, text=True, timeout=timeout)


def _restore_raw(workdir, step):
  """The raw saved state tree (numpy) of one checkpoint step."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path)


def _flat(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


# --- Config. -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", molgen_config.DATASETS)
@pytest.mark.parametrize("preset", molgen_config.PRESETS)
def test_presets_are_valid(dataset, preset):
  config = molgen_config.get_config(dataset, preset)
  assert config.dataset == dataset and config.preset == preset
  assert config.model.max_nodes == config.featuriser().max_nodes
  # config.json round trip, as experiments.sample reads it.
  again = overrides.from_dict(molgen_config.MolgenConfig, json.loads(json.dumps(overrides.to_dict(config))))
  assert again == config


def test_paper_preset_follows_section_5_1():
  config = molgen_config.get_config("zinc", "paper")
  m = config.model
  assert (m.mgn.encoder_order, m.decoder, m.prior, m.mgn.posterior) == (2, "second_order", "learnable", "full")
  assert m.num_latent_levels == 3 and m.mgn.latent_dim == 256
  assert (config.train.learning_rate, config.num_train) == (1e-3, 10_000) and config.num_samples >= 5000


@pytest.mark.heavy
@needs_qm9
def test_paper_preset_still_runs_at_tiny_size(tmp_path):
  """Section 5.1's method (three latent levels, product pairs, the model's own learnable prior), shrunk to seconds."""
  config = overrides.apply(molgen_config.get_config("qm9", "paper"), [
      "model.mgn.latent_dim=4", "model.mgn.encoder_features=8", "model.mgn.encoder_layers=1",
      "model.mgn.cluster_features=8", "model.mgn.pool_features=8", "model.mgn.global_encoder_layers=1",
      "model.decoder_features=8", "model.decoder_layers=1", "num_train=48", "train.batch_size=8",
      "train.num_steps=2", "num_samples=16", "sample_batch_size=16", "num_test=32", "num_reconstruct=8",
      "compute_fcd=False", "grid_molecules=4", "interpolation_steps=3", "train.log_every=1",
      "train.checkpoint_every=2"])
  assert config.sample_from == "prior" and config.model.decoder_pairs == "product" and not config.rank_features
  report = molgen.train_and_evaluate(config, str(tmp_path / "paper"))
  assert report["training"]["steps"] == 2 and report["num_samples"] == 16 and report["fitted_prior"] is None
  assert len(report["reconstruction"]["kl_nats"]) == 3


def test_a_run_made_before_a_field_existed_is_still_this_config(tmp_path):
  """A workdir whose config.json lacks a field added since (here rank_order) is claimed by a config that leaves the
  field at its default, and refused by one that does not."""
  config = molgen_config.get_config("qm9", "test")
  defaults = overrides.field_defaults(molgen_config.MolgenConfig)
  assert defaults["rank_order"] == "canonical" and defaults["train"]["num_steps"] == training.TrainConfig().num_steps
  config = overrides.apply(config, ["rank_order=canonical"])  # the field at its default
  old = overrides.to_dict(config)
  del old["rank_order"]
  os.makedirs(tmp_path / "run")
  (tmp_path / "run" / "config.json").write_text(json.dumps(old))
  assert trainer.claim_workdir(config, str(tmp_path / "run")) is None
  with pytest.raises(training.ConfigMismatchError, match="rank_order"):
    trainer.claim_workdir(dataclasses.replace(config, rank_order="smiles"), str(tmp_path / "run"))
  assert json.loads((tmp_path / "run" / "config.json").read_text()) == json.loads(json.dumps(old))  # untouched


def test_overrides_typed_and_checked():
  config = molgen_config.get_config("qm9", "test")
  new = overrides.apply(config, ["train.batch_size=16", "model.mgn.latent_dim=6", "train.learning_rate=0.01",
                                 "model.kl_weight=(1.0, 0.5)", "train_file=None"])
  assert (new.train.batch_size, new.model.mgn.latent_dim, new.train.learning_rate) == (16, 6, 0.01)
  assert new.model.kl_weight == (1.0, 0.5)
  with pytest.raises(ValueError, match="unknown field 'batchsize'"):
    overrides.apply(config, ["train.batchsize=3"])
  with pytest.raises(ValueError, match="expected a value like 8"):
    overrides.apply(config, ["train.batch_size=abc"])
  with pytest.raises(ValueError, match="is a section"):
    overrides.apply(config, ["model=3"])
  with pytest.raises(ValueError, match="path=value"):
    overrides.apply(config, ["train.batch_size"])


def test_config_rejects_impossible_settings():
  config = molgen_config.get_config("qm9", "test")
  with pytest.raises(ValueError, match="cannot be cut into 12 clusters"):
    overrides.apply(config, ["model.mgn.num_clusters=(12, 1)"])
  with pytest.raises(ValueError, match="cannot be cut into 3 clusters"):
    overrides.apply(config, ["model.mgn.num_clusters=(2, 3)"])
  with pytest.raises(ValueError, match="unknown dataset"):
    molgen_config.get_config("pubchem", "cpu")
  with pytest.raises(ValueError, match="train.batch_size must be >= 1"):
    overrides.apply(config, ["train.batch_size=0"])
  with pytest.raises(ValueError, match="padded to 38"):
    dataclasses.replace(config, dataset="zinc")  # a qm9-sized model for zinc molecules
  with pytest.raises(ValueError, match="decoder_positions reads the rank features"):
    overrides.apply(config, ["rank_bond_features=False", "rank_features=False"])
  for bad in ("sample_edge_threshold=1.5", "sample_edge_threshold=0", "sample_edge_threshold=low"):
    with pytest.raises(ValueError, match="sample_edge_threshold must be a number in"):
      overrides.apply(config, [bad])


def test_samples_decode_at_their_own_threshold():
  config = molgen_config.get_config("qm9", "test")
  assert config.sample_edge_threshold is None and config.sample_threshold == config.edge_threshold
  lower = overrides.apply(config, ["sample_edge_threshold=0.25"])
  assert lower.sample_threshold == 0.25 and lower.edge_threshold == config.edge_threshold
  for preset in ("cpu", "long"):  # ZINC's presets decode samples below the reconstruction threshold
    zinc = molgen_config.get_config("zinc", preset)
    assert zinc.sample_threshold < zinc.edge_threshold


def test_bad_flags_give_clear_errors():
  """Unknown dataset, impossible level counts, a batch that does not divide over the devices: message, exit != 0."""
  out = _molgen(["--dataset=pubchem"], timeout=120)
  assert out.returncode != 0 and "pubchem" in out.stderr and "zinc" in out.stderr
  out = _molgen(["--dataset=qm9", "--preset=test", "--set", "model.mgn.num_clusters=(20,1)"], timeout=120)
  assert out.returncode != 0 and "cannot be cut into 20 clusters" in out.stderr
  assert "Traceback" not in out.stderr
  out = _molgen(["--dataset=qm9", "--preset=test", "--set", "train.batch_size=6"], timeout=120,
                XLA_FLAGS="--xla_force_host_platform_device_count=4")
  assert out.returncode != 0 and "does not divide over the 4 devices" in out.stderr
  assert "Traceback" not in out.stderr


# --- End to end. ---------------------------------------------------------------------------------------------------


@pytest.mark.heavy
@needs_qm9
def test_end_to_end_writes_every_artefact_and_is_never_clobbered(tmp_path):
  workdir = str(tmp_path / "run")
  config = dataclasses.replace(molgen_config.get_config("qm9", "test"), quality_every=3, quality_molecules=8,
                               quality_samples=16)
  report = molgen.train_and_evaluate(config, workdir)
  for name in ARTEFACTS:
    path = os.path.join(workdir, name)
    assert os.path.isfile(path) and os.path.getsize(path) > 0, name
  lines = open(os.path.join(workdir, "samples.smi")).read().splitlines()
  assert len(lines) == config.num_samples
  assert report["num_samples"] == config.num_samples and 0.0 <= report["validity"] <= 1.0
  assert report["training"]["resumed_from"] is None and report["training"]["nonfinite_steps_total"] == 0
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train_records = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_records] == list(range(1, config.train.num_steps + 1))
  assert all("steps_per_second" in r for r in train_records)
  assert records[-1]["phase"] == "eval"
  quality = [json.loads(l) for l in open(os.path.join(workdir, "eval.jsonl"))]
  assert [r["step"] for r in quality] == [0, 3, 6] and os.path.isfile(os.path.join(workdir, "quality_curve.png"))
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps[-1] == config.train.num_steps and len(steps) <= config.train.keep_checkpoints
  png = open(os.path.join(workdir, "molecules.png"), "rb").read(8)
  assert png == b"\x89PNG\r\n\x1a\n"

  # A finished run is never clobbered: the same config returns its report and changes nothing; another config (even
  # only other evaluation settings) is refused naming the fields, with nothing changed on disk.
  before = testing.directory_snapshot(workdir)
  assert molgen.train_and_evaluate(config, workdir) == json.load(open(os.path.join(workdir, "metrics.json")))
  for other, field in ((dataclasses.replace(config, num_samples=5, compute_nspdk=False), "num_samples"),
                       (overrides.apply(config, ["train.num_steps=9"]), "train.num_steps"),
                       (molgen_config.get_config("qm9", "cpu"), "model.mgn.num_clusters")):
    with pytest.raises(training.ConfigMismatchError, match=field):
      molgen.train_and_evaluate(other, workdir)
  assert testing.directory_snapshot(workdir) == before
  longer = config

  # The sampling binary on that run: the molecule level and a coarse level.
  result = sample.run(workdir, num_samples=10, level=0, seed=3, batch_size=4, compute_fcd=False)
  assert result["step"] == longer.train.num_steps and result["num_samples"] == 10
  assert result["reconstruction"]["molecules"] == config.num_reconstruct
  assert result["sample_statistics"]["test"]["valid"] > 0
  smi = os.path.join(workdir, "samples", f"step{longer.train.num_steps}_n10_seed3.smi")
  assert len(open(smi).read().splitlines()) == 10
  # What the model learned, and where its samples came from (the test preset samples the kernel density).
  recon = report["reconstruction"]
  assert recon["molecules"] == config.num_reconstruct and 0.0 <= recon["exact"] <= recon["exact_corrected"] <= 1.0
  assert report["sampled_from"] == "kernel" and report["fitted_prior"]["kind"] == "kernel_density"
  assert report["fitted_prior"]["centres"] == config.num_train and report["fitted_prior"]["learnable_prior_samples"]
  assert report["fitted_prior"]["bandwidth"] == config.prior_bandwidth
  # The other fitted prior, a Gaussian mixture, on the same run: its own file beside the kernel density's.
  mixture_config = dataclasses.replace(config, sample_from="aggregate")
  feat = config.featuriser()
  params, data = sample.load_run(workdir)[2], molgen.load_data(config, feat)
  probs, fitted = molgen.sample_molecules(mixture_config, vae.MGVAE(config.model), params, data, workdir,
                                          config.train.num_steps, 6, 0, 6)
  assert fitted["kind"] == "gaussian_mixture" and fitted["components"] == config.prior_components
  assert probs["edge"].shape == (6, config.model.max_nodes, config.model.max_nodes)
  assert os.path.isfile(os.path.join(workdir, f"aggregate_prior_step{config.train.num_steps}.npz"))
  # The cached kernel holds the run's centres; the bandwidth is always the config's.
  density, fitted = molgen.fitted_prior(dataclasses.replace(config, prior_bandwidth=0.9), vae.MGVAE(config.model),
                                        params, data, workdir, config.train.num_steps)
  assert density.bandwidth == 0.9 and fitted["bandwidth"] == 0.9 and density.centres.shape[0] == config.num_train
  assert report["sample_statistics"]["test"]["atoms_mean"] > 0
  # The GDSS protocol command (small here; the protocol is 10,000 samples with FCD).
  gdss = sample.gdss_protocol(workdir, num_samples=30, compute_fcd=False, workers=1)
  assert gdss["num_samples"] == 30 and gdss["nspdk_mmd"] is not None and gdss["floor_train_vs_test"]["nspdk_mmd"] >= 0
  coarse = sample.run(workdir, num_samples=5, level=1, seed=3)
  assert coarse["nodes"] == longer.model.mgn.num_clusters[0]
  with pytest.raises(ValueError, match="level must be in"):
    sample.run(workdir, num_samples=5, level=7)
  # A truncated data file in the latest checkpoint: named as damaged, set aside, the one before it sampled.
  item = os.path.join(workdir, "checkpoints", str(config.train.num_steps), "state")
  data = max((os.path.join(r, f) for r, _, fs in os.walk(item) for f in fs if os.sep + "d" + os.sep in
              os.path.join(r, f)), key=os.path.getsize)
  open(data, "wb").close()
  result = sample.run(workdir, num_samples=4, level=0, seed=5, batch_size=4, compute_fcd=False)
  assert result["step"] == config.train.num_steps - config.train.checkpoint_every
  assert any(".unrestorable-" in d for d in os.listdir(os.path.join(workdir, "checkpoints")))


def test_default_workdir_names_the_preset_and_decoder():
  assert molgen.default_workdir(molgen_config.get_config("zinc", "cpu")) == os.path.join("runs", "molgen_zinc")
  assert molgen.default_workdir(molgen_config.get_config("qm9", "test")) == os.path.join("runs", "molgen_qm9_test")
  auto = molgen_config.get_config("zinc", "long", decoder="autoregressive")
  assert molgen.default_workdir(auto) == os.path.join("runs", "molgen_zinc_autoregressive_long")


@pytest.mark.heavy
@needs_qm9
def test_kill_and_resume_is_bit_exact(tmp_path):
  """A run SIGKILLed mid-training and started again ends with exactly the params of an uninterrupted run (that one
  in-process: the same config, compile flags and single CPU device as the binary's)."""
  settings = ["train.num_steps=9", "train.checkpoint_every=2", "evaluate=False"]
  common = ["--dataset=qm9", "--preset=test"] + [a for s in settings for a in ("--set", s)]
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  molgen.train_and_evaluate(overrides.apply(molgen_config.get_config("qm9", "test"), settings), straight)
  out = _molgen(common + [f"--workdir={killed}", "--set", "train.kill_at_step=5"])
  assert out.returncode == -signal.SIGKILL, (out.returncode, out.stderr[-3000:])
  assert not os.path.isdir(os.path.join(killed, "checkpoints", "9"))
  out = _molgen(common + [f"--workdir={killed}"])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step" in out.stdout
  a, b = _flat(_restore_raw(straight, 9)), _flat(_restore_raw(killed, 9))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- Scale-out. ----------------------------------------------------------------------------------------------------

_SHARDING_PROGRAM = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from experiments import trainer
    from experiments.configs import molgen as molgen_config
    from mgvae_jax import graphs, training, vae
    from mgvae_jax.data import pipeline
    from mgvae_jax.training import sharding
    assert jax.device_count() == 4, jax.devices()
    config = molgen_config.get_config("qm9", "test")
    smiles = ["CCO", "c1ccccc1", "CC(=O)N", "OCC(N)=O", "C1CC1C#N", "CC(C)(O)C=O", "FC(F)F", "c1ccoc1",
              "CCN", "CC#N", "OC1CCC1", "CC=O", "NC(=O)C=O", "C1COC1", "CCCO", "c1cnoc1"]
    data, report = config.featuriser().featurise_many(smiles)
    assert report.kept == 16
    model = vae.MGVAE(config.model)
    batches = list(pipeline.batches(data, 8, seed=0, epoch=0))
    opt, fresh = trainer.mgvae_state(config, model, batches[0][0], 2)
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
      mesh = sharding.data_mesh(devices)
      state = sharding.replicate(sharding.local_copy(fresh), mesh)
      step = training.make_train_step(vae.make_loss_fn(model, 3.0), opt, mesh)
      for batch, gm in batches:
        state, metrics = step(state, sharding.shard_batch((batch, gm), mesh))
      if name == "four":
        assert len(state.params["graph_decoder"]["pair_head"]["kernel"].sharding.device_set) == 4
      out[name] = (sharding.local_copy(state.params), float(metrics["loss"]))
    leaves = lambda t: jax.tree_util.tree_leaves(t)
    for a, b in zip(leaves(out["one"][0]), leaves(out["four"][0])):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["one"][1], out["four"][1], rtol=1e-5)
    print("equal", out["one"][1], out["four"][1])
""")


@pytest.mark.heavy
def test_four_device_step_equals_single_device_step():
  out = subprocess.run([sys.executable, "-c", _SHARDING_PROGRAM], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert out.returncode == 0 and "equal" in out.stdout, out.stderr[-4000:]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.heavy
@needs_qm9
def test_two_process_jax_distributed_run(tmp_path):
  """Two processes on 127.0.0.1 (one CPU device each) train a data-parallel step together and checkpoint it."""
  workdir = str(tmp_path / "dist")
  port = _free_port()
  args = ["--dataset=qm9", "--preset=test", f"--workdir={workdir}", "--set", "train.num_steps=2", "--set",
          "evaluate=False", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.molgen", *args, f"--process_id={i}"], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      p.kill()
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-4000:]
  assert "on 2 device(s)" in outs[0][0]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def test_train_file_that_is_binary_a_directory_or_missing_is_named(tmp_path):
  binary = tmp_path / "train.smi"
  binary.write_bytes(b"CCO\nc1ccccc1\nC\x89N\n")
  with pytest.raises(ValueError, match=r"train_file .*train.smi: not utf-8 text: the byte 0x89 at byte offset 14 "
                                       r"\(line 3\)"):
    molgen._read_smiles_file(str(binary))
  with pytest.raises(IsADirectoryError, match="is a directory, expected a file of") as err:
    molgen._read_smiles_file(str(tmp_path))
  assert str(err.value).startswith(f"train_file {tmp_path} is a directory")
  with pytest.raises(FileNotFoundError, match="train_file .*nope.smi does not exist"):
    molgen._read_smiles_file(str(tmp_path / "nope.smi"))
