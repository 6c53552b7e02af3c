"""Training core, for any model and loss: TrainConfig, train state and guarded step, the one loop, checkpoints,
run directories that are never clobbered, progress logging, data-parallel sharding. Imports no model."""

from mgvae_jax.training.checkpoint import CheckpointManager
from mgvae_jax.training.checkpoint import data_position
from mgvae_jax.training.checkpoint import restore_or_init
from mgvae_jax.training.config import make_optimizer
from mgvae_jax.training.config import TrainConfig
from mgvae_jax.training.loop import run
from mgvae_jax.training.loop import RunResult
from mgvae_jax.training.progress import Progress
from mgvae_jax.training.rundir import ConfigMismatchError
from mgvae_jax.training.state import check_nonfinite
from mgvae_jax.training.state import create_train_state
from mgvae_jax.training.state import guarded_update
from mgvae_jax.training.state import make_train_step
from mgvae_jax.training.state import NonFiniteLossError
from mgvae_jax.training.state import TrainState
from mgvae_jax.training import rundir
from mgvae_jax.training import sharding
