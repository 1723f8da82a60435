"""Speaker identification: VoxCeleb1's identification split read as released, the task end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.config import parse_overrides
from corpora.folder import scan_audio
from corpora.manifest import ManifestError, read_manifest
from corpora.voxceleb1 import prepare_voxceleb1_identification
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.sid import SpeakerIdentification

from .conftest import shared_data

SPEAKERS = {"id10001": 220.0, "id10002": 440.0, "id10003": 880.0}


def make_voxceleb1(root: Path, long_utterance: bool = False) -> Path:
    """Three tone "speakers" (one pitch each), 6 utterances each: 4 train, 1 dev, 1 test."""
    rng = np.random.default_rng(0)
    lines = []
    for speaker, pitch in SPEAKERS.items():
        for n in range(6):
            seconds = 10.0 if long_utterance and n == 0 else 1.0
            t = np.arange(int(16000 * seconds)) / 16000
            wave = 0.3 * np.sin(2 * np.pi * pitch * (1 + 0.02 * n) * t) + 0.01 * rng.standard_normal(t.size)
            relative = f"{speaker}/session{n % 2}/{n:05d}.wav"
            (root / "wav" / relative).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / "wav" / relative, wave.astype("float32"), 16000)
            lines.append(f"{1 if n < 4 else 2 if n == 4 else 3} {relative}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_the_identification_split_is_read_as_released(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox", long_utterance=True)
    paths = prepare_voxceleb1_identification(root, tmp_path / "manifests", crop_seconds=8.0)
    splits = {split: read_manifest(path) for split, path in paths.items()}
    assert {split: len(records) for split, records in splits.items()} == {"train": 12, "dev": 3, "test": 3}
    assert {r.label for r in splits["test"]} == set(SPEAKERS)
    first = next(r for r in splits["train"] if r.id == "id10001/session0/00000")
    assert first.speaker == first.label == "id10001"
    assert first.duration == 8.0 and 0.0 <= first.start <= 2.0  # a 10-s training utterance, cropped
    again = prepare_voxceleb1_identification(root, tmp_path / "manifests", crop_seconds=8.0)
    assert read_manifest(again["train"]) == splits["train"]  # idempotent, and the crop is the same


def test_a_missing_file_or_a_bad_line_names_the_line(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    lines = (root / "iden_split.txt").read_text().splitlines()
    (root / "iden_split.txt").write_text("\n".join([*lines[:2], "1 id10009/s/00000.wav", *lines[2:]]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"iden_split.txt:3: id10009/s/00000.wav not found"):
        prepare_voxceleb1_identification(root, tmp_path / "m1")
    (root / "iden_split.txt").write_text("\n".join([*lines[:4], "4 id10001/session0/00000.wav"]) + "\n")
    with pytest.raises(ManifestError, match=r"iden_split.txt:5: expected '<1\|2\|3>"):
        prepare_voxceleb1_identification(root, tmp_path / "m2")


def test_top5_accuracy_is_sklearns(tmp_path: Path):
    task = SpeakerIdentification(resolve_config(RunSpec("sid", "fbank"), {}, parse_overrides(
        ["task.corpus=manifest", f"task.root={tmp_path}"])).task, tmp_path)
    task.labels = [f"s{i}" for i in range(7)]
    task.index = {label: i for i, label in enumerate(task.labels)}
    records = [type("R", (), {"label": label})() for label in ("s0", "s1", "s6")]
    scores = [np.array([7, 6, 5, 4, 3, 2, 1.0]), np.array([1, 7, 6, 5, 4, 3, 2.0]), np.array([7, 6, 5, 4, 3, 2, 1.0])]
    assert task.score(scores, records) == {"accuracy": pytest.approx(2 / 3), "top5_accuracy": pytest.approx(2 / 3)}


def test_sid_trains_end_to_end_on_tone_speakers(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    spec = RunSpec("sid", "fbank_global")
    cfg = resolve_config(spec, {}, parse_overrides([
        f"task.root={root}", "train.total_steps=60", "train.eval_every=30", "train.save_every=30", "train.lr=1e-2",
        "train.batch_size=4", f"cache.root={tmp_path / 'cache'}"]))
    assert cfg.task.corpus == "voxceleb1"  # recognised by its layout
    results = Experiment.create(tmp_path / "exp", "sid", spec, cfg).train()
    assert results["task"] == "sid" and results["head"] == "proj_mean_linear"
    assert results["splits"]["test"]["accuracy"] >= 2 / 3  # three pitches: well above chance (1/3)
    assert results["splits"]["test"]["top5_accuracy"] == 1.0  # three speakers: all in the top 5
    rows = (tmp_path / "exp" / "sid" / "predictions-test.tsv").read_text().splitlines()
    assert rows[0] == "id\treference\thypothesis\ttop5" and len(rows) == 4


def test_speechocean762_has_the_voxceleb1_identification_split(tmp_path: Path):
    root = shared_data("speechocean762_spk")
    paths = prepare_voxceleb1_identification(root, tmp_path / "manifests")
    splits = {split: read_manifest(path) for split, path in paths.items()}
    assert {split: len(records) for split, records in splits.items()} == {"train": 560, "dev": 80, "test": 160}
    assert len({r.speaker for r in splits["train"]}) == 80
    assert {r.speaker for r in splits["test"]} == {r.speaker for r in splits["train"]}


def test_pretraining_reads_only_the_identification_training_utterances(tmp_path: Path):
    """A VoxCeleb1 folder given to pre-training (``--data``): its training utterances, never dev or test."""
    root = make_voxceleb1(tmp_path / "vox")
    (root / "wav" / "id10009" / "s").mkdir(parents=True)  # a verification speaker: in no identification set
    sf.write(root / "wav" / "id10009" / "s" / "00000.wav", np.full(16000, 0.2, dtype="float32"), 16000)
    records, skipped = scan_audio(root)
    assert not skipped
    assert sorted({Path(r.path).relative_to(root / "wav").as_posix() for r in records}) == sorted(
        f"{speaker}/session{n % 2}/{n:05d}.wav" for speaker in SPEAKERS for n in range(4))
