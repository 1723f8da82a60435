"""Pooling over the valid frames of each utterance: ``(x, x_len) -> ((B, D'), all-ones (B,))``.

Frames past ``x_len[b]`` are padding and never counted: an utterance pools to the same vector
whatever it is batched with. The pooled ``y_len`` is all ones (one vector per utterance), the
convention of every utterance-level head (:mod:`downstream.heads`).
"""
from __future__ import annotations

import torch
from torch import nn

from core.tensors import lengths_to_mask


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the first ``lengths[b]`` frames of each (B, T, D) sequence -> (B, D)."""
    mask = lengths_to_mask(lengths, x.shape[1])
    return (x * mask.unsqueeze(-1)).sum(1) / lengths.clamp_min(1).unsqueeze(-1).to(x.dtype)


def one_per_utterance(x_len: torch.Tensor) -> torch.Tensor:
    """The ``y_len`` of an utterance-level output: ones shaped and placed like ``x_len``."""
    return torch.ones_like(x_len)


class MeanPooling(nn.Module):
    """The mean of the valid frames: (B, T, D) -> (B, D)."""

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return masked_mean(x, x_len), one_per_utterance(x_len)


class StatisticsPooling(nn.Module):
    """The mean and standard deviation of the valid frames, concatenated: (B, T, D) -> (B, 2 D).

    The deviation is the population one (divided by the frame count), ``sqrt(max(variance, eps))``
    so that its gradient stays finite for a one-frame utterance or a constant dimension.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = masked_mean(x, x_len)
        variance = masked_mean((x - mean.unsqueeze(1)) ** 2, x_len)
        return torch.cat([mean, variance.clamp_min(self.eps).sqrt()], dim=-1), one_per_utterance(x_len)
