"""Datasets that stream audio from disk, and length-bucketed batches bounded by padded duration."""
from __future__ import annotations

import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio import load_audio
from .manifest import Record


class AudioDataset(Dataset):
    """Item i: (index, (S,) float32 waveform at 16 kHz), read from disk on demand."""

    def __init__(self, records: list[Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        r = self.records[i]
        return i, load_audio(r.path, start=r.start, duration=r.duration)


def collate_waveforms(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> indices (B,), zero-padded waveforms (B, S_max), lengths (B,)."""
    idx = torch.tensor([i for i, _ in items])
    wavs = [w for _, w in items]
    lengths = torch.tensor([len(w) for w in wavs])
    return idx, torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


class DurationBatcher:
    """Groups utterance indices into batches whose padded duration stays under a bound.

    Each epoch: draw the epoch's indices (a seeded permutation, or a weighted draw with
    replacement for class-balanced sampling), sort them by duration inside buckets of
    ``bucket_batches`` batches' worth, cut batches of at most ``max_size`` utterances and
    ``max_seconds`` padded seconds (size x longest), then shuffle the batch order. The batches of an
    epoch depend only on (seed, epoch), so a resumed run sees exactly the batches it would have.

    Args:
        durations: seconds per utterance.
        max_seconds: bound on batch size x longest utterance in the batch.
        max_size: bound on utterances per batch.
        weights: per-utterance sampling weights (None: every utterance once per epoch).
    """

    def __init__(self, durations: list[float], max_seconds: float, max_size: int, seed: int,
                 weights: list[float] | None = None, bucket_batches: int = 50):
        self.durations = np.asarray(durations, dtype=np.float64)
        too_long = np.flatnonzero(self.durations > max_seconds)
        if len(too_long):
            raise ValueError(f"utterance {int(too_long[0])} lasts {self.durations[too_long[0]]:.1f} s, more than "
                             f"train.batch_seconds={max_seconds}; raise the bound or drop it")
        self.max_seconds, self.max_size, self.seed = max_seconds, max_size, seed
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.bucket = max_size * bucket_batches

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches of one epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.durations)
        order = rng.choice(n, size=n, p=self.weights) if self.weights is not None else rng.permutation(n)
        batches = []
        for lo in range(0, n, self.bucket):
            chunk = order[lo:lo + self.bucket]
            chunk = chunk[np.argsort(self.durations[chunk], kind="stable")]
            batches.extend(self._cut(chunk.tolist()))
        return [batches[i] for i in rng.permutation(len(batches))]

    def sequential(self) -> list[list[int]]:
        """Every utterance once, sorted by duration (for evaluation and feature extraction)."""
        return self._cut(np.argsort(self.durations, kind="stable").tolist())

    def _cut(self, sorted_idx: list[int]) -> list[list[int]]:
        batches, current, longest = [], [], 0.0
        for i in sorted_idx:
            d = self.durations[i]
            if current and (len(current) >= self.max_size or max(longest, d) * (len(current) + 1) > self.max_seconds):
                batches.append(current)
                current, longest = [], 0.0
            current.append(i)
            longest = max(longest, d)
        if current:
            batches.append(current)
        return batches



def _ignore_stop_signals(worker_id: int) -> None:
    """In a loader's worker process: SIGTERM and SIGINT are the main process's to handle (a scheduler
    signals the whole process group); the workers end when it shuts the loader down."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def ordered_loader(dataset: Dataset, batches: list[list[int]], collate_fn, num_workers: int = 0) -> DataLoader:
    """A DataLoader yielding exactly ``batches`` in order.

    It has its own random generator, so creating it does not draw from torch's global RNG: a resumed
    run's dropout and masking see the same random stream as an uninterrupted run. Its worker processes
    ignore stop signals, so a stop reaches the training loop, which saves (:mod:`core.signals`).
    """
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                      generator=torch.Generator(), worker_init_fn=_ignore_stop_signals if num_workers else None)
