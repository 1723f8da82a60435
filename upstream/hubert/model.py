"""HuBERT (Hsu et al., 2021) on torchaudio's wav2vec 2.0 / HuBERT components.

The network is torchaudio's :func:`torchaudio.models.hubert_pretrain_model` (CNN feature encoder,
feature projection, convolutional position embedding, Transformer, span mask generator, logit
projection and label embeddings), so parameter names are torchaudio's and its importers map
fairseq and Hugging Face weights onto it. What this module adds:

* the upstream contract: every hidden state, as S3PRL's HuBERT expert and Hugging Face's
  ``output_hidden_states`` (transformers 4) give them: state 0 is the Transformer input (projected
  CNN features plus the convolutional position embedding, layer-normed for post-LN models), state
  ``i`` the output of layer ``i``; for pre-LN models (Large) the last state is the encoder's output,
  after the final layer norm. HuBERT Base: 13 states x 768.
* batch-independent outputs: with the Base/Large ``group_norm`` CNN, the first layer normalises
  each channel over the *whole* (padded) input, so padding changes the features of the valid part.
  The CNN runs per utterance here; an utterance gives the same states alone or in any batch.
* the masked-prediction objective: cross-entropy over k-means ids on masked frames (optionally on
  unmasked frames with a weight), with cosine-similarity logits at temperature 0.1 between the
  projected output and learnt label embeddings. This equals torchaudio's/fairseq's formulation
  (positive first, other classes as negatives) and is computed as one matrix product.
* a log-mel front end instead of the CNN (``front_end: mel``, MelHuBERT, Lin et al. 2022):
  :class:`upstream.frontend.MelFrontEnd` (80 Kaldi log-mel channels every 10 ms, globally
  normalised with statistics fitted on training audio or per utterance, 2 frames stacked per 20 ms)
  takes the CNN's place as ``model.wav2vec2.feature_extractor``; the feature projection takes its
  160-d frames.
  Pre-training is then plain cross-entropy (no CNN feature penalty or gradient scaling).

Frames are 20 ms (320 samples). Valid frames of an ``S``-sample input: the CNN's
``floor((S - 400) / 320) + 1`` for the standard layer stack (:meth:`HubertUpstream.num_frames`
applies each layer's formula, so custom stacks work too); the log-mel front end gives the same
count with ``mel_stack=2`` (``ceil(m / mel_stack)`` stacks of the ``m = 1 + (S - 400) // 160``
log-mel frames). Target labels must have exactly that many frames per utterance;
:meth:`HubertUpstream.pretrain_loss` refuses anything else, so MFCC targets and a teacher of either
front end fit a student of either.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import hubert_pretrain_model
from torchaudio.models.wav2vec2 import components

from corpora.batching import AudioDataset

from ..base import Pretrainable
from ..frontend import HOP, WINDOW, MelFrontEnd
from ..presets import config_from_preset
from ..wav2vec2.encoder import TINY_CONV, EncoderConfig, TorchaudioEncoderUpstream
from .targets import kmeans_targets

log = logging.getLogger(__name__)

MEL_SETTINGS = ("front_end", "mel_bins", "mel_stack", "mel_norm")
"""The log-mel front end's settings: absent from a CNN model's :meth:`HubertUpstream.settings`."""
FIT_UTTERANCES = 500
"""Training utterances (a seeded sample) the log-mel statistics are fitted on before pre-training."""


@dataclass
class HubertConfig(EncoderConfig):
    """Everything that defines a HuBERT model (its :meth:`HubertUpstream.settings`).

    Front end:
        front_end: ``cnn`` (the encoder's waveform CNN) or ``mel`` (MelHuBERT: ``mel_bins`` Kaldi log-mel
            channels every 10 ms, normalised by a global mean and standard deviation fitted on training
            audio or by each utterance's own (``mel_norm``), ``mel_stack`` consecutive frames concatenated
            per encoder frame; 2 gives the CNN's 20 ms frames). With ``mel``, the CNN settings
            (extractor_mode, conv_layers, conv_bias, feature_grad_mult, feature_penalty) are unused.
        mel_bins, mel_stack: the log-mel front end's channels and frames per encoder frame.
        mel_norm: ``global`` (the fitted statistics) or ``utterance`` (each utterance's own mean and
            standard deviation per channel; nothing to fit).

    Encoder: the fields of :class:`upstream.wav2vec2.encoder.EncoderConfig`.

    Pre-training objective:
        num_classes: k-means clusters of the targets (100 for MFCC targets, 500 for iteration 2).
        final_dim: dimension of the projected output and of the label embeddings.
        mask_start_prob: probability of a frame starting a masked span (the paper's p = 8 %;
            fairseq's and torchaudio's ``mask_prob`` is this times ``mask_length``), mask_length:
            span in frames. Spans overlap, so about half the frames end up masked. As in fairseq
            (torchaudio's mask generator), each utterance of a batch is then cut to as many masked
            frames as the least masked one; length-sorted batches keep that loss small.
        unmasked_weight: weight of the loss on unmasked frames (0: masked frames only, as the paper).
        feature_grad_mult: scale of the gradient reaching the CNN (fairseq's 0.1).
        feature_penalty: weight of the squared-CNN-feature penalty (fairseq's 10).
        logit_temp: temperature of the cosine-similarity logits.
    """

    model_name: ClassVar[str] = "HuBERT"

    front_end: str = "cnn"
    mel_bins: int = 80
    mel_stack: int = 2
    mel_norm: str = "global"
    num_classes: int = 100
    final_dim: int = 256
    mask_start_prob: float = 0.08
    mask_length: int = 10
    unmasked_weight: float = 0.0
    feature_grad_mult: float = 0.1
    feature_penalty: float = 10.0
    logit_temp: float = 0.1

    def __post_init__(self):
        if self.front_end not in ("cnn", "mel"):
            raise ValueError(f"HuBERT setting front_end must be 'cnn' or 'mel', not {self.front_end!r}")
        if self.mel_norm not in ("global", "utterance"):
            raise ValueError(f"HuBERT setting mel_norm must be 'global' or 'utterance', not {self.mel_norm!r}")
        self.check(integers=("mel_bins", "mel_stack", "num_classes", "final_dim", "mask_length"),
                   fractions=("mask_start_prob",))
        if not 0 < self.feature_grad_mult <= 1:
            raise ValueError(f"HuBERT setting feature_grad_mult must be in (0, 1], got {self.feature_grad_mult!r}")


PRESETS: dict[str, dict] = {
    # About 3.7 M parameters: the paper's CNN geometry (20 ms frames) at 128 channels and a
    # 4 x 256 Transformer; pre-trains in tens of minutes on 2 CPU cores.
    "tiny": dict(conv_layers=TINY_CONV, embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024,
                 pos_conv_kernel=64, pos_conv_groups=16, final_dim=64, layer_drop=0.0),
    # HuBERT Base (95 M parameters): 12 x 768, 12 heads, FFN 3072, post-LN, GroupNorm CNN.
    "base": dict(),
    # HuBERT Large (317 M): 24 x 1024, 16 heads, FFN 4096, pre-LN, LayerNorm CNN with bias.
    "large": dict(extractor_mode="layer_norm", conv_bias=True, embed_dim=1024, num_layers=24, num_heads=16,
                  ffn_dim=4096, layer_norm_first=True, final_dim=768, num_classes=500, normalize_waveform=True),
}


class HubertUpstream(TorchaudioEncoderUpstream, Pretrainable):
    """HuBERT behind the upstream contract, with its masked-prediction objective.

    Submodule ``model`` is torchaudio's ``HuBERTPretrainModel``: ``model.wav2vec2`` (feature
    extractor and encoder; what a torchaudio ``hubert_base()`` holds), ``model.mask_generator``
    (the learnt mask embedding) and ``model.logit_generator`` (final projection, label embeddings).
    With ``front_end: mel``, ``model.wav2vec2.feature_extractor`` is a :class:`MelFrontEnd` (buffers
    ``mean``, ``std``, ``fitted``; no parameters) instead of the CNN.
    """

    name = "hubert"

    def __init__(self, config: HubertConfig | None = None):
        super().__init__()
        self.config = c = config or HubertConfig()
        mel = c.front_end == "mel"
        self.model = hubert_pretrain_model(
            extractor_mode=c.extractor_mode,
            # For the log-mel front end, a one-layer stand-in whose channel count sizes the feature
            # projection's input; the front end replaces it below.
            extractor_conv_layer_config=([(c.mel_bins * c.mel_stack, 1, 1)] if mel
                                         else [tuple(layer) for layer in c.conv_layers]),
            extractor_conv_bias=c.conv_bias,
            encoder_embed_dim=c.embed_dim,
            encoder_projection_dropout=c.projection_dropout,
            encoder_pos_conv_kernel=c.pos_conv_kernel,
            encoder_pos_conv_groups=c.pos_conv_groups,
            encoder_num_layers=c.num_layers,
            encoder_num_heads=c.num_heads,
            encoder_attention_dropout=c.attention_dropout,
            encoder_ff_interm_features=c.ffn_dim,
            encoder_ff_interm_dropout=c.activation_dropout,
            encoder_dropout=c.dropout,
            encoder_layer_norm_first=c.layer_norm_first,
            encoder_layer_drop=c.layer_drop,
            mask_prob=c.mask_start_prob * c.mask_length,
            mask_selection="static",
            mask_other=0.0,
            mask_length=c.mask_length,
            no_mask_overlap=False,
            mask_min_space=1,
            mask_channel_prob=0.0,
            mask_channel_selection="static",
            mask_channel_other=0.0,
            mask_channel_length=10,
            no_mask_channel_overlap=False,
            mask_channel_min_space=1,
            skip_masked=False,
            skip_nomask=c.unmasked_weight == 0,
            num_classes=c.num_classes,
            final_dim=c.final_dim,
            feature_grad_mult=c.feature_grad_mult if c.feature_grad_mult < 1 else None,
        )
        if mel:
            self.model.wav2vec2.feature_extractor = MelFrontEnd(c.mel_bins, c.mel_stack, c.mel_norm)
            self.downsample_rate = HOP * c.mel_stack
        else:
            self.downsample_rate = 1
            for _, _, stride in c.conv_layers:
                self.downsample_rate *= stride
        self.hidden_size = c.embed_dim
        self.num_layers = c.num_layers + 1

    def settings(self) -> dict:
        """The config as a dict. A CNN model leaves out :data:`MEL_SETTINGS` (they do not apply to it),
        so its settings, checkpoints and fingerprint are those it had before the log-mel front end existed;
        a checkpoint without them loads as a CNN model. A log-mel model leaves out ``mel_norm`` when it is
        ``global``, for the same reason."""
        settings = dataclasses.asdict(self.config)
        if self.config.front_end == "cnn":
            for key in MEL_SETTINGS:
                del settings[key]
        elif self.config.mel_norm == "global":
            del settings["mel_norm"]
        return settings

    @property
    def needs_fit(self) -> bool:
        """True for a log-mel model without normalisation statistics (:meth:`fit`, or a checkpoint's)."""
        return self.config.front_end == "mel" and self.model.wav2vec2.feature_extractor.needs_fit

    @torch.no_grad()
    def fit(self, wavs: Iterable[torch.Tensor]) -> None:
        """Estimate the log-mel front end's mean and standard deviation from (S,) 16 kHz waveforms (each
        normalised first when ``normalize_waveform`` is set, as the model's input is)."""
        if self.config.front_end != "mel":
            raise ValueError("only HuBERT's log-mel front end (front_end: mel) has statistics to fit")
        normalize = self.config.normalize_waveform
        self.model.wav2vec2.feature_extractor.fit(F.layer_norm(w, w.shape) if normalize else w for w in wavs)

    @property
    def mask_embedding(self) -> nn.Parameter:
        return self.model.mask_generator.mask_embedding

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        if self.config.front_end == "mel":
            return self.model.wav2vec2.feature_extractor.num_frames(num_samples)
        return super().num_frames(num_samples)

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one frame (400 samples, 25 ms, for the paper's CNN and for log-mel)."""
        return WINDOW if self.config.front_end == "mel" else super().min_samples

    def input_features(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The front end's features (B, T, C) of a padded batch, zero after each (B,) valid frame count.

        C: the CNN's last channel count, or ``mel_bins * mel_stack`` stacked log-mel values. Waveforms
        are normalised first when ``normalize_waveform`` is set.
        """
        if self.config.front_end == "mel":
            return self.model.wav2vec2.feature_extractor(self.normalized(wavs, wav_lengths), wav_lengths)
        return super().input_features(wavs, wav_lengths)

    # -- masked prediction ------------------------------------------------------------------------
    def prepare_pretraining(self, work_dir: Path, train: list, valid: list, settings: dict) -> dict:
        """k-means targets (:mod:`upstream.hubert.targets`): features, centroids, labels; ``num_classes`` clusters.

        A log-mel model without statistics first fits them on :data:`FIT_UTTERANCES` training utterances
        (a seeded sample, so every run and resume fits the same).
        """
        if self.needs_fit:
            chosen = random.Random(0).sample(train, min(len(train), FIT_UTTERANCES))
            data = AudioDataset(chosen)
            self.fit(data[i][1] for i in range(len(chosen)))
            log.info("HuBERT log-mel statistics fitted on %d training utterances", len(chosen))
        return kmeans_targets(work_dir, settings, self, self.config.num_classes, train, valid)

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        """(N, D) final-layer states -> (N, num_classes) cosine-similarity logits / temperature."""
        gen = self.model.logit_generator
        proj = F.normalize(gen.final_proj(last), dim=-1, eps=1e-8)
        emb = F.normalize(gen.label_embeddings, dim=-1, eps=1e-8)
        return proj @ emb.T / self.config.logit_temp

    def pretrain_loss(
        self, wavs: torch.Tensor, wav_lengths: torch.Tensor, targets: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked-prediction loss of a batch.

        Args:
            wavs: (B, S) float32 16 kHz waveforms, zero-padded after ``wav_lengths``.
            wav_lengths: (B,) int64 valid samples.
            targets: B int64 tensors of cluster ids, each exactly ``num_frames(wav_lengths[b])`` long.

        Returns:
            (cross-entropy on masked frames + unmasked_weight x that on unmasked frames (+ for the
            CNN front end, feature_penalty x mean squared CNN feature), statistics).
        """
        if targets is None or len(targets) != len(wav_lengths):
            raise ValueError("HuBERT pre-training needs one target sequence per utterance (k-means ids)")
        c = self.config
        feats, lengths = self.input_features(wavs, wav_lengths)
        for b, (t, n) in enumerate(zip(targets, lengths.tolist(), strict=True)):
            if t.shape != (n,):
                raise ValueError(f"utterance {b}: {tuple(t.shape)} target labels for {n} frames; labels must be "
                                 f"at the model's frame rate ({self.downsample_rate} samples per frame)")
            if len(t) and (int(t.min()) < 0 or int(t.max()) >= c.num_classes):
                raise ValueError(f"utterance {b}: target ids outside 0..{c.num_classes - 1}")
        labels = nn.utils.rnn.pad_sequence(targets, batch_first=True).to(wavs.device)
        penalty = None
        if c.front_end == "cnn":  # the log-mel front end has no weights to slow down or regularise
            if c.feature_grad_mult < 1:
                feats = components.GradMultiply.apply(feats, c.feature_grad_mult)
            penalty = feats.float().pow(2).sum() / (lengths.sum() * feats.shape[2])
        x, attention_mask, valid = self._encoder_input(feats, lengths)
        x, mask = self.model.mask_generator(x, ~valid)
        mask_m = mask & valid
        mask_u = valid & ~mask_m
        last = self.transformer_states(x, attention_mask)[-1]
        logit_m = self.logits(last[mask_m])
        loss_m = F.cross_entropy(logit_m, labels[mask_m]) if logit_m.shape[0] else last.sum() * 0.0
        loss = loss_m if penalty is None else loss_m + c.feature_penalty * penalty
        stats = {"loss_masked": loss_m.item(), "masked_fraction": float(mask_m.sum() / valid.sum()),
                 "acc_masked": (float((logit_m.argmax(-1) == labels[mask_m]).float().mean())
                                if logit_m.shape[0] else 0.0)}
        if c.unmasked_weight > 0:
            logit_u = self.logits(last[mask_u])
            loss_u = F.cross_entropy(logit_u, labels[mask_u])
            loss = loss + c.unmasked_weight * loss_u
            stats["loss_unmasked"] = loss_u.item()
        return loss, stats


def build_hubert(preset: str = "base", **settings) -> HubertUpstream:
    """A randomly initialised HuBERT: ``preset`` (``tiny``, ``base``, ``large``) plus :class:`HubertConfig` overrides.

    Raises:
        ConfigError: an unknown preset or setting (named). ValueError: an invalid value.
    """
    return HubertUpstream(config_from_preset("HuBERT", HubertConfig, PRESETS, preset, settings))
