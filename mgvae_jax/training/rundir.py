"""A run directory is never clobbered: its config is checked before anything is written, and files land atomically.

  rundir.claim(workdir, config_dict)   # before any other write: refuses a different config, touching no file
  rundir.finished_report(workdir)      # metrics.json of a finished run (a rerun returns it instead of redoing it)
  rundir.write_json(path, value)       # write beside, then rename: a reader never sees half a file

Fields that only steer a run and do not change what it computes (fault injection) are left out of the comparison.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import jax

from mgvae_jax.data import files

CONFIG = "config.json"
REPORT = "metrics.json"
# Dotted config paths that do not change a run's results: a rerun may differ in them.
RUN_CONTROL = ("train.kill_at_step",)


class ConfigMismatchError(ValueError):
  """The workdir holds a run of another config."""


def write_json(path: str, value: Any, lines: bool = False) -> None:
  """Atomically (write beside, then rename) `value` as indented JSON, or with `lines` one JSON line per element."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    if lines:
      f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in value)
    else:
      json.dump(value, f, indent=2, allow_nan=False)
  os.replace(tmp, path)


def differences(old: Any, new: Any, prefix: str = "", defaults: Any = None) -> list[tuple[str, Any, Any]]:
  """(dotted path, old value, new value) of every leaf where two JSON-like trees differ, sorted by path.

  defaults: a tree of the fields' default values: a key `old` lacks (a run made before the field existed) is no
  difference when `new` gives it that default.
  """
  if isinstance(old, dict) and isinstance(new, dict):
    defaults = defaults if isinstance(defaults, dict) else {}
    out = []
    for key in sorted(set(old) | set(new)):
      path = f"{prefix}.{key}" if prefix else str(key)
      if key not in old:
        if key not in defaults or defaults[key] != new[key]:  # both JSON-normalised (claim)
          out.append((path, "<absent>", new[key]))
      elif key not in new:
        out.append((path, old[key], "<absent>"))
      else:
        out.extend(differences(old[key], new[key], path, defaults.get(key)))
    return out
  return [] if old == new else [(prefix or "config", old, new)]


def claim(workdir: str, config: dict, ignore: Sequence[str] = RUN_CONTROL, defaults: Optional[dict] = None) -> bool:
  """Make `workdir` this run's: write config.json if there is none (True), or check that the one there is this
  config (False). A different config raises ConfigMismatchError naming the differing fields, with no file written
  or changed; an unreadable config.json raises too (it cannot be checked, so it is not overwritten).

  config: the run's config as JSON-ready nested dicts (overrides.to_dict); `ignore`: dotted paths left out;
  `defaults`: the config's field defaults in the same form (overrides.field_defaults): a field added after the run
  was made matches when this config leaves it at its default, so a new option does not lock out older runs.
  """
  path = os.path.join(workdir, CONFIG)
  new = json.loads(json.dumps(config))  # tuples as lists, as the file holds them
  if os.path.isdir(path):
    raise ConfigMismatchError(f"{path} is a directory, not a config file")
  if os.path.exists(path):
    try:
      old = files.read_json(path, "run config JSON")
    except (OSError, ValueError) as exc:
      raise ConfigMismatchError(
          f"{path} cannot be read ({type(exc).__name__}: {exc}), so the run in {workdir} cannot be checked against "
          f"this config; nothing was changed. Use another --workdir, or repair or remove that file.") from exc
    defaults = None if defaults is None else json.loads(json.dumps(defaults))
    diff = [d for d in differences(old, new, defaults=defaults) if d[0] not in ignore]
    if diff:
      shown = "\n".join(f"  {p}: {_short(o)} in the run, {_short(n)} now" for p, o, n in diff[:20])
      more = f"\n  ... and {len(diff) - 20} more" if len(diff) > 20 else ""
      raise ConfigMismatchError(
          f"{workdir} holds a run of another config; nothing was changed. {len(diff)} field(s) differ:\n{shown}{more}\n"
          f"Use another --workdir for this config (a molgen run can be sampled and evaluated again with other "
          f"settings by `python -m experiments.sample --workdir={workdir}`, which writes beside its results).")
    return False
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_json(path, config)
  return True


def finished_report(workdir: str) -> Optional[dict]:
  """The run's metrics.json (written last, atomically) if it has one: the run is finished. None otherwise."""
  path = os.path.join(workdir, REPORT)
  if not os.path.isfile(path):
    return None
  return files.read_json(path, "run metrics JSON")


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) or value != "<absent>" else value
  return text if len(text) <= 60 else text[:57] + "..."
