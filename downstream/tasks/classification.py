"""What every utterance-classification task shares (keyword spotting, speaker identification, emotion
recognition): a label set fixed by the training split and kept in the checkpoint, an utterance-level head
with one score per label, cross-entropy, and the best label as the prediction."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from corpora.manifest import Record

from .base import Task


class UtteranceClassification(Task):
    """A :class:`Task` whose records carry their class in ``label``; subclasses read the corpus
    (``prepare``, then :meth:`use_labels`) and score the predictions."""

    head_levels = ("utterance",)
    what = "utterance classification"
    """How errors name the task."""

    def __init__(self, cfg, workdir: Path):
        super().__init__(cfg, workdir)
        self.labels: list[str] = []
        self.index: dict[str, int] = {}

    def use_labels(self, labels: list[str], splits: dict[str, list[Record]]) -> dict[str, list[Record]]:
        """Fix the label set (a checkpoint's, when :meth:`load_state` set one, else ``labels``) and check
        that every split is non-empty and holds only those labels; return ``splits``."""
        if not self.labels:
            self.labels = list(labels)
        for split, records in splits.items():
            if not records:
                raise ValueError(f"{self.what}: split '{split}' of {self.cfg.root} is empty")
            unknown = {r.label for r in records} - set(self.labels)
            if unknown:
                raise ValueError(f"{self.what}: split '{split}' has labels {sorted(unknown)[:5]} "
                                 f"({len(unknown)} in all) not in the label set of {len(self.labels)}")
        self.index = {label: i for i, label in enumerate(self.labels)}
        return splits

    def build_head(self, input_dim: int) -> nn.Module:
        return self.make_head(input_dim, len(self.labels))

    def targets(self, records: list[Record]) -> torch.Tensor:
        """The label index of each record."""
        return torch.tensor([self.index[r.label] for r in records])

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        logits, _ = output
        return F.cross_entropy(logits, self.targets(records).to(logits.device))

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list:
        logits, _ = output
        return [self.labels[i] for i in logits.argmax(-1).tolist()]

    def state(self) -> dict:
        return {"labels": self.labels}

    def load_state(self, state: dict) -> None:
        self.labels = list(state["labels"])
        self.index = {label: i for i, label in enumerate(self.labels)}
