"""APC: Autoregressive Predictive Coding (Chung et al., 2019), numerically compatible with S3PRL's APC.

A stack of unidirectional GRU layers reads per-utterance-normalised 80-dim log-mel frames and a
linear ``postnet`` predicts the frame ``n_future`` steps (10 ms each) ahead; the loss is L1.

Compatibility with S3PRL (``s3prl/upstream/apc/{expert,apc,audio}.py``):
    * features: torchaudio's Kaldi fbank, hamming window, 25 ms / 10 ms, no dither, then S3PRL's
      utterance CMVN ``(x - mean_t) / (1e-10 + std_t)`` (unbiased std) over the valid frames;
    * parameter names ``rnn_layers.{i}.{weight,bias}_{ih,hh}_l0`` and ``postnet.{weight,bias}``, so
      state dicts map 1:1 (see :mod:`upstream.apc.s3prl`);
    * hidden states: S3PRL's expert hooks the *input* of ``rnn_layers[1]``, the input of
      ``rnn_layers[2]`` and the model's returned feature (the last layer), in that order, i.e. the
      output of every GRU layer after dropout and residual connection, input features not
      included. Here that is generalised to one state per GRU layer (for 3 layers the same three).

Note on causality: the GRU stack is strictly causal, but per-utterance CMVN (as in S3PRL) uses the
mean and standard deviation of the whole utterance, so with ``cmvn=True`` every frame depends on
global statistics of the utterance, future samples included. ``cmvn=False`` makes the whole
upstream causal in the waveform.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from torch import nn

from core.tensors import lengths_to_mask
from corpora.audio import SAMPLE_RATE

from ..base import Pretrainable, Upstream, UpstreamOutput
from ..frontend import FRAME_LENGTH_MS, FRAME_SHIFT_MS, HOP, WINDOW, kaldi_num_frames, utterance_cmvn
from ..presets import config_from_preset

WINDOW_TYPE = "hamming"
"""The analysis window S3PRL's APC uses (``s3prl/upstream/apc/audio.py``); Kaldi's default is povey."""


@dataclass
class APCConfig:
    """Everything that defines an APC model (its :meth:`APCUpstream.settings`).

    Attributes:
        feat_dim: log-mel channels of the input and of the prediction target.
        hidden_size: GRU units per layer (H, the dimension of every hidden state).
        num_layers: GRU layers (and hidden states returned).
        dropout: dropout probability applied to each GRU layer's output (training mode only).
        residual: add each layer's input to its output for layers after the first.
        n_future: the prediction target is the frame ``n_future`` steps (x 10 ms) ahead; >= 1.
        cmvn: per-utterance mean/variance normalisation of the log-mel features (S3PRL's default).
    """

    feat_dim: int = 80
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.1
    residual: bool = True
    n_future: int = 3
    cmvn: bool = True

    def __post_init__(self):
        for key in ("feat_dim", "hidden_size", "num_layers", "n_future"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"APC setting {key} must be an integer >= 1, got {value!r}")
        for key in ("residual", "cmvn"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"APC setting {key} must be a bool, got {getattr(self, key)!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"APC setting dropout must be a number in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)


PRESETS: dict[str, dict] = {
    # About 1.1 M parameters: a few hundred steps pre-train in minutes on 2 CPU cores.
    "tiny": dict(hidden_size=256, num_layers=3),
    # The paper's and S3PRL's model: 3 x 512 GRU with residual connections (about 4.1 M parameters).
    "base": dict(hidden_size=512, num_layers=3),
    # One more 512-unit layer (about 5.7 M parameters): same width as base, so hidden states keep
    # their dimension and per-layer comparisons with base stay direct. S3PRL's expert, given this
    # model, exposes only layers 0, 1 and 3 (its hooks are hard-coded for three layers).
    "large": dict(hidden_size=512, num_layers=4),
}


class LogMelCMVN(nn.Module):
    """S3PRL APC's features: Kaldi log-mel filterbank with a hamming window, then utterance CMVN.

    Has no parameters or buffers, so it adds nothing to the state dict.

    Args:
        feat_dim: mel channels.
        cmvn: normalise each utterance to zero mean and unit (unbiased) standard deviation per
            channel over its frames, with 1e-10 added to the standard deviation.
    """

    def __init__(self, feat_dim: int = 80, cmvn: bool = True):
        super().__init__()
        self.feat_dim, self.cmvn = feat_dim, cmvn

    @property
    def min_samples(self) -> int:
        """Shortest valid input in samples: one frame (400), two with CMVN (the std needs two)."""
        return WINDOW + HOP if self.cmvn else WINDOW

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """One (S,) 16 kHz waveform in [-1, 1] -> (T, feat_dim) features, T = 1 + (S - 400) // 160."""
        feats = kaldi.fbank(
            wav.unsqueeze(0),
            num_mel_bins=self.feat_dim,
            frame_length=FRAME_LENGTH_MS,
            frame_shift=FRAME_SHIFT_MS,
            sample_frequency=SAMPLE_RATE,
            window_type=WINDOW_TYPE,
        )
        return utterance_cmvn(feats) if self.cmvn else feats

    def batch(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a padded batch, each utterance from its valid samples only.

        Args:
            wavs: (B, S) float waveforms, zero-padded after ``wav_lengths``.
            wav_lengths: (B,) int64 valid sample counts.

        Returns:
            (B, T, feat_dim) features, zero past each utterance's frames, and (B,) int64 frame
            counts (on the CPU), T their maximum.
        """
        if wavs.dim() != 2 or wav_lengths.shape != (wavs.shape[0],):
            raise ValueError(f"expected (B, S) waveforms and (B,) lengths, got {tuple(wavs.shape)} and "
                             f"{tuple(wav_lengths.shape)}")
        shortest, longest = int(wav_lengths.min()), int(wav_lengths.max())
        if shortest < self.min_samples:
            need = ("two 25 ms frames (560 samples; utterance CMVN needs two)" if self.cmvn
                    else "one 25 ms frame (400 samples)")
            raise ValueError(f"an utterance is shorter than {need}: {shortest} samples")
        if longest > wavs.shape[1]:
            raise ValueError(f"a length ({longest}) exceeds the padded waveform length ({wavs.shape[1]})")
        feats = [self(wav[:n]) for wav, n in zip(wavs, wav_lengths.tolist(), strict=True)]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        return nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


class GRUStack(nn.ModuleList):
    """Unidirectional GRU layers with dropout and optional residual connections (S3PRL's ``rnn_layers``).

    A ``ModuleList`` of ``nn.GRU`` (children ``0, 1, ...``) so parameter names match S3PRL's
    ``rnn_layers.{i}.weight_ih_l0``. Causal: padding after an utterance never reaches its valid frames.

    Args:
        input_size: feature dimension of the first layer's input.
        hidden_size: units per layer (H).
        num_layers: number of layers; sizes [input_size -> H, H -> H, ...].
        dropout: dropout probability on each layer's output (training mode only).
        residual: for layers i > 0, add the layer's input to its (dropped-out) output.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float, residual: bool):
        in_sizes = [input_size] + [hidden_size] * (num_layers - 1)
        super().__init__(nn.GRU(input_size=n, hidden_size=hidden_size, batch_first=True) for n in in_sizes)
        self.dropout_p = dropout  # a float, not a module: a ModuleList's children must be the layers only
        self.residual = residual

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Run every layer.

        Args:
            x: (B, T, input_size) zero-padded input frames.
            lengths: (B,) int64 valid frame counts (each >= 1, max == T).

        Returns:
            ``num_layers`` tensors (B, T, H): each layer's output after dropout and residual
            connection; zero past ``lengths``.
        """
        # Right padding needs no packing: a unidirectional GRU's outputs at valid frames never see
        # the padded frames after them. (Packed sequences give the same numbers but their backward
        # pass is 20-60x slower on CPU: 28 s instead of 0.5 s for 16 x 1000 frames.)
        valid = lengths_to_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
        layer_in, states = x, []
        for i, gru in enumerate(self):
            gru.flatten_parameters()
            out = F.dropout(gru(layer_in)[0], self.dropout_p, self.training)
            if self.residual and i > 0:
                out = out + layer_in
            out = out.masked_fill(~valid, 0.0)
            states.append(out)
            layer_in = out
        return states


class APCUpstream(Upstream, Pretrainable):
    """APC as an upstream: GRU stack over normalised log-mel frames, one hidden state per layer.

    Components (state dict keys as S3PRL's ``APC``):
        ``features`` (:class:`LogMelCMVN`): (S,) waveform -> (T, feat_dim); no parameters.
        ``rnn_layers`` (:class:`GRUStack`): (B, T, feat_dim) -> ``num_layers`` x (B, T, H).
        ``postnet`` (``nn.Linear(H, feat_dim)``): last layer's state at t -> prediction of frame
            t + ``n_future``; used by :meth:`pretrain_loss` only.

    Args:
        config: the model's settings (default: :class:`APCConfig`'s defaults, the base model).
    """

    name = "apc"
    downsample_rate = HOP  # 160 samples = 10 ms per frame at 16 kHz

    def __init__(self, config: APCConfig | None = None):
        super().__init__()
        self.config = config = config or APCConfig()
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_layers
        self.features = LogMelCMVN(config.feat_dim, config.cmvn)
        self.rnn_layers = GRUStack(config.feat_dim, config.hidden_size, config.num_layers, config.dropout,
                                   config.residual)
        self.postnet = nn.Linear(config.hidden_size, config.feat_dim)

    def settings(self) -> dict:
        """The :class:`APCConfig` fields as a dict: ``build_apc(**settings())`` rebuilds the model."""
        return asdict(self.config)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Kaldi ``snip_edges`` frames: 1 + (S - 400) // 160; (B,) int64 -> (B,) int64."""
        return kaldi_num_frames(num_samples)

    def encode(self, wavs: torch.Tensor,
               wav_lengths: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Features and hidden states of a padded batch.

        Args:
            wavs: (B, S) float32 16 kHz waveforms, zero-padded after ``wav_lengths``.
            wav_lengths: (B,) int64 valid sample counts.

        Returns:
            (B, T, feat_dim) input features, ``num_layers`` x (B, T, H) hidden states, (B,) int64
            frame counts; everything zero past each utterance's frames.
        """
        feats, lengths = self.features.batch(wavs, wav_lengths)
        return feats, self.rnn_layers(feats, lengths), lengths

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        """Every GRU layer's output, (B, T, H) each, T = frames of the longest utterance."""
        _, states, lengths = self.encode(wavs, wav_lengths)
        return UpstreamOutput(states, lengths)

    def pretrain_loss(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean L1 distance between ``postnet(h_t)`` and the normalised log-mel frame ``t + n_future``.

        Averaged over every channel of every valid position (t + n_future < frames of the
        utterance); padding never counts. Dropout is active in training mode.

        Returns:
            (scalar loss, {"frames": number of predicted frames}).
        """
        feats, states, lengths = self.encode(wavs, wav_lengths)
        k, total = self.config.n_future, feats.shape[1]
        pred = self.postnet(states[-1])
        if total <= k:  # nothing to predict in this batch
            return pred.sum() * 0.0, {"frames": 0.0}
        valid = lengths_to_mask(lengths.to(feats.device) - k, total - k)
        diff = (pred[:, : total - k] - feats[:, k:]).abs()
        frames = valid.sum()
        loss = diff[valid].sum() / (frames * feats.shape[2]).clamp_min(1)
        return loss, {"frames": float(frames)}


def build_apc(preset: str = "base", **settings) -> APCUpstream:
    """Build an APC upstream from a size preset and :class:`APCConfig` overrides.

    Args:
        preset: ``tiny`` (3 x 256), ``base`` (3 x 512, S3PRL's) or ``large`` (4 x 512): the
            starting point that ``settings`` override.
        **settings: any :class:`APCConfig` field (``feat_dim``, ``hidden_size``, ``num_layers``,
            ``dropout``, ``residual``, ``n_future``, ``cmvn``).

    Raises:
        ConfigError: an unknown preset or setting (named). ValueError: an invalid value.
    """
    return APCUpstream(config_from_preset("APC", APCConfig, PRESETS, preset, settings))
