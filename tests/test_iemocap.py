"""IEMOCAP's release layout: labels (exc merged into happiness), speakers, leave-one-session-out folds,
errors naming the evaluation line, and emotion recognition end to end on an IEMOCAP-shaped tree of tones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.config import parse_overrides
from corpora import iemocap
from corpora.folds import group_test_fold
from corpora.layouts import detect_layout
from corpora.manifest import ManifestError, read_manifest
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.er import EmotionRecognition, ERConfig

PITCH = {"neu": 300.0, "hap": 600.0, "exc": 600.0, "ang": 900.0, "sad": 150.0, "fru": 1200.0, "xxx": 450.0}
"""Label -> tone frequency: excitement sounds as happiness does, so the merged class is learnable."""
TURNS = {"F": ("neu", "hap", "exc", "ang", "sad"), "M": ("neu", "ang", "sad", "fru", "xxx")}
"""Per session: the labels of the woman's and the man's turns (8 of the 10 in SUPERB's four classes)."""


def make_iemocap(root: Path, sessions: int = 5) -> Path:
    """``Session<n>/dialog/EmoEvaluation/Ses0<n>F_impro01.txt`` as released (comment lines, annotator
    lines, a ``Categorical/`` folder and a hidden ``._`` file that are not read) and 0.5-s tones under
    ``sentences/wav/``."""
    rng = np.random.default_rng(0)
    for n in range(1, sessions + 1):
        dialog = f"Ses0{n}F_impro01"
        evaluation = root / f"Session{n}" / "dialog" / "EmoEvaluation"
        wav = root / f"Session{n}" / "sentences" / "wav" / dialog
        (evaluation / "Categorical").mkdir(parents=True)
        wav.mkdir(parents=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        start = 1.0
        for gender, labels in TURNS.items():
            for i, label in enumerate(labels):
                utterance = f"{dialog}_{gender}{i:03d}"
                lines += [f"[{start:.4f} - {start + 0.5:.4f}]\t{utterance}\t{label}\t[2.5000, 2.5000, 2.5000]",
                          "C-E1:\tNeutral state;\t()", "A-E1:\tval 3; act 2; dom  3;\t()", ""]
                start += 1.0
                t = np.arange(8000) / 16000
                tone = 0.3 * np.sin(2 * np.pi * PITCH[label] * (1 + 0.01 * n) * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(wav / f"{utterance}.wav", tone.astype("float32"), 16000)
        (evaluation / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (evaluation / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
        (evaluation / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    return root


def test_the_release_layout_gives_labels_speakers_and_sessions(tmp_path: Path):
    root = make_iemocap(tmp_path / "IEMOCAP_full_release")
    layout = detect_layout(root)
    assert (layout.corpus, layout.found) == ("iemocap", ("5 Session folders with dialog/EmoEvaluation/",))
    records = {r.id: r for r in read_manifest(iemocap.prepare_iemocap(root, tmp_path / "m"))}
    assert len(records) == 5 * 10
    assert (records["Ses01F_impro01_F002"].label, records["Ses01F_impro01_F002"].speaker) == ("happiness", "Ses01_F")
    assert (records["Ses03F_impro01_M004"].label, records["Ses03F_impro01_M004"].speaker) == ("no_agreement", "Ses03_M")
    frustrated = records["Ses05F_impro01_M003"]
    assert frustrated.label == "frustration" and iemocap.session(frustrated) == "Ses05"
    assert sum(r.label in ("neutral", "happiness", "anger", "sadness") for r in records.values()) == 5 * 8
    assert sorted({r.speaker for r in records.values()}) == [f"Ses0{n}_{g}" for n in range(1, 6) for g in "FM"]
    separate = read_manifest(iemocap.prepare_iemocap(root, tmp_path / "m", merge_excitement=False))
    assert sorted(r.id for r in separate if r.label == "excitement") == [f"Ses0{n}F_impro01_F002" for n in range(1, 6)]


def test_folds_hold_out_one_session_and_take_a_fifth_of_the_rest_for_dev(tmp_path: Path):
    root = make_iemocap(tmp_path / "iemocap")
    records = [r for r in read_manifest(iemocap.prepare_iemocap(root, tmp_path / "m"))
               if r.label in ("neutral", "happiness", "anger", "sadness")]
    for fold in range(5):
        split = group_test_fold(records, iemocap.session, fold)
        assert {iemocap.session(r) for r in split["test"]} == {f"Ses0{fold + 1}"}
        assert f"Ses0{fold + 1}" not in {iemocap.session(r) for r in split["train"] + split["dev"]}
        assert (len(split["train"]), len(split["dev"]), len(split["test"])) == (25, 7, 8)  # S3PRL: 32 - int(0.8 * 32)
        assert sorted(r.id for recs in split.values() for r in recs) == sorted(r.id for r in records)
    fold2 = group_test_fold(records, iemocap.session, 2)
    assert fold2 == group_test_fold(records, iemocap.session, 2)  # deterministic
    assert fold2["dev"] != group_test_fold(records, iemocap.session, 2, seed=1)["dev"]  # seeded
    with pytest.raises(ValueError, match="fold 5 of 5 group"):
        group_test_fold(records, iemocap.session, 5)


def test_missing_audio_and_malformed_lines_are_errors_naming_the_evaluation_line(tmp_path: Path):
    root = make_iemocap(tmp_path / "iemocap")
    txt = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    (root / "Session2" / "sentences" / "wav" / "Ses02F_impro01" / "Ses02F_impro01_M001.wav").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{txt}:27: no audio for Ses02F_impro01_M001: .*_M001.wav not found"):
        iemocap.prepare_iemocap(root, tmp_path / "m1")
    lines = txt.read_text().splitlines()
    for bad, message in ((lines[2].replace("\t", " "), "expected '\\[start - end\\]"),
                         (lines[2].replace("\tneu\t", "\tcalm\t"), "unknown label 'calm'"),
                         (lines[2].replace("Ses02F", "Ses03F"),
                          "utterance Ses03F_impro01_F000 belongs to session 3, not Session2")):
        txt.write_text("\n".join([*lines[:2], bad, *lines[3:]]) + "\n")
        with pytest.raises(ManifestError, match=rf"{txt}:3: {message}"):
            iemocap.prepare_iemocap(root, tmp_path / "m2")


def test_er_reads_iemocap_by_its_layout_and_trains_on_a_session_fold(tmp_path: Path):
    root = make_iemocap(tmp_path / "iemocap")
    spec = RunSpec("er", "fbank_global")
    common = [f"task.root={root}", "task.fold=1", "train.total_steps=40", "train.eval_every=20",
              "train.save_every=20", "train.lr=1e-2", "train.batch_size=8", f"cache.root={tmp_path / 'cache'}"]
    cfg = resolve_config(spec, {}, parse_overrides(common))
    assert cfg.task.corpus == "iemocap" and (cfg.task.folds, cfg.task.classes) == (5, "superb4")
    results = Experiment.create(tmp_path / "exp", "er", spec, cfg).train()
    assert results["track"] == "er" and results["dataset"] == "iemocap:iemocap/session-folds-5"
    assert results["splits"]["test"]["utterances"] == 8 and results["splits"]["test"]["accuracy"] >= 0.5
    predictions = (tmp_path / "exp" / "er" / "predictions-test.tsv").read_text().splitlines()[1:]
    assert {line.split("\t")[0][:5] for line in predictions} == {"Ses02"}
    assert "happiness" in {line.split("\t")[1] for line in predictions}  # Ses02F_impro01_F002, exc
    every = EmotionRecognition(ERConfig(corpus="iemocap", root=str(root), classes="all"), tmp_path / "all")
    every.prepare()
    assert every.labels == ["anger", "excitement", "frustration", "happiness", "neutral", "no_agreement", "sadness"]
    with pytest.raises(ValueError, match=r"IEMOCAP's folds are its sessions, .* has 5 \(Ses01, .*\): set task.folds=5"):
        EmotionRecognition(ERConfig(corpus="iemocap", root=str(root), folds=3), tmp_path / "three").prepare()
