"""A synthetic keyword-spotting corpus in the Speech Commands v0.01 layout, for demos and smoke tests.

Every clip is a word spoken by a text-to-speech "speaker": an espeak-ng English voice with a voice
variant (``en-gb-x-rp+f2``), or a flite voice (``slt``) when flite is installed. Each speaker says each
word a few times at a random speed and pitch; the clip is centred at a random offset in exactly 1.0 s
with low-level noise (15-35 dB SNR). Speakers are split disjointly into train / validation / test
(about 70/15/15), and ``_background_noise_`` holds seeded white, pink, brown noise and a mains hum.

Read it like any Speech Commands tree: ``task.corpus=speech_commands task.root=OUT_DIR``.

CLI: ``python -m corpora.synth keywords OUT_DIR`` builds it and prints counts per split.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, load_audio, write_audio
from .speech_commands import NOISE_DIR, SUPERB_KEYWORDS

log = logging.getLogger(__name__)

UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house")
"""Non-keywords: SUPERB's reader maps them to ``_unknown_``."""
DEMO_WORDS = (*SUPERB_KEYWORDS, *UNKNOWN_WORDS)

ESPEAK_VOICES = ("en-gb", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
"""espeak-ng's own English voices (the mbrola ``mb-*`` voices need mbrola and are not used)."""
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
"""espeak-ng voice variants (``espeak-ng --voices=variant``), appended to a voice as ``+name``."""
FLITE_VOICES = {"slt": 170.0, "rms": 105.0, "awb": 110.0, "kal16": 105.0}
"""flite voices (``flite -lv``) -> their usual mean F0 in Hz, the centre of the pitch jitter."""

CLIP_SAMPLES = SAMPLE_RATE  # every clip is exactly 1.0 s
STAMP = "BUILT.json"
VERSION = 1
_NOISE_FILES = {"white_noise": (0.0, 60.0), "pink_noise": (1.0, 60.0), "brown_noise": (2.0, 45.0)}
"""Background file -> (spectral exponent: power ~ 1/f^exponent, seconds)."""
_HUM_SECONDS = 30.0
_MISSING_ESPEAK = (
    "espeak-ng is not on PATH: the demo keyword corpus is synthesised with it. Install it "
    "(Debian/Ubuntu: apt-get install espeak-ng), or use any real Speech Commands tree instead with "
    "task.corpus=speech_commands task.root=PATH"
)


@dataclass(frozen=True)
class _Speaker:
    """A TTS voice configuration; ``id`` is a file-name token (lowercase letters, digits, hyphens)."""

    id: str
    engine: str  # "espeak-ng" or "flite"
    voice: str  # espeak-ng "voice+variant", or a flite voice name


@dataclass(frozen=True)
class _Clip:
    """One clip to synthesise: ``rel`` is its path under the corpus root, the rest its random settings."""

    rel: str
    word: str
    speaker: _Speaker
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
    if not 0 <= espeak_speakers <= len(ESPEAK_VOICES) * len(ESPEAK_VARIANTS):
        raise ValueError(f"espeak_speakers must be in [0, {len(ESPEAK_VOICES) * len(ESPEAK_VARIANTS)}], got {espeak_speakers}")
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
        with tempfile.TemporaryDirectory(prefix="demo-kw-tts-") as scratch, ThreadPoolExecutor(max(1, workers)) as pool:
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


def speakers_and_split(espeak_speakers: int, flite_voices: tuple[str, ...], rng: random.Random) -> tuple[list, dict]:
    """The TTS speakers and their speaker-disjoint train/dev/test split (at least one speaker each)."""
    speakers = _choose_speakers(espeak_speakers, flite_voices, rng)
    if len(speakers) < 3:
        raise ValueError(f"need at least 3 speakers (one per split), got {len(speakers)}")
    return speakers, _split_speakers(speakers, rng)


@contextmanager
def building(root: Path):
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


def speak(text: str, spk: _Speaker, rate: float, pitch: float, scratch_wav: Path, words_per_minute: int = 175) -> np.ndarray:
    """``text`` spoken by ``spk`` at ``rate`` x ``words_per_minute`` and ``pitch`` in [-1, 1] of the
    voice's range, as 16-kHz float samples with leading and trailing silence trimmed."""
    if spk.engine == "espeak-ng":
        # -s: words per minute (espeak-ng's default 175); -p: pitch 0-99 (default 50).
        cmd = ["espeak-ng", "-v", spk.voice, "-s", str(round(words_per_minute * rate)), "-p", str(round(50 + 20 * pitch)),
               "-w", str(scratch_wav), text]
    else:
        # duration_stretch: >1 is slower; int_f0_target_mean: mean pitch in Hz.
        f0 = FLITE_VOICES[spk.voice] * (1 + 0.15 * pitch)
        cmd = ["flite", "-voice", spk.voice, "--setf", f"duration_stretch={1 / rate:.3f}",
               "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(scratch_wav)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed ({e.returncode}): {e.stderr.decode(errors='replace').strip()}") from None
    speech = _trim_silence(load_audio(scratch_wav).numpy())
    scratch_wav.unlink()
    if speech.size == 0:
        raise RuntimeError(f"{spk.engine} voice {spk.voice!r} produced silence for {text!r}")
    return speech


def _choose_speakers(num_espeak: int, flite_voices: tuple[str, ...], rng: random.Random) -> list[_Speaker]:
    """espeak-ng speakers cycling through the voices, each voice with its own shuffled variants; then flite."""
    variant_orders = [rng.sample(ESPEAK_VARIANTS, len(ESPEAK_VARIANTS)) for _ in ESPEAK_VOICES]
    speakers = []
    for i in range(num_espeak):
        voice = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        variant = variant_orders[i % len(ESPEAK_VOICES)][i // len(ESPEAK_VOICES)]
        speakers.append(_Speaker(id=f"espeak-{voice}-{variant}", engine="espeak-ng", voice=f"{voice}+{variant}"))
    speakers += [_Speaker(id=f"flite-{v}", engine="flite", voice=v) for v in flite_voices]
    return speakers


def _split_speakers(speakers: list[_Speaker], rng: random.Random) -> dict[str, list[str]]:
    """Speaker ids per split: about 15 % (at least one) each for dev and test, the rest train."""
    ids = [s.id for s in speakers]
    rng.shuffle(ids)
    held_out = max(1, round(0.15 * len(ids)))
    return {
        "train": sorted(ids[2 * held_out:]),
        "dev": sorted(ids[:held_out]),
        "test": sorted(ids[held_out:2 * held_out]),
    }


def _render(clip: _Clip, build: Path, scratch_wav: Path) -> None:
    """Synthesise one word, trim its silences, place it in 1.0 s of noise and write it under ``build``."""
    speech = speak(clip.word, clip.speaker, clip.rate, clip.pitch, scratch_wav)
    if speech.size > CLIP_SAMPLES:  # keep the middle second
        first = (speech.size - CLIP_SAMPLES) // 2
        speech = speech[first:first + CLIP_SAMPLES]
    speech = speech * (clip.peak / np.abs(speech).max())

    rng = np.random.default_rng(clip.seed)
    noise = _coloured_noise(rng, CLIP_SAMPLES, exponent=float(rng.choice([0.0, 1.0, 2.0])))
    speech_rms = np.sqrt(np.mean(speech**2))
    out = noise * speech_rms * 10 ** (-clip.snr_db / 20)
    offset = int(rng.integers(0, CLIP_SAMPLES - speech.size + 1))
    out[offset:offset + speech.size] += speech
    write_audio(build / clip.rel, out.astype(np.float32))


def _trim_silence(wav: np.ndarray, frame: int = 160, floor_db: float = -40.0, margin: int = 320) -> np.ndarray:
    """Cut leading and trailing 10-ms frames more than ``-floor_db`` dB below the loudest; keep ``margin`` samples."""
    rms = np.sqrt(np.mean(wav[: wav.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max(initial=0.0) * 10 ** (floor_db / 20))
    if loud.size == 0:  # silent or shorter than one frame
        return wav[:0]
    return wav[max(0, loud[0] * frame - margin): (loud[-1] + 1) * frame + margin]


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), flat below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, 20.0) ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def _write_background_noise(folder: Path, seed: int, rms: float = 0.1) -> None:
    """White, pink and brown noise (45-60 s) and a 30-s mains hum (50 or 60 Hz), each at ``rms`` full scale."""
    rng = np.random.default_rng([seed, 1])
    for name, (exponent, seconds) in _NOISE_FILES.items():
        write_audio(folder / f"{name}.wav", (rms * _coloured_noise(rng, int(seconds * SAMPLE_RATE), exponent)).astype(np.float32))
    t = np.arange(int(_HUM_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    mains = float(rng.choice([50.0, 60.0]))
    hum = sum(np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
    hum *= 1 + 0.3 * np.sin(2 * np.pi * 0.2 * t)  # slow 0.2-Hz swell
    hum = hum / np.sqrt(np.mean(hum**2)) + 0.1 * _coloured_noise(rng, t.size, 1.0)  # plus faint pink hiss
    write_audio(folder / "mains_hum.wav", (rms * hum).astype(np.float32))


def _replace(build: Path, root: Path) -> None:
    """Rename ``build`` to ``root``; an old demo corpus at ``root`` is moved aside first, then deleted."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.rename(root, old)
    os.rename(build, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def main(argv: list[str] | None = None) -> None:
    """``python -m corpora.synth keywords|asr|st OUT_DIR``: build a demo corpus, print what it holds."""
    parser = argparse.ArgumentParser(prog="python -m corpora.synth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="corpus", required=True)
    kw = sub.add_parser("keywords", help="demo keyword-spotting corpus (Speech Commands v0.01 layout)")
    kw.add_argument("out_dir", type=Path)
    kw.add_argument("--espeak-speakers", type=int, default=24, help="espeak-ng voice configurations (default 24)")
    kw.add_argument("--no-flite", action="store_true", help="leave out the flite voices")
    kw.add_argument("--repeats", type=int, default=2, help="clips per speaker and word (default 2)")
    kw.add_argument("--seed", type=int, default=0)
    asr = sub.add_parser("asr", help="demo ASR corpus (LibriSpeech / Libri-light layout)")
    asr.add_argument("out_dir", type=Path)
    asr.add_argument("--train-minutes", type=float, default=10.0)
    asr.add_argument("--eval-minutes", type=float, default=3.0)
    asr.add_argument("--seed", type=int, default=0)
    st = sub.add_parser("st", help="demo En->De speech-translation corpus (CoVoST 2 layout)")
    st.add_argument("out_dir", type=Path)
    st.add_argument("--parallel-text", type=Path, default=None, help="a Multi30k folder (default: the built-in grammar)")
    st.add_argument("--sizes", type=int, nargs=3, default=(1500, 200, 200), metavar=("TRAIN", "DEV", "TEST"))
    st.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    if args.corpus == "st":
        from .synth_st import build_demo_st  # noqa: PLC0415  (synth_st imports this module)

        root = build_demo_st(args.out_dir, args.parallel_text, tuple(args.sizes), seed=args.seed)
        print(f"{root} ready ({time.monotonic() - started:.1f} s): {json.loads((root / 'BUILT.json').read_text())['seconds']} "
              f"s of speech; use task.corpus=covost2 task.root={root}")
        return
    if args.corpus == "asr":
        from .synth_asr import build_demo_asr  # noqa: PLC0415  (synth_asr imports this module)

        root = build_demo_asr(args.out_dir, args.train_minutes, args.eval_minutes, seed=args.seed)
        print(f"{root} ready ({time.monotonic() - started:.1f} s): {json.loads((root / 'BUILT.json').read_text())['seconds']} "
              f"s of speech; use task.corpus=librispeech task.root={root}")
        return
    root = build_demo_keywords(
        args.out_dir,
        espeak_speakers=args.espeak_speakers,
        flite_voices=() if args.no_flite else tuple(FLITE_VOICES),
        repeats=args.repeats,
        seed=args.seed,
    )
    split = json.loads((root / STAMP).read_text())["split"]
    for name, counts in split_counts(root).items():
        print(f"{name}: {sum(counts.values())} clips, {len(split[name])} speakers, {len(counts)} words")
    print(f"{root} ready ({time.monotonic() - started:.1f} s); use task.corpus=speech_commands task.root={root}")


if __name__ == "__main__":
    main()
