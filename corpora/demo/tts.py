"""What the demo corpora share: text-to-speech speakers, synthesis, noise and idempotent builds.

A speaker is an espeak-ng English voice with a voice variant (``en-gb-x-rp+f2``) or a flite voice
(``slt``); :func:`speakers_and_split` draws them from a seeded RNG and splits them disjointly into
train / dev / test. :func:`speak` runs the TTS engine and trims the silences around the speech;
:func:`render_sentence` adds coloured noise and writes the clip. A builder computes its ``params``,
asks :func:`needs_build` whether ``root`` already holds a corpus built with them (its ``BUILT.json``),
and otherwise writes everything inside :func:`building`, a hidden sibling renamed into place at the end.
"""
from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpora.audio import SAMPLE_RATE, load_audio, write_audio

log = logging.getLogger(__name__)

ESPEAK_VOICES = (
    "en-gb", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
"""espeak-ng's own English voices (the mbrola ``mb-*`` voices need mbrola and are not used)."""
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
)
"""espeak-ng voice variants (``espeak-ng --voices=variant``), appended to a voice as ``+name``."""
FLITE_VOICES = {"slt": 170.0, "rms": 105.0, "awb": 110.0, "kal16": 105.0}
"""flite voices (``flite -lv``) -> their usual mean F0 in Hz, the centre of the pitch jitter."""

STAMP = "BUILT.json"
"""Written last into a built corpus: ``{"params": ...}`` plus what the builder records (speakers, split)."""
_MISSING_ESPEAK = (
    "espeak-ng is not on PATH: the demo keyword corpus is synthesised with it. Install it "
    "(Debian/Ubuntu: apt-get install espeak-ng), or use any real Speech Commands tree instead with "
    "task.corpus=speech_commands task.root=PATH"
)


@dataclass(frozen=True)
class Speaker:
    """A TTS voice configuration; ``id`` is a file-name token (lowercase letters, digits, hyphens)."""

    id: str
    engine: str  # "espeak-ng" or "flite"
    voice: str  # espeak-ng "voice+variant", or a flite voice name


def available_flite(flite_voices: tuple[str, ...]) -> tuple[str, ...]:
    """``flite_voices``, or none (with a warning) when flite is not installed."""
    if flite_voices and shutil.which("flite") is None:
        log.warning("flite is not on PATH: building without the flite voices %s", list(flite_voices))
        return ()
    return tuple(flite_voices)


def needs_build(root: Path, params: dict) -> bool:
    """False when ``root`` already holds a demo corpus built with ``params`` (its ``BUILT.json``).

    Raises:
        FileExistsError: ``root`` is a non-empty folder that no demo builder made.
        RuntimeError: espeak-ng, which every demo corpus needs, is missing.
    """
    stamp_file = root / STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("params") == params:
        return False
    if root.exists() and not stamp_file.is_file() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not a demo corpus built here (no {STAMP}); choose another folder")
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(_MISSING_ESPEAK)
    return True


def speakers_and_split(
    espeak_speakers: int, flite_voices: tuple[str, ...], rng: random.Random
) -> tuple[list[Speaker], dict[str, list[str]]]:
    """The TTS speakers and their speaker-disjoint train/dev/test split (at least one speaker each)."""
    speakers = _choose_speakers(espeak_speakers, flite_voices, rng)
    if len(speakers) < 3:
        raise ValueError(f"need at least 3 speakers (one per split), got {len(speakers)}")
    return speakers, _split_speakers(speakers, rng)


@contextmanager
def building(root: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``root`` to build in; on success it replaces ``root``
    (:func:`_replace`), on any failure it is deleted, so ``root`` is never left half-built."""
    root.parent.mkdir(parents=True, exist_ok=True)
    build = root.with_name(f".{root.name}.building-{os.getpid()}-{secrets.token_hex(4)}")
    build.mkdir()  # not mkdtemp: its 0700 mode would end up on root
    try:
        yield build
        _replace(build, root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def speak(
    text: str, spk: Speaker, rate: float, pitch: float, scratch_wav: Path, words_per_minute: int = 175
) -> np.ndarray:
    """``text`` spoken by ``spk`` at ``rate`` x ``words_per_minute`` and ``pitch`` in [-1, 1] of the
    voice's range, as 16-kHz float samples with leading and trailing silence trimmed."""
    if spk.engine == "espeak-ng":
        # -s: words per minute (espeak-ng's default 175); -p: pitch 0-99 (default 50).
        cmd = ["espeak-ng", "-v", spk.voice, "-s", str(round(words_per_minute * rate)),
               "-p", str(round(50 + 20 * pitch)), "-w", str(scratch_wav), text]
    else:
        # duration_stretch: >1 is slower; int_f0_target_mean: mean pitch in Hz.
        f0 = FLITE_VOICES[spk.voice] * (1 + 0.15 * pitch)
        cmd = ["flite", "-voice", spk.voice, "--setf", f"duration_stretch={1 / rate:.3f}",
               "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(scratch_wav)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        stderr = e.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(cmd)} failed ({e.returncode}): {stderr}") from None
    speech = _trim_silence(load_audio(scratch_wav).numpy())
    scratch_wav.unlink()
    if speech.size == 0:
        raise RuntimeError(f"{spk.engine} voice {spk.voice!r} produced silence for {text!r}")
    return speech


def render_sentence(build: Path, scratch: Path, rel: Path, stem: str, text: str, spk: Speaker, rate: float,
                    pitch: float, snr_db: float, seed: int) -> float:
    """Speak ``text`` with ``spk`` at ``rate`` (x default speed) and ``pitch`` (in [-1, 1] of the voice's range),
    trim silence, add coloured noise at ``snr_db``, write ``build/rel`` (any soundfile format); returns its seconds."""
    speech = speak(text, spk, rate, pitch, scratch / f"{stem}.wav", words_per_minute=165)
    rng = np.random.default_rng(seed)
    speech = speech * (rng.uniform(0.3, 0.9) / np.abs(speech).max())
    noise = coloured_noise(rng, speech.size, exponent=float(rng.choice([0.0, 1.0, 2.0])))
    out = speech + noise * np.sqrt(np.mean(speech**2)) * 10 ** (-snr_db / 20)
    write_audio(build / rel, out.astype(np.float32))
    return speech.size / 16000


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), flat below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, 20.0) ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def _choose_speakers(num_espeak: int, flite_voices: tuple[str, ...], rng: random.Random) -> list[Speaker]:
    """espeak-ng speakers cycling through the voices, each voice with its own shuffled variants; then flite."""
    variant_orders = [rng.sample(ESPEAK_VARIANTS, len(ESPEAK_VARIANTS)) for _ in ESPEAK_VOICES]
    speakers = []
    for i in range(num_espeak):
        voice = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        variant = variant_orders[i % len(ESPEAK_VOICES)][i // len(ESPEAK_VOICES)]
        speakers.append(Speaker(id=f"espeak-{voice}-{variant}", engine="espeak-ng", voice=f"{voice}+{variant}"))
    speakers += [Speaker(id=f"flite-{v}", engine="flite", voice=v) for v in flite_voices]
    return speakers


def _split_speakers(speakers: list[Speaker], rng: random.Random) -> dict[str, list[str]]:
    """Speaker ids per split: about 15 % (at least one) each for dev and test, the rest train."""
    ids = [s.id for s in speakers]
    rng.shuffle(ids)
    held_out = max(1, round(0.15 * len(ids)))
    return {
        "train": sorted(ids[2 * held_out:]),
        "dev": sorted(ids[:held_out]),
        "test": sorted(ids[held_out:2 * held_out]),
    }


def _trim_silence(wav: np.ndarray, frame: int = 160, floor_db: float = -40.0, margin: int = 320) -> np.ndarray:
    """Cut leading and trailing 10-ms frames more than ``-floor_db`` dB below the loudest; keep ``margin`` samples."""
    rms = np.sqrt(np.mean(wav[: wav.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max(initial=0.0) * 10 ** (floor_db / 20))
    if loud.size == 0:  # silent or shorter than one frame
        return wav[:0]
    return wav[max(0, loud[0] * frame - margin): (loud[-1] + 1) * frame + margin]


def _replace(build: Path, root: Path) -> None:
    """Rename ``build`` to ``root``; an old demo corpus at ``root`` is moved aside first, then deleted."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.rename(root, old)
    os.rename(build, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
