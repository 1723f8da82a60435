"""The Mockingjay upstream: features, chunked encoding, hidden states and the masked acoustic modelling loss.

Hidden states: the input representation (layer 0) and the output of every layer:
``num_hidden_layers + 1`` tensors. Utterances longer than ``max_sequence_length`` frames are cut into
``ceil(T / max_sequence_length)`` equal chunks (``torch.chunk``), each encoded on its own with
positions restarting at 0, as S3PRL's builder does.

Masked acoustic modelling (S3PRL's ``pretrain/mockingjay/task.py``): spans of frames are zeroed,
replaced by other frames or left unchanged, optionally a frequency band is zeroed and noise added;
the prediction head reconstructs the clean target features from the last state, L1 or MSE on the
masked positions only.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from core.tensors import lengths_to_mask

from ..base import Pretrainable, Upstream, UpstreamOutput
from ..masking import band_mask, max_span_start, span_mask
from ..presets import config_from_preset
from .config import PRESETS, MockingjayConfig
from .features import MockingjayFeatures
from .transformer import SpecPredictionHead, TFLayerNorm, TransformerModel


def chunk_bounds(length: int, max_len: int) -> list[tuple[int, int]]:
    """Where S3PRL's builder cuts a ``length``-frame input: ``torch.chunk`` into ceil(length / max_len) parts."""
    if max_len <= 0 or length <= max_len:
        return [(0, length)]
    size = math.ceil(length / math.ceil(length / max_len))
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def _similar_length_groups(pieces: list[tuple[int, int, int]],
                           min_fill: float = 0.75) -> list[list[tuple[int, int, int]]]:
    """Group (utterance, start, end) chunks so that each group's shortest is >= ``min_fill`` of its
    longest: chunks are encoded group by group, with little padding (each chunk is encoded alone
    either way, so the outputs do not depend on the grouping)."""
    ordered = sorted(pieces, key=lambda p: p[2] - p[1], reverse=True)
    groups: list[list[tuple[int, int, int]]] = []
    for piece in ordered:
        if groups and (piece[2] - piece[1]) >= min_fill * (groups[-1][0][2] - groups[-1][0][1]):
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups


class MockingjayUpstream(Upstream, Pretrainable):
    """Mockingjay behind the upstream contract, with its MAM pre-training objective.

    Submodules: ``features`` (no parameters), ``transformer`` (S3PRL ``Transformer`` keys) and
    ``spec_head`` (S3PRL ``SpecHead`` keys).
    """

    name = "mockingjay"

    def __init__(self, config: MockingjayConfig | None = None):
        super().__init__()
        self.config = config = config or MockingjayConfig()
        self.input_dim = config.feature_dim("input")
        self.target_dim = config.feature_dim("target")
        self.features = MockingjayFeatures(config)
        self.transformer = TransformerModel(config, self.input_dim)
        self.spec_head = SpecPredictionHead(config, self.target_dim)
        self.downsample_rate = config.hop_length
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_hidden_layers + 1
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """S3PRL's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, TFLayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def settings(self) -> dict:
        return dataclasses.asdict(self.config)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return self.features.num_frames(num_samples)

    # -- features and encoder ---------------------------------------------------------------------
    def extract_features(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, with_target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-utterance features of a padded batch.

        Returns:
            (B, T, D_in) inputs, (B, T, D_target) targets (or None) zero-padded, (B,) int64 frame counts.
        """
        shortest = int(wav_lengths.min())
        if shortest < self.features.min_samples():
            raise ValueError(
                f"an utterance has {shortest} samples; Mockingjay needs at least {self.features.min_samples()}"
            )
        inputs, targets = [], []
        with torch.no_grad():
            for wav, n in zip(wavs, wav_lengths.tolist(), strict=True):
                inp, tgt = self.features(wav[:n], with_target)
                inputs.append(inp)
                targets.append(tgt)
        x, lengths = self.pad_frames(inputs)
        y = self.pad_frames(targets)[0] if with_target else None
        return x, y, lengths.to(wavs.device)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """All hidden states of (B, T, D_in) features with (B,) valid lengths: ``num_layers`` (B, T, H).

        Utterances longer than ``max_sequence_length`` are encoded chunk by chunk (S3PRL's builder).
        Padded frames are set to zero.
        """
        batch, max_t, _ = feats.shape
        valid = lengths_to_mask(lengths, max_t)
        bounds = [chunk_bounds(n, self.config.max_sequence_length) for n in lengths.tolist()]
        if all(len(b) == 1 for b in bounds):
            states = self.transformer(feats, valid)
        else:
            states = [feats.new_zeros(batch, max_t, self.hidden_size) for _ in range(self.num_layers)]
            for group in _similar_length_groups([(i, s, e) for i, bs in enumerate(bounds) for s, e in bs]):
                chunk_t = max(e - s for _, s, e in group)
                chunk = feats.new_zeros(len(group), chunk_t, feats.shape[2])
                for j, (i, s, e) in enumerate(group):
                    chunk[j, : e - s] = feats[i, s:e]
                chunk_len = torch.tensor([e - s for _, s, e in group], device=feats.device)
                chunk_valid = lengths_to_mask(chunk_len, chunk_t)
                for out, h in zip(states, self.transformer(chunk, chunk_valid), strict=True):
                    for j, (i, s, e) in enumerate(group):
                        out[i, s:e] = h[j, : e - s]
        keep = valid[:, :, None].to(states[0].dtype)
        return [h * keep for h in states]

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        feats, _, lengths = self.extract_features(wavs, wav_lengths)
        return UpstreamOutput(self.encode(feats, lengths), lengths)

    # -- masked acoustic modelling ----------------------------------------------------------------
    def mam_inputs(
        self, feats: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Corrupt features for MAM as S3PRL's ``generate_masked_acoustic_model_data`` does.

        Per utterance: spans from :func:`upstream.masking.span_mask`; one draw decides for all its
        spans: zeroed (``mask_zero_prob``), replaced by as many randomly placed spans of the same
        utterance (``mask_random_prob``) or left as they are. Then an optional frequency band is
        zeroed on every frame and, with probability ``noise_proportion`` per batch, N(0, 0.2) noise
        added to the valid frames. Random numbers come from ``generator`` (CPU).

        Args:
            feats: (B, T, D_in) features, zero-padded after ``lengths``.
            lengths: (B,) valid frames.

        Returns:
            (B, T, D_in) corrupted inputs, (B, T, D_target) bool loss positions (time-masked frames,
            and the masked band on valid frames), (B, T) bool time mask.
        """
        c = self.config
        lengths_cpu = lengths.detach().cpu()
        batch, max_t, dim = feats.shape
        spans = span_mask(
            lengths_cpu,
            c.mask_proportion,
            c.mask_consecutive_min,
            span_max=c.mask_consecutive_max,
            allow_overlap=c.mask_allow_overlap,
            bucket_ratio=c.mask_bucket_ratio,
            max_len=max_t,
            generator=generator,
        )
        time_mask = spans.mask.to(feats.device)
        masked = feats.clone()
        for b in range(batch):
            if spans.starts[b].numel() == 0:
                continue
            n, span = int(lengths_cpu[b]), int(spans.span_lengths[b])
            dice = float(torch.rand((), generator=generator))
            if dice < c.mask_zero_prob:
                masked[b, time_mask[b]] = 0
            elif dice < c.mask_zero_prob + c.mask_random_prob:
                offsets = torch.arange(span)
                dst = (spans.starts[b][:, None] + offsets).reshape(-1)
                src_starts = torch.randperm(max_span_start(n, span) + 1, generator=generator)[: len(spans.starts[b])]
                src = (src_starts[:, None] + offsets).reshape(-1)
                keep = dst < n
                dst, src = dst[keep], src[keep].clamp(max=n - 1)
                masked[b, dst.to(feats.device)] = feats[b, src.to(feats.device)]
        label = time_mask[:, :, None].expand(batch, max_t, self.target_dim).clone()
        if c.mask_frequency > 0:
            band = band_mask(batch, dim, int(dim * c.mask_frequency), generator=generator).to(feats.device)
            masked = masked.masked_fill(band[:, None, :], 0.0)
            frames_valid = lengths_to_mask(lengths, max_t)
            label |= frames_valid[:, :, None] & band[:, None, :]
        if c.noise_proportion > 0 and float(torch.rand((), generator=generator)) < c.noise_proportion:
            noise = torch.randn(masked.shape, generator=generator).to(feats.device) * 0.2
            frames_valid = lengths_to_mask(lengths, max_t)
            masked = masked + noise * frames_valid[:, :, None]
        return masked, label, time_mask

    def mam_loss(
        self, masked: torch.Tensor, target: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Reconstruction loss (mean L1 or MSE) of ``target`` on the ``label`` positions only.

        (B, T, D_in) corrupted input, (B, T, D_target) target and bool positions, (B,) lengths.
        Zero (still attached to the graph) when nothing is masked.
        """
        pred = self.spec_head(self.encode(masked, lengths)[-1])
        if not bool(label.any()):
            return pred.sum() * 0.0
        diff = pred.masked_select(label) - target.masked_select(label)
        return diff.abs().mean() if self.config.loss == "L1" else diff.pow(2).mean()

    def pretrain_loss(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MAM loss of a batch: mask, encode, predict; :meth:`mam_loss` against the clean target features."""
        feats, target, lengths = self.extract_features(wavs, wav_lengths, with_target=True)
        masked, label, time_mask = self.mam_inputs(feats, lengths, generator)
        loss = self.mam_loss(masked, target, label, lengths)
        masked_frames = time_mask.sum()
        return loss, {"masked_frames": float(masked_frames), "masked_fraction": float(masked_frames / lengths.sum())}


def build_mockingjay(preset: str = "base", **settings) -> MockingjayUpstream:
    """A randomly initialised Mockingjay: ``preset`` (``tiny``, ``base``, ``large``) plus field overrides.

    ``build_mockingjay(**model.settings())`` rebuilds the same architecture (then ``load_state_dict``).

    Raises:
        ConfigError: an unknown preset or setting (named). ValueError: an invalid value.
    """
    return MockingjayUpstream(config_from_preset("Mockingjay", MockingjayConfig, PRESETS, preset, settings))
