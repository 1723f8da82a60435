"""VoxCeleb1 as released -> manifests: the speaker-identification split, and the speaker-verification
training speakers and trial list.

Layout: ``<root>/wav/<speaker>/<session>/<utterance>.{wav,flac}`` and ``<root>/iden_split.txt``, one
line per utterance, ``<set> <speaker>/<session>/<utterance>.wav`` with set 1 (train), 2 (dev) or
3 (test), as VoxCeleb1 ships it (``../shared/data/speechocean762_spk`` has the same layout). The
label of an utterance is its speaker, the first part of its path.

Training utterances longer than ``crop_seconds`` are cut to one segment of that length (SUPERB crops
training utterances to 8 s); its start is drawn once per utterance from the seed, so the segment
is the same in every epoch and the frozen-feature cache serves it. Dev and test utterances are whole.

Verification (:func:`prepare_voxceleb1_verification`) reads a trial list, ``<1|0> <enrol> <test>`` per
line with paths under ``wav/`` (``veri_test.txt``, its cleaned variants ``veri_test2.txt``,
``list_test_all2.txt``, ``list_test_hard2.txt``, or ``voxceleb1_test_v2.txt`` as SUPERB names it); a
trial naming ``.wav`` finds the ``.flac`` of the same name (and back). Embeddings are trained on every
other speaker: no speaker of the trial list is ever trained on.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from .audio import AudioError, audio_folder, audio_info
from .manifest import ManifestError, Record, Skipped, prepare_manifests

IDEN_SPLIT = "iden_split.txt"
SETS = {"1": "train", "2": "dev", "3": "test"}
"""``iden_split.txt``'s set numbers -> split names."""
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Trial:
    """One verification trial: are the utterances ``enrol`` and ``test`` (ids: paths under ``wav/``
    without suffix) spoken by one speaker (``target``)?"""

    target: bool
    enrol: str
    test: str


def prepare_voxceleb1_identification(root: str | Path, out_dir: str | Path, crop_seconds: float = 8.0,
                                     seed: int = 0) -> dict[str, Path]:
    """Write ``train.tsv``, ``dev.tsv`` and ``test.tsv`` under ``out_dir`` from ``<root>/iden_split.txt``
    (:func:`corpora.manifest.prepare_manifests`: idempotent; unreadable audio skipped and reported).

    Raises:
        FileNotFoundError: no ``iden_split.txt``, or a line naming an audio file that does not exist
            (the message names the file and line).
        ManifestError: a malformed line (the file and line are named).
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    stamp = {"root": str(root), "crop_seconds": crop_seconds, "seed": seed, "version": 1}
    return prepare_manifests(out_dir, "voxceleb1", stamp, lambda: _read(root, crop_seconds, seed))


def read_iden_split(path: Path) -> list[tuple[int, str, str]]:
    """(line number, split, relative audio path) of every line of an ``iden_split.txt``."""
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in SETS:
            raise ManifestError(f"{path}:{lineno}: expected '<1|2|3> <speaker>/<session>/<utterance>.wav', "
                                f"got {line!r}")
        if len(Path(fields[1]).parts) < 2:
            raise ManifestError(f"{path}:{lineno}: {fields[1]!r} does not start with a speaker folder")
        entries.append((lineno, SETS[fields[0]], fields[1]))
    return entries


def _crop(split: str, utterance: str, duration: float, crop_seconds: float, seed: int) -> tuple[float, float]:
    """(start, duration) of a record: training utterances longer than ``crop_seconds`` are cut to one
    segment of that length, its start drawn once from the seed and the utterance id."""
    if split == "train" and crop_seconds and duration > crop_seconds:
        return round(random.Random(f"{seed}:{utterance}").uniform(0.0, duration - crop_seconds), 4), crop_seconds
    return 0.0, duration


def _utterance(audio: Path, relative: str, split: str, where: str, crop_seconds: float, seed: int,
               skipped: Skipped) -> Record | None:
    """The record of ``<audio>/<relative>`` (its speaker the first folder), cropped as :func:`_crop` says; None
    (and a line in ``skipped``) when it cannot be decoded. ``where`` names the list line that names it.

    Raises:
        FileNotFoundError: the file does not exist (``where`` and the path named).
    """
    path = audio / relative
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {relative} not found under {audio}")
    try:
        duration, _ = audio_info(path)
    except AudioError as e:
        skipped.append((f"{where} {path}", e.reason))
        return None
    utterance = str(Path(relative).with_suffix(""))
    start, duration = _crop(split, utterance, duration, crop_seconds, seed)
    speaker = Path(relative).parts[0]
    return Record(id=utterance, path=str(path), duration=duration, start=start, speaker=speaker, label=speaker)


def _read(root: Path, crop_seconds: float, seed: int) -> tuple[dict[str, list[Record]], Skipped]:
    split_file = root / IDEN_SPLIT
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} missing: VoxCeleb1's identification split needs it")
    audio = audio_folder(root)
    records: dict[str, list[Record]] = {split: [] for split in SETS.values()}
    skipped: Skipped = []
    for lineno, split, relative in read_iden_split(split_file):
        record = _utterance(audio, relative, split, f"{split_file}:{lineno}", crop_seconds, seed, skipped)
        if record is not None:
            records[split].append(record)
    return records, skipped


# ------------------------------------------------------------------------------------------- verification
def find_audio(audio: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``audio``, or the one of the same name with the other audio
    suffix (a ``.wav`` trial list over ``.flac`` audio), or None."""
    path = audio / relative
    if path.is_file():
        return path
    for suffix in AUDIO_SUFFIXES:
        other = path.with_suffix(suffix)
        if other.is_file():
            return other
    return None


def read_trials(path: str | Path, audio: str | Path) -> tuple[list[Trial], dict[str, Path]]:
    """The trials of a VoxCeleb1 trial list (``<1|0> <enrol> <test>`` per line, paths under ``audio``)
    and the audio file of every utterance they name (id -> path).

    Raises:
        FileNotFoundError: no trial list, or a line naming audio that does not exist (file and line named).
        ManifestError: a malformed line, or a list without a target or without a non-target trial.
    """
    path, audio = Path(path), Path(audio)
    if not path.is_file():
        raise FileNotFoundError(f"trial list {path} not found")
    trials: list[Trial] = []
    files: dict[str, Path] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ManifestError(f"{path}:{lineno}: expected '<1|0> <enrol utterance> <test utterance>', got {line!r}")
        ids = []
        for relative in fields[1:]:
            utterance = str(Path(relative).with_suffix(""))
            if utterance not in files:
                found = find_audio(audio, relative)
                if found is None:
                    raise FileNotFoundError(f"{path}:{lineno}: {relative} not found under {audio}")
                files[utterance] = found
            ids.append(utterance)
        trials.append(Trial(fields[0] == "1", ids[0], ids[1]))
    if len({t.target for t in trials}) < 2:
        raise ManifestError(f"{path}: an EER needs target (1) and non-target (0) trials; it has "
                            f"{sum(t.target for t in trials)} target trials of {len(trials)}")
    return trials, files


def prepare_voxceleb1_verification(root: str | Path, out_dir: str | Path, trials: str = "veri_test.txt",
                                   crop_seconds: float = 8.0, dev_fraction: float = 0.2,
                                   seed: int = 0) -> tuple[dict[str, Path], list[Trial]]:
    """Manifests for speaker verification and the test trials.

    ``test.tsv``: every utterance the trial list ``trials`` (under ``root``, or a path) names. ``train.tsv`` and
    ``dev.tsv``: the utterances of every other speaker; with ``iden_split.txt``, its set 1 trains and its sets 2
    and 3 are dev; without it, every ``wav/<speaker>/<session>/<utterance>`` of a speaker outside the trials,
    a seeded ``dev_fraction`` of each speaker's utterances (at least one, where it has two) going to dev.
    Training utterances longer than ``crop_seconds`` are cropped as for identification. Idempotent.

    Raises:
        FileNotFoundError / ManifestError: as :func:`read_trials` and :func:`read_iden_split`; ValueError
            when no speaker is left to train on.
    """
    root, out_dir = Path(root).resolve(), Path(out_dir)
    trial_file = Path(trials) if Path(trials).is_absolute() else root / trials
    test_trials, files = read_trials(trial_file, audio_folder(root))
    stamp = {"root": str(root), "trials": str(trial_file), "crop_seconds": crop_seconds,
             "dev_fraction": dev_fraction, "seed": seed, "version": 1}
    held_out = {utterance.split("/")[0] for utterance in files}
    paths = prepare_manifests(out_dir, "voxceleb1-verification", stamp,
                              lambda: _read_verification(root, files, held_out, crop_seconds, dev_fraction, seed))
    return paths, test_trials


def _read_verification(root: Path, files: dict[str, Path], held_out: set[str], crop_seconds: float,
                       dev_fraction: float, seed: int) -> tuple[dict[str, list[Record]], Skipped]:
    audio = audio_folder(root)
    split_file = root / IDEN_SPLIT
    if split_file.is_file():
        entries = read_iden_split(split_file)
        where = {relative: f"{split_file}:{lineno}" for lineno, _, relative in entries}
        chosen = [(("train" if split == "train" else "dev"), relative)
                  for _, split, relative in entries if Path(relative).parts[0] not in held_out]
    else:
        where, chosen = {}, []
        by_speaker: dict[str, list[str]] = {}
        for path in sorted(p for p in audio.rglob("*") if p.suffix in AUDIO_SUFFIXES and p.is_file()):
            relative = path.relative_to(audio).as_posix()
            if len(Path(relative).parts) >= 2 and Path(relative).parts[0] not in held_out:
                by_speaker.setdefault(Path(relative).parts[0], []).append(relative)
        for speaker, utterances in by_speaker.items():
            n_dev = max(1, round(dev_fraction * len(utterances))) if len(utterances) > 1 else 0
            dev = set(random.Random(f"{seed}:{speaker}").sample(utterances, n_dev))
            chosen += [("dev" if u in dev else "train", u) for u in utterances]
    records: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    skipped: Skipped = []
    for split, relative in chosen:
        record = _utterance(audio, relative, split, where.get(relative, str(audio)), crop_seconds, seed, skipped)
        if record is not None:
            records[split].append(record)
    for utterance, path in sorted(files.items()):
        try:
            duration, _ = audio_info(path)
        except AudioError as e:  # a trial naming it cannot be scored: an error, not a skip
            raise AudioError(path, f"named by the trial list: {e.reason}") from None
        speaker = utterance.split("/")[0]
        records["test"].append(Record(id=utterance, path=str(path), duration=duration, speaker=speaker, label=speaker))
    if not records["train"]:
        raise ValueError(f"{root}: no speaker outside the trial list to train speaker embeddings on")
    return records, skipped


def dev_trials(records: list[Record], seed: int = 0, most: int = 5000) -> list[Trial]:
    """Trials among held-out utterances of the training speakers, to select checkpoints on: the pairs of
    one speaker's utterances (target; a seeded ``most`` of them where there are more) and as many seeded
    pairs of different speakers (non-target)."""
    by_speaker: dict[str, list[str]] = {}
    for r in records:
        by_speaker.setdefault(r.speaker, []).append(r.id)
    rng = random.Random(seed)
    pairs = [(a, b) for ids in by_speaker.values() for a, b in itertools.combinations(sorted(ids), 2)]
    targets = sorted(rng.sample(pairs, most)) if len(pairs) > most else pairs
    ids = sorted(r.id for r in records)
    speaker = {r.id: r.speaker for r in records}
    n = len(ids)
    possible = n * (n - 1) // 2 - sum(len(v) * (len(v) - 1) // 2 for v in by_speaker.values())
    non_targets: set[tuple[str, str]] = set()
    while len(non_targets) < min(len(targets), possible):
        a, b = sorted(rng.sample(ids, 2))
        if speaker[a] != speaker[b]:
            non_targets.add((a, b))
    return [*(Trial(True, a, b) for a, b in targets), *(Trial(False, a, b) for a, b in sorted(non_targets))]
