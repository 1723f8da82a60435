"""The sequence-to-sequence head (SUPERB-SG ST's): a small speech Transformer encoder-decoder.

As in SUPERB-SG (a fairseq S2T Transformer): 1-D convolutional subsampling (``conv_layers`` layers
of stride 2 with GLU), sinusoidal positions, a pre-LN Transformer encoder and decoder (torch's
``nn.Transformer*`` modules), output projection tied to the target embedding.

It fits the heads' contract as an encoder: ``head(x, x_len)`` returns the encoder memory
(B, S, ``d_model``) and its lengths (B,). The decoder needs the target prefix, so it has its own
interface, in lengths too: training decodes the whole prefix at once (:meth:`S2TTransformer.decode`);
search decodes one position at a time (:meth:`S2TTransformer.decode_step`), keeping what earlier
steps computed in a :class:`DecoderCache`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.tensors import lengths_to_mask

PAD = 0
"""The target id the decoder treats as padding (its embedding stays zero); the piece models of
:mod:`downstream.tasks.subwords` use it as theirs."""


@dataclass
class Seq2SeqOptions:
    """SUPERB-SG's speech-translation sizes (the speech-translation task sets them from its own settings)."""

    conv_layers: int = 2
    conv_channels: int = 256
    conv_kernel: int = 5
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1


class ConvSubsampler(nn.Module):
    """(B, T, D), (B,) lengths -> (B, T', d_model), (B,) lengths: per layer a Conv1d of stride 2 and a GLU,
    frames past each utterance's length zeroed (the input's too); T' = ceil(T / 2^layers) for an odd ``kernel``."""

    def __init__(self, input_dim: int, channels: int, d_model: int, layers: int, kernel: int):
        super().__init__()
        dims = [input_dim] + [channels // 2] * (layers - 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(d, (channels if i < layers - 1 else 2 * d_model), kernel, stride=2, padding=kernel // 2)
            for i, d in enumerate(dims))

    @staticmethod
    def out_lengths(lengths: torch.Tensor, layers: int) -> torch.Tensor:
        """(B,) lengths after ``layers`` stride-2 layers: ceil(length / 2) each."""
        for _ in range(layers):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x * lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1)).transpose(1, 2)
        for conv in self.convs:
            x = F.glu(conv(x), dim=1)
            lengths = self.out_lengths(lengths, 1)
            x = x * lengths_to_mask(lengths, x.shape[2])[:, None, :]
        return x.transpose(1, 2), lengths


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine/cosine position encodings (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, d_model) -> (N, heads, L, d_model / heads)."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, dh) -> (N, L, heads * dh)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


class DecoderCache:
    """What incremental decoding keeps between steps (see :meth:`S2TTransformer.decode_step`).

    ``keys``/``values``: per decoder layer, self-attention keys and values of the positions so far,
    (rows, heads, length, dh); ``memory``: per layer, the memory's cross-attention keys and values,
    (B, heads, S, dh); ``memory_keep``: (B, 1, 1, S), True where the memory is not padding;
    ``length``: the positions decoded so far.
    """

    def __init__(self, memory: list[tuple[torch.Tensor, torch.Tensor]], memory_keep: torch.Tensor):
        self.memory, self.memory_keep = memory, memory_keep
        self.keys: list[torch.Tensor | None] = [None] * len(memory)
        self.values: list[torch.Tensor | None] = [None] * len(memory)
        self.length = 0

    @classmethod
    def start(cls, layers: nn.ModuleList, memory: torch.Tensor, memory_len: torch.Tensor) -> DecoderCache:
        """Project ``memory`` (B, S, d_model) with (B,) valid lengths once per decoder layer of ``layers``
        for cross-attention."""
        d = memory.shape[2]
        projected = []
        for layer in layers:
            attn = layer.multihead_attn
            k, v = (split_heads(F.linear(memory, w, bias), attn.num_heads)
                    for w, bias in zip(attn.in_proj_weight[d:].chunk(2), attn.in_proj_bias[d:].chunk(2), strict=True))
            projected.append((k, v))
        return cls(projected, lengths_to_mask(memory_len, memory.shape[1])[:, None, None, :])

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one position's (rows, heads, 1, dh) key and value; returns all of them so far."""
        if self.keys[layer] is not None:
            key, value = torch.cat([self.keys[layer], key], dim=2), torch.cat([self.values[layer], value], dim=2)
        self.keys[layer], self.values[layer] = key, value
        return key, value

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``i`` takes the self-attention history of row ``rows[i]`` (beam search: each new hypothesis's origin)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def padding_mask(memory: torch.Tensor, memory_len: torch.Tensor) -> torch.Tensor:
    """(B, S) key padding mask of ``memory`` (B, S, d): True past each utterance's length."""
    return ~lengths_to_mask(memory_len, memory.shape[1])


class S2TTransformer(nn.Module):
    """Encoder: (B, T, D) features, (B,) lengths -> (memory (B, S, d_model), (B,) lengths).
    Decoder (:meth:`decode`): memory, its lengths, previous pieces (B, U) -> logits (B, U, vocab)."""

    level = "seq2seq"
    options_class = Seq2SeqOptions

    def __init__(self, input_dim: int, vocab_size: int, options: Seq2SeqOptions | None = None):
        super().__init__()
        cfg = options or Seq2SeqOptions()
        self.d_model = cfg.d_model
        self.subsample = ConvSubsampler(input_dim, cfg.conv_channels, cfg.d_model, cfg.conv_layers, cfg.conv_kernel)
        enc = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ffn_dim, cfg.dropout, batch_first=True,
                                         norm_first=True)
        dec = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, cfg.ffn_dim, cfg.dropout, batch_first=True,
                                         norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, cfg.encoder_layers, norm=nn.LayerNorm(cfg.d_model),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, cfg.decoder_layers, norm=nn.LayerNorm(cfg.d_model))
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.d_model)

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        return sinusoidal_positions(x.shape[1], x.shape[2]).to(x.device)[None]

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_len = self.subsample(x, x_len)
        x = self.dropout(self.scale * x + self._positions(x))
        return self.encoder(x, src_key_padding_mask=padding_mask(x, x_len)), x_len

    def decode(self, memory: torch.Tensor, memory_len: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Logits (B, U, vocab) after each position of the previous pieces ``prev`` (B, U), PAD-padded."""
        y = self.scale * self.embed(prev) + sinusoidal_positions(prev.shape[1], self.d_model).to(prev.device)
        y = self.dropout(y)
        causal = torch.ones(prev.shape[1], prev.shape[1], dtype=torch.bool, device=prev.device).triu(1)
        y = self.decoder(y, memory, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=prev == PAD,
                         memory_key_padding_mask=padding_mask(memory, memory_len))
        return F.linear(y, self.embed.weight)

    def decode_step(self, memory: torch.Tensor, memory_len: torch.Tensor, token: torch.Tensor,
                    cache: DecoderCache | None, beams: int = 1) -> tuple[torch.Tensor, DecoderCache]:
        """One incremental decoder step (eval mode): the logits (B * beams, vocab) after ``token``
        (B * beams,), and the updated cache (a new one when ``cache`` is None: the first step).

        Rows ``u * beams ... u * beams + beams - 1`` are hypotheses of utterance ``u`` of ``memory``
        (B, S, d_model) with (B,) valid lengths ``memory_len``. The cache keeps each layer's
        self-attention keys and values of the earlier positions and the memory's keys and values
        (projected once, shared by an utterance's hypotheses: their queries attend to it together),
        so a step costs one position's projections. Each pre-LN layer's own weights are used through
        ``scaled_dot_product_attention``; equal to ``decode(...)[:, -1]`` on the full prefix (tested).
        """
        if cache is None:
            cache = DecoderCache.start(self.decoder.layers, memory, memory_len)
        rows, d = token.shape[0], self.d_model
        t = cache.length
        y = self.scale * self.embed(token[:, None]) + sinusoidal_positions(t + 1, d)[t].to(memory.device)
        for i, layer in enumerate(self.decoder.layers):
            attn, h = layer.self_attn, layer.norm1(y)
            q, k, v = (split_heads(F.linear(h, w, b), attn.num_heads) for w, b in
                       zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3), strict=True))
            k, v = cache.append(i, k, v)
            y = y + attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
            cross = layer.multihead_attn
            w_q, b_q = cross.in_proj_weight[:d], cross.in_proj_bias[:d]
            # (B, heads, beams, dh): an utterance's hypotheses are its queries
            q = split_heads(F.linear(layer.norm2(y), w_q, b_q).view(rows // beams, beams, d), cross.num_heads)
            mem_k, mem_v = cache.memory[i]
            out = F.scaled_dot_product_attention(q, mem_k, mem_v, attn_mask=cache.memory_keep)
            y = y + cross.out_proj(merge_heads(out).reshape(rows, 1, d))
            y = y + layer.linear2(layer.activation(layer.linear1(layer.norm3(y))))
        cache.length += 1
        return F.linear(self.decoder.norm(y[:, 0]), self.embed.weight), cache
