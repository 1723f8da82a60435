"""The Speech Commands reader on a tiny tree made here, and on the real FSDD tree when present."""
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from corpora.manifest import read_manifest
from corpora.speech_commands import SILENCE, UNKNOWN, prepare_speech_commands, read_labels

from .conftest import shared_data


def _read(out: Path):
    return {s: read_manifest(out / f"{s}.tsv") for s in ("train", "dev", "test")}


def test_superb12_setting(sc_root: Path, tmp_path: Path):
    out = tmp_path / "m"
    prepare_speech_commands(sc_root, out, classes="superb12")
    splits = _read(out)
    assert read_labels(out) == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", UNKNOWN, SILENCE]
    words = {s: [r for r in recs if r.label != SILENCE] for s, recs in splits.items()}
    assert len(words["train"]) == 3 * 3 * 4 and len(words["dev"]) == len(words["test"]) == 3 * 4
    assert {r.speaker for r in words["dev"]} == {"dave"} and {r.speaker for r in words["test"]} == {"erin"}
    assert Counter(r.label for r in words["train"]) == {"yes": 12, "no": 12, UNKNOWN: 12}  # 'bed' is unknown
    for split, recs in splits.items():
        silence = [r for r in recs if r.label == SILENCE]
        assert len(silence) == max(1, round(len(words[split]) / 11))
        assert all(r.duration == 1.0 for r in silence)
    # Silence clips of different splits come from disjoint parts of the noise file (20 s long).
    assert max(r.start + r.duration for r in splits["train"] if r.label == SILENCE) <= 16.0
    assert all(16.0 <= r.start and r.start + r.duration <= 18.0 for r in splits["dev"] if r.label == SILENCE)
    assert all(18.0 <= r.start and r.start + r.duration <= 20.0 for r in splits["test"] if r.label == SILENCE)


def test_all_words_setting_and_idempotence(sc_root: Path, tmp_path: Path):
    out = tmp_path / "m"
    paths = prepare_speech_commands(sc_root, out, classes="all")
    assert read_labels(out) == ["bed", "no", "yes", SILENCE]
    mtime = paths["train"].stat().st_mtime_ns
    prepare_speech_commands(sc_root, out, classes="all")
    assert paths["train"].stat().st_mtime_ns == mtime  # nothing re-read or rewritten
    prepare_speech_commands(sc_root, out, classes="superb12")  # other settings: rebuilt
    assert read_labels(out)[-1] == SILENCE and "bed" not in read_labels(out)


def test_bad_files_are_skipped_and_reported(sc_root: Path, tmp_path: Path, caplog):
    (sc_root / "yes" / "zed_nohash_0.wav").write_bytes(b"")
    (sc_root / "no" / "zed_nohash_1.wav").write_bytes(b"RIFF....WAVEgarbage" * 4)
    sf.write(sc_root / "no" / "zed_nohash_2.wav", [], 16000)
    out = tmp_path / "m"
    prepare_speech_commands(sc_root, out)
    skipped = (out / "skipped-speech_commands.tsv").read_text()
    for name in ("yes/zed_nohash_0.wav", "no/zed_nohash_1.wav", "no/zed_nohash_2.wav"):
        assert name in skipped
    assert "speech_commands: skipped 3 recording(s)" in caplog.text
    assert not any(r.speaker == "zed" for recs in _read(out).values() for r in recs)


def test_missing_lists_and_wrong_settings(sc_root: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="classes"):
        prepare_speech_commands(sc_root, tmp_path / "a", classes="twelve")
    (sc_root / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        prepare_speech_commands(sc_root, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_speech_commands(tmp_path / "nowhere", tmp_path / "c")


def test_real_fsdd_tree(tmp_path: Path):
    root = shared_data("speech_commands_fsdd")
    with pytest.raises(ValueError, match="none of SUPERB's keywords"):
        prepare_speech_commands(root, tmp_path / "s12", classes="superb12")
    prepare_speech_commands(root, tmp_path / "all", classes="all")
    splits = _read(tmp_path / "all")
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2000, 500, 500]
    assert {r.speaker for r in splits["dev"]} == {"nicolas"} and {r.speaker for r in splits["test"]} == {"theo"}
    assert not {r.speaker for r in splits["train"]} & {"nicolas", "theo"}
    assert len(read_labels(tmp_path / "all")) == 10  # digits, no background noise so no _silence_
