"""Typed configs: YAML and -o overrides are checked against the dataclasses."""
import logging
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, claim_folder, config_file, list_recipes, load_yaml, merge, parse_overrides, to_dict
from downstream.runner import RunSpec, resolve_config


def _cfg(yaml_dict=None, overrides=()):
    return resolve_config(RunSpec("ks", "fbank"), yaml_dict or {}, parse_overrides(list(overrides)))


def test_defaults_yaml_and_overrides_apply_in_order():
    cfg = _cfg({"train": {"lr": 0.001, "total_steps": 5}},
               ["train.total_steps=7", "task.classes=all", "cache.enabled=false"])
    assert cfg.train.lr == 0.001 and cfg.train.total_steps == 7
    assert cfg.task.classes == "all" and cfg.cache.enabled is False
    assert cfg.task.proj_dim == 256 and cfg.train.batch_size == 32  # SUPERB's defaults
    assert isinstance(_cfg(overrides=["train.lr=1"]).train.lr, float)  # an int is a fine float
    assert _cfg(overrides=["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads this as a string


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1e-3", "unknown config key 'train.lrr'"),
    ("task.nope=1", "unknown config key 'task.nope'"),
    ("optimizer.lr=1", "unknown config key 'optimizer'"),
    ("train.total_steps=1.5", "'train.total_steps': expected int"),
    ("train.total_steps=true", "'train.total_steps': expected int"),
    ("cache.enabled=yes please", "'cache.enabled': expected bool"),
    ("train.lr=__import__('os').getcwd()", "'train.lr': expected float"),
    ("train", "not of the form"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _cfg(overrides=[override])


def test_yaml_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  speed: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.speed'"):
        _cfg(load_yaml(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="'train': expected a mapping"):
        merge(_cfg(), {"train": 3})


def test_folder_made_before_a_key_existed_resumes_with_its_default(tmp_path: Path):
    """A run folder whose config.yaml lacks a key added since (here ``featurizer.layers``) is the same run when
    the new config holds that key's default; config.yaml then records the key. Another value is refused."""
    spec = RunSpec("ks", "fbank")
    snapshot = {"run": spec.__dict__, "config": to_dict(_cfg())}
    defaults = {"config": to_dict(_cfg())}
    old = yaml.safe_load(yaml.safe_dump(snapshot))
    del old["config"]["featurizer"]["layers"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r"featurizer.layers: None -> \[\]"):
        claim_folder(tmp_path, snapshot, "experiment 'x'")  # without the defaults: a difference
    claim_folder(tmp_path, snapshot, "experiment 'x'", defaults=defaults)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == snapshot
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    other = {"run": spec.__dict__, "config": to_dict(_cfg(overrides=["featurizer.layers=[0]"]))}
    with pytest.raises(ConfigError, match=r"featurizer.layers: None -> \[0\]"):
        claim_folder(tmp_path, other, "experiment 'x'", defaults=defaults)
    changed = {"run": spec.__dict__, "config": to_dict(_cfg(overrides=["train.lr=0.5"]))}
    with pytest.raises(ConfigError, match="train.lr"):
        claim_folder(tmp_path, changed, "experiment 'x'", defaults=defaults)


def test_cache_layers_is_read_as_featurizer_layers(caplog):
    """The deprecated ``cache.layers`` still works: moved to ``featurizer.layers`` with a warning; both set
    and different is an error naming both."""
    with caplog.at_level(logging.WARNING, logger="downstream"):
        cfg = _cfg(overrides=["cache.layers=[0,-1]"])
    assert cfg.featurizer.layers == [0, -1] and cfg.cache.layers == []
    assert "cache.layers is deprecated" in caplog.text
    assert _cfg(overrides=["featurizer.layers=[0,-1]", "cache.layers=[0,-1]"]).featurizer.layers == [0, -1]
    with pytest.raises(ConfigError, match=r"cache.layers \[1\] and featurizer.layers \[0\] differ"):
        _cfg(overrides=["featurizer.layers=[0]", "cache.layers=[1]"])


def test_recipes_are_found_by_name_from_any_folder(tmp_path: Path, monkeypatch):
    """``-c ks/fsdd``, ``pr/librispeech_mini.yaml`` or a checkout's ``recipes/ks/fsdd.yaml`` from another
    folder: the recipe shipped in the package; anything else is an error listing the recipes."""
    monkeypatch.chdir(tmp_path)
    found = config_file("ks/fsdd")
    assert found.is_file() and found.parts[-3:] == ("recipes", "ks", "fsdd.yaml")
    assert config_file("recipes/ks/fsdd.yaml") == found == config_file("ks/fsdd.yaml")
    assert "pr/librispeech_mini" in list_recipes() and "benchmark/shared" in list_recipes()
    assert load_yaml("pr/librispeech_mini")["task"]["corpus"] == "librispeech"
    with pytest.raises(ConfigError, match=r"not a file, nor a recipe name; recipes: .*ks/fsdd"):
        config_file("ks/no_such_recipe")
    (tmp_path / "mine.yaml").write_text("train: {lr: 0.5}\n")
    assert load_yaml("mine.yaml") == {"train": {"lr": 0.5}}  # a file of that name comes first
