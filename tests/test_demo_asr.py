"""The synthetic demo ASR corpus: LibriSpeech / Libri-light layout, speaker-disjoint splits, idempotence."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from corpora.demo import build_demo_asr
from corpora.librilight import read_librilight
from corpora.librispeech import find_split_dir, read_librispeech_dir
from downstream.tasks.ctc_text import CharVocabulary

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); the demo corpus needs it",
)


def test_demo_asr_corpus_reads_as_librispeech(tmp_path: Path):
    root = build_demo_asr(tmp_path / "demo", train_minutes=0.3, eval_minutes=0.15, espeak_speakers=4,
                          flite_voices=("slt",))
    stamp = json.loads((root / "BUILT.json").read_text())
    splits = {"train": read_librilight(root, "10min"), "dev": read_librispeech_dir(find_split_dir(root, "dev-clean")),
              "test": read_librispeech_dir(find_split_dir(root, "test-clean"))}
    for name, records in splits.items():
        seconds = sum(r.duration for r in records)
        assert seconds >= {"train": 18, "dev": 9, "test": 9}[name]
        assert abs(seconds - stamp["seconds"][name]) < 1.0
    speakers = {name: {r.speaker for r in records} for name, records in splits.items()}
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"]
                or speakers["dev"] & speakers["test"])
    vocab = CharVocabulary.superb()
    for r in (r for records in splits.values() for r in records):
        vocab.encode(r.text, r.id)  # every transcript is in SUPERB's character set
    info = sf.info(splits["train"][0].path)
    assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
    mtime = (root / "BUILT.json").stat().st_mtime_ns
    assert build_demo_asr(root, train_minutes=0.3, eval_minutes=0.15, espeak_speakers=4, flite_voices=("slt",)) == root
    assert (root / "BUILT.json").stat().st_mtime_ns == mtime  # built already: nothing redone
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x.txt").write_text("mine")
        build_demo_asr(tmp_path / "other")
