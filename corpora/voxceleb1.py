"""VoxCeleb1's speaker-identification split (its release layout) -> manifests.

Layout: ``<root>/wav/<speaker>/<session>/<utterance>.{wav,flac}`` and ``<root>/iden_split.txt``, one
line per utterance, ``<set> <speaker>/<session>/<utterance>.wav`` with set 1 (train), 2 (dev) or
3 (test), as VoxCeleb1 ships it (``../shared/data/speechocean762_spk`` has the same layout). The
label of an utterance is its speaker, the first part of its path.

Training utterances longer than ``crop_seconds`` are cut to one segment of that length (SUPERB crops
training utterances to 8 s); its start is drawn once per utterance from the seed, so the segment
is the same in every epoch and the frozen-feature cache serves it. Dev and test utterances are whole.
"""
from __future__ import annotations

import random
from pathlib import Path

from .audio import AudioError, audio_folder, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

IDEN_SPLIT = "iden_split.txt"
SETS = {"1": "train", "2": "dev", "3": "test"}
"""``iden_split.txt``'s set numbers -> split names."""


def prepare_voxceleb1_identification(root: str | Path, out_dir: str | Path, crop_seconds: float = 8.0,
                                     seed: int = 0) -> dict[str, Path]:
    """Write ``train.tsv``, ``dev.tsv`` and ``test.tsv`` under ``out_dir`` from ``<root>/iden_split.txt``
    (:func:`corpora.manifest.prepare_manifests`: idempotent; unreadable audio skipped and reported).

    Raises:
        FileNotFoundError: no ``iden_split.txt``, or a line naming an audio file that does not exist
            (the message names the file and line).
        ManifestError: a malformed line (the file and line are named).
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    stamp = {"root": str(root), "crop_seconds": crop_seconds, "seed": seed, "version": 1}
    return prepare_manifests(out_dir, "voxceleb1", stamp, lambda: _read(root, crop_seconds, seed))


def read_iden_split(path: Path) -> list[tuple[int, str, str]]:
    """(line number, split, relative audio path) of every line of an ``iden_split.txt``."""
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in SETS:
            raise ManifestError(f"{path}:{lineno}: expected '<1|2|3> <speaker>/<session>/<utterance>.wav', "
                                f"got {line!r}")
        if len(Path(fields[1]).parts) < 2:
            raise ManifestError(f"{path}:{lineno}: {fields[1]!r} does not start with a speaker folder")
        entries.append((lineno, SETS[fields[0]], fields[1]))
    return entries


def _read(root: Path, crop_seconds: float, seed: int) -> tuple[dict[str, list[Record]], Skipped]:
    split_file = root / IDEN_SPLIT
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} missing: VoxCeleb1's identification split needs it")
    audio = audio_folder(root)
    records: dict[str, list[Record]] = {split: [] for split in SETS.values()}
    skipped: Skipped = []
    for lineno, split, relative in read_iden_split(split_file):
        path = audio / relative
        if not path.is_file():
            raise FileNotFoundError(f"{split_file}:{lineno}: {relative} not found under {audio}")
        try:
            duration, _ = audio_info(path)
        except AudioError as e:
            skipped.append((f"{split_file}:{lineno} {path}", e.reason))
            continue
        utterance = str(Path(relative).with_suffix(""))
        speaker = Path(relative).parts[0]
        start = 0.0
        if split == "train" and crop_seconds and duration > crop_seconds:
            start = round(random.Random(f"{seed}:{utterance}").uniform(0.0, duration - crop_seconds), 4)
            duration = crop_seconds
        records[split].append(Record(id=utterance, path=str(path), duration=duration, start=start,
                                     speaker=speaker, label=speaker))
    return records, skipped
