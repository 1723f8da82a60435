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

Subclasses set ``self.config`` (with ``extractor_mode``, ``conv_layers``, ``embed_dim``,
``layer_norm_first``, ``normalize_waveform``) and ``self.model.wav2vec2``, and name their learnt mask
embedding (:attr:`mask_embedding`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models.wav2vec2 import components

from .base import FinetuneMasking, Upstream, UpstreamOutput


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
        valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]
        return feats * valid[:, :, None], lengths

    def _encoder_input(self, feats: torch.Tensor,
                       lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project input features; (B, T, D) zero on padding, (B, 1, T, T) additive attention mask, (B, T) validity."""
        x, attention_mask = self.model.wav2vec2.encoder._preprocess(feats, lengths)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
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
