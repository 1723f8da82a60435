"""Hugging Face ``datasets`` as a corpus source, read from local files only.

A dataset as people keep it from the Hub: a ``save_to_disk`` folder (``dataset_dict.json`` or
``state.json`` inside) or a folder of parquet/arrow files in the Hub's layout
(``data/train-00000-of-00001.parquet``, ...). The audio column is read with ``decode=False``
(datasets' own decoding needs torchcodec) and each example's encoded bytes are written once to
``<out_dir>/audio/<split>/`` as they are (FLAC stays FLAC, MP3 stays MP3); soundfile decodes them
like any other corpus file. Columns are found by name (``text``/``sentence``/``transcription``,
``translation``, ``label``, ``speaker_id``/``client_id``); class labels are stored as their names.

    prepare_hf("~/hf/speech_commands", "out/manifests", {"train": "train", "dev": "validation", "test": "test"},
               TASK_FIELDS["ks"])
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from .audio import AudioError
from .manifest import Record, Skipped, prepare_manifests, read_manifest

FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "text": ("text", "sentence", "transcription", "normalized_text"),
    "translation": ("translation",),
    "label": ("label", "command", "keyword"),
    "speaker": ("speaker_id", "client_id", "speaker"),
    "id": ("id", "file", "path"),
}
"""Record field -> the dataset columns that may hold it, first match wins."""

TASK_FIELDS = {"ks": ("label",), "asr": ("text",), "st": ("text", "translation")}
"""The record fields each task needs; a dataset lacking one is an error naming its columns."""

_FORMAT_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}


def load_split(path: str | Path, split: str):
    """The ``datasets.Dataset`` of ``split`` in the local dataset at ``path`` with its audio left undecoded,
    and the audio column's name.

    FileNotFoundError when ``path`` is missing; KeyError naming the available splits when ``split`` is not one.
    """
    import datasets  # noqa: PLC0415  (heavy import, only for this source)

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"Hugging Face dataset folder {path} does not exist")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(str(path), cache_dir=str(path / ".hf_cache"))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if split not in loaded:
        raise KeyError(f"{path}: no split {split!r}; the dataset has {', '.join(loaded)}")
    dataset = loaded[split]
    audio = audio_column(dataset, f"{path}:{split}")
    return dataset.cast_column(audio, datasets.Audio(decode=False)), audio


def audio_column(dataset, where: str) -> str:
    """The name of the dataset's audio column: the one typed ``Audio``, else one called ``audio``."""
    import datasets  # noqa: PLC0415  (heavy import, only for this source)

    typed = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Audio)]
    if typed:
        return typed[0]
    if "audio" in dataset.features:
        return "audio"
    raise ValueError(f"{where}: no audio column (columns: {', '.join(dataset.features)})")


def _column(features, field: str) -> str | None:
    return next((c for c in FIELD_COLUMNS[field] if c in features), None)


def prepare_hf(path: str | Path, out_dir: str | Path, splits: dict[str, str],
               fields: tuple[str, ...]) -> dict[str, Path]:
    """Write ``<out_dir>/<ours>.tsv`` (and the audio under ``<out_dir>/audio/<theirs>/``) for each
    ``ours -> theirs`` in ``splits``, from split ``theirs`` of the local dataset at ``path``
    (:func:`corpora.manifest.prepare_manifests`: idempotent); returns ``ours`` -> manifest path.

    ``fields``: the record fields the task needs (:data:`TASK_FIELDS`); a missing column is a
    ValueError naming the dataset's columns. An example whose audio is missing, unreadable, empty or
    damaged is skipped and listed (dataset, split and row) in ``skipped-hf.tsv``.
    """
    stamp = {"path": str(Path(path).resolve()), "splits": splits, "fields": list(fields), "version": 1}

    def read():
        skipped: Skipped = []
        return {ours: _read_split(path, theirs, Path(out_dir), fields, skipped)
                for ours, theirs in splits.items()}, skipped

    return prepare_manifests(out_dir, "hf", stamp, read)


def _read_split(path: str | Path, split: str, out_dir: Path, fields: tuple[str, ...],
                skipped: Skipped) -> list[Record]:
    """The records of split ``split``, its audio written under ``<out_dir>/audio/<split>/``; unusable
    audio goes to ``skipped``."""
    dataset, audio = load_split(path, split)
    where = f"{path}:{split}"
    columns = {field: _column(dataset.features, field) for field in FIELD_COLUMNS}
    missing = [field for field in fields if columns[field] is None]
    if missing:
        wanted = "; ".join(f"{f}: one of {', '.join(FIELD_COLUMNS[f])}" for f in missing)
        raise ValueError(f"{where}: no column for {wanted} (columns: {', '.join(dataset.features)})")
    label_names = getattr(dataset.features[columns["label"]], "names", None) if columns["label"] else None
    audio_dir = out_dir / "audio" / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    records, seen = [], set()
    for row, example in enumerate(tqdm(dataset, desc=f"read {Path(path).name}:{split}", unit="utt", leave=False)):
        raw_id = str(example[columns["id"]]) if columns["id"] else str(row)
        uid = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(raw_id).stem if columns["id"] in ("file", "path") else raw_id)
        if uid in seen:
            uid = f"{uid}-{row}"
        seen.add(uid)
        try:
            file, duration = _materialise(example[audio], audio_dir / uid, f"{where} row {row} ({raw_id})")
        except AudioError as e:
            skipped.append((e.path, e.reason))
            continue
        values = {field: example[col] for field, col in columns.items() if col and field != "id"}
        if label_names is not None:
            values["label"] = label_names[values["label"]]
        records.append(Record(id=uid, path=str(file), duration=duration,
                              **{k: str(v) for k, v in values.items()}))
    return records


def _materialise(audio: dict | None, stem: Path, where: str) -> tuple[Path, float]:
    """(audio file, seconds) of one undecoded audio cell: its bytes written to ``stem.<format>``,
    or its ``path`` when it has no bytes and the file exists."""
    data = (audio or {}).get("bytes")
    if not data:
        local = Path((audio or {}).get("path") or "")
        if not local.is_file():
            raise AudioError(where, f"no audio bytes and no readable file at {local!s}")
        data = local.read_bytes()
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(where, f"unreadable audio ({err})") from None
    if info.frames == 0:
        raise AudioError(where, "empty audio (0 samples)")
    file = stem.with_suffix(_FORMAT_SUFFIX.get(info.format, ".audio"))
    if not file.is_file():
        file.write_bytes(data)
    return file, info.frames / info.samplerate


def read_hf_splits(path: str | Path, split_names: list[str], out_dir: str | Path, task: str) -> dict[str, list[Record]]:
    """train/dev/test records of a task from the dataset's splits ``split_names`` (in that order)."""
    if len(split_names) != 3:
        raise ValueError(f"task.hf_splits must name 3 splits (train, dev, test), got {split_names}")
    paths = prepare_hf(path, out_dir, dict(zip(("train", "dev", "test"), split_names, strict=True)), TASK_FIELDS[task])
    return {ours: read_manifest(manifest) for ours, manifest in paths.items()}
