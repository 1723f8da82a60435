"""Time alignments of phones: one TSV file, one row per segment, like a CTM file.

Columns ``id start end phone``: the utterance id (a LibriSpeech-style file stem), the segment's
start and end in seconds from the start of the file, and its label (an ARPAbet phone, or ``SIL``
for the silence around the speech). Segments of an utterance are in time order and do not overlap.
Written by ``python -m recipes.pr.align``; read by the target diagnostics of pre-training
(:mod:`upstream.pretrain.target_quality`).
"""
from __future__ import annotations

import bisect
from pathlib import Path

from core.checkpoint import atomic_write_text

from .manifest import ManifestError

SILENCE = "SIL"
HEADER = "id\tstart\tend\tphone"

Segments = list[tuple[float, float, str]]
"""(start s, end s, phone) in time order."""


def write_alignments(path: str | Path, alignments: dict[str, Segments]) -> Path:
    """Write ``alignments`` (utterance id -> segments) to ``path`` (rows sorted by id), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{uid}\t{start:.3f}\t{end:.3f}\t{phone}" for uid in sorted(alignments)
            for start, end, phone in alignments[uid]]
    return atomic_write_text(path, "\n".join([HEADER, *rows]) + "\n")


def read_alignments(path: str | Path) -> dict[str, Segments]:
    """Utterance id -> segments; a malformed row is a :class:`~corpora.manifest.ManifestError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: alignment file not found")
    lines = path.read_text().splitlines()
    if not lines or lines[0] != HEADER:
        raise ManifestError(f"{path}:1: expected the header {HEADER!r}")
    out: dict[str, Segments] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 4:
            raise ManifestError(f"{path}:{lineno}: expected 4 tab-separated fields, found {len(fields)}")
        uid, start, end, phone = fields
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise ManifestError(f"{path}:{lineno}: start and end must be numbers, got {start!r}, {end!r}") from None
        segments = out.setdefault(uid, [])
        if end_s <= start_s or (segments and start_s < segments[-1][1] - 1e-6):
            raise ManifestError(f"{path}:{lineno}: segment {start_s}-{end_s} is empty or overlaps the one before")
        segments.append((start_s, end_s, phone))
    return out


def phones_at(segments: Segments, times: list[float]) -> list[str | None]:
    """The phone of the segment that holds each time (seconds), or None outside every segment."""
    starts = [s for s, _, _ in segments]
    out: list[str | None] = []
    for t in times:
        i = bisect.bisect_right(starts, t) - 1
        out.append(segments[i][2] if i >= 0 and t < segments[i][1] else None)
    return out
