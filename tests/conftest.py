"""Shared fixtures: tiny corpora written by the tests, and the real data in ../shared/data when present."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SR = 16_000
WORDS = {"yes": 300.0, "no": 600.0, "bed": 1200.0}
"""Word -> tone frequency (Hz): each 'word' of the tiny corpus is a noisy tone, so classes are learnable."""


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test saying that it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (tests that need ../shared/data are skipped)")
    return path


@contextlib.contextmanager
def killed_at_update(n: int):
    """A training run in this block is killed (KeyboardInterrupt, expected here) at its ``n``-th
    optimiser update: the training loops clip gradients once per update, and the ``n``-th call raises."""
    real_clip, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def clip(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real_clip(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
        yield


def noise_batch(lengths, seed: int = 0):
    """Zero-padded (B, S_max) batch of 0.1-scaled Gaussian noise of the given lengths, and (B,) lengths."""
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


def mask_runs(row: list[int]) -> list[int]:
    """The lengths of the runs of ones in a 0/1 mask row, in order."""
    runs, n = [], 0
    for v in row + [0]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def tone(freq: float, seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    jitter = freq * (1 + 0.05 * rng.standard_normal())
    return (0.3 * np.sin(2 * np.pi * jitter * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def make_speech_commands(root: Path, speakers=("alice", "bob", "carol", "dave", "erin"), takes: int = 4,
                         seed: int = 0) -> Path:
    """A Speech Commands v0.01 tree: word folders of 1-s tones, speaker-disjoint lists, background noise.

    Speaker ``dave`` is the validation speaker, ``erin`` the test speaker.
    """
    rng = np.random.default_rng(seed)
    val, test = [], []
    for word, freq in WORDS.items():
        (root / word).mkdir(parents=True, exist_ok=True)
        for spk in speakers:
            for n in range(takes):
                rel = f"{word}/{spk}_nohash_{n}.wav"
                sf.write(root / rel, tone(freq, rng.uniform(0.6, 1.0), rng), SR)
                if spk == "dave":
                    val.append(rel)
                elif spk == "erin":
                    test.append(rel)
    (root / "_background_noise_").mkdir(exist_ok=True)
    sf.write(root / "_background_noise_" / "white.wav", (0.05 * rng.standard_normal(SR * 20)).astype(np.float32), SR)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def sc_root(tmp_path: Path) -> Path:
    return make_speech_commands(tmp_path / "sc")


def tone_transcripts(root: Path, tones: dict[str, float], tones_per_word: int, words: int = 2) -> Path:
    """A tiny LibriSpeech-layout corpus (24 train, 6 dev, 6 test utterances, one speaker each) whose
    transcripts are spoken as tones: every key of ``tones`` is a 0.15-s tone of its frequency,
    ``tones_per_word`` keys make a word (written together), ``words`` words an utterance. CTC can
    learn to read them."""
    rng = np.random.default_rng(0)
    for split, folder, n in (("train", "librispeech_finetuning/1h/0/clean", 24), ("dev", "LibriSpeech/dev-clean", 6),
                             ("test", "LibriSpeech/test-clean", 6)):
        spk = {"train": 1, "dev": 2, "test": 3}[split]
        d = root / folder / str(spk) / "10"
        d.mkdir(parents=True)
        lines = []
        for i in range(n):
            utterance = [list(rng.choice(list(tones), size=tones_per_word)) for _ in range(words)]
            pieces = []
            for word in utterance:
                for unit in word:
                    t = np.arange(int(0.15 * SR)) / SR
                    pieces.append(0.3 * np.sin(2 * np.pi * tones[unit] * t))
                    pieces.append(np.zeros(800))
                pieces.append(np.zeros(3200))
            audio = np.concatenate(pieces) + 0.01 * rng.standard_normal(sum(len(p) for p in pieces))
            sf.write(d / f"{spk}-10-{i:04d}.flac", audio.astype(np.float32), SR)
            lines.append(f"{spk}-10-{i:04d} {' '.join(''.join(word) for word in utterance)}")
        (d / f"{spk}-10.trans.txt").write_text("\n".join(lines) + "\n")
    return root
