"""BEST-RQ (Chiu et al., 2022): masked prediction of the ids of a frozen random-projection quantizer.

Input: 80-dim Kaldi log-mel frames (25 ms / 10 ms), normalised with a global mean and standard
deviation estimated on training audio (:meth:`BestRQUpstream.fit`,
:class:`upstream.frontend.LogMelNormaliser`; the paper stresses that this
normalisation keeps the quantizer from collapsing onto a few codes) or, with ``input_norm:
utterance``, with each utterance's own (per-channel CMVN: the codes then ignore gain and a fixed
channel colouring), then ``stack`` consecutive frames concatenated (4 x 80 = 320 dims, one frame per
40 ms; a trailing partial stack is dropped).

Targets (:class:`RandomProjectionQuantizer`, buffers only, never trained): the stacked clean frame
times a Xavier-initialised (320, 16) projection, l2-normalised, matched by cosine similarity to the
nearest of a (8192, 16) standard-normal codebook, l2-normalised.

Encoder: a linear input projection and torchaudio's :class:`~torchaudio.models.Conformer` layers.
Masking: each 10 ms input frame starts a masked span of ``mask_span_ms`` with probability
``mask_start_prob`` (paper: 0.01 and 400 ms, about a third of the frames masked); masked input
frames are replaced by N(0, ``mask_noise_std``^2) noise; a stacked frame is a prediction target when
any of its input frames is masked. Loss: cross-entropy of a linear softmax layer over the codebook.

Hidden states: the input projection's output, then every Conformer layer's output (B, T, D each).
Padded frames are zeroed before every depthwise convolution, so an utterance's states do not depend
on the batch it is in (in eval mode; BatchNorm's training statistics do see padding).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Conformer

from core.tensors import lengths_to_mask
from corpora.batching import AudioDataset

from ..base import Pretrainable, Upstream, UpstreamOutput
from ..frontend import HOP, WINDOW, LogMelNormaliser, kaldi_num_frames, log_mel_fbank
from ..presets import config_from_preset
from ..target_usage import id_usage

log = logging.getLogger(__name__)


@dataclass
class BestRQConfig:
    """Everything that defines a BEST-RQ model (its :meth:`BestRQUpstream.settings`).

    Attributes:
        feat_dim: log-mel channels; stack: frames concatenated per encoder frame (x 10 ms).
        codebook_dim, codebook_size: the quantizer's projection width and number of codes.
        embed_dim, num_layers, num_heads, ffn_dim, conv_kernel: the Conformer.
        dropout: Conformer dropout (training only).
        mask_start_prob: per 10 ms input frame, probability of starting a masked span.
        mask_span_ms: masked span length in milliseconds.
        mask_noise_std: standard deviation of the noise that replaces masked (normalised) frames.
        fit_utterances: training utterances used to estimate the normalisation statistics.
        input_norm: ``global`` (the fitted mean and standard deviation) or ``utterance`` (each
            utterance's own, over its frames; nothing to fit).
    """

    feat_dim: int = 80
    stack: int = 4
    codebook_dim: int = 16
    codebook_size: int = 8192
    embed_dim: int = 512
    num_layers: int = 12
    num_heads: int = 8
    ffn_dim: int = 2048
    conv_kernel: int = 31
    dropout: float = 0.1
    mask_start_prob: float = 0.01
    mask_span_ms: float = 400.0
    mask_noise_std: float = 0.1
    fit_utterances: int = 500
    input_norm: str = "global"

    def __post_init__(self):
        for key in ("feat_dim", "stack", "codebook_dim", "codebook_size", "embed_dim", "num_layers", "num_heads",
                    "ffn_dim", "conv_kernel", "fit_utterances"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BEST-RQ setting {key} must be an integer >= 1, got {value!r}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"BEST-RQ setting conv_kernel must be odd, got {self.conv_kernel}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"BEST-RQ embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for key in ("dropout", "mask_start_prob"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"BEST-RQ setting {key} must be a number in [0, 1), got {value!r}")
        if self.input_norm not in ("global", "utterance"):
            raise ValueError(f"BEST-RQ setting input_norm must be 'global' or 'utterance', not {self.input_norm!r}")
        if self.mask_span_ms < 10 or self.mask_noise_std < 0:
            raise ValueError("BEST-RQ settings: mask_span_ms must be >= 10 and mask_noise_std >= 0")


PRESETS: dict[str, dict] = {
    # About 4 M parameters: 4 Conformer layers x 256; pre-trains in tens of minutes on 2 CPU cores.
    "tiny": dict(embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024, conv_kernel=15),
    # 12 Conformer layers x 512, 8 heads, FFN 2048, kernel 31 (about 60 M parameters with the
    # 8192-way classifier); the size class of HuBERT Base.
    "base": dict(),
    # 24 layers x 1024, 16 heads, FFN 4096 (about 0.6 B parameters, the paper's model size class).
    "large": dict(embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096),
}


class RandomProjectionQuantizer(nn.Module):
    """Frozen random projection + random codebook; ids of the nearest code by cosine similarity.

    Both are buffers (saved, never parameters), so no optimiser can change them and no gradient
    reaches them. ``projection``: (input_dim, codebook_dim), Xavier-uniform; ``codebook``:
    (codebook_size, codebook_dim), standard normal then l2-normalised.
    """

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int):
        super().__init__()
        self.register_buffer("projection", nn.init.xavier_uniform_(torch.empty(input_dim, codebook_dim)))
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, codebook_dim), dim=-1))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., input_dim) normalised stacked features -> (...) int64 code ids."""
        z = F.normalize(x @ self.projection, dim=-1)
        return (z @ self.codebook.T).argmax(dim=-1)


class BestRQUpstream(Upstream, Pretrainable, LogMelNormaliser):
    """BEST-RQ behind the upstream contract, with its pre-training objective.

    Submodules: ``quantizer`` (buffers), ``input_proj`` (Linear, stack x feat_dim -> D),
    ``conformer`` (torchaudio), ``classifier`` (Linear, D -> codebook_size); buffers ``mean``,
    ``std`` and ``fitted`` for the global input normalisation (unused with ``input_norm: utterance``).
    """

    name = "bestrq"

    def __init__(self, config: BestRQConfig | None = None):
        super().__init__()
        self.config = c = config or BestRQConfig()
        in_dim = c.feat_dim * c.stack
        self.quantizer = RandomProjectionQuantizer(in_dim, c.codebook_dim, c.codebook_size)
        self.input_proj = nn.Linear(in_dim, c.embed_dim)
        self.conformer = Conformer(input_dim=c.embed_dim, num_heads=c.num_heads, ffn_dim=c.ffn_dim,
                                   num_layers=c.num_layers, depthwise_conv_kernel_size=c.conv_kernel, dropout=c.dropout)
        self.classifier = nn.Linear(c.embed_dim, c.codebook_size)
        self.init_normaliser(c.feat_dim)
        self._valid: torch.Tensor | None = None
        for layer in self.conformer.conformer_layers:
            layer.conv_module.sequential[2].register_forward_pre_hook(self._zero_padding)
        self.downsample_rate = HOP * c.stack
        self.hidden_size = c.embed_dim
        self.num_layers = c.num_layers + 1

    def _zero_padding(self, _module: nn.Module, args: tuple) -> tuple:
        """Pre-hook of each depthwise convolution: (B, C, T) input zeroed past each utterance's end."""
        if self._valid is None:
            return args
        return (args[0] * self._valid[:, None, :].to(args[0].dtype),)

    def settings(self) -> dict:
        """The config as a dict, without ``input_norm`` when it is ``global``: a model of the default keeps the
        settings, checkpoints and fingerprint (feature caches) it had before the option existed."""
        settings = dataclasses.asdict(self.config)
        if self.config.input_norm == "global":
            del settings["input_norm"]
        return settings

    @property
    def needs_fit(self) -> bool:
        return self.config.input_norm == "global" and not bool(self.fitted)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.div(kaldi_num_frames(num_samples), self.config.stack, rounding_mode="floor")

    @property
    def min_samples(self) -> int:
        return WINDOW + (self.config.stack - 1) * HOP

    # -- features ---------------------------------------------------------------------------------
    def fit(self, wavs: Iterable[torch.Tensor]) -> None:
        """Estimate the log-mel mean and standard deviation from (S,) 16 kHz waveforms."""
        self.fit_normaliser(log_mel_fbank(wav, self.config.feat_dim) for wav in wavs)

    def log_mel(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel (B, T * stack, feat_dim), cut to whole stacks and zero-padded, and (B,) stacked frames."""
        self.check_statistics("bestrq")
        shortest = int(wav_lengths.min())
        if shortest < self.min_samples:
            raise ValueError(f"an utterance has {shortest} samples; BEST-RQ needs at least {self.min_samples}")
        lengths = self.num_frames(wav_lengths)
        feats = [self.normalise(log_mel_fbank(w[:n], self.config.feat_dim)[: int(t) * self.config.stack],
                                self.config.input_norm)
                 for w, n, t in zip(wavs, wav_lengths.tolist(), lengths.tolist(), strict=True)]
        return nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths.to(wavs.device)

    def stack(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T * stack, F) -> (B, T, stack * F)."""
        b, t, f = feats.shape
        return feats.reshape(b, t // self.config.stack, self.config.stack * f)

    def encode(self, stacked: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, stack * F) inputs, (B,) lengths -> ``num_layers`` (B, T, D) states, zero on padding."""
        valid = lengths_to_mask(lengths, stacked.shape[1])
        x = self.input_proj(stacked) * valid[:, :, None]
        states = [x]
        self._valid = valid
        try:
            h = x.transpose(0, 1)
            for layer in self.conformer.conformer_layers:
                h = layer(h, ~valid)
                states.append(h.transpose(0, 1) * valid[:, :, None])
                h = states[-1].transpose(0, 1)
        finally:
            self._valid = None
        return states

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        feats, lengths = self.log_mel(wavs, wav_lengths)
        return UpstreamOutput(self.encode(self.stack(feats), lengths), lengths)

    # -- pre-training -----------------------------------------------------------------------------
    def prepare_pretraining(self, work_dir: Path, train: list, valid: list, settings: dict) -> None:
        """Fit the global input normalisation (when used) on ``fit_utterances`` training utterances (seeded choice),
        and record the quantizer's code usage on them."""
        super().prepare_pretraining(work_dir, train, valid, settings)
        chosen = random.Random(0).sample(train, min(len(train), self.config.fit_utterances))
        data = AudioDataset(chosen)
        if self.needs_fit:
            self.fit(data[i][1] for i in range(len(chosen)))
        counts = sum(self.code_usage(w[None], torch.tensor([len(w)])) for _, w in (data[i] for i in range(len(chosen))))
        usage = {**id_usage(counts), "utterances": len(chosen)}
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / "usage.json").write_text(json.dumps(usage, indent=1))
        log.info("BEST-RQ quantizer on %d training utterances: %d of %d codes used, perplexity %.1f",
                 len(chosen), usage["used"], usage["ids"], usage["perplexity"])
        return None

    def span_mask(self, lengths_10ms: torch.Tensor, max_len: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) valid 10 ms frames -> (B, max_len) bool: spans of ``mask_span_ms`` started with ``mask_start_prob``."""
        span = max(1, round(self.config.mask_span_ms / 10))
        valid = lengths_to_mask(lengths_10ms.cpu(), max_len)
        starts = (torch.rand(len(lengths_10ms), max_len, generator=generator) < self.config.mask_start_prob) & valid
        covered = F.max_pool1d(F.pad(starts.float()[:, None], (span - 1, 0)), span, stride=1)[:, 0] > 0
        return covered & valid

    def pretrain_loss(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the quantizer's ids on masked frames; stats include codebook usage of the batch."""
        c = self.config
        with torch.no_grad():
            feats, lengths = self.log_mel(wavs, wav_lengths)
            clean = self.stack(feats)
            targets = self.quantizer(clean)
            mask10 = self.span_mask(lengths * c.stack, feats.shape[1], generator).to(feats.device)
            noise = torch.randn(feats.shape, generator=generator).to(feats.device) * c.mask_noise_std
            noisy = torch.where(mask10[:, :, None], noise, feats)
            masked = mask10.reshape(mask10.shape[0], -1, c.stack).any(-1)
        valid = lengths_to_mask(lengths, clean.shape[1])
        last = self.encode(self.stack(noisy), lengths)[-1]
        logits = self.classifier(last[masked])
        tgt = targets[masked]
        loss = F.cross_entropy(logits, tgt) if len(tgt) else last.sum() * 0.0
        usage = id_usage(torch.bincount(targets[valid], minlength=c.codebook_size))
        stats = {"masked_fraction": float(masked.sum() / valid.sum()),
                 "acc_masked": float((logits.argmax(-1) == tgt).float().mean()) if len(tgt) else 0.0,
                 "codes_used": float(usage["used"]), "code_perplexity": usage["perplexity"]}
        return loss, stats

    @torch.no_grad()
    def target_ids(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> list[torch.Tensor]:
        """The quantizer's id of every valid stacked frame: B (T_b,) int64 tensors, T_b = ``num_frames``."""
        feats, lengths = self.log_mel(wavs, wav_lengths)
        ids = self.quantizer(self.stack(feats))
        return [ids[b, :n] for b, n in enumerate(lengths.tolist())]

    def code_usage(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        """(codebook_size,) int64 counts of the quantizer's ids over the valid frames of a batch."""
        return torch.bincount(torch.cat(self.target_ids(wavs, wav_lengths)), minlength=self.config.codebook_size)


def build_bestrq(preset: str = "base", **settings) -> BestRQUpstream:
    """A randomly initialised BEST-RQ: ``preset`` (``tiny``, ``base``, ``large``) plus :class:`BestRQConfig` overrides.

    Raises:
        ConfigError: an unknown preset or setting (named). ValueError: an invalid value.
    """
    return BestRQUpstream(config_from_preset("BEST-RQ", BestRQConfig, PRESETS, preset, settings))
