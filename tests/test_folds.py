"""Leave-speakers-out folds: every speaker tested exactly once, splits speaker-disjoint, and a KS run on a fold."""
from pathlib import Path

import pytest

from core.config import parse_overrides
from corpora.folds import speaker_fold
from corpora.manifest import Record
from downstream.runner import Experiment, RunSpec, resolve_config


def _records(speakers: str, split: str) -> list[Record]:
    return [Record(id=f"{split}-{s}-{n}", path="x.wav", duration=1.0, speaker=s, label="a")
            for s in speakers for n in range(2)]


def test_every_speaker_is_tested_once_and_splits_are_disjoint():
    splits = {"train": _records("abcd", "train"), "dev": _records("e", "dev"), "test": _records("f", "test")}
    splits["train"].append(Record(id="silence-0", path="n.wav", duration=1.0, label="_silence_"))
    tested = []
    for fold in range(3):
        out = speaker_fold(splits, 3, fold)
        speakers = {name: {r.speaker for r in records if r.speaker} for name, records in out.items()}
        assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
        assert not (speakers["dev"] & speakers["test"]) and len(speakers["test"]) == 2 and len(speakers["dev"]) == 2
        assert sum(len(v) for v in out.values()) == 13 and "silence-0" in {r.id for r in out["train"]}
        tested += sorted(speakers["test"])
    assert sorted(tested) == list("abcdef")  # each speaker in exactly one fold's test set
    assert speaker_fold(splits, 3, 1) == speaker_fold(splits, 3, 1)  # deterministic
    with pytest.raises(ValueError, match="at least 7 speakers"):
        speaker_fold(splits, 7, 0)
    with pytest.raises(ValueError, match="fold 3 of 3"):
        speaker_fold(splits, 3, 3)


def test_keyword_spotting_on_a_speaker_fold(sc_root: Path, tmp_path: Path):
    spec = RunSpec("ks", "fbank_global")
    overrides = ["task.corpus=speech_commands", f"task.root={sc_root}", "task.classes=all", "task.speaker_folds=5",
                 "task.fold=2", f"cache.root={tmp_path / 'cache'}", "train.total_steps=10", "train.eval_every=10",
                 "train.batch_size=8"]
    results = Experiment.create(tmp_path / "exp", "f2", spec,
                                resolve_config(spec, {}, parse_overrides(overrides))).train()
    assert results["dataset"].endswith("/speaker-folds-5")
    # one speaker (3 words x 4 takes) + the test silence clips
    assert results["splits"]["test"]["utterances"] == 3 * 4 + 4
    test_ids = [line.split("\t")[0]
                for line in (tmp_path / "exp" / "f2" / "predictions-test.tsv").read_text().splitlines()[1:]]
    assert len({i.split("/")[1].split("_nohash_")[0] for i in test_ids if "_nohash_" in i}) == 1
