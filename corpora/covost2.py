"""CoVoST 2 layout -> manifests.

Layout: ``<root>/clips/<clip>.mp3`` (Common Voice audio) and ``<root>/covost_v2.<src>_<tgt>.<split>.tsv``
for split in ``train``, ``dev``, ``test`` (what CoVoST's ``get_covost_splits.py`` writes), tab-separated
with a header naming at least ``path``, ``sentence``, ``translation`` and ``client_id``. Fields are
not quoted (sentences may contain quote characters).

A row whose clip is missing, unreadable or empty is skipped and reported: a warning with the count,
and ``skipped-covost2.tsv`` (tsv file and line, clip; reason) next to the manifests. Any other malformed row is
an error naming the file and line.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from tqdm import tqdm

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
COLUMNS = ("path", "sentence", "translation", "client_id")


def covost_tsv(root: str | Path, src: str, tgt: str, split: str) -> Path:
    """``<root>/covost_v2.<src>_<tgt>.<split>.tsv``."""
    return Path(root) / f"covost_v2.{src}_{tgt}.{split}.tsv"


def read_covost2(root: str | Path, split: str, src: str = "en", tgt: str = "de") -> tuple[list[Record], list[tuple]]:
    """Records of one split, and the skipped rows as (tsv line, clip, reason)."""
    tsv = covost_tsv(root, src, tgt, split)
    if not tsv.is_file():
        raise ManifestError(f"{tsv}: CoVoST 2 split file not found "
                            f"(expected covost_v2.{src}_{tgt}.{{train,dev,test}}.tsv in {root})")
    clips = Path(root) / "clips"
    records, skipped, seen = [], [], set()
    with open(tsv, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        missing = [c for c in COLUMNS if c not in (header or [])]
        if missing:
            raise ManifestError(f"{tsv}:1: missing column(s) {missing}; found {header}")
        col = {name: header.index(name) for name in COLUMNS}
        for lineno, row in enumerate(tqdm(rows, desc=f"scan {tsv.name}", unit="row", leave=False), start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ManifestError(f"{tsv}:{lineno}: expected {len(header)} tab-separated fields, found {len(row)}")
            clip, sentence, translation = (row[col["path"]], row[col["sentence"]].strip(),
                                           row[col["translation"]].strip())
            if not sentence or not translation:
                raise ManifestError(f"{tsv}:{lineno}: empty {'sentence' if not sentence else 'translation'} "
                                    f"for clip {clip!r}")
            if clip in seen:
                raise ManifestError(f"{tsv}:{lineno}: clip {clip!r} listed twice")
            seen.add(clip)
            try:
                duration, _ = audio_info(clips / clip)
            except AudioError as e:
                skipped.append((lineno, clip, e.reason))
                continue
            records.append(Record(id=Path(clip).stem, path=str((clips / clip).resolve()), duration=round(duration, 4),
                                  speaker=row[col["client_id"]], text=sentence, translation=translation))
    if skipped:
        log.warning("%s: skipped %d row(s) whose clip is missing or unusable (first: line %d, %s: %s)",
                    tsv, len(skipped), *skipped[0])
    return records, skipped


def prepare_covost2(root: str | Path, out_dir: str | Path, src: str = "en", tgt: str = "de") -> dict[str, Path]:
    """Write ``<out_dir>/<split>.tsv`` for train/dev/test (:func:`corpora.manifest.prepare_manifests`:
    idempotent, skipped rows in ``skipped-covost2.tsv``); returns split -> path."""
    stamp = {"root": str(Path(root).resolve()), "src": src, "tgt": tgt, "version": 1}
    return prepare_manifests(out_dir, "covost2", stamp, lambda: _read_splits(root, src, tgt))


def _read_splits(root: str | Path, src: str, tgt: str) -> tuple[dict[str, list[Record]], Skipped]:
    records, skipped = {}, []
    for split in SPLITS:
        records[split], rows = read_covost2(root, split, src, tgt)
        if not records[split]:
            raise ManifestError(f"{covost_tsv(root, src, tgt, split)}: no usable rows")
        skipped += [(f"{covost_tsv(root, src, tgt, split)}:{line} ({clip})", reason) for line, clip, reason in rows]
    return records, skipped
