"""SUPERB's featurizer: a learnable softmax-weighted sum of the upstream's layers, or one chosen layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("weighted_sum", "last", "layer")


class Featurizer(nn.Module):
    """Collapse (B, T, L, D) hidden states to (B, T, D).

    Args:
        num_layers: L.
        mode: ``weighted_sum`` (weights start equal: zero logits through a softmax), ``last``, or
            ``layer`` (the layer at index ``layer``; negative counts from the end).
        layer: the layer index for mode ``layer``.
        layer_norm: apply a parameter-free layer norm to each layer before summing.
    """

    def __init__(self, num_layers: int, mode: str = "weighted_sum", layer: int = -1, layer_norm: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown featurizer mode {mode!r}; choose from {MODES}")
        if mode == "layer" and not -num_layers <= layer < num_layers:
            raise ValueError(f"featurizer layer {layer} out of range for an upstream with {num_layers} layers")
        self.num_layers, self.mode, self.layer_norm = num_layers, mode, layer_norm
        self.layer = num_layers - 1 if mode == "last" else layer % num_layers
        self.weights = nn.Parameter(torch.zeros(num_layers)) if mode == "weighted_sum" else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, L, D) -> (B, T, D)."""
        if hidden.shape[2] != self.num_layers:
            raise ValueError(f"featurizer built for {self.num_layers} layers got {hidden.shape[2]}")
        if self.weights is None:
            hidden = hidden[:, :, self.layer]
            return F.layer_norm(hidden, hidden.shape[-1:]) if self.layer_norm else hidden
        if self.layer_norm:
            hidden = F.layer_norm(hidden, hidden.shape[-1:])
        return torch.einsum("btld,l->btd", hidden, F.softmax(self.weights, dim=0))

    def layer_weights(self) -> list[float]:
        """The normalised weight of each layer (a one-hot vector for single-layer modes)."""
        if self.weights is None:
            return [float(i == self.layer) for i in range(self.num_layers)]
        return F.softmax(self.weights.detach(), dim=0).tolist()
