"""Unlabelled audio for pre-training: any folder of audio, the training part of a Speech Commands tree or of a
VoxCeleb1 identification split, or a manifest.

Long recordings are cut into segments of at most ``segment_seconds`` (records with a start offset),
so a batch never holds an hour-long file. Near-silent segments (peak below ``min_peak``, e.g. the
empty tail of a recording) are dropped and reported: per-utterance normalisation of a segment with
almost no energy turns rounding noise into features thousands of standard deviations large.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .audio import AudioError, audio_folder, audio_info, load_audio
from .manifest import Record, check_files, read_manifest
from .speech_commands import AUDIO_SUFFIXES as SC_SUFFIXES, NOISE_DIR
from .voxceleb1 import IDEN_SPLIT, read_iden_split

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (*SC_SUFFIXES, ".ogg", ".mp3")
MIN_SECONDS = 0.1
"""Shorter files and tail segments are dropped: they hold less than a few frames."""
MIN_PEAK = 10 ** (-50 / 20)
"""Segments whose largest sample is below -50 dBFS are treated as silence and dropped."""


def scan_audio(source: str | Path, segment_seconds: float = 10.0,
               min_peak: float = MIN_PEAK) -> tuple[list[Record], list[tuple[str, str]]]:
    """Records of every usable audio file under ``source``, cut into segments.

    ``source`` is one of:
        a folder holding ``validation_list.txt`` and ``testing_list.txt`` (Speech Commands layout):
            only its training part, without ``_background_noise_``;
        a folder holding ``iden_split.txt`` (VoxCeleb1 layout): only the identification split's training
            utterances (never its dev and test utterances, nor the verification speakers);
        any other folder: every audio file below it (LibriSpeech and Libri-light layouts included;
            point it at training parts only);
        a ``.tsv`` manifest.

    Every file is decoded in full first (:func:`corpora.manifest.check_files`, on all cores): a file
    damaged after a valid header is skipped here, not met in the middle of pre-training.

    Returns:
        (records, skipped): skipped lists (path or segment id, reason) of unreadable, empty, damaged or
        near-silent audio.
    """
    source = Path(source)
    if source.suffix == ".tsv":
        records = read_manifest(source)
        bad = check_files(sorted({r.path for r in records}), desc=f"check audio {source.name}")
        kept, silent = _drop_silent(_segment([r for r in records if r.path not in bad], segment_seconds), min_peak)
        return kept, sorted(bad.items()) + silent
    if not source.is_dir():
        raise FileNotFoundError(f"pre-training data not found: {source}")
    held_out: set[str] = set()
    if (source / "validation_list.txt").is_file() and (source / "testing_list.txt").is_file():
        for name in ("validation_list.txt", "testing_list.txt"):
            held_out.update(line.strip() for line in (source / name).read_text().split())
    training_only = _voxceleb1_training(source)
    records, skipped = [], []
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        rel = path.relative_to(source).as_posix()
        if rel in held_out or (held_out and rel.startswith(NOISE_DIR + "/")):
            continue
        if training_only is not None and path not in training_only:
            continue
        try:
            duration, _ = audio_info(path)
        except AudioError as e:
            skipped.append((str(path), e.reason))
            log.warning("skipped %s: %s", path, e.reason)
            continue
        records.append(Record(id=f"{source.name}/{rel.rsplit('.', 1)[0]}", path=str(path), duration=duration))
    bad = check_files([r.path for r in records], desc=f"check audio {source.name}")
    records = [r for r in records if r.path not in bad]
    skipped += sorted(bad.items())
    if not records:
        raise ValueError(f"{source}: no usable audio files ({', '.join(AUDIO_SUFFIXES)})")
    kept, silent = _drop_silent(_segment(records, segment_seconds), min_peak)
    return kept, skipped + silent


def _drop_silent(records: list[Record], min_peak: float) -> tuple[list[Record], list[tuple[str, str]]]:
    kept, silent = [], []
    for r in records:
        try:
            peak = float(np.abs(load_audio(r.path, r.start, r.duration).numpy()).max())
        except AudioError as e:  # changed since the check above
            silent.append((r.id, e.reason))
            continue
        if peak < min_peak:
            silent.append((r.id, f"near-silent segment (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)"))
        else:
            kept.append(r)
    return kept, silent


def _segment(records: list[Record], segment_seconds: float) -> list[Record]:
    out = []
    for r in records:
        pieces = max(1, math.ceil(r.duration / segment_seconds - 1e-9))
        length = r.duration / pieces
        if length < MIN_SECONDS:
            continue
        for k in range(pieces):
            rid = r.id if pieces == 1 else f"{r.id}#{k}"
            out.append(Record(id=rid, path=r.path, duration=round(length, 4), start=round(r.start + k * length, 4),
                              speaker=r.speaker))
    return out


def _voxceleb1_training(source: Path) -> set[Path] | None:
    """The training utterances of a VoxCeleb1 folder's identification split, or None for other folders."""
    if not (source / IDEN_SPLIT).is_file():
        return None
    audio = audio_folder(source)
    return {audio / relative for _, split, relative in read_iden_split(source / IDEN_SPLIT) if split == "train"}
