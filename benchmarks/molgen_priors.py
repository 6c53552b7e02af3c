r"""Which fitted prior samples molecules like the data? Post hoc, on a finished molgen run.

  python -m benchmarks.molgen_priors --workdir=runs/molgen_zinc \
      --priors=kernel:0,kernel:0.3,kernel:0.6,mixture:10:1,mixture:10:0.5,midpoint

Every prior is fitted to the run's training molecules' finest posterior means (the ones molgen's own fitted prior
uses), sampled --num times, decoded at each of --edge_thresholds (default: the run's sample threshold) and scored
against the run's test molecules as molgen scores its samples (validity without correction, uniqueness, novelty,
FCD, QED, rings and atoms per molecule):

  kernel:H        aggregate_prior.KernelDensity with bandwidth H (0: the training molecules' reconstructions)
  mixture:K:T     aggregate_prior.GaussianMixture of K components, its covariances scaled by T^2 (temperature)
  midpoint        the mean of two random training molecules' latents: is the space between molecules decodable?

Results: benchmarks/results/molgen_priors_<dataset>.json.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

from absl import app
from absl import flags
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments import molgen
from experiments import sample
from mgvae_jax import aggregate_prior
from mgvae_jax import vae
from mgvae_jax.chem import statistics

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.molgen run.")
_PRIORS = flags.DEFINE_list("priors", ["kernel:0", "kernel:0.3", "kernel:0.45", "kernel:0.6", "kernel:0.8",
                                       "mixture:10:1", "mixture:10:0.5", "midpoint"], "Priors to compare (see above).")
_NUM = flags.DEFINE_integer("num", 1000, "Samples per prior.")
_THRESHOLDS = flags.DEFINE_list("edge_thresholds", None, "Bond thresholds to decode each prior's samples with; "
                                 "default the run's config.sample_threshold.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "JSON path; default benchmarks/results/molgen_priors_<dataset>.json.")


@struct.dataclass
class Midpoints:
  """Latents halfway between two uniformly drawn training molecules' (same sample() as the fitted priors)."""
  centres: jnp.ndarray  # [G, N, d]

  def sample(self, key: jax.Array, num: int) -> jnp.ndarray:
    a, b = jax.random.randint(key, (2, num), 0, self.centres.shape[0])
    return 0.5 * (self.centres[a] + self.centres[b])


def make_prior(spec: str, latents: np.ndarray, seed: int):
  kind, *args = spec.split(":")
  if kind == "kernel" and len(args) == 1:
    return aggregate_prior.fit_kernel(latents, float(args[0]))
  if kind == "mixture" and len(args) == 2:
    mixture = aggregate_prior.fit(latents, int(args[0]), seed)
    return mixture.replace(cholesky=mixture.cholesky * float(args[1]))
  if kind == "midpoint" and not args:
    return Midpoints(jnp.asarray(latents))
  raise ValueError(f"--priors: cannot read {spec!r}; expected kernel:H, mixture:K:T or midpoint")


def main(argv: Sequence[str]) -> None:
  del argv
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  config, model, params, step = sample.load_run(_WORKDIR.value)
  try:  # each threshold checked where the config checks its own
    thresholds = [dataclasses.replace(config, sample_edge_threshold=float(t)).sample_threshold
                  for t in _THRESHOLDS.value or [config.sample_threshold]]
  except ValueError as exc:
    raise app.UsageError(f"--edge_thresholds: {exc}") from exc
  feat = config.featuriser()
  data = molgen.load_data(config, feat)
  pos_weight = vae.edge_pos_weight(data.train)
  t0 = time.perf_counter()
  latents = np.asarray(aggregate_prior.posterior_means(model, params, data.train, config.sample_batch_size))
  encode_seconds = time.perf_counter() - t0
  test = statistics.molecule_statistics(data.test_smiles, sa_score=False)
  results = []
  for spec in _PRIORS.value:
    t0 = time.perf_counter()
    prior = make_prior(spec, latents, _SEED.value)
    fit_seconds = time.perf_counter() - t0
    probs = aggregate_prior.sample_and_decode(model, params, prior, _NUM.value, _SEED.value,
                                              config.sample_batch_size, pos_weight)
    sample_seconds = time.perf_counter() - t0
    for threshold in thresholds:
      t1 = time.perf_counter()
      row = {"prior": spec, "edge_threshold": threshold, "fit_seconds": fit_seconds,
             **molgen.summarise_samples(probs, feat, data, threshold, compute_fcd=True),
             "seconds": sample_seconds + time.perf_counter() - t1}
      print(row, flush=True)
      results.append(row)
  results.append({"test": {"rings_mean": test["rings_mean"], "atoms_mean": test["atoms_mean"],
                           "qed_mean": test["qed_mean"]},
                  "run": {"workdir": os.path.abspath(_WORKDIR.value), "step": step, "preset": config.preset,
                          "training_molecules": int(latents.shape[0]), "encode_seconds": encode_seconds,
                          "samples": _NUM.value, "test_molecules": len(data.test_smiles)}})
  common.report("molgen_priors", results, _OUT.value if _OUT.value is not None else
                os.path.join(os.path.dirname(__file__), "results", f"molgen_priors_{config.dataset}.json"))


if __name__ == "__main__":
  app.run(main)
