"""Speech translation (SUPERB-SG ST): a small speech Transformer on the weighted layer sum, scored by BLEU.

Head as in SUPERB-SG (a fairseq S2T Transformer): 1-D convolutional subsampling (``conv_layers``
layers of stride 2 with GLU), sinusoidal positions, a pre-LN Transformer encoder and decoder
(3 + 3 layers by default; torch's ``nn.Transformer*`` modules), output projection tied to the target
embedding. Targets are SentencePiece pieces (``char`` by default, or ``unigram`` / ``bpe``) trained
on the training translations; the model travels in the checkpoint. Cross-entropy with label
smoothing; beam search with a length penalty (``beam_size=1`` is greedy). Metrics: sacrebleu's
case-sensitive detokenised BLEU and chrF on the raw translations, the signatures in ``results.json``.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import sacrebleu
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch import nn

from corpora.covost2 import prepare_covost2
from corpora.manifest import Record, read_manifest

from .base import GENERIC_CORPORA, Task

CORPORA = ("demo", "covost2", *GENERIC_CORPORA)
PIECE_TYPES = ("char", "unigram", "bpe")
PAD, UNK, BOS, EOS = 0, 1, 2, 3


@dataclass
class STConfig:
    """Speech-translation settings.

    ``corpus``: ``covost2`` (``root`` holds ``clips/`` and ``covost_v2.<src>_<tgt>.{train,dev,test}.tsv``),
    ``demo`` (the toolkit's synthetic corpus in that layout, built under ``root`` if absent from
    ``parallel_text``, a Multi30k folder, or from a built-in grammar when empty; ``demo_sizes``
    sentences per split), ``manifest`` (``train/dev/test.tsv`` with ``text`` and ``translation``) or
    ``hf`` (a local Hugging Face dataset at ``root`` with ``sentence`` and ``translation`` columns, e.g. CoVoST 2).
    """

    corpus: str = "demo"
    root: str = "data/demo_st"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    parallel_text: str = ""
    demo_sizes: list[int] = field(default_factory=lambda: [1500, 200, 200])
    src_lang: str = "en"
    tgt_lang: str = "de"
    pieces: str = "char"
    vocab_size: int = 1000
    """Pieces for ``unigram`` / ``bpe`` (``char`` takes every training character)."""
    conv_layers: int = 2
    conv_channels: int = 256
    conv_kernel: int = 5
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    label_smoothing: float = 0.1
    beam_size: int = 5
    length_penalty: float = 1.0
    """Hypothesis score = log-probability / length ** length_penalty."""
    max_len: int = 200
    """Most target pieces decoded per utterance ..."""
    max_len_ratio: float = 2.0
    """... and at most this many per encoder frame (plus 10), so a weak model's babble stops early."""


class ConvSubsampler(nn.Module):
    """(B, T, D) -> (B, ceil-ish(T / 2^layers), d_model): Conv1d stride 2 + GLU per layer, zero after each length."""

    def __init__(self, input_dim: int, channels: int, d_model: int, layers: int, kernel: int):
        super().__init__()
        dims = [input_dim] + [channels // 2] * (layers - 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(d, (channels if i < layers - 1 else 2 * d_model), kernel, stride=2, padding=kernel // 2)
            for i, d in enumerate(dims))

    @staticmethod
    def out_lengths(lengths: torch.Tensor, layers: int) -> torch.Tensor:
        for _ in range(layers):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)
        for conv in self.convs:
            x = F.glu(conv(x), dim=1)
            lengths = self.out_lengths(lengths, 1)
            x = x * (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None])[:, None, :]
        return x.transpose(1, 2), lengths


def _until_eos(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS)] if EOS in ids else ids


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
    """What incremental decoding keeps between steps (see :meth:`SpeechTranslationHead.decode_step`).

    ``keys``/``values``: per decoder layer, self-attention keys and values of the positions so far,
    (rows, heads, length, dh); ``memory``: per layer, the memory's cross-attention keys and values,
    (B, heads, S, dh); ``memory_keep``: (B, 1, 1, S), True where the memory is not padding.
    """

    def __init__(self, memory: list[tuple[torch.Tensor, torch.Tensor]], memory_keep: torch.Tensor):
        self.memory, self.memory_keep = memory, memory_keep
        self.keys: list[torch.Tensor | None] = [None] * len(memory)
        self.values: list[torch.Tensor | None] = [None] * len(memory)
        self.length = 0

    @classmethod
    def start(cls, layers, memory: torch.Tensor, memory_mask: torch.Tensor) -> "DecoderCache":
        """Project ``memory`` (B, S, d_model) once per layer for cross-attention."""
        d = memory.shape[2]
        projected = []
        for layer in layers:
            attn = layer.multihead_attn
            k, v = (split_heads(F.linear(memory, w, bias), attn.num_heads)
                    for w, bias in zip(attn.in_proj_weight[d:].chunk(2), attn.in_proj_bias[d:].chunk(2)))
            projected.append((k, v))
        return cls(projected, ~memory_mask[:, None, None, :])

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one position's (rows, heads, 1, dh) key and value; returns all of them so far."""
        if self.keys[layer] is not None:
            key, value = torch.cat([self.keys[layer], key], dim=2), torch.cat([self.values[layer], value], dim=2)
        self.keys[layer], self.values[layer] = key, value
        return key, value

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the self-attention history of ``rows`` (beam search: each new hypothesis's origin)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


class SpeechTranslationHead(nn.Module):
    """Encoder: (B, T, D) features, (B,) lengths -> (memory (B, S, d_model), key padding mask (B, S)).
    Decoder (:meth:`decode`): memory, mask, previous pieces (B, U) -> logits (B, U, vocab)."""

    def __init__(self, input_dim: int, vocab_size: int, cfg: STConfig):
        super().__init__()
        self.cfg = cfg
        self.subsample = ConvSubsampler(input_dim, cfg.conv_channels, cfg.d_model, cfg.conv_layers, cfg.conv_kernel)
        enc = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, cfg.encoder_layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, cfg.decoder_layers, norm=nn.LayerNorm(cfg.d_model))
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.d_model)

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        return sinusoidal_positions(x.shape[1], x.shape[2]).to(x.device)[None]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.subsample(features, lengths)
        x = self.dropout(self.scale * x + self._positions(x))
        mask = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        return self.encoder(x, src_key_padding_mask=mask), mask

    def decode(self, memory: torch.Tensor, memory_mask: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.scale * self.embed(prev) + sinusoidal_positions(prev.shape[1], self.cfg.d_model).to(prev.device))
        causal = torch.ones(prev.shape[1], prev.shape[1], dtype=torch.bool, device=prev.device).triu(1)
        y = self.decoder(y, memory, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=prev == PAD,
                         memory_key_padding_mask=memory_mask)
        return F.linear(y, self.embed.weight)

    def decode_step(self, memory: torch.Tensor, memory_mask: torch.Tensor, token: torch.Tensor,
                    cache: DecoderCache | None, beams: int = 1) -> tuple[torch.Tensor, DecoderCache]:
        """One incremental decoder step (eval mode): the logits (B * beams, vocab) after ``token``
        (B * beams,), and the updated cache.

        Rows ``u * beams ... u * beams + beams - 1`` are hypotheses of utterance ``u`` of ``memory``
        (B, S, d_model) with key padding ``memory_mask`` (B, S). The cache keeps each layer's
        self-attention keys and values of the earlier positions and the memory's keys and values
        (projected once, shared by an utterance's hypotheses: their queries attend to it together),
        so a step costs one position's projections. Each pre-LN layer's own weights are used through
        ``scaled_dot_product_attention``; equal to ``decode(...)[:, -1]`` on the full prefix (tested).
        """
        if cache is None:
            cache = DecoderCache.start(self.decoder.layers, memory, memory_mask)
        rows, d = token.shape[0], self.cfg.d_model
        t = cache.length
        y = self.scale * self.embed(token[:, None]) + sinusoidal_positions(t + 1, d)[t].to(memory.device)
        for i, layer in enumerate(self.decoder.layers):
            attn, h = layer.self_attn, layer.norm1(y)
            q, k, v = (split_heads(F.linear(h, w, b), attn.num_heads) for w, b in
                       zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))
            k, v = cache.append(i, k, v)
            y = y + attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
            cross = layer.multihead_attn
            w_q, b_q = cross.in_proj_weight[:d], cross.in_proj_bias[:d]
            q = split_heads(F.linear(layer.norm2(y), w_q, b_q).view(rows // beams, beams, d), cross.num_heads)  # (B, H, beams, dh)
            mem_k, mem_v = cache.memory[i]
            out = F.scaled_dot_product_attention(q, mem_k, mem_v, attn_mask=cache.memory_keep)
            y = y + cross.out_proj(merge_heads(out).reshape(rows, 1, d))
            y = y + layer.linear2(layer.activation(layer.linear1(layer.norm3(y))))
        cache.length += 1
        return F.linear(self.decoder.norm(y[:, 0]), self.embed.weight), cache

    @torch.no_grad()
    def greedy(self, memory: torch.Tensor, memory_mask: torch.Tensor, max_len: int) -> list[list[int]]:
        """Batched argmax decoding -> pieces per utterance (without BOS/EOS)."""
        b = memory.shape[0]
        prev = torch.full((b, 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        cache = None
        for _ in range(max_len):
            logits, cache = self.decode_step(memory, memory_mask, prev[:, -1], cache)
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            prev = torch.cat([prev, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return [_until_eos(row[1:]) for row in prev.tolist()]

    @torch.no_grad()
    def beam_search(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int, max_len: int,
                    length_penalty: float = 1.0) -> list[list[int]]:
        """Beam search over the whole batch at once -> pieces per utterance (without BOS/EOS).

        Each utterance keeps ``beam_size`` open hypotheses (B * K decoder rows, one incremental
        step each); a hypothesis ends at EOS and scores log-prob / (length + 1) ** length_penalty.
        An utterance is done once it has ``beam_size`` ended hypotheses; without any by ``max_len``,
        its best open one is taken. The result of an utterance does not depend on the rest of the batch (tested).
        """
        b, k, device = memory.shape[0], beam_size, memory.device
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis (BOS) per utterance to start
        prefixes = [[[BOS] for _ in range(k)] for _ in range(b)]
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        done = [False] * b
        last = torch.full((b * k,), BOS, dtype=torch.long, device=device)
        cache = None
        for _ in range(max_len):
            logits, cache = self.decode_step(memory, memory_mask, last, cache, beams=k)
            logp = F.log_softmax(logits, dim=-1)
            vocab = logp.shape[1]
            cand = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
            top_scores, top = cand.topk(min(2 * k, k * vocab), dim=1)
            new_scores = torch.full((b, k), float("-inf"), device=device)
            origins = torch.arange(b * k, device=device)
            tokens = torch.full((b * k,), PAD, dtype=torch.long, device=device)
            new_prefixes = [list(p) for p in prefixes]
            for u in range(b):
                if done[u]:
                    continue
                kept = 0
                for score, flat in zip(top_scores[u].tolist(), top[u].tolist()):
                    if score == float("-inf"):
                        break
                    beam, token = divmod(flat, vocab)
                    if token == EOS:
                        hyp = prefixes[u][beam][1:]
                        finished[u].append((score / (len(hyp) + 1) ** length_penalty, hyp))
                    else:
                        new_prefixes[u][kept] = prefixes[u][beam] + [token]
                        new_scores[u, kept] = score
                        origins[u * k + kept] = u * k + beam
                        tokens[u * k + kept] = token
                        kept += 1
                    if kept == k:
                        break
                if len(finished[u]) >= k or kept == 0:
                    done[u] = True
            if all(done):
                break
            prefixes, scores, last = new_prefixes, new_scores, tokens
            cache.reorder(origins)
        out = []
        for u in range(b):
            if not finished[u]:  # none ended within max_len: the best open hypothesis
                best = int(scores[u].argmax())
                finished[u] = [(0.0, prefixes[u][best][1:])]
            out.append(max(finished[u], key=lambda f: f[0])[1])
        return out


class PieceModel:
    """A SentencePiece model trained on the training translations (pad 0, unk 1, bos 2, eos 3)."""

    def __init__(self, proto: bytes):
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def train(cls, texts: list[str], pieces: str, vocab_size: int) -> "PieceModel":
        if pieces not in PIECE_TYPES:
            raise ValueError(f"task.pieces {pieces!r} unknown; choose from {PIECE_TYPES}")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buffer, model_type=pieces, vocab_size=vocab_size,
            hard_vocab_limit=False, character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS,
            eos_id=EOS, minloglevel=2)
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)


def translation_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """sacrebleu corpus BLEU (case-sensitive, detokenised, 13a) and chrF; (scores, signatures)."""
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score}, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}


class SpeechTranslation(Task):
    name = "st"
    config_class = STConfig
    primary_metric = "bleu"
    higher_is_better = True
    decoding_keys = ("beam_size", "length_penalty", "max_len", "max_len_ratio")

    def __init__(self, cfg: STConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if cfg.corpus not in CORPORA:
            raise ValueError(f"task.corpus {cfg.corpus!r} unknown for st; choose from {CORPORA}")
        if cfg.pieces not in PIECE_TYPES:
            raise ValueError(f"task.pieces {cfg.pieces!r} unknown; choose from {PIECE_TYPES}")
        self.pieces: PieceModel | None = None
        self.head: SpeechTranslationHead | None = None
        self.targets: dict[str, list[int]] = {}

    def build_corpus(self) -> None:
        if self.cfg.corpus == "demo":
            from corpora.synth_st import build_demo_st  # noqa: PLC0415  (only the demo needs TTS)

            build_demo_st(self.cfg.root, self.cfg.parallel_text or None, tuple(self.cfg.demo_sizes))

    def prepare(self) -> dict[str, list[Record]]:
        cfg = self.cfg
        splits = self.generic_splits()
        if splits is None:
            self.build_corpus()
            paths = prepare_covost2(cfg.root, self.workdir / "manifests", cfg.src_lang, cfg.tgt_lang)
            splits = {s: read_manifest(p) for s, p in paths.items()}
        for split, records in splits.items():
            if not records:
                raise ValueError(f"st: split '{split}' of {cfg.root} is empty")
            empty = [r.id for r in records if not r.translation.strip()]
            if empty:
                raise ValueError(f"st: split '{split}' has utterances without a translation: {empty[:5]}")
        if self.pieces is None:  # a checkpoint's piece model (load_state) wins over a retrained one
            self.pieces = PieceModel.train([r.translation for r in splits["train"]], cfg.pieces, cfg.vocab_size)
        self.targets = {r.id: self.pieces.encode(r.translation) for r in splits["train"]}
        return splits

    def build_head(self, input_dim: int) -> nn.Module:
        self.head = SpeechTranslationHead(input_dim, len(self.pieces), self.cfg)
        return self.head

    def loss(self, output, records: list[Record]) -> torch.Tensor:
        memory, mask = output
        seqs = [self.targets[r.id][: self.cfg.max_len] for r in records]
        prev = nn.utils.rnn.pad_sequence([torch.tensor([BOS, *s]) for s in seqs], batch_first=True, padding_value=PAD)
        gold = nn.utils.rnn.pad_sequence([torch.tensor([*s, EOS]) for s in seqs], batch_first=True, padding_value=PAD)
        logits = self.head.decode(memory, mask, prev.to(memory.device))
        return F.cross_entropy(logits.flatten(0, 1), gold.to(memory.device).flatten(), ignore_index=PAD, label_smoothing=self.cfg.label_smoothing)

    def loss_units(self, records: list[Record]) -> float:
        """Target pieces plus EOS: the cross-entropy is a mean over tokens."""
        return sum(min(len(self.targets[r.id]), self.cfg.max_len) + 1 for r in records)

    def predict(self, output) -> list[str]:
        """Beam search; greedy when ``beam_size`` is 1 and while the runner validates (checkpoint selection)."""
        memory, mask = output
        max_len = min(self.cfg.max_len, int(self.cfg.max_len_ratio * int((~mask).sum(1).max())) + 10)
        if self.cfg.beam_size == 1 or self.validating:
            ids = self.head.greedy(memory, mask, max_len)
        else:
            ids = self.head.beam_search(memory, mask, self.cfg.beam_size, max_len, self.cfg.length_penalty)
        return [self.pieces.decode(i) for i in ids]

    def score(self, predictions: list[str], records: list[Record]) -> dict[str, float]:
        return translation_scores(predictions, [r.translation for r in records])[0]

    def metric_info(self) -> dict:
        return {"signatures": translation_scores(["a"], ["a"])[1]}

    def reference(self, record: Record) -> str:
        return record.translation

    def state(self) -> dict:
        return {"pieces": self.pieces.proto}

    def load_state(self, state: dict) -> None:
        self.pieces = PieceModel(state["pieces"])
