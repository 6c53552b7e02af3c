"""Pictures of molecules with RDKit: a grid of samples with QED under each, and an interpolation strip (figure 7)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from rdkit import Chem
from rdkit.Chem import Draw
from rdkit.Chem import QED


def qed(mol: Chem.Mol) -> Optional[float]:
  """RDKit's QED, or None where RDKit cannot score the molecule."""
  try:
    return float(QED.qed(mol))
  except Exception:  # pylint: disable=broad-except  (RDKit raises assorted errors on odd valences)
    return None


def _save(image, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  image.save(tmp)
  os.replace(tmp, path)  # a reader never sees a half-written picture
  return path


def molecule_grid(smiles: Sequence[str], path: str, max_molecules: int = 24, per_row: int = 6,
                  size: int = 250) -> list[str]:
  """Draw the first `max_molecules` distinct valid SMILES with "QED 0.xx" under each into a PNG at `path`.

  Returns the SMILES drawn (in order). Invalid or repeated entries are passed over; with none valid the picture says
  so rather than being skipped, so a run always leaves the file.
  """
  mols, legends, drawn, seen = [], [], [], set()
  for s in smiles:
    if len(mols) >= max_molecules:
      break
    mol = Chem.MolFromSmiles(s) if s else None
    if mol is None or s in seen:
      continue
    seen.add(s)
    score = qed(mol)
    mols.append(mol)
    legends.append("QED n/a" if score is None else f"QED {score:.2f}")
    drawn.append(s)
  if not mols:
    mols, legends = [Chem.Mol()], ["no valid molecule"]
  image = Draw.MolsToGridImage(mols, molsPerRow=min(per_row, len(mols)), subImgSize=(size, size), legends=legends)
  _save(image, path)
  return drawn


def interpolation_strip(smiles: Sequence[Optional[str]], path: str, size: int = 250) -> None:
  """One row: the molecule decoded at each interpolation step t = 0 ... 1 (None draws an empty "invalid" cell)."""
  n = len(smiles)
  if n < 2:
    raise ValueError(f"interpolation_strip needs at least 2 molecules, got {n}")
  mols, legends = [], []
  for i, s in enumerate(smiles):
    mol = Chem.MolFromSmiles(s) if s else None
    t = i / (n - 1)
    mols.append(mol if mol is not None else Chem.Mol())
    legends.append(f"t={t:.2f}" + ("" if mol is not None else " (invalid)"))
  image = Draw.MolsToGridImage(mols, molsPerRow=n, subImgSize=(size, size), legends=legends)
  _save(image, path)


def reconstruction_pairs(pairs: Sequence[tuple[str, Optional[str]]], path: str, per_row: int = 4,
                         size: int = 220) -> None:
  """Input beside its reconstruction, `per_row` pairs a row; each reconstruction is labelled exact or not."""
  if not pairs:
    raise ValueError("reconstruction_pairs needs at least one (input, reconstruction) pair")
  mols, legends = [], []
  for source, rebuilt in pairs:
    a = Chem.MolFromSmiles(source)
    b = Chem.MolFromSmiles(rebuilt) if rebuilt else None
    same = a is not None and b is not None and Chem.MolToSmiles(a, isomericSmiles=False) == Chem.MolToSmiles(
        b, isomericSmiles=False)
    mols += [a if a is not None else Chem.Mol(), b if b is not None else Chem.Mol()]
    legends += ["input", "reconstruction: " + ("exact" if same else ("different" if b is not None else "invalid"))]
  image = Draw.MolsToGridImage(mols, molsPerRow=2 * per_row, subImgSize=(size, size), legends=legends)
  _save(image, path)
