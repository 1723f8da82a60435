"""A synthetic read-speech corpus in the LibriSpeech / Libri-light layout, for the ASR demo and tests.

Sentences come from a small seeded grammar (about 150 words: colours, animals, objects, places,
numbers, names, verbs), so every transcript uses LibriSpeech's characters only. Each sentence is
read by one text-to-speech speaker (an espeak-ng voice with a variant, or a flite voice) at a random
speed and pitch, with low-level coloured noise (20-40 dB SNR). Speakers are split disjointly:
    ``librispeech_finetuning/1h/0/clean/``  training, ``train_minutes`` of speech (Libri-light's 10-minute set)
    ``LibriSpeech/dev-clean/``, ``LibriSpeech/test-clean/``  ``eval_minutes`` each
Files are ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz) with one
``<speaker>-<chapter>.trans.txt`` per chapter; numeric speaker ids map to voices in ``BUILT.json``.

Read it like real LibriSpeech: ``task.corpus=librispeech task.root=OUT_DIR``.
"""
from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .tts import FLITE_VOICES, STAMP, available_flite, building, needs_build, render_sentence, speakers_and_split

log = logging.getLogger(__name__)

VERSION = 1
SPLIT_DIRS = {"train": "librispeech_finetuning/1h/0/clean", "dev": "LibriSpeech/dev-clean",
              "test": "LibriSpeech/test-clean", "full": "LibriSpeech/train-clean-100"}
"""Where each split goes; ``full`` is the optional larger training set, a stand-in for train-clean-100."""

_WORDS = {
    "adj": "red green blue yellow black white small large old new quiet loud warm cold happy tired".split(),
    "noun": "cat dog bird horse fish farmer teacher doctor sailor child captain baker driver painter".split(),
    "thing": "box book chair table window door letter basket bottle garden boat road bridge river".split(),
    "place": "market station village forest harbour kitchen library school office mountain".split(),
    "verb": "found carried opened painted watched followed cleaned visited moved closed".split(),
    "name": "anna peter maria john susan david laura thomas emma george".split(),
    "number": "two three four five six seven eight nine ten twelve".split(),
    "time": ["yesterday", "today", "in the morning", "at night", "after dinner", "before noon", "on sunday",
             "last week"],
}
_TEMPLATES = (
    "the {adj} {noun} {verb} the {thing}",
    "{name} {verb} the {adj} {thing} {time}",
    "the {noun} went to the {place} {time}",
    "{name} saw {number} {adj} {thing}s near the {place}",
    "a {adj} {noun} {verb} {number} {thing}s at the {place}",
    "{time} the {noun} and the {noun} {verb} the {thing}",
    "{name} said the {thing} is {adj}",
    "we {verb} the {adj} {thing} by the {place} {time}",
)


def sentence(rng: random.Random) -> str:
    """One upper-case sentence from the grammar."""
    template = rng.choice(_TEMPLATES)
    out = template
    for slot in ("adj", "noun", "thing", "place", "verb", "name", "number", "time"):
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", rng.choice(_WORDS[slot]), 1)
    return out.upper()


def build_demo_asr(root: str | Path, train_minutes: float = 10.0, eval_minutes: float = 3.0, espeak_speakers: int = 24,
                   flite_voices: tuple[str, ...] = tuple(FLITE_VOICES), seed: int = 0, workers: int = 4,
                   full_minutes: float = 0.0) -> Path:
    """Synthesise the demo ASR corpus under ``root``, or return at once when it is already built.

    Args:
        root: output folder; built in a hidden sibling and renamed into place (an interrupted build
            leaves nothing). A demo corpus built with other settings is replaced; any other
            non-empty folder is refused.
        train_minutes: speech in the training set (Libri-light's 10-minute setting by default).
        eval_minutes: speech in each of dev-clean and test-clean.
        espeak_speakers, flite_voices: the TTS speakers (flite skipped with a warning if absent).
        seed: seeds sentences, speakers, split, speed, pitch and noise.
        workers: parallel TTS jobs.
        full_minutes: speech in ``LibriSpeech/train-clean-100``, a larger training set by the
            training speakers (SUPERB's ASR setting); 0 leaves it out.

    Returns:
        ``root``, holding the three splits and ``BUILT.json`` (settings, speakers, durations).
    """
    root = Path(root)
    if train_minutes <= 0 or eval_minutes <= 0 or full_minutes < 0:
        raise ValueError("train_minutes and eval_minutes must be positive, full_minutes not negative")
    flite_voices = available_flite(flite_voices)
    params = {"version": VERSION, "train_minutes": train_minutes, "eval_minutes": eval_minutes,
              "espeak_speakers": espeak_speakers, "flite_voices": list(flite_voices), "seed": seed}
    if full_minutes:  # absent otherwise, so corpora built before this option stay valid
        params["full_minutes"] = full_minutes
    if not needs_build(root, params):
        return root

    rng = random.Random(seed)
    speakers, split = speakers_and_split(espeak_speakers, flite_voices, rng)
    by_id = {s.id: s for s in speakers}
    numeric = {s.id: 100 + i for i, s in enumerate(speakers)}
    targets = {"train": 60 * train_minutes, "dev": 60 * eval_minutes, "test": 60 * eval_minutes}
    if full_minutes:
        targets["full"] = 60 * full_minutes
        split = {**split, "full": split["train"]}
    started = time.monotonic()
    durations: dict[str, float] = {}
    with building(root) as build:
        with (tempfile.TemporaryDirectory(prefix="demo-asr-tts-") as scratch,
              ThreadPoolExecutor(max(1, workers)) as pool):
            for name, target in targets.items():
                total, utt, lines = 0.0, 0, {}
                while total < target:  # rounds of parallel jobs until the split has its minutes
                    jobs = []
                    for _ in range(2 * max(1, workers)):
                        spk = by_id[rng.choice(split[name])]
                        chapter = 1000 + numeric[spk.id]
                        stem = f"{numeric[spk.id]}-{chapter}-{utt:04d}"
                        rel = Path(SPLIT_DIRS[name]) / str(numeric[spk.id]) / str(chapter) / f"{stem}.flac"
                        jobs.append((rel, stem, sentence(rng), spk, rng.uniform(0.8, 1.15), rng.uniform(-1, 1),
                                     rng.uniform(20, 40), rng.getrandbits(32)))
                        utt += 1
                    rendered = pool.map(lambda job: render_sentence(
                        build, Path(scratch), job[0], job[1], job[2].lower(), *job[3:]), jobs)
                    for (rel, stem, text, *_), seconds in zip(jobs, rendered, strict=True):
                        lines.setdefault(rel.parent, []).append(f"{stem} {text}")
                        total += seconds
                for folder, chapter_lines in lines.items():
                    spk_chap = chapter_lines[0].split(" ")[0].rsplit("-", 1)[0]
                    (build / folder / f"{spk_chap}.trans.txt").write_text("\n".join(sorted(chapter_lines)) + "\n")
                durations[name] = round(total, 1)
        stamp = {"params": params, "speakers": {numeric[s.id]: f"{s.engine} {s.voice}" for s in speakers},
                 "split": {k: [numeric[i] for i in v] for k, v in split.items()}, "seconds": durations}
        (build / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    log.info("built the demo ASR corpus in %s: %s s of speech per split (%.1f s)", root, durations,
             time.monotonic() - started)
    return root

