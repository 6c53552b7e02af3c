"""`--set path=value` overrides of frozen config dataclasses, typed by the fields they replace.

  apply(config, ["batch_size=64", "model.mgn.latent_dim=32", "model.kl_weight=(1.0,0.5)"])

A value is parsed as a Python literal (numbers, strings, tuples, None, True/False) and must match the field's current
type (an int field takes an int, a float field an int or float, a tuple field a tuple or list, an Optional field
None); bare words are strings. Unknown fields and type mismatches raise ValueError naming the path and what was
expected, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Sequence


def check_at_least(config: Any, names: Sequence[str], minimum: int) -> None:
  """Raise ValueError naming the first of `names` whose (integer) value in `config` is below `minimum`."""
  for name in names:
    if int(getattr(config, name)) < minimum:
      raise ValueError(f"{name} must be >= {minimum}, got {getattr(config, name)}")


def _parse(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word: a string


def _coerce(path: str, old: Any, new: Any) -> Any:
  if old is None or new is None:
    return new
  if isinstance(old, bool):
    if isinstance(new, bool):
      return new
  elif isinstance(old, int):
    if isinstance(new, int) and not isinstance(new, bool):
      return new
  elif isinstance(old, float):
    if isinstance(new, (int, float)) and not isinstance(new, bool):
      return float(new)
    if isinstance(new, (tuple, list)) and all(isinstance(v, (int, float)) for v in new):
      return tuple(float(v) for v in new)  # per-level weights (fields typed float | tuple)
  elif isinstance(old, str):
    if isinstance(new, str):
      return new
  elif isinstance(old, (tuple, list)):
    if isinstance(new, (tuple, list)):
      return tuple(new)
    if isinstance(new, (int, float)):  # a scalar for a per-level tuple
      return new
  else:
    return new
  raise ValueError(f"override {path}: expected a value like {old!r} ({type(old).__name__}), got {new!r}")


def _replace(obj: Any, names: Sequence[str], value_text: str, path: str) -> Any:
  if not dataclasses.is_dataclass(obj):
    raise ValueError(f"override {path}: {'.'.join(names[:-1]) or 'config'} is not a config section")
  fields = {f.name for f in dataclasses.fields(obj)}
  name = names[0]
  if name not in fields:
    raise ValueError(f"override {path}: unknown field {name!r} of {type(obj).__name__}; fields: {sorted(fields)}")
  old = getattr(obj, name)
  if len(names) == 1:
    if dataclasses.is_dataclass(old):
      raise ValueError(f"override {path}: {name} is a section; set one of its fields ({name}.<field>=...)")
    new = _coerce(path, old, _parse(value_text))
  else:
    new = _replace(old, names[1:], value_text, path)
  return dataclasses.replace(obj, **{name: new})


def apply(config: Any, overrides: Sequence[str]) -> Any:
  """`config` with each "dotted.path=value" of `overrides` applied in order (validation runs in __post_init__)."""
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"override {item!r}: expected path=value, e.g. batch_size=64 or model.mgn.latent_dim=32")
    path, value = item.split("=", 1)
    path = path.strip()
    if not path:
      raise ValueError(f"override {item!r}: empty path")
    config = _replace(config, path.split("."), value.strip(), path)
  return config


def to_dict(config: Any) -> Any:
  """A JSON-ready nested dict of a config dataclass (tuples become lists)."""
  return dataclasses.asdict(config)


def field_defaults(cls: type) -> dict:
  """The default of every field of a config dataclass that has one, nested dataclass defaults as dicts (the form
  of to_dict): what a field means in a run saved before the field existed."""
  out = {}
  for field in dataclasses.fields(cls):
    if field.default is not dataclasses.MISSING:
      value = field.default
    elif field.default_factory is not dataclasses.MISSING:
      value = field.default_factory()
    else:
      continue
    out[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
  return out


def from_dict(cls: type, data: dict) -> Any:
  """Rebuild a (nested) config dataclass from `to_dict` output; unknown keys raise."""
  if not isinstance(data, dict):
    raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
  kwargs = {}
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(data) - set(fields)
  if unknown:
    raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
  for name, value in data.items():
    f = fields[name]
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if dataclasses.is_dataclass(default):
      value = from_dict(type(default), value)
    elif isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    kwargs[name] = value
  return cls(**kwargs)
