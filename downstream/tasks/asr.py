"""Speech recognition (SUPERB ASR): character CTC on the weighted layer sum, scored by WER and CER.

Head as in SUPERB: SpecAugment-style masking of the features (training only), Linear(D ->
proj_dim), a ``lstm_layers``-layer BiLSTM (``lstm_dim`` per direction, dropout between layers),
Linear -> characters + blank; CTC loss. SUPERB's sizes are 1024 (the defaults); the CPU recipes use
128. Greedy decoding by default; beam search (torchaudio / flashlight-text) with an optional KenLM
word n-gram model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio.transforms as T
from torch import nn

from corpora.manifest import Record

from .base import GENERIC_CORPORA
from .ctc_text import BeamSearchDecoder, CharVocabulary, error_rates, greedy_decode, normalize_transcript
from .transcribed import CTCTask, TranscribedConfig, check_rates, resample_frames

VOCABULARIES = ("superb", "train")
DECODERS = ("greedy", "beam")


@dataclass
class ASRConfig(TranscribedConfig):
    """ASR settings: the corpus and frame rate (:class:`TranscribedConfig`), then the head and decoding.

    ``vocabulary``: ``superb`` (``|``, A-Z, apostrophe) or ``train`` (the training transcripts' characters).
    ``select_metric``: the dev metric that picks the best checkpoint (``wer`` or ``cer``).
    """

    vocabulary: str = "superb"
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


class SpecAugment(nn.Module):
    """Time and feature-dimension masks on (B, T, D) features, each mask drawn per utterance (training only)."""

    def __init__(self, time_masks: int, time_mask_frames: int, freq_masks: int, freq_mask_dims: int):
        super().__init__()
        self.time = nn.ModuleList(T.TimeMasking(time_mask_frames, iid_masks=True) for _ in range(time_masks))
        self.freq = nn.ModuleList(T.FrequencyMasking(freq_mask_dims, iid_masks=True) for _ in range(freq_masks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        x = x.transpose(1, 2).unsqueeze(1)  # torchaudio masks (..., freq, time); iid needs a channel axis
        for mask in (*self.time, *self.freq):
            x = mask(x)
        return x.squeeze(1).transpose(1, 2)


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` frames of each (B, T, D) sequence, leaving the padding in place."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class BiLSTM(nn.Module):
    """A stack of bidirectional LSTM layers over zero-padded (B, T, D) batches -> (B, T, 2 x hidden).

    Each direction is its own ``nn.LSTM``; the backward one reads every utterance reversed within
    its length, so padding never reaches a valid frame. The result equals running each utterance
    alone, without packed sequences, whose backward pass is about 50 times slower on CPU here.
    """

    def __init__(self, input_dim: int, hidden: int, num_layers: int, dropout: float):
        super().__init__()
        dims = [input_dim] + [2 * hidden] * (num_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.backward_lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, (fwd, bwd) in enumerate(zip(self.forward_lstms, self.backward_lstms, strict=True)):
            if i:
                x = self.dropout(x)
            x = torch.cat([fwd(x)[0], reverse_valid(bwd(reverse_valid(x, lengths))[0], lengths)], dim=-1)
        return x


class CTCHead(nn.Module):
    """(B, T, D) features, (B,) lengths -> ((B, T', V) log-probabilities, (B,) lengths), with
    T' = ceil(T * upsample / downsample) (:func:`downstream.tasks.transcribed.resample_frames`)."""

    def __init__(self, input_dim: int, vocab_size: int, cfg: ASRConfig):
        super().__init__()
        self.specaug = (SpecAugment(cfg.time_masks, cfg.time_mask_frames, cfg.freq_masks,
                                    min(cfg.freq_mask_dims, input_dim // 2))
                        if cfg.specaug else nn.Identity())
        if cfg.lstm_layers < 0:
            raise ValueError(f"task.lstm_layers must be >= 0, got {cfg.lstm_layers}")
        check_rates(cfg.upsample, cfg.downsample)
        self.downsample, self.upsample = cfg.downsample, cfg.upsample
        if cfg.lstm_layers == 0:  # wav2vec 2.0's fine-tuning head: one linear CTC layer
            self.proj, self.lstm, self.out = None, None, nn.Linear(input_dim * cfg.downsample, vocab_size)
        else:
            self.proj = nn.Linear(input_dim * cfg.downsample, cfg.proj_dim)
            self.lstm = BiLSTM(cfg.proj_dim, cfg.lstm_dim, cfg.lstm_layers, cfg.dropout)
            self.out = nn.Linear(2 * cfg.lstm_dim, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = resample_frames(self.specaug(features), lengths, self.upsample, self.downsample)
        if self.lstm is not None:
            x = self.lstm(self.proj(x), lengths)
        return F.log_softmax(self.out(x), dim=-1), lengths


class SpeechRecognition(CTCTask):
    name = "asr"
    config_class = ASRConfig
    primary_metric = "wer"
    higher_is_better = False
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
        return CTCHead(input_dim, len(self.vocab), self.cfg)

    def predict(self, output) -> list[str]:
        log_probs, lengths = output
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
