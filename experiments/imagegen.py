"""Graph-based image generation on MNIST with a fixed quadtree hierarchy (paper section 5.4, Table 9).

  python -m experiments.imagegen --dataset=mnist                 # the CPU default: MGVAE, then FID-LeNet per resolution
  python -m experiments.imagegen --dataset=mnist --model=vae     # the plain convolutional VAE baseline
  python -m experiments.imagegen --preset=paper                  # section 5.4's settings (a GPU)

Images are padded from 28 x 28 to 32 x 32 and read as grid graphs; the fixed 2 x 2 quadtree clustering coarsens them
to 16 x 16 and 8 x 8 (`mgvae_jax.image_graphs`), and `mgvae_jax.image_mgvae.ImageMGVAE` learns to reconstruct every
resolution. After training, each resolution is sampled separately from N(0, I) through its own decoder
(`--model=vae`: the baseline's 32 x 32 samples, average-pooled for 16 x 16 and 8 x 8), and scored with FID-LeNet
(`mgvae_jax.evaluation.image_fid`): the Frechet distance in the feature space of a LeNet-5 trained by this project
(Inception weights cannot be fetched here), against the 10,000 test images at the same resolution. FID-LeNet is not
comparable with the Inception FIDs of Table 9; the baseline and the data's own floor (10,000 training images against
the test set) give it a scale.

Outputs in --workdir (default runs/imagegen_<dataset>_<model>): config.json (a workdir of another config is refused;
a finished run of this one returns its metrics.json unchanged), checkpoints/ (atomic; a killed run resumes),
metrics.jsonl (training lines with rate and ETA), metrics.json (FID-LeNet per resolution, floor, test reconstruction
and KL per level, parameter count, timings), samples_{32,16,8}.png, reconstruction.png (test images and their
reconstructions at every resolution), loss.png.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence, TextIO

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import plots
from experiments import trainer
from experiments.configs import imagegen as imagegen_config
from experiments.configs import overrides
from mgvae_jax import image_graphs
from mgvae_jax import image_mgvae
from mgvae_jax import training
from mgvae_jax.data import mnist
from mgvae_jax.data import pipeline
from mgvae_jax.evaluation import image_fid
from mgvae_jax.training import sharding

_SAMPLE_STREAM = 0x1A6E  # folded into the seed for sampling: never the training randomness


def load_images(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train images [n, 32, 32] float32 in [0, 1], their labels, test images, their labels), with config.num_train /
  num_test."""
  train, train_labels = mnist.load_mnist("train")
  test, test_labels = mnist.load_mnist("test")
  size = config.model.image_size
  return (mnist.pad_images(train[:config.num_train], size), train_labels[:config.num_train].astype(np.int32),
          mnist.pad_images(test[:config.num_test], size), test_labels[:config.num_test].astype(np.int32))


def build_model(config):
  return (image_mgvae.ImageMGVAE(config.model) if config.model_name == "mgvae"
          else image_mgvae.ConvVAE(config.baseline))


def make_loss_fn(model):
  """`loss_fn(params, images [B, S, S], key, step) -> (loss, metrics)` for training.make_train_step."""

  def loss_fn(params, images, key, step):
    del step  # no schedule: the quadtree is fixed
    out = model.apply({"params": params}, images, train=True, rngs={"latent": key})
    return out.loss.mean(), {"loss": out.loss.mean(), "reconstruction": out.reconstruction.mean(0),
                             "kl": out.kl.mean(0)}

  return loss_fn


def train(config, workdir: str, model, images: np.ndarray, mesh, stream: Optional[TextIO] = None
          ) -> training.RunResult:
  """Train (or resume) through the one loop (training.run), data-parallel over `mesh`: full batches only, each
  epoch's order a pure function of (train.seed, epoch) (pipeline.batch_indices), the remainder skipped."""
  train_cfg = config.train
  num = images.shape[0]
  if num < train_cfg.batch_size:
    raise ValueError(f"train.batch_size {train_cfg.batch_size} exceeds the {num} training images")
  steps_per_epoch = pipeline.num_batches(num, train_cfg.batch_size, drop_remainder=True)
  optimizer = training.make_optimizer(train_cfg, train_cfg.total_steps(steps_per_epoch))
  state = training.create_train_state(model, optimizer, jnp.asarray(images[:train_cfg.batch_size]),
                                      seed=train_cfg.seed)
  step_fn = training.make_train_step(make_loss_fn(model), optimizer, mesh)

  def batches(epoch: int, start: int):
    for ids in pipeline.batch_indices(num, train_cfg.batch_size, train_cfg.seed, epoch, drop_remainder=True)[start:]:
      yield images[ids]

  return training.run(train_cfg, workdir, state, step_fn, batches, steps_per_epoch, mesh=mesh, stream=stream,
                      describe=f"{num} images, batch {train_cfg.batch_size}")


def fid_classifier(config, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                   test_labels: np.ndarray, stream: Optional[TextIO] = None) -> tuple[dict, dict]:
  """The FID-LeNet weights at config.fid_classifier: loaded if there, else trained on the training images and saved."""
  path = config.fid_classifier
  if os.path.exists(path):
    params, info = image_fid.load_lenet(path)
    print(f"FID-LeNet classifier: {path} (test accuracy {info.get('test_accuracy')})", file=stream or sys.stdout)
    return params, info
  print(f"FID-LeNet classifier: training on {train_images.shape[0]} images into {path}", file=stream or sys.stdout,
        flush=True)
  params, info = image_fid.train_lenet(train_images, train_labels, jax.random.PRNGKey(0),
                                       epochs=config.fid_classifier_epochs, test=(test_images, test_labels))
  image_fid.save_lenet(path, params, info)
  return params, info


def sample_images(model, params, level: int, num: int, batch_size: int, seed: int) -> np.ndarray:
  """`num` prior samples of `level` [num, S_l, S_l] (one compiled shape; the last batch is trimmed)."""
  fn = jax.jit(lambda p, k: model.apply({"params": p}, batch_size, level, method=type(model).sample,
                                        rngs={"latent": k}))
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _SAMPLE_STREAM + level)
  out = [np.asarray(fn(params, jax.random.fold_in(key, i))) for i in range(-(-num // batch_size))]
  return np.concatenate(out)[:num]


def evaluate_test(model, params, test: np.ndarray, batch_size: int) -> dict:
  """Test reconstruction (BCE summed over pixels, at the posterior mean) and KL, per level, mean over images."""
  fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
  rec, kl, n = 0.0, 0.0, 0
  for i in range(0, test.shape[0] - batch_size + 1, batch_size):
    out = fn(params, jnp.asarray(test[i:i + batch_size]))
    rec, kl, n = rec + np.asarray(out.reconstruction).sum(0), kl + np.asarray(out.kl).sum(0), n + batch_size
  if n == 0:
    raise ValueError(f"evaluate_test: fewer test images ({test.shape[0]}) than one batch ({batch_size})")
  return {"reconstruction": (rec / n).tolist(), "kl": (kl / n).tolist(), "images": n}


def pictures(config, model, params, test: np.ndarray, samples: dict, workdir: str) -> None:
  for size, imgs in samples.items():
    plots.image_grid(imgs, os.path.join(workdir, f"samples_{size}.png"), config.grid_size,
                     f"{config.model_name}: prior samples, {size} x {size}")
  strip = jnp.asarray(test[:config.grid_size])
  out = model.apply({"params": params}, strip, train=False)
  rows, labels = [], []
  for t, lg in zip(out.targets, out.logits):
    rows += [np.asarray(t), np.asarray(jax.nn.sigmoid(lg))]
    labels += [f"test {t.shape[-1]}x{t.shape[-1]}", f"recon. {t.shape[-1]}x{t.shape[-1]}"]
  plots.reconstruction_strip(rows, labels, os.path.join(workdir, "reconstruction.png"))
  plots.loss_curve(plots.read_jsonl(os.path.join(workdir, "metrics.jsonl")), os.path.join(workdir, "loss.png"),
                   terms=("loss", "reconstruction", "kl"))


def train_and_evaluate(config, workdir: str, stream: Optional[TextIO] = None) -> dict:
  """Train (or resume), then FID-LeNet per resolution and the pictures; returns metrics.json's content (a finished
  run's, unchanged, when `workdir` holds one of this config)."""
  finished = trainer.claim_workdir(config, workdir, stream)
  if finished is not None:
    return finished
  train_images, train_labels, test, test_labels = load_images(config)
  mesh = sharding.data_mesh()
  model = build_model(config)
  result = train(config, workdir, model, train_images, mesh, stream)
  params = sharding.local_copy(result.state.params)
  report = {"dataset": config.dataset, "model": config.model_name, "preset": config.preset,
            "num_params": image_mgvae.num_params(params), "train": result.summary,
            "test": evaluate_test(model, params, test, min(config.sample_batch_size, test.shape[0]))}
  if config.evaluate:
    lenet, info = fid_classifier(config, train_images, train_labels, test, test_labels, stream)
    sizes = config.model.sizes()  # the baseline is scored at the same resolutions
    reference = image_fid.reference_statistics(lenet, test, sizes)
    t0 = time.perf_counter()
    if config.model_name == "mgvae":
      samples = {size: sample_images(model, params, l, config.num_samples, config.sample_batch_size, config.train.seed)
                 for l, size in enumerate(sizes)}
    else:  # the baseline has one level: its 32 x 32 samples, quadtree-averaged
      base = sample_images(model, params, 0, config.num_samples, config.sample_batch_size, config.train.seed)
      pyramid = image_graphs.image_pyramid(jnp.asarray(base), len(sizes))
      samples = {size: np.asarray(p) for size, p in zip(sizes, pyramid)}
    sample_seconds = time.perf_counter() - t0
    floor_images = train_images[:min(config.num_samples, train_images.shape[0])]
    floor = image_fid.reference_statistics(lenet, floor_images, sizes)
    report["fid_lenet"] = {str(s): image_fid.fid_lenet(lenet, samples[s], reference[s]) for s in sizes}
    report["fid_lenet_floor_train_vs_test"] = {str(s): image_fid.frechet_distance(*floor[s], *reference[s])
                                               for s in sizes}
    report["fid_classifier"] = {"path": os.path.abspath(config.fid_classifier), **info}
    report["sampling"] = {"samples_per_resolution": config.num_samples, "seconds": sample_seconds,
                          "test_images": int(test.shape[0])}
    pictures(config, model, params, test, samples, workdir)
  report = trainer.write_report(report, workdir, {"step": result.summary["steps"], **{
      k: report[k] for k in ("fid_lenet", "test") if k in report}})
  print(format_table(report), file=stream or sys.stdout, flush=True)
  return report


def format_table(report: dict) -> str:
  """FID-LeNet per resolution as markdown, naming the metric."""
  if "fid_lenet" not in report:
    return f"{report['model']}: trained, no evaluation"
  sizes = list(report["fid_lenet"])
  lines = ["| " + " | ".join(["model"] + [f"FID-LeNet {s}x{s}" for s in sizes]) + " |",
           "|" + "---|" * (len(sizes) + 1),
           "| " + " | ".join([report["model"]] + [f"{report['fid_lenet'][s]:.3f}" for s in sizes]) + " |",
           "| " + " | ".join(["train vs test (floor)"] + [f"{report['fid_lenet_floor_train_vs_test'][s]:.3f}"
                                                        for s in sizes]) + " |"]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS

  def build():
    sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    config = overrides.apply(imagegen_config.get_config(f.dataset, f.preset, f.model), f.set)
    sharding.check_batch_size(config.train.batch_size, sharding.data_mesh())
    return config

  config = trainer.config_from_main(argv, build)
  trainer.run_job(train_and_evaluate, config,
                  f.workdir or trainer.default_workdir("imagegen", config.dataset, config.model_name, preset=config.preset))


def define_flags() -> None:
  """Flags, defined only when run as a program (importing this module defines none)."""
  flags.DEFINE_enum("dataset", "mnist", imagegen_config.DATASETS, "Images to learn.")
  flags.DEFINE_enum("model", "mgvae", imagegen_config.MODELS, "mgvae: the quadtree MGVAE; vae: the plain VAE baseline.")
  flags.DEFINE_enum("preset", "cpu", imagegen_config.PRESETS,
                    "cpu: about 20 min on 2 cores; paper: section 5.4's settings; test: seconds.")
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory; default runs/imagegen_<dataset>_<model>, plus "
                      "_<preset> unless cpu.")
  flags.DEFINE_multi_string("set", [], "Config override path=value, e.g. train.num_steps=5000 (repeatable).")
  trainer.define_distributed_flags()


if __name__ == "__main__":
  define_flags()
  app.run(main)
