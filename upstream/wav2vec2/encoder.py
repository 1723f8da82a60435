"""What HuBERT and wav2vec 2.0 share: torchaudio's wav2vec 2.0 encoder behind the upstream contract.

:class:`TorchaudioEncoderUpstream` runs ``self.model.wav2vec2`` (a torchaudio ``Wav2Vec2Model``:
CNN feature extractor, feature projection, convolutional position embedding, Transformer):

* every hidden state, as S3PRL's experts and Hugging Face's ``output_hidden_states`` (transformers
  4) give them: state 0 is the Transformer input (projected CNN features plus the convolutional
  position embedding, layer-normed for post-LN models), state ``i`` the output of layer ``i``; for
  pre-LN models (Large) the last state is the encoder's output, after the final layer norm;
* batch-independent outputs: with the Base/Large ``group_norm`` CNN the first layer normalises each
  channel over the *whole* (padded) input, so the CNN runs per utterance there;
* fine-tuning: the CNN frozen, the model's own span and channel masking.

Subclasses set ``self.config`` (an :class:`EncoderConfig`) and ``self.model.wav2vec2``, and name
their learnt mask embedding (:attr:`mask_embedding`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models.wav2vec2 import components

from core.tensors import lengths_to_mask

from ..base import FinetuneMasking, Upstream, UpstreamOutput

BASE_CONV = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2
"""The paper's CNN: (channels, kernel, stride) per layer, 400-sample receptive field, stride 320."""
TINY_CONV = [[128, 10, 5]] + [[128, 3, 2]] * 4 + [[128, 2, 2]] * 2
"""The tiny presets' CNN: the same geometry (20 ms frames) at 128 channels."""


@dataclass
class EncoderConfig:
    """The encoder's settings, shared by HuBERT's and wav2vec 2.0's configs (names follow
    :func:`torchaudio.models.wav2vec2_model`).

    Attributes:
        extractor_mode: ``group_norm`` (Base: one GroupNorm after the first conv) or ``layer_norm``
            (Large: a LayerNorm after every conv).
        conv_layers: (channels, kernel, stride) of each CNN layer.
        conv_bias: bias in the CNN convolutions.
        embed_dim, num_layers, num_heads, ffn_dim: the Transformer.
        layer_norm_first: pre-LN Transformer layers (Large) instead of post-LN (Base).
        pos_conv_kernel, pos_conv_groups: the convolutional position embedding.
        dropout, attention_dropout, activation_dropout, projection_dropout, layer_drop: training-mode
            regularisation (no effect on extracted features).
        normalize_waveform: normalise each waveform to zero mean and unit variance over its valid
            samples first (fairseq's task ``normalize``; the Large models were trained with it).
    """

    model_name: ClassVar[str] = "encoder"
    """How errors name the model."""

    extractor_mode: str = "group_norm"
    conv_layers: list = field(default_factory=lambda: [list(c) for c in BASE_CONV])
    conv_bias: bool = False
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1
    layer_drop: float = 0.05
    normalize_waveform: bool = False

    def check(self, integers: tuple[str, ...] = (), fractions: tuple[str, ...] = ()) -> None:
        """Validate the encoder's settings and the subclass's ``integers`` (each >= 1) and ``fractions``
        (each in [0, 1)); normalise ``conv_layers`` to lists. Raises ValueError naming the setting."""
        name = self.model_name
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"{name} setting extractor_mode must be 'group_norm' or 'layer_norm', "
                             f"not {self.extractor_mode!r}")
        if not self.conv_layers or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and v > 0 for v in c)
            for c in self.conv_layers
        ):
            raise ValueError(f"{name} setting conv_layers must be [channels, kernel, stride] triples, "
                             f"got {self.conv_layers!r}")
        self.conv_layers = [list(c) for c in self.conv_layers]
        for key in ("embed_dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel", "pos_conv_groups",
                    *integers):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} setting {key} must be an integer >= 1, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{name} embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for key in ("dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layer_drop",
                    *fractions):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} setting {key} must be a number in [0, 1), got {value!r}")


class TorchaudioEncoderUpstream(Upstream):
    """The encoder half of HuBERT / wav2vec 2.0 (see the module docstring)."""

    @property
    def mask_embedding(self) -> nn.Parameter:
        """The learnt (embed_dim,) vector that replaces masked frames."""
        raise NotImplementedError

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        n = num_samples
        for _, kernel, stride in self.config.conv_layers:
            n = torch.clamp(torch.div(n - kernel, stride, rounding_mode="floor") + 1, min=0)
        return n

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one frame (400 samples, 25 ms, for the paper's CNN)."""
        n = 1
        for _, kernel, stride in reversed(self.config.conv_layers):
            n = (n - 1) * stride + kernel
        return n

    def normalized(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        """The waveforms, each normalised over its valid samples when ``normalize_waveform`` is set
        (fairseq's task ``normalize``); refuses inputs shorter than :attr:`min_samples`."""
        shortest = int(wav_lengths.min())
        if shortest < self.min_samples:
            raise ValueError(f"an utterance has {shortest} samples; {self.name} needs at least {self.min_samples}")
        if not self.config.normalize_waveform:
            return wavs
        return nn.utils.rnn.pad_sequence(
            [F.layer_norm(w[:n], (n,)) for w, n in zip(wavs, wav_lengths.tolist(), strict=True)], batch_first=True)

    def input_features(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CNN's features (B, T, C) of a padded batch, zero after each (B,) valid frame count."""
        return self._cnn_features(self.normalized(wavs, wav_lengths), wav_lengths)

    def _cnn_features(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN features (B, T, C) of a padded batch, zero after each (B,) valid frame count.

        With the GroupNorm CNN each utterance runs alone (see the module docstring); with the
        LayerNorm CNN, whose normalisation is per frame, the batch runs at once.
        """
        extractor = self.model.wav2vec2.feature_extractor
        lengths = self.num_frames(wav_lengths)
        if self.config.extractor_mode == "layer_norm" or bool((wav_lengths == wavs.shape[1]).all()):
            feats, _ = extractor(wavs, None)
        else:
            feats = nn.utils.rnn.pad_sequence(
                [extractor(w[None, :n], None)[0][0] for w, n in zip(wavs, wav_lengths.tolist(), strict=True)],
                batch_first=True,
            )
        valid = lengths_to_mask(lengths, feats.shape[1])
        return feats * valid[:, :, None], lengths

    def _encoder_input(self, feats: torch.Tensor,
                       lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project input features; (B, T, D) zero on padding, (B, 1, T, T) additive attention mask, (B, T) validity."""
        x, attention_mask = self.model.wav2vec2.encoder._preprocess(feats, lengths)
        valid = lengths_to_mask(lengths, x.shape[1])
        return x, attention_mask, valid

    def transformer_states(self, x: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Hugging Face's ``hidden_states``: Transformer input after position embedding, then every layer.

        Args:
            x: (B, T, D) projected features (masked or not), zero on padding.
            attention_mask: (B, 1, T, T) additive mask from :meth:`_encoder_input`.
        """
        transformer = self.model.wav2vec2.encoder.transformer
        # torchaudio's Transformer._preprocess: add the position embedding, then the layer norm
        # for post-LN models (its flag is the negation of the layers' pre-LN flag), then dropout.
        x = transformer._preprocess(x)
        states = [x]
        drop = transformer.layer_drop if self.training else 0.0
        for layer in transformer.layers:
            if not (drop > 0 and torch.rand(1).item() <= drop):
                x, _ = layer(x, attention_mask)
            states.append(x)
        if self.config.layer_norm_first:
            states[-1] = transformer.layer_norm(states[-1])
        return states

    def finetune_parameters(self) -> list[nn.Parameter]:
        """Everything of the encoder but the CNN feature extractor (frozen in fine-tuning, as fairseq's
        ``feature_grad_mult=0``)."""
        cnn = {id(p) for p in self.model.wav2vec2.feature_extractor.parameters()}
        return [p for p in self.model.wav2vec2.parameters() if id(p) not in cnn]

    def set_finetune_masking(self, masking: FinetuneMasking | None) -> bool:
        """In training mode, mask spans of the projected front-end features with the pre-trained mask embedding,
        and bands of channels with zeros (fairseq's fine-tuning masks). The generator is not a submodule,
        so the state dict (and the fingerprint) stay those of the model."""
        generator = None
        if masking is not None:
            generator = components.MaskGenerator(
                self.config.embed_dim, masking.time_start_prob * masking.time_span, "static", 0.0, masking.time_span,
                False, 1, masking.channel_prob * masking.channel_span, "static", 0.0, masking.channel_span, False, 1)
            generator.mask_embedding = self.mask_embedding
        self.__dict__["_finetune_mask"] = generator
        return True

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        feats, lengths = self.input_features(wavs, wav_lengths)
        x, attention_mask, valid = self._encoder_input(feats, lengths)
        finetune_mask = self.__dict__.get("_finetune_mask")
        if self.training and finetune_mask is not None:
            x, _ = finetune_mask(x, ~valid)
        keep = valid[:, :, None].to(x.dtype)
        return UpstreamOutput([h * keep for h in self.transformer_states(x, attention_mask)], lengths)
