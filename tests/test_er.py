"""Emotion recognition: EmoDB's file-name coding, leave-speakers-out folds, the task end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.config import parse_overrides
from corpora.emodb import prepare_emodb
from corpora.folds import speaker_test_fold
from corpora.layouts import detect_layout
from corpora.manifest import ManifestError, Record, read_manifest
from downstream.runner import Experiment, RunSpec, resolve_config

from .conftest import shared_data

PITCH = {"W": 900.0, "F": 600.0, "T": 150.0, "N": 300.0, "L": 250.0}  # anger, happiness, sadness, neutral, boredom


def make_emodb(root: Path, speakers=("03", "08", "09", "10", "11"), labels_csv: bool = True) -> Path:
    """EmoDB-named tones: one pitch per emotion, 2 texts per speaker and emotion."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    rows = ["file,speaker,text,emotion"]
    names = {"W": "anger", "F": "happiness", "T": "sadness", "N": "neutral", "L": "boredom"}
    for speaker in speakers:
        for code, pitch in PITCH.items():
            for text in ("a01", "b02"):
                t = np.arange(8000) / 16000
                tone = np.sin(2 * np.pi * pitch * (1 + 0.01 * int(speaker)) * t)
                wave = 0.3 * tone + 0.01 * rng.standard_normal(t.size)
                name = f"{speaker}{text}{code}a.flac"
                sf.write(root / "wav" / name, wave.astype("float32"), 16000)
                rows.append(f"{name},{speaker},{text},{names[code]}")
    if labels_csv:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_emodb_names_give_speaker_text_and_emotion(tmp_path: Path):
    root = make_emodb(tmp_path / "emodb")
    sf.write(root / "wav" / "notes.flac", np.zeros(160, dtype="float32"), 16000)
    assert detect_layout(root).corpus == "emodb"
    records = read_manifest(prepare_emodb(root, tmp_path / "m"))
    assert len(records) == 5 * 5 * 2
    first = next(r for r in records if r.id == "03a01Wa")
    assert (first.speaker, first.text, first.label) == ("03", "a01", "anger")
    skipped = (tmp_path / "m" / "skipped-emodb.tsv").read_text()
    assert "notes.flac" in skipped and "not an EmoDB file name" in skipped


def test_a_labels_file_that_disagrees_with_the_names_is_an_error_naming_the_line(tmp_path: Path):
    root = make_emodb(tmp_path / "emodb")
    lines = (root / "labels.csv").read_text().splitlines()
    lines[3] = lines[3].replace("anger", "boredom").replace("happiness", "boredom")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"labels.csv:4: speaker .* disagree with the file name"):
        prepare_emodb(root, tmp_path / "m")


def test_speaker_test_folds_keep_test_speakers_out_of_training():
    records = [Record(id=f"{s}-{i}", path="x", duration=1.0, speaker=s) for s in "abcdefghij" for i in range(10)]
    tested = []
    for fold in range(5):
        split = speaker_test_fold(records, 5, fold, dev_fraction=0.2)
        test = {r.speaker for r in split["test"]}
        assert len(test) == 2 and not test & {r.speaker for r in split["train"] + split["dev"]}
        assert len(split["dev"]) == 16 and {r.speaker for r in split["dev"]} <= {r.speaker for r in split["train"]}
        assert sorted(r.id for recs in split.values() for r in recs) == sorted(r.id for r in records)
        tested += sorted(test)
    assert sorted(tested) == list("abcdefghij")  # every speaker tested once
    with pytest.raises(ValueError, match="without a speaker"):
        speaker_test_fold([*records, Record(id="x", path="x", duration=1.0)], 5, 0)


def test_er_trains_end_to_end_on_emodb_named_tones(tmp_path: Path):
    root = make_emodb(tmp_path / "emodb")
    spec = RunSpec("er", "fbank_global")
    common = [f"task.root={root}", "train.total_steps=60", "train.eval_every=30", "train.save_every=30",
              "train.lr=1e-2", "train.batch_size=8", f"cache.root={tmp_path / 'cache'}"]
    cfg = resolve_config(spec, {}, parse_overrides(common))
    assert cfg.task.corpus == "emodb" and (cfg.task.folds, cfg.task.classes) == (5, "superb4")
    results = Experiment.create(tmp_path / "exp", "er", spec, cfg).train()
    assert results["track"] == "er" and results["splits"]["test"]["utterances"] == 8  # 1 speaker x 4 classes x 2
    assert results["splits"]["test"]["accuracy"] >= 0.5 and 0 <= results["splits"]["test"]["unweighted_recall"] <= 1
    seven = resolve_config(spec, {}, parse_overrides([*common, "task.classes=all"]))
    results = Experiment.create(tmp_path / "exp", "er_all", spec, seven).train()
    assert results["track"] == "er_all" and results["splits"]["test"]["utterances"] == 10  # boredom too


def test_the_shared_emodb_has_its_535_utterances(tmp_path: Path):
    records = read_manifest(prepare_emodb(shared_data("emodb_2s"), tmp_path / "m"))
    assert len(records) == 535 and len({r.speaker for r in records}) == 10
    assert sum(r.label in ("neutral", "happiness", "anger", "sadness") for r in records) == 339
