"""Config of `experiments.molgen`: all-at-once MGVAE molecule generation (paper section 5.1), as code.

Presets (get_config(dataset, preset)):
  cpu    the default: finishes train -> samples -> metrics -> pictures within 30 minutes on a 2-core CPU.
  long   the cpu model trained longer, on more molecules, with a cosine-decayed learning rate: within 2.5 hours on a
         2-core CPU.
  paper  section 5.1: L = 3 levels (K = 4, 2), second-order encoders and decoder, d_z = 256, learnable prior,
         Adam 1e-3, 10,000 training molecules, 10,000 samples. Meant for a GPU.
  test   a few dozen molecules and a few steps: for tests and smoke runs.

Any field can then be overridden from the command line: `--set train.batch_size=64 --set model.mgn.latent_dim=32`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from experiments.configs import overrides
from mgvae_jax import mgn
from mgvae_jax import training
from mgvae_jax import vae
from mgvae_jax import autoregressive
from mgvae_jax.chem import featurise

DATASETS = ("zinc", "qm9")
PRESETS = ("cpu", "long", "paper", "test")
DECODERS = ("all_at_once", "autoregressive")  # --decoder: the finest level's decoder (section 5.1)
SAMPLE_FROM = ("prior", "aggregate", "kernel")

# beta on the KL terms. MGVAE's reconstruction terms are means (per node pair, per node) while each KL sums over all
# N x d_z latent entries, so beta = 1 weighs the KL about N^2 / d_z times more than a summed ELBO would: on ZINC the
# posterior then collapses within 100 steps (KL -> 0.2 nats, edge loss stuck at the marginal). 0.01 keeps it
# informative (measured: see README, molgen).
KL_WEIGHT = 0.01
# The cpu preset's beta: with canonical-rank features and bilinear decoder pairs the posterior carries what
# reconstruction needs (about 300 nats on QM9), and sampling uses a prior fitted to the aggregate posterior, so the
# KL is kept only as a light regulariser (ablations in README).
CPU_KL_WEIGHT = 1e-4
# ZINC samples' bond threshold: bonds down to this probability are offered, most probable first, to the
# valence-correcting decoder. Chosen where the samples' rings per molecule meet the data's (README, molgen).
SAMPLE_EDGE_THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class MolgenConfig:
  """Everything `experiments.molgen.train_and_evaluate` reads."""
  dataset: str = "zinc"  # zinc (ZINC250k) | qm9
  preset: str = "cpu"  # recorded for the run's config.json; presets differ only in the values below
  model: vae.MGVAEConfig = vae.MGVAEConfig()
  # Data.
  num_train: int = 10_000  # molecules drawn (seeded) from the dataset's train split; the paper uses 10,000
  train_file: Optional[str] = None  # a SMILES file to train on instead of the dataset's split (one per line)
  chemical_features: bool = True  # Table 2's 24 RDKit features as extra node inputs (the paper does this on ZINC)
  rank_features: bool = False  # one-hot canonical atom ranks as node inputs (featurise.Featuriser.rank_features)
  rank_order: str = "canonical"  # canonical | smiles: which ranks (featurise.Featuriser.rank_order)
  rank_bond_features: bool = False  # each atom's bonds as rank offsets (featurise.Featuriser.rank_bond_features)
  charged_types: bool = True  # charged species (N+, O-, ...) are node types of their own (else such molecules skip)
  # Optimisation, schedules, logging, checkpoints, fault injection; train.seed also seeds the training subset and
  # sampling.
  train: training.TrainConfig = training.TrainConfig()
  # Sampling and evaluation.
  evaluate: bool = True  # False: train and checkpoint only (sample later with experiments.sample)
  # Where samples come from: "prior" (the model's own prior, the paper's way), or a density fitted after training to
  # the training molecules' finest posterior means (mgvae_jax/aggregate_prior.py): "aggregate" (a Gaussian mixture
  # of prior_components full-covariance components) or "kernel" (a kernel density estimate: a training molecule's
  # latents plus noise of prior_bandwidth times their per-coordinate std). With a fitted density, metrics.json also
  # scores the model's own prior.
  sample_from: str = "prior"
  prior_components: int = 10
  prior_bandwidth: float = 0.6
  num_samples: int = 2000
  sample_batch_size: int = 500  # one compiled shape for all sampling batches
  edge_threshold: float = 0.5  # edges with probability above this are candidates for the valence-correcting decoder
  # The same for prior samples (None: edge_threshold). Latents drawn between the training molecules' posteriors
  # leave the decoder less sure of each bond than a reconstruction does: ring closures fall below 0.5 while staying
  # the most probable remaining pairs, and the valence-correcting decoder takes them in descending probability.
  sample_edge_threshold: Optional[float] = None
  num_test: int = 1000  # test molecules (seeded subset) that FCD and NSPDK compare against; 0: the whole test split
  compute_fcd: bool = True
  compute_nspdk: bool = True
  num_reconstruct: int = 500  # held-out test molecules whose reconstruction (posterior mean) is measured
  # Quality during training (quality_curve.png): every quality_every steps (0: never), the reconstruction of the
  # first quality_molecules held-out molecules and the FCD of quality_samples prior samples against the test set.
  quality_every: int = 0
  quality_molecules: int = 100
  quality_samples: int = 500
  grid_molecules: int = 24  # valid samples drawn in molecules.png
  interpolation_steps: int = 7  # molecules in the interpolation strip (figure 7)

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {DATASETS}")
    overrides.check_at_least(self, ("num_train", "num_samples", "sample_batch_size", "num_reconstruct"), 1)
    overrides.check_at_least(self, ("num_test", "grid_molecules", "quality_every"), 0)
    overrides.check_at_least(self, ("quality_molecules", "quality_samples"), 2)
    if self.interpolation_steps < 2:
      raise ValueError(f"interpolation_steps must be >= 2, got {self.interpolation_steps}")
    if self.train.epochs:
      raise ValueError("molgen counts steps: set train.num_steps, not train.epochs")
    if self.sample_from not in SAMPLE_FROM:
      raise ValueError(f"sample_from must be one of {SAMPLE_FROM}, got {self.sample_from!r}")
    if self.prior_components < 1:
      raise ValueError(f"prior_components must be >= 1, got {self.prior_components}")
    if not 0 <= self.prior_bandwidth < float("inf"):
      raise ValueError(f"prior_bandwidth must be a finite number >= 0, got {self.prior_bandwidth}")
    for name in ("edge_threshold", "sample_edge_threshold"):
      value = getattr(self, name)
      if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                    and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    feat = self.featuriser()
    model = self.model
    if model.decoder_positions and not self.rank_features:
      raise ValueError("model.decoder_positions reads the rank features: set rank_features=True")
    if model.max_nodes != feat.max_nodes:
      raise ValueError(f"model.max_nodes={model.max_nodes} but {self.dataset} molecules are padded to "
                       f"{feat.max_nodes} atoms")
    if model.node_classes != feat.num_types or model.edge_classes != feat.num_edge_types:
      raise ValueError(f"model has node_classes={model.node_classes}, edge_classes={model.edge_classes}; the "
                       f"{self.dataset} vocabulary needs {feat.num_types} and {feat.num_edge_types}")
    check_cluster_counts(model)

  @property
  def sample_threshold(self) -> float:
    """The bond threshold prior samples are decoded with."""
    return self.edge_threshold if self.sample_edge_threshold is None else self.sample_edge_threshold

  def featuriser(self) -> featurise.Featuriser:
    return featurise.Featuriser(self.dataset, charged_types=self.charged_types,
                                chemical_features=self.chemical_features, rank_features=self.rank_features,
                                rank_order=self.rank_order, rank_bond_features=self.rank_bond_features)


def check_cluster_counts(model: vae.MGVAEConfig) -> None:
  """Every level must have at least as many nodes as the clusters it is cut into."""
  sizes = (model.max_nodes,) + tuple(model.mgn.num_clusters)
  for level, (n, k) in enumerate(zip(sizes, sizes[1:])):
    if k > n:
      raise ValueError(f"model.mgn.num_clusters={tuple(model.mgn.num_clusters)}: level {level} has {n} nodes and "
                       f"cannot be cut into {k} clusters (each level needs at most as many clusters as nodes)")


def _model(dataset: str, *, charged_types: bool = True, **kw) -> vae.MGVAEConfig:
  """MGVAEConfig sized for a dataset's vocabulary and pad size; `mgn` / `vae` keyword groups override defaults."""
  feat = featurise.Featuriser(dataset, charged_types=charged_types)
  mgn_kw = dict(posterior="full", local_decoder="none", clustering="learned")
  mgn_kw.update(kw.pop("mgn", {}))
  return vae.MGVAEConfig(mgn=mgn.MGNConfig(**mgn_kw), max_nodes=feat.max_nodes, node_classes=feat.num_types,
                         edge_classes=feat.num_edge_types, prior="learnable", matching="free",
                         decoder="second_order", **kw)


def get_config(dataset: str = "zinc", preset: str = "cpu", decoder: str = "all_at_once") -> MolgenConfig:
  """The named preset for `dataset`, with the all-at-once (second-order) or the autoregressive decoder.

  The autoregressive decoder (mgvae_jax.autoregressive) keeps everything else of the preset (data, encoder, steps,
  sampling, metrics) so the two decoders are compared under one protocol; its pair state has decoder_features
  channels (16 on the cpu preset: one second-order layer and a GRU per construction step, 3 N steps).
  """
  if decoder not in DECODERS:
    raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
  config = _preset(dataset, preset)
  if decoder == "all_at_once":
    return config
  feat = config.featuriser()
  # ZINC250k: at most 80 atoms + bonds (measured on a fifth of the training split); 88 steps instead of 3 N = 114.
  steps = 88 if dataset == "zinc" and preset != "test" else 0
  model = dataclasses.replace(
      config.model, decoder="autoregressive", ar_steps=steps,
      ar_valences=autoregressive.valence_table(feat.type_names, featurise.NO_ATOM),
      decoder_features=16 if preset == "cpu" else config.model.decoder_features,
      decoder_positions=False, rank_pointers=0)  # the rank-reading pair inputs are the second-order decoder's
  return dataclasses.replace(config, model=model)


def _preset(dataset: str, preset: str) -> MolgenConfig:
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  zinc = dataset == "zinc"
  if preset == "paper":
    # Section 5.1: L = 3 latent levels (the molecule, its 4 clusters, their 2 clusters: K = 2^(l-1) read as the
    # clusters cut at level l = 3, 2, 1, the last cut being to the single top node), second-order local encoders
    # with up to four layers, d_z = 256, learnable prior, Adam 1e-3, 10,000 molecules. Unstated there, chosen here:
    # batch 20 (the authors' code), decoder 4 x 128, 100 epochs, 10,000 samples, and KL_WEIGHT (see there).
    model = _model(dataset, mgn=dict(num_clusters=(4, 2, 1), latent_dim=256, encoder_features=256, encoder_layers=4,
                                     cluster_features=128, cluster_layers=2, pool_features=256,
                                     global_encoder_layers=2),
                   decoder_features=128, decoder_layers=4, kl_weight=KL_WEIGHT)
    train = training.TrainConfig(batch_size=20, num_steps=50_000, temperature_decay_steps=20_000, log_every=100,
                                 checkpoint_every=1000)
    return MolgenConfig(dataset=dataset, preset=preset, model=model, chemical_features=zinc, train=train,
                        num_samples=10_000, sample_batch_size=1000, num_test=0)
  if preset in ("cpu", "long"):
    # ZINC (N = 38) at batch 32 on 2 CPU cores: about 0.5 s a step (README, Benchmarks); 2,000 steps fit the
    # 30-minute budget with sampling, metrics and pictures. ZINC clusters hold at most 16 / 4 nodes (overflow
    # counted, and ranked by an equivariant priority). Beyond the paper, each measured against it (README "What the
    # molecule model learned"): canonical-rank node features, bilinear decoder pairs, beta CPU_KL_WEIGHT, Adam 2e-3,
    # and samples drawn from a Gaussian mixture of 20 components fitted to the aggregate posterior.
    # long: 5 x the molecules, the rate decayed by a cosine; ZINC 4.5 x the steps (about 6 epochs of 50,000: what
    # fits 2.5 hours at 1.35 steps/s with the kernel prior's fit and the evaluations), QM9 6 x.
    # ZINC only, measured against the settings above (README): ranks are canonical-SMILES positions, the encoder
    # gets each atom's bonds as rank offsets, the decoder reads the ranks (rank distances and pointer pairs), atoms
    # that overflow their cluster get a posterior of their own, the balanced cut also scores the argmax clustering
    # that evaluation encodes with (else its clusters overflow), samples come from a kernel density estimate of
    # the aggregate posterior (a mixture's samples decode to ring-free chains there), and they are decoded with bonds
    # down to probability SAMPLE_EDGE_THRESHOLD (at 0.5 the kernel's noise drops ring closures).
    long = preset == "long"
    steps = (9000 if long else 2000) if zinc else 4000 * (6 if long else 1)
    model = _model(dataset, mgn=dict(num_clusters=(4, 2), capacity=(16, 4) if zinc else None, latent_dim=16,
                                     encoder_features=32, encoder_layers=2, cluster_features=32, pool_features=32,
                                     global_encoder_layers=1, overflow_posterior=zinc, balance_argmax=zinc),
                   decoder_features=32, decoder_layers=3, kl_weight=CPU_KL_WEIGHT, decoder_pairs="bilinear",
                   decoder_positions=zinc, rank_pointers=8 if zinc else 0)
    train = training.TrainConfig(batch_size=32, num_steps=steps, temperature_decay_steps=int(0.8 * steps),
                                 learning_rate=2e-3, lr_schedule="cosine" if long else "constant",
                                 checkpoint_every=500 if long else 250)
    return MolgenConfig(dataset=dataset, preset=preset, model=model, chemical_features=zinc, rank_features=True,
                        rank_order="smiles" if zinc else "canonical", rank_bond_features=zinc,
                        num_train=50_000 if long else 10_000, train=train,
                        sample_from="kernel" if zinc else "aggregate", prior_components=20,
                        sample_edge_threshold=SAMPLE_EDGE_THRESHOLD if zinc else None,
                        quality_every=steps // (6 if long else 4))
  # test: seconds, not minutes; the ZINC cpu preset's code paths (SMILES ranks read by the decoder, the argmax
  # clustering balanced, the kernel prior) on either set.
  model = _model(dataset, mgn=dict(num_clusters=(2, 1), latent_dim=4, encoder_features=8, encoder_layers=1,
                                   cluster_features=8, cluster_layers=1, pool_features=8, global_encoder_layers=1,
                                   balance_argmax=True),
                 decoder_features=8, decoder_layers=1, decoder_pairs="bilinear", decoder_positions=True,
                 rank_pointers=2)
  return MolgenConfig(dataset=dataset, preset=preset, model=model, chemical_features=False, rank_features=True,
                      rank_order="smiles", rank_bond_features=True, sample_from="kernel", prior_components=2,
                      num_train=48,
                      train=training.TrainConfig(batch_size=8, num_steps=6, temperature_decay_steps=6, log_every=1,
                                                 checkpoint_every=2),
                      num_samples=24, sample_batch_size=16, num_test=32, num_reconstruct=16, compute_fcd=False,
                      grid_molecules=8, interpolation_steps=3)
