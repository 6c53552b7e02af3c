"""sha256 of local files, hashed once per file version: digests are cached in a small JSON file.

A cache file (`CACHE_NAME`) maps a file's real path to its size, mtime_ns, ctime_ns and sha256; a lookup whose stat
differs in any of these hashes again. Callers pass the directories to use, in order (the data dir, then a per-user
cache dir): the digest is looked up in each and recorded in the first one that is writable. A directory without any
write permission bit counts as read-only even for root, so a staged read-only data dir is never written to. If no
cache can be read or written the file is simply hashed each time: the cache never makes a check fail.

A file changed (mtime or ctime) less than `_SETTLE_NS` before it is hashed is not recorded: file timestamps are coarse
(a few ms), so a same-size rewrite within the same tick would keep the cached stat while changing the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Sequence, Union

from absl import logging

PathLike = Union[str, os.PathLike]

CACHE_NAME = ".mgvae_sha256_cache.json"
_FORMAT = 1
_CHUNK = 1 << 20
_SETTLE_NS = 2_000_000_000


def sha256_file(path: PathLike) -> str:
  """Hex sha256 of a file, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def _stamp(st: os.stat_result) -> dict:
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _load(cache: pathlib.Path) -> dict:
  """The cache's {real path: record}; {} if it is missing, unreadable or not this format."""
  try:
    data = json.loads(cache.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return {}
  files = data.get("files") if isinstance(data, dict) and data.get("format") == _FORMAT else None
  return files if isinstance(files, dict) else {}


def _writable(directory: pathlib.Path) -> bool:
  try:
    return bool(directory.stat().st_mode & 0o222) and os.access(directory, os.W_OK)
  except OSError:
    return False


def _store(directory: pathlib.Path, key: str, record: dict) -> bool:
  """Add `record` under `key` to `directory`'s cache (atomically: temp file, then rename); False if it cannot."""
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    return False
  if not _writable(directory):
    return False
  cache = directory / CACHE_NAME
  files = {k: v for k, v in _load(cache).items() if os.path.exists(k)}  # drop files that are gone
  files[key] = record
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{CACHE_NAME}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide the verdicts from other users of a shared data dir
      json.dump({"format": _FORMAT, "files": files}, f, indent=0, sort_keys=True)
    os.replace(tmp, cache)
    return True
  except OSError as e:
    logging.debug("cannot write the sha256 cache in %s: %s", directory, e)
    if tmp is not None:
      pathlib.Path(tmp).unlink(missing_ok=True)
    return False


def sha256(path: PathLike, cache_dirs: Sequence[PathLike] = (), refresh: bool = False) -> str:
  """Hex sha256 of `path`, from a cache in `cache_dirs` when one holds it for the file's current stat.

  Args:
    path: the file.
    cache_dirs: directories whose cache files are consulted, in order; the digest is recorded in the first writable
      one (created if missing).
    refresh: hash even if a cache has the digest (and record the result).
  """
  key = os.path.realpath(path)
  before = os.stat(key)
  stamp = _stamp(before)
  dirs = list(dict.fromkeys(pathlib.Path(d) for d in cache_dirs))
  if not refresh:
    for d in dirs:
      record = _load(d / CACHE_NAME).get(key)
      digest = record.get("sha256") if isinstance(record, dict) else None
      if isinstance(digest, str) and record == dict(stamp, sha256=digest):
        return digest
  digest = sha256_file(key)
  settled = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) >= _SETTLE_NS
  if settled and _stamp(os.stat(key)) == stamp:  # unchanged while it was hashed
    record = dict(stamp, sha256=digest)
    for d in dirs:
      if _store(d, key, record):
        break
  return digest
