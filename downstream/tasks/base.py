"""What a downstream task provides to the runner."""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from core.config import ConfigError
from corpora.hf import read_hf_splits
from corpora.layouts import EXPECTED, Layout, describe_folder, detect_layout
from corpora.manifest import Record, read_manifest

from ..heads import build_head, head_options

log = logging.getLogger("downstream.tasks")

SPLITS = ("train", "dev", "test")
GENERIC_CORPORA = ("manifest", "hf")
"""Corpus sources every task reads: ``manifest`` (``root`` holds ``train.tsv``, ``dev.tsv``,
``test.tsv``) and ``hf`` (``root`` is a local Hugging Face dataset; ``task.hf_splits`` names its
train, dev and test splits)."""
AUTO = "auto"
"""The ``task.corpus`` default: read the corpus ``task.root`` holds, recognised by its layout
(:meth:`Task.resolve_corpus`)."""


class Task(ABC):
    """One downstream task: its data, head, loss, decoding and metrics.

    Subclasses set ``name``, ``config_class`` (a dataclass with every task setting and its
    default), ``primary_metric`` and ``higher_is_better`` (used to pick the best dev checkpoint),
    ``corpora`` and ``demo_layout`` (the corpora it reads), ``train_defaults`` and ``head_levels`` (the
    heads it can use: its config has ``head`` and ``head_options``, :mod:`downstream.heads`).

    Args:
        cfg: an instance of ``config_class``; ``corpus: auto`` is resolved (:meth:`resolve_corpus`).
        workdir: where the task may write prepared manifests and vocabularies.
    """

    name: str
    config_class: type
    primary_metric: str
    higher_is_better: bool
    decoding_keys: tuple[str, ...] = ()
    """Task settings that only change decoding: ``run_downstream.py -m evaluate -o task.KEY=VALUE`` may set them."""
    head_levels: tuple[str, ...] = ()
    """The levels of the heads this task can use (:mod:`downstream.heads`: ``frame``, ``utterance`` or
    ``seq2seq``); its config's ``head`` names one of them and ``head_options`` sets its options."""
    corpora: tuple[str, ...] = GENERIC_CORPORA
    """The ``task.corpus`` values this task reads besides ``auto``: each a layout of :mod:`corpora.layouts`
    or ``demo``."""
    demo_layout: str | None = None
    """The layout of this task's demo corpus: ``auto`` reads a demo corpus in it as ``demo``."""
    train_defaults: ClassVar[dict] = {}
    """``train.*`` defaults that are this task's protocol, over :class:`downstream.config.TrainConfig`'s
    generic ones (:func:`downstream.runner.resolve_config`; a YAML file and ``-o`` overrides still win)."""

    def __init__(self, cfg, workdir: Path):
        self.cfg, self.workdir = self.resolve_corpus(cfg), Path(workdir)
        self.validating = False
        """True while the runner scores dev to pick checkpoints (a task may decode faster then)."""
        head_options(self.cfg.head, self.cfg.head_options, self.head_settings(), self.head_levels, self.name)

    @abstractmethod
    def prepare(self) -> dict[str, list[Record]]:
        """Read (and if needed build) the corpus: split name ('train', 'dev', 'test') -> records. Idempotent."""

    def build_corpus(self) -> None:  # noqa: B027  (optional hook: only tasks with a demo corpus build one)
        """Build the task's demo corpus when ``corpus: demo`` and it is absent (idempotent); else nothing."""

    @classmethod
    def resolve_corpus(cls, cfg):
        """``cfg`` with ``corpus: auto`` replaced by the corpus its ``root`` holds (logged): a layout this
        task reads (:func:`corpora.layouts.detect_layout`), or ``demo`` for this task's demo corpus, an
        empty folder, or the default root while it does not exist (the demo corpus is built there).
        Another ``corpus`` is kept as it is (``demo`` only where ``root`` holds no other corpus).

        Raises:
            ConfigError: naming what ``root`` holds and the ``task.corpus`` values to set: ``auto`` with a
                root that holds a layout this task does not read, nothing recognisable, or that does not
                exist (other than the default); ``demo`` with a root holding another corpus; an unknown corpus.
        """
        if cfg.corpus == AUTO:
            corpus = cls._corpus_at(Path(cfg.root), Path(cls.config_class().root))
            log.info("task.root %s: reading it as task.corpus=%s (task.corpus=auto)", cfg.root, corpus)
            return dataclasses.replace(cfg, corpus=corpus)
        if cfg.corpus not in cls.corpora:
            raise ConfigError(f"task.corpus {cfg.corpus!r} unknown for {cls.name}; choose from "
                              f"{', '.join((AUTO, *cls.corpora))}")
        layout = detect_layout(cfg.root) if cfg.corpus == "demo" else None
        if layout is not None and not layout.demo:
            advice = (f"read it with -o task.corpus={layout.corpus} (or leave task.corpus at {AUTO})"
                      if layout.corpus in cls.corpora else cls._choices())
            raise ConfigError(f"task.corpus=demo builds the demo corpus into task.root, but {cfg.root} holds "
                              f"{cls._found(layout)}; {advice}")
        return cfg

    @classmethod
    def _corpus_at(cls, root: Path, default_root: Path) -> str:
        """The corpus that ``task.corpus: auto`` reads at ``root`` (see :meth:`resolve_corpus`)."""
        layout = detect_layout(root)
        if layout is not None and layout.corpus in cls.corpora and not layout.demo:
            return layout.corpus
        if layout is not None and layout.demo and layout.corpus == cls.demo_layout:
            return "demo"
        if layout is not None:
            raise ConfigError(f"task.root {root} holds {cls._found(layout)}; {cls._choices()}")
        empty = root.is_dir() and not any(root.iterdir())
        if "demo" in cls.corpora and (empty or (not root.exists() and root.resolve() == default_root.resolve())):
            return "demo"
        absent = "demo" in cls.corpora and not root.exists()
        build = " (task.corpus=demo builds the demo corpus there)" if absent else ""
        raise ConfigError(f"task.root {root} {describe_folder(root)}{build}; {cls._choices()}")

    @classmethod
    def _found(cls, layout: Layout) -> str:
        """``layout``'s description, and which tasks read it when this one does not."""
        if layout.demo:
            return f"{layout.describe()}, not the demo corpus of task {cls.name}"
        if layout.corpus in cls.corpora:
            return layout.describe()
        readers = sorted(t.name for t in _task_classes() if layout.corpus in t.corpora)
        read_by = (f"read by task {', '.join(readers)} with task.corpus={layout.corpus}" if readers
                   else "which no task of this toolkit reads yet")
        return f"{layout.describe()}, {read_by}"

    @classmethod
    def _choices(cls) -> str:
        """What this task reads, for an error: each ``task.corpus`` value and the layout it needs."""
        corpora = "; ".join(f"{c} ({EXPECTED[c]})" for c in cls.corpora)
        return (f"task {cls.name} reads task.corpus={' | '.join(cls.corpora)}: {corpora}. Point task.root at "
                f"such a folder (task.corpus=auto recognises it) or set -o task.corpus=…")

    def generic_splits(self) -> dict[str, list[Record]] | None:
        """The records of a ``manifest`` or ``hf`` corpus (see :data:`GENERIC_CORPORA`); None for a task's own
        corpora."""
        cfg = self.cfg
        if cfg.corpus == "manifest":
            return {s: read_manifest(Path(cfg.root) / f"{s}.tsv") for s in SPLITS}
        if cfg.corpus == "hf":
            return read_hf_splits(cfg.root, cfg.hf_splits, self.workdir / "manifests", self.name)
        return None

    def head_settings(self) -> dict:
        """The task's settings (its config but ``head`` and ``head_options``): a head option of the same
        name takes its value (:mod:`downstream.heads`)."""
        return {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in ("head", "head_options")}

    def make_head(self, input_dim: int, output_dim: int) -> nn.Module:
        """The head ``task.head`` names (:data:`downstream.heads.HEADS`, of a level in ``head_levels``),
        for ``input_dim`` features and ``output_dim`` scores, with ``task.head_options`` and the task's settings."""
        return build_head(self.cfg.head, input_dim, output_dim, self.cfg.head_options, self.head_settings(),
                          self.head_levels, self.name)

    @abstractmethod
    def build_head(self, input_dim: int) -> nn.Module:
        """The head (:meth:`make_head` with the task's output size); ``head(x (B, T, D), x_len (B,))``
        returns ``(y, y_len)`` (:mod:`downstream.heads`), what :meth:`loss` and :meth:`predict` take."""

    @abstractmethod
    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        """Scalar training loss for a batch's head output ``(y, y_len)`` and its records."""

    def loss_units(self, records: list[Record]) -> float:
        """What :meth:`loss` averages over for these records (default: utterances); weights each
        process's share of a batch in data-parallel training."""
        return len(records)

    @abstractmethod
    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list:
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


def _task_classes() -> list[type[Task]]:
    """Every task class defined so far (subclasses of :class:`Task` with a ``name``)."""
    found, todo = [], list(Task.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "name" in vars(cls):
            found.append(cls)
    return found
