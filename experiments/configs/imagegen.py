"""Config of `experiments.imagegen`: MGVAE on MNIST with a fixed quadtree (paper section 5.4), as code.

Presets (get_config(dataset, preset)):
  cpu    the default: a narrower MGVAE (4 message-passing rounds per level, 32 channels, generator width 32) and the
         baseline trained for 1,500 steps of 64 images each (1.6 epochs), 10,000 samples per resolution.
  paper  section 5.4: 10 message-passing rounds per level, d_z = 256, Adam 1e-3, 256 epochs (240,000 steps of 64;
         the batch size is not stated), DCGAN's generator width 64, 10,000 samples per resolution. Meant for a GPU.

Every preset reads Z^(l) out by region (model.readout="regions": the mean node state of each of 4 x 4 grid cells,
concatenated), not by the paper's sum over all nodes: with a sum or mean the posterior collapsed on MNIST (KL under
3 nats; README, imagegen). `--set model.readout=sum` restores the paper's.
  test   a handful of images, a tiny model, a few steps: for tests and smoke runs.

Any field can be overridden from the command line: `--set train.num_steps=5000 --set model.encoder_layers=10`.
"""

from __future__ import annotations

import dataclasses

from experiments.configs import overrides
from mgvae_jax import image_mgvae
from mgvae_jax import training

DATASETS = ("mnist",)
PRESETS = ("cpu", "paper", "test")
MODELS = ("mgvae", "vae")  # vae: the plain convolutional VAE baseline


@dataclasses.dataclass(frozen=True)
class ImagegenConfig:
  """Everything `experiments.imagegen.train_and_evaluate` reads."""
  dataset: str = "mnist"
  preset: str = "cpu"
  model_name: str = "mgvae"
  model: image_mgvae.ImageMGVAEConfig = image_mgvae.ImageMGVAEConfig()
  baseline: image_mgvae.ConvVAEConfig = image_mgvae.ConvVAEConfig()
  # Data: None = all 60,000 / 10,000 images; a number takes the first ones (smoke runs only).
  num_train: int | None = None
  num_test: int | None = None
  # Optimisation, logging, checkpoints, fault injection; train.seed also seeds sampling. Batches are full (an epoch's
  # remainder is skipped); the temperature_* fields go unused (the quadtree is fixed).
  train: training.TrainConfig = training.TrainConfig(batch_size=64, num_steps=1500, checkpoint_every=500,
                                                     keep_checkpoints=2)
  # Evaluation: FID-LeNet per resolution of `num_samples` prior samples against the test set.
  evaluate: bool = True
  num_samples: int = 10_000
  sample_batch_size: int = 500
  # The FID-LeNet classifier: trained once into the file `fid_classifier` (relative to the working directory), then
  # reused by every later run, MGVAE and baseline alike, so their numbers share one feature space.
  fid_classifier: str = "runs/fid_lenet/lenet_mnist.msgpack"
  fid_classifier_epochs: int = 3
  grid_size: int = 8  # sample grids are grid_size x grid_size images per resolution

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
    if self.model_name not in MODELS:
      raise ValueError(f"model_name must be one of {MODELS}, got {self.model_name!r}")
    overrides.check_at_least(self, ("num_samples", "sample_batch_size", "fid_classifier_epochs", "grid_size"), 1)
    if self.num_samples < 2:
      raise ValueError(f"num_samples must be >= 2 (a covariance), got {self.num_samples}")
    if self.baseline.image_size != self.model.image_size:
      raise ValueError("model.image_size and baseline.image_size must agree")

  def network(self):
    """The model config of `model_name`."""
    return self.model if self.model_name == "mgvae" else self.baseline


def get_config(dataset: str = "mnist", preset: str = "cpu", model_name: str = "mgvae") -> ImagegenConfig:
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  if preset == "paper":
    return ImagegenConfig(dataset=dataset, preset=preset, model_name=model_name,
                          model=image_mgvae.ImageMGVAEConfig(channels=64, encoder_layers=10, generator_width=64),
                          baseline=image_mgvae.ConvVAEConfig(encoder_width=64, generator_width=64),
                          train=training.TrainConfig(batch_size=64, num_steps=240_000, log_every=500,
                                                     checkpoint_every=5000, keep_checkpoints=2),
                          fid_classifier_epochs=5)
  if preset == "cpu":
    return ImagegenConfig(dataset=dataset, preset=preset, model_name=model_name,
                          model=image_mgvae.ImageMGVAEConfig(channels=32, encoder_layers=4, generator_width=32),
                          baseline=image_mgvae.ConvVAEConfig(encoder_width=32, generator_width=32))
  if preset == "test":
    return ImagegenConfig(dataset=dataset, preset=preset, model_name=model_name,
                          model=image_mgvae.ImageMGVAEConfig(channels=4, encoder_layers=1, latent_dim=4,
                                                             generator_width=4),
                          baseline=image_mgvae.ConvVAEConfig(latent_dim=4, encoder_width=4, generator_width=4),
                          num_train=64, num_test=40,
                          train=training.TrainConfig(batch_size=8, num_steps=4, log_every=1, checkpoint_every=2,
                                                     keep_checkpoints=2),
                          num_samples=40, sample_batch_size=20, fid_classifier_epochs=1, grid_size=3,
                          fid_classifier="runs/fid_lenet/lenet_mnist_test_preset.msgpack")  # never the real one
  raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
