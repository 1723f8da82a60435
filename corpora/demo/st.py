"""A synthetic English -> German speech-translation corpus in the CoVoST 2 layout.

The English side of parallel text is spoken by text-to-speech voices (espeak-ng variants and flite
voices) at random speeds and pitches, with low-level noise; the split is speaker-disjoint, so the
test sentences are spoken by voices never heard in training. Parallel text comes from a Multi30k
folder (``train|val|test_2016_flickr.{en,de}[.gz]``, e.g. ``../shared/data/multi30k``) or, without
one, from a small built-in grammar with German agreement (``ein roter Hund``, ``die kleine Katze``).

Output: ``<root>/clips/<id>.mp3`` (16 kHz) and ``<root>/covost_v2.en_de.{train,dev,test}.tsv``
(``path sentence translation client_id``), plus ``BUILT.json``. Read it with
``task.corpus=covost2 task.root=OUT_DIR``.
"""
from __future__ import annotations

import gzip
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
MULTI30K_FILES = {"train": "train", "dev": "val", "test": "test_2016_flickr"}

_NOUNS = [("dog", "Hund", "m"), ("cat", "Katze", "f"), ("horse", "Pferd", "n"), ("man", "Mann", "m"),
          ("woman", "Frau", "f"), ("child", "Kind", "n"), ("bird", "Vogel", "m"), ("girl", "Mädchen", "n"),
          ("boy", "Junge", "m"), ("car", "Auto", "n")]
_ADJECTIVES = [("red", "rot"), ("big", "groß"), ("small", "klein"), ("young", "jung"), ("old", "alt"),
               ("black", "schwarz"), ("white", "weiß")]
_VERBS = [("is running", "läuft"), ("is sleeping", "schläft"), ("is jumping", "springt"), ("is sitting", "sitzt"),
          ("is waiting", "wartet")]
_PLACES = [("in the park", "im Park"), ("on the street", "auf der Straße"), ("in the water", "im Wasser"),
           ("near the house", "in der Nähe des Hauses"), ("in the snow", "im Schnee")]
_INDEFINITE = {"m": ("Ein", "er"), "f": ("Eine", "e"), "n": ("Ein", "es")}
_DEFINITE = {"m": "Der", "f": "Die", "n": "Das"}


def grammar_pair(rng: random.Random) -> tuple[str, str]:
    """One (English, German) sentence pair from the built-in grammar."""
    (en_n, de_n, g), (en_a, de_a), (en_v, de_v), (en_p, de_p) = (
        rng.choice(x) for x in (_NOUNS, _ADJECTIVES, _VERBS, _PLACES))
    if rng.random() < 0.5:
        article, ending = _INDEFINITE[g]
        en_art = "An" if en_a[0] in "aeiou" else "A"
        return f"{en_art} {en_a} {en_n} {en_v} {en_p}.", f"{article} {de_a}{ending} {de_n} {de_v} {de_p}."
    return f"The {en_a} {en_n} {en_v} {en_p}.", f"{_DEFINITE[g]} {de_a}e {de_n} {de_v} {de_p}."


def read_multi30k(folder: str | Path, split: str) -> list[tuple[str, str]]:
    """Line-aligned (English, German) pairs of a Multi30k split (``train``, ``dev`` = val,
    ``test`` = test_2016_flickr)."""
    folder, stem = Path(folder), MULTI30K_FILES[split]
    sides = []
    for lang in ("en", "de"):
        path = next((p for p in (folder / f"{stem}.{lang}.gz", folder / f"{stem}.{lang}") if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"{folder}: no {stem}.{lang}[.gz] (a Multi30k folder holds train/val/test_2016_flickr .en/.de)")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            sides.append([line.strip() for line in f])
    if len(sides[0]) != len(sides[1]):
        raise ValueError(f"{folder}: {stem}.en has {len(sides[0])} lines but {stem}.de has {len(sides[1])}")
    return [(en, de) for en, de in zip(*sides, strict=True) if en and de]


def build_demo_st(root: str | Path, parallel_text: str | Path | None = None,
                  sizes: tuple[int, int, int] = (1500, 200, 200), espeak_speakers: int = 24,
                  flite_voices: tuple[str, ...] = tuple(FLITE_VOICES), seed: int = 0, workers: int = 4) -> Path:
    """Synthesise the demo ST corpus under ``root``, or return at once when it is already built.

    Args:
        root: output folder, built in a hidden sibling and renamed into place.
        parallel_text: a Multi30k folder, or None for the built-in grammar.
        sizes: sentences for train, dev, test (the first ones of each Multi30k split; distinct
            grammar sentences otherwise).
        espeak_speakers, flite_voices, seed, workers: as :func:`corpora.demo.keywords.build_demo_keywords`.
    """
    root = Path(root)
    flite_voices = available_flite(flite_voices)
    params = {"version": VERSION, "parallel_text": str(Path(parallel_text).resolve()) if parallel_text else None,
              "sizes": list(sizes), "espeak_speakers": espeak_speakers, "flite_voices": list(flite_voices),
              "seed": seed}
    if not needs_build(root, params):
        return root
    rng = random.Random(seed)
    pairs = _pairs(parallel_text, sizes, rng)
    speakers, split = speakers_and_split(espeak_speakers, flite_voices, rng)
    by_id = {s.id: s for s in speakers}
    started = time.monotonic()
    seconds: dict[str, float] = {}
    with building(root) as build:
        with (tempfile.TemporaryDirectory(prefix="demo-st-tts-") as scratch,
              ThreadPoolExecutor(max(1, workers)) as pool):
            for name, split_pairs in pairs.items():
                jobs = []
                for i, (en, de) in enumerate(split_pairs):
                    spk = by_id[rng.choice(split[name])]
                    clip = f"demo_{name}_{i:05d}.mp3"
                    jobs.append((clip, en, de, spk, rng.uniform(0.85, 1.15), rng.uniform(-1, 1), rng.uniform(20, 40),
                                 rng.getrandbits(32)))
                durations = list(pool.map(lambda j: render_sentence(
                    build, Path(scratch), Path("clips") / j[0], Path(j[0]).stem, j[1], j[3], *j[4:]), jobs))
                seconds[name] = round(sum(durations), 1)
                with open(build / f"covost_v2.en_de.{name}.tsv", "w", encoding="utf-8") as f:
                    f.write("path\tsentence\ttranslation\tclient_id\n")
                    f.writelines(f"{j[0]}\t{_tsv_safe(j[1])}\t{_tsv_safe(j[2])}\t{j[3].id}\n" for j in jobs)
        stamp = {"params": params, "speakers": {s.id: f"{s.engine} {s.voice}" for s in speakers}, "split": split,
                 "seconds": seconds}
        (build / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    log.info("built the demo ST corpus in %s: %s s of speech (%.1f s)", root, seconds, time.monotonic() - started)
    return root


def _pairs(parallel_text: str | Path | None, sizes: tuple[int, int, int],
           rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """(English, German) pairs per split: the first ``sizes`` of each Multi30k split, or distinct grammar sentences."""
    if parallel_text:
        out = {}
        for name, n in zip(("train", "dev", "test"), sizes, strict=True):
            pairs = read_multi30k(parallel_text, name)
            if len(pairs) < n:
                raise ValueError(f"Multi30k {name} has {len(pairs)} sentence pairs, fewer than the {n} asked for")
            out[name] = pairs[:n]
        return out
    total = sum(sizes)
    pool: dict[tuple[str, str], None] = {}
    for _ in range(100 * total):
        pool[grammar_pair(rng)] = None
        if len(pool) == total:
            break
    if len(pool) < total:
        raise ValueError(f"the built-in grammar gives {len(pool)} distinct sentences, fewer than the {total} asked for")
    pairs = list(pool)
    return {"train": pairs[:sizes[0]], "dev": pairs[sizes[0]:sizes[0] + sizes[1]], "test": pairs[sizes[0] + sizes[1]:]}


def _tsv_safe(text: str) -> str:
    """``text`` on one line without tabs: every run of whitespace becomes one space."""
    return " ".join(text.replace("\t", " ").split())
