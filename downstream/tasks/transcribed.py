"""What the CTC tasks on transcribed speech share (ASR, phoneme recognition): corpora, frame rate, CTC loss.

Both read the same corpora (LibriSpeech and Libri-light layouts, the demo corpus in that layout,
manifests and local Hugging Face datasets), bring the upstream's frames to the head's rate
(``downsample``/``upsample``, settings of their frame-level heads: :mod:`downstream.heads.frame`),
check that every utterance has enough frames for its CTC labels and train with the CTC loss on the
log-softmax of the head's scores; they differ in their labels (characters, phones) and heads.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from corpora.demo import build_demo_asr
from corpora.librilight import SUBSETS, prepare_librilight
from corpora.librispeech import prepare_librispeech
from corpora.manifest import Record, read_manifest

from ..heads.frame import check_rates
from .base import AUTO, GENERIC_CORPORA, Task
from .ctc_text import ctc_min_frames, normalize_transcript

CORPORA = ("demo", "librispeech", *GENERIC_CORPORA)


@dataclass
class TranscribedConfig:
    """Corpus and frame-rate settings of a CTC task.

    ``corpus``: ``auto`` (the default: whichever of the others ``root`` holds, recognised by its layout,
    :meth:`~downstream.tasks.base.Task.resolve_corpus`), ``librispeech`` (``root`` holds
    ``LibriSpeech/<split>/`` and, for Libri-light training sets, ``librispeech_finetuning/``), ``demo``
    (the toolkit's synthetic corpus in that layout, built under ``root`` if absent) or ``manifest``
    (``root`` holds ``train.tsv``, ``dev.tsv``, ``test.tsv`` with a ``text`` column) or ``hf`` (a local
    Hugging Face dataset at ``root`` with a ``text`` column, e.g. LibriSpeech from the Hub: ``hf_splits``
    names its splits).
    ``train_set``: a LibriSpeech split (``train-clean-100``) or a Libri-light setting
    (``librilight-10min``, ``librilight-1h``, ``librilight-10h``). ``dev_set``, ``test_set``: LibriSpeech splits.
    """

    corpus: str = AUTO
    root: str = "data/demo_asr"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    train_set: str = "librilight-10min"
    dev_set: str = "dev-clean"
    test_set: str = "test-clean"
    demo_full_minutes: float = 0.0
    """``corpus: demo``: also build ``train-clean-100`` with this many minutes (for ``train_set: train-clean-100``)."""
    downsample: int = 1
    """Adjacent feature frames concatenated into one before the head (S3PRL's ``concat``
    downsampling): 2 brings a 10-ms upstream to 20-ms frames."""
    upsample: int = 1
    """Each feature frame repeated this many times before the head: a 40-ms upstream (BEST-RQ)
    reaches 20-ms frames, so that CTC has a frame for every label of fast speech."""


HEAD_FRAME_SAMPLES = 320
"""The frame CTC heads aim for: 20 ms at 16 kHz."""


def frame_rate_settings(frame_samples: int, concatenate: bool) -> dict[str, int]:
    """The ``downsample`` and ``upsample`` settings for an upstream whose frames are ``frame_samples``
    long: frames longer than 20 ms are repeated to about 20 ms (a 40-ms BEST-RQ: ``upsample=2``),
    shorter ones are concatenated to about 20 ms with ``concatenate`` (a 10-ms APC for ASR:
    ``downsample=2``) and kept as they are without it (PR's linear probe sees the upstream's frames)."""
    if frame_samples > HEAD_FRAME_SAMPLES:
        return {"downsample": 1, "upsample": round(frame_samples / HEAD_FRAME_SAMPLES)}
    return {"downsample": max(1, round(HEAD_FRAME_SAMPLES / frame_samples)) if concatenate else 1, "upsample": 1}


class CTCTask(Task):
    """A task whose frame-level head scores :meth:`encode`'s labels (and CTC's blank, id 0) per frame.

    ``prepare`` reads the corpus (:meth:`read_splits`, which a task may re-split), checks that no
    transcript is empty and stores each utterance's label ids in ``self.targets``.
    """

    corpora = CORPORA
    demo_layout = "librispeech"
    head_levels = ("frame",)

    def __init__(self, cfg: TranscribedConfig, workdir):
        super().__init__(cfg, workdir)
        check_rates(cfg.upsample, cfg.downsample)
        self.targets: dict[str, list[int]] = {}

    def build_corpus(self) -> None:
        if self.cfg.corpus == "demo":
            build_demo_asr(self.cfg.root, full_minutes=self.cfg.demo_full_minutes)

    def read_splits(self) -> dict[str, list[Record]]:
        """The corpus's train/dev/test records as ``train_set``/``dev_set``/``test_set`` name them."""
        cfg = self.cfg
        manifests = self.workdir / "manifests"
        splits = self.generic_splits()
        if splits is not None:
            return splits
        self.build_corpus()
        names = {"train": cfg.train_set, "dev": cfg.dev_set, "test": cfg.test_set}
        subsets = [name.removeprefix("librilight-") for name in names.values() if name.startswith("librilight-")]
        for split, name in names.items():
            if name.startswith("librilight-") and name.removeprefix("librilight-") not in SUBSETS:
                raise ValueError(f"task.{split}_set {name!r}: Libri-light settings are "
                                 f"{', '.join('librilight-' + s for s in SUBSETS)}")
        paths = prepare_librispeech(cfg.root, manifests, [n for n in names.values() if not n.startswith("librilight-")])
        if subsets:
            paths.update(prepare_librilight(cfg.root, manifests, subsets))
        return {split: read_manifest(paths[name]) for split, name in names.items()}

    def prepare(self) -> dict[str, list[Record]]:
        splits = self.read_splits()
        for split, records in splits.items():
            if not records:
                raise ValueError(f"{self.name}: split '{split}' of {self.cfg.root} is empty")
            empty = [r.id for r in records if not normalize_transcript(r.text)]
            if empty:
                raise ValueError(f"{self.name}: split '{split}' has utterances without a transcript: {empty[:5]}")
        self.targets = self.encode(splits)
        return splits

    @abstractmethod
    def encode(self, splits: dict[str, list[Record]]) -> dict[str, list[int]]:
        """Utterance id -> CTC label ids (no blank) for every record of every split."""

    def check_frames(self, split: str, records: list[Record], num_frames: list[int]) -> None:
        """CTC needs at least one output frame per label (plus one between repeats): an error otherwise."""
        k, up = self.cfg.downsample, self.cfg.upsample
        frames = [(n * up + k - 1) // k for n in num_frames]
        needs = [ctc_min_frames(self.targets[r.id]) for r in records]
        short = [(r.id, n, m) for r, n, m in zip(records, frames, needs, strict=True) if n < m]
        if short:
            detail = "; ".join(f"{i}: {n} frames for {m} labels" for i, n, m in short[:5])
            raise ValueError(f"{self.name}: {len(short)} {split} utterance(s) give fewer upstream frames "
                             f"than CTC needs ({detail}); the upstream's frame rate (after task.downsample={k}) "
                             "is too low for these transcripts (task.upsample=2 repeats each frame)")

    @staticmethod
    def log_probs(output: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's (scores (B, T', V), frame counts (B,)) -> (per-frame log-probabilities, frame counts)."""
        scores, lengths = output
        return F.log_softmax(scores, dim=-1), lengths

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        log_probs, lengths = self.log_probs(output)
        targets = [torch.tensor(self.targets[r.id]) for r in records]
        return F.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), lengths,
                          torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)

    def reference(self, record: Record) -> str:
        return normalize_transcript(record.text)

    def dataset(self) -> str:
        """``<corpus>:<root folder name>/<training set>``, e.g. ``librispeech:librispeech_mini/librilight-10min``."""
        if self.cfg.corpus in GENERIC_CORPORA:
            return super().dataset()
        return f"{super().dataset()}/{self.cfg.train_set}"
