"""Training core: train state and steps (non-finite steps skipped), orbax checkpoints, progress logging."""

from mgvae_jax.training.checkpoint import CheckpointManager
from mgvae_jax.training.checkpoint import data_position
from mgvae_jax.training.checkpoint import restore_or_init
from mgvae_jax.training.progress import Progress
from mgvae_jax.training.state import check_nonfinite
from mgvae_jax.training.state import create_train_state
from mgvae_jax.training.state import guarded_update
from mgvae_jax.training.state import make_eval_step
from mgvae_jax.training.state import make_train_step
from mgvae_jax.training.state import NonFiniteLossError
from mgvae_jax.training.state import TrainState
from mgvae_jax.training import sharding
