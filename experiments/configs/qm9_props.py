"""Config of `experiments.qm9_props`: unsupervised QM9 property prediction (paper section 5.5, Tables 10-11), as code.

Presets (get_config(preset)):
  cpu    the default: MGVAE on a seeded subset of 20,000 training molecules, heads on its representations, MAE on
         all 13,041 test molecules; about 20-30 minutes on a 2-core CPU.
  paper  section 5.5: the section 5.1 model (L = 3 levels, second-order encoders, d_z = 256) trained on every
         training molecule with one-hot atom types only; MLP heads 512-512 sigmoid. Meant for a GPU.
  test   a handful of molecules, a few steps: for tests and smoke runs.

Any field can be overridden from the command line: `--set num_train=50000 --set head_epochs=200`.
"""

from __future__ import annotations

import dataclasses

from experiments.configs import molgen as molgen_config
from experiments.configs import overrides
from mgvae_jax import mgn
from mgvae_jax import property_prediction
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax.chem import featurise
from mgvae_jax.data import molecules

PRESETS = ("cpu", "paper", "test")
KL_WEIGHT = molgen_config.KL_WEIGHT  # beta = 1 collapses the posterior (see there); a collapsed one encodes nothing


@dataclasses.dataclass(frozen=True)
class Qm9PropsConfig:
  """Everything `experiments.qm9_props.train_and_evaluate` reads."""
  preset: str = "cpu"
  model: vae.MGVAEConfig = vae.MGVAEConfig()
  # Data: MGVAE's own QM9 rows and split files (data.load_qm9_targets).
  test_percent: int = 10  # which MGVAE split: this % of the 130,462 molecules is the test set (10: 117,421 / 13,041)
  num_train: int = 0  # a seeded subset of the split's training molecules (0: all of them)
  val_fraction: float = 0.1  # of those, held out (seeded) to pick each head's epoch; MGVAE, unsupervised, sees all
  num_test: int = 0  # a seeded subset of the test molecules (0: all of them)
  charged_types: bool = True  # charged species (N+, O-, ...) are node types of their own (else those molecules skip)
  # MGVAE's optimisation, schedules, logging, checkpoints, fault injection; the subsets, the validation split and the
  # heads derive from train.seed too.
  train: training.TrainConfig = training.TrainConfig()
  # Representations and property heads (one MLP per target, on standardised targets).
  encode_batch_size: int = 512  # molecules per encoder call (one compiled shape)
  head_hidden: tuple[int, ...] = (512, 512)  # paper: two hidden layers of 512
  head_activation: str = "sigmoid"  # paper: sigmoid
  head_loss: str = "mse"  # mse | l1, on standardised targets
  head_learning_rate: float = 1e-3
  head_batch_size: int = 128
  head_epochs: int = 100

  def __post_init__(self):
    if self.test_percent not in molecules.QM9_SPLIT_PERCENTS:
      raise ValueError(f"test_percent must be one of {molecules.QM9_SPLIT_PERCENTS} (MGVAE's split files), got "
                       f"{self.test_percent}")
    overrides.check_at_least(self, ("encode_batch_size", "head_batch_size", "head_epochs"), 1)
    overrides.check_at_least(self, ("num_train", "num_test"), 0)
    if self.num_train and self.num_train < 4:
      raise ValueError(f"num_train must be 0 (all) or >= 4 (training and validation molecules), got {self.num_train}")
    if not 0.0 < self.val_fraction < 1.0:
      raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
    if not self.head_learning_rate > 0:
      raise ValueError(f"head_learning_rate must be positive, got {self.head_learning_rate}")
    if self.head_activation not in property_prediction.ACTIVATIONS:
      raise ValueError(f"head_activation must be one of {sorted(property_prediction.ACTIVATIONS)}, got "
                       f"{self.head_activation!r}")
    if self.head_loss not in property_prediction.LOSSES:
      raise ValueError(f"head_loss must be one of {property_prediction.LOSSES}, got {self.head_loss!r}")
    if not self.head_hidden or any(int(w) < 1 for w in self.head_hidden):
      raise ValueError(f"head_hidden must be a non-empty tuple of widths >= 1, got {self.head_hidden}")
    feat = self.featuriser()
    model = self.model
    if model.max_nodes != feat.max_nodes:
      raise ValueError(f"model.max_nodes={model.max_nodes} but QM9 molecules are padded to {feat.max_nodes} atoms")
    if model.node_classes != feat.num_types or model.edge_classes != feat.num_edge_types:
      raise ValueError(f"model has node_classes={model.node_classes}, edge_classes={model.edge_classes}; the QM9 "
                       f"vocabulary (charged_types={self.charged_types}) needs {feat.num_types} and "
                       f"{feat.num_edge_types}")
    molgen_config.check_cluster_counts(model)

  def featuriser(self) -> featurise.Featuriser:
    """One-hot atom types only: section 5.5 uses no chemical features."""
    return featurise.Featuriser("qm9", charged_types=self.charged_types, chemical_features=False)


def _model(charged_types: bool = True, **kw) -> vae.MGVAEConfig:
  """MGVAEConfig sized for QM9's vocabulary and pad size; the `mgn` keyword group overrides the hierarchy."""
  feat = featurise.Featuriser("qm9", charged_types=charged_types)
  mgn_kw = dict(posterior="full", local_decoder="none", clustering="learned")
  mgn_kw.update(kw.pop("mgn", {}))
  return vae.MGVAEConfig(mgn=mgn.MGNConfig(**mgn_kw), max_nodes=feat.max_nodes, node_classes=feat.num_types,
                         edge_classes=feat.num_edge_types, prior="learnable", matching="free",
                         decoder="second_order", kl_weight=KL_WEIGHT, **kw)


def get_config(preset: str = "cpu") -> Qm9PropsConfig:
  """The named preset."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  if preset == "paper":
    # Section 5.5: "the same as section 5.1" (molgen's paper preset: L = 3 latent levels with K = 4, 2, 1, four
    # second-order encoder layers, d_z = 256, Adam 1e-3, batch 20), reconstructing the adjacency, the coarsened
    # adjacencies and the one-hot atom types; the finest latents averaged into a 256-vector; heads 512-512 sigmoid.
    # Unstated there, chosen here: every training molecule, 100,000 steps (17 epochs), 200 head epochs.
    model = _model(mgn=dict(num_clusters=(4, 2, 1), latent_dim=256, encoder_features=256, encoder_layers=4,
                            cluster_features=128, cluster_layers=2, pool_features=256, global_encoder_layers=2),
                   decoder_features=128, decoder_layers=4)
    train = training.TrainConfig(batch_size=20, num_steps=100_000, temperature_decay_steps=40_000, log_every=500,
                                 checkpoint_every=5000)
    return Qm9PropsConfig(preset=preset, model=model, num_train=0, num_test=0, train=train, head_epochs=200)
  if preset == "cpu":
    # molgen's QM9 cpu model with a wider latent (d = 32: the representation is all the heads see). 20,000 training
    # molecules (18,000 for the heads, 2,000 to select their epochs), every test molecule.
    model = _model(mgn=dict(num_clusters=(4, 2), latent_dim=32, encoder_features=32, encoder_layers=2,
                            cluster_features=32, pool_features=32, global_encoder_layers=1),
                   decoder_features=32, decoder_layers=3)
    train = training.TrainConfig(batch_size=32, num_steps=4000, temperature_decay_steps=3200, log_every=100,
                                 checkpoint_every=500)
    return Qm9PropsConfig(preset=preset, model=model, num_train=20_000, num_test=0, train=train, head_epochs=40)
  # test: seconds, not minutes.
  model = _model(mgn=dict(num_clusters=(2, 1), latent_dim=4, encoder_features=8, encoder_layers=1,
                          cluster_features=8, cluster_layers=1, pool_features=8, global_encoder_layers=1),
                 decoder_features=8, decoder_layers=1)
  train = training.TrainConfig(batch_size=8, num_steps=4, temperature_decay_steps=4, log_every=1, checkpoint_every=2)
  return Qm9PropsConfig(preset=preset, model=model, num_train=40, val_fraction=0.25, num_test=16, train=train,
                        encode_batch_size=16, head_hidden=(16, 16), head_batch_size=8, head_epochs=3)
