"""Mockingjay's settings: :class:`MockingjayConfig` (network, features, MAM objective) and its size presets.

Also the values some settings choose from: :data:`FEATURE_TYPES` (``input_feat_type``,
``target_feat_type``), :data:`LOSSES` (``loss``) and :data:`ACTIVATIONS` (``hidden_act``, the
activation function the Transformer's feed-forward blocks and the prediction head apply).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from corpora.audio import SAMPLE_RATE

FEATURE_TYPES = ("mel", "linear", "mfcc")
"""Features the model reads or predicts: log-mel, linear (power) spectrogram or MFCC."""
LOSSES = ("L1", "MSE")
"""Reconstruction losses of the MAM objective."""


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, ``x * Phi(x)`` written with erf as in S3PRL (and BERT)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)``, elementwise."""
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": gelu, "relu": F.relu, "swish": swish}


@dataclass
class MockingjayConfig:
    """Everything that defines a Mockingjay model: network, features and the MAM objective.

    Field names follow S3PRL's upstream config (``transformer:``, ``task:`` and ``audio:`` sections)
    so that :mod:`upstream.mockingjay.s3prl` maps them one to one.
    """

    # Network (S3PRL `transformer:`)
    hidden_size: int = 768
    num_hidden_layers: int = 3
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    share_layer: bool = False
    pre_layer_norm: bool = False
    max_sequence_length: int = 1500
    """Frames encoded at once; longer inputs are encoded in chunks (S3PRL `task.sequence_length`, 0 = no limit)."""

    # Features (S3PRL `audio:`); 16 kHz input
    target_level: float = -25.0
    """Each waveform is scaled to this RMS level in dB before feature extraction."""
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_freq: int = 201
    """Linear-spectrogram bins; the FFT size is 2 (n_freq - 1)."""
    n_mels: int = 80
    n_mfcc: int = 13
    input_feat_type: str = "mel"
    input_log: bool = True
    input_delta: int = 0
    input_cmvn: bool = True
    target_feat_type: str = "mel"
    target_log: bool = True
    target_delta: int = 0
    target_cmvn: bool = True

    # Masked acoustic modelling (S3PRL `task:`)
    loss: str = "L1"
    mask_proportion: float = 0.15
    mask_consecutive_min: int = 7
    mask_consecutive_max: int = 7
    mask_allow_overlap: bool = True
    mask_bucket_ratio: float = 1.5
    mask_zero_prob: float = 0.8
    """Per utterance: probability that its masked spans are set to zero (S3PRL: 0.8, hard-coded)."""
    mask_random_prob: float = 0.1
    """Per utterance: probability that its masked spans are replaced by other frames of the same
    utterance (S3PRL: 0.1); otherwise (1 - zero - random) they are left unchanged."""
    mask_frequency: float = 0.0
    """Frequency-band masking as in S3PRL: the band width is uniform in 0 .. int(D * mask_frequency)
    input dimensions (a fraction of D, not a count); 0 turns it off."""
    noise_proportion: float = 0.0
    """Probability per batch of adding N(0, 0.2) noise to the whole (masked) input."""

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"MockingjayConfig: {msg}")

        check(self.hidden_size > 0 and self.num_hidden_layers > 0, "hidden_size and num_hidden_layers must be > 0")
        check(
            self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}",
        )
        check(self.hidden_act in ACTIVATIONS, f"hidden_act {self.hidden_act!r} not in {sorted(ACTIVATIONS)}")
        for name in ("input_feat_type", "target_feat_type"):
            check(getattr(self, name) in FEATURE_TYPES, f"{name} {getattr(self, name)!r} not in {FEATURE_TYPES}")
        for which in ("input", "target"):
            check(
                not (getattr(self, f"{which}_feat_type") == "mfcc" and getattr(self, f"{which}_log")),
                f"{which}_log with mfcc takes the log of negative numbers (NaN): set {which}_log=False",
            )
        check(self.input_delta >= 0 and self.target_delta >= 0, "deltas must be >= 0")
        check(self.loss in LOSSES, f"loss {self.loss!r} not in {LOSSES}")
        check(self.max_sequence_length >= 0, "max_sequence_length must be >= 0")
        check(self.n_freq >= 2 and self.n_mels > 0 and self.n_mfcc > 0, "bad feature sizes")
        check(round(self.hop_ms * SAMPLE_RATE / 1000) >= 1, "hop_ms too small")
        check(0.0 <= self.mask_proportion <= 1.0, "mask_proportion must be in [0, 1]")
        check(1 <= self.mask_consecutive_min <= self.mask_consecutive_max, "need 1 <= mask_consecutive_min <= max")
        check(self.mask_bucket_ratio > 0, "mask_bucket_ratio must be > 0")
        check(
            self.mask_zero_prob >= 0 and self.mask_random_prob >= 0
            and self.mask_zero_prob + self.mask_random_prob <= 1,
            "mask_zero_prob and mask_random_prob must be >= 0 and sum to <= 1",
        )
        check(0.0 <= self.mask_frequency <= 1.0,
              "mask_frequency is a fraction of the feature dimensions, in [0, 1]")
        check(0.0 <= self.noise_proportion <= 1.0, "noise_proportion must be in [0, 1]")
        if self.mask_frequency > 0:
            same = all(
                getattr(self, f"input_{k}") == getattr(self, f"target_{k}")
                for k in ("feat_type", "log", "delta", "cmvn")
            )
            check(same, "mask_frequency needs the target features to be the input features")

    @property
    def hop_length(self) -> int:
        return round(self.hop_ms * SAMPLE_RATE / 1000)

    @property
    def win_length(self) -> int:
        return round(self.win_ms * SAMPLE_RATE / 1000)

    @property
    def n_fft(self) -> int:
        return (self.n_freq - 1) * 2

    def feature_dim(self, which: str) -> int:
        """Dimension of the ``"input"`` or ``"target"`` features."""
        kind = getattr(self, f"{which}_feat_type")
        base = {"mel": self.n_mels, "linear": self.n_freq, "mfcc": self.n_mfcc}[kind]
        return base * (getattr(self, f"{which}_delta") + 1)


PRESETS: dict[str, dict] = {
    # Pre-trains in minutes on a 2-core CPU.
    "tiny": dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4, intermediate_size=1024),
    # S3PRL's mockingjay_logMelBase_* models (and TERA's logMelBase configs).
    "base": dict(hidden_size=768, num_hidden_layers=3, num_attention_heads=12, intermediate_size=3072),
    # S3PRL's pretrain/mockingjay/config_model_large.yaml (which predicts a linear spectrogram:
    # set target_feat_type="linear" for that).
    "large": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_sequence_length=500
    ),
}
