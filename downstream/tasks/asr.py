"""Speech recognition (SUPERB ASR): character CTC on the weighted layer sum, scored by WER and CER.

Head as in SUPERB (``bilstm``, :class:`downstream.heads.frame.BiLSTMHead`; ``task.head`` may name
another frame-level head): SpecAugment-style masking of the features (training only), Linear(D ->
proj_dim), a ``lstm_layers``-layer BiLSTM (``lstm_dim`` per direction, dropout between layers),
Linear -> characters + blank; CTC loss. SUPERB's sizes are 1024 (the defaults); the CPU recipes use
128. Greedy decoding by default; beam search (torchaudio / flashlight-text) with an optional KenLM
word n-gram model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from corpora.manifest import Record

from .base import GENERIC_CORPORA
from .ctc_text import BeamSearchDecoder, CharVocabulary, error_rates, greedy_decode, normalize_transcript
from .transcribed import CTCTask, TranscribedConfig

VOCABULARIES = ("superb", "train")
DECODERS = ("greedy", "beam")


@dataclass
class ASRConfig(TranscribedConfig):
    """ASR settings: the corpus and frame rate (:class:`TranscribedConfig`), then the head and decoding.

    ``vocabulary``: ``superb`` (``|``, A-Z, apostrophe) or ``train`` (the training transcripts' characters).
    ``select_metric``: the dev metric that picks the best checkpoint (``wer`` or ``cer``).
    ``proj_dim`` ... ``freq_mask_dims``: the ``bilstm`` head's options (:class:`downstream.heads.frame.BiLSTMOptions`).
    """

    vocabulary: str = "superb"
    head: str = "bilstm"
    """A frame-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``bilstm``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    proj_dim: int = 1024
    lstm_dim: int = 1024
    lstm_layers: int = 2
    """0: no projection and BiLSTM, a single linear CTC layer (wav2vec 2.0's fine-tuning head)."""
    dropout: float = 0.2
    specaug: bool = True
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 4
    freq_mask_dims: int = 50
    select_metric: str = "wer"
    decoder: str = "greedy"
    beam_size: int = 50
    lm: str = ""
    """KenLM model (ARPA or binary) for beam search; empty: no LM."""
    lm_weight: float = 2.0
    word_score: float = 0.0


class SpeechRecognition(CTCTask):
    name = "asr"
    config_class = ASRConfig
    primary_metric = "wer"
    higher_is_better = False
    train_defaults: ClassVar[dict] = {"total_steps": 600, "eval_every": 150, "save_every": 150}
    """SUPERB's Adam 1e-4 and batch of 32 are the generic defaults; the budget is recipes/asr/librispeech_mini.yaml's
    (SUPERB trains 200k updates; that recipe also shrinks the head to 128 and raises the rate to 1e-3 for the CPU)."""
    decoding_keys = ("decoder", "beam_size", "lm", "lm_weight", "word_score")

    def __init__(self, cfg: ASRConfig, workdir: Path):
        super().__init__(cfg, workdir)
        for key, value, allowed in (("vocabulary", cfg.vocabulary, VOCABULARIES), ("decoder", cfg.decoder, DECODERS),
                                    ("select_metric", cfg.select_metric, ("wer", "cer"))):
            if value not in allowed:
                raise ValueError(f"task.{key} {value!r} unknown for asr; choose from {allowed}")
        self.selection_metric = cfg.select_metric
        self.vocab: CharVocabulary | None = None
        self._beam: BeamSearchDecoder | None = None
        self._train_words: set[str] = set()

    def encode(self, splits: dict[str, list[Record]]) -> dict[str, list[int]]:
        if self.vocab is None:  # a checkpoint's vocabulary (load_state) wins over a rebuilt one
            self.vocab = CharVocabulary.superb() if self.cfg.vocabulary == "superb" else \
                CharVocabulary.from_texts(r.text for r in splits["train"])
        self._train_words = {w for r in splits["train"] for w in normalize_transcript(r.text).split()}
        return {r.id: self.vocab.encode(r.text, where=f"{split} utterance {r.id} ({r.path})")
                for split, records in splits.items() for r in records}

    def build_head(self, input_dim: int) -> nn.Module:
        return self.make_head(input_dim, len(self.vocab))

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[str]:
        log_probs, lengths = self.log_probs(output)
        if self.cfg.decoder == "greedy":
            return greedy_decode(log_probs, lengths, self.vocab)
        if self._beam is None:
            self._beam = BeamSearchDecoder(self.vocab, self.cfg.beam_size, self.cfg.lm or None, self._train_words,
                                           self.cfg.lm_weight, self.cfg.word_score, self.workdir)
        return self._beam(log_probs, lengths)

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        return error_rates([r.text for r in records], predictions)

    def track(self) -> str:
        """``asr_10min`` / ``asr_1h`` / ``asr_10h`` for the Libri-light limited sets, else ``asr``."""
        limited = self.cfg.train_set.removeprefix("librilight-")
        if self.cfg.corpus in GENERIC_CORPORA or limited == self.cfg.train_set:
            return "asr"
        return f"asr_{limited}"

    def state(self) -> dict:
        return {"characters": self.vocab.tokens[1:]}

    def load_state(self, state: dict) -> None:
        self.vocab = CharVocabulary(state["characters"])
