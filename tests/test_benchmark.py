"""The one-command benchmark on a tiny config: every stage runs once, a second run trains nothing."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from downstream.config import ConfigError
from recipes.benchmark.run import PRESETS, load_benchmark, main


def _config(tmp_path: Path, sc_root: Path) -> Path:
    ks = tmp_path / "ks.yaml"
    ks.write_text(yaml.safe_dump({"task": {"corpus": "speech_commands", "root": str(sc_root), "classes": "all"},
                                  "train": {"total_steps": 20, "eval_every": 10, "save_every": 10, "batch_size": 8, "lr": 0.01},
                                  "cache": {"root": str(tmp_path / "cache")}}))
    pretrain = ["upstream.hidden_size=32", "upstream.num_layers=2", "train.total_steps=4", "train.eval_every=2",
                "train.save_every=2", "train.batch_size=8", "train.batch_seconds=8.0", "train.valid_fraction=0.15"]
    bench = {"pretrain": {"data": [str(sc_root)],
                          "upstreams": {"apc_small": {"upstream": "apc", "overrides": ["upstream.preset=tiny", *pretrain]}}},
             "upstreams": ["fbank", "apc_small"],
             "tasks": {"ks": {"task": "ks", "config": str(ks)}}, "seeds": 1}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def test_benchmark_runs_every_stage_then_reuses_everything(sc_root: Path, tmp_path: Path, capsys):
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    assert main(["--data", str(config), "--expdir", str(expdir)]) == 0
    first = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert first.loc["pretrain apc_small", "status"] == "ran"
    assert first.loc["ks fbank seed 1337", "status"] == first.loc["ks apc_small seed 1337", "status"] == "ran"
    board = pd.read_csv(expdir / "leaderboard.csv")
    assert set(board["upstream"]) == {"fbank", "apc:apc_small"}
    assert board.set_index("upstream").loc["fbank", "ks score"] == 0  # the baseline
    assert board.set_index("upstream").loc["apc:apc_small", "pretrain_hours"] > 0
    assert (expdir / "report.html").is_file() and "apc:apc_small" in capsys.readouterr().out

    assert main(["--data", str(config), "--expdir", str(expdir)]) == 0
    second = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    trained = [stage for stage, row in second.iterrows() if row["status"] == "ran" and not stage.startswith(("corpus", "leaderboard"))]
    assert trained == []  # the second run trains nothing

    # A changed benchmark config never reuses an experiment trained under the old one.
    changed = yaml.safe_load(config.read_text())
    changed["tasks"]["ks"]["overrides"] = ["train.total_steps=30"]
    config.write_text(yaml.safe_dump(changed))
    assert main(["--data", str(config), "--expdir", str(expdir)]) == 2
    err = capsys.readouterr().err
    assert "experiment 'ks-fbank-seed1337' already exists" in err and "total_steps: 20 -> 30" in err


def test_bad_benchmark_configs_name_the_key(tmp_path: Path, sc_root: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"upstreams": ["fbank", "wav2vec9"], "tasks": {"ks": {"task": "ks", "config": "x.yaml"}}}))
    with pytest.raises(ConfigError, match="wav2vec9"):
        load_benchmark(bad)
    bad.write_text(yaml.safe_dump({"upstreams": ["fbank"], "tasks": {"ks": {"task": "ks", "config": "x.yaml", "lr": 1}}}))
    with pytest.raises(ConfigError, match="tasks.ks"):
        load_benchmark(bad)
    assert main(["--data", str(_config(tmp_path, sc_root)), "--tasks", "asr"]) == 2


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid(preset: str):
    bench = load_benchmark(PRESETS[preset])
    assert "fbank" in bench.upstreams and set(bench.tasks) >= {"ks", "asr_10min", "st"}
    for job in bench.tasks.values():
        assert Path(job.config).is_file(), job.config
    for job in bench.pretrain.values():
        assert not job.config or Path(job.config).is_file(), job.config
