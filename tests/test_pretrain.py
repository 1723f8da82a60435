"""Pre-training: the loop, held-out validation, curves, resume after a kill (with augmentation too), and the
checkpoint downstream tasks load."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from core.config import ConfigError, merge
from corpora.folder import scan_audio
from upstream import build_upstream
from upstream.pretrain import PretrainConfig, Pretrainer, lr_factor, main
from upstream.pretrain.augment import TRANSFORMS

from .conftest import killed_at_update

SMALL = {
    "apc": {"preset": "tiny", "hidden_size": 32, "num_layers": 2},
    "mockingjay": {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "intermediate_size": 64},
}


AUGMENT = {"enabled": True, "seed": 5, "bandreject_prob": 0.5, "reverb_prob": 0.5, "noise_prob": 0.5}


def _cfg(upstream: str, augment: dict | None = None, **train) -> PretrainConfig:
    loop = {"total_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1, "batch_size": 8, "batch_seconds": 8.0,
            "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.2, **train}
    return merge(PretrainConfig(), {"upstream": SMALL[upstream], "train": loop, "augment": augment or {}})


def test_scan_uses_only_the_training_part(sc_root: Path, tmp_path: Path):
    records, skipped = scan_audio(sc_root)
    ids = {r.id for r in records}
    assert len(records) == 3 * 3 * 4 and not skipped  # 3 words x 3 training speakers x 4 takes
    assert not any("dave" in i or "erin" in i or "_background_noise_" in i for i in ids)
    long = scan_audio(sc_root / "_background_noise_", segment_seconds=6.0)[0]  # a plain folder: 20 s file
    assert len(long) == 4 and all(r.duration == 5.0 for r in long) and [r.start for r in long] == [0, 5, 10, 15]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_audio(tmp_path / "nowhere")
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    tail = np.concatenate([0.3 * np.ones(16000), 1e-4 * np.ones(16000)]).astype(np.float32)
    sf.write(quiet / "a.wav", tail, 16000, subtype="FLOAT")
    kept, dropped = scan_audio(quiet, segment_seconds=1.0)
    assert [r.start for r in kept] == [0.0] and dropped == [("quiet/a#1", "near-silent segment (peak -80 dBFS)")]


def test_lr_schedule():
    cfg = _cfg("apc", total_steps=100, warmup_fraction=0.1).train
    assert [lr_factor(s, cfg) for s in (0, 4, 9, 10, 55, 99)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 1 / 90])


@pytest.mark.parametrize("upstream, augment", [("apc", None), ("mockingjay", None), ("apc", AUGMENT)],
                         ids=["apc", "mockingjay", "apc-augmented"])
def test_resume_after_kill_matches_uninterrupted(sc_root: Path, tmp_path: Path, upstream: str, augment: dict | None):
    cfg = _cfg(upstream, augment)
    whole = Pretrainer(tmp_path / "whole", upstream, cfg, [sc_root]).run()
    curve = (tmp_path / "whole" / "curve.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in curve[1:]] == ["3", "6"]
    assert whole["steps"] == 6 and whole["valid_segments"] > 0

    with killed_at_update(5):
        Pretrainer(tmp_path / "killed", upstream, cfg, [sc_root]).run()
    Pretrainer(tmp_path / "killed", upstream, cfg, [sc_root]).run()  # resumes from step 4
    a = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    if augment:  # the counts of augmented utterances survive the kill with the position
        counts = whole["augment"]["augmented"]
        assert json.loads((tmp_path / "killed" / "summary.json").read_text())["augment"]["augmented"] == counts
        assert counts["utterances"] > 0 and all(0 < counts[t] < counts["utterances"] for t in TRANSFORMS)

    # The exported checkpoint is what downstream tasks load.
    model = build_upstream(upstream, tmp_path / "whole" / "upstream.pt")
    out = model(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000]))
    assert len(out.hidden_states) == model.num_layers and out.hidden_states[0].shape[-1] == 32
    torch.testing.assert_close(model.state_dict()["postnet.weight" if upstream == "apc" else "spec_head.output.weight"],
                               a["postnet.weight" if upstream == "apc" else "spec_head.output.weight"])


def test_cli_errors(sc_root: Path, tmp_path: Path, capsys):
    base = ["-n", "x", "-p", str(tmp_path), "--data", str(sc_root), "-o", "train.total_steps=2",
            "-o", "train.num_workers=0"]
    assert main(["-u", "fbank", *base]) == 2
    assert "cannot be pre-trained" in capsys.readouterr().err
    assert main(["-u", "apc", *base, "-o", "train.step=3"]) == 2
    assert "unknown config key 'train.step'" in capsys.readouterr().err
    assert main(["-u", "apc", *base, "-o", "upstream.hiden_size=3"]) == 2
    assert "hiden_size" in capsys.readouterr().err
    assert main(["-u", "apc", *base, "-o", "augment.snr=3"]) == 2
    assert "unknown config key 'augment.snr'" in capsys.readouterr().err
    assert main(["-u", "apc", *base, "-o", "augment.enabled=true", "-o", "augment.rt60=[1, 0.5]"]) == 2
    assert "'augment.rt60'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_augmentation_changes_training_batches_only(sc_root: Path, tmp_path: Path):
    """With the learning rate at zero the model never changes: the training losses differ with augmentation,
    the validation losses (on clean audio) do not."""
    curves = {}
    for name, augment in (("clean", None), ("augmented", {**AUGMENT, "noise_prob": 1.0})):
        summary = Pretrainer(tmp_path / name, "apc", _cfg("apc", augment, lr=0.0, total_steps=3), [sc_root]).run()
        curves[name] = [line.split("\t") for line in (tmp_path / name / "curve.tsv").read_text().splitlines()[1:]]
        assert summary["augment"]["enabled"] is (augment is not None)
    (_, clean_train, clean_valid, *_), = curves["clean"]
    (_, train, valid, *_), = curves["augmented"]
    assert valid == clean_valid and train != clean_train
    config = yaml.safe_load((tmp_path / "augmented" / "config.yaml").read_text())["config"]
    assert config["augment"]["enabled"] and config["augment"]["seed"] == 5


def test_folder_made_before_the_augment_section_resumes(sc_root: Path, tmp_path: Path):
    """Folders made before the ``augment`` section existed record no such section: they resume with
    augmentation disabled (config.yaml then records the section) and refuse it enabled."""
    cfg = _cfg("apc")
    Pretrainer(tmp_path / "old", "apc", cfg, [sc_root])
    cfg_file = tmp_path / "old" / "config.yaml"
    snapshot = yaml.safe_load(cfg_file.read_text())
    del snapshot["config"]["augment"]
    cfg_file.write_text(yaml.safe_dump(snapshot))
    with pytest.raises(ConfigError, match="augment"):
        Pretrainer(tmp_path / "old", "apc", _cfg("apc", AUGMENT), [sc_root])
    Pretrainer(tmp_path / "old", "apc", cfg, [sc_root])
    assert yaml.safe_load(cfg_file.read_text())["config"]["augment"]["enabled"] is False


def test_pretraining_as_a_submitit_job(sc_root: Path, tmp_path: Path, capsys):
    """``--launcher submitit-local``: the run goes through submitit's pickling path in a subprocess and ends
    as a local run does; a second launch submits nothing; ``--launcher slurm --dry-run`` prints the job
    script (no cluster needed); a changed config is refused before anything is submitted."""
    base = ["-u", "apc", "-n", "job", "-p", str(tmp_path), "--data", str(sc_root), "-o", "upstream.preset=tiny",
            "-o", "upstream.hidden_size=32", "-o", "upstream.num_layers=2", "-o", "train.total_steps=4",
            "-o", "train.eval_every=2", "-o", "train.save_every=2", "-o", "train.batch_size=8",
            "-o", "train.batch_seconds=8.0", "-o", "train.valid_fraction=0.15", "-o", "train.num_workers=0"]
    assert main([*base, "--launcher", "slurm", "--dry-run", "--partition", "gpu", "--gpus-per-node", "1",
                 "--time", "600", "--sbatch", "account=speech_lab"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=600",
                 "#SBATCH --account=speech_lab", "#SBATCH --job-name=job-pretrain-job", "-m submitit.core._submit",
                 "#  1. pretrain-job"):
        assert line in script, line
    assert not (tmp_path / "job").exists()  # a dry run writes nothing

    assert main([*base, "--launcher", "submitit-local"]) == 0
    assert json.loads((tmp_path / "job" / "summary.json").read_text())
    assert build_upstream("apc", tmp_path / "job" / "upstream.pt").hidden_size == 32
    assert any((tmp_path / "job" / "slurm").glob("*/*_log.out"))  # submitit's job folder, its logs
    assert "checkpoint for run_downstream.py" in capsys.readouterr().out
    assert main([*base, "--launcher", "submitit-local"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert main([*base, "-o", "train.lr=0.5", "--launcher", "submitit-local"]) == 2
    assert "job" in capsys.readouterr().err
