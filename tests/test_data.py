"""Tests of mgvae_jax.data: the file registry and fetch, the molecule loaders, and the batch pipeline.

Tests that read the staged datasets need $MGVAE_DATA_DIR (CI sets it to ../shared/data) and skip without it. Download
tests only talk to an HTTP server on 127.0.0.1 started here.
"""

import collections
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import logging
import os
import pathlib
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from mgvae_jax import graphs
from mgvae_jax.data import checksums
from mgvae_jax.data import files
from mgvae_jax.data import graph_datasets
from mgvae_jax.data import molecules
from mgvae_jax.data import pipeline
from mgvae_jax.data import registry

_STAGED = os.environ.get(registry.ENV_VAR)
needs_data = pytest.mark.skipif(
    not _STAGED or not os.path.isdir(_STAGED),
    reason=f"${registry.ENV_VAR} is unset or not a directory; these tests read the staged datasets")


def _staged(name: str) -> pathlib.Path:
  if not _STAGED:
    pytest.skip(f"${registry.ENV_VAR} is unset; cannot compare {name} with its staged copy")
  path = pathlib.Path(_STAGED) / name
  if not path.is_file():
    pytest.skip(f"${registry.ENV_VAR}={_STAGED} has no {name}")
  return path


# ---------------------------------------------------------------------------------------------------------------------
# Registry and fetch.


class _Handler(http.server.SimpleHTTPRequestHandler):
  requests: list = []

  def do_GET(self):  # pylint: disable=invalid-name
    self.requests.append(self.path)
    super().do_GET()

  def log_message(self, *args):  # keep pytest output clean
    pass


@pytest.fixture
def http_server(tmp_path):
  """Serves tmp_path/"served" on 127.0.0.1; yields (directory, base URL, list of request paths)."""
  served = tmp_path / "served"
  served.mkdir()
  requests = []
  handler = type("Handler", (_Handler,), {"requests": requests})
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _closed_port_url(name: str) -> str:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}/{name}"  # nothing listens there any more: any contact fails


def _entry(name: str, payload: bytes, url, **kw) -> registry.Entry:
  return registry.Entry(path=name, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), url=url,
                        source="test", format="test bytes", **kw)


def _listing(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_downloads_verifies_and_reuses(http_server, tmp_path):
  served, base, requests = http_server
  payload = os.urandom(3 * 2**20 + 5)  # several read chunks
  (served / "blob.bin").write_bytes(payload)
  root = tmp_path / "data"
  with registry.temporary_entry(_entry("test/blob.bin", payload, f"{base}/blob.bin")):
    path = registry.fetch("test/blob.bin", data_dir=root)
    assert path == root / "test" / "blob.bin"
    assert path.read_bytes() == payload
    assert _listing(path.parent) == ["blob.bin"]  # no temp file left
    assert registry.fetch("test/blob.bin", data_dir=root, verify=True) == path
  assert requests == ["/blob.bin"]  # the second fetch found the file and did not download again


def test_fetch_accepts_the_file_the_url_serves(http_server, tmp_path):
  # MNIST train images: the staged copy is a recompression; the URL serves the original gzip of the same payload.
  served, base, _ = http_server
  original = gzip.compress(b"idx payload" * 100, mtime=0)
  (served / "images.gz").write_bytes(original)
  staged = _entry("test/images.gz", gzip.compress(b"idx payload" * 100, compresslevel=1, mtime=1), None)
  entry = dataclasses.replace(staged, url=f"{base}/images.gz", url_size=len(original),
                              url_sha256=hashlib.sha256(original).hexdigest())
  with registry.temporary_entry(entry):
    path = registry.fetch("test/images.gz", data_dir=tmp_path)
    assert path.read_bytes() == original
    assert registry.fetch("test/images.gz", data_dir=tmp_path, verify=True) == path
  mnist = registry.get("mnist/train-images-idx3-ubyte.gz")
  assert mnist.url_size == 9_912_422 and mnist.url_sha256.startswith("440fcabf") and mnist.sha256 != mnist.url_sha256


def test_fetch_checksum_mismatch_leaves_nothing(http_server, tmp_path):
  served, base, _ = http_server
  (served / "blob.bin").write_bytes(b"what the server has")
  root = tmp_path / "data"
  entry = _entry("test/blob.bin", b"what the registry expects", f"{base}/blob.bin")
  with registry.temporary_entry(entry):
    with pytest.raises(registry.ChecksumError) as err:
      registry.fetch("test/blob.bin", data_dir=root)
  actual = hashlib.sha256(b"what the server has").hexdigest()
  for part in ("test/blob.bin", f"{base}/blob.bin", entry.sha256, actual):
    assert part in str(err.value)
  assert _listing(root / "test") == []  # neither the file nor a temp file


def test_fetch_empty_download_and_http_error(http_server, tmp_path):
  served, base, _ = http_server
  (served / "empty.bin").write_bytes(b"")
  root = tmp_path / "data"
  with registry.temporary_entry(_entry("test/empty.bin", b"x", f"{base}/empty.bin")):
    with pytest.raises(registry.ChecksumError, match="empty"):
      registry.fetch("test/empty.bin", data_dir=root)
  with registry.temporary_entry(_entry("test/absent.bin", b"x", f"{base}/absent.bin")):
    with pytest.raises(registry.DownloadError, match="404") as err:
      registry.fetch("test/absent.bin", data_dir=root)
  assert f"{base}/absent.bin" in str(err.value) and str(root) in str(err.value)
  assert _listing(root / "test") == []


def test_fetch_present_file_does_not_touch_network(tmp_path):
  payload = b"already here"
  url = _closed_port_url("blob.bin")
  root = tmp_path / "data"
  (root / "test").mkdir(parents=True)
  (root / "test" / "blob.bin").write_bytes(payload)
  with registry.temporary_entry(_entry("test/blob.bin", payload, url)):
    assert registry.fetch("test/blob.bin", data_dir=root).read_bytes() == payload
    assert registry.fetch("test/blob.bin", data_dir=root, verify=True).read_bytes() == payload
  # The URL really is dead: a file that is missing fails to download from it, naming the URL and the data dir.
  with registry.temporary_entry(_entry("test/other.bin", payload, url)):
    with pytest.raises(registry.DownloadError, match="place the file by hand") as err:
      registry.fetch("test/other.bin", data_dir=root, timeout=5)
  assert url in str(err.value) and str(root) in str(err.value)
  assert _listing(root / "test") == ["blob.bin"]


def test_fetch_rejects_empty_wrong_size_and_wrong_hash(tmp_path):
  root = tmp_path / "data"
  (root / "test").mkdir(parents=True)
  path = root / "test" / "blob.bin"
  with registry.temporary_entry(_entry("test/blob.bin", b"0123456789", _closed_port_url("blob.bin"))):
    path.write_bytes(b"")
    with pytest.raises(registry.ChecksumError, match="is empty"):
      registry.fetch("test/blob.bin", data_dir=root)
    path.write_bytes(b"01234")
    with pytest.raises(registry.ChecksumError, match="has 5 bytes, expected 10"):
      registry.fetch("test/blob.bin", data_dir=root)
    path.write_bytes(b"9876543210")  # right size, wrong content: the sha256 tells
    with pytest.raises(registry.ChecksumError, match="sha256") as err:
      registry.fetch("test/blob.bin", data_dir=root)
    assert str(path) in str(err.value) and hashlib.sha256(b"9876543210").hexdigest() in str(err.value)


def test_fetch_missing_without_download(tmp_path):
  name = "zinc250k/valid_idx_zinc250k.json"
  with pytest.raises(FileNotFoundError, match="download=False") as err:
    registry.fetch(name, data_dir=tmp_path, download=False)
  assert name in str(err.value) and "JSON list" in str(err.value) and str(tmp_path) in str(err.value)
  assert not (tmp_path / "zinc250k").exists()


def test_derived_without_url_or_builder_says_how_to_rebuild(tmp_path):
  name = "qm9/derived/qm9_mgvae_standardization.csv"
  entry = registry.get(name)
  assert entry.url is None and entry.derived and entry.build is None
  with pytest.raises(FileNotFoundError, match="no URL") as err:
    registry.fetch(name, data_dir=tmp_path, download=True)
  assert "PROVENANCE.md section 2" in str(err.value) and "micro_qm9.csv" in str(err.value)
  with pytest.raises(FileNotFoundError, match="no builder"):
    registry.build(name, data_dir=tmp_path)


def test_every_entry_is_well_formed():
  paths = [e.path for e in registry.entries()]
  assert len(paths) == len(set(paths)) == 79
  for e in registry.entries():
    assert len(e.sha256) == 64 and e.size > 0, e.path
    if e.url is None:
      assert e.path.split("/")[-2] == "derived" and (e.build is not None or "PROVENANCE" in e.rebuild), e.path
    elif e.url.startswith("https://raw.githubusercontent.com/"):
      commit = e.url.split("/")[5]
      assert len(commit) in (12, 40) and int(commit, 16) >= 0, e.url
  derived = sorted(e.path for e in registry.entries() if e.url is None)
  assert derived == sorted([
      "community_small/derived/community_small_edgelists.json", "ego_small/derived/ego_small_edgelists.json",
      "qm9/derived/qm9_mgvae_rows_raw_targets.csv.gz", "qm9/derived/qm9_mgvae_standardization.csv",
      "zinc12k/derived/zinc12k_benchmark_derived.csv", "zinc250k/derived/zinc250k_chemvae_order.csv.gz"])
  with pytest.raises(KeyError, match="did you mean"):
    registry.get("zinc250k/valid_idx_zinc.json")
  with pytest.raises(ValueError, match="already registered"):
    registry.register(registry.get("qm9/micro_qm9.csv"))


def test_data_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "explicit"))
  assert registry.data_dir() == tmp_path / "explicit"
  monkeypatch.delenv(registry.ENV_VAR)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert registry.data_dir() == tmp_path / "xdg" / "mgvae_jax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert registry.data_dir() == tmp_path / "home" / ".cache" / "mgvae_jax"


@pytest.mark.parametrize("name", [e.path for e in registry.entries()])
def test_staged_copy_matches_registry(name):
  path = _staged(name)
  registry.check_file(name, path, verify=True)


def test_same_size_edit_of_a_staged_file_fails_its_checksum(tmp_path, monkeypatch):
  name = "ego_small/derived/ego_small_edgelists.json"
  payload = _staged(name).read_bytes()
  at = payload.index(b"1")
  copy = tmp_path / name
  copy.parent.mkdir(parents=True)
  copy.write_bytes(payload[:at] + b"2" + payload[at + 1:])  # still valid JSON, same size
  monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
  with pytest.raises(registry.ChecksumError, match="sha256") as err:
    graph_datasets.load_graphs("ego_small", download=False)
  for part in (str(copy), registry.get(name).sha256, registry.sha256_file(copy), "delete it"):
    assert part in str(err.value)


def test_sha256_verdict_is_cached_per_file_version(tmp_path, monkeypatch):
  calls = []
  hash_file = checksums.sha256_file
  monkeypatch.setattr(checksums, "sha256_file", lambda p: calls.append(p) or hash_file(p))
  monkeypatch.setattr(checksums, "_SETTLE_NS", 0)  # the files here are seconds old, not settled
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  root, user = tmp_path / "data", tmp_path / "xdg" / "mgvae_jax"
  path = root / "test" / "blob.bin"
  path.parent.mkdir(parents=True)
  path.write_bytes(b"0123456789")
  old = time.time_ns() - 10**10
  os.utime(path, ns=(old, old))
  fetch = functools.partial(registry.fetch, "test/blob.bin", data_dir=root)
  with registry.temporary_entry(_entry("test/blob.bin", b"0123456789", _closed_port_url("blob.bin"))):
    fetch(), fetch(), fetch()
    assert len(calls) == 1 and (root / checksums.CACHE_NAME).is_file()
    fetch(verify=True)  # verify hashes regardless of the cache
    assert len(calls) == 2
    path.write_bytes(b"9876543210")  # same size, new mtime: hashed again, and rejected
    with pytest.raises(registry.ChecksumError, match=hashlib.sha256(b"9876543210").hexdigest()):
      fetch()
    path.write_bytes(b"0123456789")
    os.utime(path, ns=(old, old))
    (root / checksums.CACHE_NAME).unlink()
    root.chmod(0o555)  # a read-only data dir: the verdict goes to the user cache dir
    try:
      calls.clear()
      fetch(), fetch()
      assert len(calls) == 1 and (user / checksums.CACHE_NAME).is_file()
      assert not (root / checksums.CACHE_NAME).exists()
      (user / checksums.CACHE_NAME).unlink()
      user.chmod(0o555)  # no writable cache anywhere: hashed each time, never an error
      fetch(), fetch()
      assert len(calls) == 3
    finally:
      root.chmod(0o755)
      user.chmod(0o755)
    (root / checksums.CACHE_NAME).write_text("{not json")  # a corrupt cache is ignored, then rewritten
    fetch(), fetch()
    assert len(calls) == 4


@needs_data
def test_build_derived_edgelists_is_byte_identical(tmp_path):
  (tmp_path / "ego_small").mkdir()
  shutil.copy(_staged("ego_small/ego_small.pkl"), tmp_path / "ego_small" / "ego_small.pkl")
  name = "ego_small/derived/ego_small_edgelists.json"
  path = registry.fetch(name, data_dir=tmp_path)  # missing derived file with a builder: rebuilt and checked
  assert registry.sha256_file(path) == registry.get(name).sha256
  assert _listing(path.parent) == ["ego_small_edgelists.json"]


@needs_data
def test_build_zinc250k_chemvae_order_columns(tmp_path):
  out = tmp_path / "order.csv.gz"
  registry.build_zinc250k_chemvae_order(_staged, out, with_sas=False)
  with gzip.open(out, "rt", newline="") as f:
    rebuilt = f.read().splitlines()
  with gzip.open(_staged("zinc250k/derived/zinc250k_chemvae_order.csv.gz"), "rt", newline="") as f:
    staged = [line.rsplit(",", 1)[0] for line in f.read().splitlines()]  # drop SAS_rdkit
  assert len(rebuilt) == molecules.ZINC250K_ROWS + 1
  assert rebuilt == staged


# ---------------------------------------------------------------------------------------------------------------------
# Molecule loaders on the staged data.


@pytest.fixture(scope="module")
def zinc():
  if not _STAGED:
    pytest.skip(f"${registry.ENV_VAR} is unset")
  return {s: molecules.load_smiles("zinc", s) for s in ("all", "train", "test")}


@pytest.fixture(scope="module")
def qm9():
  if not _STAGED:
    pytest.skip(f"${registry.ENV_VAR} is unset")
  return {s: molecules.load_smiles("qm9", s) for s in ("all", "train", "test")}


def test_zinc250k_rows_and_split(zinc):
  assert len(zinc["all"]) == 249_455
  assert len(zinc["test"]) == 24_887 and len(zinc["train"]) == 249_455 - 24_887
  assert zinc["all"][0] == "CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1"
  # .smi line 234,300 (the extra molecule) is gone: rows 234,298 / 234,299 are .smi lines 234,299 / 234,301.
  assert registry.ZINC250K_EXTRA_SMILES not in set(zinc["all"])
  assert zinc["all"][234_298] == "COC(=O)[C@@H](NC(=O)[C@@H]1C[C@H]1c1ccc(F)cc1)C(C)C"
  assert zinc["all"][234_299] == "CCOc1cc(Br)c(/C=C2\\SC(=O)N(Cc3ccc(F)cc3)C2=O)cc1OCC"
  # 0-based test ids: the JSON starts [2, 10, 21, ...].
  assert zinc["test"][:3] == [zinc["all"][2], zinc["all"][10], zinc["all"][21]]
  assert not set(zinc["train"]) & set(zinc["test"])
  assert set(zinc["train"]) | set(zinc["test"]) == set(zinc["all"])


def test_qm9_rows_and_split(qm9):
  assert len(qm9["all"]) == 133_885 and len(qm9["test"]) == 13_082 and len(qm9["train"]) == 120_803
  assert qm9["all"][:2] == ["C", "N"]
  assert qm9["test"][0] == qm9["all"][7278]  # JSON's first id "007278", read 0-based
  # QM9 repeats some SMILES strings (stereoisomers), so compare multisets: each row lands in exactly one split.
  assert collections.Counter(qm9["train"]) + collections.Counter(qm9["test"]) == collections.Counter(qm9["all"])


@needs_data
def test_num_train_subset_is_deterministic(zinc):
  a = molecules.load_smiles("zinc", "train", num_train=10_000, seed=3)
  b = molecules.load_smiles("zinc", "train", num_train=10_000, seed=3)
  c = molecules.load_smiles("zinc", "train", num_train=10_000, seed=4)
  assert a == b and a != c and len(a) == len(set(a)) == 10_000
  assert set(a) <= set(zinc["train"])
  with pytest.raises(ValueError, match="only applies to split='train'"):
    molecules.load_smiles("zinc", "test", num_train=10)
  with pytest.raises(ValueError, match="dataset must be one of"):
    molecules.load_smiles("moses", "train")
  with pytest.raises(ValueError, match="split must be"):
    molecules.load_smiles("qm9", "valid")


@needs_data
def test_zinc12k_splits():
  sizes = {}
  for split in ("train", "val", "test"):
    smiles, y = molecules.load_zinc12k(split)
    assert y.shape == (len(smiles),) and y.dtype == np.float64 and np.all(np.isfinite(y))
    sizes[split] = len(smiles)
  assert sizes == {"train": 10_000, "val": 1_000, "test": 1_000}
  smiles, y = molecules.load_zinc12k("train")
  assert smiles[0] == "COc1ccc2ccc(O)c(CN3CCN(S(=O)(=O)c4ccn(C)c4)CC3)c2c1" and y[0] == pytest.approx(0.837321)
  assert abs(y.mean() - 0.0115) < 1e-3  # PROVENANCE: train y mean 0.0115, std 2.04
  assert molecules.load_zinc12k("valid")[0] == molecules.load_zinc12k("val")[0]


@needs_data
def test_qm9_targets_standardised_and_raw():
  smiles, z = molecules.load_qm9_targets()
  assert len(smiles) == 130_462 and z.shape == (130_462, 13) and len(molecules.QM9_TARGET_NAMES) == 13
  assert np.all(np.abs(z.mean(0)) < 0.05) and np.all(np.abs(z.std(0) - 1) < 0.1)  # z-scored (mu: std 0.94)
  raw_smiles, raw = molecules.load_qm9_targets(raw=True)
  assert raw_smiles == smiles and raw.shape == z.shape
  for j in range(12):  # raw = z * std + mean (up to MoleculeNet rounding); omega1 stays standardised
    slope, icpt = np.polyfit(z[:2000, j], raw[:2000, j], 1)
    assert np.max(np.abs(z[:2000, j] * slope + icpt - raw[:2000, j])) < 1e-3 * max(1.0, abs(slope))
  np.testing.assert_allclose(raw[:, 12], z[:, 12], atol=1e-12)
  test_smiles, test_z = molecules.load_qm9_targets("test", test_percent=10)
  train_smiles, _ = molecules.load_qm9_targets("train", test_percent=10)
  assert len(test_smiles) == 13_041 and len(train_smiles) == 117_421 and test_z.shape == (13_041, 13)


# ---------------------------------------------------------------------------------------------------------------------
# Molecule loaders on small bad files (temporary data dir; the registry entry is swapped for one matching the file).


@pytest.fixture
def stage(tmp_path):
  """stage(name, bytes): write the file under a temp data dir and register its size/sha256 for this test."""
  with contextlib.ExitStack() as stack:

    def _stage(name: str, payload: bytes) -> pathlib.Path:
      path = tmp_path / name
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(payload)
      entry = dataclasses.replace(registry.get(name), size=len(payload),
                                  sha256=hashlib.sha256(payload).hexdigest())
      stack.enter_context(registry.temporary_entry(entry))
      return path

    yield _stage


def _fake_smi(rows: dict[int, str]) -> bytes:
  """A 249,456-line .smi of methane with the extra molecule at line 234,300 and `rows` (0-based lines) replaced."""
  lines = ["C"] * molecules.ZINC250K_SMI_LINES
  lines[molecules.ZINC250K_EXTRA_LINE - 1] = registry.ZINC250K_EXTRA_SMILES
  for i, s in rows.items():
    lines[i] = s
  return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)


def test_invalid_smiles_are_skipped_counted_and_logged(stage, tmp_path, caplog):
  # .smi lines 2..4 are bad; as ZINC rows (before the dropped line, row = line - 1) they are 1..3.
  stage(registry.ZINC250K_SMI, _fake_smi({1: "", 2: "not a smiles!", 3: "C1CC"}))
  stage("zinc250k/valid_idx_zinc250k.json", json.dumps([0, 3, 5]).encode())
  with caplog.at_level(logging.WARNING):
    smiles, skipped = molecules.load_smiles("zinc", "train", data_dir=tmp_path, return_skipped=True)
  assert skipped == 2 and len(smiles) == 249_455 - 3 - 2
  warnings = [r for r in caplog.records if "skipped 2 invalid SMILES" in r.getMessage()]
  assert len(warnings) == 1 and "not a smiles!" in warnings[0].getMessage()
  # The cheap check passes the unclosed ring "C1CC"; RDKit (validate=True) rejects it.
  assert molecules.load_smiles("zinc", "test", data_dir=tmp_path) == ["C", "C1CC", "C"]
  assert molecules.load_smiles("zinc", "test", data_dir=tmp_path, validate=True, return_skipped=True) == (["C", "C"], 1)
  subset = molecules.load_smiles("zinc", "train", data_dir=tmp_path, num_train=100, validate=True)
  assert len(subset) == 100
  with pytest.raises(ValueError, match="only 249450 valid train"):
    molecules.load_smiles("zinc", "train", data_dir=tmp_path, num_train=249_451)


def test_corrupt_gzip_and_wrong_layout(stage, tmp_path):
  stage(registry.ZINC250K_SMI, b"this is not gzip data")
  with pytest.raises(registry.DataFormatError, match="cannot read as gzip text") as err:
    molecules.load_smiles("zinc", "all", data_dir=tmp_path)
  assert "250k_rndm_zinc_drugs_clean.smi.gz" in str(err.value)
  stage(registry.ZINC250K_SMI, _fake_smi({})[:-20])  # truncated stream
  with pytest.raises(registry.DataFormatError, match="cannot read as gzip text"):
    molecules.load_smiles("zinc", "all", data_dir=tmp_path)
  stage(registry.ZINC250K_SMI, gzip.compress(b"C\nCC\n"))
  with pytest.raises(registry.DataFormatError, match="expected the 249456-line"):
    molecules.load_smiles("zinc", "all", data_dir=tmp_path)
  stage(registry.ZINC250K_SMI, _fake_smi({molecules.ZINC250K_EXTRA_LINE - 1: "CCO"}))
  with pytest.raises(registry.DataFormatError, match="should be the extra molecule"):
    molecules.load_smiles("zinc", "all", data_dir=tmp_path)


def test_bad_json_split_files(stage, tmp_path):
  stage(registry.ZINC250K_SMI, _fake_smi({}))
  stage("zinc250k/valid_idx_zinc250k.json", b"[2, 10, 21,")
  with pytest.raises(registry.DataFormatError, match="cannot parse as a JSON list of ints") as err:
    molecules.load_smiles("zinc", "test", data_dir=tmp_path)
  assert "valid_idx_zinc250k.json" in str(err.value)
  stage("zinc250k/valid_idx_zinc250k.json", b"[2, 249455]")
  with pytest.raises(registry.DataFormatError, match=r"must lie in \[0, 249455\)"):
    molecules.load_smiles("zinc", "test", data_dir=tmp_path)
  stage("qm9/qm9_moleculenet_smiles.csv", ("smiles\n" + "C\n" * molecules.QM9_ROWS).encode())
  stage("qm9/valid_idx_qm9.json", b'["000001", "000002"]')
  with pytest.raises(registry.DataFormatError, match='valid_idxs'):
    molecules.load_smiles("qm9", "test", data_dir=tmp_path)
  stage("qm9/valid_idx_qm9.json", b'{"valid_idxs": ["000001", "x"]}')
  with pytest.raises(registry.DataFormatError, match="non-integer"):
    molecules.load_smiles("qm9", "test", data_dir=tmp_path)
  stage("qm9/qm9_moleculenet_smiles.csv", b"SMILES_column\nC\n")
  with pytest.raises(registry.DataFormatError, match="missing \\['smiles'\\]"):
    molecules.load_smiles("qm9", "all", data_dir=tmp_path)


def test_undecodable_bytes_and_directories_are_named(stage, tmp_path):
  bad = stage("qm9/qm9_moleculenet_smiles.csv", b"smiles\nC\nC\xff\n")
  with pytest.raises(registry.DataFormatError, match=r"not utf-8 text: the byte 0xff at byte offset 10 \(line 3\)"
                     ) as err:
    molecules.load_smiles("qm9", "all", data_dir=tmp_path)
  assert str(bad) in str(err.value)
  stage(registry.ZINC250K_SMI, gzip.compress(b"C\n\xc3("))
  with pytest.raises(registry.DataFormatError, match=r"byte offset 2 of the decompressed text \(line 2\)"):
    molecules.load_smiles("zinc", "all", data_dir=tmp_path)
  (tmp_path / "zinc250k" / "valid_idx_zinc250k.json").mkdir()
  with pytest.raises(IsADirectoryError, match="valid_idx_zinc250k.json is a directory, expected a file of"):
    registry.fetch("zinc250k/valid_idx_zinc250k.json", data_dir=tmp_path)
  with pytest.raises(IsADirectoryError, match="zinc250k is a directory, expected a file of JSON"):
    files.read_json(tmp_path / "zinc250k", "JSON")
  with pytest.raises(FileNotFoundError, match="nope.json does not exist; expected a file of JSON"):
    files.read_json(tmp_path / "nope.json", "JSON")


def test_missing_and_empty_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="gzip text, one SMILES per line") as err:
    molecules.load_smiles("zinc", "all", data_dir=tmp_path, download=False)
  assert "250k_rndm_zinc_drugs_clean.smi.gz" in str(err.value)
  (tmp_path / "zinc250k").mkdir()
  (tmp_path / "zinc250k" / "250k_rndm_zinc_drugs_clean.smi.gz").write_bytes(b"")
  with pytest.raises(registry.ChecksumError, match="is empty; expected 2860728 bytes"):
    molecules.load_smiles("zinc", "all", data_dir=tmp_path, download=False)


def test_zinc12k_and_qm9_targets_bad_rows(stage, tmp_path):
  header = ("split,pos_in_split,jtvae_split_row,smiles,num_heavy_atoms,num_bonds,logP_rdkit,SAS_rdkit,"
            "long_cycle_penalty,penalized_logP_raw,penalized_logP_normalized_est\n")
  rows = ["train,1,0,CCO,3,2,0,0,0,0,1.5", "train,0,0,c1ccccc1,6,6,0,0,0,0,-0.5", "train,2,0,bad smiles,0,0,0,0,0,0,9",
          "val,0,0,CC,2,1,0,0,0,0,0.25"]
  stage("zinc12k/derived/zinc12k_benchmark_derived.csv", (header + "\n".join(rows) + "\n").encode())
  smiles, y, skipped = molecules.load_zinc12k("train", data_dir=tmp_path, return_skipped=True)
  assert smiles == ["c1ccccc1", "CCO"] and y.tolist() == [-0.5, 1.5] and skipped == 1  # pos_in_split order
  with pytest.raises(registry.DataFormatError, match="missing \\['no_such_column'\\]"):
    molecules.load_zinc12k("val", data_dir=tmp_path, target="no_such_column")
  stage("zinc12k/derived/zinc12k_benchmark_derived.csv", (header + "train,0,0,C,1,0,0,0,0,0,oops\n").encode())
  with pytest.raises(registry.DataFormatError, match="'oops'.*is not a number"):
    molecules.load_zinc12k("train", data_dir=tmp_path)
  stage("qm9/mgvae_QM9_smiles/SMILES", b"3\nC\nN\n")
  with pytest.raises(registry.DataFormatError, match="line 1 is '3' but 2 lines follow"):
    molecules.load_qm9_targets(data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline.


def _stacked(m=10, n=5, f=3, e=2):
  """Example i has node features == i + 1 on its first (i % n) + 1 nodes."""
  nodes = np.zeros((m, n, f), np.float32)
  edges = np.zeros((m, n, n, e), np.float32)
  mask = np.zeros((m, n), bool)
  for i in range(m):
    k = i % n + 1
    mask[i, :k] = True
    nodes[i, :k] = i + 1
    edges[i, :k, :k] = i + 1
  return {"nodes": nodes, "edges": edges, "mask": mask}


def _ids(batch: graphs.GraphBatch, graph_mask: np.ndarray) -> list[int]:
  return [int(batch.nodes[b, 0, 0]) - 1 for b in np.flatnonzero(graph_mask)]


def test_batches_cover_each_example_once_with_fixed_shapes():
  data = _stacked()
  out = list(pipeline.batches(data, batch_size=4, seed=1, epoch=0))
  assert len(out) == pipeline.num_batches(10, 4) == 3
  seen = []
  for batch, graph_mask in out:
    assert isinstance(batch, graphs.GraphBatch) and isinstance(batch.nodes, np.ndarray)
    assert batch.nodes.shape == (4, 5, 3) and batch.edges.shape == (4, 5, 5, 2) and batch.mask.shape == (4, 5)
    assert graph_mask.shape == (4,) and graph_mask.dtype == bool and batch.mask.dtype == bool
    seen += _ids(batch, graph_mask)
    for b in np.flatnonzero(graph_mask):  # each real graph arrives intact
      i = int(batch.nodes[b, 0, 0]) - 1
      np.testing.assert_array_equal(batch.mask[b], data["mask"][i])
      np.testing.assert_array_equal(batch.edges[b], data["edges"][i])
  assert sorted(seen) == list(range(10))
  tail, tail_mask = out[-1]
  assert tail_mask.tolist() == [True, True, False, False]
  assert not tail.mask[2:].any() and not tail.nodes[2:].any() and not tail.edges[2:].any()


def test_batches_order_is_a_function_of_seed_and_epoch():
  data = _stacked(m=40)

  def order(seed, epoch):
    return sum((_ids(*b) for b in pipeline.batches(data, 8, seed=seed, epoch=epoch)), [])

  assert order(0, 3) == order(0, 3)
  assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
  assert order(0, 3) == pipeline.epoch_order(40, 0, 3).tolist()  # a resumed run can recompute any epoch alone
  assert sum((_ids(*b) for b in pipeline.batches(data, 8, shuffle=False)), []) == list(range(40))
  # A resumed run starts mid-epoch: `start` skips batches without changing the rest.
  tail = sum((_ids(*b) for b in pipeline.batches(data, 8, seed=0, epoch=3, start=2)), [])
  assert tail == order(0, 3)[16:]
  with pytest.raises(ValueError, match="start must be >= 0"):
    next(pipeline.batches(data, 8, start=-1))


def test_batches_drop_remainder_and_indices():
  data = _stacked(m=10)
  out = list(pipeline.batches(data, 4, seed=0, epoch=0, drop_remainder=True))
  assert len(out) == pipeline.num_batches(10, 4, drop_remainder=True) == 2
  assert all(m.all() for _, m in out)
  ids = pipeline.batch_indices(10, 4, seed=0, epoch=0)
  assert [i.tolist() for i in ids][-1][2:] == [-1, -1]
  assert sorted(np.concatenate(ids)[np.concatenate(ids) >= 0].tolist()) == list(range(10))
  assert pipeline.num_batches(0, 4) == 0 and list(pipeline.batches(_stacked(m=0), 4)) == []


def test_batches_from_per_example_graphs_and_graph_batch():
  rng = np.random.default_rng(0)
  examples = []
  for i, n in enumerate([3, 1, 4, 2, 5]):
    adj = np.triu((rng.random((n, n)) < 0.5).astype(np.float32), 1)
    adj = adj + adj.T
    examples.append({"nodes": np.full((n, 2), i + 1, np.float32), "edges": adj[..., None],
                     "mask": np.ones(n, bool)})
  out = list(pipeline.batches(examples, 2, seed=0, epoch=0, pad_size=6))
  assert len(out) == 3 and all(b.nodes.shape == (2, 6, 2) and b.edges.shape == (2, 6, 6, 1) for b, _ in out)
  seen = []
  for batch, graph_mask in out:
    for b in np.flatnonzero(graph_mask):
      i = int(batch.nodes[b, 0, 0]) - 1
      seen.append(i)
      n = examples[i]["mask"].size
      assert batch.mask[b].sum() == n and not batch.mask[b, n:].any()
      np.testing.assert_array_equal(batch.edges[b, :n, :n], examples[i]["edges"])
  assert sorted(seen) == list(range(5))
  stacked = graphs.from_arrays([e["edges"][..., 0] for e in examples], [e["nodes"] for e in examples])
  out = list(pipeline.batches(stacked, 2, seed=0, epoch=0))
  assert sorted(sum((_ids(*b) for b in out), [])) == list(range(5)) and out[0][0].nodes.shape == (2, 5, 2)


def test_batches_bad_input():
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    list(pipeline.batches(_stacked(), 0))
  bad = _stacked()
  bad["mask"] = bad["mask"][:, :4]
  with pytest.raises(ValueError, match="disagree on M or N"):
    list(pipeline.batches(bad, 2))
  with pytest.raises(ValueError, match="needs keys|missing"):
    list(pipeline.batches({"nodes": bad["nodes"]}, 2))
  with pytest.raises(ValueError, match="more than pad_size=2"):
    list(pipeline.batches([{"nodes": np.ones((3, 1)), "edges": np.zeros((3, 3, 1)), "mask": np.ones(3)}], 1,
                          pad_size=2))
  with pytest.raises(ValueError, match="seed and epoch must be >= 0"):
    pipeline.epoch_order(5, seed=-1, epoch=0)
