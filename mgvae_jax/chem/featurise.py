"""Molecules <-> padded graphs in the layout MGVAE reads (paper section 5.1).

A molecule becomes its kekulised heavy-atom graph padded to N node slots:

  nodes [N, F]     the node-type one-hot [T] (last type = "no atom" on the unused slots), then optionally the 24
                   Table 2 RDKit features (zero on "no atom" slots): F = T or T + 24
  edges [N, N, E]  bond-type one-hot [single, double, triple] (E = 3); no bond = all zero; symmetric

All N slots are nodes of the model's graph ("no atom" is a node type), so a batch's mask is True on all N slots of
every molecule (vae.py). Hydrogens are implicit: rebuilding a molecule lets RDKit add them from each atom's type and
bonds, which is why the type must carry the formal charge.

Formal charges: charged species are node types of their own ("N+", "O-", ...), one per (element, charge) pair found
in the data set (every pair in all 133,885 QM9 and 249,456 ZINC250k SMILES, RDKit 2026.09), listed after the neutral
elements. Charge plus bonds fixes each atom's hydrogen count ([NH3+] is an N+ with one bond, [O-] an O- with one, [n-]
an N- with two), so the graph round trip reproduces the canonical SMILES, charges included. Effect on validity: the
decoders know each charged type's valence (N+ 4, O- 1, ...; decode.MAX_VALENCE), so corrected samples stay valid, but
a sample may carry a net charge (e.g. a lone N+), which RDKit accepts as valid. With `charged_types=False` the
vocabulary is the paper's plain element list and molecules with a charged atom are rejected ("unsupported_charge").

Stereo (chirality, E/Z) and isotopes are dropped: the round-trip target is `canonical_smiles`, i.e. RDKit's canonical
SMILES with isomericSmiles=False.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Iterable, Optional

import numpy as np
from rdkit import Chem
from rdkit import rdBase

from mgvae_jax import graphs

NO_ATOM = "no atom"
BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)  # edge channel k <-> bond order k + 1
NUM_BOND_TYPES = len(BOND_TYPES)

# Neutral elements, then the charged species that occur in the data set (most frequent first).
DATASET_ATOM_TYPES = {
    "qm9": (("C", "N", "O", "F"), ("N+", "O-", "N-", "C-")),
    "zinc": (("C", "N", "O", "F", "P", "S", "Cl", "Br", "I"), ("N+", "O-", "N-", "S-", "O+", "S+", "C-", "P+")),
}
RANK_ORDERS = ("canonical", "smiles")  # Featuriser.rank_order
RANK_BOND_OFFSET = 16  # Featuriser.rank_bond_features: offsets -16..16, the ends counting everything beyond
DATASET_MAX_NODES = {"qm9": 9, "zinc": 38}  # the largest molecules: 9 heavy atoms (QM9), 38 (ZINC250k)

# Why a SMILES is rejected (FeaturiseReport.rejected keys).
INVALID_SMILES = "invalid_smiles"
NO_ATOMS = "no_atoms"
UNSUPPORTED_ELEMENT = "unsupported_element"
UNSUPPORTED_CHARGE = "unsupported_charge"
RADICAL = "radical"
UNSUPPORTED_BOND = "unsupported_bond"
TOO_MANY_ATOMS = "too_many_atoms"

# The 24 Table 2 features, in this order. RDKit >= 2024.09 deprecates Atom.GetExplicitValence (it logs a deprecation
# warning); "GetExplicitValence" is computed as GetValence(Chem.ValenceType.EXPLICIT), the same number.
FEATURE_NAMES_24 = (
    ("GetAtomicNum", "IsInRing") + tuple(f"IsInRingSize({k})" for k in range(1, 10))
    + ("GetIsAromatic", "GetDegree", "GetExplicitValence", "GetFormalCharge", "GetIsotope", "GetMass", "GetNoImplicit",
       "GetNumExplicitHs", "GetNumImplicitHs", "GetNumRadicalElectrons", "GetTotalDegree", "GetTotalNumHs",
       "GetTotalValence"))
NUM_CHEMICAL_FEATURES = len(FEATURE_NAMES_24)  # 24

_TYPE_RE = re.compile(r"^([A-Z][a-z]?)(\d*)([+-]?)$")
# Looked up here because RDKit's GetAtomicNumber prints a C++ stack trace before raising on an unknown symbol.
_ELEMENTS = frozenset(Chem.GetPeriodicTable().GetElementSymbol(z) for z in range(1, 119))


def parse_atom_type(name: str) -> tuple[str, int]:
  """'C' -> ('C', 0), 'N+' -> ('N', 1), 'O-' -> ('O', -1), 'Fe2+' -> ('Fe', 2)."""
  match = _TYPE_RE.match(name)
  if match is None or (match.group(2) and not match.group(3)):
    raise ValueError(f"atom type {name!r} is not an element symbol optionally followed by a charge like '+', '2-'")
  symbol, count, sign = match.groups()
  if symbol not in _ELEMENTS:
    raise ValueError(f"atom type {name!r}: {symbol!r} is not an element symbol")
  charge = (int(count) if count else 1) * (1 if sign == "+" else -1) if sign else 0
  return symbol, charge


def atom_type_name(symbol: str, charge: int) -> str:
  """Inverse of parse_atom_type."""
  if charge == 0:
    return symbol
  return f"{symbol}{abs(charge) if abs(charge) > 1 else ''}{'+' if charge > 0 else '-'}"


def canonical_smiles(mol_or_smiles) -> Optional[str]:
  """RDKit canonical SMILES without stereo or isotopes (the round-trip target) of a Mol or a SMILES string; None for
  None or a SMILES that does not parse."""
  mol = mol_or_smiles
  if isinstance(mol_or_smiles, str):
    with rdBase.BlockLogs():
      mol = Chem.MolFromSmiles(mol_or_smiles)
  return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def smiles_positions(mol: Chem.Mol) -> list[int]:
  """Each atom's position in the molecule's canonical SMILES (RDKit's output order), by atom index."""
  Chem.MolToSmiles(mol)  # sets _smilesAtomOutputOrder
  text = mol.GetProp("_smilesAtomOutputOrder")  # order[position] = atom index: "[8,7,6]" (older RDKit: "[8,7,6,]")
  order = [int(t) for t in text.strip("[]").split(",") if t.strip()]
  positions = [0] * mol.GetNumAtoms()
  for position, atom in enumerate(order):
    positions[atom] = position
  return positions


def _explicit_valence(atom: Chem.Atom) -> int:
  if hasattr(Chem, "ValenceType"):  # RDKit >= 2024.09
    return atom.GetValence(Chem.ValenceType.EXPLICIT)
  return atom.GetExplicitValence()


def atom_features_24(atom: Chem.Atom) -> np.ndarray:
  """The 24 chemical features of Table 2 for one atom of a sanitised molecule, in FEATURE_NAMES_24 order.  # [24]

  Booleans are 0/1; GetMass is in daltons; nothing is normalised (the paper concatenates the raw values). The
  featuriser calls this on the molecule as parsed (aromatic, before kekulisation), so GetIsAromatic and the valences
  are RDKit's values for the input SMILES.
  """
  ring = [atom.IsInRingSize(k) for k in range(1, 10)]
  values = ([atom.GetAtomicNum(), atom.IsInRing()] + ring
            + [atom.GetIsAromatic(), atom.GetDegree(), _explicit_valence(atom), atom.GetFormalCharge(),
               atom.GetIsotope(), atom.GetMass(), atom.GetNoImplicit(), atom.GetNumExplicitHs(),
               atom.GetNumImplicitHs(), atom.GetNumRadicalElectrons(), atom.GetTotalDegree(), atom.GetTotalNumHs(),
               atom.GetTotalValence()])
  return np.asarray(values, np.float64)


@dataclasses.dataclass(frozen=True)
class FeaturiseReport:
  """What featurise_many kept and why it rejected the rest.

  kept_indices: positions in the input list of the molecules in the batch, in batch order.
  rejected: reason -> count (reasons are the module constants, e.g. "too_many_atoms"). A molecule counts once, under
    the first problem found: invalid_smiles, no_atoms, unsupported_element / unsupported_charge / radical (atom by
    atom), too_many_atoms, unsupported_bond.
  examples: reason -> up to 5 (input index, SMILES, detail) of the rejected.
  """
  total: int
  kept_indices: tuple[int, ...]
  rejected: dict
  examples: dict

  @property
  def kept(self) -> int:
    return len(self.kept_indices)

  def summary(self) -> str:
    parts = [f"kept {self.kept} of {self.total} molecules"]
    for reason, count in sorted(self.rejected.items()):
      shown = ", ".join(f"{s!r} ({d})" for _, s, d in self.examples[reason][:3])
      parts.append(f"{count} {reason} (e.g. {shown})")
    return "; ".join(parts)


class _Reject(Exception):
  """A molecule the vocabulary or pad size cannot represent: reason (a module constant) and a detail."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Featuriser:
  """Molecule <-> graph conversion for one data set.

  Attributes:
    dataset: "qm9" or "zinc"; picks the default vocabulary and max_nodes. Any other name needs both set.
    max_nodes: N, the node slots per molecule; default 9 (QM9) or 38 (ZINC).
    atom_types: the real node types, e.g. ("C", "N", "O", "F", "N+", "O-"); "no atom" is appended as the last type.
      Default: the data set's elements, then its charged species if `charged_types`.
    charged_types: with the default vocabulary, whether charged species are types of their own (else molecules with
      a charged atom are rejected).
    chemical_features: append the 24 Table 2 features after the type one-hot (the paper does this on ZINC).
    rank_features: append a one-hot [N] of each atom's canonical rank (RDKit's CanonicalRankAtoms with ties broken;
      zero on "no atom" slots). It tells apart atoms that message passing cannot (the six carbons of benzene), which
      an all-at-once decoder needs to close rings. The ranks are a function of the molecule, so the model stays
      permutation equivariant; ties are broken only among symmetry-equivalent atoms, where either choice gives the
      same graph and the same loss.
    rank_order: which canonical ranks `rank_features` encodes. "canonical": RDKit's canonical atom ranks.
      "smiles": each atom's position in the canonical SMILES (a depth-first walk of the molecule), so that most bonds
      join consecutive positions (73 % of ZINC's bonds, against 11 % under canonical ranks) and a decoder reads the
      chain from the positions, leaving only branches and ring closures to place. Canonical SMILES is a function of
      the molecule too, so the same equivariance argument holds.
    rank_bond_features: with rank_features, append before the ranks each atom's bonds as (bond type, rank offset):
      channel t (2 RANK_BOND_OFFSET + 1) + o + RANK_BOND_OFFSET counts its bonds of type t to atoms of rank r_i + o,
      offsets beyond +-RANK_BOND_OFFSET counted at the ends ([3 (2 RANK_BOND_OFFSET + 1)], zero on "no atom" slots).
      An encoder could compute them from the ranks and the bonds; given them, it only has to carry them into the
      latents, which a decoder that reads ranks turns back into bonds.
    canonical_order: put atoms in the order of the ranks `rank_order` names, so that slot k holds rank k (the same
      graph whatever SMILES spelling of the molecule); otherwise the input SMILES order. The model is permutation
      equivariant, so this matters only for non-equivariant decoders, for a prior fitted in slot order
      (aggregate_prior) and for reproducibility.
  """
  dataset: str = "qm9"
  max_nodes: Optional[int] = None
  atom_types: Optional[tuple[str, ...]] = None
  charged_types: bool = True
  chemical_features: bool = False
  rank_features: bool = False
  rank_order: str = "canonical"
  rank_bond_features: bool = False
  canonical_order: bool = True

  def __post_init__(self):
    name = self.dataset.lower()
    if name == "zinc250k":
      name = "zinc"
    object.__setattr__(self, "dataset", name)
    if self.atom_types is None:
      if name not in DATASET_ATOM_TYPES:
        raise ValueError(f"Featuriser: unknown dataset {self.dataset!r}; use one of {sorted(DATASET_ATOM_TYPES)} or "
                         "pass atom_types and max_nodes")
      neutral, charged = DATASET_ATOM_TYPES[name]
      object.__setattr__(self, "atom_types", neutral + (charged if self.charged_types else ()))
    else:
      object.__setattr__(self, "atom_types", tuple(self.atom_types))
    if self.max_nodes is None:
      if name not in DATASET_MAX_NODES:
        raise ValueError(f"Featuriser: dataset {self.dataset!r} has no default max_nodes; pass max_nodes")
      object.__setattr__(self, "max_nodes", DATASET_MAX_NODES[name])
    if int(self.max_nodes) < 1:
      raise ValueError(f"Featuriser.max_nodes must be >= 1, got {self.max_nodes}")
    if self.rank_order not in RANK_ORDERS:
      raise ValueError(f"Featuriser.rank_order must be one of {RANK_ORDERS}, got {self.rank_order!r}")
    if self.rank_bond_features and not self.rank_features:
      raise ValueError("Featuriser.rank_bond_features needs rank_features=True (offsets are between ranks)")
    if not self.atom_types:
      raise ValueError("Featuriser.atom_types must name at least one atom type")
    parsed = [parse_atom_type(t) for t in self.atom_types]
    if len(set(parsed)) != len(parsed):
      raise ValueError(f"Featuriser.atom_types has duplicate types: {self.atom_types}")

  # --- Vocabulary. ---------------------------------------------------------------------------------------------------

  @property
  def species(self) -> tuple[tuple[str, int], ...]:
    """(element symbol, formal charge) of each real type, in type order."""
    return tuple(parse_atom_type(t) for t in self.atom_types)

  @property
  def type_names(self) -> tuple[str, ...]:
    """All T node-type names, "no atom" last."""
    return tuple(self.atom_types) + (NO_ATOM,)

  @property
  def num_types(self) -> int:
    """T, the node classes (MGVAEConfig.node_classes)."""
    return len(self.atom_types) + 1

  @property
  def no_atom(self) -> int:
    """Index of the "no atom" type (T - 1)."""
    return len(self.atom_types)

  @property
  def num_node_features(self) -> int:
    """F: T, plus 24 with chemical_features, plus 3 (2 RANK_BOND_OFFSET + 1) with rank_bond_features, plus N with
    rank_features (always the last N channels)."""
    return (self.num_types + (NUM_CHEMICAL_FEATURES if self.chemical_features else 0)
            + (self.num_rank_bond_features if self.rank_bond_features else 0)
            + (self.max_nodes if self.rank_features else 0))

  @property
  def num_rank_bond_features(self) -> int:
    return NUM_BOND_TYPES * (2 * RANK_BOND_OFFSET + 1)

  @property
  def num_edge_types(self) -> int:
    """E = 3 (MGVAEConfig.edge_classes)."""
    return NUM_BOND_TYPES

  def _type_index(self) -> dict:
    return {s: i for i, s in enumerate(self.species)}

  # --- Molecule -> graph. --------------------------------------------------------------------------------------------

  def _parse(self, smiles: str) -> Chem.Mol:
    if not isinstance(smiles, str):
      raise _Reject(INVALID_SMILES, f"expected a SMILES string, got {type(smiles).__name__}")
    with rdBase.BlockLogs():  # RDKit prints its own parse errors; ours are counted and reported instead
      mol = Chem.MolFromSmiles(smiles)
    if mol is None:
      raise _Reject(INVALID_SMILES, "RDKit cannot parse it")
    return mol

  def _encode(self, mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    n = mol.GetNumAtoms()
    if n == 0:
      raise _Reject(NO_ATOMS, "the molecule has no heavy atoms")
    index = self._type_index()
    types = []
    for atom in mol.GetAtoms():
      key = (atom.GetSymbol(), atom.GetFormalCharge())
      if key not in index:
        if all(atom.GetSymbol() != s for s, _ in index):
          raise _Reject(UNSUPPORTED_ELEMENT, f"element {atom.GetSymbol()} is not in the vocabulary {self.atom_types}")
        raise _Reject(UNSUPPORTED_CHARGE, f"charged atom {atom_type_name(*key)} is not in the vocabulary "
                      f"{self.atom_types}")
      if atom.GetNumRadicalElectrons():
        raise _Reject(RADICAL, f"atom {atom.GetIdx()} ({atom.GetSymbol()}) has radical electrons, which the graph "
                      "cannot encode")
      types.append(index[key])
    if n > self.max_nodes:
      raise _Reject(TOO_MANY_ATOMS, f"{n} heavy atoms, more than max_nodes={self.max_nodes}")
    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=True))
    features = ranks if self.rank_order == "canonical" else smiles_positions(mol)
    if self.canonical_order:
      order = sorted(range(n), key=features.__getitem__)  # order[new] = old: slot k holds rank k
      mol = Chem.RenumberAtoms(mol, order)
      types = [types[i] for i in order]
      features = [features[i] for i in order]
    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    nodes = np.zeros((self.max_nodes, self.num_node_features), np.float32)  # [N, F]
    nodes[np.arange(n), types] = 1.0
    nodes[n:, self.no_atom] = 1.0
    if self.chemical_features:
      t = self.num_types
      for atom in mol.GetAtoms():  # the aromatic molecule, same atom indices as `kekule`
        nodes[atom.GetIdx(), t:t + NUM_CHEMICAL_FEATURES] = atom_features_24(atom)
    if self.rank_features:
      nodes[np.arange(n), self.num_node_features - self.max_nodes + np.asarray(features)] = 1.0
    edges = np.zeros((self.max_nodes, self.max_nodes, NUM_BOND_TYPES), np.float32)  # [N, N, E]
    for bond in kekule.GetBonds():
      bond_type = bond.GetBondType()
      if bond_type not in BOND_TYPES:
        raise _Reject(UNSUPPORTED_BOND, f"bond {bond.GetIdx()} is {bond_type}; only single/double/triple are encoded")
      i, j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), BOND_TYPES.index(bond_type)
      edges[i, j, k] = edges[j, i, k] = 1.0
    if self.rank_bond_features:
      base = self.num_node_features - self.max_nodes - self.num_rank_bond_features
      r = np.asarray(features)
      ii, jj, tt = np.nonzero(edges[:n, :n])
      offset = np.clip(r[jj] - r[ii], -RANK_BOND_OFFSET, RANK_BOND_OFFSET) + RANK_BOND_OFFSET
      np.add.at(nodes, (ii, base + tt * (2 * RANK_BOND_OFFSET + 1) + offset), 1.0)
    return nodes, edges

  def featurise_molecule(self, mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """A sanitised RDKit molecule -> (nodes [N, F], edges [N, N, 3]) float32. ValueError if it cannot be encoded."""
    try:
      return self._encode(mol)
    except _Reject as e:
      raise ValueError(f"cannot featurise molecule {canonical_smiles(mol)!r}: {e.reason}: {e.detail}") from None

  def featurise(self, smiles: str) -> tuple[np.ndarray, np.ndarray]:
    """One SMILES -> (nodes [N, F], edges [N, N, 3]) float32.

    Raises:
      ValueError naming the SMILES and the problem: unparsable, no atoms, an element or charged species not in the
      vocabulary, a radical, a non-single/double/triple bond, or more heavy atoms than max_nodes.
    """
    try:
      return self._encode(self._parse(smiles))
    except _Reject as e:
      raise ValueError(f"cannot featurise SMILES {smiles!r}: {e.reason}: {e.detail}") from None

  def featurise_many(self, smiles: Iterable[str]) -> tuple[graphs.GraphBatch, FeaturiseReport]:
    """Featurise a list of SMILES, skipping what cannot be encoded.

    Returns:
      A GraphBatch of numpy arrays (nodes [B, N, F] float32, edges [B, N, N, 3] float32, mask [B, N] True on all N
      slots) of the B kept molecules in input order, and a FeaturiseReport with the kept input indices and the
      rejections per reason. Unparsable SMILES trigger one warning (count and first examples); the other rejections
      are expected filtering (e.g. molecules larger than N) and are only reported. `jax.tree.map(jnp.asarray, batch)`
      moves the batch to the device.
    """
    smiles = list(smiles)
    nodes, edges, kept = [], [], []
    rejected, examples = {}, {}
    for i, s in enumerate(smiles):
      try:
        v, e = self._encode(self._parse(s))
      except _Reject as r:
        rejected[r.reason] = rejected.get(r.reason, 0) + 1
        if len(examples.setdefault(r.reason, [])) < 5:
          examples[r.reason].append((i, s, r.detail))
        continue
      nodes.append(v)
      edges.append(e)
      kept.append(i)
    report = FeaturiseReport(total=len(smiles), kept_indices=tuple(kept), rejected=rejected, examples=examples)
    if INVALID_SMILES in rejected:
      shown = ", ".join(repr(s) for _, s, _ in examples[INVALID_SMILES][:3])
      warnings.warn(f"featurise_many: skipped {rejected[INVALID_SMILES]} invalid SMILES of {len(smiles)} "
                    f"(e.g. {shown})", stacklevel=2)
    n, f = self.max_nodes, self.num_node_features
    batch = graphs.GraphBatch(
        nodes=np.stack(nodes) if nodes else np.zeros((0, n, f), np.float32),
        edges=np.stack(edges) if edges else np.zeros((0, n, n, NUM_BOND_TYPES), np.float32),
        mask=np.ones((len(kept), n), bool))
    return batch, report

  # --- Graph -> molecule. --------------------------------------------------------------------------------------------

  def split_features(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nodes [..., N, F] -> (node types [..., N] int, by argmax of the one-hot; chemical features [..., N, F - T])."""
    nodes = np.asarray(nodes)
    if nodes.shape[-1] != self.num_node_features:
      raise ValueError(f"node features have {nodes.shape[-1]} channels, expected {self.num_node_features} "
                       f"({self.num_types} types{' + 24 chemical features' if self.chemical_features else ''})")
    return nodes[..., :self.num_types].argmax(-1), nodes[..., self.num_types:]

  @staticmethod
  def bond_orders(edges: np.ndarray) -> np.ndarray:
    """edges [..., N, N, 3] one-hot -> bond orders [..., N, N] int (0 = none, 1..3)."""
    edges = np.asarray(edges)
    if edges.shape[-1] != NUM_BOND_TYPES:
      raise ValueError(f"edges must have {NUM_BOND_TYPES} bond-type channels [single, double, triple], got "
                       f"shape {edges.shape}")
    return np.where(edges.sum(-1) > 0, edges.argmax(-1) + 1, 0)

  def build_molecule(self, node_types: np.ndarray, bond_types: np.ndarray,
                     mask: Optional[np.ndarray] = None) -> tuple[Chem.RWMol, np.ndarray]:
    """The unsanitised molecule of a discrete graph, and the slot of each of its atoms.

    Atoms for the slots whose type is not "no atom" (and, if given, whose mask is True); a bond of order
    bond_types[i, j] for i < j (the upper triangle; bonds touching "no atom" slots are ignored).
    """
    node_types = np.asarray(node_types)
    bond_types = np.asarray(bond_types)
    n = node_types.shape[0] if node_types.ndim == 1 else -1
    if node_types.ndim != 1 or bond_types.shape != (n, n):
      raise ValueError(f"need node_types [N] and bond_types [N, N], got {node_types.shape} and {bond_types.shape}")
    if node_types.size and (node_types.min() < 0 or node_types.max() >= self.num_types):
      raise ValueError(f"node_types must lie in [0, {self.num_types}) ({self.type_names}), got values in "
                       f"[{node_types.min()}, {node_types.max()}]")
    if bond_types.size and (bond_types.min() < 0 or bond_types.max() > NUM_BOND_TYPES):
      raise ValueError(f"bond_types must lie in [0, {NUM_BOND_TYPES}] (0 = none, 1..3 = single..triple), got values "
                       f"in [{bond_types.min()}, {bond_types.max()}]")
    real = node_types != self.no_atom
    if mask is not None:
      real &= np.asarray(mask, bool)
    slots = np.flatnonzero(real)
    species = self.species
    mol = Chem.RWMol()
    for s in slots:
      symbol, charge = species[node_types[s]]
      atom = Chem.Atom(symbol)
      atom.SetFormalCharge(charge)
      mol.AddAtom(atom)
    position = {int(s): k for k, s in enumerate(slots)}
    for a, i in enumerate(slots):
      for j in slots[a + 1:]:
        order = int(bond_types[i, j])
        if order:
          mol.AddBond(position[int(i)], position[int(j)], BOND_TYPES[order - 1])
    return mol, slots

  def to_molecule(self, node_types: np.ndarray, bond_types: np.ndarray,
                  mask: Optional[np.ndarray] = None) -> Optional[Chem.Mol]:
    """A discrete graph -> sanitised RDKit molecule, or None if RDKit rejects it (e.g. a valence violation).

    Args:
      node_types: [N] int type indices ("no atom" slots are skipped).
      bond_types: [N, N] int, 0 = no bond, 1..3 = single, double, triple (upper triangle read).
      mask: optional [N] bool; slots where it is False are skipped.
    """
    mol, _ = self.build_molecule(node_types, bond_types, mask)
    if mol.GetNumAtoms() == 0:
      return None
    with rdBase.BlockLogs():
      try:
        Chem.SanitizeMol(mol)
      except Exception:  # pylint: disable=broad-except  (RDKit raises several exception types)
        return None
    return mol.GetMol()

  def to_smiles(self, nodes: np.ndarray, edges: np.ndarray) -> Optional[str]:
    """Featurised arrays (nodes [N, F], edges [N, N, 3]) -> canonical SMILES without stereo, or None."""
    types, _ = self.split_features(nodes)
    mol = self.to_molecule(types, self.bond_orders(edges))
    return None if mol is None else canonical_smiles(mol)

