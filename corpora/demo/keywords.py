"""A synthetic keyword-spotting corpus in the Speech Commands v0.01 layout, for demos and smoke tests.

Every clip is a word spoken by a text-to-speech "speaker": an espeak-ng English voice with a voice
variant (``en-gb-x-rp+f2``), or a flite voice (``slt``) when flite is installed. Each speaker says each
word a few times at a random speed and pitch; the clip is centred at a random offset in exactly 1.0 s
with low-level noise (15-35 dB SNR). Speakers are split disjointly into train / validation / test
(about 70/15/15), and ``_background_noise_`` holds seeded white, pink, brown noise and a mains hum.

Read it like any Speech Commands tree: ``task.corpus=speech_commands task.root=OUT_DIR``.

CLI: ``python -m corpora.demo keywords OUT_DIR`` builds it and prints counts per split.
"""
from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpora.audio import SAMPLE_RATE, write_audio
from corpora.speech_commands import NOISE_DIR, SUPERB_KEYWORDS

from .tts import (
    ESPEAK_VARIANTS,
    ESPEAK_VOICES,
    FLITE_VOICES,
    STAMP,
    Speaker,
    available_flite,
    building,
    coloured_noise,
    needs_build,
    speak,
    speakers_and_split,
)

log = logging.getLogger(__name__)

UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house")
"""Non-keywords: SUPERB's reader maps them to ``_unknown_``."""
DEMO_WORDS = (*SUPERB_KEYWORDS, *UNKNOWN_WORDS)

CLIP_SAMPLES = SAMPLE_RATE  # every clip is exactly 1.0 s
VERSION = 1
_NOISE_FILES = {"white_noise": (0.0, 60.0), "pink_noise": (1.0, 60.0), "brown_noise": (2.0, 45.0)}
"""Background file -> (spectral exponent: power ~ 1/f^exponent, seconds)."""
_HUM_SECONDS = 30.0


@dataclass(frozen=True)
class _Clip:
    """One clip to synthesise: ``rel`` is its path under the corpus root, the rest its random settings."""

    rel: str
    word: str
    speaker: Speaker
    rate: float  # speaking rate relative to the engine's default (1.0)
    pitch: float  # pitch shift in [-1, 1] of the voice's range
    peak: float  # speech peak amplitude (full scale 1.0)
    snr_db: float  # speech-to-noise ratio in dB
    seed: int  # noise colour, noise samples and placement within the 1-s window


def build_demo_keywords(
    root: str | Path,
    words: tuple[str, ...] = DEMO_WORDS,
    espeak_speakers: int = 24,
    flite_voices: tuple[str, ...] = tuple(FLITE_VOICES),
    repeats: int = 2,
    seed: int = 0,
    workers: int = 4,
) -> Path:
    """Synthesise the demo corpus under ``root``, or return at once when it is already built.

    Args:
        root: output folder; built in a hidden temporary sibling and renamed into place, so an
            interrupted build leaves ``root`` untouched. An existing demo corpus built with other
            settings is replaced; any other non-empty folder is refused.
        words: word folders to make (lowercase letters); non-keywords become ``_unknown_``.
        espeak_speakers: number of espeak-ng speakers (voice x variant), at most 120.
        flite_voices: flite voices used as extra speakers when flite is installed (skipped with a
            warning otherwise); names from ``FLITE_VOICES``.
        repeats: clips per speaker and word, each at its own speed and pitch.
        seed: seeds speaker choice, split, speed, pitch, level, noise and placement.
        workers: parallel TTS jobs (threads).

    Returns:
        ``root``. It holds ``<word>/<speaker>_nohash_<n>.wav`` (16 kHz mono 16-bit PCM, 1.0 s),
        ``validation_list.txt``, ``testing_list.txt``, ``_background_noise_/*.wav`` and, written
        last, ``BUILT.json`` with the settings, speakers and split.

    Raises:
        RuntimeError: espeak-ng is missing, or a TTS call fails.
        ValueError: bad settings (fewer than 3 speakers, unknown flite voice, unsafe word names).
        FileExistsError: ``root`` is a non-empty folder that this function did not build.
    """
    root = Path(root)
    bad_words = [w for w in words if not (w.isascii() and w.isalpha() and w.islower())]
    if not words or bad_words or len(set(words)) != len(words):
        raise ValueError(f"words must be distinct lowercase ASCII letters only, got {list(words)}")
    unknown_flite = sorted(set(flite_voices) - set(FLITE_VOICES))
    if unknown_flite:
        raise ValueError(f"unknown flite voice(s) {unknown_flite}; known: {sorted(FLITE_VOICES)}")
    max_espeak = len(ESPEAK_VOICES) * len(ESPEAK_VARIANTS)
    if not 0 <= espeak_speakers <= max_espeak:
        raise ValueError(f"espeak_speakers must be in [0, {max_espeak}], got {espeak_speakers}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    flite_voices = available_flite(flite_voices)
    params = {
        "version": VERSION,
        "words": list(words),
        "espeak_speakers": espeak_speakers,
        "flite_voices": list(flite_voices),
        "repeats": repeats,
        "seed": seed,
    }
    if not needs_build(root, params):
        return root
    rng = random.Random(seed)
    speakers, split = speakers_and_split(espeak_speakers, flite_voices, rng)
    clips = [
        _Clip(
            rel=f"{word}/{spk.id}_nohash_{n}.wav",
            word=word,
            speaker=spk,
            rate=rng.uniform(0.75, 1.15),
            pitch=rng.uniform(-1.0, 1.0),
            peak=rng.uniform(0.3, 0.9),
            snr_db=rng.uniform(15.0, 35.0),
            seed=rng.getrandbits(32),
        )
        for spk in speakers
        for word in words
        for n in range(repeats)
    ]

    started = time.monotonic()
    with building(root) as build:
        with (tempfile.TemporaryDirectory(prefix="demo-kw-tts-") as scratch,
              ThreadPoolExecutor(max(1, workers)) as pool):
            # list() re-raises the first failure of any job.
            list(pool.map(lambda job: _render(job[1], build, Path(scratch) / f"{job[0]}.wav"), enumerate(clips)))
        _write_background_noise(build / NOISE_DIR, seed)
        for list_name, name in (("validation_list.txt", "dev"), ("testing_list.txt", "test")):
            ids = set(split[name])
            (build / list_name).write_text("".join(f"{c.rel}\n" for c in clips if c.speaker.id in ids))
        stamp = {
            "params": params,
            "speakers": {s.id: f"{s.engine} {s.voice}" for s in speakers},
            "split": split,
        }
        (build / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    log.info("built %d demo keyword clips in %s (%.1f s)", len(clips), root, time.monotonic() - started)
    return root


def split_counts(root: str | Path) -> dict[str, Counter]:
    """Clips per split (train/dev/test) and word folder of a Speech Commands tree."""
    root = Path(root)
    split_of = {}
    for list_name, name in (("validation_list.txt", "dev"), ("testing_list.txt", "test")):
        split_of.update(dict.fromkeys((root / list_name).read_text().split(), name))
    counts: dict[str, Counter] = {s: Counter() for s in ("train", "dev", "test")}
    for wav in sorted(root.glob("[!_]*/*.wav")):
        counts[split_of.get(f"{wav.parent.name}/{wav.name}", "train")][wav.parent.name] += 1
    return counts


def _render(clip: _Clip, build: Path, scratch_wav: Path) -> None:
    """Synthesise one word, trim its silences, place it in 1.0 s of noise and write it under ``build``."""
    speech = speak(clip.word, clip.speaker, clip.rate, clip.pitch, scratch_wav)
    if speech.size > CLIP_SAMPLES:  # keep the middle second
        first = (speech.size - CLIP_SAMPLES) // 2
        speech = speech[first:first + CLIP_SAMPLES]
    speech = speech * (clip.peak / np.abs(speech).max())

    rng = np.random.default_rng(clip.seed)
    noise = coloured_noise(rng, CLIP_SAMPLES, exponent=float(rng.choice([0.0, 1.0, 2.0])))
    speech_rms = np.sqrt(np.mean(speech**2))
    out = noise * speech_rms * 10 ** (-clip.snr_db / 20)
    offset = int(rng.integers(0, CLIP_SAMPLES - speech.size + 1))
    out[offset:offset + speech.size] += speech
    write_audio(build / clip.rel, out.astype(np.float32))


def _write_background_noise(folder: Path, seed: int, rms: float = 0.1) -> None:
    """White, pink and brown noise (45-60 s) and a 30-s mains hum (50 or 60 Hz), each at ``rms`` full scale."""
    rng = np.random.default_rng([seed, 1])
    for name, (exponent, seconds) in _NOISE_FILES.items():
        noise = rms * coloured_noise(rng, int(seconds * SAMPLE_RATE), exponent)
        write_audio(folder / f"{name}.wav", noise.astype(np.float32))
    t = np.arange(int(_HUM_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    mains = float(rng.choice([50.0, 60.0]))
    hum = sum(np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
    hum *= 1 + 0.3 * np.sin(2 * np.pi * 0.2 * t)  # slow 0.2-Hz swell
    hum = hum / np.sqrt(np.mean(hum**2)) + 0.1 * coloured_noise(rng, t.size, 1.0)  # plus faint pink hiss
    write_audio(folder / "mains_hum.wav", (rms * hum).astype(np.float32))
