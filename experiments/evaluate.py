r"""Score sampled molecules: validity, uniqueness, novelty, QED, FCD and NSPDK MMD (GDSS's protocol).

  python -m experiments.evaluate --samples=samples.smi --dataset=zinc250k [--uncorrected=raw.smi] \
      [--out=metrics.json] [--train=train.smi --test=test.smi] [--num_test=N] [--no_fcd] [--no_nspdk]

Samples files hold one SMILES per line; an empty line or the literal `None` is a failed sample and counts in every
denominator (see `mgvae_jax.chem.metrics.generation_metrics`). Anything after the first whitespace on a line (a name,
as in .smi files) is ignored. The train/test sets come from `--train/--test` (same format, blank lines skipped) or
else from the dataset's standard split (`mgvae_jax.data.molecules.load_smiles`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from mgvae_jax.chem import metrics
from mgvae_jax.data import files

DATASETS = ("zinc250k", "zinc", "qm9")

_SAMPLES = flags.DEFINE_string("samples", None, "Generated SMILES, one per line; empty or `None` = failed sample.")
_DATASET = flags.DEFINE_enum("dataset", None, DATASETS, "Dataset whose train/test split is used (default).")
_UNCORRECTED = flags.DEFINE_string("uncorrected", None, "The same samples before valence correction, line by line.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON; default SAMPLES with suffix .metrics.json.")
_TRAIN = flags.DEFINE_string("train", None, "Training SMILES file (for novelty); default the dataset's train split.")
_TEST = flags.DEFINE_string("test", None, "Test SMILES file (for FCD, NSPDK); default the dataset's test split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory passed to load_smiles.")
_NUM_TEST = flags.DEFINE_integer("num_test", None, "Use a random subset of this many test molecules for FCD/NSPDK.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the --num_test subset.")
_NO_FCD = flags.DEFINE_bool("no_fcd", False, "Skip FCD (which needs the `metrics` extra: torch, fcd_torch).")
_NO_NSPDK = flags.DEFINE_bool("no_nspdk", False, "Skip NSPDK MMD.")


def _read_lines(path: str, what: str) -> list[str]:
  lines = files.read_text(path, "SMILES, one per line", role=f"{what} file").splitlines()
  if not lines:
    raise ValueError(f"{what} file {path} is empty; expected one SMILES per line")
  return lines


def read_samples(path: str, what: str = "samples") -> list[Optional[str]]:
  """One entry per line: the SMILES (first whitespace-separated token), or None for an empty line or `None`."""
  out = []
  for line in _read_lines(path, what):
    token = line.split()[0] if line.strip() else ""
    out.append(None if token in ("", "None") else token)
  return out


def read_reference(path: str, what: str) -> list[str]:
  """A reference SMILES file: one SMILES per line, blank and `None` lines skipped."""
  smiles = [s for s in read_samples(path, what) if s is not None]
  if not smiles:
    raise ValueError(f"{what} file {path} has no SMILES, only blank or `None` lines")
  return smiles


def _reference(path: Optional[str], dataset: Optional[str], split: str,
               data_dir: Optional[str]) -> tuple[list[str], str]:
  """The `split` SMILES from `path` if given, else from the dataset's split; and where they came from."""
  if path is not None:
    return read_reference(path, f"{split} set"), path
  if dataset is None:
    raise ValueError(f"no {split} set: pass --{split}=FILE or --dataset to use the dataset's {split} split")
  from mgvae_jax.data import molecules  # pylint: disable=g-import-not-at-top  (lazy: data loading is optional here)
  return list(molecules.load_smiles(dataset, split, data_dir=data_dir)), f"{dataset}:{split}"


def evaluate(
    samples: str,
    dataset: Optional[str] = None,
    *,
    uncorrected: Optional[str] = None,
    train: Optional[str] = None,
    test: Optional[str] = None,
    data_dir: Optional[str] = None,
    num_test: Optional[int] = None,
    seed: int = 0,
    compute_fcd: bool = True,
    compute_nspdk: bool = True,
    out: Optional[str] = None,
) -> dict[str, Any]:
  """Read the files, score the samples, write the JSON (if `out`) and return it.

  Args:
    samples: samples file (see module docstring); its line count is num_samples.
    dataset: one of DATASETS; needed unless both `train` and `test` are given.
    uncorrected: the samples before correction, with the same number of lines.
    train: training SMILES file; default the dataset's train split.
    test: test SMILES file; default the dataset's test split.
    data_dir: passed to `load_smiles`.
    num_test: if set and smaller than the test set, a random subset of this size (seeded by `seed`) is the reference.
    seed: seed of that subset.
    compute_fcd: compute FCD.
    compute_nspdk: compute NSPDK MMD.
    out: JSON path to write; None writes nothing.

  Returns:
    `generation_metrics`'s dict plus `inputs`, recording where every set came from and its size.
  """
  if dataset is not None and dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  if num_test is not None and num_test < 1:
    raise ValueError(f"num_test must be positive, got {num_test}")
  generated = read_samples(samples, "samples")
  raw = read_samples(uncorrected, "uncorrected samples") if uncorrected is not None else None
  if raw is not None and len(raw) != len(generated):
    raise ValueError(f"uncorrected samples file {uncorrected} has {len(raw)} lines but samples file {samples} has "
                     f"{len(generated)}; line i of both must be the same sample")
  train_smiles, train_source = _reference(train, dataset, "train", data_dir)
  need_test = compute_fcd or compute_nspdk
  test_smiles, test_source = _reference(test, dataset, "test", data_dir) if need_test else ([], None)
  test_size = len(test_smiles)
  if num_test is not None and num_test < len(test_smiles):
    idx = np.sort(np.random.default_rng(seed).choice(len(test_smiles), size=num_test, replace=False))
    test_smiles = [test_smiles[i] for i in idx]

  result = metrics.generation_metrics(generated, train_smiles, test_smiles, uncorrected=raw,
                                      compute_fcd=compute_fcd, compute_nspdk=compute_nspdk)
  result["inputs"] = {
      "samples": str(samples),
      "uncorrected": None if uncorrected is None else str(uncorrected),
      "dataset": dataset,
      "train": train_source,
      "test": test_source,
      "train_size": len(train_smiles),
      "test_size": test_size,
      "test_used": len(test_smiles),
      "num_test_seed": seed if num_test is not None and num_test < test_size else None,
  }
  if out is not None:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
  return result


def format_table(result: dict[str, Any]) -> str:
  """A short human-readable summary of `evaluate`'s result."""
  def fmt(x, pct=False):
    if x is None:
      return "skipped"
    return f"{100 * x:.2f}%" if pct else f"{x:.4f}"
  n = result["num_samples"]
  rows = [
      ("samples", str(n)),
      ("validity w/o correction", f"{fmt(result['validity_wo_correction'], True)}  "
       f"({result['num_valid_wo_correction']}/{n}, from {result['validity_wo_correction_source']})"),
      ("validity", f"{fmt(result['validity'], True)}  ({result['num_valid']}/{n})"),
      ("uniqueness", f"{fmt(result['uniqueness'], True)}  ({result['num_unique']}/{result['num_valid']} valid)"),
      ("novelty", f"{fmt(result['novelty'], True)}  ({result['num_novel']}/{result['num_unique']} unique)"),
      ("QED", f"{result['qed_mean']:.4f} +- {result['qed_std']:.4f}  (over unique valid)"),
      ("FCD/test", fmt(result["fcd"]) + ("" if result["fcd"] is None else f"  (vs {result['fcd_num_test']} test)")),
      ("NSPDK MMD", fmt(result["nspdk_mmd"]) +
       ("" if result["nspdk_mmd"] is None else f"  (vs {result['nspdk_num_test']} test)")),
  ]
  width = max(len(k) for k, _ in rows)
  lines = [f"{k:<{width}}  {v}" for k, v in rows] + [f"note: {m}" for m in result.get("notes", [])]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = _OUT.value or str(pathlib.Path(_SAMPLES.value).with_suffix(".metrics.json"))
  result = evaluate(_SAMPLES.value, _DATASET.value, uncorrected=_UNCORRECTED.value, train=_TRAIN.value,
                    test=_TEST.value, data_dir=_DATA_DIR.value, num_test=_NUM_TEST.value, seed=_SEED.value,
                    compute_fcd=not _NO_FCD.value, compute_nspdk=not _NO_NSPDK.value, out=out)
  print(format_table(result))
  print(f"wrote {out}")


if __name__ == "__main__":
  flags.mark_flag_as_required("samples")
  app.run(main)
