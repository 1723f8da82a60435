"""The downstream runner end to end on a tiny keyword corpus: training, results, resume, CLI errors."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from core.config import parse_overrides
from core.locks import FolderBusyError, exclusive
from corpora.manifest import Record, write_manifest
from downstream.cli import main
from downstream.runner import Experiment, RunSpec, resolve_config
from upstream import build_upstream

from .conftest import killed_at_update


def _overrides(sc_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["task.corpus=speech_commands", f"task.root={sc_root}", "task.classes=all",
            f"cache.root={tmp_path / 'cache'}", "train.total_steps=30", "train.eval_every=10", "train.save_every=5",
            "train.batch_size=8", "train.lr=0.01", *extra]


def _run(tmp_path, name, overrides, upstream="fbank_global"):
    spec = RunSpec("ks", upstream)
    cfg = resolve_config(spec, {}, parse_overrides(overrides))
    return Experiment.create(tmp_path / "exp", name, spec, cfg)


def test_train_writes_a_self_describing_experiment(sc_root: Path, tmp_path: Path):
    results = _run(tmp_path, "a", _overrides(sc_root, tmp_path)).train()
    exp = tmp_path / "exp" / "a"
    for f in ("config.yaml", "upstream.pt", "checkpoints/best.pt", "checkpoints/last.pt", "train.log",
              "layer_weights.json", "results.json", "predictions-dev.tsv", "predictions-test.tsv"):
        assert (exp / f).is_file(), f
    assert list((exp / "tb").glob("events.out.tfevents.*"))
    on_disk = json.loads((exp / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["task"] == "ks" and on_disk["upstream"] == "fbank_global" and on_disk["seed"] == 1337
    assert on_disk["training"]["train_steps"] == 30 and on_disk["training"]["steps_per_second"] > 0
    # Tones of three pitches: a working head separates them far above chance (1/4 with _silence_).
    assert on_disk["splits"]["test"]["accuracy"] >= 0.75
    assert on_disk["splits"]["test"]["utterances"] == 12 + 4  # 3 words x 4 takes + 4 silence clips
    snapshot = yaml.safe_load((exp / "config.yaml").read_text())
    assert snapshot["run"]["upstream"] == "fbank_global" and snapshot["config"]["train"]["total_steps"] == 30
    assert json.loads((exp / "layer_weights.json").read_text())["weights"] == [1.0]
    cost = on_disk["cost"]  # measured once for this upstream's fingerprint, kept beside the feature cache
    assert cost["parameters"] == on_disk["upstream_parameters"] == 0 and cost["macs_per_second"] > 0
    assert cost["lengths_s"] == [2.0, 5.0, 10.0] and cost["rtf"] > 0 and cost["device"] == "cpu"
    assert len(list((tmp_path / "cache" / "cost").glob("fbank_global-*.json"))) == 1


@pytest.mark.parametrize("cache", [True, False])
def test_resume_after_interruption_matches_uninterrupted_run(sc_root: Path, tmp_path: Path, cache: bool):
    overrides = _overrides(sc_root, tmp_path, f"cache.enabled={str(cache).lower()}", "featurizer.layer_norm=true")
    _run(tmp_path, "whole", overrides).train()
    with killed_at_update(13):
        _run(tmp_path, "killed", overrides).train()
    assert torch.load(tmp_path / "exp/killed/checkpoints/last.pt", weights_only=False)["position"]["step"] == 10
    _run(tmp_path, "killed", overrides).train()  # same name, same config: resumes from step 10
    a = torch.load(tmp_path / "exp/whole/checkpoints/last.pt", weights_only=False)
    b = torch.load(tmp_path / "exp/killed/checkpoints/last.pt", weights_only=False)
    for part in ("head", "featurizer"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    ra, rb = (json.loads((tmp_path / f"exp/{n}/results.json").read_text()) for n in ("whole", "killed"))
    assert ra["splits"]["test"]["accuracy"] == rb["splits"]["test"]["accuracy"]


def test_a_second_process_training_the_same_experiment_is_refused(sc_root: Path, tmp_path: Path):
    """Two trainers of one folder would overwrite each other's checkpoints: the second is refused, naming the
    holder; once the holder is gone (its lock released, as the kernel does for a killed process) it trains."""
    experiment = _run(tmp_path, "busy", _overrides(sc_root, tmp_path))
    with exclusive(tmp_path / "exp" / "busy", "a test holding it"):
        with pytest.raises(FolderBusyError, match=r"experiment 'busy' .* is in use by process \d+ on "):
            experiment.train()
    assert not (tmp_path / "exp" / "busy" / "results.json").exists()
    assert experiment.train()["splits"]["test"]["accuracy"] >= 0.75


def test_evaluate_mode_and_changed_config(sc_root: Path, tmp_path: Path, capsys):
    overrides = _overrides(sc_root, tmp_path, "train.total_steps=5")
    args = ["-m", "train", "-u", "fbank", "-d", "ks", "-n", "e", "-p", str(tmp_path / "exp")]
    assert main(args + sum((["-o", o] for o in overrides), [])) == 0
    (tmp_path / "exp/e/results.json").unlink()
    assert main(["-m", "evaluate", "-n", "e", "-p", str(tmp_path / "exp"), "-s", "dev,test"]) == 0
    results = json.loads((tmp_path / "exp/e/results.json").read_text())
    assert set(results["splits"]) == {"dev", "test"} and results["upstream"] == "fbank"
    assert main(args + ["-o", ",,".join(overrides[:-1] + ["train.total_steps=6"])]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["-d", "asr_typo", "-u", "fbank"], "unknown task 'asr_typo'"),
    (["-d", "ks", "-u", "wav2vec9"], "unknown upstream 'wav2vec9'"),
    (["-d", "ks", "-u", "fbank", "-o", "train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
    (["-d", "ks", "-u", "fbank", "-c", "/nonexistent.yaml"], "config file not found: /nonexistent.yaml"),
    (["-d", "ks", "-u", "fbank", "-k", "/nonexistent.pt"], "upstream checkpoint not found"),
])
def test_cli_errors_name_the_culprit(tmp_path: Path, capsys, args, message):
    assert main(["-m", "train", "-n", "x", "-p", str(tmp_path / "exp"), *args]) == 2
    assert message in capsys.readouterr().err


def test_corrupt_audio_in_a_manifest_names_the_file(sc_root: Path, tmp_path: Path, capsys):
    good = Record("a", str(sc_root / "yes/alice_nohash_0.wav"), 0.6, label="yes")
    bad_path = tmp_path / "broken.wav"
    bad_path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    bad = Record("b", str(bad_path), 1.0, label="no")
    for split in ("train", "dev", "test"):
        write_manifest(tmp_path / "man" / f"{split}.tsv", [good, bad])
    code = main(["-m", "train", "-u", "fbank", "-d", "ks", "-n", "c", "-p", str(tmp_path / "exp"),
                 "-o", "task.corpus=manifest", "-o", f"task.root={tmp_path / 'man'}",
                 "-o", f"cache.root={tmp_path / 'cache'}"])
    assert code == 2
    assert f"{bad_path}: unreadable audio" in capsys.readouterr().err


def test_random_weights_baseline_is_reproduced_by_evaluate(sc_root: Path, tmp_path: Path):
    overrides = _overrides(sc_root, tmp_path, "train.total_steps=10", "upstream.preset=tiny", "upstream.hidden_size=16")
    trained = _run(tmp_path, "r", overrides, upstream="apc").train()
    assert trained["upstream_label"] == "apc:random"
    (tmp_path / "exp/r/results.json").unlink()
    again = Experiment.load(tmp_path / "exp", "r").evaluate(("dev", "test"))
    assert again["upstream_fingerprint"] == trained["upstream_fingerprint"]  # the same random weights
    assert again["splits"]["test"]["accuracy"] == trained["splits"]["test"]["accuracy"]


def test_random_upstream_with_statistics_is_fitted_then_saved(sc_root: Path, tmp_path: Path):
    """A random BEST-RQ needs normalisation statistics: fitted on training audio, saved with its weights."""
    overrides = _overrides(sc_root, tmp_path, "train.total_steps=4", "train.eval_every=4", "upstream.preset=tiny",
                           "upstream.embed_dim=16", "upstream.num_layers=1", "upstream.num_heads=2",
                           "upstream.ffn_dim=32", "upstream.codebook_size=32")
    trained = _run(tmp_path, "b", overrides, upstream="bestrq").train()
    assert trained["upstream_label"] == "bestrq:random"
    saved = build_upstream("bestrq", tmp_path / "exp/b/upstream.pt")
    assert not saved.needs_fit and saved.std.min() > 0 and not torch.all(saved.mean == 0)
