"""Molecule generation metrics: validity, uniqueness, novelty, QED, FCD and NSPDK MMD.

The conventions are GDSS's (Jo et al. 2022; `sampler.py`, which calls MOSES's `get_all_metrics` and GDSS's
`compute_nspdk_mmd`), so numbers are comparable with the tables of GDSS and the papers that copy its protocol.
`generation_metrics` states every denominator. Where we deliberately differ from MOSES: molecules are compared
(uniqueness, novelty) by canonical SMILES *without* stereochemistry, because a 2D graph generator cannot produce
stereo and ZINC's training SMILES carry it; counting "C[C@H](N)O" as novel w.r.t. "C[C@@H](N)O" would inflate novelty.

FCD needs `fcd_torch` (with torch): the optional `metrics` extra. NSPDK uses `nspdk.py` here (numpy/scipy only).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from rdkit import Chem
from rdkit import rdBase
from rdkit.Chem import QED

from mgvae_jax import parallel
from mgvae_jax.chem import featurise
from mgvae_jax.chem import nspdk

_EXTRA_HINT = "install the optional metrics extra: pip install 'mgvae_jax[metrics]'"


def parse_smiles(smiles: Optional[str]) -> Optional[Chem.Mol]:
  """The sanitised RDKit molecule of `smiles`, or None for a failed sample.

  A sample fails if it is None, empty/blank, the literal "None", does not parse or sanitise (e.g. a valence error), or
  has no atoms. Multi-fragment SMILES ("CC.O") that sanitise are valid, as in RDKit and MOSES; GDSS-style decoders
  keep only the largest fragment before writing SMILES, so that choice is the decoder's, not this metric's.
  """
  if smiles is None:
    return None
  smiles = str(smiles).strip()
  if not smiles or smiles == "None":
    return None
  with rdBase.BlockLogs():  # invalid samples are expected; RDKit would log each one
    mol = Chem.MolFromSmiles(smiles)
  if mol is None or mol.GetNumAtoms() == 0:
    return None
  return mol


def canonical_smiles(smiles: Optional[str]) -> Optional[str]:
  """RDKit canonical SMILES without stereochemistry (isomericSmiles=False), or None if the sample is invalid."""
  return featurise.canonical_smiles(parse_smiles(smiles))


def _describe_chunk(smiles: Sequence[Optional[str]], with_qed: bool = True) -> list:
  """Per SMILES: None if invalid, else (canonical SMILES without stereo, canonical SMILES with stereo (what FCD
  reads), QED (None without `with_qed`), NSPDK graph). Module-level so that parallel.map_chunks can run it in
  worker processes."""
  out = []
  for s in smiles:
    mol = parse_smiles(s)
    out.append(None if mol is None else (featurise.canonical_smiles(mol), Chem.MolToSmiles(mol),
                                         float(QED.qed(mol)) if with_qed else None, nspdk.from_mol(mol)))
  return out


def _canonical_chunk(smiles: Sequence[Optional[str]]) -> list[Optional[str]]:
  return [canonical_smiles(s) for s in smiles]


def _valid_chunk(smiles: Sequence[Optional[str]]) -> list[bool]:
  return [parse_smiles(s) is not None for s in smiles]


def _fcd(generated: list[str], reference: list[str], workers: Optional[int] = 1) -> float:
  """Frechet ChemNet Distance with fcd_torch, the implementation MOSES (and hence GDSS) uses."""
  try:
    import fcd_torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"FCD needs the fcd_torch package (and torch), which is not importable ({e}); {_EXTRA_HINT}, "
                      "or skip FCD (compute_fcd=False / --no_fcd)") from e
  # fcd_torch ships ChemNet's weights in its wheel (no download) and re-canonicalises with RDKit (isomeric, as MOSES).
  # n_jobs=1: fcd_torch's own pool forks, and forking this multithreaded (JAX) process can deadlock. ChemNet's forward
  # pass, most of the time, is multithreaded in torch anyway.
  del workers
  model = fcd_torch.FCD(device="cpu", n_jobs=1)
  with warnings.catch_warnings():
    # fcd_torch 1.0.7 calls np.row_stack (deprecated in numpy 2) and scipy's sqrtm(disp=False) (removed in scipy 1.18,
    # hence the pin scipy<1.18 of the metrics extra); both still work, and neither warning is the caller's to act on.
    warnings.filterwarnings("ignore", message=".*row_stack.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*", category=DeprecationWarning)
    return float(model(ref=reference, gen=generated))


def generation_metrics(
    generated: Sequence[Optional[str]],
    train_smiles: Iterable[str],
    test_smiles: Iterable[str],
    *,
    num_samples: Optional[int] = None,
    uncorrected: Optional[Sequence[Optional[str]]] = None,
    compute_fcd: bool = True,
    compute_nspdk: bool = True,
    workers: Optional[int] = 1,
) -> dict[str, Any]:
  """Generation quality of a set of sampled molecules, with GDSS's conventions.

  Denominators (N = num_samples; V, U, T as defined here):

    validity               = V / N, V = number of valid samples (see `parse_smiles`). N counts every requested sample,
                             failed decodes included: `None` entries, and the num_samples - len(generated) samples
                             missing from `generated`. 10,000 samples means 10,000 in the denominator.
    validity_wo_correction = (valid samples in `uncorrected`) / N, for decoders that repair valence errors:
                             `uncorrected` lists the same samples before repair. Without it, `generated` is taken to
                             be uncorrected and this equals validity (`validity_wo_correction_source` says which).
    uniqueness             = U / V, U = distinct canonical SMILES among the valid samples (MOSES's unique@k with k = V).
    novelty                = T / U, T = those U distinct molecules whose canonical SMILES is not in the training set
                             (MOSES's `novelty`, used by GDSS: novel unique / unique valid).
    qed_mean, qed_std      = mean and (population) std of RDKit's QED over the U distinct valid molecules, so a
                             molecule generated many times counts once.
    fcd                    = FCD (fcd_torch) between all V valid samples (duplicates kept, as MOSES's FCD/Test) and
                             the whole test set as given (`fcd_num_test` reports its size); None if V < 2. Both sides
                             are RDKit canonical SMILES *with* stereo where present, as in GDSS, since ChemNet reads
                             the SMILES string.
    nspdk_mmd              = NSPDK MMD^2 (`nspdk.py`, equivalent to GDSS's EDeN call) between the graphs of all V valid
                             samples and those of the whole test set (`nspdk_num_test`); None if V = 0.

  Canonical SMILES are RDKit's with isomericSmiles=False, for generated and training molecules alike, so two SMILES of
  the same molecule count once and stereoisomers count as one molecule. With V = 0 (or U = 0), uniqueness, novelty and
  the QED statistics are 0. Subsample the test set before calling to bound FCD/NSPDK cost (the CLI's --num_test).

  Args:
    generated: one SMILES (or None for a failed decode) per sample, after any correction.
    train_smiles: the training set, for novelty.
    test_smiles: the reference set for FCD and NSPDK; unreadable entries are dropped with a warning.
    num_samples: the number of samples requested, if `generated` omits some failures; default len(generated).
    uncorrected: the same samples before correction (same length as `generated`).
    compute_fcd: compute FCD (needs fcd_torch; raises ImportError naming the `metrics` extra if missing).
    compute_nspdk: compute NSPDK MMD.
    workers: processes for the RDKit work (parallel.map_chunks: None = every core, 1 = this process); the results
      do not depend on it.

  Returns:
    A JSON-serialisable dict: the rates above, their counts (num_samples, num_valid, num_unique, num_novel,
    num_valid_wo_correction), FCD/NSPDK values with the set sizes they used (None where skipped), and `notes`, a list of
    messages about anything not computed.
  """
  generated = list(generated)
  n = len(generated) if num_samples is None else int(num_samples)
  if n < len(generated):
    raise ValueError(f"num_samples={n} is smaller than the {len(generated)} generated entries given")
  if n <= 0:
    raise ValueError("no samples: generated is empty and num_samples is not positive; nothing to evaluate")
  if uncorrected is not None:
    uncorrected = list(uncorrected)
    if len(uncorrected) != len(generated):
      raise ValueError(f"uncorrected has {len(uncorrected)} entries but generated has {len(generated)}; they must "
                       "list the same samples before and after correction")
  notes: list[str] = []

  described = parallel.map_chunks(_describe_chunk, generated, workers)  # (canonical, stereo SMILES, QED, graph)
  valid = [d for d in described if d is not None]
  first = {}  # canonical SMILES -> its first valid sample, in first-seen order (reproducible QED sums)
  for d in valid:
    first.setdefault(d[0], d)
  unique = list(first)
  train = {c for c in parallel.map_chunks(_canonical_chunk, list(train_smiles), workers) if c is not None}
  novel = [c for c in unique if c not in train]
  num_valid, num_unique = len(valid), len(unique)

  if uncorrected is None:
    num_valid_wo, source = num_valid, "generated"
  else:
    num_valid_wo, source = sum(parallel.map_chunks(_valid_chunk, uncorrected, workers)), "uncorrected"

  qeds = np.array([d[2] for d in first.values()], np.float64)
  result: dict[str, Any] = {
      "num_samples": n,
      "num_valid": num_valid,
      "num_valid_wo_correction": num_valid_wo,
      "num_unique": num_unique,
      "num_novel": len(novel),
      "num_train": len(train),
      "validity": num_valid / n,
      "validity_wo_correction": num_valid_wo / n,
      "validity_wo_correction_source": source,
      "uniqueness": num_unique / num_valid if num_valid else 0.0,
      "novelty": len(novel) / num_unique if num_unique else 0.0,
      "qed_mean": float(qeds.mean()) if num_unique else 0.0,
      "qed_std": float(qeds.std()) if num_unique else 0.0,
      "fcd": None,
      "fcd_num_generated": None,
      "fcd_num_test": None,
      "nspdk_mmd": None,
      "nspdk_num_generated": None,
      "nspdk_num_test": None,
  }

  if compute_fcd or compute_nspdk:
    test_smiles = list(test_smiles)
    test = parallel.map_chunks(functools.partial(_describe_chunk, with_qed=False), test_smiles, workers)
    bad = [i for i, d in enumerate(test) if d is None]
    if bad:
      warnings.warn(f"test set: {len(bad)} of {len(test)} SMILES do not parse with RDKit and are left out (first at "
                    f"index {bad[0]}: {test_smiles[bad[0]]!r})", stacklevel=2)
    test = [d for d in test if d is not None]
    if not test:
      raise ValueError("the test set has no readable SMILES; FCD and NSPDK need a reference set "
                       "(or pass compute_fcd=False and compute_nspdk=False)")
  if compute_fcd:
    if num_valid < 2:
      notes.append(f"FCD not computed: it needs at least 2 valid samples, got {num_valid}")
    elif len(test) < 2:
      notes.append(f"FCD not computed: it needs at least 2 test molecules, got {len(test)}")
    else:
      # Both sides go in as RDKit canonical SMILES with stereo where present, as GDSS (canonicalize_smiles) and MOSES.
      t0 = time.perf_counter()
      fcd = _fcd([d[1] for d in valid], [d[1] for d in test], workers)
      result["fcd_seconds"] = time.perf_counter() - t0
      if math.isfinite(fcd):
        result["fcd"] = fcd
        result["fcd_num_generated"], result["fcd_num_test"] = num_valid, len(test)
      else:
        notes.append(f"FCD not computed: fcd_torch returned {fcd} for these sets")
  if compute_nspdk:
    if num_valid == 0:
      notes.append("NSPDK MMD not computed: there are no valid samples")
    else:
      result["nspdk_mmd"] = nspdk.mmd([d[3] for d in valid], [d[3] for d in test])
      result["nspdk_num_generated"], result["nspdk_num_test"] = num_valid, len(test)
  result["notes"] = notes
  return result
