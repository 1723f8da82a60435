"""LibriSpeech layout -> manifests.

Layout: ``<split_dir>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter folder whose lines are ``<utterance id> <TEXT>``.
Libri-light's limited-supervision sets (:mod:`corpora.librilight`) use the same layout below
their ``clean`` / ``other`` folders.

Every transcript line must name an audio file that exists and carry text; anything else is a
:class:`~corpora.manifest.ManifestError` naming the transcript file and line.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

AUDIO_SUFFIXES = (".flac", ".wav")


def read_transcript_file(path: Path) -> list[tuple[str, str, int]]:
    """Lines of one ``*.trans.txt``: (utterance id, text, line number). Empty lines and lines without text
    are errors."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                raise ManifestError(f"{path}:{lineno}: empty transcript line")
            utt, _, text = line.strip().partition(" ")
            if not text.strip():
                raise ManifestError(f"{path}:{lineno}: utterance '{utt}' has no text")
            out.append((utt, text.strip(), lineno))
    return out


def read_librispeech_dir(split_dir: str | Path, id_prefix: str = "", skipped: Skipped | None = None) -> list[Record]:
    """Every transcribed utterance under one LibriSpeech-layout folder, sorted by id.

    Args:
        split_dir: e.g. ``LibriSpeech/dev-clean`` or ``librispeech_finetuning/1h/0/clean``.
        id_prefix: prepended to utterance ids (keeps ids unique when folders are combined).
        skipped: where unreadable or empty audio goes (transcript file and line, reason); None: such
            audio is an error naming the line. A transcript line without any audio file is always an error.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise ManifestError(f"{split_dir}: LibriSpeech folder not found")
    transcripts = sorted(split_dir.rglob("*.trans.txt"))
    if not transcripts:
        raise ManifestError(f"{split_dir}: no *.trans.txt transcript files "
                            "(expected <speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
    records: list[Record] = []
    for trans in tqdm(transcripts, desc=f"scan {split_dir.name}", unit="chapter", leave=False):
        for utt, text, lineno in read_transcript_file(trans):
            audio = next((trans.parent / f"{utt}{s}" for s in AUDIO_SUFFIXES if (trans.parent / f"{utt}{s}").is_file()),
                         None)
            if audio is None:
                raise ManifestError(f"{trans}:{lineno}: no audio for utterance '{utt}' "
                                    f"(looked for {utt}{' or '.join(AUDIO_SUFFIXES)} in {trans.parent})")
            try:
                duration, _ = audio_info(audio)
            except AudioError as e:
                if skipped is None:
                    raise ManifestError(f"{trans}:{lineno}: {e}") from None
                skipped.append((f"{trans}:{lineno} ({audio})", e.reason))
                continue
            records.append(Record(id=f"{id_prefix}{utt}", path=str(audio.resolve()), duration=round(duration, 4),
                                  speaker=utt.split("-")[0], text=text))
    return sorted(records, key=lambda r: r.id)


def find_split_dir(root: str | Path, split: str) -> Path:
    """``<root>/LibriSpeech/<split>`` or ``<root>/<split>``, whichever exists."""
    root = Path(root)
    for candidate in (root / "LibriSpeech" / split, root / split):
        if candidate.is_dir():
            return candidate
    raise ManifestError(f"LibriSpeech split '{split}' not found: neither {root / 'LibriSpeech' / split} "
                        f"nor {root / split} exists")


def prepare_librispeech(root: str | Path, out_dir: str | Path, splits: list[str]) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.tsv`` for each LibriSpeech split named (e.g. ``dev-clean``)
    (:func:`corpora.manifest.prepare_manifests`: idempotent); returns split -> path.

    Unreadable, empty or damaged audio is skipped and listed in ``skipped-librispeech.tsv``; a
    transcript line without any audio file is an error naming the line.
    """
    stamp = {"root": str(Path(root).resolve()), "splits": list(splits), "version": 1}

    def read():
        skipped: Skipped = []
        return {s: read_librispeech_dir(find_split_dir(root, s), skipped=skipped) for s in splits}, skipped

    return prepare_manifests(out_dir, "librispeech", stamp, read)
