"""Automatic speaker verification (SUPERB ASV): are two utterances spoken by one speaker? Scored by
the equal error rate and the minimum detection cost over a trial list.

Corpus: VoxCeleb1 as released (:func:`corpora.voxceleb1.prepare_voxceleb1_verification`): the trial list
``task.trials`` (``veri_test.txt`` or a cleaned variant) names the test utterances; the embedding head
trains on every other speaker (``iden_split.txt``'s set 1; its sets 2 and 3 make the dev trials that
select checkpoints, :func:`corpora.voxceleb1.dev_trials`). SUPERB's head: an utterance-level head of the
library (``xvector``: TDNN layers, statistics pooling, the x-vector; ``task.head``) whose output feeds a
cosine classifier over the training speakers, trained with the additive-margin softmax (s = 30, m = 0.4;
:mod:`downstream.heads.speaker`). Each trial's score is the cosine of its two utterances' L2-normalised
embeddings (the x-vector layer).

Metrics (lower is better): ``eer`` in % (scikit-learn's ``roc_curve``; the rate where the miss and
false-alarm rates cross, interpolated linearly between ROC points as S3PRL does) and the normalised minimum
detection cost ``min_dcf_<p>`` for each ``task.p_targets`` (C_miss = C_fa = 1; NIST SRE's and VoxSRC's
P_target 0.01 and 0.05), over the same ROC points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import brentq
from sklearn.metrics import roc_curve
from torch import nn

from corpora.manifest import Record, read_manifest
from corpora.voxceleb1 import Trial, dev_trials, prepare_voxceleb1_verification

from ..heads.speaker import SpeakerEmbeddingHead, additive_margin_loss
from .base import AUTO, Task


@dataclass
class ASVConfig:
    """Speaker-verification settings. ``corpus``: ``auto`` (the default) or ``voxceleb1`` (``root`` holds
    ``wav/<speaker>/<session>/<utterance>`` and the trial list)."""

    corpus: str = AUTO
    root: str = "data/voxceleb1"
    trials: str = "veri_test.txt"
    """The trial list: a file under ``root`` (``veri_test.txt``, ``veri_test2.txt``, ``list_test_hard2.txt``…)
    or a path."""
    crop_seconds: float = 8.0
    """Training utterances longer than this are cut to one seeded segment of this length (0: never)."""
    dev_fraction: float = 0.2
    """Without ``iden_split.txt``: the share of each training speaker's utterances held out for the dev trials."""
    head: str = "xvector"
    """An utterance-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``xvector``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    embed_dim: int = 512
    """The head's output size, what the margin softmax reads (SUPERB's: 512)."""
    margin: float = 0.4
    """The additive margin m (SUPERB's AM-softmax: 0.4)."""
    scale: float = 30.0
    """The scale s (SUPERB's AM-softmax: 30)."""
    p_targets: list[float] = field(default_factory=lambda: [0.01, 0.05])
    """Target priors of the minimum detection costs reported (``min_dcf_<p>``)."""


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The EER (a fraction) of trial ``scores`` with ``labels`` (1: target): scikit-learn's ROC, and the
    false-positive rate where ``1 - FPR`` meets the true-positive rate, both interpolated linearly."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0))


def min_dcf(labels: np.ndarray, scores: np.ndarray, p_target: float, c_miss: float = 1.0,
            c_fa: float = 1.0) -> float:
    """The normalised minimum detection cost: min over thresholds of C_miss P_miss p + C_fa P_fa (1 - p),
    divided by min(C_miss p, C_fa (1 - p)) (the cost of always accepting or always rejecting)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    cost = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


class SpeakerVerification(Task):
    name = "asv"
    config_class = ASVConfig
    primary_metric = "eer"
    higher_is_better = False
    corpora = ("voxceleb1",)
    head_levels = ("utterance",)
    train_defaults: ClassVar[dict] = {"batch_size": 32, "total_steps": 1000, "eval_every": 100, "save_every": 250}
    """SUPERB's AdamW 1e-4 is the generic Adam 1e-4 here; batches of 32 (SUPERB: 10 x 5 accumulated);
    1,000 updates instead of its 200k, for the CPU (recipes/asv/speechocean762.yaml runs 400 with a narrower
    x-vector)."""

    def __init__(self, cfg: ASVConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if not cfg.p_targets or not all(0.0 < p < 1.0 for p in cfg.p_targets):
            raise ValueError(f"task.p_targets {cfg.p_targets}: each must be in (0, 1)")
        self.speakers: list[str] = []
        self.index: dict[str, int] = {}
        self.trials: dict[str, list[Trial]] = {}

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        paths, test_trials = prepare_voxceleb1_verification(cfg.root, self.workdir / "manifests", cfg.trials,
                                                            cfg.crop_seconds, cfg.dev_fraction)
        splits = {split: read_manifest(path) for split, path in paths.items()}
        self.trials = {"dev": dev_trials(splits["dev"]), "test": test_trials}
        if not any(t.target for t in self.trials["dev"]):
            raise ValueError(f"speaker verification: the dev utterances of {cfg.root} ({len(splits['dev'])}) hold "
                             "no two of one speaker, so no dev trial can select checkpoints")
        if not self.speakers:
            self.speakers = sorted({r.speaker for r in splits["train"]})
        self.index = {s: i for i, s in enumerate(self.speakers)}
        unknown = {r.speaker for r in splits["train"]} - set(self.index)
        if unknown:
            raise ValueError(f"speaker verification: training speakers {sorted(unknown)[:5]} are not among the "
                             f"{len(self.speakers)} of the checkpoint")
        return splits

    def build_head(self, input_dim: int) -> nn.Module:
        return SpeakerEmbeddingHead(self.make_head(input_dim, self.cfg.embed_dim), self.cfg.embed_dim,
                                    len(self.speakers))

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        cosines, _ = output
        targets = torch.tensor([self.index[r.speaker] for r in records], device=cosines.device)
        return additive_margin_loss(cosines, targets, self.cfg.margin, self.cfg.scale)

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[np.ndarray]:
        """Each utterance's L2-normalised embedding."""
        embeddings, _ = output
        return list(embeddings.float().cpu().numpy())

    def trial_scores(self, predictions: list[np.ndarray], records: list[Record]) -> tuple[list[Trial], np.ndarray]:
        """The trial list whose utterances these records are (dev or test) and the cosine score of each trial."""
        embedding = {r.id: p for r, p in zip(records, predictions, strict=True)}
        for trials in self.trials.values():
            if all(t.enrol in embedding and t.test in embedding for t in trials):
                return trials, np.array([float(embedding[t.enrol] @ embedding[t.test]) for t in trials])
        raise ValueError(f"speaker verification: no trial list ({', '.join(self.trials)}) is made of these "
                         f"{len(records)} utterances")

    def score(self, predictions: list[np.ndarray], records: list[Record]) -> dict[str, float]:
        trials, scores = self.trial_scores(predictions, records)
        labels = np.array([t.target for t in trials], dtype=int)
        metrics = {"eer": 100.0 * equal_error_rate(labels, scores)}
        for p in self.cfg.p_targets:
            metrics[f"min_dcf_{p:g}"] = min_dcf(labels, scores, p)
        metrics["trials"] = float(len(trials))
        return metrics

    def write_predictions(self, path: Path, predictions: list[np.ndarray], records: list[Record]) -> None:
        """TSV, one line per trial: target (1/0), enrol, test, cosine score."""
        trials, scores = self.trial_scores(predictions, records)
        with open(path, "w", encoding="utf-8") as f:
            f.write("target\tenrol\ttest\tscore\n")
            for t, s in zip(trials, scores, strict=True):
                f.write(f"{int(t.target)}\t{t.enrol}\t{t.test}\t{s:.6f}\n")

    def metric_info(self) -> dict:
        return {"eer": "percent; scikit-learn roc_curve, linear interpolation where 1 - FPR = TPR",
                "min_dcf": "normalised, C_miss = C_fa = 1, p_target " + ", ".join(f"{p:g}" for p in self.cfg.p_targets),
                "scoring": "cosine of L2-normalised embeddings", "trials": self.cfg.trials}

    def state(self) -> dict:
        return {"speakers": self.speakers}

    def load_state(self, state: dict) -> None:
        self.speakers = list(state["speakers"])
        self.index = {s: i for i, s in enumerate(self.speakers)}
