"""Mockingjay's network, S3PRL's ``TransformerModel`` and ``TransformerSpecPredictionHead`` (their parameter names).

``Linear(input_dim, H)`` on the frames (no stacking: S3PRL's Mockingjay does not downsample) plus a
sinusoidal position encoding, TF-style LayerNorm (epsilon inside the square root), dropout; then
post-LN BERT layers (optionally pre-LN) with the configured activation (exact erf GELU by default);
padded keys get -10000 added to the attention scores. :class:`TransformerModel` returns the input
representation and the output of every layer: ``num_hidden_layers + 1`` states (B, T, H).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, MockingjayConfig


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
        hidden_size = self.input_representations.spec_transform.out_features
        pos = sinusoid_position_encoding(spec.shape[1], hidden_size, spec.device)
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
