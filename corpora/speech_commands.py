"""Speech Commands (v0.01 / v0.02 layout) -> manifests.

Layout: ``<root>/<word>/<speaker>_nohash_<n>.{wav,flac}``, ``validation_list.txt``,
``testing_list.txt`` (paths relative to root) and optionally ``_background_noise_/*.wav``.
Files in neither list are training data.

Two label settings:
    ``superb12``: SUPERB's 12 classes, the ten keywords, every other word as ``_unknown_``, and
        ``_silence_`` clips cut from ``_background_noise_``.
    ``all``: one class per word folder (plus ``_silence_`` where background noise exists).
"""
from __future__ import annotations

import random
from pathlib import Path

from .audio import AudioError, audio_info
from .manifest import Record, Skipped, prepare_manifests

SUPERB_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
NOISE_DIR = "_background_noise_"
AUDIO_SUFFIXES = (".wav", ".flac")
SPLITS = ("train", "dev", "test")
CLIP_SECONDS = 1.0
# Background-noise files are divided in time: this fraction of each file feeds the training
# silence clips, the next parts dev and test, so no noise sample is shared between splits.
_NOISE_SPLIT = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}


def label_set(classes: str, words: list[str], has_noise: bool) -> list[str]:
    """The ordered class list for a setting (``superb12`` or ``all``)."""
    if classes == "superb12":
        return [*SUPERB_KEYWORDS, UNKNOWN, SILENCE]
    if classes == "all":
        return sorted(words) + ([SILENCE] if has_noise else [])
    raise ValueError(f"unknown Speech Commands classes setting {classes!r}; use 'superb12' or 'all'")


def prepare_speech_commands(root: str | Path, out_dir: str | Path, classes: str = "superb12",
                            seed: int = 0) -> dict[str, Path]:
    """Write ``train.tsv``, ``dev.tsv``, ``test.tsv`` and ``labels.txt`` under ``out_dir``
    (:func:`corpora.manifest.prepare_manifests`: idempotent, skipped files reported).

    Unreadable or empty files are skipped and listed in ``skipped-speech_commands.tsv`` (and logged).

    Returns:
        split name -> manifest path.
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    stamp = {"root": str(root), "classes": classes, "seed": seed, "version": 1}
    return prepare_manifests(out_dir, "speech_commands", stamp, lambda: _read(root, out_dir, classes, seed))


def _read(root: Path, out_dir: Path, classes: str, seed: int) -> tuple[dict[str, list[Record]], Skipped]:
    """The records per split and the skipped files; writes ``labels.txt``."""
    if not root.is_dir():
        raise FileNotFoundError(f"Speech Commands root not found: {root}")
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    if not words:
        raise FileNotFoundError(f"{root}: no word folders (<word>/<speaker>_nohash_<n>.wav) found")
    noise_dir = root / NOISE_DIR
    noise_files = sorted(p for p in noise_dir.glob("*") if p.suffix in AUDIO_SUFFIXES) if noise_dir.is_dir() else []
    labels = label_set(classes, words, bool(noise_files))
    if classes == "superb12" and not set(SUPERB_KEYWORDS) & set(words):
        raise ValueError(f"{root}: none of SUPERB's keywords {SUPERB_KEYWORDS} is present; use classes='all'")

    split_of = {}
    for split, list_name in (("dev", "validation_list.txt"), ("test", "testing_list.txt")):
        list_file = root / list_name
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file} missing: the official split needs it")
        for line in list_file.read_text().split():
            split_of[line.strip()] = split

    records: dict[str, list[Record]] = {s: [] for s in SPLITS}
    skipped: Skipped = []
    for word in words:
        label = word if classes == "all" or word in SUPERB_KEYWORDS else UNKNOWN
        for path in sorted((root / word).iterdir()):
            if path.suffix not in AUDIO_SUFFIXES:
                continue
            rel = f"{word}/{path.name}"
            try:
                duration, _ = audio_info(path)
            except AudioError as e:
                skipped.append((str(path), e.reason))
                continue
            speaker = path.name.split("_nohash_")[0]
            records[split_of.get(rel, "train")].append(
                Record(id=rel.rsplit(".", 1)[0], path=str(path), duration=duration, speaker=speaker, label=label)
            )
    if noise_files and SILENCE in labels:
        _add_silence(records, noise_files, len(labels) - 1, seed, skipped)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels.txt").write_text("\n".join(labels) + "\n")
    return records, skipped


def _add_silence(records: dict[str, list[Record]], noise_files: list[Path], num_word_classes: int, seed: int,
                 skipped: Skipped) -> None:
    """Cut 1-s ``_silence_`` clips from background noise, as many per split as an average class has."""
    rng = random.Random(seed)
    usable = []
    for path in noise_files:
        try:
            usable.append((path, audio_info(path)[0]))
        except AudioError as e:
            skipped.append((str(path), e.reason))
    for split, (lo, hi) in _NOISE_SPLIT.items():
        count = max(1, round(len(records[split]) / num_word_classes)) if records[split] else 0
        spans = [(p, d * lo, d * hi - CLIP_SECONDS) for p, d in usable if d * (hi - lo) >= CLIP_SECONDS]
        if not spans:
            continue
        for i in range(count):
            path, first, last = spans[i % len(spans)]
            start = round(rng.uniform(first, last), 3)
            records[split].append(
                Record(id=f"{SILENCE}/{path.stem}_{split}_{i}", path=str(path), duration=CLIP_SECONDS, start=start,
                       label=SILENCE)
            )


def read_labels(out_dir: str | Path) -> list[str]:
    """The class list written by :func:`prepare_speech_commands`."""
    return Path(out_dir, "labels.txt").read_text().split()


