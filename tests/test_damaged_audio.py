"""Damaged audio is found once, at preparation, and skipped consistently: a FLAC cut after its header,
WAVs whose data-chunk size is wrong, NaN samples; KS, ASR and pre-training's scan go on without them,
and the results of the good files do not change."""
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import corpora.manifest as manifest
from core.config import parse_overrides
from corpora.audio import AudioError, check_audio, load_audio
from corpora.folder import scan_audio
from downstream.runner import Experiment, RunSpec, resolve_config

from .conftest import SR, make_speech_commands, tone, tone_transcripts


def _flac_cut_after_header(path: Path, seconds: float = 0.8) -> None:
    """A valid FLAC header (duration and all) followed by a third of its frames: decoders lose sync."""
    sf.write(path, tone(500.0, seconds, np.random.default_rng(1)), SR, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def _wav_with_chunk_size(path: Path, factor: float) -> None:
    """A WAV whose data-chunk size field is ``factor`` times the real one."""
    sf.write(path, tone(700.0, 0.8, np.random.default_rng(2)), SR, subtype="PCM_16", format="WAV")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    data[at + 4:at + 8] = struct.pack("<I", int(size * factor))
    path.write_bytes(bytes(data))


def test_check_audio_finds_damage_that_the_header_hides(tmp_path: Path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(300.0, 0.5, np.random.default_rng(0)), SR)
    assert check_audio(good) == pytest.approx(0.5, abs=1e-3)
    _flac_cut_after_header(tmp_path / "cut.flac")
    assert sf.info(tmp_path / "cut.flac").frames > 0  # the header alone looks fine
    _wav_with_chunk_size(tmp_path / "long.wav", 2.0)
    _wav_with_chunk_size(tmp_path / "short.wav", 0.5)
    sf.write(tmp_path / "nan.wav", np.full(800, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    for name, reason in (("cut.flac", "unreadable audio"), ("long.wav", "damaged header"),
                         ("short.wav", "damaged header"), ("nan.wav", "NaN")):
        with pytest.raises(AudioError, match=reason) as err:
            check_audio(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_valid_wavs_with_unusual_headers_pass(tmp_path: Path):
    """An 8-bit WAV with an odd number of samples (libsndfile notes the missing pad byte) and a WAV
    streamed with a 0xFFFFFFFF data size decode fully: not damage."""
    sf.write(tmp_path / "u8.wav", tone(300.0, 0.25, np.random.default_rng(0))[:3201], SR, subtype="PCM_U8")
    assert check_audio(tmp_path / "u8.wav") == pytest.approx(3201 / SR)
    sf.write(tmp_path / "stream.wav", tone(300.0, 0.5, np.random.default_rng(0)), SR, subtype="PCM_16")
    data = bytearray((tmp_path / "stream.wav").read_bytes())
    at = data.find(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    assert check_audio(tmp_path / "stream.wav") == pytest.approx(0.5, abs=1e-3)


def test_a_file_cut_after_preparation_is_an_error_naming_it(tmp_path: Path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(300.0, 1.0, np.random.default_rng(0)), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # the header still promises 1 s
    with pytest.raises(AudioError, match=r"a\.wav: .*(truncated|damaged)"):
        load_audio(path, 0.0, 1.0)


def test_parallel_and_serial_checks_agree(tmp_path: Path, monkeypatch):
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.flac"
        sf.write(p, tone(300.0 + 50 * i, 0.3, np.random.default_rng(i)), SR)
        paths.append(str(p))
    _flac_cut_after_header(tmp_path / "cut.flac")
    paths.append(str(tmp_path / "cut.flac"))
    serial = manifest.check_files(paths)
    monkeypatch.setattr(manifest, "PARALLEL_FROM", 2)
    monkeypatch.setattr(manifest.os, "cpu_count", lambda: 2)  # worker processes even on a one-core machine
    assert manifest.check_files(paths) == serial and list(serial) == [str(tmp_path / "cut.flac")]


def _damage_speech_commands(root: Path) -> list[Path]:
    """Extra training takes that are damaged (the good files stay as they were)."""
    damaged = [root / "yes" / "frank_nohash_0.flac", root / "no" / "frank_nohash_0.wav",
               root / "bed" / "gina_nohash_1.wav"]
    _flac_cut_after_header(damaged[0])
    _wav_with_chunk_size(damaged[1], 2.0)
    _wav_with_chunk_size(damaged[2], 0.5)
    return damaged


def _ks(tmp_path: Path, name: str, root: Path) -> dict:
    overrides = ["task.corpus=speech_commands", f"task.root={root}", "task.classes=all",
                 f"cache.root={tmp_path / 'cache'}", "train.total_steps=30", "train.eval_every=10",
                 "train.save_every=10", "train.batch_size=8", "train.lr=0.01"]
    spec = RunSpec("ks", "fbank_global")
    return Experiment.create(tmp_path / "exp", name, spec, resolve_config(spec, {}, parse_overrides(overrides))).train()


def test_ks_trains_to_the_end_and_the_good_files_give_the_same_numbers(tmp_path: Path):
    clean = make_speech_commands(tmp_path / "clean")
    dirty = tmp_path / "dirty"
    shutil.copytree(clean, dirty)
    damaged = _damage_speech_commands(dirty)
    a, b = _ks(tmp_path, "clean", clean), _ks(tmp_path, "dirty", dirty)
    for split in a["splits"]:
        assert ({k: v for k, v in a["splits"][split].items() if k != "seconds"}
                == {k: v for k, v in b["splits"][split].items() if k != "seconds"})
    listed = (tmp_path / "exp" / "dirty" / "manifests" / "skipped-speech_commands.tsv").read_text()
    assert all(str(p) in listed for p in damaged)
    assert (tmp_path / "exp" / "clean" / "manifests" / "skipped-speech_commands.tsv").read_text() == "where\treason\n"


def test_asr_trains_to_the_end_without_damaged_utterances(tmp_path: Path):
    def corpus(root: Path) -> Path:
        return tone_transcripts(root, {"A": 300.0, "B": 700.0, "C": 1500.0}, tones_per_word=2)

    def run(name: str, root: Path) -> dict:
        overrides = ["task.corpus=librispeech", f"task.root={root}", "task.proj_dim=32", "task.lstm_dim=32",
                     "task.specaug=false", f"cache.root={tmp_path / 'cache'}", "train.lr=0.01", "train.batch_size=8",
                     "train.eval_every=10", "train.save_every=10", "train.total_steps=20"]
        spec = RunSpec("asr", "fbank")
        return Experiment.create(tmp_path / "exp", name, spec, resolve_config(spec, {}, parse_overrides(overrides)))

    clean, dirty = corpus(tmp_path / "clean"), corpus(tmp_path / "dirty")
    chapter = dirty / "librispeech_finetuning" / "1h" / "0" / "clean" / "1" / "10"
    _flac_cut_after_header(chapter / "1-10-0100.flac")
    _wav_with_chunk_size(chapter / "1-10-0101.wav", 2.0)
    with open(chapter / "1-10.trans.txt", "a") as f:
        f.write("1-10-0100 AB CA\n1-10-0101 BB AC\n")
    a, b = run("clean", clean).train(), run("dirty", dirty).train()
    for split in a["splits"]:
        assert ({k: v for k, v in a["splits"][split].items() if k != "seconds"}
                == {k: v for k, v in b["splits"][split].items() if k != "seconds"})
    listed = (tmp_path / "exp" / "dirty" / "manifests" / "skipped-librilight.tsv").read_text()
    assert "1-10-0100.flac" in listed and "1-10-0101.wav" in listed
    stamp = json.loads((tmp_path / "exp" / "dirty" / "manifests" / "prepared-librilight.json").read_text())
    assert stamp["stamp"]["audio_check"] == manifest.AUDIO_CHECK_VERSION


def test_pretraining_scan_skips_damaged_files_instead_of_failing(tmp_path: Path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"good{i}.flac", tone(300.0 + 100 * i, 1.0, np.random.default_rng(i)), SR)
    _flac_cut_after_header(folder / "cut.flac")
    sf.write(folder / "nan.wav", np.full(8000, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    records, skipped = scan_audio(folder)
    assert sorted(Path(r.path).name for r in records) == ["good0.flac", "good1.flac", "good2.flac"]
    assert {Path(w).name for w, _ in skipped} == {"cut.flac", "nan.wav"}
