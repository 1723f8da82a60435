"""Keyword spotting (SUPERB KS): utterance classification, scored by accuracy.

Head as in SUPERB (``proj_mean_linear``, :class:`downstream.heads.utterance.ProjMeanLinear`):
Linear(D -> proj_dim), mean pooling over the valid frames, Linear(proj_dim -> classes), no
non-linearity; any utterance-level head of :mod:`downstream.heads` can take its place
(``task.head``). Cross-entropy; class-balanced sampling of training utterances.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sklearn.metrics import accuracy_score

from corpora.demo import build_demo_keywords
from corpora.folds import speaker_fold
from corpora.manifest import Record, read_manifest
from corpora.speech_commands import prepare_speech_commands, read_labels

from .base import AUTO, GENERIC_CORPORA
from .classification import UtteranceClassification

CORPORA = ("demo", "speech_commands", *GENERIC_CORPORA)


@dataclass
class KSConfig:
    """Keyword-spotting settings.

    ``corpus``: ``auto`` (the default: whichever of the others ``root`` holds, recognised by its layout,
    :meth:`~downstream.tasks.base.Task.resolve_corpus`), ``demo`` (the toolkit's synthetic keyword corpus,
    built under ``root`` if absent), ``speech_commands`` (a Speech Commands v0.01/v0.02 tree at ``root``)
    or ``manifest`` (``root`` holds ``train.tsv``, ``dev.tsv``, ``test.tsv`` with a ``label`` column) or
    ``hf`` (a local Hugging Face dataset at ``root`` with a ``label`` column, e.g. Speech Commands from the Hub).
    ``classes``: ``superb12`` or ``all`` (Speech Commands and demo corpora).
    """

    corpus: str = AUTO
    root: str = "data/demo_keywords"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    classes: str = "superb12"
    speaker_folds: int = 0
    """Leave-speakers-out: > 0 pools every split and re-splits by speaker into this many folds
    (:func:`corpora.folds.speaker_fold`); run ``fold`` = 0 .. speaker_folds - 1 and the leaderboard
    averages them. 0 keeps the corpus's own split."""
    fold: int = 0
    head: str = "proj_mean_linear"
    """An utterance-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``proj_mean_linear``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here (e.g. ``xvector``'s ``embed_dim``)."""
    proj_dim: int = 256
    """The ``proj_mean_linear`` head's projection size."""
    balanced_sampling: bool = True


class KeywordSpotting(UtteranceClassification):
    name = "ks"
    what = "keyword spotting"
    config_class = KSConfig
    primary_metric = "accuracy"
    higher_is_better = True
    corpora = CORPORA
    demo_layout = "speech_commands"
    train_defaults: ClassVar[dict] = {"total_steps": 3000, "eval_every": 100, "save_every": 500}
    """SUPERB's Adam 1e-4 and batch of 32 are the generic defaults; the budget is recipes/ks/fsdd.yaml's
    (SUPERB trains 200k updates: recipes/ks/speech_commands.yaml)."""

    def build_corpus(self) -> None:
        if self.cfg.corpus == "demo":
            build_demo_keywords(self.cfg.root)

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        splits = self.generic_splits()
        if splits is not None:
            labels = sorted({r.label for r in splits["train"]})
        else:
            root = Path(cfg.root)
            self.build_corpus()
            paths = prepare_speech_commands(root, self.workdir / "manifests", classes=cfg.classes)
            splits = {s: read_manifest(p) for s, p in paths.items()}
            labels = read_labels(self.workdir / "manifests")
        if cfg.speaker_folds:
            splits = speaker_fold(splits, cfg.speaker_folds, cfg.fold)
        return self.use_labels(labels, splits)

    def dataset(self) -> str:
        """``<corpus>:<root folder name>``, plus ``/speaker-folds-N`` when re-split by speaker."""
        folds = f"/speaker-folds-{self.cfg.speaker_folds}" if self.cfg.speaker_folds else ""
        return super().dataset() + folds

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        return {"accuracy": float(accuracy_score([r.label for r in records], predictions))}

    def sample_weights(self, records: list[Record]) -> list[float] | None:
        if not self.cfg.balanced_sampling:
            return None
        counts = Counter(r.label for r in records)
        return [1.0 / counts[r.label] for r in records]
