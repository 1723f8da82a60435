"""Emotion recognition (SUPERB ER): utterance classification of the speaker's emotion, scored by accuracy.

Corpus: EmoDB as released (:mod:`corpora.emodb`: the emotion from each file's name), or a
``manifest`` / ``hf`` corpus whose ``label`` is the emotion. Classes: SUPERB's four (``superb4``:
neutral, happiness, anger, sadness; the other utterances are left out) or EmoDB's seven (``all``).
EmoDB has no split: ``folds`` leave-speakers-out folds (:func:`corpora.folds.speaker_test_fold`: fold k
tests its speakers, dev is a seeded 20 % of the other speakers' utterances, as SUPERB's IEMOCAP folds
take 20 % of training); run ``fold`` = 0 .. folds - 1 and the leaderboard averages them. Head as
SUPERB's (``proj_mean_linear``: Linear(D -> 256), mean pooling, Linear(256 -> classes)). Cross-entropy;
metrics: accuracy and unweighted average recall (scikit-learn's ``accuracy_score``, ``balanced_accuracy_score``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sklearn.metrics import accuracy_score, balanced_accuracy_score

from corpora.emodb import EMOTIONS, SUPERB4, prepare_emodb
from corpora.folds import speaker_test_fold
from corpora.manifest import Record, read_manifest

from .base import AUTO, GENERIC_CORPORA, SPLITS
from .classification import UtteranceClassification

CLASSES = {"superb4": list(SUPERB4), "all": sorted(EMOTIONS.values())}


@dataclass
class ERConfig:
    """Emotion-recognition settings.

    ``corpus``: ``auto`` (the default: the layout ``root`` holds), ``emodb`` (EmoDB's ``wav/`` at ``root``),
    ``manifest`` or ``hf`` (``label`` = the emotion; their own train/dev/test unless ``folds`` is set).
    """

    corpus: str = AUTO
    root: str = "data/emodb"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    classes: str = "superb4"
    """``superb4`` (SUPERB's neutral, happiness, anger, sadness) or ``all`` (every label of the corpus)."""
    folds: int = 5
    """Leave-speakers-out folds (EmoDB: 5 folds of 2 speakers); 0 keeps a manifest's own split (EmoDB needs folds)."""
    fold: int = 0
    dev_fraction: float = 0.2
    """Share of the training speakers' utterances that selects checkpoints."""
    head: str = "proj_mean_linear"
    """An utterance-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``proj_mean_linear``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    proj_dim: int = 256
    """The ``proj_mean_linear`` head's projection size (SUPERB's)."""


class EmotionRecognition(UtteranceClassification):
    name = "er"
    what = "emotion recognition"
    config_class = ERConfig
    primary_metric = "accuracy"
    higher_is_better = True
    corpora = ("emodb", *GENERIC_CORPORA)
    train_defaults: ClassVar[dict] = {"batch_size": 32, "total_steps": 1000, "eval_every": 50, "save_every": 250}
    """SUPERB's Adam 1e-4 (the generic default) and effective batch of 32 (4 x 8 accumulated); 1,000 updates
    instead of its 30k, for the CPU (recipes/er/emodb.yaml)."""

    def __init__(self, cfg: ERConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if cfg.classes not in CLASSES:
            raise ValueError(f"task.classes {cfg.classes!r}: use one of {', '.join(CLASSES)}")

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        splits = self.generic_splits()
        if splits is None:
            splits = {"all": read_manifest(prepare_emodb(cfg.root, self.workdir / "manifests"))}
        if cfg.classes == "superb4":
            splits = {s: [r for r in records if r.label in SUPERB4] for s, records in splits.items()}
        if cfg.folds:
            splits = speaker_test_fold([r for records in splits.values() for r in records], cfg.folds, cfg.fold,
                                       cfg.dev_fraction)
        elif set(splits) != set(SPLITS):
            raise ValueError(f"emotion recognition: {cfg.root} has no train/dev/test split; set task.folds")
        labels = list(SUPERB4) if cfg.classes == "superb4" else sorted({r.label for r in splits["train"]})
        return self.use_labels(labels, splits)

    def track(self) -> str:
        """``er`` for SUPERB's four classes, ``er_all`` for every class."""
        return self.name if self.cfg.classes == "superb4" else f"{self.name}_all"

    def dataset(self) -> str:
        """``<corpus>:<root folder name>``, plus ``/speaker-folds-N`` when dealt into folds."""
        return super().dataset() + (f"/speaker-folds-{self.cfg.folds}" if self.cfg.folds else "")

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        truth = [r.label for r in records]
        return {"accuracy": float(accuracy_score(truth, predictions)),
                "unweighted_recall": float(balanced_accuracy_score(truth, predictions))}
