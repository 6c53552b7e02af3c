"""Periodic progress lines (rate, ETA) and a metrics.jsonl record of every logged step.

Lines go through `print` to `stream` (default stdout), flushed: they show regardless of absl's verbosity flags, are
plain to grep in a job log, and tests can capture them. Warnings and errors stay with absl logging.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, Optional, TextIO

import jax
import numpy as np

_MAIN_TERMS = ("loss", "edge", "edge_type", "node", "kl", "balanced_cut")


def format_duration(seconds: float) -> str:
  """h:mm:ss (hours unbounded); '?' when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  s = int(round(seconds))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def to_json(value: Any) -> Any:
  """Arrays -> (nested) lists of Python scalars; non-finite floats -> None, since JSON has no NaN / Infinity."""
  if isinstance(value, Mapping):
    return {str(k): to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value)
    return to_json(value.tolist()) if value.ndim else to_json(value.item())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  return value


class Progress:
  """`update(step, metrics)` after every train step; logs every `log_every` steps and at `total_steps`.

  Args:
    total_steps: the run's last step (for ETA).
    log_every: steps between lines.
    writer_path: metrics.jsonl to append one JSON object per logged step to (directories created); None: no file.
    stream: where lines are printed.
  """

  def __init__(self, total_steps: int, log_every: int, writer_path: Optional[str] = None,
               stream: Optional[TextIO] = None):
    if log_every < 1:
      raise ValueError(f"Progress: log_every must be >= 1, got {log_every}")
    self.total_steps = int(total_steps)
    self.log_every = int(log_every)
    self.writer_path = writer_path
    self._stream = stream
    self._last_step: Optional[int] = None  # set on the first update: a resumed run's rate starts there
    self._last_time = time.perf_counter()
    if writer_path:
      os.makedirs(os.path.dirname(os.path.abspath(writer_path)), exist_ok=True)

  def update(self, step: int, metrics: Mapping[str, Any]) -> Optional[str]:
    """Log `metrics` of step `step` (1-based, = state.step after it) if due; returns the printed line or None."""
    step = int(step)
    if self._last_step is None:
      self._last_step = step - 1
    if step % self.log_every and step != self.total_steps:
      return None
    now = time.perf_counter()
    # Rate over the last interval only: compile time and earlier slow phases do not skew the ETA for long.
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    record = to_json(jax.device_get(dict(metrics)))
    terms = []
    for name in _MAIN_TERMS:
      if name in record:
        value = record[name]
        terms.append(f"{name}={_fmt(value)}")
    line = (f"step {step}/{self.total_steps} " + " ".join(terms)
            + f" | {rate:.2f} steps/s ETA {format_duration(eta)}")
    print(line, file=self._stream or sys.stdout, flush=True)
    if self.writer_path:
      record = dict(record, step=step, steps_per_second=rate, time=time.time())
      with open(self.writer_path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
    return line


def _fmt(value: Any) -> str:
  if isinstance(value, list):
    return "[" + ",".join(_fmt(v) for v in value) + "]"
  if value is None:
    return "nan"
  return f"{value:.4g}" if isinstance(value, float) else str(value)
