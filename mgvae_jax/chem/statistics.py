"""How a set of molecules looks: atom and bond types, rings, size, QED and SA score, and the gap to a reference set.

`molecule_statistics` summarises one set of SMILES (invalid entries are skipped and counted); `compare` puts the
statistics of generated molecules beside those of the test set, with the relative gap of each mean. Histograms are
fractions (atom types over all atoms, bond types over all bonds of the kekulised molecules, ring sizes over all
rings of RDKit's SSSR); means are per molecule.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from rdkit import Chem
from rdkit import RDConfig
from rdkit import rdBase
from rdkit.Chem import QED

from mgvae_jax.chem import metrics

_BOND_NAMES = {Chem.BondType.SINGLE: "single", Chem.BondType.DOUBLE: "double", Chem.BondType.TRIPLE: "triple"}
RING_SIZES = (3, 4, 5, 6, 7, 8)  # ring-size histogram bins; larger rings count as "9+"


def _sa_scorer():
  """RDKit Contrib's synthetic accessibility scorer (Ertl and Schuffenhauer 2009), shipped in RDKit's wheel."""
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  path = os.path.join(RDConfig.RDContribDir, "SA_Score")
  if path not in sys.path:
    sys.path.append(path)
  import sascorer  # pylint: disable=g-import-not-at-top

  return sascorer


def _fractions(counts: dict) -> dict:
  total = sum(counts.values())
  return {k: (v / total if total else 0.0) for k, v in sorted(counts.items())}


def molecule_statistics(smiles: Sequence[Optional[str]], *, sa_score: bool = True) -> dict:
  """Statistics of the valid molecules among `smiles` (None / invalid entries skipped and counted)."""
  mols = [metrics.parse_smiles(s) for s in smiles]
  valid = [m for m in mols if m is not None]
  atoms, bonds, ring_sizes = {}, {}, {}
  rings, sizes, qeds, sas = [], [], [], []
  scorer = _sa_scorer() if sa_score else None
  for mol in valid:
    for atom in mol.GetAtoms():
      name = atom.GetSymbol() + ("+" * atom.GetFormalCharge() if atom.GetFormalCharge() > 0
                                 else "-" * -atom.GetFormalCharge())
      atoms[name] = atoms.get(name, 0) + 1
    kekule = Chem.Mol(mol)
    with rdBase.BlockLogs():
      try:
        Chem.Kekulize(kekule, clearAromaticFlags=True)
      except Exception:  # pylint: disable=broad-except
        kekule = mol  # cannot kekulise (rare): aromatic bonds counted as such
    for bond in kekule.GetBonds():
      name = _BOND_NAMES.get(bond.GetBondType(), "aromatic")
      bonds[name] = bonds.get(name, 0) + 1
    info = mol.GetRingInfo()
    rings.append(info.NumRings())
    for ring in info.AtomRings():
      key = str(len(ring)) if len(ring) in RING_SIZES else ("9+" if len(ring) > 8 else str(len(ring)))
      ring_sizes[key] = ring_sizes.get(key, 0) + 1
    sizes.append(mol.GetNumAtoms())
    qeds.append(QED.qed(mol))
    if scorer is not None:
      sas.append(scorer.calculateScore(mol))
  mean = lambda v: float(np.mean(v)) if v else None
  std = lambda v: float(np.std(v)) if v else None
  return {
      "molecules": len(smiles), "valid": len(valid),
      "atoms_mean": mean(sizes), "atoms_std": std(sizes),
      "rings_mean": mean(rings), "rings_std": std(rings),
      "with_rings": float(np.mean(np.asarray(rings) > 0)) if rings else None,
      "qed_mean": mean(qeds), "qed_std": std(qeds),
      "sa_mean": mean(sas), "sa_std": std(sas),
      "atom_types": _fractions(atoms), "bond_types": _fractions(bonds), "ring_sizes": _fractions(ring_sizes),
  }


def compare(generated: dict, reference: dict) -> dict:
  """Relative gaps (generated / reference - 1) of the means, and total-variation distances of the histograms."""
  out = {}
  for key in ("atoms_mean", "rings_mean", "qed_mean", "sa_mean"):
    g, r = generated.get(key), reference.get(key)
    out[f"{key}_gap"] = (g / r - 1.0) if g is not None and r else None
  for key in ("atom_types", "bond_types", "ring_sizes"):
    g, r = generated.get(key, {}), reference.get(key, {})
    names = set(g) | set(r)
    out[f"{key}_tv"] = 0.5 * sum(abs(g.get(k, 0.0) - r.get(k, 0.0)) for k in names) if names else None
  return out
