"""Generation metrics: hand-computed rates, canonicalisation, NSPDK features/MMD, FCD, and the evaluate CLI."""

import json
import os
import pathlib
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import QED

from experiments import evaluate as evaluate_cli
from mgvae_jax.chem import metrics
from mgvae_jax.chem import nspdk

REPO = pathlib.Path(__file__).resolve().parents[1]

# Two clearly different, deterministic molecule sets: substituted alkanes and substituted aromatics (200 each).
ALIPHATIC = ["C" * n + x for n in range(1, 41) for x in ("", "O", "N", "F", "Cl")]
AROMATIC = [ring + "C" * n + x for ring in ("c1ccccc1", "c1ccncc1") for n in range(20) for x in ("", "O", "N", "F", "Cl")]

# 10 samples: 2 failed decodes, 1 invalid (pentavalent carbon), ethanol twice (two spellings), benzene twice (aromatic
# and Kekule), ethylamine (in train, spelled differently there), chloroethane, acetic acid.
TEN = ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", None, None, "CC(C)(C)(C)(C)C", "CCN", "CCCl", "CC(=O)O"]
TRAIN = ["NCC", "CCCC", "c1ccncc1"]


def _rates(generated, train=TRAIN, **kw):
  return metrics.generation_metrics(generated, train, [], compute_fcd=False, compute_nspdk=False, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# Validity, uniqueness, novelty, QED.


def test_hand_computed_rates():
  r = _rates(TEN)
  assert (r["num_samples"], r["num_valid"], r["num_unique"], r["num_novel"]) == (10, 7, 5, 4)
  assert r["validity"] == 7 / 10
  assert r["uniqueness"] == 5 / 7
  assert r["novelty"] == 4 / 5
  assert r["validity_wo_correction"] == r["validity"] and r["validity_wo_correction_source"] == "generated"
  assert r["fcd"] is None and r["nspdk_mmd"] is None and r["notes"] == []
  json.dumps(r)  # the CLI writes it as is


def test_num_samples_counts_missing_failures():
  r = _rates([s for s in TEN if s is not None], num_samples=10)
  assert r["validity"] == 7 / 10 and r["uniqueness"] == 5 / 7 and r["novelty"] == 4 / 5
  assert _rates(TEN, num_samples=14)["validity"] == 7 / 14
  with pytest.raises(ValueError, match="smaller than the 10 generated"):
    _rates(TEN, num_samples=9)
  with pytest.raises(ValueError, match="no samples"):
    _rates([])


def test_validity_without_correction():
  raw = ["CCO", "C(C)(C)(C)(C)C", "c1ccccc1", "C1=CC=CC=C1", None, None, "CC(C)(C)(C)(C)C", "CCN", "F(C)C", None]
  r = _rates(TEN, uncorrected=raw)
  assert r["num_valid_wo_correction"] == 4 and r["validity_wo_correction"] == 4 / 10
  assert r["validity_wo_correction_source"] == "uncorrected" and r["validity"] == 7 / 10
  with pytest.raises(ValueError, match="uncorrected has 9 entries but generated has 10"):
    _rates(TEN, uncorrected=raw[:9])


@pytest.mark.parametrize("bad", [None, "", "   ", "None", "C1CC", "CC(C)(C)(C)(C)C", "c1cccc1", "not a smiles"])
def test_failed_samples(bad):
  assert metrics.parse_smiles(bad) is None and metrics.canonical_smiles(bad) is None


def test_canonicalisation_counts_a_molecule_once():
  assert _rates(["CCO", "OCC", "C(O)C", "[CH3][CH2][OH]"])["num_unique"] == 1
  # Stereo is dropped (isomericSmiles=False): enantiomers and the flat molecule are one molecule, already in train.
  r = _rates(["C[C@H](N)O", "C[C@@H](N)O", "CC(N)O"], train=["N[C@@H](C)O"])
  assert (r["num_unique"], r["num_novel"], r["novelty"]) == (1, 0, 0.0)
  assert metrics.canonical_smiles("C[C@H](N)O") == metrics.canonical_smiles("OC(N)C") == "CC(N)O"


def test_qed_is_over_unique_valid_molecules():
  r = _rates(["CCO", "OCC", "CCO", "c1ccccc1", None])
  expected = [QED.qed(Chem.MolFromSmiles(s)) for s in ("CCO", "c1ccccc1")]
  np.testing.assert_allclose([r["qed_mean"], r["qed_std"]], [np.mean(expected), np.std(expected)], rtol=1e-12)


def test_no_valid_samples_is_reported_not_crashed():
  r = metrics.generation_metrics([None, "C1CC", ""], TRAIN, ["CCO", "CCN"], compute_fcd=True, compute_nspdk=True)
  assert (r["validity"], r["uniqueness"], r["novelty"], r["qed_mean"]) == (0.0, 0.0, 0.0, 0.0)
  assert r["fcd"] is None and r["nspdk_mmd"] is None
  assert any("FCD not computed" in m for m in r["notes"]) and any("NSPDK MMD not computed" in m for m in r["notes"])


def test_unreadable_test_smiles_are_dropped_with_a_warning():
  with pytest.warns(UserWarning, match="1 of 3 SMILES do not parse"):
    r = metrics.generation_metrics(["CCO"], TRAIN, ["CCO", "C1CC", "CCN"], compute_fcd=False)
  assert r["nspdk_num_test"] == 2


# ---------------------------------------------------------------------------------------------------------------------
# NSPDK.


def _graphs(smiles):
  return [nspdk.from_mol(Chem.MolFromSmiles(s)) for s in smiles]


def test_nspdk_features_of_one_bond_by_hand():
  # C-O with r = d = 4: radii 0 and 1 exist (the radius-1 neighbourhood is the whole graph), distances 0 and 1.
  # Blocks (R, 0) hold 4 features with count 1 (pair + half for each root): 1/2 each after block normalisation.
  # Blocks (R, 1) hold the pair (C,O) twice (both roots) and two half features once: 2/sqrt(6), 1/sqrt(6).
  # Four unit blocks have total norm 2, so the final values are those halved.
  g = nx.Graph()
  g.add_node(0, label="C")
  g.add_node(1, label="O")
  g.add_edge(0, 1, label=1)
  x = nspdk.features([nspdk.from_networkx(g)])
  assert x.shape == (1, 2**16 + 1)
  expected = sorted([0.25] * 8 + [1 / np.sqrt(6)] * 2 + [0.5 / np.sqrt(6)] * 4)
  np.testing.assert_allclose(np.sort(x.data), expected, rtol=1e-12)
  np.testing.assert_allclose(x.multiply(x).sum(), 1.0, rtol=1e-12)
  np.testing.assert_array_equal(x.toarray(), nspdk.features(_graphs(["CO"])).toarray())


def test_nspdk_invariant_to_atom_order():
  mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
  perm = list(np.random.default_rng(0).permutation(mol.GetNumAtoms()).tolist())
  a = nspdk.features([nspdk.from_mol(mol)])
  b = nspdk.features([nspdk.from_mol(Chem.RenumberAtoms(mol, perm))])
  np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-15)


def test_nspdk_mmd_self_zero_and_separates_sets():
  ali, aro = _graphs(ALIPHATIC[:100]), _graphs(AROMATIC[:100])
  assert nspdk.mmd(ali, ali) == pytest.approx(0.0, abs=1e-12)
  assert nspdk.mmd(ali, list(reversed(ali))) == pytest.approx(0.0, abs=1e-12)
  far = nspdk.mmd(ali, aro)
  near = nspdk.mmd(ali[::2], ali[1::2])
  assert far > 0.1 and 0 < near < far / 5
  assert nspdk.mmd(aro, ali) == pytest.approx(far, rel=1e-12)


def test_nspdk_mmd_equals_gdss_gram_formula():
  x, y = nspdk.features(_graphs(ALIPHATIC[:30])), nspdk.features(_graphs(AROMATIC[:20]))
  kxx, kyy, kxy = (x @ x.T).toarray(), (y @ y.T).toarray(), (x @ y.T).toarray()
  gram = kxx.mean() + kyy.mean() - 2 * kxy.mean()
  assert nspdk.mmd_from_features(x, y) == pytest.approx(gram, rel=1e-9, abs=1e-15)


def test_nspdk_reproducible_across_hash_seeds():
  code = ("from rdkit import Chem; from mgvae_jax.chem import nspdk; "
          "x = nspdk.features([nspdk.from_mol(Chem.MolFromSmiles('CC(=O)Nc1ccc(O)cc1'))]); "
          "print(sorted(x.indices.tolist()))")
  outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
  assert len(outs) == 1


def test_nspdk_rejects_bad_graphs():
  with pytest.raises(ValueError, match="graph 1 has no nodes"):
    nspdk.features([nspdk.LabeledGraph(("C",), ()), nspdk.LabeledGraph((), ())])
  with pytest.raises(ValueError, match="outside 0..1"):
    nspdk.features([nspdk.LabeledGraph(("C", "O"), ((0, 2, 1),))])
  with pytest.raises(ValueError, match="needs a 'label' attribute"):
    nspdk.from_networkx(nx.path_graph(3))
  with pytest.raises(ValueError, match="at least one graph"):
    nspdk.mmd([], _graphs(["C"]))


def _gram(x):
  # X X^T on the used columns only: scipy's sparse product builds arrays as long as the 2**30 + 1 columns.
  dense = np.zeros((x.shape[0], len(np.unique(x.indices))))
  dense[np.repeat(np.arange(x.shape[0]), np.diff(x.indptr)), np.unique(x.indices, return_inverse=True)[1]] = x.data
  return dense @ dense.T


def test_nspdk_matches_reference_implementation():
  # The vectorised module hashes differently from the line-by-line port of EDeN kept in nspdk_reference.py, but must
  # compute the same kernel: with 2**30 buckets collisions vanish, so Gram matrices and feature counts agree.
  smiles = ALIPHATIC[::9] + AROMATIC[::9] + [
      "C", "CO", "[NH4+]", "C[N+](C)(C)C", "CC(=O)[O-]", "[Na+].[Cl-]", "CCO.CCN", "C1CC1", "C1CCCCCCCCCCC1",
      "C1CCC2CCCCC2C1", "c1ccc2ccccc2c1", "c1ccc(-c2ccccc2)cc1", "CC(=O)Nc1ccc(O)cc1", "C#N", "O=C=O", "C=CC=O"]
  graphs = _graphs(smiles) + [
      # Mixed label types (1, 1.0 and "1" differ), a self-loop (ignored) and a double edge (two edge nodes).
      nspdk.LabeledGraph(("a", 1, 1.0, "1"), ((0, 0, "x"), (0, 1, "x"), (0, 1, "y"), (1, 2, 2), (2, 3, 2))),
      # A hub of degree 9, beyond chemistry.
      nspdk.LabeledGraph(("X",) + ("Y",) * 9, tuple((0, i, 1) for i in range(1, 10)))]
  import nspdk_reference  # pylint: disable=g-import-not-at-top  (tests/nspdk_reference.py, the slow reference)
  ours = nspdk.features(graphs, nbits=30)
  ref = nspdk_reference.features(graphs, nbits=30)
  np.testing.assert_array_equal(np.diff(ours.indptr), np.diff(ref.indptr))
  np.testing.assert_allclose(_gram(ours), _gram(ref), rtol=0, atol=1e-12)
  # Graphs are batched by size; each row must not depend on which other graphs share its batch.
  alone = np.vstack([nspdk.features([g]).toarray() for g in graphs])
  np.testing.assert_allclose(nspdk.features(graphs).toarray(), alone, rtol=0, atol=1e-15)


def test_nspdk_matches_eden_when_installed():
  # EDeN (pip eden-kernel) is the implementation GDSS calls; with 2**30 buckets collisions vanish and the two agree.
  eden_graph = pytest.importorskip("eden.graph")
  mols = [Chem.MolFromSmiles(s) for s in ALIPHATIC[::7] + AROMATIC[::7]]
  nx_graphs = []
  for mol in mols:
    g = nx.Graph()
    for atom in mol.GetAtoms():
      g.add_node(atom.GetIdx(), label=atom.GetSymbol())
    for bond in mol.GetBonds():
      g.add_edge(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), label=int(bond.GetBondTypeAsDouble()))
    nx_graphs.append(g)
  ours = nspdk.features([nspdk.from_mol(m) for m in mols], nbits=30)
  eden = eden_graph.vectorize(nx_graphs, complexity=4, discrete=True, nbits=30)
  np.testing.assert_array_equal(np.diff(ours.indptr), np.diff(eden.indptr))
  np.testing.assert_allclose(_gram(ours), _gram(eden), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# FCD.


def test_fcd_self_near_zero_and_positive_across_sets():
  r_self = metrics.generation_metrics(ALIPHATIC, [], ALIPHATIC, compute_nspdk=False)
  assert abs(r_self["fcd"]) < 1e-2
  assert (r_self["fcd_num_generated"], r_self["fcd_num_test"]) == (200, 200)
  r_far = metrics.generation_metrics(ALIPHATIC, [], AROMATIC, compute_nspdk=False)
  assert r_far["fcd"] > 5.0


def test_fcd_missing_package_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "fcd_torch", None)  # makes `import fcd_torch` raise ImportError
  with pytest.raises(ImportError, match=r"mgvae_jax\[metrics\]"):
    metrics.generation_metrics(["CCO", "CCN"], [], ["CCO", "CCC"], compute_nspdk=False)
  assert metrics.generation_metrics(["CCO"], [], ["CCO"], compute_fcd=False)["nspdk_mmd"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------------------
# The evaluate CLI.


def _write(path, lines):
  path.write_text("".join(f"{s}\n" for s in lines))
  return str(path)


def test_evaluate_without_fcd_nspdk(tmp_path):
  samples = _write(tmp_path / "s.smi", ["" if s is None else s for s in TEN[:5]] + ["None"] + TEN[6:])
  train = _write(tmp_path / "train.smi", TRAIN + [""])
  test = _write(tmp_path / "test.smi", ["CCO"])
  out = tmp_path / "m" / "metrics.json"
  r = evaluate_cli.evaluate(samples, train=train, test=test, compute_fcd=False, compute_nspdk=False, out=str(out))
  assert (r["validity"], r["uniqueness"], r["novelty"]) == (7 / 10, 5 / 7, 4 / 5)
  assert r["inputs"]["train_size"] == 3 and r["fcd"] is None and r["nspdk_mmd"] is None
  assert json.loads(out.read_text()) == r
  assert "validity" in evaluate_cli.format_table(r) and "skipped" in evaluate_cli.format_table(r)


def test_evaluate_cli_end_to_end(tmp_path):
  samples = _write(tmp_path / "samples.smi", ALIPHATIC[:60] + ["", "None", "C1CC"])
  raw = _write(tmp_path / "raw.smi", ALIPHATIC[:30] + ["CC(C)(C)(C)(C)C"] * 30 + ["", "", ""])
  train = _write(tmp_path / "train.smi", ALIPHATIC[:10])
  test = _write(tmp_path / "test.smi", ALIPHATIC[::2] + AROMATIC[::4])
  out = tmp_path / "metrics.json"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", f"--samples={samples}", "--dataset=zinc", f"--uncorrected={raw}",
       f"--train={train}", f"--test={test}", "--num_test=80", f"--out={out}"],
      capture_output=True, text=True, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr
  r = json.loads(out.read_text())
  assert (r["num_samples"], r["num_valid"], r["num_unique"], r["num_novel"]) == (63, 60, 60, 50)
  assert r["validity_wo_correction"] == 30 / 63 and r["validity_wo_correction_source"] == "uncorrected"
  assert r["fcd"] > 0 and r["nspdk_mmd"] > 0
  assert r["fcd_num_test"] == r["nspdk_num_test"] == r["inputs"]["test_used"] == 80
  assert r["inputs"]["test_size"] == 150 and r["inputs"]["num_test_seed"] == 0
  assert "FCD/test" in proc.stdout and str(out) in proc.stdout


def test_evaluate_bad_inputs(tmp_path):
  good = _write(tmp_path / "good.smi", ["CCO"])
  missing = str(tmp_path / "nope.smi")
  with pytest.raises(FileNotFoundError, match="samples file .*nope.smi does not exist"):
    evaluate_cli.evaluate(missing, train=good, test=good)
  empty = tmp_path / "empty.smi"
  empty.write_text("")
  with pytest.raises(ValueError, match="samples file .*empty.smi is empty"):
    evaluate_cli.evaluate(str(empty), train=good, test=good)
  with pytest.raises(ValueError, match="test set file .*empty.smi is empty"):
    evaluate_cli.evaluate(good, train=good, test=str(empty))
  with pytest.raises(ValueError, match="no train set: pass --train"):
    evaluate_cli.evaluate(good, test=good)
  with pytest.raises(ValueError, match="has 2 lines but samples file"):
    evaluate_cli.evaluate(good, train=good, test=good, uncorrected=_write(tmp_path / "raw.smi", ["CCO", "CC"]))
  with pytest.raises(ValueError, match="unknown dataset"):
    evaluate_cli.evaluate(good, "zinc15", train=good, test=good)
