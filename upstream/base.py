"""The upstream contract.

An upstream takes a batch of 16 kHz mono waveforms with their lengths and returns *every* hidden
state (B x T x D each, all the same shape) with the valid frame count of each utterance.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class UpstreamOutput:
    """Hidden states of one batch.

    Attributes:
        hidden_states: ``num_layers`` tensors of shape (B, T, D); frames at or past ``lengths[b]``
            are padding and hold zeros.
        lengths: (B,) int64 valid frame counts.
    """

    hidden_states: list[torch.Tensor]
    lengths: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """All layers as one (B, T, L, D) tensor, the featurizer's input."""
        return torch.stack(self.hidden_states, dim=2)


@dataclass
class FinetuneMasking:
    """Masking of an upstream's own input during fine-tuning (wav2vec 2.0 / HuBERT style).

    Attributes:
        time_start_prob: probability of a frame starting a masked span; fairseq's ``mask_prob`` is
            this times ``time_span``.
        time_span: masked span in frames.
        channel_prob: probability of a feature channel starting a masked band (fairseq's
            ``mask_channel_prob`` over ``channel_span``).
        channel_span: masked band in channels.
    """

    time_start_prob: float = 0.065
    time_span: int = 10
    channel_prob: float = 0.0
    channel_span: int = 64


class Upstream(nn.Module, ABC):
    """Base class of every upstream.

    Subclasses set ``name``, ``downsample_rate`` (input samples per output frame at 16 kHz),
    ``hidden_size`` (D) and ``num_layers`` (how many hidden states ``forward`` returns, the input
    features counted as layer 0 where that is the model's convention), and implement
    :meth:`num_frames` and :meth:`forward`.
    """

    name: str
    downsample_rate: int
    hidden_size: int
    num_layers: int

    def settings(self) -> dict:
        """The settings that change the output (beyond the weights); part of the fingerprint."""
        return {}

    @property
    def needs_fit(self) -> bool:
        """True when the upstream must see training audio (e.g. normalisation statistics) before use."""
        return False

    @property
    def has_weights(self) -> bool:
        """True when the model has parameters (learnt or random), not only fixed feature settings."""
        return any(True for _ in self.parameters())

    @abstractmethod
    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Valid output frames for inputs of ``num_samples`` samples; (B,) int64 -> (B,) int64."""

    @abstractmethod
    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        """Encode a padded batch.

        Args:
            wavs: (B, S) float32 waveforms at 16 kHz, zero-padded after ``wav_lengths``.
            wav_lengths: (B,) int64 valid sample counts.
        """

    def finetune_parameters(self) -> list[nn.Parameter]:
        """The parameters fine-tuning trains (all by default; HuBERT keeps its CNN frozen, as wav2vec 2.0 does)."""
        return list(self.parameters())

    def set_finetune_masking(self, masking: FinetuneMasking | None) -> bool:
        """Mask the model's own input in training mode (None: off). False when the model has no such masking."""
        return False

    def fingerprint(self) -> str:
        """A hash of name, settings and every parameter and buffer: what a feature cache keys on."""
        h = hashlib.sha256(json.dumps({"name": self.name, "settings": self.settings()}, sort_keys=True).encode())
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @staticmethod
    def pad_frames(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack (T_i, D) tensors into a zero-padded (B, T_max, D) tensor and (B,) lengths."""
        lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
        return nn.utils.rnn.pad_sequence(features, batch_first=True), lengths


class Pretrainable(ABC):
    """An upstream that can be pre-trained here: :mod:`upstream.pretrain` calls :meth:`pretrain_loss`.

    Everything the objective needs (prediction heads, masking, targets) belongs to the model object,
    so one checkpoint holds it and pre-training can resume from it.
    """

    def prepare_pretraining(self, work_dir: Path, train: list, valid: list, settings: dict) -> dict | None:
        """Stages that must run before the first step (e.g. k-means targets); resumable, idempotent.

        Args:
            work_dir: a folder of the experiment for this method's files.
            train, valid: the :class:`corpora.manifest.Record` lists pre-training uses.
            settings: the config's ``targets`` section.

        Returns:
            record id -> (T,) int target ids, passed to :meth:`pretrain_loss` as ``targets``, or
            None for objectives whose targets come from the audio alone (the default).
        """
        if settings:
            raise ValueError(f"upstream {type(self).__name__} takes no 'targets' settings, got {sorted(settings)}")
        return None

    @abstractmethod
    def pretrain_loss(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Self-supervised loss of a batch.

        Args:
            wavs: (B, S) float32 16 kHz waveforms, zero-padded after ``wav_lengths``.
            wav_lengths: (B,) int64 valid sample counts.

        Models whose :meth:`prepare_pretraining` returns targets take them as a third argument,
        ``targets``: a list of B (T_b,) int64 tensors.

        Returns:
            (scalar loss to minimise, extra statistics to log, e.g. {"masked_frames": 812.0}).
        """
