"""What every training run is configured by: `TrainConfig`, held by each experiment config as its `train` field.

  config.train.batch_size, config.train.num_steps, ...   (--set train.learning_rate=2e-3 on the command line)

Runs count optimizer steps. Binaries that think in epochs set `epochs`; the loop (loop.py) then trains
epochs x steps-per-epoch steps, which it knows from the data.
"""

from __future__ import annotations

import dataclasses

import optax

LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, schedule, logging, checkpoint and fault-injection settings of one training run."""
  batch_size: int = 32  # global batch; must divide by the number of devices
  num_steps: int = 2500  # optimizer steps (unused when epochs > 0)
  epochs: int = 0  # > 0: train this many passes over the data instead of num_steps
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"  # constant | cosine (from learning_rate down to 1 % of it at the last step)
  grad_clip: float = 1.0  # global-norm clipping (0: none)
  # Gumbel-softmax temperature of learned clusterings, annealed exponentially (clustering.gumbel_temperature).
  temperature_start: float = 1.0
  temperature_end: float = 0.3
  temperature_decay_steps: int = 2000
  seed: int = 0  # parameters, data order and training randomness derive from it
  max_nonfinite_in_a_row: int = 20  # stop after this many skipped (non-finite) steps in a row (0: never)
  log_every: int = 50  # steps between progress lines (and metrics.jsonl records)
  checkpoint_every: int = 250  # steps between checkpoints (and always at the end)
  keep_checkpoints: int = 3
  kill_at_step: int = 0  # fault injection (tests): SIGKILL this process right after this step (0: off)

  def __post_init__(self):
    for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "temperature_decay_steps"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
    for name in ("num_steps", "epochs", "max_nonfinite_in_a_row", "kill_at_step"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
    if self.num_steps < 1 and self.epochs < 1:
      raise ValueError("train.num_steps or train.epochs must be >= 1")
    if not (self.learning_rate > 0 and self.temperature_start > 0 and self.temperature_end > 0):
      raise ValueError(f"train.learning_rate, temperature_start and temperature_end must be positive, got "
                       f"{self.learning_rate}, {self.temperature_start}, {self.temperature_end}")
    if self.grad_clip < 0:
      raise ValueError(f"train.grad_clip must be >= 0 (0: none), got {self.grad_clip}")
    if self.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

  def total_steps(self, steps_per_epoch: int) -> int:
    """The run's last step: epochs x steps_per_epoch when epochs are set, else num_steps."""
    if steps_per_epoch < 1:
      raise ValueError(f"total_steps: steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return self.epochs * steps_per_epoch if self.epochs else self.num_steps


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
  """Adam after global-norm clipping. The cosine schedule spans `total_steps` (TrainConfig.total_steps) and reads the
  optimizer's own step count, so a resumed run continues it where it stopped."""
  rate = config.learning_rate
  if config.lr_schedule == "cosine":
    rate = optax.cosine_decay_schedule(rate, total_steps, alpha=0.01)
  adam = optax.adam(rate)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip > 0 else adam
