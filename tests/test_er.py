"""Emotion recognition: EmoDB's file-name coding, leave-speakers-out folds, the task end to end, CSV lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.config import parse_overrides
from corpora.csv_list import prepare_csv_list
from corpora.emodb import prepare_emodb
from corpora.folds import speaker_test_fold
from corpora.layouts import detect_layout
from corpora.manifest import ManifestError, Record, read_manifest
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.er import EmotionRecognition, ERConfig

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


# ------------------------------------------------------------------ task.corpus: csv
def make_csv_lists(root: Path) -> Path:
    """``audio/<speaker>_<label>_<n>.wav`` tones (4 speakers x 4 emotions x 2) listed in ``train.csv``
    (speakers a, b), ``dev.csv`` (c) and ``test.csv`` (d, by absolute path), and all in ``data.csv``."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    pitch = {"anger": 900.0, "happiness": 600.0, "sadness": 150.0, "neutral": 300.0}
    rows = {"train": [], "dev": [], "test": []}
    for speaker, split in (("a", "train"), ("b", "train"), ("c", "dev"), ("d", "test")):
        for label, freq in pitch.items():
            for n in range(2):
                name = f"audio/{speaker}_{label}_{n}.wav"
                wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(4000) / 16000) + 0.01 * rng.standard_normal(4000)
                sf.write(root / name, wave.astype("float32"), 16000)
                rows[split].append(f"{root / name if split == 'test' else name},{label},{speaker}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(["path,label,speaker", *lines]) + "\n")
    return root


def test_csv_lists_give_the_splits_or_a_pool_dealt_into_speaker_folds(tmp_path: Path):
    root = make_csv_lists(tmp_path / "lists")
    assert detect_layout(root).corpus == "csv" and detect_layout(root).found == ("train.csv", "dev.csv", "test.csv")
    paths = prepare_csv_list(root, tmp_path / "m")
    splits = {s: read_manifest(p) for s, p in paths.items()}
    assert {s: len(r) for s, r in splits.items()} == {"train": 16, "dev": 8, "test": 8}
    first = splits["train"][0]
    assert (first.id, first.label, first.speaker, first.path) == ("audio/a_anger_0", "anger", "a",
                                                                  str(root.resolve() / "audio/a_anger_0.wav"))
    kept = EmotionRecognition(ERConfig(corpus="csv", root=str(root), folds=0), tmp_path / "kept").prepare()
    assert {s: {r.speaker for r in recs} for s, recs in kept.items()} == {"train": {"a", "b"}, "dev": {"c"},
                                                                         "test": {"d"}}
    pooled = [line for s in ("train", "dev", "test") for line in (root / f"{s}.csv").read_text().splitlines()[1:]]
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "data.csv").write_text("speaker,path,label\n" + "".join(
        f"{speaker},{root / path if not path.startswith('/') else path},{label}\n"
        for path, label, speaker in (line.split(",") for line in pooled)))
    assert detect_layout(tmp_path / "pool").found == ("data.csv",)
    cfg = resolve_config(RunSpec("er", "fbank"), {}, parse_overrides([f"task.root={tmp_path / 'pool'}", "task.folds=4",
                                                                      "task.fold=3"]))
    task = EmotionRecognition(cfg.task, tmp_path / "pooled")
    folds = task.prepare()
    assert cfg.task.corpus == "csv" and task.dataset() == "csv:pool/speaker-folds-4"
    assert len({r.speaker for r in folds["test"]}) == 1 and len(folds["test"]) == 8
    with pytest.raises(ValueError, match="no train/dev/test split; set task.folds"):
        EmotionRecognition(ERConfig(corpus="csv", root=str(tmp_path / "pool"), folds=0), tmp_path / "x").prepare()


def test_a_bad_csv_is_an_error_naming_the_file_and_line(tmp_path: Path):
    root = make_csv_lists(tmp_path / "lists")
    train = (root / "train.csv").read_text().splitlines()

    def fails(error, pattern: str, lines: list[str], name: str = "train.csv"):
        (root / name).write_text("\n".join(lines) + "\n")
        with pytest.raises(error, match=pattern):
            prepare_csv_list(root, tmp_path / "m")
        (root / name).write_text("\n".join(train) + "\n")

    fails(ManifestError, r"train.csv:4: expected 3 fields \(path,label,speaker\), found 2", [*train[:3], "x.wav,anger"])
    fails(ManifestError, r"train.csv:3: empty label", [*train[:2], "audio/a_anger_1.wav,,a"])
    fails(ManifestError, r"train.csv:1: header path,emotion,speaker: .*unknown column\(s\) \['emotion'\]; "
                         r"missing \['label'\]", ["path,emotion,speaker", *train[1:]])
    fails(FileNotFoundError, r"train.csv:3: audio/gone.wav not found", [*train[:2], "audio/gone.wav,anger,a"])
    fails(ManifestError, r"train.csv:3: audio/a_anger_0.wav is listed already .* at .*train.csv:2",
          [*train[:2], train[1]])
    (root / "dev.csv").unlink()
    with pytest.raises(FileNotFoundError, match="holds train.csv, test.csv but not dev.csv: a split corpus needs all"):
        prepare_csv_list(root, tmp_path / "m")
