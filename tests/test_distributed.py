"""Data-parallel training: 2 processes under torchrun (gloo, CPU) give one process's weights and results."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import distributed

ROOT = Path(__file__).resolve().parents[1]


def test_shard_weights_make_the_global_mean(monkeypatch):
    batch = [10, 11, 12, 13, 14]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for r in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.shard(batch))
    assert shares == [([10, 12, 14], 1.2), ([11, 13], 0.8)]
    losses = {10: 1.0, 11: 2.0, 12: 3.0, 13: 4.0, 14: 5.0}
    per_process = [sum(losses[i] for i in local) / len(local) * w for local, w in shares]
    assert sum(per_process) / 2 == pytest.approx(sum(losses.values()) / 5)  # what DDP's average gives
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard([7]) == ([7], 0.0)  # no utterance left: joins the all-reduce with weight 0
    tokens = {10: 5, 11: 1, 12: 2, 13: 1, 14: 1}  # a token-averaged loss weights by tokens
    local, weight = distributed.shard(batch, lambda idx: sum(tokens[i] for i in idx))
    assert local == [11, 13] and weight == pytest.approx(2 * 2 / 10)


def _train(sc_root: Path, tmp_path: Path, name: str, processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    overrides = ["task.corpus=speech_commands", f"task.root={sc_root}", "task.classes=all",
                 f"cache.root={tmp_path / 'cache'}", "train.total_steps=30", "train.eval_every=10",
                 "train.batch_size=8", "train.lr=0.01"]
    cmd = [*launcher, str(ROOT / "run_downstream.py"), "-m", "train", "-u", "fbank_global", "-d", "ks", "-n", name,
           "-p", str(tmp_path / "exp"), *[a for o in overrides for a in ("-o", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_match_one(sc_root: Path, tmp_path: Path):
    _train(sc_root, tmp_path, "one", 1)
    two = _train(sc_root, tmp_path, "two", 2)
    assert two.stdout.count('"splits"') == 1  # only process 0 reports
    one_r, two_r = (json.loads((tmp_path / "exp" / n / "results.json").read_text()) for n in ("one", "two"))
    assert two_r["training"]["processes"] == 2 and one_r["training"]["processes"] == 1
    assert "data-parallel over 2 processes" in (tmp_path / "exp" / "two" / "train.log").read_text()
    one_ck, two_ck = (torch.load(tmp_path / "exp" / n / "checkpoints" / "last.pt", weights_only=False)
                      for n in ("one", "two"))
    assert one_ck["position"]["step"] == two_ck["position"]["step"] == 30
    for part in ("head", "featurizer"):
        for key, one in one_ck[part].items():
            diff = (two_ck[part][key] - one).abs()
            # Numerical noise only: Adam (lr 0.01, 30 steps) magnifies rounding differences on weights whose
            # gradients are ~0, so a handful may drift by a fraction of one step; all the rest agree closely.
            assert (diff <= 1e-5 + 1e-4 * one.abs()).float().mean() >= 0.999, key
            assert diff.max() <= 1e-3, key
    for split in ("dev", "test"):
        assert two_r["splits"][split]["accuracy"] == pytest.approx(one_r["splits"][split]["accuracy"])


def test_pretraining_on_two_processes_matches_one(sc_root: Path, tmp_path: Path):
    """APC without dropout has no randomness, so 2 processes reproduce one process up to the weighting:
    each process's loss is a mean over its frames and is weighted by its share of utterances, which
    equals the share of frames only for equal lengths (these clips last 0.6-1.0 s)."""
    settings = ["upstream.preset=tiny", "upstream.hidden_size=32", "upstream.num_layers=2", "upstream.dropout=0.0",
                "train.total_steps=6", "train.eval_every=3", "train.save_every=3", "train.batch_size=8",
                "train.batch_seconds=8.0", "train.valid_fraction=0.15", "train.warmup_fraction=0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name, launcher in (("one", [sys.executable, "-m"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node=2", "-m"])):
        cmd = [*launcher, "upstream.pretrain", "-u", "apc", "-n", name, "-p", str(tmp_path / "pt"),
               "--data", str(sc_root), *[a for o in settings for a in ("-o", o)]]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / "pt" / n / "summary.json").read_text()) for n in ("one", "two"))
    assert two["processes"] == 2 and two["steps"] == one["steps"] == 6
    assert two["final_valid_loss"] == pytest.approx(one["final_valid_loss"], rel=1e-3)
    a, b = (torch.load(tmp_path / "pt" / n / "checkpoints" / "last.pt", weights_only=False)["model"]
            for n in ("one", "two"))
    for key in a:
        diff = (b[key] - a[key]).abs()
        assert (diff <= 1e-5 + 1e-4 * a[key].abs()).float().mean() >= 0.99, key
        assert diff.max() <= 1e-3, key
