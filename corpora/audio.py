"""Reading audio: soundfile for decoding, torchaudio for resampling, one error type naming the file."""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000
"""The sample rate (Hz) every upstream consumes."""


class AudioError(RuntimeError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@contextmanager
def _reading(path: str | Path):
    """Turn soundfile's errors while reading ``path`` into :class:`AudioError` (missing or unreadable)."""
    try:
        yield
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except (sf.LibsndfileError, RuntimeError) as e:
        if not Path(path).exists():
            raise AudioError(path, "file not found") from None
        raise AudioError(path, f"unreadable audio ({e})") from None


def audio_info(path: str | Path) -> tuple[float, int]:
    """Return (duration in seconds, sample rate) without decoding the samples."""
    with _reading(path):
        info = sf.info(str(path))
    if info.frames == 0:
        raise AudioError(path, "empty audio (0 samples)")
    return info.frames / info.samplerate, info.samplerate


_DATA_SIZE_NOTE = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")
_PAST_END_NOTE = re.compile(r"chunk size \d+ > file length", re.IGNORECASE)
_STREAMED = (0, 0xFFFFFFFF)
"""Data sizes a streaming writer leaves in a WAV header: not damage."""
SHORTFALL_SECONDS = 0.02
"""How much shorter than its manifest asks a segment may decode (durations are rounded) before it is an error."""


def _header_damage(extra_info: str) -> list[str]:
    """libsndfile's notes that a header disagrees with the file: a data chunk claiming more bytes than
    there are (not a streamed 0 / 0xFFFFFFFF size), or a chunk running past the end of the file."""
    notes = []
    for line in extra_info.splitlines():
        size = _DATA_SIZE_NOTE.search(line)
        if (size and int(size[1]) > int(size[2]) and int(size[1]) not in _STREAMED) or _PAST_END_NOTE.search(line):
            notes.append(line.strip())
    return notes
BLOCK_FRAMES = 1 << 20
"""Frames decoded at a time by :func:`check_audio` (bounded memory on hour-long files)."""


def check_audio(path: str | Path) -> float:
    """Decode the whole file once; return its duration in seconds.

    Raises:
        AudioError: missing, unreadable, empty, a header that disagrees with the data (libsndfile's
            notes), fewer samples decoded than the header promises (a file cut short, a damaged
            FLAC stream), or NaN / infinite samples.
    """
    path = str(path)
    with _reading(path):
        info = sf.info(path)
        damage = _header_damage(info.extra_info)
        if damage:
            raise AudioError(path, f"damaged header (libsndfile: {'; '.join(damage)})")
        if info.frames == 0:
            raise AudioError(path, "empty audio (0 samples)")
        decoded = 0
        with sf.SoundFile(path) as f:
            for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(path, "audio contains NaN or infinite samples")
                decoded += block.shape[0]
    if decoded != info.frames:
        raise AudioError(path, f"truncated: the header promises {info.frames} samples, {decoded} decode")
    return info.frames / info.samplerate


def load_audio(
    path: str | Path,
    start: float = 0.0,
    duration: float | None = None,
    target_sr: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Read a segment of an audio file as mono float32 at ``target_sr``.

    Args:
        path: any format libsndfile reads (wav, flac, ogg, mp3).
        start: segment start in seconds.
        duration: segment length in seconds (None: to the end of the file).
        target_sr: output sample rate in Hz; other rates are resampled with torchaudio.

    Returns:
        (num_samples,) float32 tensor in [-1, 1]. Multi-channel audio is averaged to mono.

    Raises:
        AudioError: missing, unreadable, empty, truncated or non-finite audio.
    """
    path = str(path)
    with _reading(path), sf.SoundFile(path) as f:
        sr = f.samplerate
        first = int(round(start * sr))
        if first:
            f.seek(first)
        frames = -1 if duration is None else int(round(duration * sr))
        data = f.read(frames=frames, dtype="float32", always_2d=True)
        available = max(f.frames - first, 0)
    if data.shape[0] == 0:
        raise AudioError(path, "empty audio (0 samples)" if start == 0 else f"no samples at offset {start:.3f} s")
    if data.shape[0] < (available if frames < 0 else min(frames, available)):
        raise AudioError(path, f"truncated: {data.shape[0]} of the {available} samples its header promises decode")
    if frames > available + int(SHORTFALL_SECONDS * sr):  # the file is shorter than its manifest says: changed since
        raise AudioError(path, f"truncated: {available} samples from {start:.3f} s, {frames} asked for")
    if not np.isfinite(data).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if sr != target_sr:
        wav = AF.resample(wav, sr, target_sr)
    return wav


def write_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono audio (float in [-1, 1]) with soundfile; the format follows the file suffix."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    sf.write(str(path), np.clip(data, -1.0, 1.0), sample_rate)


def audio_folder(root: str | Path) -> Path:
    """Where a released corpus keeps its audio: ``<root>/wav`` (VoxCeleb1, EmoDB), else ``root`` itself."""
    root = Path(root)
    return root / "wav" if (root / "wav").is_dir() else root
