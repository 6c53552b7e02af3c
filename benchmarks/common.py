"""What every benchmark shares: timing jitted calls, and the JSON report (printed and written)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax


def time_calls(fn: Callable[..., Any], *args, repeats: int, warmup: int = 1) -> list[float]:
  """Wall-clock seconds of `repeats` calls, after one compiling call and `warmup` untimed ones."""
  jax.block_until_ready(fn(*args))
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return times


def median_time(fn: Callable[..., Any], *args, repeats: int, warmup: int = 1) -> float:
  return statistics.median(time_calls(fn, *args, repeats=repeats, warmup=warmup))


def cpu_model() -> str:
  """The CPU's model name (Linux), or the platform's processor string: the machines are shared and change."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def report(name: str, results: list[dict], out_path: str) -> dict:
  """Print the results as JSON (with the command and machine) and write them to out_path unless it is ''."""
  payload = {
      "benchmark": name, "command": " ".join([f"python -m benchmarks.{name}"] + sys.argv[1:]),
      "jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
      "cpu_count": os.cpu_count(), "machine": platform.machine(), "cpu_model": cpu_model(), "results": results,
  }
  text = json.dumps(payload, indent=1)
  print(text)
  if out_path:
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
      f.write(text + "\n")
  return payload
