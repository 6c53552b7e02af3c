"""Pictures of a run: loss curves from metrics.jsonl, grids of graphs (matplotlib, headless)."""

from __future__ import annotations

import json
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from mgvae_jax.data import files  # pylint: disable=g-import-not-at-top


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file; a torn last line (a killed writer) is skipped, any other bad line raises."""
  records = []
  lines = files.read_text(path, "JSON lines").splitlines()
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


def _save(fig, path: str) -> None:
  """Write the figure atomically (a temp file, then a rename), so a killed run never leaves a torn PNG."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


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
  _save(fig, path)


def quality_curve(records: Sequence[dict], path: str) -> None:
  """Held-out reconstruction (left axis) and sample FCD (right axis) against step, from the evaluation records
  (eval.jsonl) molgen's quality evaluations write during training (a step seen twice keeps its last record)."""
  by_step = {int(r["step"]): r for r in records}
  steps = sorted(by_step)
  if not steps:
    raise ValueError("quality_curve: no quality records (set quality_every)")
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for key, label in (("exact", "exact reconstruction"), ("exact_corrected", "exact, corrected"),
                     ("bond_auc", "bond AUC"), ("validity_wo_correction", "sample validity w/o correction")):
    pts = [(s, by_step[s].get(key)) for s in steps if by_step[s].get(key) is not None]
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
  ax.set_xlabel("step")
  ax.set_ylabel("held-out fraction / AUC")
  ax.set_ylim(0.0, 1.0)
  ax.grid(alpha=0.3)
  fcd = [(s, by_step[s].get("fcd")) for s in steps if by_step[s].get("fcd") is not None]
  lines, labels = ax.get_legend_handles_labels()
  if fcd:
    ax2 = ax.twinx()
    ax2.plot([p[0] for p in fcd], [p[1] for p in fcd], color="black", linestyle="--", marker="s", label="sample FCD")
    ax2.set_ylabel("FCD (lower is better)")
    more_lines, more_labels = ax2.get_legend_handles_labels()
    lines, labels = lines + more_lines, labels + more_labels
  ax.legend(lines, labels, loc="center right", fontsize=8)
  ax.set_title("What MGVAE has learned")
  _save(fig, path)


def graph_grid(generated: Sequence, training: Sequence, path: str, columns: int = 6, seed: int = 0) -> int:
  """Figures 10-11: rows of generated graphs above rows of training graphs (networkx spring layout). Returns how many
  generated graphs were drawn (at most 2 rows' worth; empty samples are skipped)."""
  import networkx as nx  # pylint: disable=g-import-not-at-top

  gen = [g for g in generated if g.number_of_nodes() > 0][:2 * columns]
  train = list(training)[:2 * columns]
  rows = [("generated", gen[i:i + columns]) for i in range(0, len(gen), columns)]
  rows += [("training", train[i:i + columns]) for i in range(0, len(train), columns)]
  if not rows:
    raise ValueError("graph_grid: nothing to draw (no non-empty generated graphs and no training graphs)")
  fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.3 * len(rows)), squeeze=False)
  for r, (label, row) in enumerate(rows):
    for c in range(columns):
      ax = axes[r][c]
      ax.axis("off")
      if c < len(row):
        g = row[c]
        nx.draw_networkx(g, pos=nx.spring_layout(g, seed=seed), ax=ax, node_size=25, with_labels=False,
                         node_color="tab:red" if label == "generated" else "tab:blue", width=0.6)
        ax.set_title(f"{label}: {g.number_of_nodes()} n, {g.number_of_edges()} e", fontsize=7)
  _save(fig, path)
  return len(gen)


def image_grid(images, path: str, columns: int, title: str = "") -> None:
  """A columns x columns grid of grey images [n >= columns^2, s, s] in [0, 1] (Figures 14-15), as one PNG."""
  images = np.asarray(images)[:columns * columns]
  if images.ndim != 3 or images.shape[0] < columns * columns:
    raise ValueError(f"image_grid: need {columns * columns} images [n, s, s], got shape {images.shape}")
  s = images.shape[-1]
  canvas = np.zeros((columns * (s + 1) - 1, columns * (s + 1) - 1))  # 1-pixel white gutters (0 is white in gray_r)
  for i, img in enumerate(images):
    r, c = divmod(i, columns)
    canvas[r * (s + 1):r * (s + 1) + s, c * (s + 1):c * (s + 1) + s] = img
  fig, ax = plt.subplots(figsize=(4, 4.3))
  ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=9)
  _save(fig, path)


def reconstruction_strip(rows: Sequence, labels: Sequence[str], path: str) -> None:
  """Figure 13: one row per entry of `rows` (each [n, s, s], its own resolution), the same n images in every row."""
  n = len(rows[0])
  fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False)
  for r, (row, label) in enumerate(zip(rows, labels)):
    for c in range(n):
      ax = axes[r][c]
      ax.imshow(np.asarray(row[c]), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(label, fontsize=7)
  _save(fig, path)
