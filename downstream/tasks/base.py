"""What a downstream task provides to the runner."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from corpora.hf import read_hf_splits
from corpora.manifest import Record, read_manifest

SPLITS = ("train", "dev", "test")
GENERIC_CORPORA = ("manifest", "hf")
"""Corpus sources every task reads: ``manifest`` (``root`` holds ``train.tsv``, ``dev.tsv``,
``test.tsv``) and ``hf`` (``root`` is a local Hugging Face dataset; ``task.hf_splits`` names its
train, dev and test splits)."""


class Task(ABC):
    """One downstream task: its data, head, loss, decoding and metrics.

    Subclasses set ``name``, ``config_class`` (a dataclass with every task setting and its
    default), ``primary_metric`` and ``higher_is_better`` (used to pick the best dev checkpoint).

    Args:
        cfg: an instance of ``config_class``.
        workdir: where the task may write prepared manifests and vocabularies.
    """

    name: str
    config_class: type
    primary_metric: str
    higher_is_better: bool
    decoding_keys: tuple[str, ...] = ()
    """Task settings that only change decoding: ``run_downstream.py -m evaluate -o task.KEY=VALUE`` may set them."""

    def __init__(self, cfg, workdir: Path):
        self.cfg, self.workdir = cfg, Path(workdir)
        self.validating = False
        """True while the runner scores dev to pick checkpoints (a task may decode faster then)."""

    @abstractmethod
    def prepare(self) -> dict[str, list[Record]]:
        """Read (and if needed build) the corpus: split name ('train', 'dev', 'test') -> records. Idempotent."""

    def build_corpus(self) -> None:  # noqa: B027  (optional hook: only tasks with a demo corpus build one)
        """Build the task's demo corpus when ``corpus: demo`` and it is absent (idempotent); else nothing."""

    def generic_splits(self) -> dict[str, list[Record]] | None:
        """The records of a ``manifest`` or ``hf`` corpus (see :data:`GENERIC_CORPORA`); None for a task's own
        corpora."""
        cfg = self.cfg
        if cfg.corpus == "manifest":
            return {s: read_manifest(Path(cfg.root) / f"{s}.tsv") for s in SPLITS}
        if cfg.corpus == "hf":
            return read_hf_splits(cfg.root, cfg.hf_splits, self.workdir / "manifests", self.name)
        return None

    @abstractmethod
    def build_head(self, input_dim: int) -> nn.Module:
        """The head; ``head(features (B, T, D), lengths (B,))`` returns what :meth:`loss` and :meth:`predict` take."""

    @abstractmethod
    def loss(self, output, records: list[Record]) -> torch.Tensor:
        """Scalar training loss for a batch's head output and its records."""

    def loss_units(self, records: list[Record]) -> float:
        """What :meth:`loss` averages over for these records (default: utterances); weights each
        process's share of a batch in data-parallel training."""
        return len(records)

    @abstractmethod
    def predict(self, output) -> list:
        """One prediction per utterance of the batch."""

    @abstractmethod
    def score(self, predictions: list, records: list[Record]) -> dict[str, float]:
        """Metrics of a whole split, ``primary_metric`` among them."""

    @property
    def selection_metric(self) -> str:
        """The dev metric that picks the best checkpoint (the primary metric unless a task's config says otherwise)."""
        return getattr(self, "_selection_metric", self.primary_metric)

    @selection_metric.setter
    def selection_metric(self, name: str) -> None:
        self._selection_metric = name

    def check_frames(self, split: str, records: list[Record], num_frames: list[int]) -> None:  # noqa: B027  (optional hook: CTC tasks check)
        """Raise if the upstream's frame counts (one per record) cannot serve this task (e.g. too few for CTC)."""

    def track(self) -> str:
        """The leaderboard column this run belongs to: the task name unless a task has several
        benchmark settings (e.g. ``asr_10min`` for ASR trained on a Libri-light limited set)."""
        return self.name

    def dataset(self) -> str:
        """What the leaderboard groups runs by besides task and upstream: ``<corpus>:<root folder name>``."""
        return f"{self.cfg.corpus}:{Path(self.cfg.root).name}"

    def metric_info(self) -> dict:
        """How the metrics were computed (e.g. sacrebleu signatures), stored in ``results.json``."""
        return {}

    def sample_weights(self, records: list[Record]) -> list[float] | None:
        """Per-utterance training sampling weights (None: each utterance once per epoch)."""
        return None

    def state(self) -> dict:
        """What must travel with the head to decode later (label sets, vocabularies)."""
        return {}

    def load_state(self, state: dict) -> None:  # noqa: B027  (optional hook: tasks with no state restore nothing)
        """Restore :meth:`state` from a checkpoint."""

    def write_predictions(self, path: Path, predictions: list, records: list[Record]) -> None:
        """Per-utterance predictions next to the results (TSV: id, reference, hypothesis)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("id\treference\thypothesis\n")
            for r, p in zip(records, predictions, strict=True):
                f.write(f"{r.id}\t{self.reference(r)}\t{p}\n")

    def reference(self, record: Record) -> str:
        """The reference a prediction is scored against, as text."""
        return record.label or record.text
