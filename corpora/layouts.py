"""Which corpus a folder holds, recognised by its layout (:func:`detect_layout`).

Each known layout is named by the ``task.corpus`` value that reads it:
    ``librispeech``      LibriSpeech (``[LibriSpeech/]<split>/<speaker>/<chapter>/*.trans.txt``) and/or
                         Libri-light's limited sets (``librispeech_finetuning/1h/…``, or ``1h/`` itself)
    ``speech_commands``  Speech Commands (``<word>/*.wav`` with ``validation_list.txt`` / ``testing_list.txt``)
    ``covost2``          CoVoST 2 (``covost_v2.<src>_<tgt>[.<split>].tsv`` with ``clips/``)
    ``voxceleb1``        VoxCeleb1 (``wav/<speaker>/<session>/*.wav|flac`` with ``iden_split.txt`` / ``veri_test.txt``)
    ``fluent_commands``  Fluent Speech Commands (``data/{train,valid,test}_data.csv`` with ``wavs/``)
    ``emodb``            EmoDB (``wav/<speaker><text><emotion><version>.wav``, e.g. ``03a01Fa.wav``)
    ``iemocap``          IEMOCAP (``Session<n>/dialog/EmoEvaluation/*.txt`` with ``Session<n>/sentences/wav/``)
    ``csv``              CSV lists (``train.csv``, ``dev.csv``, ``test.csv``, or ``data.csv``; header
                         ``path,label[,speaker]``)
    ``manifest``         the toolkit's manifests (``train.tsv``, ``dev.tsv``, ``test.tsv``)
    ``hf``               a local Hugging Face dataset (``save_to_disk``: ``dataset_dict.json`` / ``state.json``;
                         the Hub's layout: ``data/*.parquet`` or ``*.arrow``)
A folder holding ``BUILT.json`` is one of the toolkit's demo corpora (:mod:`corpora.demo`), in one of
the layouts above. Detection reads folder listings, the first few entries and CSV headers only, never
the audio.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from . import csv_list, iemocap
from .demo.tts import STAMP as DEMO_STAMP
from .emodb import NAME as EMODB_NAME

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")

LAYOUT_NAMES = {
    "librispeech": "LibriSpeech / Libri-light",
    "speech_commands": "Speech Commands",
    "covost2": "CoVoST 2",
    "voxceleb1": "VoxCeleb1",
    "fluent_commands": "Fluent Speech Commands",
    "emodb": "EmoDB",
    "iemocap": "IEMOCAP",
    "csv": "CSV list",
    "manifest": "manifest",
    "hf": "Hugging Face dataset",
}
"""``task.corpus`` value -> the layout's name in messages."""

EXPECTED = {
    "librispeech": "LibriSpeech/<split>/<speaker>/<chapter>/*.trans.txt and/or librispeech_finetuning/1h/…",
    "speech_commands": "<word>/*.wav with validation_list.txt and testing_list.txt",
    "covost2": "covost_v2.<src>_<tgt>.{train,dev,test}.tsv with clips/",
    "voxceleb1": "wav/<speaker>/<session>/*.wav with iden_split.txt and veri_test.txt",
    "fluent_commands": "data/{train,valid,test}_data.csv with wavs/",
    "emodb": "wav/<speaker><text><emotion><version>.wav (EmoDB's names, e.g. 03a01Fa.wav)",
    "iemocap": "Session<n>/dialog/EmoEvaluation/*.txt with Session<n>/sentences/wav/<dialog>/<utterance>.wav",
    "csv": "train.csv, dev.csv, test.csv or data.csv, each with the header path,label[,speaker]",
    "manifest": "train.tsv, dev.tsv, test.tsv",
    "hf": "a local Hugging Face dataset: dataset_dict.json, or data/*.parquet",
    "demo": "the toolkit's synthetic corpus, built into an absent or empty folder",
}
"""``task.corpus`` value -> what ``task.root`` must hold for it, for messages."""

_LIBRISPEECH_SPLIT = re.compile(r"(train|dev|test)-(clean|other)(-\d+)?")
_VOXCELEB_LISTS = ("iden_split.txt", "veri_test.txt", "veri_test2.txt", "voxceleb1_test_v2.txt")
_SHOWN = 8
"""Most entries a description lists."""


@dataclass(frozen=True)
class Layout:
    """A recognised corpus layout: ``corpus`` (the ``task.corpus`` value that reads it), ``found``
    (what identified it, for messages) and ``demo`` (built by the toolkit's demo builders: ``BUILT.json``)."""

    corpus: str
    found: tuple[str, ...]
    demo: bool = False

    def describe(self) -> str:
        """E.g. ``a Speech Commands layout (validation_list.txt, testing_list.txt, 10 word folders)``."""
        name, found = LAYOUT_NAMES.get(self.corpus), ", ".join(self.found)
        what = f"a {name} layout ({found})" if name else f"no layout known here ({found})"
        return f"a demo corpus built by this toolkit ({DEMO_STAMP}) in {what}" if self.demo else what


def detect_layout(root: str | Path) -> Layout | None:
    """The corpus layout ``root`` holds, or None (``root`` absent, empty, not a folder or unrecognised).

    The checks run in the order of :data:`LAYOUT_NAMES`; the first that matches wins. A folder with
    ``BUILT.json`` is a demo corpus: its ``Layout`` has ``demo=True`` and the layout of its files (the
    ``corpus`` of a demo whose files match no layout is ``unknown``)."""
    root = Path(root)
    if not root.is_dir():
        return None
    entries = {p.name: p for p in root.iterdir()}
    for corpus, check in _CHECKS.items():
        found = check(root, entries)
        if found:
            return Layout(corpus, tuple(found), demo=DEMO_STAMP in entries)
    if DEMO_STAMP in entries:
        return Layout("unknown", (DEMO_STAMP,), demo=True)
    return None


def describe_folder(root: str | Path) -> str:
    """What ``root`` holds, for a message when :func:`detect_layout` finds no layout: ``does not exist``,
    ``is empty``, or its first entries, and the layouts its sub-folders hold (a parent of corpora)."""
    root = Path(root)
    if not root.exists():
        return "does not exist"
    if not root.is_dir():
        return "is a file, not a folder"
    entries = sorted(root.iterdir())
    if not entries:
        return "is empty"
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:_SHOWN])
    more = f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else ""
    text = f"holds {shown}{more}, in no corpus layout known here"
    inside = [(p.name, detect_layout(p)) for p in entries[:50] if p.is_dir()]
    known = [f"{name}/ ({LAYOUT_NAMES.get(layout.corpus, 'demo corpus')})" for name, layout in inside if layout]
    return text + (f" (sub-folders in one: {', '.join(known)})" if known else "")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _first(paths, n: int = 1) -> list:
    return list(islice(paths, n))


def _has_transcripts(split_dir: Path) -> bool:
    return bool(_first(split_dir.glob("*/*/*.trans.txt")))


def _librispeech(root: Path, entries: dict[str, Path]) -> list[str]:
    found = []
    nested = entries.get("LibriSpeech")
    if nested is not None and nested.is_dir():
        found += [f"LibriSpeech/{d.name}" for d in sorted(nested.iterdir()) if d.is_dir() and _has_transcripts(d)]
    found += [name for name, d in sorted(entries.items())
              if _LIBRISPEECH_SPLIT.fullmatch(name) and d.is_dir() and _has_transcripts(d)]
    if (root / "librispeech_finetuning" / "1h").is_dir():
        found.append("librispeech_finetuning/1h")
    elif (root / "1h" / "0").is_dir():
        found.append("1h/0")
    return found


def _speech_commands(root: Path, entries: dict[str, Path]) -> list[str]:
    lists = [name for name in ("validation_list.txt", "testing_list.txt") if name in entries]
    if not lists:
        return []
    words = [p for name, p in entries.items() if p.is_dir() and not name.startswith(("_", "."))
             and _first(q for q in p.iterdir() if q.suffix in AUDIO_SUFFIXES)]
    if not words:
        return []
    noise = ["_background_noise_/"] if "_background_noise_" in entries else []
    return [*lists, _count(len(words), "word folder"), *noise]


def _covost2(root: Path, entries: dict[str, Path]) -> list[str]:
    tsvs = sorted(name for name in entries if name.startswith("covost_v2.") and name.endswith(".tsv"))
    if not tsvs or not (root / "clips").is_dir():
        return []
    return [*tsvs[:4], *([f"{len(tsvs) - 4} more covost_v2 tsv files"] if len(tsvs) > 4 else []), "clips/"]


def _voxceleb1(root: Path, entries: dict[str, Path]) -> list[str]:
    lists = [name for name in _VOXCELEB_LISTS if name in entries]
    wav = entries.get("wav")
    if not lists or wav is None or not wav.is_dir():
        return []
    speakers = sum(1 for p in wav.iterdir() if p.is_dir())
    return [*lists, f"wav/ with {_count(speakers, 'speaker folder')}"] if speakers else []


def _fluent_commands(root: Path, entries: dict[str, Path]) -> list[str]:
    csvs = [f"data/{s}_data.csv" for s in ("train", "valid", "test") if (root / "data" / f"{s}_data.csv").is_file()]
    return [*csvs, "wavs/"] if csvs and (root / "wavs").is_dir() else []


def _manifest(root: Path, entries: dict[str, Path]) -> list[str]:
    names = ["train.tsv", "dev.tsv", "test.tsv"]
    return names if all(name in entries for name in names) else []


def _hf(root: Path, entries: dict[str, Path]) -> list[str]:
    marker = next((name for name in ("dataset_dict.json", "state.json") if name in entries), None)
    if marker:
        return [marker]
    data = entries.get("data")
    if data is not None and data.is_dir() and _first(q for q in data.iterdir() if q.suffix in (".parquet", ".arrow")):
        return ["data/*.parquet"]
    return []


def _emodb(root: Path, entries: dict[str, Path]) -> list[str]:
    wav = entries.get("wav")
    if wav is None or not wav.is_dir():
        return []
    names = [p.stem for p in islice(wav.iterdir(), _SHOWN)]
    if not names or not all(EMODB_NAME.match(n) for n in names):
        return []
    return ["wav/ with EmoDB file names", *(["labels.csv"] if "labels.csv" in entries else [])]


def _iemocap(root: Path, entries: dict[str, Path]) -> list[str]:
    found = iemocap.sessions(root)
    return [f"{_count(len(found), 'Session folder')} with dialog/EmoEvaluation/"] if found else []


def _csv(root: Path, entries: dict[str, Path]) -> list[str]:
    names = list(csv_list.SPLIT_FILES.values())
    if not all(name in entries for name in names):
        names = [csv_list.POOL_FILE] if csv_list.POOL_FILE in entries else []
    try:
        fits = names and all(set(csv_list.REQUIRED) <= set(csv_list.read_header(entries[name])) for name in names)
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return names if fits else []


_CHECKS: dict[str, Callable[[Path, dict[str, Path]], list[str]]] = {
    "librispeech": _librispeech, "speech_commands": _speech_commands, "covost2": _covost2, "voxceleb1": _voxceleb1,
    "fluent_commands": _fluent_commands, "emodb": _emodb, "iemocap": _iemocap, "csv": _csv, "manifest": _manifest,
    "hf": _hf,
}
