"""wav2vec 2.0 (Baevski et al., 2020): contrastive pre-training on torchaudio's wav2vec 2.0 components.

The encoder is torchaudio's :func:`torchaudio.models.wav2vec2_model` (CNN feature extractor, feature
projection, convolutional position embedding, Transformer), held as ``model.wav2vec2`` like
HuBERT's, so parameter names are torchaudio's and hidden states, batch independence and fine-tuning
come from :class:`upstream.wav2vec2.encoder.TorchaudioEncoderUpstream`. The objective, as in the paper,
fairseq and Hugging Face's ``Wav2Vec2ForPreTraining``:

* **masking**: spans of ``mask_length`` frames started with probability ``mask_start_prob`` (0.065,
  span 10: about half the frames masked) over the projected features, replaced by a learnt
  embedding; at least 2 spans per utterance, and every utterance of a batch cut to as many masked
  frames as the least masked one (fairseq's ``compute_mask_indices``, torchaudio's port);
* **targets**: a product quantiser (:class:`GumbelQuantizer`: G groups of V entries) of the
  *unmasked* layer-normed CNN features, with straight-through Gumbel-softmax at a temperature
  annealed per update from ``gumbel_start`` by ``gumbel_decay`` down to ``gumbel_end``;
* **contrastive loss** (InfoNCE): for each masked frame, the projected Transformer output against
  its own projected quantised target and ``num_negatives`` distractors drawn uniformly from the
  *other* masked frames of the same utterance; cosine-similarity logits at temperature
  ``logit_temp``; a distractor identical to the target gets −inf;
* **diversity loss**: (G·V − perplexity) / (G·V), the perplexity being that of the average soft
  code distribution over masked frames, summed over groups, as in fairseq and Hugging Face; weight
  ``diversity_weight``;
* **feature penalty**: the mean squared CNN feature, weight ``feature_penalty``; the gradient into
  the CNN is scaled by ``feature_grad_mult``.

The loss per batch is fairseq's after its normalisation by the number of masked frames:
``contrastive_sum / masked + diversity_weight * diversity + feature_penalty * penalty``.
:meth:`Wav2Vec2Upstream.contrastive_terms` computes the terms for a given mask, set of distractors
and Gumbel noise, which is how they are checked against ``Wav2Vec2ForPreTraining`` on the same weights.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import wav2vec2_model
from torchaudio.models.wav2vec2 import components
from torchaudio.models.wav2vec2.model import _init_hubert_pretrain_model

from core.tensors import lengths_to_mask

from ..base import Pretrainable
from ..presets import config_from_preset
from .encoder import TINY_CONV, EncoderConfig, TorchaudioEncoderUpstream


@dataclass
class Wav2Vec2Config(EncoderConfig):
    """Everything that defines a wav2vec 2.0 model (its :meth:`Wav2Vec2Upstream.settings`).

    Encoder: the fields of :class:`upstream.wav2vec2.encoder.EncoderConfig`.

    Objective:
        mask_start_prob, mask_length: span masking (fairseq's ``mask_prob`` is their product).
        codebook_groups, codebook_entries: G and V of the product quantiser.
        codevector_dim: size of a quantised vector (G slices of codevector_dim / G).
        final_dim: the space the contrastive loss compares in (``project_q``, ``project_hid``).
        num_negatives: K distractors per masked frame.
        logit_temp: temperature κ of the cosine-similarity logits.
        diversity_weight: α, weight of the diversity loss.
        feature_penalty: weight of the squared-CNN-feature penalty; feature_grad_mult: scale of the
            gradient reaching the CNN.
        features_dropout: dropout on the CNN features before quantisation (fairseq's ``dropout_features``).
        gumbel_start, gumbel_end, gumbel_decay: the Gumbel temperature, ``max(start * decay^updates, end)``.
    """

    model_name: ClassVar[str] = "wav2vec 2.0"

    mask_start_prob: float = 0.065
    mask_length: int = 10
    codebook_groups: int = 2
    codebook_entries: int = 320
    codevector_dim: int = 256
    final_dim: int = 256
    num_negatives: int = 100
    logit_temp: float = 0.1
    diversity_weight: float = 0.1
    feature_penalty: float = 10.0
    feature_grad_mult: float = 0.1
    features_dropout: float = 0.1
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995

    def __post_init__(self):
        self.check(integers=("mask_length", "codebook_groups", "codebook_entries", "codevector_dim", "final_dim",
                             "num_negatives"), fractions=("mask_start_prob", "features_dropout"))
        if self.codevector_dim % self.codebook_groups:
            raise ValueError(f"wav2vec 2.0 codevector_dim {self.codevector_dim} is not divisible by codebook_groups "
                             f"{self.codebook_groups}")
        if not 0 < self.feature_grad_mult <= 1:
            raise ValueError(f"wav2vec 2.0 setting feature_grad_mult must be in (0, 1], got {self.feature_grad_mult!r}")
        if not 0 < self.gumbel_end <= self.gumbel_start or not 0 < self.gumbel_decay <= 1:
            raise ValueError("wav2vec 2.0 Gumbel temperature: need 0 < gumbel_end <= gumbel_start and "
                             "0 < gumbel_decay <= 1")


PRESETS: dict[str, dict] = {
    # About 3.7 M parameters: the paper's CNN geometry (20 ms frames) at 128 channels and a 4 x 256
    # Transformer, as HuBERT tiny; 2 x 64 codes, 50 distractors; pre-trains on 2 CPU cores.
    "tiny": dict(conv_layers=TINY_CONV, embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024, pos_conv_kernel=64,
                 pos_conv_groups=16, codebook_entries=64, codevector_dim=128, final_dim=64, num_negatives=50,
                 layer_drop=0.0),
    # wav2vec 2.0 Base (95 M parameters): 12 x 768, GroupNorm CNN, 2 x 320 codes of 256, K = 100.
    "base": dict(),
    # wav2vec 2.0 Large (317 M): 24 x 1024, pre-LN, LayerNorm CNN with bias, normalised waveforms, 768-d targets.
    "large": dict(extractor_mode="layer_norm", conv_bias=True, embed_dim=1024, num_layers=24, num_heads=16,
                  ffn_dim=4096, layer_norm_first=True, codevector_dim=768, final_dim=768, normalize_waveform=True,
                  layer_drop=0.2),
}


class GumbelQuantizer(nn.Module):
    """Product quantiser: ``groups`` codebooks of ``entries`` vectors of ``dim / groups``, chosen per
    frame by a straight-through Gumbel-softmax (training) or the argmax (evaluation).

    Parameter names are Hugging Face's (``weight_proj``, ``codevectors``), so its checkpoints load.
    """

    def __init__(self, in_dim: int, groups: int, entries: int, dim: int):
        super().__init__()
        self.groups, self.entries = groups, entries
        self.weight_proj = nn.Linear(in_dim, groups * entries)
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, dim // groups))
        nn.init.normal_(self.weight_proj.weight, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        nn.init.uniform_(self.codevectors)

    def forward(self, x: torch.Tensor, temperature: float,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise (N, in_dim) frames.

        Args:
            temperature: the Gumbel-softmax temperature (training mode only).
            noise: (N * groups, entries) Gumbel noise to add in training mode; None: drawn here, exactly as
                ``F.gumbel_softmax`` draws it.

        Returns:
            (N, dim) quantised vectors, (N, groups, entries) soft code distributions (softmax of the
            logits, no noise; float32), (N, groups) chosen code ids.
        """
        n = x.shape[0]
        logits = self.weight_proj(x).view(n * self.groups, self.entries)
        if self.training:
            if noise is None:
                noise = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_().log()
            soft = ((logits + noise) / temperature).softmax(-1)
            ids = soft.argmax(-1)
            hard = torch.zeros_like(soft).scatter_(-1, ids[:, None], 1.0)
            probs = hard - soft.detach() + soft  # straight-through
        else:
            ids = logits.argmax(-1)
            probs = torch.zeros_like(logits).scatter_(-1, ids[:, None], 1.0)
        vectors = torch.einsum("ngv,gvd->ngd", probs.view(n, self.groups, self.entries),
                               self.codevectors.view(self.groups, self.entries, -1))
        distribution = logits.view(n, self.groups, self.entries).float().softmax(-1)
        return vectors.reshape(n, -1), distribution, ids.view(n, self.groups)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) frames -> (..., groups) code ids as evaluation picks them (the argmax per group)."""
        return self.weight_proj(x).view(*x.shape[:-1], self.groups, self.entries).argmax(-1)


def perplexity_per_group(distribution: torch.Tensor) -> torch.Tensor:
    """(N, G, V) code distributions -> (G,) perplexity of each group's average distribution."""
    marginal = distribution.mean(0)
    return torch.exp(-torch.xlogy(marginal, marginal).sum(-1))


class Wav2Vec2Upstream(TorchaudioEncoderUpstream, Pretrainable):
    """wav2vec 2.0 behind the upstream contract, with its contrastive objective.

    Submodule ``model`` holds ``wav2vec2`` (torchaudio's ``Wav2Vec2Model``), ``quantizer``
    (:class:`GumbelQuantizer`), ``project_q`` and ``project_hid`` (into the ``final_dim`` space) and
    ``mask_embedding``; buffer ``updates`` counts training steps for the Gumbel temperature.
    """

    name = "wav2vec2"

    def __init__(self, config: Wav2Vec2Config | None = None):
        super().__init__()
        self.config = c = config or Wav2Vec2Config()
        self.model = nn.Module()
        self.model.wav2vec2 = wav2vec2_model(
            extractor_mode=c.extractor_mode, extractor_conv_layer_config=[tuple(layer) for layer in c.conv_layers],
            extractor_conv_bias=c.conv_bias, encoder_embed_dim=c.embed_dim,
            encoder_projection_dropout=c.projection_dropout, encoder_pos_conv_kernel=c.pos_conv_kernel,
            encoder_pos_conv_groups=c.pos_conv_groups, encoder_num_layers=c.num_layers,
            encoder_num_heads=c.num_heads, encoder_attention_dropout=c.attention_dropout,
            encoder_ff_interm_features=c.ffn_dim, encoder_ff_interm_dropout=c.activation_dropout,
            encoder_dropout=c.dropout, encoder_layer_norm_first=c.layer_norm_first, encoder_layer_drop=c.layer_drop,
            aux_num_out=None)
        # fairseq's initialisation for pre-training, which torchaudio's hubert_pretrain_model applies and
        # wav2vec2_model (made to load trained weights) does not: Kaiming-normal convolutions, BERT's
        # N(0, 0.02) Transformer weights. With PyTorch's defaults the tiny CNN's output starts at
        # std 5e-4, below the feature LayerNorm's epsilon; the quantiser then sees constant frames and
        # the contrastive loss never leaves chance (issue 17's note).
        self.model.wav2vec2.apply(_init_hubert_pretrain_model)
        cnn_dim = c.conv_layers[-1][0]
        self.model.quantizer = GumbelQuantizer(cnn_dim, c.codebook_groups, c.codebook_entries, c.codevector_dim)
        self.model.project_q = nn.Linear(c.codevector_dim, c.final_dim)
        self.model.project_hid = nn.Linear(c.embed_dim, c.final_dim)
        self.model.mask_embedding = nn.Parameter(torch.empty(c.embed_dim).uniform_())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.downsample_rate = math.prod(stride for _, _, stride in c.conv_layers)
        self.hidden_size = c.embed_dim
        self.num_layers = c.num_layers + 1

    @property
    def mask_embedding(self) -> nn.Parameter:
        return self.model.mask_embedding

    def settings(self) -> dict:
        return dataclasses.asdict(self.config)

    @property
    def gumbel_temperature(self) -> float:
        c = self.config
        return max(c.gumbel_start * c.gumbel_decay ** int(self.updates), c.gumbel_end)

    # -- contrastive objective ------------------------------------------------------------------
    def sample_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(B, T) validity -> (B, T) spans to mask (fairseq's ``compute_mask_indices``, at least 2 spans)."""
        c = self.config
        mask = components._compute_mask_indices(tuple(valid.shape), ~valid, c.mask_start_prob * c.mask_length,
                                                c.mask_length, "static", 0.0, min_masks=2, no_overlap=False)
        return mask.to(valid.device) & valid

    def sample_negatives(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) mask -> (B, T, K) frame indices of distractors: for each masked frame, K other masked
        frames of its utterance drawn uniformly with replacement (never the frame itself; an utterance
        with one masked frame gets that frame, which the loss then ignores). Unmasked rows are 0."""
        k = self.config.num_negatives
        negatives = torch.zeros(*mask.shape, k, dtype=torch.long, device=mask.device)
        for b in range(mask.shape[0]):
            frames = mask[b].nonzero().squeeze(1)
            n = len(frames)
            if n == 0:
                continue
            if n == 1:
                negatives[b, frames] = frames[:, None].expand(1, k)
                continue
            drawn = torch.randint(0, n - 1, (n, k), device=mask.device)
            drawn += (drawn >= torch.arange(n, device=mask.device)[:, None]).long()  # skip the frame itself
            negatives[b, frames] = frames[drawn]
        return negatives

    def contrastive_terms(self, wavs: torch.Tensor, wav_lengths: torch.Tensor, mask: torch.Tensor,
                          negatives: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The objective's terms for a given mask, distractors and Gumbel noise.

        Args:
            wavs, wav_lengths: (B, S) padded 16 kHz waveforms, (B,) valid samples.
            mask: (B, T) bool, the frames to mask (valid frames only).
            negatives: (B, T, K) frame indices of each masked frame's distractors (its own utterance).
            noise: (B * T * G, V) Gumbel noise for the quantiser (training mode); None: drawn.

        Returns:
            ``contrastive_sum`` (summed over masked frames), ``masked`` (their count), ``perplexity``
            (summed over groups), ``perplexity_groups`` (G,), ``diversity``, ``penalty``, ``accuracy``
            (the target ranked first), ``code_ids`` (B, T, G), ``targets`` (B, T, final_dim) projected
            quantised targets.
        """
        c = self.config
        feats, lengths = self.input_features(wavs, wav_lengths)
        batch, frames, channels = feats.shape
        if c.feature_grad_mult < 1:  # before the penalty, whose gradient into the CNN is scaled too (fairseq)
            feats = components.GradMultiply.apply(feats, c.feature_grad_mult)
        penalty = feats.float().pow(2).sum() / (lengths.sum() * channels)
        normed = self.model.wav2vec2.encoder.feature_projection.layer_norm(feats)
        x, attention_mask = self.model.wav2vec2.encoder._preprocess(feats, lengths)
        x = torch.where(mask[:, :, None], self.mask_embedding.to(x.dtype), x)
        predicted = self.model.project_hid(self.transformer_states(x, attention_mask)[-1])
        dropped = F.dropout(normed, c.features_dropout, self.training)
        vectors, distribution, ids = self.model.quantizer(dropped.reshape(batch * frames, channels),
                                                          self.gumbel_temperature, noise)
        targets = self.model.project_q(vectors.view(batch, frames, -1))
        rows = mask.nonzero(as_tuple=True)
        positive = targets[rows]  # (M, F)
        distractors = targets[rows[0][:, None], negatives[rows]]  # (M, K, F)
        candidates = torch.cat([positive[:, None], distractors], dim=1)
        logits = F.cosine_similarity(predicted[rows][:, None].float(), candidates.float(), dim=-1) / c.logit_temp
        same = (distractors == positive[:, None]).all(-1)
        logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
        contrastive_sum = F.cross_entropy(logits, torch.zeros(len(positive), dtype=torch.long, device=logits.device),
                                          reduction="sum")
        groups = perplexity_per_group(distribution.view(batch, frames, *distribution.shape[1:])[rows])
        entries = c.codebook_groups * c.codebook_entries
        return {"contrastive_sum": contrastive_sum, "masked": torch.tensor(len(positive)),
                "perplexity": groups.sum(), "perplexity_groups": groups,
                "diversity": (entries - groups.sum()) / entries, "penalty": penalty,
                "accuracy": (logits.argmax(-1) == 0).float().mean(), "code_ids": ids.view(batch, frames, -1),
                "targets": targets}

    @torch.no_grad()
    def target_ids(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> list[torch.Tensor]:
        """The quantiser's code of every valid frame, as evaluation picks it (the argmax per group), the G
        group ids combined into one (``sum_g id_g * V^(G-1-g)``, V^G possible): B (T_b,) int64 tensors.
        What :mod:`upstream.pretrain.target_quality` scores against phone alignments."""
        c = self.config
        feats, lengths = self.input_features(wavs, wav_lengths)
        normed = self.model.wav2vec2.encoder.feature_projection.layer_norm(feats)
        ids = self.model.quantizer.codes(normed)
        weights = c.codebook_entries ** torch.arange(c.codebook_groups - 1, -1, -1, device=ids.device)
        combined = (ids * weights).sum(-1)
        return [combined[b, :n] for b, n in enumerate(lengths.tolist())]

    def pretrain_loss(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Contrastive + diversity + feature-penalty loss of a batch (mask, distractors and Gumbel noise
        drawn here); with gradients in training mode (an update) the Gumbel temperature's count moves on."""
        c = self.config
        lengths = self.num_frames(wav_lengths)
        valid = lengths_to_mask(lengths.to(wavs.device))
        mask = self.sample_mask(valid)
        terms = self.contrastive_terms(wavs, wav_lengths, mask, self.sample_negatives(mask))
        masked = max(int(terms["masked"]), 1)
        contrastive = terms["contrastive_sum"] / masked
        loss = contrastive + c.diversity_weight * terms["diversity"] + c.feature_penalty * terms["penalty"]
        ids = terms["code_ids"][valid]  # (N, G)
        used = sum(len(torch.unique(ids[:, g])) for g in range(c.codebook_groups))
        stats = {"loss_contrastive": contrastive.item(), "diversity": terms["diversity"].item(),
                 "feature_penalty": terms["penalty"].item(), "acc_masked": terms["accuracy"].item(),
                 "masked_fraction": masked / float(valid.sum()), "gumbel_temperature": self.gumbel_temperature,
                 "codes_used_fraction": used / (c.codebook_groups * c.codebook_entries),
                 **{f"perplexity_g{g}": p.item() for g, p in enumerate(terms["perplexity_groups"])}}
        if self.training and torch.is_grad_enabled():  # an update (pre-training validates without gradients)
            self.updates += 1
        return loss, stats


def build_wav2vec2(preset: str = "base", **settings) -> Wav2Vec2Upstream:
    """A randomly initialised wav2vec 2.0: ``preset`` (``tiny``, ``base``, ``large``) plus :class:`Wav2Vec2Config`
    overrides.

    Raises:
        ConfigError: an unknown preset or setting (named). ValueError: an invalid value.
    """
    return Wav2Vec2Upstream(config_from_preset("wav2vec 2.0", Wav2Vec2Config, PRESETS, preset, settings))
