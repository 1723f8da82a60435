"""The one record type every corpus reader emits, and its TSV form.

A manifest is a UTF-8 TSV file with a header line naming the columns of :class:`Record`;
``id``, ``path`` and ``duration`` are required, the others may be left out or empty.
Relative paths are resolved against the manifest's folder.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One utterance (or one segment of a longer file).

    Attributes:
        id: unique within its manifest.
        path: audio file.
        duration: seconds of audio used (from ``start``).
        start: segment start within the file, seconds.
        speaker: speaker id, if known.
        label: class label (keyword spotting).
        text: transcript (ASR) or source sentence (ST).
        translation: target-language text (ST).
    """

    id: str
    path: str
    duration: float
    start: float = 0.0
    speaker: str = ""
    label: str = ""
    text: str = ""
    translation: str = ""


COLUMNS = [f.name for f in dataclasses.fields(Record)]
_REQUIRED = ("id", "path", "duration")


class ManifestError(ValueError):
    """A malformed manifest; the message names the file and line."""


def write_manifest(path: str | Path, records: list[Record]) -> Path:
    """Write records as TSV atomically (temp file + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(COLUMNS)
        for r in records:
            w.writerow([getattr(r, c) for c in COLUMNS])
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path) -> list[Record]:
    """Read a TSV manifest; unknown columns, missing required values and duplicate ids are errors."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    records: list[Record] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None:
            raise ManifestError(f"{path}: empty manifest (no header line)")
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise ManifestError(f"{path}:1: unknown column(s) {unknown}; known: {COLUMNS}")
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ManifestError(f"{path}:1: missing required column(s) {missing}")
        for lineno, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ManifestError(f"{path}:{lineno}: expected {len(header)} fields, found {len(row)}")
            values = dict(zip(header, row))
            for c in _REQUIRED:
                if not values[c]:
                    raise ManifestError(f"{path}:{lineno}: empty '{c}'")
            try:
                values["duration"] = float(values["duration"])
                values["start"] = float(values.get("start") or 0.0)
            except ValueError as e:
                raise ManifestError(f"{path}:{lineno}: {e}") from None
            if values["id"] in seen:
                raise ManifestError(f"{path}:{lineno}: duplicate id '{values['id']}'")
            seen.add(values["id"])
            audio = Path(values["path"])
            if not audio.is_absolute():
                values["path"] = str(path.parent / audio)
            records.append(Record(**values))
    return records
