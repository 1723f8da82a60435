"""The one-command benchmark on a tiny config: every stage runs once, a second run trains nothing."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.config import ConfigError
from recipes.benchmark.run import PRESETS, load_benchmark, main


def _config(tmp_path: Path, sc_root: Path) -> Path:
    ks = tmp_path / "ks.yaml"
    ks.write_text(yaml.safe_dump({"task": {"corpus": "speech_commands", "root": str(sc_root), "classes": "all"},
                                  "train": {"total_steps": 20, "eval_every": 10, "save_every": 10, "batch_size": 8,
                                            "lr": 0.01},
                                  "cache": {"root": str(tmp_path / "cache")}}))
    pretrain = ["upstream.hidden_size=32", "upstream.num_layers=2", "train.total_steps=4", "train.eval_every=2",
                "train.save_every=2", "train.batch_size=8", "train.batch_seconds=8.0", "train.valid_fraction=0.15"]
    bench = {"pretrain": {"data": [str(sc_root)],
                          "upstreams": {"apc_small": {"upstream": "apc",
                                                      "overrides": ["upstream.preset=tiny", *pretrain]}}},
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
    scores = board.set_index("upstream")
    if scores.loc["fbank", "ks accuracy"] < scores["ks accuracy"].max():
        assert scores.loc["fbank", "ks score"] == 0  # the baseline; the board's best is the reference
    else:  # FBANK is the board's best: reference = baseline, the track is not scored
        assert scores["ks score"].isna().all()
    assert board.set_index("upstream").loc["apc:apc_small", "pretrain_hours"] > 0
    assert (expdir / "report.html").is_file() and "apc:apc_small" in capsys.readouterr().out

    assert main(["--data", str(config), "--expdir", str(expdir)]) == 0
    second = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    trained = [stage for stage, row in second.iterrows()
               if row["status"] == "ran" and not stage.startswith(("corpus", "leaderboard"))]
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
    bad.write_text(yaml.safe_dump({"upstreams": ["fbank", "wav2vec9"],
                                   "tasks": {"ks": {"task": "ks", "config": "x.yaml"}}}))
    with pytest.raises(ConfigError, match="wav2vec9"):
        load_benchmark(bad)
    bad.write_text(yaml.safe_dump({"upstreams": ["fbank"],
                                   "tasks": {"ks": {"task": "ks", "config": "x.yaml", "lr": 1}}}))
    with pytest.raises(ConfigError, match="tasks.ks"):
        load_benchmark(bad)
    for task, message in (({"task": "asr", "config": "x.yaml", "folds": 3}, "only ks, pr, er re-split"),
                          ({"task": "ks", "config": "x.yaml", "lrs": [0.1, -1]}, "lrs must be positive")):
        bad.write_text(yaml.safe_dump({"upstreams": ["fbank"], "tasks": {"t": task}}))
        with pytest.raises(ConfigError, match=message):
            load_benchmark(bad)
    bad.write_text(yaml.safe_dump({"upstreams": ["fbank", "random:apc_x"],
                                   "tasks": {"ks": {"task": "ks", "config": "x.yaml"}}}))
    with pytest.raises(ConfigError, match="random:apc_x"):
        load_benchmark(bad)
    assert main(["--data", str(_config(tmp_path, sc_root)), "--tasks", "asr"]) == 2


def test_a_checkpoint_of_an_unfinished_pretraining_run_is_refused(tmp_path: Path, sc_root: Path, capsys):
    """upstream.pt of a pre-training folder without summary.json is rewritten at every save; results
    trained on it would be reused after it changed, so the benchmark refuses it, naming the key."""
    run = tmp_path / "pretrain" / "apc_running"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "upstream.pt").write_bytes(b"")
    config = _config(tmp_path, sc_root)
    bench = yaml.safe_load(config.read_text())
    bench["pretrain"]["upstreams"]["apc_small"] = {"upstream": "apc", "checkpoint": str(run / "upstream.pt")}
    config.write_text(yaml.safe_dump(bench))
    assert main(["--data", str(config), "--expdir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pretrain.upstreams.apc_small.checkpoint" in err and "has not finished" in err
    assert not (tmp_path / "out" / "downstream").exists()  # refused before any experiment folder is made


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid(preset: str):
    bench = load_benchmark(PRESETS[preset])
    assert "fbank" in bench.upstreams and set(bench.tasks) >= {"ks", "pr", "asr_10min", "st"}
    pretrained = [u for u in bench.upstreams if u in bench.pretrain]
    assert pretrained and all(f"random:{u}" in bench.upstreams for u in pretrained)  # every pre-trained model's twin
    for job in bench.tasks.values():
        assert Path(job.config).is_file(), job.config
    for job in bench.pretrain.values():
        assert not job.config or Path(job.config).is_file(), job.config


def test_learning_rate_grid_and_random_twin(sc_root: Path, tmp_path: Path):
    """Every upstream trains once per rate (here in two worker processes); the leaderboard keeps each
    upstream's best dev rate; the twin ``random:apc_small`` has the pre-trained model's settings and
    random weights; a grid that grows trains only the new rate."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    bench = yaml.safe_load(config.read_text())
    bench["upstreams"].append("random:apc_small")
    bench["tasks"]["ks"]["lrs"] = [0.001, 0.05]
    config.write_text(yaml.safe_dump(bench))
    assert main(["--data", str(config), "--expdir", str(expdir), "--jobs", "2"]) == 0  # two worker processes
    runs = pd.read_csv(expdir / "runs.csv")
    assert sorted(runs["experiment"].unique()) == sorted(f"ks-{u}-seed1337-lr{lr}"
                                                         for u in ("fbank", "apc_small", "random-apc_small")
                                                         for lr in ("0.001", "0.05"))
    twin = yaml.safe_load((expdir / "downstream/ks-random-apc_small-seed1337-lr0.05/config.yaml").read_text())
    assert twin["run"]["upstream_ckpt"] is None and twin["config"]["upstream"]["hidden_size"] == 32
    board = pd.read_csv(expdir / "leaderboard.csv").set_index("upstream")
    assert set(board.index) == {"fbank", "apc:apc_small", "apc:random"}
    dev = runs[runs["split"] == "dev"].groupby(["upstream", "learning_rate"])["value"].mean()
    for upstream in board.index:
        assert board.loc[upstream, "ks lr"] == dev[upstream].idxmax()  # the best dev accuracy's rate
    kept = runs[runs["selected"] & (runs["split"] == "test")]
    assert len(kept) == 3 and set(kept["learning_rate"]) <= {0.001, 0.05}

    bench["tasks"]["ks"]["lrs"] = [0.001, 0.05, 0.01]
    config.write_text(yaml.safe_dump(bench))
    assert main(["--data", str(config), "--expdir", str(expdir)]) == 0
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t")
    trained = timing[(timing["status"] == "ran") & timing["stage"].str.startswith("ks ")]["stage"]
    assert sorted(trained) == sorted(f"ks {u} seed 1337 lr0.01" for u in ("fbank", "apc_small", "random:apc_small"))


def test_a_failing_run_in_a_worker_process_stops_the_benchmark_with_its_error(sc_root: Path, tmp_path: Path, capsys):
    config = _config(tmp_path, sc_root)
    bench = yaml.safe_load(config.read_text())
    bench["upstreams"] = ["fbank"]
    bench["tasks"]["ks"]["overrides"] = [f"task.root={tmp_path / 'no_such_corpus'}"]
    config.write_text(yaml.safe_dump(bench))
    assert main(["--data", str(config), "--expdir", str(tmp_path / "out"), "--jobs", "2"]) == 2
    assert "no_such_corpus" in capsys.readouterr().err
    assert not list((tmp_path / "out" / "downstream").glob("*/results.json"))


def test_huggingface_recipe_is_valid():
    """The published-encoder recipe loads; its checkpoints are model ids the hf upstream resolves itself."""
    bench = load_benchmark(Path("recipes/benchmark/huggingface.yaml"))
    assert {job.upstream for job in bench.pretrain.values()} == {"hf"}
    assert all(not Path(job.checkpoint).exists() and "/" in job.checkpoint for job in bench.pretrain.values())
    assert any(u.startswith("random:") for u in bench.upstreams)
    for job in bench.tasks.values():
        assert Path(job.config).is_file(), job.config
