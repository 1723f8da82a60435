"""Leave-speakers-out folds: re-split a corpus by speaker so that every speaker is tested once.

With few speakers (6 in a small digits corpus, one of them the official test speaker), one
test speaker makes a noisy number; averaging over folds, each testing other speakers, does not.
"""
from __future__ import annotations

import random

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
