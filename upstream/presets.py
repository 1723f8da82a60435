"""One way to build a model from a size preset: :func:`config_from_preset`.

Every model module keeps its presets as data, ``PRESETS: dict[str, dict]`` (preset name -> the config
fields that differ from its config class's defaults), and one builder, ``build_<model>(preset="base",
**settings)``, which turns :func:`config_from_preset`'s config into the upstream (the scheme of
torchaudio's ``hubert_pretrain_model`` and its thin ``hubert_pretrain_base``-style presets).
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from core.config import ConfigError

Config = TypeVar("Config")


def config_from_preset(model: str, config_class: type[Config], presets: dict[str, dict], preset: str,
                       settings: dict[str, Any]) -> Config:
    """``config_class(**{**presets[preset], **settings})``: a preset's fields with ``settings`` on top.

    Args:
        model: the model's name in error messages (``"HuBERT"``).
        config_class: the model's config dataclass; its ``__post_init__`` checks the values.
        presets: preset name -> config fields.
        preset: the preset to start from.
        settings: config fields that override the preset's.

    Raises:
        ConfigError: an unknown preset (the known ones listed) or unknown settings (the valid ones listed).
        ValueError: a value the config class refuses.
    """
    if preset not in presets:
        raise ConfigError(f"unknown {model} preset {preset!r}; known presets: {', '.join(presets)}")
    valid = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise ConfigError(f"unknown {model} setting(s) {', '.join(map(repr, unknown))}; "
                          f"valid settings: {', '.join(sorted(valid))}")
    return config_class(**{**presets[preset], **settings})
