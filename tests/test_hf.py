"""Hugging Face datasets as a corpus source: save_to_disk and parquet layouts built here, audio
left undecoded (datasets' decoding needs torchcodec) and decoded by soundfile; errors; a KS run."""
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

datasets = pytest.importorskip("datasets")

from core.config import parse_overrides  # noqa: E402  (after importorskip)
from corpora.hf import load_split, prepare_hf, read_hf_splits  # noqa: E402  (after importorskip)
from corpora.manifest import read_manifest  # noqa: E402  (after importorskip)
from downstream.runner import Experiment, RunSpec, resolve_config  # noqa: E402  (after importorskip)

WORDS = ["low", "mid", "high"]


def _encoded(seconds: float, freq: float, fmt: str = "FLAC") -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), 16000, format=fmt)
    return buffer.getvalue()


def _keyword_split(takes: int, first_speaker: int):
    """Tones of three pitches as three 'keywords', ``takes`` each, like Speech Commands on the Hub."""
    rows = {"file": [], "audio": [], "label": [], "speaker_id": []}
    for k, (word, freq) in enumerate(zip(WORDS, (300.0, 900.0, 2000.0), strict=True)):
        for n in range(takes):
            name = f"{word}/spk{first_speaker + n}_nohash_0.wav"
            rows["file"].append(name)
            rows["audio"].append({"bytes": _encoded(0.5 + 0.1 * n, freq), "path": name})
            rows["label"].append(k)
            rows["speaker_id"].append(f"spk{first_speaker + n}")
    split = datasets.Dataset.from_dict(rows)
    return (split.cast_column("audio", datasets.Audio(sampling_rate=16000, decode=False))
            .cast_column("label", datasets.ClassLabel(names=WORDS)))


@pytest.fixture(scope="module")
def keyword_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "speech_commands"
    datasets.DatasetDict(train=_keyword_split(4, 0), validation=_keyword_split(2, 10),
                         test=_keyword_split(2, 20)).save_to_disk(str(path))
    return path


def test_save_to_disk_dataset_becomes_a_manifest(keyword_dataset: Path, tmp_path: Path):
    manifest = prepare_hf(keyword_dataset, tmp_path, {"train": "train"}, ("label",))["train"]
    records = read_manifest(manifest)
    assert len(records) == 12
    first = records[0]
    assert first.id == "spk0_nohash_0" and first.label == "low" and first.speaker == "spk0"
    assert first.duration == pytest.approx(0.5) and first.path.endswith(".flac")
    wav, sr = sf.read(first.path)
    assert sr == 16000 and len(wav) == 8000
    assert {r.label for r in records} == set(WORDS)  # class ids stored as their names
    mtime = Path(first.path).stat().st_mtime_ns
    assert prepare_hf(keyword_dataset, tmp_path, {"train": "train"}, ("label",)) == {"train": manifest}  # idempotent
    assert Path(first.path).stat().st_mtime_ns == mtime


def test_parquet_layout_for_translation(tmp_path: Path):
    rows = {"id": ["a", "b"], "client_id": ["c1", "c2"], "sentence": ["A dog runs.", "Two cats."],
            "translation": ["Ein Hund rennt.", "Zwei Katzen."],
            "audio": [{"bytes": _encoded(0.4, 440.0, "WAV"), "path": "a.wav"},
                      {"bytes": _encoded(0.6, 660.0, "OGG"), "path": "b.ogg"}]}
    split = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    for name in ("train", "validation", "test"):
        split.to_parquet(str(tmp_path / "covost" / "data" / f"{name}-00000-of-00001.parquet"))
    records = read_hf_splits(tmp_path / "covost", ["train", "validation", "test"], tmp_path / "out", "st")
    assert set(records) == {"train", "dev", "test"}
    a, b = records["test"]
    assert (a.text, a.translation, a.speaker) == ("A dog runs.", "Ein Hund rennt.", "c1")
    assert a.path.endswith(".wav") and b.path.endswith(".ogg")  # bytes kept in their own format
    assert b.duration == pytest.approx(0.6, abs=1e-3)


def test_errors_name_the_dataset_split_and_row(keyword_dataset: Path, tmp_path: Path):
    with pytest.raises(KeyError, match="no split 'dev'.*train, validation, test"):
        load_split(keyword_dataset, "dev")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="no column for text"):
        prepare_hf(keyword_dataset, tmp_path / "asr", {"train": "train"}, ("text",))
    broken = datasets.Dataset.from_dict({"audio": [{"bytes": _encoded(0.3, 500.0), "path": "ok.flac"},
                                                   {"bytes": b"not audio at all", "path": "bad.flac"}],
                                         "text": ["OK", "BAD"]}).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict(train=broken).save_to_disk(str(tmp_path / "broken"))
    manifests = prepare_hf(tmp_path / "broken", tmp_path / "out", {"train": "train"}, ("text",))
    assert [r.text for r in read_manifest(manifests["train"])] == ["OK"]  # the unreadable row is skipped and listed
    listed = (tmp_path / "out" / "skipped-hf.tsv").read_text()
    assert "broken:train row 1 (1)" in listed and "unreadable audio" in listed


def test_keyword_spotting_trains_on_a_hf_dataset(keyword_dataset: Path, tmp_path: Path):
    spec = RunSpec("ks", "fbank_global")
    overrides = ["task.corpus=hf", f"task.root={keyword_dataset}", f"cache.root={tmp_path / 'cache'}",
                 "train.total_steps=30", "train.eval_every=10", "train.batch_size=6", "train.lr=0.01"]
    results = Experiment.create(tmp_path / "exp", "hf", spec,
                                resolve_config(spec, {}, parse_overrides(overrides))).train()
    assert results["dataset"] == f"hf:{keyword_dataset.name}" and results["track"] == "ks"
    assert results["splits"]["test"]["utterances"] == 6
    assert results["splits"]["test"]["accuracy"] >= 2 / 3  # three pitches: far above chance (1/3)
