"""Long runs survive: SIGTERM at a random point of extraction, pre-training and head training stops
cleanly (a checkpoint, or nothing half-written), and the next run ends where an uninterrupted one
does; an unreadable last checkpoint falls back to the one before it."""
import contextlib
import os
import random
import signal
from pathlib import Path

import pytest
import torch

import downstream.cache as cache_module
from core.config import merge, parse_overrides
from core.signals import Interrupted, handle_stop_signals
from downstream.cli import main
from downstream.runner import Experiment, RunSpec, resolve_config
from upstream.pretrain import PretrainConfig, Pretrainer

STEPS = 24


@contextlib.contextmanager
def sigterm_at_call(module, name: str, n: int):
    """``module.name`` sends this process a real SIGTERM at its ``n``-th call (then behaves as before)."""
    real, calls = getattr(module, name), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, name, wrapped)
        yield calls


@contextlib.contextmanager
def stop_signals_raise():
    """As the command-line entry points set it up, restored afterwards."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    handle_stop_signals()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ks(tmp_path: Path, sc_root: Path, name: str, *extra: str) -> Experiment:
    overrides = ["task.corpus=speech_commands", f"task.root={sc_root}", "task.classes=all",
                 f"cache.root={tmp_path / 'cache'}", f"train.total_steps={STEPS}", "train.eval_every=6",
                 "train.save_every=6", "train.batch_size=8", "train.lr=0.01", *extra]
    spec = RunSpec("ks", "apc")
    cfg = resolve_config(spec, {"upstream": {"preset": "tiny", "hidden_size": 32, "num_layers": 2}},
                         parse_overrides(overrides))
    return Experiment.create(tmp_path / "exp", name, spec, cfg)


def _metrics(results: dict) -> dict:
    return {s: {k: v for k, v in m.items() if k != "seconds"} for s, m in results["splits"].items()}


def test_sigterm_in_head_training_saves_and_resumes_to_the_same_result(sc_root: Path, tmp_path: Path):
    reference = _ks(tmp_path, sc_root, "whole").train()
    at = random.Random(0).randint(2, STEPS - 2)  # a random update, off the save schedule or on it
    with sigterm_at_call(torch.nn.utils, "clip_grad_norm_", at), pytest.raises(Interrupted) as stopped:
        _ks(tmp_path, sc_root, "stopped").train()
    assert stopped.value.signum == signal.SIGTERM and stopped.value.saved.endswith("last.pt")
    ckpt = torch.load(tmp_path / "exp/stopped/checkpoints/last.pt", weights_only=False)
    assert ckpt["position"]["step"] == at  # the update under way finished, then the checkpoint was written
    assert _metrics(_ks(tmp_path, sc_root, "stopped").train()) == _metrics(reference)


def test_sigterm_during_extraction_leaves_nothing_half_written(sc_root: Path, tmp_path: Path):
    reference = _ks(tmp_path, sc_root, "whole", f"cache.root={tmp_path / 'cache_ref'}").train()
    at = random.Random(1).randint(2, 4)  # a random batch of the extraction
    with stop_signals_raise(), sigterm_at_call(cache_module, "collate_waveforms", at), pytest.raises(Interrupted):
        _ks(tmp_path, sc_root, "stopped").train()
    left = [p.name for p in (tmp_path / "cache").iterdir() if p.name != "cost"]  # cost/: measured before extraction
    assert not left  # neither an entry nor its temporary folder
    assert _metrics(_ks(tmp_path, sc_root, "stopped").train()) == _metrics(reference)


def test_cli_exits_cleanly_with_the_signal_code(sc_root: Path, tmp_path: Path, capsys):
    args = ["-m", "train", "-u", "fbank_global", "-d", "ks", "-n", "cli", "-p", str(tmp_path / "exp"),
            "-o", "task.corpus=speech_commands", "-o", f"task.root={sc_root}", "-o", "task.classes=all",
            "-o", f"cache.root={tmp_path / 'cache'}",
            "-o", "train.total_steps=12,,train.eval_every=4,,train.save_every=4"]
    with stop_signals_raise(), sigterm_at_call(torch.nn.utils, "clip_grad_norm_", 7):
        assert main(args) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    with stop_signals_raise():
        assert main(args) == 0


def test_sigterm_in_pretraining_resumes_to_identical_weights(sc_root: Path, tmp_path: Path):
    loop = {"total_steps": 6, "eval_every": 3, "save_every": 3, "log_every": 1, "batch_size": 8,
            "batch_seconds": 8.0, "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.2}
    cfg = merge(PretrainConfig(), {"upstream": {"preset": "tiny", "hidden_size": 32, "num_layers": 2}, "train": loop})
    Pretrainer(tmp_path / "whole", "apc", cfg, [sc_root]).run()
    at = random.Random(2).randint(1, 5)
    with sigterm_at_call(torch.nn.utils, "clip_grad_norm_", at), pytest.raises(Interrupted):
        Pretrainer(tmp_path / "stopped", "apc", cfg, [sc_root]).run()
    Pretrainer(tmp_path / "stopped", "apc", cfg, [sc_root]).run()
    a = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "stopped/checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(sc_root: Path, tmp_path: Path, caplog):
    reference = _ks(tmp_path, sc_root, "whole").train()
    with sigterm_at_call(torch.nn.utils, "clip_grad_norm_", 13), pytest.raises(Interrupted):
        _ks(tmp_path, sc_root, "broken").train()
    last = tmp_path / "exp/broken/checkpoints/last.pt"
    assert torch.load(last.with_name("last.prev.pt"), weights_only=False)["position"]["step"] == 12
    last.write_bytes(last.read_bytes()[:1000])  # e.g. a disk that filled up while it was copied
    assert _metrics(_ks(tmp_path, sc_root, "broken").train()) == _metrics(reference)
    assert "cannot read checkpoint" in caplog.text and "last.pt" in caplog.text


def test_loader_workers_leave_stop_signals_to_the_main_process():
    """A scheduler signals the whole process group: a loader's workers ignore the stop, so the main
    process's training loop gets to save (a worker killed by it would crash the run instead)."""
    from corpora.batching import ordered_loader  # noqa: PLC0415  (this test only)

    class Handlers(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGINT))

    batches = list(ordered_loader(Handlers(), [[0], [1]], lambda items: items, num_workers=1))
    assert batches == [[True], [True]]
