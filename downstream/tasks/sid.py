"""Speaker identification (SUPERB SID): which of the training speakers is speaking, scored by accuracy.

Corpus: VoxCeleb1's identification split (``iden_split.txt``, :mod:`corpora.voxceleb1`), or a
``manifest`` / ``hf`` corpus whose ``label`` is the speaker. Training utterances longer than
``crop_seconds`` are cut to one seeded segment of that length (SUPERB crops to 8 s); dev and test
utterances are whole. Head as SUPERB's (``proj_mean_linear``: Linear(D -> 256), mean pooling over the
valid frames, Linear(256 -> speakers)); ``stats_linear`` (mean and standard deviation) or ``xvector``
take its place with ``task.head``. Cross-entropy; metrics: accuracy and top-5 accuracy
(scikit-learn's ``accuracy_score`` and ``top_k_accuracy_score``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from corpora.manifest import Record, read_manifest
from corpora.voxceleb1 import prepare_voxceleb1_identification

from .base import AUTO, GENERIC_CORPORA
from .classification import UtteranceClassification

TOP_K = 5


@dataclass
class SIDConfig:
    """Speaker-identification settings.

    ``corpus``: ``auto`` (the default: the layout ``root`` holds), ``voxceleb1`` (``root`` holds
    ``iden_split.txt`` and ``wav/<speaker>/<session>/<utterance>``), ``manifest`` or ``hf`` (a
    ``label`` column naming the speaker).
    """

    corpus: str = AUTO
    root: str = "data/voxceleb1"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    crop_seconds: float = 8.0
    """Training utterances longer than this are cut to one segment of this length (0: never)."""
    head: str = "proj_mean_linear"
    """An utterance-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``proj_mean_linear``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    proj_dim: int = 256
    """The ``proj_mean_linear`` head's projection size (SUPERB's)."""


class SpeakerIdentification(UtteranceClassification):
    name = "sid"
    what = "speaker identification"
    config_class = SIDConfig
    primary_metric = "accuracy"
    higher_is_better = True
    corpora = ("voxceleb1", *GENERIC_CORPORA)
    train_defaults: ClassVar[dict] = {"batch_size": 32, "total_steps": 2000, "eval_every": 100, "save_every": 500}
    """SUPERB's Adam 1e-4 (the generic default) and effective batch of 32 (8 x 4 accumulated); 2,000
    updates instead of its 200k, for the CPU (recipes/sid/speechocean762.yaml)."""

    def prepare(self) -> dict[str, list[Record]]:
        splits = self.generic_splits()
        if splits is None:
            paths = prepare_voxceleb1_identification(self.cfg.root, self.workdir / "manifests", self.cfg.crop_seconds)
            splits = {s: read_manifest(p) for s, p in paths.items()}
        return self.use_labels(sorted({r.label for r in splits["train"]}), splits)

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[np.ndarray]:
        """Each utterance's score per speaker (log-probabilities), for top-1 and top-k accuracy."""
        logits, _ = output
        return list(F.log_softmax(logits.float(), dim=-1).cpu().numpy())

    def score(self, predictions: list[np.ndarray], records: list[Record]) -> dict[str, float]:
        truth = [self.index[r.label] for r in records]
        scores = np.stack(predictions)
        classes = list(range(len(self.labels)))
        top_k = (top_k_accuracy_score(truth, scores, k=TOP_K, labels=classes) if len(classes) > TOP_K
                 else 1.0)  # with at most 5 speakers every one is among the top 5
        return {"accuracy": float(accuracy_score(truth, scores.argmax(-1))), f"top{TOP_K}_accuracy": float(top_k)}

    def write_predictions(self, path: Path, predictions: list[np.ndarray], records: list[Record]) -> None:
        """TSV: id, reference speaker, the predicted speaker and the top-5 (best first)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"id\treference\thypothesis\ttop{TOP_K}\n")
            for r, scores in zip(records, predictions, strict=True):
                best = [self.labels[i] for i in np.argsort(-scores)[:TOP_K]]
                f.write(f"{r.id}\t{r.label}\t{best[0]}\t{' '.join(best)}\n")
