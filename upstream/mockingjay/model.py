"""Mockingjay: a BERT-style Transformer pre-trained by masked acoustic modelling (MAM).

Numerically compatible with S3PRL's Mockingjay (v0.4.18: ``s3prl/upstream/mockingjay/{model,builder,
expert}.py``, ``s3prl/upstream/baseline/preprocessor.py``, ``s3prl/pretrain/mockingjay/task.py``):
same features, same network, same parameter names (``transformer.*`` here is S3PRL's
``Transformer`` state dict, ``spec_head.*`` its ``SpecHead``), same hidden states on valid frames.
:mod:`upstream.interop.s3prl_mockingjay` converts checkpoints both ways.

Conventions, as in S3PRL's upstream expert on one utterance:

* Features (``OnlinePreprocessor``): the waveform is scaled to ``target_level`` dB RMS; STFT with a
  periodic Hann window of ``win_ms`` (400 samples), hop ``hop_ms`` (160), ``n_fft = 2 (n_freq - 1)``,
  ``center=True`` with reflection padding, so ``1 + S // 160`` frames; power spectrum; 80 HTK mel
  bands (torchaudio ``MelScale``, no filter normalisation); ``log(x + 1e-10)``; optional deltas;
  per-utterance mean and (unbiased) standard deviation normalisation over time (``+ 1e-10``).
* Network: ``Linear(input_dim, H)`` on the frames (no stacking: S3PRL's Mockingjay does not
  downsample) + sinusoidal position encoding, TF-style LayerNorm (epsilon inside the square root),
  dropout; post-LN BERT layers (optionally pre-LN) with exact erf GELU; padded keys get -10000
  added to the attention scores.
* Hidden states: the input representation (layer 0) and the output of every layer:
  ``num_hidden_layers + 1`` tensors. Utterances longer than ``max_sequence_length`` frames are cut
  into ``ceil(T / max_sequence_length)`` equal chunks (``torch.chunk``), each encoded on its own with
  positions restarting at 0, as S3PRL's builder does.

Differences from S3PRL, all on purpose: features and chunking are computed per utterance, so a
batch gives the same hidden states as each utterance alone (S3PRL computes the STFT, CMVN lengths
and chunking on the padded batch, so its outputs for the shorter utterances of a batch depend on the
longest one); padded frames are zero; masked spans never cover padding.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from corpora.audio import SAMPLE_RATE

from .base import Pretrainable, Upstream, UpstreamOutput
from .masking import band_mask, max_span_start, span_mask

FEATURE_TYPES = ("mel", "linear", "mfcc")
LOSSES = ("L1", "MSE")


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, ``x * Phi(x)`` written with erf as in S3PRL (and BERT)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": gelu, "relu": F.relu, "swish": swish}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class MockingjayConfig:
    """Everything that defines a Mockingjay model: network, features and the MAM objective.

    Field names follow S3PRL's upstream config (``transformer:``, ``task:`` and ``audio:`` sections)
    so that :mod:`upstream.interop.s3prl_mockingjay` maps them one to one.
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
            self.mask_zero_prob >= 0 and self.mask_random_prob >= 0 and self.mask_zero_prob + self.mask_random_prob <= 1,
            "mask_zero_prob and mask_random_prob must be >= 0 and sum to <= 1",
        )
        check(0.0 <= self.mask_frequency <= 1.0, "mask_frequency is a fraction of the feature dimensions, in [0, 1]")
        check(0.0 <= self.noise_proportion <= 1.0, "noise_proportion must be in [0, 1]")
        if self.mask_frequency > 0:
            same = all(
                getattr(self, f"input_{k}") == getattr(self, f"target_{k}") for k in ("feat_type", "log", "delta", "cmvn")
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


def make_config(preset: str = "base", **overrides) -> MockingjayConfig:
    """A :class:`MockingjayConfig` from a size preset plus field overrides (unknown fields are errors)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown Mockingjay preset {preset!r}; choose from {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(MockingjayConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown Mockingjay setting(s): {', '.join(unknown)}")
    return MockingjayConfig(**{**PRESETS[preset], **overrides})


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
class MockingjayFeatures(nn.Module):
    """S3PRL's ``OnlinePreprocessor`` (and the builder's dB normalisation) for one utterance at a time.

    Holds no parameters; the window and filter banks are non-persistent buffers (they follow
    ``.to(device)`` but are not part of the state dict).
    """

    MFCC_MELS = 128  # torchaudio's MFCC default, which S3PRL does not override
    LOG_EPS = 1e-10

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        fb = AF.melscale_fbanks(c.n_freq, 0.0, SAMPLE_RATE / 2, c.n_mels, SAMPLE_RATE, None, "htk")
        self.register_buffer("mel_fb", fb, persistent=False)
        if "mfcc" in (c.input_feat_type, c.target_feat_type):
            with warnings.catch_warnings():  # 128 bands over 201 bins leave some empty: S3PRL's MFCC, on purpose
                warnings.simplefilter("ignore", UserWarning)
                mfcc_fb = AF.melscale_fbanks(
                    c.n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, self.MFCC_MELS, SAMPLE_RATE, None, "htk"
                )
            self.register_buffer("mfcc_fb", mfcc_fb, persistent=False)
            self.register_buffer("dct", AF.create_dct(c.n_mfcc, self.MFCC_MELS, "ortho"), persistent=False)

    def min_samples(self) -> int:
        """Shortest input: reflection padding of n_fft // 2 needs more samples than that."""
        return self.config.n_fft // 2 + 1

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of a centred STFT: ``1 + S // hop``."""
        return 1 + num_samples // self.config.hop_length

    def normalize_level(self, wav: torch.Tensor) -> torch.Tensor:
        """Scale (S,) to ``target_level`` dB RMS (S3PRL's ``_normalize_wav_decibel``)."""
        rms = wav.pow(2).mean().pow(0.5)
        return wav * ((10 ** (self.config.target_level / 20)) / (rms + 1e-10))

    def _select(self, base: dict[str, torch.Tensor], which: str) -> torch.Tensor:
        c = self.config
        feat = base[getattr(c, f"{which}_feat_type")]  # (D, T)
        if getattr(c, f"{which}_log"):
            feat = (feat + self.LOG_EPS).log()
        feats = [feat]
        for _ in range(getattr(c, f"{which}_delta")):
            feats.append(AF.compute_deltas(feats[-1]))
        feat = torch.cat(feats, dim=0)
        if getattr(c, f"{which}_cmvn"):
            feat = (feat - feat.mean(dim=-1, keepdim=True)) / (feat.std(dim=-1, keepdim=True) + self.LOG_EPS)
        return feat.T.contiguous()  # (T, D)

    def forward(self, wav: torch.Tensor, with_target: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One (S,) waveform -> (T, D_in) input features and, if asked, (T, D_target) target features.

        T = 1 + S // hop. Requires S > n_fft // 2.
        """
        c = self.config
        wav = self.normalize_level(wav.float())
        spec = torch.stft(
            wav,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        linear = spec.abs().pow(2)  # (n_freq, T) power spectrum
        wanted = {c.input_feat_type} | ({c.target_feat_type} if with_target else set())
        base: dict[str, torch.Tensor] = {"linear": linear}
        if "mel" in wanted:
            base["mel"] = torch.matmul(linear.T, self.mel_fb).T
        if "mfcc" in wanted:
            mel = torch.matmul(linear.T, self.mfcc_fb).T
            base["mfcc"] = torch.matmul((mel + 1e-6).log().T, self.dct).T
        inp = self._select(base, "input")
        tgt = self._select(base, "target") if with_target else None
        return inp, tgt


def sinusoid_position_encoding(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim) float32 table: ``sin(p / 10000^(2i/dim))`` at even ``2i``, ``cos`` at odd ``2i+1``.

    Computed in float64 and rounded once, like S3PRL's numpy table.
    """
    return _sinusoid_table(length, dim).to(device)


@lru_cache(maxsize=16)
def _sinusoid_table(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    idx = torch.arange(dim)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (2 * (idx // 2)).double() / dim)
    table = torch.where(idx % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


# --------------------------------------------------------------------------------------------------
# Network (parameter names as S3PRL's TransformerModel / TransformerSpecPredictionHead)
# --------------------------------------------------------------------------------------------------
class TFLayerNorm(nn.Module):
    """Layer norm over the last dimension with the epsilon inside the square root (S3PRL, BERT-TF).

    ``weight * (x - mean) / sqrt(var + eps) + bias``, biased variance. Shape preserved.
    """

    def __init__(self, dim: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias


class InputRepresentations(nn.Module):
    """Frames to the model dimension: ``dropout(LayerNorm(Linear(x) + pos_enc))``.

    (B, T, input_dim) features and (T, H) position table -> (B, T, H).
    """

    def __init__(self, config: MockingjayConfig, input_dim: int):
        super().__init__()
        self.spec_transform = nn.Linear(input_dim, config.hidden_size)
        self.LayerNorm = TFLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, spec: torch.Tensor, pos_enc: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(self.spec_transform(spec) + pos_enc))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention: (B, T, H) -> (B, T, H) context (before projection)."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob  # on the attention probabilities

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).permute(0, 2, 1, 3)  # (B, heads, T, d)

    def forward(self, x: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        """``score_bias``: (B, 1, 1, T) added to the scores (0 for valid keys, -10000 for padding)."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        # softmax(q k^T / sqrt(d) + bias) v, fused (no (B, heads, T, T) score tensor kept in memory)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=score_bias.to(q.dtype),
                                             dropout_p=self.dropout_p if self.training else 0.0)
        ctx = ctx.permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], -1)


class ResidualOutput(nn.Module):
    """``Linear -> dropout -> + residual`` then LayerNorm (post-LN only). (B, T, in) + (B, T, H) -> (B, T, H).

    S3PRL's ``TransformerSelfOutput`` / ``TransformerOutput``; in pre-LN mode its ``LayerNorm`` is the
    one applied *before* the sub-block (the parent holds an alias to it).
    """

    def __init__(self, config: MockingjayConfig, in_dim: int):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.dense = nn.Linear(in_dim, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = TFLayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.dense(x)) + residual
        return x if self.pre_layer_norm else self.LayerNorm(x)


class AttentionBlock(nn.Module):
    """Self-attention sub-block with residual: (B, T, H) -> (B, T, H)."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.self = SelfAttention(config)
        self.output = ResidualOutput(config, config.hidden_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # alias, as in S3PRL (same tensor under two keys)

    def forward(self, x: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        h = self.LayerNorm(x) if self.pre_layer_norm else x
        return self.output(self.self(h, score_bias), x)


class Intermediate(nn.Module):
    """First feed-forward projection and activation: (B, T, H) -> (B, T, intermediate_size)."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class TransformerLayer(nn.Module):
    """One BERT layer (attention block, then feed-forward block): (B, T, H) -> (B, T, H)."""

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.attention = AttentionBlock(config)
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, config.intermediate_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # alias, as in S3PRL

    def forward(self, x: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, score_bias)
        h = self.LayerNorm(a) if self.pre_layer_norm else a
        return self.output(self.intermediate(h), a)


class TransformerEncoder(nn.Module):
    """The layer stack; returns every hidden state: ``num_hidden_layers + 1`` tensors (B, T, H).

    State 0 is the input representation, state i the output of layer i. Pre-LN models apply
    ``LayerNorm[i]`` to each state they return (S3PRL's convention).
    """

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        if config.share_layer:
            shared = TransformerLayer(config)
            self.layer = nn.ModuleList([shared] * config.num_hidden_layers)
        else:
            self.layer = nn.ModuleList([TransformerLayer(config) for _ in range(config.num_hidden_layers)])
        if self.pre_layer_norm:
            self.LayerNorm = nn.ModuleList(
                [TFLayerNorm(config.hidden_size, config.layer_norm_eps) for _ in range(config.num_hidden_layers + 1)]
            )

    def forward(self, x: torch.Tensor, score_bias: torch.Tensor) -> list[torch.Tensor]:
        states = []
        for i, layer in enumerate(self.layer):
            states.append(self.LayerNorm[i](x) if self.pre_layer_norm else x)
            x = layer(x, score_bias)
        states.append(self.LayerNorm[-1](x) if self.pre_layer_norm else x)
        return states


class TransformerModel(nn.Module):
    """Input representations + encoder; S3PRL's ``TransformerModel`` (its state dict keys).

    Args:
        config: model settings.
        input_dim: feature dimension per frame.
    """

    def __init__(self, config: MockingjayConfig, input_dim: int):
        super().__init__()
        self.input_representations = InputRepresentations(config, input_dim)
        self.encoder = TransformerEncoder(config)

    def forward(self, spec: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, input_dim) features and (B, T) bool valid-frame mask -> ``L + 1`` states (B, T, H)."""
        pos = sinusoid_position_encoding(spec.shape[1], self.input_representations.spec_transform.out_features, spec.device)
        score_bias = ((1.0 - valid.to(spec.dtype)) * -10000.0)[:, None, None, :]
        return self.encoder(self.input_representations(spec, pos), score_bias)


class SpecPredictionHead(nn.Module):
    """Reconstruction head: ``Linear(H, H) -> act -> LayerNorm -> Linear(H, output_dim)``.

    (B, T, H) -> (B, T, output_dim). S3PRL's ``TransformerSpecPredictionHead`` (its key names).
    """

    def __init__(self, config: MockingjayConfig, output_dim: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = TFLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.output = nn.Linear(config.hidden_size, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.LayerNorm(self.act(self.dense(x))))


def chunk_bounds(length: int, max_len: int) -> list[tuple[int, int]]:
    """Where S3PRL's builder cuts a ``length``-frame input: ``torch.chunk`` into ceil(length / max_len) parts."""
    if max_len <= 0 or length <= max_len:
        return [(0, length)]
    size = math.ceil(length / math.ceil(length / max_len))
    return [(s, min(s + size, length)) for s in range(0, length, size)]


# --------------------------------------------------------------------------------------------------
# The upstream
# --------------------------------------------------------------------------------------------------
def _similar_length_groups(pieces: list[tuple[int, int, int]], min_fill: float = 0.75) -> list[list[tuple[int, int, int]]]:
    """Group (utterance, start, end) chunks so that each group's shortest is >= ``min_fill`` of its
    longest: chunks are encoded group by group, with little padding (each chunk is encoded alone
    either way, so the outputs do not depend on the grouping)."""
    ordered = sorted(pieces, key=lambda p: p[2] - p[1], reverse=True)
    groups: list[list[tuple[int, int, int]]] = []
    for piece in ordered:
        if groups and (piece[2] - piece[1]) >= min_fill * (groups[-1][0][2] - groups[-1][0][1]):
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups


class MockingjayUpstream(Upstream, Pretrainable):
    """Mockingjay behind the upstream contract, with its MAM pre-training objective.

    Submodules: ``features`` (no parameters), ``transformer`` (S3PRL ``Transformer`` keys) and
    ``spec_head`` (S3PRL ``SpecHead`` keys).
    """

    name = "mockingjay"

    def __init__(self, config: MockingjayConfig | None = None):
        super().__init__()
        self.config = config = config or MockingjayConfig()
        self.input_dim = config.feature_dim("input")
        self.target_dim = config.feature_dim("target")
        self.features = MockingjayFeatures(config)
        self.transformer = TransformerModel(config, self.input_dim)
        self.spec_head = SpecPredictionHead(config, self.target_dim)
        self.downsample_rate = config.hop_length
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_hidden_layers + 1
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """S3PRL's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, TFLayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def settings(self) -> dict:
        return dataclasses.asdict(self.config)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return self.features.num_frames(num_samples)

    # -- features and encoder ---------------------------------------------------------------------
    def extract_features(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, with_target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-utterance features of a padded batch.

        Returns:
            (B, T, D_in) inputs, (B, T, D_target) targets (or None) zero-padded, (B,) int64 frame counts.
        """
        shortest = int(wav_lengths.min())
        if shortest < self.features.min_samples():
            raise ValueError(
                f"an utterance has {shortest} samples; Mockingjay needs at least {self.features.min_samples()}"
            )
        inputs, targets = [], []
        with torch.no_grad():
            for wav, n in zip(wavs, wav_lengths.tolist()):
                inp, tgt = self.features(wav[:n], with_target)
                inputs.append(inp)
                targets.append(tgt)
        x, lengths = self.pad_frames(inputs)
        y = self.pad_frames(targets)[0] if with_target else None
        return x, y, lengths.to(wavs.device)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """All hidden states of (B, T, D_in) features with (B,) valid lengths: ``num_layers`` (B, T, H).

        Utterances longer than ``max_sequence_length`` are encoded chunk by chunk (S3PRL's builder).
        Padded frames are set to zero.
        """
        batch, max_t, _ = feats.shape
        frames = torch.arange(max_t, device=feats.device)
        valid = frames[None, :] < lengths[:, None]
        bounds = [chunk_bounds(n, self.config.max_sequence_length) for n in lengths.tolist()]
        if all(len(b) == 1 for b in bounds):
            states = self.transformer(feats, valid)
        else:
            states = [feats.new_zeros(batch, max_t, self.hidden_size) for _ in range(self.num_layers)]
            for group in _similar_length_groups([(i, s, e) for i, bs in enumerate(bounds) for s, e in bs]):
                chunk_t = max(e - s for _, s, e in group)
                chunk = feats.new_zeros(len(group), chunk_t, feats.shape[2])
                for j, (i, s, e) in enumerate(group):
                    chunk[j, : e - s] = feats[i, s:e]
                chunk_len = torch.tensor([e - s for _, s, e in group], device=feats.device)
                chunk_valid = torch.arange(chunk_t, device=feats.device)[None, :] < chunk_len[:, None]
                for out, h in zip(states, self.transformer(chunk, chunk_valid)):
                    for j, (i, s, e) in enumerate(group):
                        out[i, s:e] = h[j, : e - s]
        keep = valid[:, :, None].to(states[0].dtype)
        return [h * keep for h in states]

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        feats, _, lengths = self.extract_features(wavs, wav_lengths)
        return UpstreamOutput(self.encode(feats, lengths), lengths)

    # -- masked acoustic modelling ----------------------------------------------------------------
    def mam_inputs(
        self, feats: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Corrupt features for MAM as S3PRL's ``generate_masked_acoustic_model_data`` does.

        Per utterance: spans from :func:`upstream.masking.span_mask`; one draw decides for all its
        spans: zeroed (``mask_zero_prob``), replaced by as many randomly placed spans of the same
        utterance (``mask_random_prob``) or left as they are. Then an optional frequency band is
        zeroed on every frame and, with probability ``noise_proportion`` per batch, N(0, 0.2) noise
        added to the valid frames. Random numbers come from ``generator`` (CPU).

        Args:
            feats: (B, T, D_in) features, zero-padded after ``lengths``.
            lengths: (B,) valid frames.

        Returns:
            (B, T, D_in) corrupted inputs, (B, T, D_target) bool loss positions (time-masked frames,
            and the masked band on valid frames), (B, T) bool time mask.
        """
        c = self.config
        lengths_cpu = lengths.detach().cpu()
        batch, max_t, dim = feats.shape
        spans = span_mask(
            lengths_cpu,
            c.mask_proportion,
            c.mask_consecutive_min,
            span_max=c.mask_consecutive_max,
            allow_overlap=c.mask_allow_overlap,
            bucket_ratio=c.mask_bucket_ratio,
            max_len=max_t,
            generator=generator,
        )
        time_mask = spans.mask.to(feats.device)
        masked = feats.clone()
        for b in range(batch):
            if spans.starts[b].numel() == 0:
                continue
            n, span = int(lengths_cpu[b]), int(spans.span_lengths[b])
            dice = float(torch.rand((), generator=generator))
            if dice < c.mask_zero_prob:
                masked[b, time_mask[b]] = 0
            elif dice < c.mask_zero_prob + c.mask_random_prob:
                offsets = torch.arange(span)
                dst = (spans.starts[b][:, None] + offsets).reshape(-1)
                src_starts = torch.randperm(max_span_start(n, span) + 1, generator=generator)[: len(spans.starts[b])]
                src = (src_starts[:, None] + offsets).reshape(-1)
                keep = dst < n
                dst, src = dst[keep], src[keep].clamp(max=n - 1)
                masked[b, dst.to(feats.device)] = feats[b, src.to(feats.device)]
        label = time_mask[:, :, None].expand(batch, max_t, self.target_dim).clone()
        if c.mask_frequency > 0:
            band = band_mask(batch, dim, int(dim * c.mask_frequency), generator=generator).to(feats.device)
            masked = masked.masked_fill(band[:, None, :], 0.0)
            frames_valid = torch.arange(max_t, device=feats.device)[None, :] < lengths[:, None]
            label |= frames_valid[:, :, None] & band[:, None, :]
        if c.noise_proportion > 0 and float(torch.rand((), generator=generator)) < c.noise_proportion:
            noise = torch.randn(masked.shape, generator=generator).to(feats.device) * 0.2
            frames_valid = torch.arange(max_t, device=feats.device)[None, :] < lengths[:, None]
            masked = masked + noise * frames_valid[:, :, None]
        return masked, label, time_mask

    def mam_loss(
        self, masked: torch.Tensor, target: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Reconstruction loss (mean L1 or MSE) of ``target`` on the ``label`` positions only.

        (B, T, D_in) corrupted input, (B, T, D_target) target and bool positions, (B,) lengths.
        Zero (still attached to the graph) when nothing is masked.
        """
        pred = self.spec_head(self.encode(masked, lengths)[-1])
        if not bool(label.any()):
            return pred.sum() * 0.0
        diff = pred.masked_select(label) - target.masked_select(label)
        return diff.abs().mean() if self.config.loss == "L1" else diff.pow(2).mean()

    def pretrain_loss(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MAM loss of a batch: mask, encode, predict, L1 against the clean (normalised) target features."""
        feats, target, lengths = self.extract_features(wavs, wav_lengths, with_target=True)
        masked, label, time_mask = self.mam_inputs(feats, lengths, generator)
        loss = self.mam_loss(masked, target, label, lengths)
        return loss, {"masked_frames": float(time_mask.sum()), "masked_fraction": float(time_mask.sum() / lengths.sum())}


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------
def build_mockingjay(preset: str = "base", **settings) -> MockingjayUpstream:
    """A randomly initialised Mockingjay: ``preset`` (``tiny``, ``base``, ``large``) plus field overrides.

    ``build_mockingjay(**model.settings())`` rebuilds the same architecture (then ``load_state_dict``).
    An unknown setting is a ValueError naming it.
    """
    return MockingjayUpstream(make_config(preset, **settings))


def mockingjay_tiny(**overrides) -> MockingjayUpstream:
    """3 layers x 256, 4 heads, FFN 1024: pre-trains in minutes on a CPU."""
    return build_mockingjay("tiny", **overrides)


def mockingjay_base(**overrides) -> MockingjayUpstream:
    """3 layers x 768, 12 heads, FFN 3072 (S3PRL's logMelBase Mockingjay)."""
    return build_mockingjay("base", **overrides)


def mockingjay_large(**overrides) -> MockingjayUpstream:
    """12 layers x 768, 12 heads, FFN 3072, 500-frame chunks (S3PRL's large config)."""
    return build_mockingjay("large", **overrides)


__all__ = [
    "MockingjayConfig",
    "MockingjayUpstream",
    "MockingjayFeatures",
    "TransformerModel",
    "SpecPredictionHead",
    "PRESETS",
    "make_config",
    "build_mockingjay",
    "mockingjay_tiny",
    "mockingjay_base",
    "mockingjay_large",
]
