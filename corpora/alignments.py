"""Time alignments of phones and words: one TSV file, one row per segment, like a CTM file.

Columns ``id start end phone``: the utterance id (a LibriSpeech-style file stem), the segment's
start and end in seconds from the start of the file, and its label (an ARPAbet phone, or ``SIL``
for the silence around the speech). Segments of an utterance are in time order and do not overlap.
Written by ``python -m recipes.pr.align``; read by the target diagnostics of pre-training
(:mod:`upstream.pretrain.target_quality`).

Word alignments have the same form with a ``word`` column (``id start end word``). They come from
any aligner, or from a phone alignment and the pronunciation of each word of the transcript
(:func:`words_from_phones`: the phone aligner walks the words' phones in order, so each word spans its
phones); query-by-example search cuts its queries with them (:mod:`downstream.qbe.queries`).
"""
from __future__ import annotations

import bisect
from pathlib import Path

from core.checkpoint import atomic_write_text

from .manifest import ManifestError

SILENCE = "SIL"
HEADER = "id\tstart\tend\tphone"
WORD_HEADER = "id\tstart\tend\tword"
SILENCE_LABELS = frozenset({SILENCE, "sil", "sp", "spn", ""})
"""Labels that are no phone of a word: this toolkit's ``SIL`` and other aligners' silence and noise marks."""

Segments = list[tuple[float, float, str]]
"""(start s, end s, phone) in time order."""


def write_alignments(path: str | Path, alignments: dict[str, Segments], header: str = HEADER) -> Path:
    """Write ``alignments`` (utterance id -> segments) to ``path`` (rows sorted by id), atomically;
    ``header``: :data:`WORD_HEADER` for word alignments."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{uid}\t{start:.3f}\t{end:.3f}\t{phone}" for uid in sorted(alignments)
            for start, end, phone in alignments[uid]]
    return atomic_write_text(path, "\n".join([header, *rows]) + "\n")


def read_alignments(path: str | Path, header: str = HEADER) -> dict[str, Segments]:
    """Utterance id -> segments; a malformed row is a :class:`~corpora.manifest.ManifestError` naming file and line.
    ``header``: :data:`WORD_HEADER` for word alignments."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: alignment file not found")
    lines = path.read_text().splitlines()
    if not lines or lines[0] != header:
        raise ManifestError(f"{path}:1: expected the header {header!r}")
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


def words_from_phones(segments: Segments, pronunciations: list[tuple[str, list[str] | None]]) -> Segments | None:
    """Word segments of one utterance from its phone segments and the phones of each transcript word.

    Args:
        segments: the utterance's phone alignment (silence labels, :data:`SILENCE_LABELS`, are skipped).
        pronunciations: (word, its phones) for every word of the transcript in order: the pronunciation the
            aligner was given. One word may have None (e.g. a word the dictionary lacks): it takes the phones
            the others leave.

    Returns:
        (start of the word's first phone, end of its last phone, word) per word, or None when the alignment does
        not spell these pronunciations (other phones, another count, or more than one unknown word).
    """
    phones = [(start, end, label) for start, end, label in segments if label not in SILENCE_LABELS]
    unknown = [i for i, (_, p) in enumerate(pronunciations) if p is None]
    known = sum(len(p) for _, p in pronunciations if p is not None)
    if len(unknown) > 1 or (not unknown and known != len(phones)) or (unknown and known >= len(phones)):
        return None
    out: Segments = []
    k = 0
    for word, pron in pronunciations:
        n = len(phones) - known if pron is None else len(pron)
        span = phones[k:k + n]
        if n == 0 or (pron is not None and [label for _, _, label in span] != list(pron)):
            return None
        out.append((span[0][0], span[-1][1], word))
        k += n
    return out
