"""Loss curves from a run's metrics.jsonl (matplotlib, headless)."""

from __future__ import annotations

import json
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file; a torn last line (a killed writer) is skipped, any other bad line raises."""
  records = []
  with open(path) as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as exc:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}: line {i + 1} is not JSON ({exc})") from exc
  return records


def _total(value):
  return sum(v for v in value if v is not None) if isinstance(value, list) else value


def loss_curve(records: Sequence[dict], path: str, terms: Sequence[str] = ("loss", "reconstruction", "kl",
                                                                           "balanced_cut")) -> None:
  """Plot each term (summed over levels) against step from training records (those with "step" and "loss").

  A resumed run appends to the same file, so a step seen twice keeps its last record.
  """
  by_step = {}
  for r in records:
    if "step" in r and "loss" in r:
      by_step[int(r["step"])] = r
  steps = sorted(by_step)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for term in terms:
    pts = [(s, _total(by_step[s].get(term))) for s in steps]
    pts = [(s, v) for s, v in pts if v is not None]
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], label=term)
  ax.set_xlabel("step")
  ax.set_ylabel("per-graph value (summed over levels)")
  if steps and all(_total(by_step[s].get("loss")) and _total(by_step[s]["loss"]) > 0 for s in steps):
    ax.set_yscale("log")
  ax.legend()
  ax.grid(alpha=0.3)
  ax.set_title("MGVAE training")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
