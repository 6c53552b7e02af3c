"""Config of `experiments.linkpred`: MGVAE link prediction on Cora and Citeseer (paper section 5.3), as code.

Presets (get_config(dataset, clustering, preset)):
  cpu    the default: the paper's hierarchy (L = 7 levels, 2^l clusters: 128 at the bottom) and latent size, arranged
         to add to VGAE (GCN heads, residual local latents and unpooled ancestors, edge cut, noise-free clusters),
         200 epochs, 5 seeds; about 20 minutes per data set on a 2-core CPU.
  paper  section 5.3 as written: 2,048 epochs, Adam lr 0.01, Glorot init, latent 128, L = 7 with 2^l clusters, dense
         heads on [h || u], Gumbel-noised clusters, 5 seeds.
  test   the synthetic planted-partition graph (any --dataset), a tiny model, a few epochs: for tests and smoke runs.

Any field can be overridden from the command line: `--set train.epochs=1000 --set model.score=multiresolution`.

Training is full-batch: one step on the whole training graph per epoch, so runs are counted in `train.epochs` (each
step is one epoch; train.num_steps is unused) and `train.batch_size` is 1, the one graph.
"""

from __future__ import annotations

import dataclasses

from experiments.configs import overrides
from mgvae_jax import link_prediction
from mgvae_jax import mgn
from mgvae_jax import training

DATASETS = ("cora", "citeseer", "synthetic")
# "none": no hierarchy, i.e. VGAE (GCN input layer, GCN posterior heads, inner-product decoder) at the same sizes,
# the baseline a hierarchy must beat.
CLUSTERINGS = ("learned", "spectral", "kmeans", "none")
PRESETS = ("cpu", "paper", "test")
NUM_NODES = {"cora": 2708, "citeseer": 3327, "synthetic": 48}  # checked against the data at load time
# Adam 0.01 without clipping, as VGAE (clipping at 1 let the coarse levels' large BCE drown the finest level's).
TRAIN = training.TrainConfig(batch_size=1, epochs=200, learning_rate=0.01, grad_clip=0.0, temperature_decay_steps=200,
                             log_every=50, checkpoint_every=100, keep_checkpoints=2)


@dataclasses.dataclass(frozen=True)
class LinkpredConfig:
  """Everything `experiments.linkpred.train_and_evaluate` reads."""
  dataset: str = "cora"
  clustering: str = "learned"
  preset: str = "cpu"
  model: link_prediction.LinkPredictionConfig = link_prediction.LinkPredictionConfig()
  num_nodes: int = 2708
  # Edge split (VGAE's): fractions of the undirected edges held out, with as many non-edges each.
  val_fraction: float = 0.05
  test_fraction: float = 0.10
  # Optimisation, logging, checkpoints: one full-graph step per epoch (train.epochs). train.seed is unused: each seed
  # of `seeds` trains with its own.
  train: training.TrainConfig = TRAIN
  seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # each seed: its own edge split and initialisation
  # Model selection: validation AUC every eval_every epochs (and at the last); test read at the best one only.
  eval_every: int = 10
  # Fixed clusterings' settings (section 5.3: 10 eigenvectors; PCA to 10 dimensions).
  spectral_dim: int = 10
  pca_dim: int = 10

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {DATASETS}")
    if self.clustering not in CLUSTERINGS:
      raise ValueError(f"unknown clustering {self.clustering!r}; expected one of {CLUSTERINGS}")
    overrides.check_at_least(self, ("eval_every", "spectral_dim", "pca_dim", "num_nodes"), 1)
    if self.train.epochs < 1:
      raise ValueError(f"linkpred counts epochs (one full-graph step each): set train.epochs >= 1, not "
                       f"train.num_steps; got train.epochs={self.train.epochs}")
    if self.train.batch_size != 1:
      raise ValueError(f"linkpred trains on one full graph per step: train.batch_size must be 1, got "
                       f"{self.train.batch_size}")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"seeds must be a non-empty tuple of distinct ints, got {self.seeds}")
    if not (0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1):
      raise ValueError(f"val_fraction and test_fraction must be positive with a sum below 1, got "
                       f"{self.val_fraction}, {self.test_fraction}")
    if self.model.hierarchy != (self.clustering != "none"):
      raise ValueError(f"clustering={self.clustering!r} needs model.hierarchy={self.clustering != 'none'}, got "
                       f"{self.model.hierarchy}")
    if not self.model.hierarchy:
      return
    want = "learned" if self.clustering == "learned" else "given"
    if self.model.mgn.clustering != want:
      raise ValueError(f"clustering={self.clustering!r} needs model.mgn.clustering={want!r}, got "
                       f"{self.model.mgn.clustering!r}")
    sizes = self.model.mgn.level_sizes(self.num_nodes)
    for i, k in enumerate(self.model.mgn.num_clusters):
      if k > sizes[i]:
        raise ValueError(f"level {i} (bottom-up) has {sizes[i]} nodes, fewer than its {k} clusters")


def _model(num_nodes: int, clustering: str, num_clusters: tuple[int, ...], capacity_factor: float, **kw
           ) -> link_prediction.LinkPredictionConfig:
  # Learned clustering: node features standardised before the logits, and trained by the balanced cut alone; with
  # either missing, Cora's argmax clustering collapsed into a few clusters (see mgn.MGNConfig.cluster_task_gradient).
  mgn_kw = dict(encoder_features=32, encoder_layers=1, latent_dim=32, cluster_features=32, cluster_layers=2,
                pool_features=32, cluster_norm=True, cluster_task_gradient=False)
  mgn_kw.update(kw.pop("mgn", {}))
  cfg = mgn.MGNConfig(num_clusters=num_clusters,
                      capacity=link_prediction.default_capacity(num_nodes, num_clusters, capacity_factor),
                      clustering="learned" if clustering == "learned" else "given", posterior="none",
                      local_decoder="none", pool_top=False, **mgn_kw)
  if clustering == "none":
    kw.update(hierarchy=False, heads="gcn")
  kw.setdefault("coarse_weight", 0.1)  # coarse BCEs start large (big pooled clusters); the finest level is the task
  return link_prediction.LinkPredictionConfig(mgn=cfg, **kw)


def get_config(dataset: str = "cora", clustering: str = "learned", preset: str = "cpu") -> LinkpredConfig:
  """The named preset for `dataset` and `clustering`."""
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  if clustering not in CLUSTERINGS:
    raise ValueError(f"unknown clustering {clustering!r}; expected one of {CLUSTERINGS}")
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  # The paper's hierarchy arranged to add to VGAE (README, Link prediction): VGAE's encoder trained by the link loss
  # alone, the local latents and the unpooled ancestors entering residually from zero, clusters that follow the
  # edges and stay the same from step to step (no Gumbel noise), so each node is encoded with the communities it is
  # evaluated with. Validation AUC peaks by epoch 160 on Cora and Citeseer, so 200 epochs. Eq. 2 at twice the edge
  # cut's weight (cut_weight 2), the weighting measured.
  cpu = {} if clustering == "none" else dict(heads="gcn", combine="residual", hierarchy_trains_input=False,
                                               unpool=True, edge_cut_weight=1.0, cut_weight=2.0,
                                               mgn=dict(cluster_noise=0.0))
  if preset == "test":  # the cpu preset's design, tiny
    n = NUM_NODES["synthetic"]
    tiny = dict(encoder_features=8, latent_dim=8, cluster_features=8, cluster_layers=1, pool_features=8)
    model = _model(n, clustering, (4, 2), 2.0, input_features=16, latent_dim=8,
                   **dict(cpu, mgn=dict(cpu.get("mgn", {}), **tiny)))
    train = dataclasses.replace(TRAIN, epochs=6, temperature_decay_steps=6, log_every=1, checkpoint_every=2)
    return LinkpredConfig(dataset="synthetic", clustering=clustering, preset=preset, model=model, num_nodes=n,
                          train=train, seeds=(0, 1), eval_every=2, spectral_dim=4, pca_dim=4)
  n = NUM_NODES[dataset]
  levels = tuple(2 ** l for l in range(7, 0, -1))  # L = 7: 128, 64, ..., 2 clusters (section 5.3)
  if preset == "paper":
    model = _model(n, clustering, levels, 2.0, input_features=64, latent_dim=128)
    train = dataclasses.replace(TRAIN, epochs=2048, temperature_decay_steps=1500, log_every=128, checkpoint_every=256)
    return LinkpredConfig(dataset=dataset, clustering=clustering, preset=preset, model=model, num_nodes=n,
                          train=train, eval_every=16)
  model = _model(n, clustering, levels, 2.0, input_features=64, latent_dim=128, **cpu)
  return LinkpredConfig(dataset=dataset, clustering=clustering, preset=preset, model=model, num_nodes=n)
