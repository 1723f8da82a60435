"""Unlabelled audio for pre-training: any folder of audio, a Speech Commands tree's training part, or a manifest.

Long recordings are cut into segments of at most ``segment_seconds`` (records with a start offset),
so a batch never holds an hour-long file.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from .audio import AudioError, audio_info
from .manifest import Record, read_manifest
from .speech_commands import AUDIO_SUFFIXES as SC_SUFFIXES, NOISE_DIR

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (*SC_SUFFIXES, ".ogg", ".mp3")
MIN_SECONDS = 0.1
"""Shorter files and tail segments are dropped: they hold less than a few frames."""


def scan_audio(source: str | Path, segment_seconds: float = 10.0) -> tuple[list[Record], list[tuple[str, str]]]:
    """Records of every usable audio file under ``source``, cut into segments.

    ``source`` is one of:
        a folder holding ``validation_list.txt`` and ``testing_list.txt`` (Speech Commands layout):
            only its training part, without ``_background_noise_``;
        any other folder: every audio file below it (LibriSpeech and Libri-light layouts included;
            point it at training parts only);
        a ``.tsv`` manifest.

    Returns:
        (records, skipped): skipped lists (path, reason) of unreadable or empty files.
    """
    source = Path(source)
    if source.suffix == ".tsv":
        return _segment(read_manifest(source), segment_seconds), []
    if not source.is_dir():
        raise FileNotFoundError(f"pre-training data not found: {source}")
    held_out: set[str] = set()
    if (source / "validation_list.txt").is_file() and (source / "testing_list.txt").is_file():
        for name in ("validation_list.txt", "testing_list.txt"):
            held_out.update(line.strip() for line in (source / name).read_text().split())
    records, skipped = [], []
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        rel = path.relative_to(source).as_posix()
        if rel in held_out or (held_out and rel.startswith(NOISE_DIR + "/")):
            continue
        try:
            duration, _ = audio_info(path)
        except AudioError as e:
            skipped.append((str(path), e.reason))
            log.warning("skipped %s: %s", path, e.reason)
            continue
        records.append(Record(id=f"{source.name}/{rel.rsplit('.', 1)[0]}", path=str(path), duration=duration))
    if not records:
        raise ValueError(f"{source}: no usable audio files ({', '.join(AUDIO_SUFFIXES)})")
    return _segment(records, segment_seconds), skipped


def _segment(records: list[Record], segment_seconds: float) -> list[Record]:
    out = []
    for r in records:
        pieces = max(1, math.ceil(r.duration / segment_seconds - 1e-9))
        length = r.duration / pieces
        if length < MIN_SECONDS:
            continue
        for k in range(pieces):
            rid = r.id if pieces == 1 else f"{r.id}#{k}"
            out.append(Record(id=rid, path=r.path, duration=round(length, 4), start=round(r.start + k * length, 4), speaker=r.speaker))
    return out
