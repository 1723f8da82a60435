"""A labelled list of audio files as CSV (any corpus one can list) -> manifests.

Layout: ``<root>/train.csv``, ``dev.csv`` and ``test.csv`` (the splits), or one ``<root>/data.csv``
(or the file ``csv_file`` names, relative to ``root`` or absolute) to be dealt into folds by the task.
Each CSV has the header ``path,label`` or ``path,label,speaker`` (any order); ``path`` is relative to
the CSV's folder or absolute. An utterance's id is its path as written, without the suffix.
An unknown or missing column, an empty path or label, a row of another width, a file listed twice and
a listed file that does not exist are errors naming the CSV and its line; unreadable audio is skipped
and listed (:func:`corpora.manifest.prepare_manifests`).
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

SPLIT_FILES = {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
"""Split -> the CSV that lists it."""
POOL_FILE = "data.csv"
"""The one CSV of a corpus without a split (dealt into folds): split ``all``."""
COLUMNS = ("path", "label", "speaker")
REQUIRED = ("path", "label")


def read_header(path: str | Path) -> list[str]:
    """The column names of a CSV's first line (stripped; a UTF-8 byte-order mark is ignored)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def csv_files(root: str | Path, csv_file: str = "") -> dict[str, Path]:
    """Split -> CSV under ``root``: ``csv_file`` alone (split ``all``) when given, else ``train.csv``,
    ``dev.csv`` and ``test.csv`` when there, else ``data.csv`` (split ``all``).

    FileNotFoundError naming what is missing: ``csv_file``, one of the three split files while
    another is there, or any CSV at all."""
    root = Path(root)
    if csv_file:
        path = root / csv_file
        if not path.is_file():
            raise FileNotFoundError(f"task.csv_file {csv_file}: {path} not found")
        return {"all": path}
    present = {split: root / name for split, name in SPLIT_FILES.items() if (root / name).is_file()}
    if present:
        missing = [name for split, name in SPLIT_FILES.items() if split not in present]
        if missing:
            raise FileNotFoundError(f"{root} holds {', '.join(p.name for p in present.values())} but not "
                                    f"{', '.join(missing)}: a split corpus needs all three")
        return present
    if (root / POOL_FILE).is_file():
        return {"all": root / POOL_FILE}
    raise FileNotFoundError(f"{root}: no {', '.join(SPLIT_FILES.values())} and no {POOL_FILE} "
                            f"(CSV lists with the header path,label[,speaker])")


def prepare_csv_list(root: str | Path, out_dir: str | Path, csv_file: str = "") -> dict[str, Path]:
    """Write ``<out_dir>/<split>.tsv`` for each CSV :func:`csv_files` finds under ``root`` (``train``,
    ``dev``, ``test``, or ``all``). Idempotent for the same CSV contents
    (:func:`corpora.manifest.prepare_manifests`; the stamp holds each CSV's SHA-256).

    Raises:
        FileNotFoundError: no CSV (:func:`csv_files`), or a row naming a file that does not exist
            (the message names the CSV and line).
        ManifestError: a header with an unknown or without a required column, or a malformed row
            (the CSV and line are named).
    """
    files = csv_files(Path(root).resolve(), csv_file)
    stamp = {"files": {split: [str(p), hashlib.sha256(p.read_bytes()).hexdigest()] for split, p in files.items()},
             "version": 1}
    return prepare_manifests(out_dir, "csv", stamp, lambda: _read(files))


def _read(files: dict[str, Path]) -> tuple[dict[str, list[Record]], Skipped]:
    records: dict[str, list[Record]] = {}
    skipped: Skipped = []
    seen: dict[str, str] = {}
    for split, path in files.items():
        records[split] = []
        for where, row in _rows(path):
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else path.parent / audio
            if not audio.is_file():
                raise FileNotFoundError(f"{where}: {row['path']} not found ({audio})")
            utterance = Path(row["path"]).with_suffix("").as_posix()
            for key in (str(audio.resolve()), f"id {utterance}"):
                if key in seen:
                    raise ManifestError(f"{where}: {row['path']} is listed already (or its id {utterance}), "
                                        f"at {seen[key]}")
                seen[key] = where
            try:
                duration, _ = audio_info(audio)
            except AudioError as e:
                skipped.append((f"{where} {audio}", e.reason))
                continue
            records[split].append(Record(id=utterance, path=str(audio),
                                         duration=duration, speaker=row.get("speaker", ""), label=row["label"]))
    return records, skipped


def _rows(path: Path):
    """(``<csv>:<line>``, {column: stripped value}) of each non-empty row of ``path``, header checked."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = [c.strip() for c in next(rows, [])]
        unknown = [c for c in header if c not in COLUMNS]
        missing = [c for c in REQUIRED if c not in header]
        if unknown or missing or len(set(header)) != len(header):
            raise ManifestError(f"{path}:1: header {','.join(header) or '(empty)'}: expected path,label[,speaker]"
                                + (f"; unknown column(s) {unknown}" if unknown else "")
                                + (f"; missing {missing}" if missing else ""))
        line = rows.line_num
        for row in rows:
            where, line = f"{path}:{line + 1}", rows.line_num
            if not any(v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise ManifestError(f"{where}: expected {len(header)} fields ({','.join(header)}), found {len(row)}")
            values = {c: v.strip() for c, v in zip(header, row, strict=True)}
            empty = [c for c in REQUIRED if not values[c]]
            if empty:
                raise ManifestError(f"{where}: empty {' and '.join(empty)}")
            yield where, values
