"""Size presets: one scheme for every model; unknown presets and settings are ConfigErrors naming them."""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

import pytest

from core.config import ConfigError
from upstream.presets import config_from_preset
from upstream.registry import available_upstreams, build_upstream


def _preset_modules() -> dict[str, object]:
    """Registered upstream name -> its model module ``upstream.<name>.model``, for those that define ``PRESETS``
    (the ``hf`` upstream's named configs live in ``upstream.hf.load``: not size presets)."""
    found = {}
    for name in available_upstreams():
        if importlib.util.find_spec(f"upstream.{name}") is not None:
            module = importlib.import_module(f"upstream.{name}.model")
            if hasattr(module, "PRESETS"):
                found[name] = module
    return found


PRESET_MODULES = _preset_modules()


def test_every_model_with_presets_is_found():
    assert {"apc", "mockingjay", "hubert", "bestrq", "wav2vec2"} <= set(PRESET_MODULES)


@pytest.mark.parametrize("name", sorted(PRESET_MODULES))
def test_unknown_preset_and_setting_are_config_errors(name: str):
    presets = PRESET_MODULES[name].PRESETS
    assert {"tiny", "base", "large"} <= set(presets) and all(isinstance(p, dict) for p in presets.values())
    with pytest.raises(ConfigError, match=r"preset 'huge'; known presets: tiny, base, large"):
        build_upstream(name, preset="huge")
    with pytest.raises(ConfigError, match=r"setting\(s\) 'no_such_setting'; valid settings: \w"):
        build_upstream(name, preset="tiny", no_such_setting=1)


@dataclass
class _Config:
    size: int = 1
    depth: int = 2

    def __post_init__(self):
        if self.size < 1:
            raise ValueError("size must be >= 1")


def test_config_from_preset():
    presets = {"small": {"size": 2}, "big": {"size": 8, "depth": 4}}
    assert config_from_preset("Toy", _Config, presets, "small", {}) == _Config(size=2, depth=2)
    assert config_from_preset("Toy", _Config, presets, "big", {"depth": 1}) == _Config(size=8, depth=1)
    with pytest.raises(ConfigError, match="unknown Toy preset 'huge'; known presets: small, big"):
        config_from_preset("Toy", _Config, presets, "huge", {})
    with pytest.raises(ConfigError, match="unknown Toy setting\\(s\\) 'a', 'b'; valid settings: depth, size"):
        config_from_preset("Toy", _Config, presets, "small", {"b": 1, "a": 2, "size": 3})
    with pytest.raises(ValueError, match="size must be") as info:
        config_from_preset("Toy", _Config, presets, "small", {"size": 0})
    assert not isinstance(info.value, ConfigError)  # values are the config class's to check
