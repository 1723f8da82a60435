"""Typed experiment configuration: dataclasses with defaults, YAML files and ``key=value`` overrides.

Every hyper-parameter lives in one of the dataclasses below (or in a task's own config class) with a
default. A YAML file and ``-o section.key=value`` overrides are checked against them: an unknown
key or a value of the wrong type is a :class:`ConfigError` naming the key. Values are parsed as
YAML scalars (``1e-4``, ``true``, ``[1, 2]``), never evaluated as code.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type."""


@dataclass
class TrainConfig:
    """Optimisation and the training loop."""

    seed: int = 1337
    total_steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 32
    """Most utterances in a batch."""
    batch_seconds: float = 200.0
    """Most padded audio seconds in a batch (batch size x longest utterance): bounds memory."""
    grad_clip: float = 1.0
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 20
    num_workers: int = 0
    """DataLoader worker processes (0: load in the main process)."""
    fit_utterances: int = 500
    """Training utterances used to fit an upstream that needs statistics (fbank_global)."""


@dataclass
class FeaturizerConfig:
    """How the upstream's layers are combined (see :class:`upstream.featurizer.Featurizer`)."""

    mode: str = "weighted_sum"
    layer: int = -1
    layer_norm: bool = False


@dataclass
class CacheConfig:
    """The frozen-feature cache (see :mod:`downstream.cache`)."""

    enabled: bool = True
    root: str = "cache/features"
    dtype: str = "float16"


@dataclass
class FinetuneConfig:
    """Fine-tuning the upstream with the head (``run_downstream.py -f``), as wav2vec 2.0 / HuBERT do.

    The upstream is frozen for the first ``freeze_steps`` updates (only the featurizer and head
    learn), then trained with them. Every parameter follows wav2vec 2.0's tri-stage schedule:
    linear warm-up from ``init_lr_scale`` x lr over ``warmup_fraction`` of ``train.total_steps``, hold
    at lr for ``hold_fraction``, exponential decay to ``final_lr_scale`` x lr over the rest. The
    upstream's learning rate is ``upstream_lr_scale`` x that. During training the upstream masks
    its own input where it can (HuBERT: spans with the pre-trained mask embedding, channel bands).
    The feature cache is not used: the upstream changes.
    """

    enabled: bool = False
    freeze_steps: int = 0
    upstream_lr_scale: float = 1.0
    warmup_fraction: float = 0.1
    hold_fraction: float = 0.4
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05
    mask_time_start_prob: float = 0.065
    mask_time_span: int = 10
    mask_channel_prob: float = 0.004
    mask_channel_span: int = 64


def tri_stage_scale(step: int, total: int, cfg: FinetuneConfig) -> float:
    """The learning-rate multiplier of wav2vec 2.0's tri-stage schedule at update ``step`` of ``total``."""
    warmup, hold = int(cfg.warmup_fraction * total), int(cfg.hold_fraction * total)
    decay = max(total - warmup - hold, 1)
    if step < warmup:
        return cfg.init_lr_scale + (1.0 - cfg.init_lr_scale) * step / warmup
    if step < warmup + hold:
        return 1.0
    return cfg.final_lr_scale ** (min(step - warmup - hold, decay) / decay)


@dataclass
class ExperimentConfig:
    """One downstream experiment. ``task`` holds the task's own config dataclass."""

    task: Any
    upstream: dict = field(default_factory=dict)
    """Upstream settings for ``build_upstream`` (e.g. ``preset: tiny`` for a randomly initialised model)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


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
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(cfg, **changes)


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


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a dict (an empty file is an empty dict)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
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
