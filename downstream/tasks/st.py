"""Speech translation (SUPERB-SG ST): a small speech Transformer on the weighted layer sum, scored by BLEU.

The head is SUPERB-SG's encoder-decoder (``s2t_transformer``, :mod:`downstream.heads.seq2seq`, 3 + 3
layers by default: its encoder is the head's ``(x, x_len) -> (memory, memory_len)``, its decoder is
called with the target prefix by the loss and the search); targets are
SentencePiece pieces (:mod:`.subwords`: ``char`` by default, or ``unigram`` / ``bpe``) trained on
the training translations; the piece model travels in the checkpoint. Cross-entropy with label
smoothing; beam search with a length penalty (:mod:`.st_decoding`; ``beam_size=1`` is greedy).
Metrics: sacrebleu's case-sensitive detokenised BLEU and chrF on the raw translations, the
signatures in ``results.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn

from corpora.covost2 import prepare_covost2
from corpora.demo import build_demo_st
from corpora.manifest import Record, read_manifest

from ..heads.seq2seq import S2TTransformer
from .base import AUTO, GENERIC_CORPORA, Task
from .st_decoding import beam_search, greedy
from .subwords import BOS, EOS, PAD, PIECE_TYPES, PieceModel

CORPORA = ("demo", "covost2", *GENERIC_CORPORA)


@dataclass
class STConfig:
    """Speech-translation settings.

    ``corpus``: ``auto`` (the default: whichever of the others ``root`` holds, recognised by its layout,
    :meth:`~downstream.tasks.base.Task.resolve_corpus`), ``covost2`` (``root`` holds ``clips/`` and
    ``covost_v2.<src>_<tgt>.{train,dev,test}.tsv``),
    ``demo`` (the toolkit's synthetic corpus in that layout, built under ``root`` if absent from
    ``parallel_text``, a Multi30k folder, or from a built-in grammar when empty; ``demo_sizes``
    sentences per split), ``manifest`` (``train/dev/test.tsv`` with ``text`` and ``translation``) or
    ``hf`` (a local Hugging Face dataset at ``root`` with ``sentence`` and ``translation`` columns, e.g. CoVoST 2).
    """

    corpus: str = AUTO
    root: str = "data/demo_st"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    parallel_text: str = ""
    demo_sizes: list[int] = field(default_factory=lambda: [1500, 200, 200])
    src_lang: str = "en"
    tgt_lang: str = "de"
    pieces: str = "char"
    vocab_size: int = 1000
    """Most pieces, specials included (fewer where the training translations do not give that many;
    ``char``: one per character)."""
    head: str = "s2t_transformer"
    """The sequence-to-sequence head (:data:`downstream.heads.HEADS`; the only one so far). Its options are
    the settings from ``conv_layers`` to ``dropout`` (:class:`downstream.heads.seq2seq.Seq2SeqOptions`)."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    conv_layers: int = 2
    conv_channels: int = 256
    conv_kernel: int = 5
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    label_smoothing: float = 0.1
    beam_size: int = 5
    length_penalty: float = 1.0
    """Hypothesis score = log-probability / (its pieces + 1 for EOS) ** length_penalty."""
    max_len: int = 200
    """Most target pieces per utterance: longer training targets are cut, and decoding stops there ..."""
    max_len_ratio: float = 2.0
    """... or at this many per encoder frame of the batch's longest utterance (plus 10), so a weak
    model's babble stops early."""


def translation_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """sacrebleu corpus BLEU (case-sensitive, detokenised, 13a) and chrF; (scores, signatures)."""
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score}, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}


class SpeechTranslation(Task):
    name = "st"
    config_class = STConfig
    primary_metric = "bleu"
    higher_is_better = True
    head_levels = ("seq2seq",)
    corpora = CORPORA
    demo_layout = "covost2"
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "total_steps": 3000, "eval_every": 500, "save_every": 500}
    """SUPERB-SG's Adam 1e-3 (without its warm-up) and batch of 32; the budget is recipes/st/multi30k.yaml's."""
    decoding_keys = ("beam_size", "length_penalty", "max_len", "max_len_ratio")

    def __init__(self, cfg: STConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if cfg.pieces not in PIECE_TYPES:
            raise ValueError(f"task.pieces {cfg.pieces!r} unknown; choose from {PIECE_TYPES}")
        self.pieces: PieceModel | None = None
        self.head: S2TTransformer | None = None
        self.targets: dict[str, list[int]] = {}

    def build_corpus(self) -> None:
        if self.cfg.corpus == "demo":
            build_demo_st(self.cfg.root, self.cfg.parallel_text or None, tuple(self.cfg.demo_sizes))

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        splits = self.generic_splits()
        if splits is None:
            self.build_corpus()
            paths = prepare_covost2(cfg.root, self.workdir / "manifests", cfg.src_lang, cfg.tgt_lang)
            splits = {s: read_manifest(p) for s, p in paths.items()}
        for split, records in splits.items():
            if not records:
                raise ValueError(f"st: split '{split}' of {cfg.root} is empty")
            empty = [r.id for r in records if not r.translation.strip()]
            if empty:
                raise ValueError(f"st: split '{split}' has utterances without a translation: {empty[:5]}")
        if self.pieces is None:  # a checkpoint's piece model (load_state) wins over a retrained one
            self.pieces = PieceModel.train([r.translation for r in splits["train"]], cfg.pieces, cfg.vocab_size)
        self.targets = {r.id: self.pieces.encode(r.translation) for r in splits["train"]}
        return splits

    def build_head(self, input_dim: int) -> nn.Module:
        self.head = self.make_head(input_dim, len(self.pieces))
        return self.head

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        memory, memory_len = output
        seqs = [self.targets[r.id][: self.cfg.max_len] for r in records]
        prev = nn.utils.rnn.pad_sequence([torch.tensor([BOS, *s]) for s in seqs], batch_first=True, padding_value=PAD)
        gold = nn.utils.rnn.pad_sequence([torch.tensor([*s, EOS]) for s in seqs], batch_first=True, padding_value=PAD)
        logits = self.head.decode(memory, memory_len, prev.to(memory.device))
        return F.cross_entropy(logits.flatten(0, 1), gold.to(memory.device).flatten(), ignore_index=PAD,
                               label_smoothing=self.cfg.label_smoothing)

    def loss_units(self, records: list[Record]) -> float:
        """Target pieces plus EOS: the cross-entropy is a mean over tokens."""
        return sum(min(len(self.targets[r.id]), self.cfg.max_len) + 1 for r in records)

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[str]:
        """Beam search; greedy when ``beam_size`` is 1 and while the runner validates (checkpoint selection)."""
        memory, memory_len = output
        max_len = min(self.cfg.max_len, int(self.cfg.max_len_ratio * int(memory_len.max())) + 10)
        if self.cfg.beam_size == 1 or self.validating:
            ids = greedy(self.head, memory, memory_len, max_len)
        else:
            ids = beam_search(self.head, memory, memory_len, self.cfg.beam_size, max_len, self.cfg.length_penalty)
        return [self.pieces.decode(i) for i in ids]

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        return translation_scores(predictions, [r.translation for r in records])[0]

    def metric_info(self) -> dict:
        return {"signatures": translation_scores(["a"], ["a"])[1]}

    def reference(self, record: Record) -> str:
        return record.translation

    def state(self) -> dict:
        return {"pieces": self.pieces.proto}

    def load_state(self, state: dict) -> None:
        self.pieces = PieceModel(state["pieces"])
