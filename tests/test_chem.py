"""Chemistry: SMILES <-> graph round trips, the 24 Table 2 features, bad input, and decoding probabilities."""

import csv
import gzip
import os
import warnings

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
from rdkit import Chem

from mgvae_jax import chem
from mgvae_jax.chem import decode as decode_lib
from mgvae_jax.chem import featurise as featurise_lib

DATA_DIR = os.environ.get("MGVAE_DATA_DIR")
needs_data = pytest.mark.skipif(
    not DATA_DIR, reason="MGVAE_DATA_DIR is unset; the round-trip tests read zinc250k/ and qm9/ SMILES from it")

QM9 = chem.Featuriser("qm9")
ZINC = chem.Featuriser("zinc", chemical_features=True)

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PYRIDINIUM = "c1cc[nH+]cc1"
CHARGED_ZINC = "CC(C)[NH2+]C[C@@H](O)COc1ccc([N+](=O)[O-])cc1"  # [NH2+], nitro [N+](=O)[O-], a stereocentre


def _zinc_smiles(count):
  with gzip.open(os.path.join(DATA_DIR, "zinc250k", "250k_rndm_zinc_drugs_clean.smi.gz"), "rt") as f:
    return [next(f).strip() for _ in range(count)]


def _qm9_sample(count, seed=0):
  with open(os.path.join(DATA_DIR, "qm9", "qm9_moleculenet_smiles.csv"), newline="") as f:
    rows = [row["smiles"] for row in csv.DictReader(f)]
  pick = np.random.default_rng(seed).choice(len(rows), count, replace=False)
  return [rows[i] for i in sorted(pick)]


def _round_trip_rate(smiles, feat):
  batch, report = feat.featurise_many(smiles)
  # Layout: all N slots are real nodes, one type per slot, symmetric edges, "no atom" slots bond-free.
  assert batch.mask.all() and batch.mask.shape == (report.kept, feat.max_nodes)
  np.testing.assert_array_equal(batch.nodes[..., :feat.num_types].sum(-1), 1.0)
  np.testing.assert_array_equal(batch.edges, batch.edges.transpose(0, 2, 1, 3))
  assert batch.edges.sum(-1).max() <= 1.0
  empty = batch.nodes[..., feat.no_atom] == 1  # [B, N]
  assert not batch.edges.sum(-1)[empty].any()
  failures = []
  for b, i in enumerate(report.kept_indices):
    back = feat.to_smiles(batch.nodes[b], batch.edges[b])
    if back != chem.canonical_smiles(smiles[i]):
      failures.append((smiles[i], back))
  return (report.kept - len(failures)) / len(smiles), failures, batch, report


# ---------------------------------------------------------------------------------------------------------------------
# Round trips on the data sets.


@needs_data
def test_zinc_round_trip(record_property):
  smiles = _zinc_smiles(2000)
  rate, failures, batch, report = _round_trip_rate(smiles, ZINC)
  print(f"\nZINC250k round trip (first 2000 SMILES, N=38, T={ZINC.num_types}): {rate:.2%}; failures: {failures[:5]}")
  record_property("zinc_round_trip_rate", rate)
  assert batch.nodes.shape == (2000, 38, ZINC.num_types + 24) and batch.edges.shape == (2000, 38, 38, 3)
  assert rate >= 0.995, f"ZINC round trip {rate:.2%} < 99.5%; e.g. {failures[:5]}"
  # The correcting process leaves a valid molecule's exact one-hot tensors alone.
  t = ZINC.num_types
  results = chem.decode_corrected_batch(batch.nodes[:500, :, :t], batch.edges[:500].sum(-1), batch.edges[:500], ZINC)
  same = np.mean([r.smiles == chem.canonical_smiles(smiles[i]) for r, i in zip(results, report.kept_indices)])
  print(f"ZINC corrected decoding of exact tensors (500): {same:.2%}")
  assert same >= 0.995


@needs_data
def test_qm9_round_trip(record_property):
  smiles = _qm9_sample(1000)
  rate, failures, batch, _ = _round_trip_rate(smiles, QM9)
  print(f"\nQM9 round trip (1000 sampled with seed 0, N=9, T={QM9.num_types}): {rate:.2%}")
  record_property("qm9_round_trip_rate", rate)
  assert batch.nodes.shape == (1000, 9, 9)
  assert rate == 1.0, f"QM9 round trip {rate:.2%}; failures {failures[:5]}"


def test_round_trip_without_data():
  smiles = [ASPIRIN, PYRIDINIUM, CHARGED_ZINC, "Cc1nn[n-]n1", "O=S(=O)([O-])c1ccccc1", "C[S-]", "[C-]#[N+]C",
            "CC(=O)[O-].C[NH3+]", "C1=CC=CC=C1Br", "FC(F)(F)P(=O)(O)O"]
  rate, failures, _, _ = _round_trip_rate(smiles, ZINC)
  assert rate == 1.0, failures
  rate, failures, _, _ = _round_trip_rate(["C#N", "C[NH3+]", "O=C[O-]", "C#C", "OC1CC1F", "[C-]#[N+]C"], QM9)
  assert rate == 1.0, failures


def test_atom_order_does_not_depend_on_the_smiles_spelling():
  a = ZINC.featurise("OC(=O)c1ccccc1OC(C)=O")
  b = ZINC.featurise(ASPIRIN)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  plain = chem.Featuriser("zinc", canonical_order=False)
  nodes, _ = plain.featurise(ASPIRIN)
  types, _ = plain.split_features(nodes)
  mol = Chem.MolFromSmiles(ASPIRIN)
  assert [plain.type_names[t] for t in types[:mol.GetNumAtoms()]] == [a.GetSymbol() for a in mol.GetAtoms()]


@pytest.mark.parametrize("rank_order", ["canonical", "smiles"])
def test_rank_features_are_a_function_of_the_molecule(rank_order):
  """Any SMILES spelling of a molecule gives the same ranks; under "smiles" they are the canonical SMILES positions,
  so most bonds join consecutive ranks."""
  feat = chem.Featuriser("zinc", rank_features=True, rank_order=rank_order)
  consecutive = bonds = 0
  for smiles in (ASPIRIN, "CC(=O)Nc1c2n(c3ccccc13)C[C@](C)(C(=O)NC1CCCCC1)N(C1CCCCC1)C2=O"):
    mol = Chem.MolFromSmiles(smiles)
    n = mol.GetNumAtoms()
    nodes, edges = feat.featurise(smiles)
    for seed in range(3):
      order = [int(k) for k in np.random.default_rng(seed).permutation(n)]
      spelling = Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)
      other = feat.featurise(spelling)
      np.testing.assert_array_equal(other[0], nodes, err_msg=spelling)
      np.testing.assert_array_equal(other[1], edges, err_msg=spelling)
    ranks = nodes[:n, -feat.max_nodes:].argmax(-1)
    assert sorted(ranks) == list(range(n)) and not nodes[n:, -feat.max_nodes:].any()
    i, j = np.nonzero(np.triu(edges.sum(-1)))
    consecutive += int(np.sum(np.abs(ranks[i] - ranks[j]) == 1))
    bonds += len(i)
  assert (consecutive / bonds > 0.6) == (rank_order == "smiles"), consecutive / bonds
  assert sorted(ranks) == list(ranks), "slot k holds rank k"
  with pytest.raises(ValueError, match="rank_order"):
    chem.Featuriser("zinc", rank_order="bfs")


def test_rank_bond_features_list_each_atoms_bonds_by_type_and_rank_offset():
  feat = chem.Featuriser("zinc", rank_features=True, rank_order="smiles", rank_bond_features=True)
  k = chem.featurise.RANK_BOND_OFFSET
  assert feat.num_node_features == 18 + 3 * (2 * k + 1) + 38
  nodes, edges = feat.featurise("c1ccccc1CCO")  # canonical SMILES OCCc1ccccc1: the ring closes from rank 3 to 8
  base = 18
  offsets = nodes[:, base:base + 3 * (2 * k + 1)].reshape(38, 3, 2 * k + 1)  # [N, type, offset]
  ranks = nodes[:, -38:].argmax(-1)
  for i in range(9):
    want = np.zeros((3, 2 * k + 1))
    for j in np.nonzero(edges[i].sum(-1))[0]:
      want[edges[i, j].argmax(), np.clip(ranks[j] - ranks[i], -k, k) + k] += 1
    np.testing.assert_array_equal(offsets[i], want)
  assert offsets[3, 0, k + 5] == 1 and offsets[8, 0, k - 5] == 1  # the ring closure, single in the kekule form
  assert not offsets[9:].any()
  # A bond further than k ranks away is counted at the end channel.
  ring = feat.featurise("C1" + "C" * 18 + "C1")[0]  # cycloicosane: the ring closes from rank 0 to rank 19
  counts = ring[:, base:base + 3 * (2 * k + 1)].reshape(38, 3, 2 * k + 1)
  assert counts[0, 0, -1] == 1 and counts[19, 0, 0] == 1 and counts[:, 0, 0].sum() == counts[:, 0, -1].sum() == 1
  with pytest.raises(ValueError, match="rank_bond_features needs rank_features"):
    chem.Featuriser("zinc", rank_bond_features=True)


# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary and the 24 features.


def test_vocabularies():
  assert QM9.type_names == ("C", "N", "O", "F", "N+", "O-", "N-", "C-", "no atom") and QM9.max_nodes == 9
  assert chem.Featuriser("qm9", charged_types=False).type_names == ("C", "N", "O", "F", "no atom")
  assert ZINC.type_names[:9] == ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I") and ZINC.type_names[-1] == "no atom"
  assert ZINC.max_nodes == 38 and ZINC.num_types == 18 and ZINC.num_node_features == 18 + 24
  assert ZINC.no_atom == ZINC.num_types - 1 and ZINC.num_edge_types == 3
  custom = chem.Featuriser("mine", max_nodes=5, atom_types=("C", "Si", "N+"))
  assert custom.species == (("C", 0), ("Si", 0), ("N", 1))
  assert chem.parse_atom_type("Fe2+") == ("Fe", 2) and chem.atom_type_name("Fe", 2) == "Fe2+"
  with pytest.raises(ValueError, match="unknown dataset 'mine'"):
    chem.Featuriser("mine")
  with pytest.raises(ValueError, match="'Xx'"):
    chem.Featuriser("qm9", atom_types=("C", "Xx"))
  with pytest.raises(ValueError, match="duplicate"):
    chem.Featuriser("qm9", atom_types=("C", "C"))


def _rdkit_features(atom):
  """Table 2 by direct RDKit calls, keyed by FEATURE_NAMES_24."""
  direct = {"GetAtomicNum": atom.GetAtomicNum(), "IsInRing": atom.IsInRing(),
            "GetExplicitValence": atom.GetValence(Chem.ValenceType.EXPLICIT)}
  direct.update({f"IsInRingSize({k})": atom.IsInRingSize(k) for k in range(1, 10)})
  for name in chem.FEATURE_NAMES_24:
    if name not in direct:
      direct[name] = getattr(atom, name)()
  return direct


@pytest.mark.parametrize("smiles", [ASPIRIN, PYRIDINIUM, CHARGED_ZINC, "C1CC1C(=O)[O-]"])
def test_atom_features_24_match_rdkit(smiles):
  assert len(chem.FEATURE_NAMES_24) == 24 and len(set(chem.FEATURE_NAMES_24)) == 24
  mol = Chem.MolFromSmiles(smiles)
  for atom in mol.GetAtoms():
    got = chem.atom_features_24(atom)
    expected = _rdkit_features(atom)
    for k, name in enumerate(chem.FEATURE_NAMES_24):
      assert got[k] == pytest.approx(float(expected[name])), f"{smiles} atom {atom.GetIdx()} feature {name}"
  # In the featuriser (SMILES order): slot i carries atom i's features after the type one-hot; "no atom" slots zero.
  feat = chem.Featuriser("zinc", chemical_features=True, canonical_order=False)
  nodes, _ = feat.featurise(smiles)
  n = mol.GetNumAtoms()
  np.testing.assert_allclose(nodes[:n, feat.num_types:], [chem.atom_features_24(a) for a in mol.GetAtoms()],
                             rtol=1e-6)
  assert not nodes[n:, feat.num_types:].any()


def test_atom_features_24_known_values():
  ring_n = Chem.MolFromSmiles(PYRIDINIUM).GetAtomWithIdx(3)
  f = dict(zip(chem.FEATURE_NAMES_24, chem.atom_features_24(ring_n)))
  assert f["GetAtomicNum"] == 7 and f["GetFormalCharge"] == 1 and f["GetIsAromatic"] == 1
  assert f["IsInRingSize(6)"] == 1 and sum(f[f"IsInRingSize({k})"] for k in range(1, 10)) == 1
  assert f["GetDegree"] == 2 and f["GetTotalNumHs"] == 1 and f["GetTotalDegree"] == 3 and f["GetTotalValence"] == 4
  assert f["GetNoImplicit"] == 1 and f["GetNumExplicitHs"] == 1 and f["GetMass"] == pytest.approx(14.007)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input.


def test_featurise_many_counts_and_reports_rejections():
  smiles = ["CCO", "C1CC", "not a smiles", "C[Si](C)(C)C", "CCCCCCCCCC", "C[NH3+]", "", "B(C)C", "c1ccccc1"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    batch, report = QM9.featurise_many(smiles)
  invalid = [w for w in caught if "invalid SMILES" in str(w.message)]
  assert len(caught) == 1 and len(invalid) == 1, [str(w.message) for w in caught]
  assert "2 invalid SMILES" in str(invalid[0].message) and "'C1CC'" in str(invalid[0].message)
  assert report.total == 9 and report.kept_indices == (0, 5, 8)
  assert report.rejected == {"invalid_smiles": 2, "unsupported_element": 2, "too_many_atoms": 1, "no_atoms": 1}
  assert [s for _, s, _ in report.examples["unsupported_element"]] == ["C[Si](C)(C)C", "B(C)C"]
  assert "too_many_atoms" in report.summary() and "kept 3 of 9" in report.summary()
  assert batch.nodes.shape == (3, 9, 9) and batch.edges.shape == (3, 9, 9, 3) and batch.mask.shape == (3, 9)
  assert batch.mask.all()
  # Nothing kept: empty arrays of the right trailing shapes.
  batch, report = QM9.featurise_many(["CCCCCCCCCC"])
  assert batch.nodes.shape == (0, 9, 9) and report.kept == 0
  # Charges without charged types.
  _, report = chem.Featuriser("qm9", charged_types=False).featurise_many(["C[NH3+]", "CN"])
  assert report.rejected == {"unsupported_charge": 1} and report.kept_indices == (1,)


@pytest.mark.parametrize("smiles,feat,problem", [
    ("C1CC", QM9, "invalid_smiles"),
    ("C[Se]C", QM9, "unsupported_element"),
    ("C[Si](C)(C)C", ZINC, "unsupported_element"),
    ("CCCCCCCCCC", QM9, "too_many_atoms"),
    ("C" * 39, ZINC, "too_many_atoms"),
    ("C[NH3+]", chem.Featuriser("qm9", charged_types=False), "unsupported_charge"),
    ("[CH3]", QM9, "radical"),
    ("", QM9, "no_atoms"),
])
def test_featurise_raises_naming_the_smiles(smiles, feat, problem):
  with pytest.raises(ValueError, match=problem) as info:
    feat.featurise(smiles)
  assert repr(smiles) in str(info.value)


def test_to_molecule():
  nodes, edges = QM9.featurise("OC1CC1")
  types, bonds = QM9.split_features(nodes)[0], QM9.bond_orders(edges)
  assert chem.canonical_smiles(QM9.to_molecule(types, bonds)) == "OC1CC1"
  assert QM9.to_molecule(np.full(9, QM9.no_atom), np.zeros((9, 9), int)) is None  # no atoms
  bonds[0, 1] = bonds[1, 0] = 3  # a triple bond on a saturated carbon
  assert QM9.to_molecule(types, bonds) is None
  with pytest.raises(ValueError, match="node_types must lie in"):
    QM9.to_molecule(np.full(9, 99), np.zeros((9, 9), int))
  with pytest.raises(ValueError, match="bond_types must lie in"):
    QM9.to_molecule(types, np.full((9, 9), 4))


# ---------------------------------------------------------------------------------------------------------------------
# Decoding.


def _exact_probs(feat, smiles):
  nodes, edges = feat.featurise(smiles)
  return nodes[:, :feat.num_types], edges.sum(-1), edges


@pytest.mark.parametrize("smiles", [ASPIRIN, PYRIDINIUM, CHARGED_ZINC, "O=S(=O)(c1ccccc1)N1CCOCC1", "Cc1nn[n-]n1"])
def test_decode_exact_one_hot_gives_back_the_smiles(smiles):
  probs = _exact_probs(ZINC, smiles)
  for decoder in (chem.decode_argmax, chem.decode_corrected):
    result = decoder(*probs, ZINC)
    assert result.valid and result.reason == "" and result.smiles == chem.canonical_smiles(smiles)
    assert result.num_atoms == Chem.MolFromSmiles(smiles).GetNumAtoms() and result.num_fragments == 1


def _pentavalent_carbon(feat):
  n, t = feat.max_nodes, feat.num_types
  node_probs = np.zeros((n, t))
  node_probs[:6, 0] = 1.0  # six carbons
  node_probs[6:, feat.no_atom] = 1.0
  edge_probs = np.zeros((n, n))
  edge_probs[0, 1:6] = edge_probs[1:6, 0] = [0.9, 0.8, 0.7, 0.6, 0.55]  # carbon 0 bonded to five others
  edge_type_probs = np.zeros((n, n, 3))
  edge_type_probs[..., 0] = 1.0
  return node_probs, edge_probs, edge_type_probs


def test_invalid_graph_is_a_recorded_failure():
  probs = _pentavalent_carbon(QM9)
  result = chem.decode_argmax(*probs, QM9)
  assert not result.valid and result.smiles is None
  assert result.reason.startswith("sanitization failed") and "valence" in result.reason
  # The correcting process drops the least likely bond (0-5) and keeps the largest fragment: neopentane.
  corrected = chem.decode_corrected(*probs, QM9)
  assert corrected.valid and corrected.smiles == "CC(C)(C)C" and corrected.num_fragments == 2
  # Lowering the order: carbon 1 has two bonds when its likely triple bond to carbon 2 comes up, so it gets a double.
  node_probs, edge_probs, edge_type_probs = probs
  edge_probs[1, 3] = edge_probs[3, 1] = 0.52
  edge_probs[1, 2] = edge_probs[2, 1] = 0.51
  edge_type_probs[1, 2] = edge_type_probs[2, 1] = [0.1, 0.2, 0.7]
  lowered = chem.decode_corrected(node_probs, edge_probs, edge_type_probs, QM9)
  assert lowered.smiles == chem.canonical_smiles("CC12C(=C1)C2") and lowered.num_fragments == 2
  # Other failures are recorded too.
  n, t = 9, QM9.num_types
  disconnected = np.zeros((n, t))
  disconnected[:2, 0] = 1.0
  disconnected[2:, QM9.no_atom] = 1.0
  result = chem.decode_argmax(disconnected, np.zeros((n, n)), np.ones((n, n, 3)) / 3, QM9)
  assert not result.valid and result.reason == "disconnected: 2 fragments"
  assert chem.decode_corrected(disconnected, np.zeros((n, n)), np.ones((n, n, 3)) / 3, QM9).smiles == "C"
  empty = np.zeros((n, t))
  empty[:, QM9.no_atom] = 1.0
  for decoder in (chem.decode_argmax, chem.decode_corrected):
    assert decoder(empty, np.zeros((n, n)), np.ones((n, n, 3)), QM9).reason == "no atoms"
    nan = decoder(np.full((n, t), np.nan), np.zeros((n, n)), np.ones((n, n, 3)), QM9)
    assert not nan.valid and nan.reason == "non-finite probabilities"
  with pytest.raises(ValueError, match=r"node_probs must be \[N, T=9\]"):
    chem.decode_argmax(np.zeros((n, 5)), np.zeros((n, n)), np.ones((n, n, 3)), QM9)


def _random_probs(rng, feat, n):
  t = feat.num_types
  node_logits = rng.normal(size=(n, t)) * rng.uniform(0.1, 5.0)
  node_logits[:, feat.no_atom] += rng.normal(0.0, 2.0)  # vary how many slots are atoms
  node_probs = np.exp(node_logits) / np.exp(node_logits).sum(-1, keepdims=True)
  edge_probs = rng.beta(rng.uniform(0.2, 3.0), rng.uniform(0.2, 3.0), size=(n, n))  # asymmetric on purpose
  edge_type_probs = rng.dirichlet(np.full(3, rng.uniform(0.1, 3.0)), size=(n, n))
  return node_probs, edge_probs, edge_type_probs


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**32 - 1), setup=st.sampled_from([("qm9", 9), ("zinc", 38), ("zinc", 9)]),
                  threshold=st.sampled_from([0.5, 0.1, 0.9]))
def test_corrected_decoding_is_always_valid(seed, setup, threshold):
  feat = QM9 if setup[0] == "qm9" else ZINC
  n = setup[1]
  probs = _random_probs(np.random.default_rng(seed), feat, n)
  atoms = int((probs[0].argmax(-1) != feat.no_atom).sum())
  result = chem.decode_corrected(*probs, feat, edge_threshold=threshold)
  if atoms == 0:
    assert not result.valid and result.reason == "no atoms"
    return
  assert result.valid, result.reason
  mol = Chem.MolFromSmiles(result.smiles)
  assert mol is not None and "." not in result.smiles
  assert 1 <= mol.GetNumAtoms() == result.num_atoms <= atoms
  chem.decode_argmax(*probs, feat, edge_threshold=threshold)  # never raises, valid or not


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**32 - 1))
def test_connected_decoding_keeps_every_atom_it_can(seed):
  """connect=True joins fragments through the most probable remaining pairs: with low edge probabilities (nothing
  above the threshold) the result is still one molecule, and it never has fewer atoms than without joining."""
  rng = np.random.default_rng(seed)
  node_probs, edge_probs, edge_type_probs = _random_probs(rng, ZINC, 12)
  edge_probs = edge_probs * 0.3  # all below the 0.5 threshold
  atoms = int((node_probs.argmax(-1) != ZINC.no_atom).sum())
  plain = chem.decode_corrected(node_probs, edge_probs, edge_type_probs, ZINC)
  joined = chem.decode_corrected(node_probs, edge_probs, edge_type_probs, ZINC, connect=True)
  if atoms == 0:
    assert not joined.valid
    return
  assert joined.valid and "." not in joined.smiles
  assert joined.num_atoms >= plain.num_atoms
  assert plain.num_atoms == 1  # no candidate bond: the largest fragment is one atom


def test_connected_decoding_uses_the_most_probable_pairs():
  # Three carbons, all pair probabilities below the threshold: joining takes the two most probable pairs (a chain).
  n, t = 3, ZINC.num_types
  node = np.zeros((n, t))
  node[:, ZINC.type_names.index("C")] = 1.0
  edge = np.array([[0, 0.3, 0.1], [0.3, 0, 0.2], [0.1, 0.2, 0]])
  edge_type = np.zeros((n, n, 3))
  edge_type[..., 0] = 1.0
  assert chem.decode_corrected(node, edge, edge_type, ZINC, connect=True).smiles == "CCC"
  assert chem.decode_corrected(node, edge, edge_type, ZINC).smiles == "C"


def test_batched_decoding_and_mask():
  rng = np.random.default_rng(1)
  samples = [_random_probs(rng, QM9, 9) for _ in range(4)]
  node, edge, edge_type = (np.stack(x) for x in zip(*samples))
  batched = chem.decode_corrected_batch(node, edge, edge_type, QM9)
  assert batched == [chem.decode_corrected(*s, QM9) for s in samples]
  assert chem.decode_argmax_batch(node, edge, edge_type, QM9) == [chem.decode_argmax(*s, QM9) for s in samples]
  assert chem.decode_samples({"node": node, "edge": edge, "edge_type": edge_type}, QM9) == batched
  # Masked slots are padding: a molecule padded with garbage decodes as the molecule.
  node_probs, edge_probs, edge_type_probs = _exact_probs(QM9, "OC1CC1")
  probs = (np.pad(node_probs, [(0, 3), (0, 0)], constant_values=0.9),
           np.pad(edge_probs, [(0, 3), (0, 3)], constant_values=0.9),
           np.pad(edge_type_probs, [(0, 3), (0, 3), (0, 0)], constant_values=0.9))
  mask = np.arange(12) < 9
  assert chem.decode_argmax(*probs, QM9, mask=mask).smiles == "OC1CC1"
  with pytest.raises(ValueError, match="missing"):
    chem.decode_samples({"node": node}, QM9)


@pytest.mark.parametrize("name", sorted(set(ZINC.atom_types) | set(QM9.atom_types) | {"C+"}))
def test_max_valence_is_accepted_by_rdkit(name):
  symbol, charge = chem.parse_atom_type(name)
  cap = chem.max_valence(name)
  for order, count in ((1, cap), (2, cap // 2), (3, cap // 3)):
    mol = Chem.RWMol()
    center = Chem.Atom(symbol)
    center.SetFormalCharge(charge)
    mol.AddAtom(center)
    for _ in range(count):
      mol.AddBond(0, mol.AddAtom(Chem.Atom("C")), featurise_lib.BOND_TYPES[order - 1])
    Chem.SanitizeMol(mol)  # raises if RDKit refuses the valence
  assert decode_lib.max_valence("Si") == 4  # not in the table: RDKit's valence list
