"""Typed configuration: dataclasses with defaults, YAML files and ``key=value`` overrides.

Every hyper-parameter lives in a config dataclass with a default (the training loop's in
:class:`core.training.LoopConfig`, downstream experiments' in :mod:`downstream.config`,
pre-training's in :mod:`upstream.pretrain`, each task's and model's in its own module). A YAML file
and ``-o section.key=value`` overrides are merged into them by :func:`merge`: an unknown key or a
value of the wrong type is a :class:`ConfigError` naming the key. Values are parsed as YAML scalars
(``1e-4``, ``true``, ``[1, 2]``), never evaluated as code. A field typed ``dict`` (free-form model
settings) is updated key by key, so an override adds to the YAML's mapping instead of replacing it.

An experiment folder records its resolved config in ``config.yaml`` (:func:`claim_folder`); the same
name with other settings is an error that lists the differences, never a silent reuse.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import atomic_write_text


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type."""


def to_dict(cfg) -> dict:
    """A plain nested dict (for YAML snapshots and results files)."""
    return dataclasses.asdict(cfg)


def merge(cfg, updates: dict, where: str = ""):
    """Return a copy of dataclass ``cfg`` with ``updates`` (a nested dict) applied and type-checked."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config key '{where or 'config'}': expected a mapping, got {type(updates).__name__}")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; known keys here: {', '.join(sorted(names))}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, path)
        elif hints[key] is dict and isinstance(current, dict) and isinstance(value, dict):
            changes[key] = {**current, **value}
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(cfg, **changes)


def override_items(groups: list[str]) -> list[str]:
    """The ``-o`` arguments of a command as single ``key=value`` items: each argument may join
    several with ``,,`` (a value may itself hold commas, e.g. ``task.demo_sizes=[300, 60, 60]``)."""
    return [item for group in groups for item in group.split(",,") if item]


def parse_overrides(items: list[str]) -> dict:
    """``["train.lr=1e-3", "task.classes=all"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value ({e})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return out


RECIPE_PACKAGE = "recipes"
"""The package whose YAML files are reachable by name (``-c ks/fsdd``), in a checkout or installed."""


def recipe_root() -> Path | None:
    """The folder of the :data:`RECIPE_PACKAGE` (found, not imported), or None when it is not installed."""
    spec = importlib.util.find_spec(RECIPE_PACKAGE)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def list_recipes() -> list[str]:
    """Every recipe name ``load_yaml`` accepts: ``ks/fsdd`` for ``recipes/ks/fsdd.yaml``."""
    root = recipe_root()
    if root is None:
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def config_file(name: str | Path) -> Path:
    """``name`` when it is a file; else the recipe of that name (``ks/fsdd``, ``pr/librispeech_mini.yaml``,
    or as a checkout spells it, ``recipes/ks/fsdd.yaml``: what benchmark presets write, found when installed)."""
    path = Path(name)
    if path.is_file():
        return path
    root = recipe_root()
    if root is not None and not path.is_absolute():
        relative = Path(*path.parts[1:]) if path.parts[:1] == (RECIPE_PACKAGE,) and len(path.parts) > 1 else path
        recipe = root / (relative if relative.suffix == ".yaml" else relative.with_name(relative.name + ".yaml"))
        if recipe.is_file():
            return recipe
    raise ConfigError(f"config file not found: {path} (not a file, nor a recipe name; recipes: "
                      f"{', '.join(list_recipes()) or 'none installed'})")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file, or the recipe of that name (:func:`config_file`), into a dict (an
    empty file is an empty dict)."""
    path = config_file(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _coerce(value, annotation, path: str):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{path}': {value!r} is not {annotation}")
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}': expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is dict:
        if isinstance(value, dict):
            return dict(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise ConfigError(f"config key '{path}': unsupported type {annotation}")
    raise ConfigError(f"config key '{path}': expected {annotation.__name__}, got {value!r} ({type(value).__name__})")


def claim_folder(folder: Path, snapshot: dict, what: str, defaults: dict | None = None) -> None:
    """Make ``folder`` hold an experiment whose resolved config is ``snapshot``: write
    ``config.yaml`` in a new folder, or check that an existing one records the same config.

    ``defaults``, the snapshot of the default config (same nesting), lets a folder made before a
    config key existed resume: a key its ``config.yaml`` lacks is accepted when the new value is that
    key's default, and ``config.yaml`` is rewritten with the key added.

    Raises:
        ConfigError: the folder holds ``what`` (e.g. ``experiment 'ks1'``) with another config; the
            message lists every differing key.
    """
    cfg_file = Path(folder) / "config.yaml"
    if cfg_file.is_file():
        previous = yaml.safe_load(cfg_file.read_text())
        if previous == snapshot:
            return
        differences = config_diff(previous, snapshot, defaults=defaults)
        if differences:
            raise ConfigError(f"{what} already exists in {folder} with a different config; use another name or "
                              f"delete the folder (differences: {'; '.join(differences)})")
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_file, yaml.safe_dump(snapshot, sort_keys=False))


_MISSING = object()


def config_diff(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """``key: old -> new`` for every key (dotted, nested) whose value differs; with ``defaults``, a
    key absent from ``old`` whose new value equals its default there is not a difference."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.", default if isinstance(default, dict) else None)
        elif a is _MISSING and default is not _MISSING and b == default:
            continue
        elif a != b:
            out.append(f"{prefix}{key}: {None if a is _MISSING else a!r} -> {None if b is _MISSING else b!r}")
    return out
