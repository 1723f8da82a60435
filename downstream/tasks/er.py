"""Emotion recognition (SUPERB ER): utterance classification of the speaker's emotion, scored by accuracy.

Corpora: IEMOCAP as released (:mod:`corpora.iemocap`: SUPERB's corpus), EmoDB as released
(:mod:`corpora.emodb`: the emotion from each file's name), CSV lists (:mod:`corpora.csv_list`:
``path,label[,speaker]``), or a ``manifest`` / ``hf`` corpus whose ``label`` is the emotion. Classes:
SUPERB's four (``superb4``: neutral, happiness, anger, sadness, IEMOCAP's ``exc`` counted as happiness;
the other utterances are left out) or every label of the corpus (``all``: EmoDB's seven, IEMOCAP's eleven
with ``exc`` as excitement). Folds: IEMOCAP's are SUPERB's leave-one-session-out folds
(:func:`corpora.folds.group_test_fold`: fold k tests Session k+1, dev is a seeded 20 % of the other
sessions' utterances); the other corpora are dealt into ``folds`` leave-speakers-out folds
(:func:`corpora.folds.speaker_test_fold`: fold k tests its speakers, dev is a seeded 20 % of the other
speakers' utterances, as SUPERB takes 20 % of training) unless ``folds`` is 0 and the corpus has its own
train/dev/test; run ``fold`` = 0 .. folds - 1 and the leaderboard averages them. Head as SUPERB's
(``proj_mean_linear``: Linear(D -> 256), mean pooling, Linear(256 -> classes)). Cross-entropy; metrics:
accuracy and unweighted average recall (scikit-learn's ``accuracy_score``, ``balanced_accuracy_score``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sklearn.metrics import accuracy_score, balanced_accuracy_score

from corpora import iemocap
from corpora.csv_list import prepare_csv_list
from corpora.emodb import EMOTIONS, SUPERB4, prepare_emodb
from corpora.folds import group_test_fold, speaker_test_fold
from corpora.manifest import Record, read_manifest

from .base import AUTO, GENERIC_CORPORA, SPLITS
from .classification import UtteranceClassification

CLASSES = {"superb4": list(SUPERB4), "all": sorted(EMOTIONS.values())}


@dataclass
class ERConfig:
    """Emotion-recognition settings.

    ``corpus``: ``auto`` (the default: the layout ``root`` holds), ``iemocap`` (IEMOCAP's ``Session<n>/``
    folders at ``root``), ``emodb`` (EmoDB's ``wav/`` at ``root``), ``csv`` (``train.csv``, ``dev.csv`` and
    ``test.csv``, or ``data.csv``, at ``root``), ``manifest`` or ``hf`` (``label`` = the emotion); a corpus
    with its own train/dev/test keeps it only with ``folds: 0``.
    """

    corpus: str = AUTO
    root: str = "data/emodb"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    csv_file: str = ""
    """``corpus: csv``: the one CSV to read (relative to ``root``) instead of ``train/dev/test.csv`` or
    ``data.csv``."""
    classes: str = "superb4"
    """``superb4`` (SUPERB's neutral, happiness, anger, sadness) or ``all`` (every label of the corpus)."""
    folds: int = 5
    """Leave-speakers-out folds (EmoDB: 5 folds of 2 speakers); 0 keeps a corpus's own split (EmoDB needs folds).
    IEMOCAP: one fold per session (5)."""
    fold: int = 0
    dev_fraction: float = 0.2
    """Share of the training speakers' (IEMOCAP: sessions') utterances that selects checkpoints."""
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
    corpora = ("iemocap", "emodb", "csv", *GENERIC_CORPORA)
    train_defaults: ClassVar[dict] = {"batch_size": 32, "total_steps": 1000, "eval_every": 50, "save_every": 250}
    """SUPERB's Adam 1e-4 (the generic default) and effective batch of 32 (4 x 8 accumulated); 1,000 updates
    instead of its 30k, for the CPU (recipes/er/emodb.yaml)."""

    def __init__(self, cfg: ERConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if cfg.classes not in CLASSES:
            raise ValueError(f"task.classes {cfg.classes!r}: use one of {', '.join(CLASSES)}")

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        splits = self.generic_splits() or self._read_corpus()
        if cfg.classes == "superb4":
            splits = {s: [r for r in records if r.label in SUPERB4] for s, records in splits.items()}
            if not any(splits.values()):
                raise ValueError(f"emotion recognition: no utterance of {cfg.root} is labelled "
                                 f"{', '.join(SUPERB4)}; set task.classes=all to use its own labels")
        pooled = [r for records in splits.values() for r in records]
        if cfg.corpus == "iemocap":
            found = sorted({iemocap.session(r) for r in pooled})
            if cfg.folds != len(found):
                raise ValueError(f"emotion recognition: IEMOCAP's folds are its sessions, and {cfg.root} has "
                                 f"{len(found)} ({', '.join(found)}): set task.folds={len(found)}")
            splits = group_test_fold(pooled, iemocap.session, cfg.fold, cfg.dev_fraction)
        elif cfg.folds:
            splits = speaker_test_fold(pooled, cfg.folds, cfg.fold, cfg.dev_fraction)
        elif set(splits) != set(SPLITS):
            raise ValueError(f"emotion recognition: {cfg.root} has no train/dev/test split; set task.folds")
        labels = list(SUPERB4) if cfg.classes == "superb4" else sorted({r.label for r in pooled})
        return self.use_labels(labels, splits)

    def _read_corpus(self) -> dict[str, list[Record]]:
        """The records of an ``iemocap``, ``emodb`` or ``csv`` corpus (``all``, or its train/dev/test)."""
        cfg, out = self.cfg, self.workdir / "manifests"
        if cfg.corpus == "iemocap":
            return {"all": read_manifest(iemocap.prepare_iemocap(cfg.root, out, cfg.classes == "superb4"))}
        if cfg.corpus == "csv":
            return {s: read_manifest(p) for s, p in prepare_csv_list(cfg.root, out, cfg.csv_file).items()}
        return {"all": read_manifest(prepare_emodb(cfg.root, out))}

    def track(self) -> str:
        """``er`` for SUPERB's four classes, ``er_all`` for every class."""
        return self.name if self.cfg.classes == "superb4" else f"{self.name}_all"

    def dataset(self) -> str:
        """``<corpus>:<root folder name>``, plus ``/session-folds-N`` (IEMOCAP) or ``/speaker-folds-N`` when
        dealt into folds."""
        unit = "session" if self.cfg.corpus == "iemocap" else "speaker"
        return super().dataset() + (f"/{unit}-folds-{self.cfg.folds}" if self.cfg.folds else "")

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        truth = [r.label for r in records]
        return {"accuracy": float(accuracy_score(truth, predictions)),
                "unweighted_recall": float(balanced_accuracy_score(truth, predictions))}
