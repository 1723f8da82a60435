"""The one-command benchmark on a tiny config: every stage runs once, a second run trains nothing;
a training-free QbE track; the jobs through submitit (Slurm's script, local subprocesses)."""
import contextlib
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import submitit
import torch
import yaml

from core import launcher
from core.config import ConfigError
from core.launcher import (
    Job,
    JobsFailed,
    LauncherConfig,
    SubmititTask,
    sbatch_script,
    slurm_parameters,
    submissions,
    submit_command,
)
from recipes.benchmark.run import PRESETS, expected_runs, load_benchmark, main

from .test_qbe import _tone_corpus


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


# ---------------------------------------------------------------- a training-free track: QbE


def _qbe_config(tmp_path: Path) -> Path:
    """A QbE track config on the tone corpus of tests/test_qbe.py (LibriSpeech layout, phone alignments)."""
    corpus = tmp_path / "tones"
    _tone_corpus(corpus, np.random.default_rng(0))
    path = tmp_path / "qbe.yaml"
    path.write_text(yaml.safe_dump({"root": str(corpus), "alignments": str(corpus / "phones.tsv"),
                                    "lexicon": str(corpus / "lexicon.txt"), "cache_root": str(tmp_path / "cache"),
                                    "precision_k": 2}))
    return path


def test_a_training_free_qbe_track(sc_root: Path, tmp_path: Path, capsys):
    """A qbe track builds no corpus and trains nothing: one search per upstream × seed, a leaderboard
    column of its own; the random twin gets its sibling's settings through ``upstream``; ``-o`` keys
    of the downstream sections pass it by; a changed QbE config is refused before anything runs."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    bench = yaml.safe_load(config.read_text())
    bench["upstreams"] = ["fbank", "random:apc_small"]
    bench["tasks"] = {"qbe": {"task": "qbe", "config": str(_qbe_config(tmp_path))}}
    config.write_text(yaml.safe_dump(bench))
    argv = ["--data", str(config), "--expdir", str(expdir), "-o", "train.total_steps=30"]
    assert main(argv) == 0
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert not any(stage.startswith("corpus") for stage in timing.index)
    assert set(timing.loc[["qbe fbank seed 1337", "qbe random:apc_small seed 1337"], "status"]) == {"ran"}
    board = pd.read_csv(expdir / "leaderboard.csv").set_index("upstream")
    assert set(board.index) == {"fbank", "apc:random"} and board.loc["fbank", "qbe mtwv"] > 0.9
    twin = yaml.safe_load((expdir / "downstream/qbe-random-apc_small-seed1337/config.yaml").read_text())
    assert twin["run"] == {"task": "qbe", "upstream": "apc", "upstream_ckpt": None}
    assert twin["config"]["upstream"]["hidden_size"] == 32 and twin["config"]["seed"] == 1337

    assert main(argv) == 0  # nothing runs twice
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert set(timing.loc[[s for s in timing.index if s.startswith("qbe")], "status"]) == {"reused"}
    (expdir / "downstream/qbe-fbank-seed1337/results.json").unlink()  # --collect: the board so far, what is missing
    capsys.readouterr()
    assert main([*argv, "--collect"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 runs have no results.json yet" in out and "qbe fbank seed 1337" in out and "| apc:random" in out
    assert main(argv) == 0  # the search again: the same config, nothing else reruns

    bench["tasks"]["qbe"]["overrides"] = ["precision_k=3"]
    config.write_text(yaml.safe_dump(bench))
    assert main(argv) == 2
    assert "QbE run 'qbe-fbank-seed1337' already exists" in capsys.readouterr().err
    for bad in ({"lrs": [0.1]}, {"folds": 2}):
        bench["tasks"]["qbe"] = {"task": "qbe", "config": "q.yaml", **bad}
        config.write_text(yaml.safe_dump(bench))
        with pytest.raises(ConfigError, match="tasks.qbe: qbe is training-free"):
            load_benchmark(config)


def test_a_qbe_track_aligns_its_queries_with_a_probe_the_benchmark_trains(sc_root: Path, tmp_path: Path, capsys):
    """``align:`` on a qbe track: the benchmark trains the PR probe once, aligns the query split with it and
    gives every QbE run that file; a second run reuses both; misplaced or conflicting entries are refused."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    qbe = _qbe_config(tmp_path)
    settings = yaml.safe_load(qbe.read_text())
    corpus = settings["root"]
    del settings["alignments"], settings["lexicon"]  # the probe's phones are the CMU dictionary's, as PR's
    qbe.write_text(yaml.safe_dump(settings))
    pr = tmp_path / "pr.yaml"  # the probe trains on the documents' split and aligns the queries' (dev-clean)
    pr.write_text(yaml.safe_dump({"task": {"corpus": "librispeech", "root": corpus, "train_set": "test-clean",
                                           "dev_set": "dev-clean", "test_set": "dev-clean"},
                                  "train": {"total_steps": 10, "eval_every": 5, "save_every": 5, "lr": 0.01},
                                  "cache": {"root": str(tmp_path / "cache")}}))
    bench = yaml.safe_load(config.read_text())
    bench["upstreams"] = ["fbank"]
    bench["tasks"] = {"qbe": {"task": "qbe", "config": str(qbe), "align": {"config": str(pr)}}}
    config.write_text(yaml.safe_dump(bench))
    argv = ["--data", str(config), "--expdir", str(expdir)]
    assert main(argv) == 0
    probe = expdir / "align" / "qbe_align-fbank-seed1337"
    assert json.loads((probe / "results.json").read_text())["task"] == "pr"
    alignments = pd.read_csv(probe / "alignments-dev.tsv", sep="\t")
    assert list(alignments.columns) == ["id", "start", "end", "phone"]
    assert set(alignments["id"]) == {"10-1-0000", "10-1-0001"}  # the query split's utterances, every one
    run = yaml.safe_load((expdir / "downstream/qbe-fbank-seed1337/config.yaml").read_text())
    assert run["config"]["alignments"] == str((probe / "alignments-dev.tsv").resolve())
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert timing.loc["align qbe: train qbe_align-fbank-seed1337", "status"] == "ran"
    assert main(argv) == 0  # the probe, its alignments and the search: all reused
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert set(timing.loc[[s for s in timing.index if s.startswith(("align", "qbe"))], "status"]) == {"reused"}
    assert "aligner dev PER" in capsys.readouterr().out

    for bad, message in (({"task": "ks", "config": str(pr), "align": {"config": str(pr)}}, "only a qbe track"),
                         ({"task": "qbe", "config": str(_qbe_config(tmp_path / "named")), "align": {"config": str(pr)}},
                          "already names alignments"),
                         ({"task": "qbe", "config": str(qbe), "align": {"config": str(pr), "upstream": "hubert_x"}},
                          "neither a baseline"),
                         ({"task": "qbe", "config": str(qbe), "align": {"config": str(pr), "lr": 1}},
                          r"tasks.qbe.align: expected keys"),
                         ({"task": "qbe", "config": str(qbe), "overrides": ["corpus=quesst14"],
                           "align": {"config": str(pr)}}, "brings its own queries"),
                         ({"task": "qbe", "config": str(qbe), "align": {"config": str(pr), "split": "valid"}},
                          r"tasks.qbe.align.split: 'valid'"),
                         ({"task": "qbe", "config": str(qbe), "align": {"config": "pr/no_such_recipe"}},
                          "no_such_recipe")):
        bench["tasks"] = {"qbe": bad}
        config.write_text(yaml.safe_dump(bench))
        with pytest.raises(ConfigError, match=message):
            load_benchmark(config)


def test_a_track_sets_its_own_seeds(sc_root: Path, tmp_path: Path, capsys):
    """``seeds`` on a track: that track's runs take it, the others the benchmark's; ``--seeds`` sets every
    track's (shown by --collect's list of missing runs); a bad value names the track."""
    config = _config(tmp_path, sc_root)
    bench = yaml.safe_load(config.read_text())
    bench["tasks"]["ks3"] = {**bench["tasks"]["ks"], "seeds": 3}
    config.write_text(yaml.safe_dump(bench))
    loaded = load_benchmark(config)
    names = [name for _, name in expected_runs(loaded, ["ks", "ks3"], ["fbank"])]
    assert names == ["ks-fbank-seed1337", "ks3-fbank-seed1337", "ks3-fbank-seed1338", "ks3-fbank-seed1339"]
    argv = ["--data", str(config), "--expdir", str(tmp_path / "out"), "--upstreams", "fbank", "--collect"]
    assert main(argv) == 0 and "4 of 4 runs have no results.json yet" in capsys.readouterr().out
    assert main([*argv, "--seeds", "2"]) == 0 and "4 of 4 runs have no results.json yet" in capsys.readouterr().out
    assert main([*argv, "--seeds", "1"]) == 0 and "2 of 2 runs have no results.json yet" in capsys.readouterr().out
    bench["tasks"]["ks3"]["seeds"] = -1
    config.write_text(yaml.safe_dump(bench))
    with pytest.raises(ConfigError, match="tasks.ks3.seeds must be a whole number"):
        load_benchmark(config)


# ---------------------------------------------------------------- through submitit: Slurm and its local stand-in


def test_slurm_dry_run_prints_the_sbatch_script(sc_root: Path, tmp_path: Path, capsys, monkeypatch):
    """``--launcher slurm --dry-run`` needs no cluster: the first job's script (the YAML's launcher
    section, the flags on top) and every job with its dependencies; nothing is written or submitted."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    bench = yaml.safe_load(config.read_text())
    bench["launcher"] = {"partition": "cpu", "time": 90, "cpus_per_task": 4, "mem_gb": 16,
                         "additional_parameters": {"account": "speech_lab"}}
    config.write_text(yaml.safe_dump(bench))
    argv = ["--data", str(config), "--expdir", str(expdir), "--launcher", "slurm"]
    assert main([*argv, "--dry-run", "--partition", "gpu", "--gpus-per-node", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --account=speech_lab",
                 "#SBATCH --signal=USR2@90", "#SBATCH --job-name=out-pretrain-apc_small", "-m submitit.core._submit"):
        assert line in out, line
    assert "#  2. ks-fbank\n#  3. ks-apc_small  (afterok: pretrain-apc_small)" in out
    assert not expdir.exists()
    # the text submitit's own SlurmExecutor writes for the same settings (a stand-in srun makes it believe in a cluster)
    _fake_srun(tmp_path, monkeypatch)
    cfg = LauncherConfig(partition="gpu", time=90, gpus_per_node=1, additional_parameters={"qos": "high"})
    executor = submitit.SlurmExecutor(tmp_path / "jobs" / "%j")
    executor.update_parameters(**slurm_parameters(cfg, "bench-ks-fbank", ["17", "18_0"]))
    script = sbatch_script(cfg, tmp_path / "jobs" / "%j", "bench-ks-fbank", ["17", "18_0"])
    assert executor._make_submission_file_text(submit_command(tmp_path / "jobs" / "%j"), "uid") == script
    assert "#SBATCH --dependency=afterok:17:18_0" in script
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert main(argv) == 2 and "no srun" in capsys.readouterr().err  # a real submission needs a cluster
    bench["launcher"] = {"partition": "gpu", "gpus": 1, "walltime": 5}
    config.write_text(yaml.safe_dump(bench))
    with pytest.raises(ConfigError, match=r"launcher: unknown keys \['gpus', 'walltime'\]"):
        load_benchmark(config)


def test_submitit_local_jobs_wait_for_their_pretraining_job(sc_root: Path, tmp_path: Path):
    """Two tracks (ks, qbe) × two upstreams (fbank, apc_small) as submitit jobs in real subprocesses,
    the same pickling path as Slurm (here one job per upstream, ``launcher.job_per: upstream``): the
    apc_small job waits for its pre-training job; one leaderboard; a second run submits nothing."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    bench = yaml.safe_load(config.read_text())
    bench["tasks"]["qbe"] = {"task": "qbe", "config": str(_qbe_config(tmp_path))}
    bench["launcher"] = {"job_per": "upstream"}
    config.write_text(yaml.safe_dump(bench))
    quick = ["train.total_steps=4", "train.eval_every=2", "train.save_every=2", "cost.lengths_s=[1.0]",
             "cost.repeats=1"]
    argv = ["--data", str(config), "--expdir", str(expdir), "--launcher", "submitit-local",
            *(a for o in quick for a in ("-o", o))]  # ks only: qbe has no such keys
    assert main([*argv, "--jobs", "2"]) == 0
    board = pd.read_csv(expdir / "leaderboard.csv").set_index("upstream")
    assert set(board.index) == {"fbank", "apc:apc_small"}
    assert board[["ks accuracy", "qbe mtwv"]].notna().all().all()
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t").set_index("stage")
    assert set(timing.loc[["pretrain apc_small", "ks fbank seed 1337", "qbe fbank seed 1337", "ks apc_small seed 1337",
                           "qbe apc_small seed 1337"], "status"]) == {"ran"}
    pretrained = (expdir / "pretrain/apc_small/summary.json").stat().st_mtime
    assert (expdir / "downstream/ks-apc_small-seed1337/config.yaml").stat().st_mtime > pretrained  # after it
    assert len(list((expdir / "slurm").glob("*/*_result.pkl"))) == 3  # pretrain-apc_small, fbank, apc_small

    assert main(argv) == 0  # everything done: nothing submitted
    timing = pd.read_csv(expdir / "timing.tsv", sep="\t")
    assert set(timing[~timing["stage"].str.startswith(("corpus", "leaderboard"))]["status"]) == {"reused"}
    assert len(list((expdir / "slurm").glob("*/*_result.pkl"))) == 3


class PreemptedOnce(SubmititTask):
    """A job that, on its first attempt, is pre-empted at its 15th update: the USR2 that Slurm sends
    (``--signal=USR2@90``) and submitit turns into ``checkpoint()`` and a requeue."""

    def __call__(self):
        marker = Path(os.environ["SUPERB_TEST_PREEMPTED"])
        if not marker.exists():
            marker.touch()
            clip, calls = torch.nn.utils.clip_grad_norm_, [0]

            def clip_then_preempt(*args, **kwargs):
                calls[0] += 1
                if calls[0] == 15:
                    os.kill(os.getpid(), signal.SIGUSR2)
                return clip(*args, **kwargs)

            torch.nn.utils.clip_grad_norm_ = clip_then_preempt
        return super().__call__()


def test_a_preempted_job_is_requeued_and_resumes(sc_root: Path, tmp_path: Path, monkeypatch):
    """The job ks-fbank, pre-empted mid-run (USR2 at update 15 of 20) in a submitit subprocess, is
    checkpointed by submitit (the same task again), requeued, and resumes from its step-10 checkpoint."""
    config, expdir = _config(tmp_path, sc_root), tmp_path / "out"
    monkeypatch.setattr(launcher, "SubmititTask", PreemptedOnce)
    monkeypatch.setenv("SUPERB_TEST_PREEMPTED", str(tmp_path / "preempted"))
    assert main(["--data", str(config), "--expdir", str(expdir), "--launcher", "submitit-local",
                 "--upstreams", "fbank", "-o", "cost.lengths_s=[1.0]", "-o", "cost.repeats=1"]) == 0
    assert (tmp_path / "preempted").exists()
    train_log = (expdir / "downstream/ks-fbank-seed1337/train.log").read_text()
    assert "resumed from" in train_log and "at step 10" in train_log
    job_log = "".join(log.read_text() for log in (expdir / "slurm").glob("*/*_log.err"))
    assert "job ks-fbank: pre-empted or out of time; requeued" in job_log
    assert json.loads((expdir / "downstream/ks-fbank-seed1337/results.json").read_text())["upstream"] == "fbank"
    assert pd.read_csv(expdir / "leaderboard.csv")["upstream"].tolist() == ["fbank"]


class _FakeHandle:
    """A submitted job that ends at once, well or with an error."""

    def __init__(self, name: str, fails: bool):
        self.job_id, self.fails, self.cancelled = name, fails, False
        self.paths = SimpleNamespace(stderr=f"{name}.err", result_pickle=Path("/no/such/result.pkl"))

    def done(self):
        return True

    def result(self):
        if self.fails:
            raise RuntimeError("Traceback ...\nValueError: no such corpus")
        return [(self.job_id, 1.0, False)]

    def cancel(self, check=True):
        self.cancelled = True


def test_a_failed_job_cancels_the_jobs_that_wait_for_it():
    jobs = [Job("pretrain-a", "pretrain", print), Job("pretrain-b", "pretrain", print, ["pretrain-a"]),
            Job("ks-a", "downstream", print, ["pretrain-b"]), Job("ks-fbank", "downstream", print)]
    assert [[j.name for j in batch] for batch in submissions(jobs)] == [["pretrain-a"], ["ks-fbank"], ["pretrain-b"],
                                                                        ["ks-a"]]
    finished = []
    with pytest.raises(JobsFailed) as failed:  # submitit-local: dependents are never started
        launcher._wait(jobs, {}, lambda job, stages: finished.append(job.name), 0.0,
                       start=lambda job: _FakeHandle(job.name, job.name == "pretrain-a"), parallel=2,
                       on_interrupt=None)
    assert finished == ["ks-fbank"]
    message = str(failed.value)
    assert "pretrain-a (job pretrain-a) failed: ValueError: no such corpus" in message
    assert "pretrain-b: not run" in message and "ks-a: not run" in message
    handles = {job.name: _FakeHandle(job.name, job.name == "pretrain-a") for job in jobs}
    handles["pretrain-b"].done = handles["ks-a"].done = lambda: False  # Slurm: held by afterok, cancelled
    with pytest.raises(JobsFailed, match="pretrain-b: cancelled"):
        launcher._wait(jobs, handles, lambda job, stages: None, 0.0, start=None, on_interrupt=None)
    assert handles["pretrain-b"].cancelled and handles["ks-a"].cancelled


class _FakeSlurm:
    """Stands in for submitit's SlurmExecutor: records each submission's parameters, numbers the jobs."""

    submitted: list[tuple[dict, list[str]]] = []

    def __init__(self, folder, max_num_timeout=3):
        self.parameters, self.batch_handles = {}, None

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    @contextlib.contextmanager
    def batch(self):
        self.batch_handles = []
        yield
        first = 100 + len(self.submitted)
        for i, handle in enumerate(self.batch_handles):
            handle.job_id = f"{first}_{i}" if len(self.batch_handles) > 1 else str(first)
        self.submitted.append((dict(self.parameters), [h.job_id for h in self.batch_handles]))
        self.batch_handles = None

    def submit(self, task):
        handle = _FakeHandle(task.name, False)
        self.batch_handles.append(handle)
        return handle


def _fake_srun(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")


def test_slurm_submissions_carry_afterok_dependencies(tmp_path: Path, monkeypatch):
    """Pre-training first; jobs with the same dependencies share one array; a dependent one names its
    pre-training job's id in ``--dependency=afterok``; a second submission while those run is refused."""
    _fake_srun(tmp_path, monkeypatch)
    monkeypatch.setattr(submitit, "SlurmExecutor", _FakeSlurm)
    monkeypatch.setattr(_FakeSlurm, "submitted", [])
    jobs = [Job("pretrain-a", "pretrain", print), Job("ks-fbank", "downstream", print),
            Job("qbe-fbank", "downstream", print), Job("ks-a", "downstream", print, ["pretrain-a"])]
    finished = []
    record = tmp_path / "slurm_jobs.tsv"
    launcher.launch(jobs, "slurm", LauncherConfig(partition="gpu"), tmp_path / "%j", prefix="bench", record=record,
                    on_finished=lambda job, stages: finished.append(job.name), poll_seconds=0.0)
    assert sorted(finished) == ["ks-a", "ks-fbank", "pretrain-a", "qbe-fbank"]
    (first, ids1), (second, ids2), (third, ids3) = _FakeSlurm.submitted
    assert ids1 == ["100"] and first["job_name"] == "bench-pretrain-a"
    assert "dependency" not in first["additional_parameters"]
    assert ids2 == ["101_0", "101_1"] and second["job_name"] == "bench-downstream"
    assert "dependency" not in second["additional_parameters"] and second["partition"] == "gpu"
    assert ids3 == ["102"] and third["additional_parameters"]["dependency"] == "afterok:100"
    assert record.read_text().splitlines()[1:] == ["pretrain-a\t100\t", "ks-fbank\t101_0\t", "qbe-fbank\t101_1\t",
                                                   "ks-a\t102\tpretrain-a"]
    monkeypatch.setattr(submitit, "SlurmJob", lambda folder, job_id: SimpleNamespace(
        state="RUNNING" if job_id == "102" else "COMPLETED"))
    with pytest.raises(ConfigError, match=r"have not ended: ks-a \(102: RUNNING\)"):
        launcher.launch(jobs, "slurm", LauncherConfig(), tmp_path / "%j", record=record, poll_seconds=0.0)
