"""IEMOCAP as released (``IEMOCAP_full_release``) -> one manifest of every annotated utterance.

Layout: ``<root>/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt``, where each line starting with ``[``
holds, tab-separated, ``[start - end]``, the utterance id (``Ses01F_impro01_F000``), its categorical
label (``neu``, ``hap``, ``exc``, ``ang``, ``sad``, ``fru``, ``xxx``, ...) and ``[valence, arousal,
dominance]``; the audio is ``<root>/Session<n>/sentences/wav/<dialog>/<utterance>.wav``, ``<dialog>``
being the id without its last ``_`` part. Other lines and files (the per-annotator ``Categorical/``
folders, hidden ``._*`` files) are not read.

Speakers: each session is recorded by one actress and one actor; the letter that starts the id's last
part (``F000``, ``M012``) is the speaker's gender, so ``Ses01F_impro01_M003`` is spoken by the man of
session 1, speaker ``Ses01_M`` (10 speakers). The letter after the session (``Ses01F``) is not the
speaker: it says which actor of the dialogue wore the motion-capture markers.

Labels: SUPERB's preprocessing (S3PRL ``downstream/emotion/IEMOCAP_preprocess.py``) keeps ``neu``,
``hap``, ``ang``, ``sad`` and ``exc`` merged into ``hap``: 5,531 utterances. Here every label is kept,
named as EmoDB names its emotions (:data:`LABELS`: ``neu`` -> ``neutral``, ``xxx`` (no majority among the
annotators) -> ``no_agreement``), with ``exc`` written as ``happiness`` (``merge_excitement``, SUPERB's)
or ``excitement``; the task keeps the classes it uses. Folds are the sessions
(:func:`corpora.folds.group_test_fold` with :func:`session`).
"""
from __future__ import annotations

import re
from pathlib import Path

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

LABELS = {"neu": "neutral", "hap": "happiness", "exc": "excitement", "ang": "anger", "sad": "sadness",
          "fru": "frustration", "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other",
          "xxx": "no_agreement"}
"""IEMOCAP's categorical labels -> the names written to the manifest (EmoDB's names where EmoDB has them)."""
SUPERB_CODES = ("neu", "hap", "exc", "ang", "sad")
"""The labels SUPERB keeps (``exc`` counted as ``hap``)."""
EVALUATION_DIR = Path("dialog") / "EmoEvaluation"
WAV_DIR = Path("sentences") / "wav"
AUDIO_SUFFIXES = (".wav", ".flac")
SESSION = re.compile(r"^Session(\d+)$")
TIMES = re.compile(r"^\[\s*\d+(\.\d*)?\s*-\s*\d+(\.\d*)?\s*\]$")
UTTERANCE = re.compile(r"^Ses(?P<session>\d\d)[FM]_\S+_(?P<gender>[FM])\d+$")


def sessions(root: str | Path) -> list[Path]:
    """The ``Session<n>`` folders under ``root`` that hold ``dialog/EmoEvaluation/``, in session order."""
    root = Path(root)
    found = [p for p in root.iterdir() if SESSION.match(p.name) and (p / EVALUATION_DIR).is_dir()] \
        if root.is_dir() else []
    return sorted(found, key=lambda p: int(SESSION.match(p.name)[1]))


def session(record: Record) -> str:
    """The session of an utterance read by :func:`prepare_iemocap` (``Ses01``), from its speaker (``Ses01_F``)."""
    return record.speaker.split("_")[0]


def parse_line(line: str, where: str) -> tuple[str, str]:
    """(utterance id, label code) of an EmoEvaluation line that starts with ``[``.

    ManifestError naming ``where`` (file and line) for another shape, an unknown label or id."""
    fields = [f.strip() for f in line.rstrip("\r\n").split("\t") if f.strip()]
    if len(fields) != 4 or not TIMES.match(fields[0]) or not fields[3].startswith("["):
        raise ManifestError(f"{where}: expected '[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]', got {line!r}")
    utterance, code = fields[1], fields[2]
    if not UTTERANCE.match(utterance):
        raise ManifestError(f"{where}: utterance id {utterance!r} is not IEMOCAP's (e.g. Ses01F_impro01_F000)")
    if code not in LABELS:
        raise ManifestError(f"{where}: unknown label {code!r}; IEMOCAP's are {', '.join(LABELS)}")
    return utterance, code


def prepare_iemocap(root: str | Path, out_dir: str | Path, merge_excitement: bool = True) -> Path:
    """Write ``<out_dir>/all.tsv``: every utterance of IEMOCAP's EmoEvaluation files under ``root``
    (speaker ``Ses<nn>_<F|M>``; label: :data:`LABELS`' name, ``exc`` as ``happiness`` when
    ``merge_excitement``). Idempotent (:func:`corpora.manifest.prepare_manifests`); unreadable audio
    is skipped and listed.

    Raises:
        FileNotFoundError: no ``Session<n>/dialog/EmoEvaluation/`` under ``root``, or an annotated
            utterance without audio (the message names the evaluation file and line).
        ManifestError: a malformed ``[`` line, an unknown label, an id of another session, or an
            utterance annotated twice (the file and line are named).
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    stamp = {"root": str(root), "merge_excitement": merge_excitement, "version": 1}
    return prepare_manifests(out_dir, "iemocap", stamp, lambda: _read(root, merge_excitement))["all"]


def _read(root: Path, merge_excitement: bool) -> tuple[dict[str, list[Record]], Skipped]:
    found = sessions(root)
    if not found:
        raise FileNotFoundError(f"{root}: no IEMOCAP session (Session<n>/{EVALUATION_DIR.as_posix()}/*.txt)")
    names = {**LABELS, "exc": LABELS["hap"]} if merge_excitement else LABELS
    records: list[Record] = []
    skipped: Skipped = []
    seen: dict[str, str] = {}
    for folder in found:
        number = int(SESSION.match(folder.name)[1])
        for txt in sorted((folder / EVALUATION_DIR).glob("*.txt")):
            if txt.name.startswith("."):
                continue
            try:
                lines = txt.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise ManifestError(f"{txt}: not a text file ({e})") from None
            for lineno, line in enumerate(lines, start=1):
                if not line.startswith("["):
                    continue
                where = f"{txt}:{lineno}"
                utterance, code = parse_line(line, where)
                parts = UTTERANCE.match(utterance)
                if int(parts["session"]) != number:
                    raise ManifestError(f"{where}: utterance {utterance} belongs to session {int(parts['session'])}, "
                                        f"not {folder.name}")
                if utterance in seen:
                    raise ManifestError(f"{where}: utterance {utterance} already annotated at {seen[utterance]}")
                seen[utterance] = where
                path = _audio(folder, utterance)
                if path is None:
                    expected = folder / WAV_DIR / utterance.rsplit("_", 1)[0] / f"{utterance}.wav"
                    raise FileNotFoundError(f"{where}: no audio for {utterance}: {expected} not found")
                try:
                    duration, _ = audio_info(path)
                except AudioError as e:
                    skipped.append((f"{where} {path}", e.reason))
                    continue
                records.append(Record(id=utterance, path=str(path), duration=duration,
                                      speaker=f"Ses{parts['session']}_{parts['gender']}", label=names[code]))
    if not records and not skipped:
        raise FileNotFoundError(f"{root}: no annotated utterance in Session<n>/{EVALUATION_DIR.as_posix()}/*.txt")
    return {"all": records}, skipped


def _audio(folder: Path, utterance: str) -> Path | None:
    """``<session>/sentences/wav/<dialog>/<utterance>.wav`` (or ``.flac``), or None when absent."""
    stem = folder / WAV_DIR / utterance.rsplit("_", 1)[0] / utterance
    return next((p for p in (stem.with_name(stem.name + s) for s in AUDIO_SUFFIXES) if p.is_file()), None)
