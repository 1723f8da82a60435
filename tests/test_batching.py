"""Length-bucketed batches bounded by padded duration; class-balanced draws; determinism per epoch."""
from collections import Counter

import numpy as np
import pytest

from corpora.batching import DurationBatcher


def test_bounds_and_coverage():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 20.0, size=500).tolist()
    b = DurationBatcher(durations, max_seconds=60.0, max_size=16, seed=3)
    for batches in (b.epoch(0), b.sequential()):
        assert sorted(i for batch in batches for i in batch) == list(range(500))  # each utterance once
        for batch in batches:
            assert len(batch) <= 16
            assert len(batch) * max(durations[i] for i in batch) <= 60.0
    # Bucketing: inside a batch, lengths are close (sorted within buckets).
    spread = np.mean([np.ptp([durations[i] for i in batch]) for batch in b.epoch(0)])
    assert spread < 2.0
    assert b.epoch(1) == DurationBatcher(durations, 60.0, 16, seed=3).epoch(1)  # a function of (seed, epoch)
    assert b.epoch(1) != b.epoch(2)


def test_too_long_utterance_is_an_error():
    with pytest.raises(ValueError, match="utterance 1 lasts 30.0 s, more than train.batch_seconds=10"):
        DurationBatcher([1.0, 30.0], max_seconds=10, max_size=4, seed=0)


def test_weighted_draw_balances_classes():
    labels = ["a"] * 900 + ["b"] * 100
    counts = Counter(labels)
    weights = [1 / counts[x] for x in labels]
    b = DurationBatcher([1.0] * 1000, max_seconds=32, max_size=32, seed=0, weights=weights)
    drawn = Counter(labels[i] for batch in b.epoch(0) for i in batch)
    assert sum(drawn.values()) == 1000
    assert 400 < drawn["b"] < 600  # about half, although b is 10% of the data
