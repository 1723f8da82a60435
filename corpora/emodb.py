"""The Berlin Database of Emotional Speech (EmoDB) -> one manifest of every utterance.

EmoDB codes everything in its file names: ``03a01Fa.wav`` is speaker ``03``, text ``a01``, emotion ``F``
(German initials: W Wut/anger, L Langeweile/boredom, E Ekel/disgust, A Angst/fear, F Freude/happiness,
T Trauer/sadness, N neutral) and version ``a``. The audio is under ``<root>/wav/`` as released (or in
``root`` itself). A ``labels.csv`` beside it (``file,speaker,text,emotion``, as in
``../shared/data/emodb_2s``) is checked against the names: a disagreement is an error naming the line.
EmoDB has no official split: :func:`corpora.folds.speaker_test_fold` deals leave-speakers-out folds.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from .audio import AudioError, audio_folder, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
            "N": "neutral"}
"""EmoDB's emotion letters -> emotion names."""
SUPERB4 = ("neutral", "happiness", "anger", "sadness")
"""SUPERB's four emotion classes (IEMOCAP's neu, hap, ang, sad), EmoDB's names."""
NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])$")
AUDIO_SUFFIXES = (".wav", ".flac")
LABELS = "labels.csv"


def parse_name(stem: str) -> dict[str, str] | None:
    """Speaker, text, emotion and version of an EmoDB file name (without suffix), or None for another name."""
    match = NAME.match(stem)
    if match is None:
        return None
    return {**match.groupdict(), "emotion": EMOTIONS[match["emotion"]]}


def prepare_emodb(root: str | Path, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/all.tsv``: every EmoDB utterance under ``root`` (label: its emotion; speaker; text
    code in ``text``). Idempotent (:func:`corpora.manifest.prepare_manifests`); files whose names are not
    EmoDB's, and unreadable audio, are skipped and listed.

    Raises:
        FileNotFoundError: no EmoDB-named audio under ``root``.
        ManifestError: a ``labels.csv`` row that disagrees with its file's name, or names a missing file.
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    stamp = {"root": str(root), "version": 1}
    return prepare_manifests(out_dir, "emodb", stamp, lambda: _read(root))["all"]


def _read(root: Path) -> tuple[dict[str, list[Record]], Skipped]:
    audio = audio_folder(root)
    files = sorted(p for p in audio.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if audio.is_dir() else []
    records, skipped = [], []
    for path in files:
        parsed = parse_name(path.stem)
        if parsed is None:
            skipped.append((str(path), "not an EmoDB file name (<speaker><text><emotion><version>, e.g. 03a01Fa)"))
            continue
        try:
            duration, _ = audio_info(path)
        except AudioError as e:
            skipped.append((str(path), e.reason))
            continue
        records.append(Record(id=path.stem, path=str(path), duration=duration, speaker=parsed["speaker"],
                              label=parsed["emotion"], text=parsed["text"]))
    if not records and not skipped:
        raise FileNotFoundError(f"{root}: no EmoDB audio (wav/<speaker><text><emotion><version>.wav, e.g. 03a01Fa.wav)")
    if (root / LABELS).is_file():
        _check_labels(root / LABELS, audio)
    return {"all": records}, skipped


def _check_labels(path: Path, audio: Path) -> None:
    """ManifestError (file and line) where ``labels.csv`` disagrees with the file names."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = {"file", "speaker", "emotion"} - set(rows.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}:1: missing column(s) {sorted(missing)}")
        for lineno, row in enumerate(rows, start=2):
            parsed = parse_name(Path(row["file"]).stem)
            if not (audio / row["file"]).is_file():
                raise ManifestError(f"{path}:{lineno}: {row['file']} not found under {audio}")
            if parsed is None or (parsed["speaker"], parsed["emotion"]) != (row["speaker"], row["emotion"]):
                raise ManifestError(f"{path}:{lineno}: speaker {row['speaker']!r} / emotion {row['emotion']!r} "
                                    f"disagree with the file name {row['file']}")
