"""From MGVAE's decoded probabilities to molecules, without ever raising on a bad sample.

The finest-level decoder gives, per molecule (MGVAE.decode):

  node_probs      [N, T]     node-type probabilities ("no atom" last; Featuriser.type_names)
  edge_probs      [N, N]     bond existence probabilities
  edge_type_probs [N, N, E]  bond-type probabilities [single, double, triple]

Two decoders turn them into a DecodeResult (canonical SMILES without stereo, or the reason it failed):

  decode_argmax     argmax types, bonds where edge_probs > 0.5 with their argmax type, sanitised as is. The share of
                    valid results is "validity without correction"; a disconnected graph counts as invalid.
  decode_corrected  the paper's correcting process (section 5.1): candidate bonds in descending probability, each
                    added only while both atoms' valences allow it (lowering the bond order if needed), then the
                    largest connected fragment. Valid whenever at least one slot's argmax is a real atom.

Both read the pair tensors symmetrised, (p_ij + p_ji) / 2, so an asymmetric decoder output is not read one-sidedly.
Batched versions take [S, ...] arrays and return a list of S results.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Optional

import numpy as np
from rdkit import Chem
from rdkit import rdBase

from mgvae_jax import parallel
from mgvae_jax.chem import featurise as featurise_lib

# Largest total bond order the correcting process gives each type: the conventional valences (hypervalent S and P as
# in sulfones and phosphates; halogens monovalent). Every value is one RDKit accepts, so respecting it keeps the
# molecule sanitisable; lower ones are filled up with implicit hydrogens.
MAX_VALENCE = {
    "C": 4, "N": 3, "O": 2, "F": 1, "P": 5, "S": 6, "Cl": 1, "Br": 1, "I": 1,
    "N+": 4, "O-": 1, "N-": 2, "S-": 1, "O+": 3, "S+": 3, "C-": 3, "P+": 4, "C+": 3,
}

# Failure reasons (DecodeResult.reason starts with one of these).
NON_FINITE = "non-finite probabilities"
NO_ATOMS = "no atoms"
DISCONNECTED = "disconnected"
SANITIZE_FAILED = "sanitization failed"


@dataclasses.dataclass(frozen=True)
class DecodeResult:
  """One decoded sample.

  smiles: canonical SMILES without stereo when valid, else None.
  valid: whether RDKit sanitised the molecule (and, for decode_argmax, it is one connected fragment).
  reason: "" when valid, else why not (starts with one of the module's failure constants).
  num_atoms: heavy atoms of the returned molecule (0 when invalid).
  num_fragments: connected fragments before decode_corrected kept the largest (1 for a connected graph).
  """
  smiles: Optional[str]
  valid: bool
  reason: str = ""
  num_atoms: int = 0
  num_fragments: int = 0


def max_valence(type_name: str) -> int:
  """The correcting process's valence cap for a node type: MAX_VALENCE, else the largest RDKit valence of the
  isoelectronic element (atomic number minus charge)."""
  if type_name in MAX_VALENCE:
    return MAX_VALENCE[type_name]
  symbol, charge = featurise_lib.parse_atom_type(type_name)
  table = Chem.GetPeriodicTable()
  z = table.GetAtomicNumber(symbol) - charge
  valences = [v for v in table.GetValenceList(z) if v >= 0] if z > 0 else []
  if not valences:
    raise ValueError(f"no valence cap known for atom type {type_name!r}; add it to decode.MAX_VALENCE")
  return max(valences)


def _failure(reason: str, fragments: int = 0) -> DecodeResult:
  return DecodeResult(smiles=None, valid=False, reason=reason, num_fragments=fragments)


def _check_shapes(node_probs, edge_probs, edge_type_probs, mask, featuriser) -> tuple[np.ndarray, ...]:
  """Shape errors are caller bugs (ValueError); bad values are a sample's problem (recorded, not raised)."""
  node_probs = np.asarray(node_probs, np.float64)
  edge_probs = np.asarray(edge_probs, np.float64)
  edge_type_probs = np.asarray(edge_type_probs, np.float64)
  n, t, e = node_probs.shape[0] if node_probs.ndim else -1, featuriser.num_types, featuriser.num_edge_types
  if node_probs.shape != (n, t):
    raise ValueError(f"node_probs must be [N, T={t}] ({featuriser.type_names}), got shape {node_probs.shape}")
  if edge_probs.shape != (n, n):
    raise ValueError(f"edge_probs must be [N, N] = [{n}, {n}], got shape {edge_probs.shape}")
  if edge_type_probs.shape != (n, n, e):
    raise ValueError(f"edge_type_probs must be [N, N, E] = [{n}, {n}, {e}], got shape {edge_type_probs.shape}")
  mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  if mask.shape != (n,):
    raise ValueError(f"mask must be [N] = [{n}], got shape {mask.shape}")
  return node_probs, edge_probs, edge_type_probs, mask


def _symmetrise(edge_probs: np.ndarray, edge_type_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return 0.5 * (edge_probs + edge_probs.T), 0.5 * (edge_type_probs + edge_type_probs.transpose(1, 0, 2))


def _finish(mol: Chem.RWMol, fragments: int) -> DecodeResult:
  with rdBase.BlockLogs():  # RDKit logs every valence error; the reason is recorded instead
    try:
      Chem.SanitizeMol(mol)
    except Exception as e:  # pylint: disable=broad-except  (RDKit raises several exception types)
      message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      return _failure(f"{SANITIZE_FAILED}: {message}", fragments)
  smiles = featurise_lib.canonical_smiles(mol)
  return DecodeResult(smiles=smiles, valid=True, reason="", num_atoms=mol.GetNumAtoms(), num_fragments=fragments)


class _UnionFind:
  """Disjoint sets of atoms 0..n-1 joined by bonds (path halving)."""

  def __init__(self, n: int, bonds: list[tuple[int, int, int]] = ()):
    self.parent = list(range(n))
    for a, b, _ in bonds:
      self.join(a, b)

  def root(self, a: int) -> int:
    parent = self.parent
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  def join(self, a: int, b: int) -> None:
    self.parent[self.root(a)] = self.root(b)


def _components(num_atoms: int, bonds: list[tuple[int, int, int]]) -> list[list[int]]:
  """Connected components of atoms 0..num_atoms-1, each sorted, in order of their smallest atom."""
  sets = _UnionFind(num_atoms, bonds)
  groups = {}
  for a in range(num_atoms):
    groups.setdefault(sets.root(a), []).append(a)
  return sorted(groups.values(), key=lambda g: g[0])


def decode_argmax(node_probs, edge_probs, edge_type_probs, featuriser: featurise_lib.Featuriser, *,
                  mask=None, edge_threshold: float = 0.5) -> DecodeResult:
  """Validity without correction: argmax everything and sanitise as is.

  Args:
    node_probs: [N, T] node-type probabilities (or logits: only the argmax is read).
    edge_probs: [N, N] bond probabilities; a bond where the symmetrised probability exceeds `edge_threshold`.
    edge_type_probs: [N, N, 3] bond-type probabilities; the bond gets the argmax type.
    featuriser: the vocabulary the model was trained with.
    mask: optional [N] bool; False slots (padding) are ignored.
    edge_threshold: bond existence threshold.

  Returns:
    A DecodeResult. Invalid (recorded, never raised): non-finite input, no real atom, a sanitization error (e.g.
    a pentavalent carbon), or more than one fragment. Bonds touching "no atom" slots are ignored.
  """
  node_probs, edge_probs, edge_type_probs, mask = _check_shapes(node_probs, edge_probs, edge_type_probs, mask,
                                                                featuriser)
  if not (np.isfinite(node_probs).all() and np.isfinite(edge_probs).all() and np.isfinite(edge_type_probs).all()):
    return _failure(NON_FINITE)
  p, q = _symmetrise(edge_probs, edge_type_probs)
  bond_types = np.where(p > edge_threshold, q.argmax(-1) + 1, 0)
  mol, slots = featuriser.build_molecule(node_probs.argmax(-1), bond_types, mask)
  if not slots.size:
    return _failure(NO_ATOMS)
  bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), 0) for b in mol.GetBonds()]
  fragments = len(_components(mol.GetNumAtoms(), bonds))
  result = _finish(mol, fragments)
  if result.valid and fragments > 1:
    return _failure(f"{DISCONNECTED}: {fragments} fragments", fragments)
  return result


def decode_corrected(node_probs, edge_probs, edge_type_probs, featuriser: featurise_lib.Featuriser, *,
                     mask=None, edge_threshold: float = 0.5,
                     max_valences: Optional[Mapping[str, int]] = None, connect: bool = False) -> DecodeResult:
  """The correcting process: a valid molecule from any probabilities with at least one real atom.

  Atoms are the argmax types, "no atom" slots skipped. Candidate bonds are the pairs of atoms whose symmetrised
  probability exceeds `edge_threshold`, taken in descending probability (ties in slot order). Each is added with its
  most likely order if both atoms have that much valence left, else with the highest lower order that fits, else
  dropped. With `connect`, the fragments are then joined Kruskal-style: the remaining atom pairs in descending
  probability, whatever their probability, each bonded (with the order fitting as above) when it joins two fragments
  and both atoms have valence left, so all atoms end in one molecule where valences allow (the paper's "gradually add
  the edges in that order" with connectivity as one of the constraints). The largest connected fragment (most atoms;
  ties: the one with the lowest slot) is kept, sanitised and written as canonical SMILES without stereo.

  Args:
    node_probs, edge_probs, edge_type_probs, featuriser, mask, edge_threshold: as in decode_argmax.
    max_valences: per type-name overrides of MAX_VALENCE.
    connect: join the fragments through the most probable remaining pairs.

  Returns:
    A DecodeResult; num_fragments is the fragment count before the largest was kept. Invalid only for non-finite
    input or no real atom.
  """
  node_probs, edge_probs, edge_type_probs, mask = _check_shapes(node_probs, edge_probs, edge_type_probs, mask,
                                                                featuriser)
  if not (np.isfinite(node_probs).all() and np.isfinite(edge_probs).all() and np.isfinite(edge_type_probs).all()):
    return _failure(NON_FINITE)
  types = node_probs.argmax(-1)
  slots = np.flatnonzero((types != featuriser.no_atom) & mask)
  if not slots.size:
    return _failure(NO_ATOMS)
  caps = {**MAX_VALENCE, **(max_valences or {})}
  names = featuriser.type_names
  free = [caps[names[t]] if names[t] in caps else max_valence(names[t]) for t in types[slots]]  # valence left
  p, q = _symmetrise(edge_probs, edge_type_probs)
  sub_p = p[np.ix_(slots, slots)]  # [n, n] over real atoms
  rows, cols = np.triu_indices(slots.size, k=1)
  keep = sub_p[rows, cols] > edge_threshold
  rows, cols = rows[keep], cols[keep]
  order = np.argsort(-sub_p[rows, cols], kind="stable")
  bonds = []
  for a, b in zip(rows[order], cols[order]):
    preferred = int(q[slots[a], slots[b]].argmax()) + 1
    fit = min(preferred, free[a], free[b])  # the most likely order, lowered until both atoms can take it
    if fit >= 1:
      bonds.append((int(a), int(b), fit))
      free[a] -= fit
      free[b] -= fit
  if connect:
    _connect(slots, sub_p, q, free, bonds)
  groups = _components(slots.size, bonds)
  largest = max(groups, key=len)  # max keeps the first of equals: the lowest slot
  position = {a: k for k, a in enumerate(largest)}
  species = featuriser.species
  mol = Chem.RWMol()
  for a in largest:
    symbol, charge = species[types[slots[a]]]
    atom = Chem.Atom(symbol)
    atom.SetFormalCharge(charge)
    mol.AddAtom(atom)
  for a, b, bond_order in bonds:
    if a in position and b in position:
      mol.AddBond(position[a], position[b], featurise_lib.BOND_TYPES[bond_order - 1])
  return _finish(mol, len(groups))


def _connect(slots: np.ndarray, sub_p: np.ndarray, q: np.ndarray, free: list, bonds: list) -> None:
  """Join fragments through the most probable pairs across them (in place on `free` and `bonds`)."""
  n = slots.size
  sets = _UnionFind(n, bonds)
  rows, cols = np.triu_indices(n, k=1)
  order = np.argsort(-sub_p[rows, cols], kind="stable")
  joins = len({sets.root(a) for a in range(n)}) - 1
  for a, b in zip(rows[order], cols[order]):
    if joins == 0:
      break
    a, b = int(a), int(b)
    if sets.root(a) == sets.root(b) or free[a] < 1 or free[b] < 1:
      continue
    fit = min(int(q[slots[a], slots[b]].argmax()) + 1, free[a], free[b])
    bonds.append((a, b, fit))
    free[a] -= fit
    free[b] -= fit
    sets.join(a, b)
    joins -= 1


def _decode_each(chunk, fn, featuriser, **kwargs) -> list[DecodeResult]:
  """fn on each (node, edge, edge_type, mask) sample of a chunk; module-level so worker processes can run it."""
  return [fn(n, e, t, featuriser, mask=m, **kwargs) for n, e, t, m in chunk]


def _batched(fn, node_probs, edge_probs, edge_type_probs, featuriser, mask, workers: Optional[int] = 1,
             **kwargs) -> list[DecodeResult]:
  """fn over the samples, in `workers` processes (parallel.map_chunks; None = every core, 1 = this process)."""
  node_probs, edge_probs, edge_type_probs = (np.asarray(x) for x in (node_probs, edge_probs, edge_type_probs))
  if node_probs.ndim != 3:
    raise ValueError(f"batched decoding needs node_probs [S, N, T], got shape {node_probs.shape}")
  s = node_probs.shape[0]
  if edge_probs.shape[:1] != (s,) or edge_type_probs.shape[:1] != (s,):
    raise ValueError(f"node_probs, edge_probs, edge_type_probs must share the sample axis S={s}, got shapes "
                     f"{node_probs.shape}, {edge_probs.shape}, {edge_type_probs.shape}")
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.shape[:1] != (s,):
      raise ValueError(f"mask must be [S, N] with S={s}, got shape {mask.shape}")
  items = list(zip(node_probs, edge_probs, edge_type_probs, [None] * s if mask is None else mask))
  return parallel.map_chunks(functools.partial(_decode_each, fn=fn, featuriser=featuriser, **kwargs), items, workers)


def decode_argmax_batch(node_probs, edge_probs, edge_type_probs, featuriser: featurise_lib.Featuriser, *,
                        mask=None, edge_threshold: float = 0.5, workers: Optional[int] = 1) -> list[DecodeResult]:
  """decode_argmax over samples: node_probs [S, N, T], edge_probs [S, N, N], edge_type_probs [S, N, N, 3],
  mask [S, N] or None; in `workers` processes (None = every core)."""
  return _batched(decode_argmax, node_probs, edge_probs, edge_type_probs, featuriser, mask, workers,
                  edge_threshold=edge_threshold)


def decode_corrected_batch(node_probs, edge_probs, edge_type_probs, featuriser: featurise_lib.Featuriser, *,
                           mask=None, edge_threshold: float = 0.5,
                           max_valences: Optional[Mapping[str, int]] = None,
                           connect: bool = False, workers: Optional[int] = 1) -> list[DecodeResult]:
  """decode_corrected over samples (shapes and workers as in decode_argmax_batch)."""
  return _batched(decode_corrected, node_probs, edge_probs, edge_type_probs, featuriser, mask, workers,
                  edge_threshold=edge_threshold, max_valences=max_valences, connect=connect)


def decode_samples(probs: Mapping[str, np.ndarray], featuriser: featurise_lib.Featuriser, *, corrected: bool = True,
                   mask=None, edge_threshold: float = 0.5, connect: bool = False,
                   workers: Optional[int] = 1) -> list[DecodeResult]:
  """Decode MGVAE.decode's finest-level output {"node" [S,N,T], "edge" [S,N,N], "edge_type" [S,N,N,3]}.

  `connect` (corrected decoding only) joins fragments through the most probable remaining pairs (decode_corrected).
  `workers`: processes to decode in (parallel.map_chunks; None = every core, 1 = this process). Results do not
  depend on it.
  """
  missing = {"node", "edge", "edge_type"} - set(probs)
  if missing:
    raise ValueError(f"decode_samples needs the keys node, edge, edge_type (MGVAE.decode at level 0); missing "
                     f"{sorted(missing)}")
  if corrected:
    return decode_corrected_batch(probs["node"], probs["edge"], probs["edge_type"], featuriser, mask=mask,
                                  edge_threshold=edge_threshold, connect=connect, workers=workers)
  return decode_argmax_batch(probs["node"], probs["edge"], probs["edge_type"], featuriser, mask=mask,
                             edge_threshold=edge_threshold, workers=workers)
