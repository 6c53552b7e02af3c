"""Opening input files: a missing path, a directory or undecodable bytes fail with a message that names the file.

Every text input (data files, SMILES files, samples, configs, results) is read through `read_text`, which decodes
strictly and reports the byte offset (and line) of the first invalid byte. Binary readers (pickles, IDX, npz) call
`require_file` first, so that a missing path or a directory is called what it is.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
from typing import Any, Union
import zlib

PathLike = Union[str, os.PathLike]


class DataFormatError(ValueError):
  """A file exists but does not parse as the format it should hold."""


def _name(path: PathLike, role: str) -> str:
  return f"{role} {path}" if role else str(path)


def require_file(path: PathLike, what: str, role: str = "") -> pathlib.Path:
  """`path` as a Path if it is a regular file (or a link to one).

  `what` is what the file should hold ("one SMILES per line"); `role`, if given, starts the messages ("train_file").

  Raises:
    FileNotFoundError: nothing is there (or a dangling link).
    IsADirectoryError: it is a directory.
    DataFormatError: something else (a fifo, a device).
  """
  path = pathlib.Path(path)
  name = _name(path, role)
  if path.is_dir():
    raise IsADirectoryError(f"{name} is a directory, expected a file of {what}")
  if not path.exists():
    raise FileNotFoundError(f"{name} does not exist; expected a file of {what}")
  if not path.is_file():
    raise DataFormatError(f"{name} is not a regular file, expected a file of {what}")
  return path


def decode(data: bytes, path: PathLike, what: str, encoding: str = "utf-8", gunzipped: bool = False,
           role: str = "") -> str:
  """`data` (the bytes of `path`) decoded strictly; the error gives the offset and line of the first bad byte."""
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    where = f"byte offset {e.start}{' of the decompressed text' if gunzipped else ''} (line {line})"
    raise DataFormatError(f"{_name(path, role)}: not {encoding} text: the byte 0x{data[e.start]:02x} at {where} is "
                          f"invalid ({e.reason}); expected {what}") from None


def read_text(path: PathLike, what: str, encoding: str = "utf-8", role: str = "") -> str:
  """The decoded text of a file; a name ending in .gz is gunzipped first. Line endings are left as they are.

  Raises:
    FileNotFoundError / IsADirectoryError: see `require_file`.
    DataFormatError naming the file and `what` it should hold: a .gz that does not decompress, or bytes that are not
      `encoding` (with the byte offset of the first invalid one).
  """
  path = require_file(path, what, role)
  data = path.read_bytes()
  gunzip = path.suffix == ".gz"
  if gunzip:
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
      raise DataFormatError(f"{_name(path, role)}: cannot read as {what}: not a complete gzip stream ({e})") from None
  return decode(data, path, what, encoding, gunzipped=gunzip, role=role)


def read_json(path: PathLike, what: str, role: str = "") -> Any:
  """The parsed JSON of a UTF-8 file; errors as `read_text`'s, and DataFormatError for text that is not JSON."""
  text = read_text(path, what, role=role)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{_name(path, role)}: cannot parse as {what}: {e}") from None
