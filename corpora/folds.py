"""Cross-validation folds: re-split a corpus so that every speaker (or utterance) is tested once.

With few speakers (6 in a small digits corpus, one of them the official test speaker), one
test speaker makes a noisy number; averaging over folds, each testing other speakers, does not.
:func:`speaker_fold` tests one group of speakers and selects on the next (keyword spotting);
:func:`heldout_fold` trains on the rest of the corpus but a small dev share (phoneme recognition,
where every training minute counts).
"""
from __future__ import annotations

import random
from collections.abc import Callable

from .manifest import Record


def speaker_fold(splits: dict[str, list[Record]], folds: int, fold: int, seed: int = 0) -> dict[str, list[Record]]:
    """train/dev/test for fold ``fold`` of ``folds``: the corpus's speakers (all splits pooled) are
    shuffled with ``seed`` and dealt into ``folds`` groups; group ``fold`` is tested, group
    ``fold + 1`` (mod ``folds``) selects checkpoints, the rest trains. Records without a speaker
    (e.g. ``_silence_`` clips cut from noise) stay in their split.

    ValueError when ``folds`` < 3, ``fold`` is out of range or there are fewer speakers than folds.
    """
    if folds < 3 or not 0 <= fold < folds:
        raise ValueError(f"speaker folds: need folds >= 3 and 0 <= fold < folds, got fold {fold} of {folds}")
    speakers = sorted({r.speaker for records in splits.values() for r in records if r.speaker})
    if len(speakers) < folds:
        raise ValueError(f"speaker folds: {folds} folds need at least {folds} speakers, the corpus has {len(speakers)}")
    random.Random(seed).shuffle(speakers)
    group = {spk: i % folds for i, spk in enumerate(speakers)}
    role = {fold: "test", (fold + 1) % folds: "dev"}
    out: dict[str, list[Record]] = {name: [] for name in splits}
    for name, records in splits.items():
        for r in records:
            out[role.get(group[r.speaker], "train") if r.speaker else name].append(r)
    return out


def heldout_fold(records: list[Record], folds: int, fold: int, dev_fraction: float = 0.1,
                 seed: int = 0) -> dict[str, list[Record]]:
    """train/dev/test for fold ``fold`` of ``folds`` over all of ``records`` (every split pooled).

    Records are grouped by speaker, or by utterance when there are fewer speakers than folds (a
    one-reader corpus); the groups are shuffled with ``seed`` and dealt into ``folds`` parts. Part
    ``fold`` is tested; of the other groups, a ``dev_fraction`` share (at least one group) selects
    checkpoints and the rest trains, so dev and test never share a speaker with training (unless
    there is only one speaker).

    ValueError when ``folds`` < 2, ``fold`` is out of range, ``dev_fraction`` is not in (0, 1) or
    there are fewer groups than folds.
    """
    if folds < 2 or not 0 <= fold < folds or not 0 < dev_fraction < 1:
        raise ValueError(f"held-out folds: need folds >= 2, 0 <= fold < folds and 0 < dev_fraction < 1, "
                         f"got fold {fold} of {folds}, dev_fraction {dev_fraction}")
    speakers = sorted({r.speaker for r in records if r.speaker})
    by_speaker = len(speakers) >= folds and all(r.speaker for r in records)
    groups = speakers if by_speaker else sorted(r.id for r in records)
    if len(groups) < folds:
        raise ValueError(f"held-out folds: {folds} folds need at least {folds} utterances, "
                         f"the corpus has {len(groups)}")
    random.Random(seed).shuffle(groups)
    tested = set(groups[fold::folds])
    rest = [g for g in groups if g not in tested]
    dev = set(rest[: max(1, round(dev_fraction * len(rest)))])
    out: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    for r in records:
        g = r.speaker if by_speaker else r.id
        out["test" if g in tested else "dev" if g in dev else "train"].append(r)
    return out


def speaker_test_fold(records: list[Record], folds: int, fold: int, dev_fraction: float = 0.2,
                      seed: int = 0) -> dict[str, list[Record]]:
    """train/dev/test for fold ``fold`` of ``folds``, leave-speakers-out for the test only (SUPERB's
    emotion protocol): the speakers are shuffled with ``seed`` and dealt into ``folds`` groups; group
    ``fold`` is tested, and of the other speakers' utterances a seeded ``dev_fraction`` selects
    checkpoints and the rest trains (dev shares speakers with training, test shares none).

    ValueError when ``folds`` < 2, ``fold`` is out of range, ``dev_fraction`` is not in (0, 1), a
    record has no speaker, or there are fewer speakers than folds.
    """
    if folds < 2 or not 0 <= fold < folds or not 0 < dev_fraction < 1:
        raise ValueError(f"speaker test folds: need folds >= 2, 0 <= fold < folds and 0 < dev_fraction < 1, "
                         f"got fold {fold} of {folds}, dev_fraction {dev_fraction}")
    unnamed = [r.id for r in records if not r.speaker]
    if unnamed:
        raise ValueError(f"speaker test folds: {len(unnamed)} utterance(s) without a speaker, e.g. {unnamed[0]}")
    speakers = sorted({r.speaker for r in records})
    if len(speakers) < folds:
        raise ValueError(f"speaker test folds: {folds} folds need at least {folds} speakers, "
                         f"the corpus has {len(speakers)}")
    random.Random(seed).shuffle(speakers)
    tested = set(speakers[fold::folds])
    rest = sorted((r for r in records if r.speaker not in tested), key=lambda r: r.id)
    random.Random(f"{seed}:{fold}").shuffle(rest)
    dev = {r.id for r in rest[: max(1, round(dev_fraction * len(rest)))]}
    out: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    for r in records:
        out["test" if r.speaker in tested else "dev" if r.id in dev else "train"].append(r)
    return out


def group_test_fold(records: list[Record], group: Callable[[Record], str], fold: int, dev_fraction: float = 0.2,
                    seed: int = 0) -> dict[str, list[Record]]:
    """train/dev/test for fold ``fold``, one fold per group (leave one group out: SUPERB's IEMOCAP
    protocol, one fold per recording session): the distinct values of ``group(record)``, sorted, are the
    folds; group ``fold`` is tested, and of the other groups' utterances a seeded share selects
    checkpoints, ``n - int((1 - dev_fraction) * n)`` of ``n`` (the count S3PRL's ``random_split``
    gives), and the rest trains (dev shares groups with training, test shares none).

    ValueError when there are fewer than 2 groups, ``fold`` is not one of them or ``dev_fraction``
    is not in (0, 1).
    """
    groups = sorted({group(r) for r in records})
    if len(groups) < 2 or not 0 <= fold < len(groups) or not 0 < dev_fraction < 1:
        raise ValueError(f"leave-one-group-out folds: need 2 or more groups, 0 <= fold < groups and "
                         f"0 < dev_fraction < 1, got fold {fold} of {len(groups)} group(s) {groups[:5]}, "
                         f"dev_fraction {dev_fraction}")
    tested = groups[fold]
    rest = sorted((r for r in records if group(r) != tested), key=lambda r: r.id)
    random.Random(f"{seed}:{fold}").shuffle(rest)
    dev = {r.id for r in rest[int((1 - dev_fraction) * len(rest)):]}
    out: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    for r in records:
        out["test" if group(r) == tested else "dev" if r.id in dev else "train"].append(r)
    return out


def subset_minutes(records: list[Record], minutes: float, seed: int = 0) -> list[Record]:
    """A seeded random subset of ``records`` holding at most ``minutes`` of audio (at least one record),
    in the original order: how much a head needs is measured by training on nested subsets."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    chosen, total = set(), 0.0
    for i in order:
        if chosen and total + records[i].duration > 60.0 * minutes:
            break
        chosen.add(i)
        total += records[i].duration
    return [r for i, r in enumerate(records) if i in chosen]
