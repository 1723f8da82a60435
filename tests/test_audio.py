from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from corpora.audio import AudioError, audio_info, load_audio
from corpora.manifest import ManifestError, Record, read_manifest, write_manifest


def test_stereo_is_averaged_and_resampled(tmp_path: Path):
    left = np.full(8000, 0.5, dtype=np.float32)
    right = np.full(8000, -0.1, dtype=np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000)
    wav = load_audio(tmp_path / "s.wav")
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert len(wav) == 16000  # 1 s at 8 kHz -> 16 kHz
    assert abs(float(wav[4000:12000].mean()) - 0.2) < 1e-3


def test_segment_read(tmp_path: Path):
    x = np.linspace(-1, 1, 32000, dtype=np.float32)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_24")
    seg = load_audio(tmp_path / "a.flac", start=0.5, duration=0.25)
    assert len(seg) == 4000
    assert abs(float(seg[0]) - x[8000]) < 1e-4


@pytest.mark.parametrize("kind", ["missing", "empty_file", "zero_samples", "corrupt"])
def test_bad_audio_names_the_file(tmp_path: Path, kind: str):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "zero_samples":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    for fn in (load_audio, audio_info):
        with pytest.raises(AudioError) as err:
            fn(path)
        assert str(path) in str(err.value)
    if kind == "missing":
        assert "not found" in str(err.value)
    if kind == "zero_samples":
        assert "empty" in str(err.value)


def test_manifest_round_trip_and_errors(tmp_path: Path):
    recs = [Record("a", str(tmp_path / "a.wav"), 1.5, label="yes", text="tab\tand \"quote\""),
            Record("b", "rel/b.wav", 2.0, start=0.5)]
    path = write_manifest(tmp_path / "m.tsv", recs)
    back = read_manifest(path)
    assert back[0] == recs[0]
    assert back[1].path == str(tmp_path / "rel/b.wav") and back[1].start == 0.5
    (tmp_path / "bad.tsv").write_text("id\tpath\tduration\tcolour\nx\ty\t1\tred\n")
    with pytest.raises(ManifestError, match=r"bad.tsv:1: unknown column"):
        read_manifest(tmp_path / "bad.tsv")
    (tmp_path / "dup.tsv").write_text("id\tpath\tduration\nx\ty\t1\nx\tz\t2\n")
    with pytest.raises(ManifestError, match=r"dup.tsv:3: duplicate id"):
        read_manifest(tmp_path / "dup.tsv")
    (tmp_path / "num.tsv").write_text("id\tpath\tduration\nx\ty\tlong\n")
    with pytest.raises(ManifestError, match=r"num.tsv:2"):
        read_manifest(tmp_path / "num.tsv")
