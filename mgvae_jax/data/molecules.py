"""Molecule datasets as SMILES lists (and targets): ZINC250k and QM9 generation splits, ZINC 12k, MGVAE's QM9.

Row orders and splits (see the data dir's PROVENANCE.md):

* ZINC250k: the 249,455 rows of chemical_vae's `250k_rndm_zinc_drugs_clean_3.csv`, the order MoFlow, GDSS, GraphAF
  and MGVAE use. They are the GrammarVAE/JT-VAE `.smi` (249,456 lines) without its line 234,300 (1-based), an extra
  molecule the CSV does not have; so ZINC row 0 is `.smi` line 1 and rows >= 234,299 are `.smi` lines one further on.
  test = the 24,887 rows listed in `valid_idx_zinc250k.json`, train = the other 224,568.
* QM9 (generation): the 133,885 MoleculeNet SMILES in gdb order (row i = gdb_{i+1}); test = the 13,082 ids of
  `valid_idx_qm9.json`, train = the other 120,803.

train (and "all") come in row order; test keeps the JSON's order, the order GDSS evaluates in.

0-based split indices. MoFlow's loaders subtract 1 from the `valid_idx_*.json` values (reading them as 1-based) while
GDSS uses `int(idx)` directly; the two test sets differ by a one-row shift. We follow GDSS, 0-based, for both
datasets: the staged files are GDSS's own copies (`harryjo97/GDSS data/`), so GDSS's reading is the one that goes with
them; the values themselves cannot settle it (ZINC ids span [2, 249429] and QM9 ids [6, 133841], valid under either
convention); and one convention for both files keeps the loaders alike. Results are therefore comparable with
GDSS-style evaluation; to compare with MoFlow's test sets, shift the ids by one yourself.

Validity. Loading does not parse molecules: RDKit needs about 25 s for ZINC250k's 249,455 SMILES (one core), and the
featuriser parses each one anyway. Rows are checked cheaply (non-empty, SMILES characters only); `validate=True` also
parses each selected row with RDKit. Invalid rows are skipped after the split is chosen (so split indices keep meaning
file rows), counted, and reported in one warning; `return_skipped=True` also returns the count.
"""

from __future__ import annotations

import contextlib
import csv
import pathlib
import re
from typing import Iterable, Optional, Sequence

from absl import logging
import numpy as np

from mgvae_jax.data import files
from mgvae_jax.data import registry
from mgvae_jax.data.registry import DataFormatError

PathLike = registry.PathLike

ZINC250K_SMI_LINES = 249_456
ZINC250K_ROWS = 249_455
ZINC250K_EXTRA_LINE = registry.ZINC250K_EXTRA_LINE  # 1-based .smi line dropped to get the chemical_vae order
QM9_ROWS = 133_885
QM9_MGVAE_ROWS = 130_462
# MGVAE's 13 QM9 targets, in the order of its target files (z-score standardised).
QM9_TARGET_NAMES = ("mu", "alpha", "HOMO", "LUMO", "gap", "R2", "ZPVE", "U0", "U", "H", "G", "Cv", "omega1")
# Matching columns of the derived raw-unit CSV; the energies are atomization energies. omega1 has no raw source.
QM9_RAW_COLUMNS = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0_atom", "u298_atom", "h298_atom",
                   "g298_atom", "cv", "omega1_standardized")
QM9_RAW_UNITS = ("Debye", "Bohr^3", "Hartree", "Hartree", "Hartree", "Bohr^2", "Hartree", "kcal/mol", "kcal/mol",
                 "kcal/mol", "kcal/mol", "cal/(mol K)", "standardised (no raw source)")
QM9_SPLIT_PERCENTS = (10, 30, 50, 70, 90)

_ZINC_SMI = registry.ZINC250K_SMI
_ZINC_TEST = "zinc250k/valid_idx_zinc250k.json"
_QM9_SMILES = "qm9/qm9_moleculenet_smiles.csv"
_QM9_TEST = "qm9/valid_idx_qm9.json"
_ZINC12K = "zinc12k/derived/zinc12k_benchmark_derived.csv"
_QM9_MGVAE = "qm9/mgvae_QM9_smiles"
_QM9_RAW = "qm9/derived/qm9_mgvae_rows_raw_targets.csv.gz"
_DATASETS = {"zinc250k": "zinc250k", "zinc": "zinc250k", "qm9": "qm9"}
# Characters that can occur in a SMILES string: a cheap filter for blank lines, headers, stray text and binary junk.
_SMILES_CHARS = re.compile(r"[A-Za-z0-9@+\-\[\]()=#$/\\%.:*]+")
_NUM_EXAMPLES = 3  # invalid rows quoted in the warning


# ---------------------------------------------------------------------------------------------------------------------
# File readers: each raises DataFormatError naming the file and the format it expected.


def _fetch(name: str, data_dir: Optional[PathLike], download: bool) -> pathlib.Path:
  return registry.fetch(name, data_dir=data_dir, download=download)


_read_lines = registry.read_lines


def _read_counted(path: pathlib.Path, what: str, rows: Optional[int] = None) -> list[str]:
  """MGVAE layout: line 1 = count, then `count` lines."""
  fmt = f"{what} (line 1 = the count, then one entry per line)"
  lines = _read_lines(path, fmt)
  head = lines[0].strip()
  if not head.isdigit() or int(head) != len(lines) - 1:
    raise DataFormatError(f"{path}: expected {fmt}; line 1 is {head[:40]!r} but {len(lines) - 1} lines follow")
  if rows is not None and len(lines) - 1 != rows:
    raise DataFormatError(f"{path}: expected {rows} entries of {what}, found {len(lines) - 1}")
  return lines[1:]


_read_json = files.read_json


def _read_csv(path: pathlib.Path, what: str, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
  lines = _read_lines(path, what)
  rows = list(csv.reader(lines))
  header = rows[0]
  missing = [c for c in required if c not in header]
  if missing:
    raise DataFormatError(f"{path}: expected {what} with columns {list(required)}; missing {missing} "
                          f"(header is {header[:12]})")
  bad = next((i for i, r in enumerate(rows[1:], start=2) if len(r) != len(header)), None)
  if bad is not None:
    raise DataFormatError(f"{path}: line {bad} has {len(rows[bad - 1])} fields, the header has {len(header)} "
                          f"(expected {what})")
  return header, rows[1:]


def _to_indices(values: Iterable, path: pathlib.Path, what: str, num_rows: int) -> np.ndarray:
  """0-based row ids: ints (or digit strings, as in valid_idx_qm9.json), in range, no repeats."""
  try:
    idx = np.asarray([int(v) for v in values], np.int64)
  except (TypeError, ValueError) as e:
    raise DataFormatError(f"{path}: expected {what} (integers), got a non-integer entry: {e}") from e
  if idx.size == 0:
    raise DataFormatError(f"{path}: expected {what}, got an empty list")
  if idx.min() < 0 or idx.max() >= num_rows:
    raise DataFormatError(f"{path}: {what} must lie in [0, {num_rows}); found range [{idx.min()}, {idx.max()}]")
  if np.unique(idx).size != idx.size:
    raise DataFormatError(f"{path}: {what} contains repeated rows")
  return idx


def _floats(values: Sequence[str], path: pathlib.Path, what: str) -> np.ndarray:
  try:
    out = np.asarray(values, dtype=np.float64)
  except ValueError:
    bad = next(i for i, v in enumerate(values) if not _is_float(v))
    raise DataFormatError(f"{path}: entry {bad} ({values[bad][:40]!r}) is not a number; expected {what}") from None
  if not np.all(np.isfinite(out)):
    bad = int(np.flatnonzero(~np.isfinite(out))[0])
    raise DataFormatError(f"{path}: entry {bad} is {values[bad]!r}; expected finite {what}")
  return out


def _is_float(v: str) -> bool:
  try:
    float(v)
    return True
  except ValueError:
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Validity filtering.


class _Validator:
  """Cheap syntax filter, plus an RDKit parse when `rdkit` is set."""

  def __init__(self, rdkit: bool):
    self._chem = None
    if rdkit:
      from rdkit import Chem  # pylint: disable=g-import-not-at-top
      self._chem = Chem

  def __call__(self, smiles: str) -> bool:
    if not smiles or _SMILES_CHARS.fullmatch(smiles) is None:
      return False
    return self._chem is None or self._chem.MolFromSmiles(smiles) is not None


def _keep_valid(smiles: Sequence[str], rows: np.ndarray, validate: bool, limit: Optional[int] = None,
                what: str = "") -> tuple[np.ndarray, int]:
  """Rows whose SMILES pass, in the given order, stopping after `limit` passes; and the number skipped."""
  check = _Validator(validate)
  kept, skipped = [], []
  with _quiet_rdkit() if validate else contextlib.nullcontext():
    for r in rows:
      if limit is not None and len(kept) == limit:
        break
      (kept if check(smiles[r]) else skipped).append(int(r))
  if skipped:
    examples = ", ".join(f"row {r}: {smiles[r][:60]!r}" for r in skipped[:_NUM_EXAMPLES])
    logging.warning("%s: skipped %d invalid SMILES (%s%s)", what, len(skipped), examples,
                    ", ..." if len(skipped) > _NUM_EXAMPLES else "")
  return np.asarray(kept, np.int64), len(skipped)


@contextlib.contextmanager
def _quiet_rdkit():
  """RDKit prints one error line per bad SMILES; the summary warning replaces them."""
  from rdkit import RDLogger  # pylint: disable=g-import-not-at-top
  RDLogger.DisableLog("rdApp.*")
  try:
    yield
  finally:
    RDLogger.EnableLog("rdApp.*")


# ---------------------------------------------------------------------------------------------------------------------
# Dataset rows.


def _zinc250k_rows(data_dir, download) -> tuple[list[str], np.ndarray]:
  """The 249,455 chemical_vae-order SMILES and the 0-based test rows."""
  path = _fetch(_ZINC_SMI, data_dir, download)
  lines = [s.strip() for s in _read_lines(path, registry.get(_ZINC_SMI).format)]
  if len(lines) != ZINC250K_SMI_LINES:
    raise DataFormatError(f"{path}: expected the {ZINC250K_SMI_LINES}-line GrammarVAE/JT-VAE .smi, found "
                          f"{len(lines)} lines")
  extra = lines[ZINC250K_EXTRA_LINE - 1]
  if extra != registry.ZINC250K_EXTRA_SMILES:
    raise DataFormatError(f"{path}: line {ZINC250K_EXTRA_LINE} should be the extra molecule "
                          f"{registry.ZINC250K_EXTRA_SMILES[:30]}... (absent from the chemical_vae CSV), found "
                          f"{extra[:40]!r}; the row order would be wrong")
  smiles = lines[:ZINC250K_EXTRA_LINE - 1] + lines[ZINC250K_EXTRA_LINE:]
  test_path = _fetch(_ZINC_TEST, data_dir, download)
  values = _read_json(test_path, "a JSON list of ints")
  if not isinstance(values, list):
    raise DataFormatError(f"{test_path}: expected a JSON list of ints, got a {type(values).__name__}")
  test = _to_indices(values, test_path, "0-based ZINC250k test rows", ZINC250K_ROWS)
  return smiles, test


def _qm9_rows(data_dir, download) -> tuple[list[str], np.ndarray]:
  """The 133,885 gdb-ordered MoleculeNet SMILES and the 0-based test rows."""
  path = _fetch(_QM9_SMILES, data_dir, download)
  header, rows = _read_csv(path, "a CSV with a 'smiles' column", ["smiles"])
  col = header.index("smiles")
  smiles = [r[col].strip() for r in rows]
  if len(smiles) != QM9_ROWS:
    raise DataFormatError(f"{path}: expected {QM9_ROWS} QM9 SMILES rows, found {len(smiles)}")
  test_path = _fetch(_QM9_TEST, data_dir, download)
  data = _read_json(test_path, 'JSON {"valid_idxs": [...]}')
  if not isinstance(data, dict) or not isinstance(data.get("valid_idxs"), list):
    raise DataFormatError(f'{test_path}: expected a JSON object {{"valid_idxs": ["007278", ...]}}')
  test = _to_indices(data["valid_idxs"], test_path, "0-based QM9 test ids", QM9_ROWS)
  return smiles, test


def load_smiles(dataset: str, split: str, data_dir: Optional[PathLike] = None, num_train: Optional[int] = None,
                seed: int = 0, validate: bool = False, return_skipped: bool = False, download: bool = True):
  """SMILES of a molecule-generation split.

  Args:
    dataset: "zinc250k" (alias "zinc") or "qm9".
    split: "train", "test" or "all" (see the module docstring for the row orders and the 0-based test ids).
    data_dir: data root; default `registry.data_dir()`.
    num_train: with split="train", a subset of this many train molecules drawn without replacement with `seed`
      (the paper trains on 10,000), returned in row order.
    seed: seed of that draw.
    validate: also parse each returned SMILES with RDKit (about 10 s per 100k molecules).
    return_skipped: also return how many invalid rows were skipped.
    download: fetch missing files (otherwise raise FileNotFoundError).

  Returns:
    A list of SMILES strings, or `(smiles, num_skipped)` with `return_skipped`.
  """
  key = _DATASETS.get(str(dataset).lower())
  if key is None:
    raise ValueError(f"load_smiles: dataset must be one of {sorted(_DATASETS)}, got {dataset!r}")
  if split not in ("train", "test", "all"):
    raise ValueError(f"load_smiles: split must be 'train', 'test' or 'all', got {split!r}")
  if num_train is not None:
    if split != "train":
      raise ValueError(f"load_smiles: num_train only applies to split='train', got split={split!r}")
    if int(num_train) < 1:
      raise ValueError(f"load_smiles: num_train must be >= 1, got {num_train}")
  smiles, test = _zinc250k_rows(data_dir, download) if key == "zinc250k" else _qm9_rows(data_dir, download)
  what = f"{key} {split}"
  if split == "all":
    rows = np.arange(len(smiles))
  elif split == "test":
    rows = test
  else:
    rows = np.setdiff1d(np.arange(len(smiles)), test)  # sorted
  if num_train is None:
    kept, skipped = _keep_valid(smiles, rows, validate, what=what)
  else:
    # Walk a seeded permutation until num_train valid rows are found: exact size, and deterministic in (file, seed).
    order = np.random.default_rng(seed).permutation(rows)
    kept, skipped = _keep_valid(smiles, order, validate, limit=int(num_train), what=what)
    if kept.size < num_train:
      raise ValueError(f"load_smiles: num_train={num_train} but {key} has only {kept.size} valid train molecules")
    kept = np.sort(kept)
  out = [smiles[r] for r in kept]
  return (out, skipped) if return_skipped else out


def load_zinc12k(split: str, data_dir: Optional[PathLike] = None, target: str = "penalized_logP_normalized_est",
                 validate: bool = False, return_skipped: bool = False, download: bool = True):
  """The benchmarking-gnns / PyG `ZINC(subset=True)` 12k graph-regression set (PROVENANCE section 3(b)).

  Read from the derived benchmark CSV (rebuilt from the JT-VAE splits if missing). The default target is the
  estimated normalised penalized logP (`penalized_logP_normalized_est`); any other numeric column can be asked for.
  This is not the set MGVAE's own ZINC 12k experiments used (`zinc12k/mgvae_ZINC_12k/*`, see PROVENANCE 3(a)).

  Args:
    split: "train" (10,000), "val" (alias "valid", 1,000) or "test" (1,000), in benchmark order.
    target: CSV column to return as targets.

  Returns:
    `(smiles, targets [M] float64)`, plus the skip count with `return_skipped`.
  """
  split = {"valid": "val"}.get(split, split)
  if split not in ("train", "val", "test"):
    raise ValueError(f"load_zinc12k: split must be 'train', 'val' or 'test', got {split!r}")
  path = _fetch(_ZINC12K, data_dir, download)
  header, rows = _read_csv(path, registry.get(_ZINC12K).format, ["split", "pos_in_split", "smiles", target])
  col = {c: i for i, c in enumerate(header)}
  rows = [r for r in rows if r[col["split"]] == split]
  if not rows:
    raise DataFormatError(f"{path}: no rows with split == {split!r}")
  pos = _to_indices([r[col["pos_in_split"]] for r in rows], path, f"pos_in_split of {split}", len(rows))
  rows = [rows[i] for i in np.argsort(pos)]
  smiles = [r[col["smiles"]].strip() for r in rows]
  targets = _floats([r[col[target]] for r in rows], path, f"{target} values")
  kept, skipped = _keep_valid(smiles, np.arange(len(smiles)), validate, what=f"zinc12k {split}")
  out = ([smiles[i] for i in kept], targets[kept])
  return out + (skipped,) if return_skipped else out


def load_qm9_targets(split: str = "all", data_dir: Optional[PathLike] = None, raw: bool = False,
                     test_percent: int = 10, validate: bool = False, return_skipped: bool = False,
                     download: bool = True):
  """MGVAE's 130,462 QM9 molecules with their 13 targets (names and order: `QM9_TARGET_NAMES`).

  Args:
    split: "all", or "train" / "test" of MGVAE's split holding out `test_percent` % (10, 30, 50, 70 or 90).
    raw: False: the z-score standardised values of MGVAE's target files. True: MoleculeNet units from the derived
      CSV (`QM9_RAW_COLUMNS`, `QM9_RAW_UNITS`); the energies are atomization energies in kcal/mol, and omega1 stays
      standardised because no raw source has it.
    test_percent: which MGVAE split files to use.

  Returns:
    `(smiles, targets [M, 13] float64)` in MGVAE row order (split rows in the index file's order), plus the skip
    count with `return_skipped`.
  """
  if split not in ("all", "train", "test"):
    raise ValueError(f"load_qm9_targets: split must be 'all', 'train' or 'test', got {split!r}")
  if test_percent not in QM9_SPLIT_PERCENTS:
    raise ValueError(f"load_qm9_targets: test_percent must be one of {QM9_SPLIT_PERCENTS}, got {test_percent}")
  if raw:
    path = _fetch(_QM9_RAW, data_dir, download)
    header, rows = _read_csv(path, registry.get(_QM9_RAW).format, ["mgvae_row", "smiles", *QM9_RAW_COLUMNS])
    col = {c: i for i, c in enumerate(header)}
    order = [r[col["mgvae_row"]] for r in rows]
    if order != [str(i) for i in range(len(rows))]:
      raise DataFormatError(f"{path}: mgvae_row must run 0..{len(rows) - 1} in order")
    smiles = [r[col["smiles"]].strip() for r in rows]
    targets = np.stack([_floats([r[col[c]] for r in rows], path, c) for c in QM9_RAW_COLUMNS], axis=1)
  else:
    path = _fetch(f"{_QM9_MGVAE}/SMILES", data_dir, download)
    smiles = [s.strip() for s in _read_counted(path, "MGVAE QM9 SMILES")]
    columns = []
    for name in QM9_TARGET_NAMES:
      tpath = _fetch(f"{_QM9_MGVAE}/targets/{name}", data_dir, download)
      columns.append(_floats(_read_counted(tpath, f"standardised {name} floats", rows=len(smiles)), tpath, name))
    targets = np.stack(columns, axis=1)  # [M, 13]
  if len(smiles) != QM9_MGVAE_ROWS:
    raise DataFormatError(f"{path}: expected {QM9_MGVAE_ROWS} MGVAE QM9 rows, found {len(smiles)}")
  if split == "all":
    rows_sel = np.arange(len(smiles))
  else:
    ipath = _fetch(f"{_QM9_MGVAE}/splits/{test_percent}.{split}.index", data_dir, download)
    rows_sel = _to_indices(_read_counted(ipath, "0-based MGVAE row ids"), ipath, "MGVAE QM9 rows", len(smiles))
  kept, skipped = _keep_valid(smiles, rows_sel, validate, what=f"qm9 (MGVAE) {split}")
  out = ([smiles[i] for i in kept], targets[kept])
  return out + (skipped,) if return_skipped else out
