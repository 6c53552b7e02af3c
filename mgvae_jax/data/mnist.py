"""MNIST from its IDX files (paper section 5.4): 60,000 training and 10,000 test digits, 28 x 28 uint8.

The four files are registry entries (`mnist/...-idx?-ubyte.gz`, PROVENANCE section 6), fetched into the data dir when
absent. Every header is checked (magic number, dimensions, payload length), so a truncated or foreign file fails
with a message naming it rather than as a reshape error.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Optional

import numpy as np

from mgvae_jax.data import files
from mgvae_jax.data import registry

SPLITS = ("train", "test")
_FILES = {"train": ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"),
          "test": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")}
_MAGIC = {3: 2051, 1: 2049}  # IDX magic of uint8 images ([n, rows, cols]) and labels ([n])


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
  """The uint8 array of a (gzipped or raw) IDX file with `ndim` dimensions (3: images, 1: labels)."""
  files.require_file(path, f"IDX{ndim} uint8 data")
  try:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError on corrupt input
    raise registry.DataFormatError(f"{path}: not a readable IDX file ({type(exc).__name__}: {exc})") from exc
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise registry.DataFormatError(f"{path}: {len(raw)} bytes, shorter than the {header}-byte IDX header")
  magic, = struct.unpack(">i", raw[:4])
  if magic != _MAGIC[ndim]:
    raise registry.DataFormatError(f"{path}: IDX magic {magic}, expected {_MAGIC[ndim]} (uint8, {ndim}-d)")
  shape = struct.unpack(f">{ndim}i", raw[4:header])
  if len(raw) - header != int(np.prod(shape)):
    raise registry.DataFormatError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but the file "
                                   f"holds {len(raw) - header} bytes after it (truncated?)")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def load_mnist(split: str, data_dir: Optional[str | os.PathLike] = None, download: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
  """(images [n, 28, 28] uint8, labels [n] uint8) of the `split` ("train" or "test")."""
  if split not in SPLITS:
    raise ValueError(f"load_mnist: split must be one of {SPLITS}, got {split!r}")
  image_name, label_name = _FILES[split]
  images = read_idx(registry.fetch(image_name, data_dir, download=download), 3)
  labels = read_idx(registry.fetch(label_name, data_dir, download=download), 1)
  if images.shape[0] != labels.shape[0]:
    raise registry.DataFormatError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
  if labels.size and labels.max() > 9:
    raise registry.DataFormatError(f"MNIST {split}: label {int(labels.max())} outside 0..9")
  return images, labels


def pad_images(images: np.ndarray, size: int = 32) -> np.ndarray:
  """uint8 [n, h, w] -> float32 [n, size, size] in [0, 1], zero-padded evenly (28 -> 32: 2 pixels each side)."""
  images = np.asarray(images)
  if images.ndim != 3:
    raise ValueError(f"pad_images: expected images [n, h, w], got shape {images.shape}")
  h, w = images.shape[1:]
  if h > size or w > size:
    raise ValueError(f"pad_images: {h} x {w} images do not fit in {size} x {size}")
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((images.shape[0], size, size), np.float32)
  out[:, top:top + h, left:left + w] = images.astype(np.float32) / 255.0
  return out
