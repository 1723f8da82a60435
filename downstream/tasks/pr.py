"""Phoneme recognition (SUPERB PR): a linear layer per frame on the weighted layer sum, CTC over 39 phones, PER.

The head is SUPERB's (``linear``, :class:`downstream.heads.frame.FrameLinear`; ``task.head`` may
name another frame-level head): so light that it cannot learn the job on its own, which makes PR the task
where what a representation holds shows most. Targets are ARPAbet phones from the word transcripts
(:mod:`downstream.tasks.phonemes`: the CMU dictionary, espeak-ng for the words it lacks, counted in
``results.json`` under ``metric_info``). Greedy CTC decoding; PER is jiwer's word error rate over
phone sequences (edit distance / reference phones), in %, with its substitutions, deletions and
insertions beside it.

A linear probe trained on a few minutes of speech memorises: ``folds: N`` pools every split of the
corpus and re-splits it (:func:`corpora.folds.heldout_fold`, by speaker, or by utterance for a
one-reader corpus) so that each fold trains on most of it and tests on the rest.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import jiwer
import torch
from torch import nn

from corpora.folds import heldout_fold, subset_minutes
from corpora.manifest import Record

from .ctc_text import BLANK
from .phonemes import ARPABET, LexiconReport, PhonemeLexicon
from .transcribed import CTCTask, TranscribedConfig

log = logging.getLogger("downstream.pr")


@dataclass
class PRConfig(TranscribedConfig):
    """Phoneme-recognition settings: the corpus and frame rate (:class:`TranscribedConfig`), then the folds.

    ``folds``: > 0 pools train, dev and test and re-splits them into this many folds (run ``fold`` =
    0 .. folds - 1; the leaderboard averages them): each fold tests one part, selects on
    ``fold_dev_fraction`` of the other speakers and trains on the rest. 0 keeps the corpus's split.
    """

    folds: int = 0
    fold: int = 0
    fold_dev_fraction: float = 0.1
    train_minutes: float = 0.0
    """> 0: train on a seeded random subset of the training part holding at most this many minutes
    (the subsets for 10 and 20 minutes are nested), to measure how much speech the probe needs."""
    head: str = "linear"
    """A frame-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``linear``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here (e.g. ``bilstm``'s ``lstm_dim``)."""


def phone_errors(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus PER in % (edit distance over space-separated phone sequences / reference phones, jiwer's
    alignment) and its parts, each in % of the reference phones, summing to it: ``sub`` (substituted),
    ``del`` (deleted: a probe still near CTC's blank-only start emits too few phones) and ``ins``."""
    if any(not r.split() for r in references):
        raise ValueError("a reference phone sequence is empty; PER is undefined for it")
    out = jiwer.process_words(references, hypotheses)
    phones = out.hits + out.substitutions + out.deletions
    return {"per": 100.0 * out.wer, "sub": 100.0 * out.substitutions / phones, "del": 100.0 * out.deletions / phones,
            "ins": 100.0 * out.insertions / phones}


class PhonemeRecognition(CTCTask):
    name = "pr"
    config_class = PRConfig
    primary_metric = "per"
    higher_is_better = False
    train_defaults: ClassVar[dict] = {"lr": 1e-2, "batch_size": 32, "batch_seconds": 60.0, "total_steps": 400,
                                      "eval_every": 100, "save_every": 100}
    """SUPERB's Adam 1e-2 and batch (16 x 2 accumulated); the budget and batch bound of
    recipes/pr/librispeech_mini.yaml (SUPERB trains 100k updates)."""

    def __init__(self, cfg: PRConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.phones = [BLANK, *ARPABET]
        self.index = {p: i for i, p in enumerate(self.phones)}
        self.phone_text: dict[str, str] = {}
        self.report = LexiconReport()

    def read_splits(self) -> dict[str, list[Record]]:
        splits = super().read_splits()
        if self.cfg.folds:
            pooled = [r for name in ("train", "dev", "test") for r in splits[name]]
            splits = heldout_fold(pooled, self.cfg.folds, self.cfg.fold, self.cfg.fold_dev_fraction)
        if self.cfg.train_minutes > 0:
            splits["train"] = subset_minutes(splits["train"], self.cfg.train_minutes)
        return splits

    def encode(self, splits: dict[str, list[Record]]) -> dict[str, list[int]]:
        texts = {r.id: r.text for records in splits.values() for r in records}
        phones, self.report = PhonemeLexicon().convert(texts)
        info = self.report.as_dict()
        log.info("phonemes: %d of %d words (%d of %d utterances) not in the CMU dictionary, spelled by espeak-ng; "
                 "e.g. %s", info["oov_tokens"], info["words"], info["oov_utterances"], info["utterances"],
                 ", ".join(info["oov_examples"][:10]) or "none")
        self.phone_text = {uid: " ".join(p) for uid, p in phones.items()}
        return {uid: [self.index[p] for p in seq] for uid, seq in phones.items()}

    def build_head(self, input_dim: int) -> nn.Module:
        return self.make_head(input_dim, len(self.phones))

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[str]:
        log_probs, lengths = self.log_probs(output)
        best = log_probs.argmax(-1)
        return [" ".join(self.phones[i] for i in torch.unique_consecutive(best[b, : int(lengths[b])]).tolist() if i)
                for b in range(best.shape[0])]

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        return phone_errors([self.reference(r) for r in records], predictions)

    def reference(self, record: Record) -> str:
        return self.phone_text[record.id]

    def dataset(self) -> str:
        """As for ASR, ``/folds-N`` instead of the training set when the corpus is re-split, and
        ``/<M>min`` when training on a subset."""
        name = (f"{self.cfg.corpus}:{Path(self.cfg.root).name}/folds-{self.cfg.folds}" if self.cfg.folds
                else super().dataset())
        return name + (f"/{self.cfg.train_minutes:g}min" if self.cfg.train_minutes > 0 else "")

    def metric_info(self) -> dict:
        """How the phone targets were made: dictionary coverage and the words espeak-ng spelled."""
        return {"phonemes": self.report.as_dict()}

    def state(self) -> dict:
        return {"phones": self.phones}

    def load_state(self, state: dict) -> None:
        self.phones = list(state["phones"])
        self.index = {p: i for i, p in enumerate(self.phones)}
