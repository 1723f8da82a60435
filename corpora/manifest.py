"""The one record type every corpus reader emits, its TSV form, and the one shape of preparation.

A manifest is a UTF-8 TSV file with a header line naming the columns of :class:`Record`;
``id``, ``path`` and ``duration`` are required, the others may be left out or empty.
Relative paths are resolved against the manifest's folder.

Every corpus module has a ``prepare_<corpus>(root, out_dir, ...) -> {split: manifest path}`` built
on :func:`prepare_manifests`, as lhotse's recipes are: idempotent (a stamp of the root and settings,
written last, makes a second call return at once), manifests out, and whatever it skipped reported
in ``<out_dir>/skipped-<corpus>.tsv`` and the log. Preparation decodes every audio file it admits
once (:func:`check_records`, on all cores), so a file damaged after a valid header is skipped there,
not found later by whatever decodes it first.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .audio import AudioError, check_audio

log = logging.getLogger(__name__)


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
            values = dict(zip(header, row, strict=True))
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


Skipped = list[tuple[str, str]]
"""(where: file, or file and line, reason) of each recording a preparation left out."""


AUDIO_CHECK_VERSION = 1
"""Part of every preparation stamp: folders prepared before audio was decoded in full are prepared again."""
PARALLEL_FROM = 64
"""Files from which :func:`check_records` decodes in worker processes (fewer: in this one)."""


def _check(path: str) -> str | None:
    try:
        check_audio(path)
    except AudioError as e:
        return e.reason
    return None


def check_files(paths: list[str], desc: str = "check audio") -> dict[str, str]:
    """Decode every file fully (:func:`corpora.audio.check_audio`), in one worker process per core when
    there are many, with a progress bar; return path -> reason for those that fail."""
    workers = min(os.cpu_count() or 1, 8)
    bar = dict(desc=desc, total=len(paths), unit="file", leave=False, mininterval=1.0)
    if len(paths) < PARALLEL_FROM or workers == 1:
        reasons = [_check(p) for p in tqdm(paths, **bar)]
    else:  # fork: the workers need nothing but the paths, and start at once
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            reasons = list(tqdm(pool.map(_check, paths, chunksize=16), **bar))
    return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}


def check_records(records: dict[str, list[Record]], corpus: str) -> tuple[dict[str, list[Record]], Skipped]:
    """``records`` without those whose audio file does not decode fully, and (file, reason) of each such file."""
    paths = sorted({r.path for recs in records.values() for r in recs})
    bad = check_files(paths, desc=f"check audio {corpus}")
    kept = {split: [r for r in recs if r.path not in bad] for split, recs in records.items()}
    return kept, sorted(bad.items())


def prepare_manifests(out_dir: str | Path, corpus: str, stamp: dict,
                      read: Callable[[], tuple[dict[str, list[Record]], Skipped]]) -> dict[str, Path]:
    """Write the manifests ``<out_dir>/<split>.tsv`` that ``read()`` returns, unless ``out_dir``
    already holds them for the same ``stamp`` (the root and settings); return split -> path.

    ``read()`` returns the records per split (split names become file names) and what it skipped;
    then every audio file is decoded once (:func:`check_records`) and those that fail are skipped too.
    The skipped recordings go to ``<out_dir>/skipped-<corpus>.tsv`` (``where``, ``reason``) and to
    the log as warnings. ``<out_dir>/prepared-<corpus>.json`` (the stamp and the split names) is
    written last, so an interrupted preparation is redone.
    """
    out_dir = Path(out_dir)
    stamp = {**stamp, "audio_check": AUDIO_CHECK_VERSION}
    stamp_file = out_dir / f"prepared-{corpus}.json"
    if stamp_file.is_file():
        done = json.loads(stamp_file.read_text())
        outputs = {split: out_dir / f"{split}.tsv" for split in done.get("splits", [])}
        if done.get("stamp") == stamp and all(p.is_file() for p in outputs.values()):
            return outputs
    records, skipped = read()
    records, damaged = check_records(records, corpus)
    skipped = [*skipped, *damaged]
    outputs = {split: write_manifest(out_dir / f"{split}.tsv", recs) for split, recs in records.items()}
    (out_dir / f"skipped-{corpus}.tsv").write_text("where\treason\n" + "".join(f"{w}\t{r}\n" for w, r in skipped))
    if skipped:
        log.warning("%s: skipped %d recording(s) (listed in %s; first: %s: %s)", corpus, len(skipped),
                    out_dir / f"skipped-{corpus}.tsv", *skipped[0])
    stamp_file.write_text(json.dumps({"stamp": stamp, "splits": list(outputs)}))
    return outputs
