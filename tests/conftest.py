"""Shared fixtures: tiny corpora written by the tests, and the real data in ../shared/data when present."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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
    import torch  # noqa: PLC0415

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
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


def tone(freq: float, seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    jitter = freq * (1 + 0.05 * rng.standard_normal())
    return (0.3 * np.sin(2 * np.pi * jitter * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def make_speech_commands(root: Path, speakers=("alice", "bob", "carol", "dave", "erin"), takes: int = 4, seed: int = 0) -> Path:
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
