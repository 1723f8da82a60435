"""Fluent Speech Commands (FSC) as released, or a corpus in its layout -> manifests with slot labels.

Layout: ``<root>/data/train_data.csv``, ``valid_data.csv`` and ``test_data.csv`` (train, dev, test), each
as FSC ships it (pandas' ``to_csv``): the header ``,path,speakerId,transcription,action,object,location``
(an unnamed index column first), one row per utterance, ``path`` relative to ``root``
(``wavs/speakers/<speaker>/<file>.wav``). The slot columns are every column after ``transcription``
(FSC's ``action``, ``object``, ``location``; ``../shared/data/coffee_orders``'s ``drink``, ``size``,
``roast``, ``shots``, ``milk``, ``sugar``), or those named by ``slots``.

A record keeps the speaker (``speakerId``), the transcription (``text``) and the slot values in ``label``,
encoded as ``slot=value|slot=value|…`` in the header's order (:func:`encode_slots`,
:func:`decode_slots`): readable in a manifest and in predictions, and writable by hand for a
``manifest`` corpus. An utterance's id is its path without the suffix.

Errors naming the CSV and line: a missing CSV, a header without ``path``, ``speakerId`` or
``transcription``, a named slot column the header lacks, slot columns that differ between the CSVs, a row
of another width, an empty path or slot value, a slot value holding ``|``, a file listed twice, a listed
audio file that does not exist. Unreadable audio is skipped and listed
(:func:`corpora.manifest.prepare_manifests`).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

SPLIT_FILES = {"train": "data/train_data.csv", "dev": "data/valid_data.csv", "test": "data/test_data.csv"}
"""Split -> the CSV (under ``root``) that lists it; FSC's ``valid`` is dev."""
FIXED = ("path", "speakerId", "transcription")
"""The columns every CSV has besides the index and the slots."""
SLOT_SEP, VALUE_SEP = "|", "="


def encode_slots(slots: dict[str, str]) -> str:
    """``{"action": "activate", "object": "lights"}`` -> ``action=activate|object=lights`` (the order kept)."""
    return SLOT_SEP.join(f"{name}{VALUE_SEP}{value}" for name, value in slots.items())


def decode_slots(label: str) -> dict[str, str]:
    """The inverse of :func:`encode_slots`; ValueError for a label that is not ``slot=value|…`` (an empty
    slot name or value, a slot named twice)."""
    slots: dict[str, str] = {}
    for part in label.split(SLOT_SEP):
        name, sep, value = part.partition(VALUE_SEP)
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"label {label!r} is not slot=value|slot=value|… (part {part!r})")
        if name.strip() in slots:
            raise ValueError(f"label {label!r} names slot {name.strip()!r} twice")
        slots[name.strip()] = value.strip()
    return slots


def prepare_fluent_commands(root: str | Path, out_dir: str | Path, slots: list[str] | None = None) -> dict[str, Path]:
    """Write ``<out_dir>/{train,dev,test}.tsv`` from ``<root>/data/{train,valid,test}_data.csv``; ``slots``
    names the slot columns to keep (None or empty: every column after ``transcription``). Idempotent for the
    same CSV contents and slots (:func:`corpora.manifest.prepare_manifests`; the stamp holds each CSV's SHA-256).

    Raises:
        FileNotFoundError: a CSV missing, or a row naming audio that does not exist (CSV and line named).
        ManifestError: a bad header or row (see the module's docstring; CSV and line named).
    """
    root = Path(root).resolve()
    files = {split: root / name for split, name in SPLIT_FILES.items()}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a Fluent Speech Commands corpus has "
                                    f"{', '.join(SPLIT_FILES.values())}")
    slots = list(slots or [])
    stamp = {"root": str(root), "slots": slots, "version": 1,
             "files": {split: hashlib.sha256(p.read_bytes()).hexdigest() for split, p in files.items()}}
    return prepare_manifests(out_dir, "fluent_commands", stamp, lambda: _read(root, files, slots))


def _read(root: Path, files: dict[str, Path], slots: list[str]) -> tuple[dict[str, list[Record]], Skipped]:
    records: dict[str, list[Record]] = {}
    skipped: Skipped = []
    seen: dict[str, str] = {}
    first: tuple[Path, list[str]] | None = None
    for split, path in files.items():
        records[split] = []
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = [c.strip() for c in next(rows, [])]
            names = _slot_columns(path, header, slots)
            if first is not None and names != first[1]:
                raise ManifestError(f"{path}:1: slot columns {','.join(names)} differ from "
                                    f"{first[0].name}'s {','.join(first[1])}")
            first = first or (path, names)
            line = rows.line_num
            for row in rows:
                where, line = f"{path}:{line + 1}", rows.line_num
                if not any(v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise ManifestError(f"{where}: expected {len(header)} fields ({','.join(header)}), "
                                        f"found {len(row)}")
                values = {c: v.strip() for c, v in zip(header, row, strict=True)}
                record = _record(where, root, values, names, seen)
                try:
                    duration, _ = audio_info(record.path)
                except AudioError as e:
                    skipped.append((f"{where} {record.path}", e.reason))
                    continue
                records[split].append(dataclasses.replace(record, duration=duration))
    return records, skipped


def _slot_columns(path: Path, header: list[str], slots: list[str]) -> list[str]:
    """The slot columns of a CSV with this header: ``slots`` (each checked), or every column after
    ``transcription``."""
    missing = [c for c in FIXED if c not in header]
    if missing:
        raise ManifestError(f"{path}:1: header {','.join(header) or '(empty)'} lacks {', '.join(missing)} "
                            f"(Fluent Speech Commands: ,path,speakerId,transcription,<slot columns>)")
    after = header[header.index("transcription") + 1:]
    if not slots:
        if not after:
            raise ManifestError(f"{path}:1: no slot column after transcription in the header {','.join(header)}")
        slots = after
    for name in slots:
        if name not in header or name in FIXED or not name:
            raise ManifestError(f"{path}:1: slot column {name!r} (task.slots) not in the header; its slot "
                                f"columns: {', '.join(after) or 'none'}")
        if SLOT_SEP in name or VALUE_SEP in name:
            raise ManifestError(f"{path}:1: slot column {name!r} holds {SLOT_SEP!r} or {VALUE_SEP!r}")
    if len(set(slots)) != len(slots):
        raise ManifestError(f"{path}:1: slot columns named twice: {', '.join(slots)}")
    return list(slots)


def _record(where: str, root: Path, values: dict[str, str], slots: list[str], seen: dict[str, str]) -> Record:
    """The record of one checked row (duration still 0)."""
    if not values["path"]:
        raise ManifestError(f"{where}: empty path")
    audio = root / values["path"]
    if not audio.is_file():
        raise FileNotFoundError(f"{where}: {values['path']} not found under {root}")
    for name in slots:
        if not values[name]:
            raise ManifestError(f"{where}: empty value of slot {name}")
        if SLOT_SEP in values[name]:
            raise ManifestError(f"{where}: slot {name} value {values[name]!r} holds {SLOT_SEP!r}")
    utterance = Path(values["path"]).with_suffix("").as_posix()
    if utterance in seen:
        raise ManifestError(f"{where}: {values['path']} (id {utterance}) is listed already, at {seen[utterance]}")
    seen[utterance] = where
    return Record(id=utterance, path=str(audio), duration=0.0, speaker=values["speakerId"],
                  label=encode_slots({name: values[name] for name in slots}), text=values["transcription"])
