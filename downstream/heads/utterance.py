"""Utterance-level heads: one score vector per utterance, ``(x, x_len) -> ((B, C), all-ones (B,))``.

:class:`MeanLinear` is the plain utterance-level probe (mean pooling, one linear layer);
:class:`ProjMeanLinear` is SUPERB's keyword-spotting head (S3PRL's ``MeanPoolingLinear``: a
projection, mean pooling, a linear classifier, no non-linearity); :class:`StatsLinear` pools mean
and standard deviation; :class:`XVector` is the speaker-embedding head of SUPERB's speaker tasks
(S3PRL's ``XVector``: dilated TDNN layers, statistics pooling, a linear embedding layer) with a
classifier on the embedding. Padding frames never change an utterance's output (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.tensors import lengths_to_mask

from .pooling import MeanPooling, StatisticsPooling, one_per_utterance


@dataclass
class NoOptions:
    """A head without options."""


class MeanLinear(nn.Module):
    """Mean of the valid frames, then Linear(D -> C) (``linear``)."""

    level = "utterance"
    options_class = NoOptions
    reads_frame_mean = True
    """The output depends on the frames only through their mean: an utterance's mean frame, given as a
    one-frame utterance, gives the same output (the runner's pooled-first training, :mod:`downstream.runner`)."""

    def __init__(self, input_dim: int, output_dim: int, options: NoOptions | None = None):
        super().__init__()
        self.pooling = MeanPooling()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, y_len = self.pooling(x, x_len)
        return self.linear(pooled), y_len


@dataclass
class ProjMeanLinearOptions:
    """SUPERB's keyword-spotting head size."""

    proj_dim: int = 256


class ProjMeanLinear(nn.Module):
    """Linear(D -> ``proj_dim``) per frame (``projector``), mean of the valid frames, Linear(``proj_dim``
    -> C) (``classifier``); no non-linearity."""

    level = "utterance"
    options_class = ProjMeanLinearOptions
    reads_frame_mean = True
    """The projection is affine and precedes the mean, so mean(W x_t + b) = W mean(x_t) + b: the output
    depends on the frames only through their mean (as :attr:`MeanLinear.reads_frame_mean`)."""

    def __init__(self, input_dim: int, output_dim: int, options: ProjMeanLinearOptions | None = None):
        super().__init__()
        options = options or ProjMeanLinearOptions()
        self.projector = nn.Linear(input_dim, options.proj_dim)
        self.pooling = MeanPooling()
        self.classifier = nn.Linear(options.proj_dim, output_dim)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, y_len = self.pooling(self.projector(x), x_len)
        return self.classifier(pooled), y_len


class StatsLinear(nn.Module):
    """Mean and standard deviation of the valid frames (:class:`~downstream.heads.pooling.StatisticsPooling`),
    then Linear(2 D -> C) (``linear``)."""

    level = "utterance"
    options_class = NoOptions

    def __init__(self, input_dim: int, output_dim: int, options: NoOptions | None = None):
        super().__init__()
        self.pooling = StatisticsPooling()
        self.linear = nn.Linear(2 * input_dim, output_dim)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, y_len = self.pooling(x, x_len)
        return self.linear(pooled), y_len


class TDNN(nn.Module):
    """One time-delay layer: a dilated Conv1d without padding, ReLU, BatchNorm (S3PRL's / Kaldi's order).

    (B, T, D), (B,) -> (B, T - context, C), lengths - context, where context = dilation x (kernel - 1):
    an output frame is valid when its whole receptive field is. Batch normalisation sees the valid
    frames only (their statistics while training), and the padding stays zero.
    """

    def __init__(self, input_dim: int, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(input_dim, channels, kernel, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)
        self.context = dilation * (kernel - 1)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        y_len = x_len - self.context
        valid = lengths_to_mask(y_len, y.shape[1])
        out = torch.zeros_like(y)
        out[valid] = self.norm(y[valid])
        return out, y_len


@dataclass
class XVectorOptions:
    """The TDNN layers (one entry per layer in each list) and the embedding size; the defaults are
    the x-vector of SUPERB's speaker verification (S3PRL's ``XVector``, Snyder et al. 2018)."""

    channels: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1500])
    kernels: list[int] = field(default_factory=lambda: [5, 3, 3, 1, 1])
    dilations: list[int] = field(default_factory=lambda: [1, 2, 3, 1, 1])
    embed_dim: int = 512


class XVector(nn.Module):
    """TDNN layers (``tdnn``), statistics pooling, Linear(2 x last channels -> ``embed_dim``)
    (``embedding``: the x-vector, :meth:`embed`), ReLU, Linear(``embed_dim`` -> C) (``classifier``).

    An utterance needs more frames than the TDNN layers' total context (15 with the defaults);
    fewer is a ValueError.
    """

    level = "utterance"
    options_class = XVectorOptions

    def __init__(self, input_dim: int, output_dim: int, options: XVectorOptions | None = None):
        super().__init__()
        o = options or XVectorOptions()
        if not len(o.channels) == len(o.kernels) == len(o.dilations) or not o.channels:
            raise ValueError(f"xvector head: channels, kernels and dilations need one entry per TDNN layer; got "
                             f"{o.channels}, {o.kernels}, {o.dilations}")
        if min(o.channels + o.kernels + o.dilations) < 1:
            raise ValueError(f"xvector head: channels, kernels and dilations must be >= 1; got "
                             f"{o.channels}, {o.kernels}, {o.dilations}")
        dims = [input_dim, *o.channels[:-1]]
        self.tdnn = nn.ModuleList(TDNN(d, c, k, r) for d, c, k, r in zip(dims, o.channels, o.kernels, o.dilations,
                                                                          strict=True))
        self.pooling = StatisticsPooling()
        self.embedding = nn.Linear(2 * o.channels[-1], o.embed_dim)
        self.classifier = nn.Linear(o.embed_dim, output_dim)
        self.context = sum(layer.context for layer in self.tdnn)

    def embed(self, x: torch.Tensor, x_len: torch.Tensor) -> torch.Tensor:
        """The x-vectors (B, ``embed_dim``) of (B, T, D) frames with (B,) valid lengths."""
        shortest = int(x_len.min())
        if shortest <= self.context:
            raise ValueError(f"xvector head: an utterance of {shortest} frames is too short for TDNN layers with "
                             f"{self.context} frames of context (it needs at least {self.context + 1})")
        for layer in self.tdnn:
            x, x_len = layer(x, x_len)
        return self.embedding(self.pooling(x, x_len)[0])

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(F.relu(self.embed(x, x_len))), one_per_utterance(x_len)
