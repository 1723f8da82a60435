"""The synthetic demo keyword corpus: layout, audio format, speaker-disjoint split, idempotence, reader."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from corpora.demo import keywords, tts
from corpora.manifest import read_manifest
from corpora.speech_commands import SILENCE, UNKNOWN, prepare_speech_commands

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); the demo corpus needs it",
)

TINY = dict(words=("yes", "no", "bed"), espeak_speakers=3, flite_voices=("slt",), repeats=2, seed=0)
"""3 words x 4 speakers (3 espeak-ng, 1 flite where installed) x 2 takes."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return keywords.build_demo_keywords(tmp_path_factory.mktemp("kw") / "demo", **TINY)


def _lists(root: Path) -> dict[str, list[str]]:
    return {name: (root / f"{name}_list.txt").read_text().split() for name in ("validation", "testing")}


def test_layout_and_audio(tiny: Path):
    speakers = 4 if shutil.which("flite") else 3
    clips = sorted(tiny.glob("[!_]*/*.wav"))
    assert sorted({c.parent.name for c in clips}) == ["bed", "no", "yes"]
    assert len(clips) == 3 * speakers * 2
    for clip in clips:
        speaker, n = clip.stem.split("_nohash_")
        assert n in ("0", "1") and "/" not in speaker and "_" not in speaker
        info = sf.info(str(clip))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16_000, 1, 16_000, "PCM_16")
        assert sf.read(str(clip))[0].std() > 0.01  # speech, not just the noise floor
    noise = sorted((tiny / "_background_noise_").glob("*.wav"))
    assert len(noise) >= 3 and all(sf.info(str(p)).duration >= 30 for p in noise)
    stamp = json.loads((tiny / tts.STAMP).read_text())
    assert sorted(stamp["speakers"]) == sorted({c.stem.split("_nohash_")[0] for c in clips})
    assert not list(tiny.parent.glob(".demo.*"))  # no temporary build folder left behind


def test_split_is_speaker_disjoint(tiny: Path):
    lists = _lists(tiny)
    every = {f"{c.parent.name}/{c.name}" for c in tiny.glob("[!_]*/*.wav")}
    spk = {name: {rel.split("/")[1].split("_nohash_")[0] for rel in rels} for name, rels in lists.items()}
    train = {rel.split("/")[1].split("_nohash_")[0] for rel in every - set(lists["validation"]) - set(lists["testing"])}
    assert all(set(rels) <= every for rels in lists.values())
    assert spk["validation"] and spk["testing"] and train
    assert not (spk["validation"] & spk["testing"]) and not (train & spk["validation"]) and not (train & spk["testing"])


def test_second_call_rewrites_nothing(tiny: Path):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    assert keywords.build_demo_keywords(tiny, **TINY) == tiny
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before


def test_speech_commands_reader_reads_it(tiny: Path, tmp_path: Path):
    out = prepare_speech_commands(tiny, tmp_path / "manifests")
    for split, path in out.items():
        labels = {r.label for r in read_manifest(path)}
        assert labels == {"yes", "no", UNKNOWN, SILENCE}, split


def test_other_settings_rebuild(tmp_path: Path):
    root = keywords.build_demo_keywords(tmp_path / "demo", words=("go",), espeak_speakers=3, flite_voices=(), repeats=1)
    assert len(list(root.glob("go/*.wav"))) == 3
    keywords.build_demo_keywords(root, words=("up",), espeak_speakers=3, flite_voices=(), repeats=1)
    assert not (root / "go").exists() and len(list(root.glob("up/*.wav"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_refuses_a_folder_it_did_not_build(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        keywords.build_demo_keywords(tmp_path / "mine", **TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_missing_espeak_says_what_to_do(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install espeak-ng.*task\.corpus=speech_commands task\.root=PATH"):
        keywords.build_demo_keywords(tmp_path / "demo", **TINY)
    assert not (tmp_path / "demo").exists()
