"""SUPERB's featurizer: a learnable softmax-weighted sum of the upstream's layers, or one chosen layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.tensors import lengths_to_mask

MODES = ("weighted_sum", "last", "layer")


class Featurizer(nn.Module):
    """Collapse (B, T, L, D) hidden states to (B, T, D).

    Args:
        num_layers: L.
        mode: ``weighted_sum`` (weights start equal: zero logits through a softmax), ``last``, or
            ``layer`` (the layer at index ``layer``; negative counts from the end).
        layer: the layer index for mode ``layer``.
        layer_norm: apply a parameter-free layer norm to each layer before summing.
        utterance_mean_norm: subtract from each layer, per utterance, its mean over the valid frames
            (cepstral mean normalisation of the hidden states) before the layer norm and the sum. It
            removes what is constant within an utterance (speaker, channel), so it suits frame-level
            heads (PR, ASR), not one that pools the utterance (KS), whose pooled mean it zeroes.
    """

    def __init__(self, num_layers: int, mode: str = "weighted_sum", layer: int = -1, layer_norm: bool = False,
                 utterance_mean_norm: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown featurizer mode {mode!r}; choose from {MODES}")
        if mode == "layer" and not -num_layers <= layer < num_layers:
            raise ValueError(f"featurizer layer {layer} out of range for an upstream with {num_layers} layers")
        self.num_layers, self.mode, self.layer_norm = num_layers, mode, layer_norm
        self.utterance_mean_norm = utterance_mean_norm
        self.layer = num_layers - 1 if mode == "last" else layer % num_layers
        self.weights = nn.Parameter(torch.zeros(num_layers)) if mode == "weighted_sum" else None

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, L, D) hidden states, (B,) valid frame counts (needed by ``utterance_mean_norm``) -> (B, T, D)."""
        if hidden.shape[2] != self.num_layers:
            raise ValueError(f"featurizer built for {self.num_layers} layers got {hidden.shape[2]}")
        if self.utterance_mean_norm:
            if lengths is None:
                raise ValueError("utterance_mean_norm needs the valid frame counts (lengths)")
            valid = lengths_to_mask(lengths.to(hidden.device), hidden.shape[1])[:, :, None, None].to(hidden.dtype)
            mean = (hidden * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
            hidden = (hidden - mean) * valid
        if self.weights is None:
            hidden = hidden[:, :, self.layer]
            return F.layer_norm(hidden, hidden.shape[-1:]) if self.layer_norm else hidden
        if self.layer_norm:
            hidden = F.layer_norm(hidden, hidden.shape[-1:])
        return torch.einsum("btld,l->btd", hidden, F.softmax(self.weights, dim=0))

    @property
    def frame_affine(self) -> bool:
        """Whether the output frame is an affine function of the same frame's hidden states alone (a
        weighted sum or one layer, without layer norm or the per-utterance mean): then the mean of the
        output frames is the featurizer applied to the mean of the input frames."""
        return not (self.layer_norm or self.utterance_mean_norm)

    def layer_weights(self) -> list[float]:
        """The normalised weight of each layer (a one-hot vector for single-layer modes)."""
        if self.weights is None:
            return [float(i == self.layer) for i in range(self.num_layers)]
        return F.softmax(self.weights.detach(), dim=0).tolist()
