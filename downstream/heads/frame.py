"""Frame-level heads: one score vector per (resampled) frame, ``(x, x_len) -> ((B, T', C), (B,))``.

Both first bring the featurizer's frames to the head's rate (:func:`resample_frames`: ``upsample``
repeats frames, ``downsample`` concatenates neighbours, as S3PRL's ``concat`` downsampling), so
``T' = ceil(T * upsample / downsample)``. :class:`FrameLinear` is SUPERB's phoneme-recognition
probe (one linear layer); :class:`BiLSTMHead` is SUPERB's ASR head (SpecAugment while training,
projection, bidirectional LSTM, linear). They return raw scores; a CTC task takes their log-softmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio.transforms as T
from torch import nn

from core.tensors import lengths_to_mask


def check_rates(upsample: int, downsample: int) -> None:
    """ValueError unless both are >= 1 and at most one of them is above 1."""
    if downsample < 1 or upsample < 1 or (downsample > 1 and upsample > 1):
        raise ValueError(f"task.downsample and task.upsample must be >= 1, one of them 1; got {downsample}, {upsample}")


def resample_frames(x: torch.Tensor, lengths: torch.Tensor, upsample: int,
                    downsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D), (B,) -> frames repeated ``upsample`` times, then ``downsample`` frames concatenated:
    (B, ceil(T * up / down), down * D), zero-padded at the end, and the new lengths. Frames past
    ``lengths`` are zeroed before they are concatenated, so an utterance's last frame never holds padding."""
    if upsample > 1:
        x, lengths = x.repeat_interleave(upsample, dim=1), lengths * upsample
    if downsample > 1:
        b, t, d = x.shape
        x = x * lengths_to_mask(lengths, t).unsqueeze(-1)
        x = F.pad(x, (0, 0, 0, -t % downsample)).reshape(b, -1, downsample * d)
        lengths = (lengths + downsample - 1) // downsample
    return x, lengths


@dataclass
class FrameOptions:
    """Options of every frame-level head: the frame rate it works at (the CTC tasks set them from
    their own ``upsample`` and ``downsample``)."""

    upsample: int = 1
    """Each input frame repeated this many times (a 40-ms upstream reaches 20-ms frames)."""
    downsample: int = 1
    """Adjacent input frames concatenated into one (a 10-ms upstream reaches 20-ms frames)."""


class FrameLinear(nn.Module):
    """SUPERB's frame-level linear probe: :func:`resample_frames`, then one ``nn.Linear`` (``linear``)."""

    level = "frame"
    options_class = FrameOptions

    def __init__(self, input_dim: int, output_dim: int, options: FrameOptions | None = None):
        super().__init__()
        options = options or FrameOptions()
        check_rates(options.upsample, options.downsample)
        self.upsample, self.downsample = options.upsample, options.downsample
        self.linear = nn.Linear(input_dim * options.downsample, output_dim)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_len = resample_frames(x, x_len, self.upsample, self.downsample)
        return self.linear(x), x_len


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
    idx = torch.where(lengths_to_mask(lengths, x.shape[1]), lengths[:, None] - 1 - t, t)
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


@dataclass
class BiLSTMOptions(FrameOptions):
    """SUPERB's ASR head: sizes 1024 (the defaults; the CPU recipes use 128), SpecAugment as S3PRL's."""

    proj_dim: int = 1024
    lstm_dim: int = 1024
    """Hidden units per direction."""
    lstm_layers: int = 2
    """0: no projection and BiLSTM, a single linear layer (wav2vec 2.0's fine-tuning head)."""
    dropout: float = 0.2
    """Between BiLSTM layers."""
    specaug: bool = True
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 4
    freq_mask_dims: int = 50
    """Widest feature-dimension mask; at most half the input dimension is used."""


class BiLSTMHead(nn.Module):
    """SpecAugment (training only) on the input, :func:`resample_frames`, Linear(D -> ``proj_dim``)
    (``proj``), a ``lstm_layers``-layer :class:`BiLSTM` (``lstm``), Linear -> ``output_dim`` (``out``)."""

    level = "frame"
    options_class = BiLSTMOptions

    def __init__(self, input_dim: int, output_dim: int, options: BiLSTMOptions | None = None):
        super().__init__()
        o = options or BiLSTMOptions()
        self.specaug = (SpecAugment(o.time_masks, o.time_mask_frames, o.freq_masks,
                                    min(o.freq_mask_dims, input_dim // 2)) if o.specaug else nn.Identity())
        if o.lstm_layers < 0:
            raise ValueError(f"the bilstm head's lstm_layers must be >= 0, got {o.lstm_layers}")
        check_rates(o.upsample, o.downsample)
        self.downsample, self.upsample = o.downsample, o.upsample
        if o.lstm_layers == 0:  # wav2vec 2.0's fine-tuning head: one linear layer
            self.proj, self.lstm, self.out = None, None, nn.Linear(input_dim * o.downsample, output_dim)
        else:
            self.proj = nn.Linear(input_dim * o.downsample, o.proj_dim)
            self.lstm = BiLSTM(o.proj_dim, o.lstm_dim, o.lstm_layers, o.dropout)
            self.out = nn.Linear(2 * o.lstm_dim, output_dim)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_len = resample_frames(self.specaug(x), x_len, self.upsample, self.downsample)
        if self.lstm is not None:
            x = self.lstm(self.proj(x), x_len)
        return self.out(x), x_len
