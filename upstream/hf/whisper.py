"""Whisper's encoder behind the upstream contract: :class:`WhisperUpstream`, the ``hf`` upstream's one
log-mel family.

Whisper's own ``WhisperFeatureExtractor`` computes the log-mel features; every utterance is padded alone
to the fixed 30-s window (the feature extractor's own padding) and keeps the input's own frames,
``(ceil(S / 160) - 1) // 2 + 1``; longer inputs are refused. Fine-tuning leaves the fixed sinusoidal
position table alone, and Whisper has no mask embedding for fine-tuning masks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..base import FinetuneMasking
from ..interop.s3prl_checkpoint import checkpoint_error
from .model import SAMPLE_RATE, HFUpstream, encoder_states, weight_files

_UNUSED_FEATURE_KEYS = ("feature_extractor_type", "processor_class", "n_samples", "nb_max_frames")
"""Feature-extractor entries that are not settings (derived, or names of classes)."""


class WhisperUpstream(HFUpstream):
    """Whisper's encoder (``model``, a ``WhisperEncoder``) with its ``feature_extractor``.

    Args:
        config: the Whisper model's config as a dict (``model_type: whisper``; the decoder's entries are unused).
        preprocessing: the ``WhisperFeatureExtractor`` settings (its ``to_dict()``); empty: its defaults.
    """

    families = ("whisper",)

    def _build(self, hf_config) -> int:
        self.model = WhisperEncoder(hf_config)
        fe = {k: v for k, v in self._settings["preprocessing"].items() if k != "feature_extractor_type"}
        self.feature_extractor = WhisperFeatureExtractor(**fe)
        self.mel_frames = hf_config.max_source_positions * self.model.conv1.stride[0] * self.model.conv2.stride[0]
        if self.feature_extractor.nb_max_frames != self.mel_frames:
            raise ValueError(f"Whisper feature extractor gives {self.feature_extractor.nb_max_frames} frames, "
                             f"the encoder takes {self.mel_frames}")
        self.downsample_rate = self.feature_extractor.hop_length * self.model.conv2.stride[0]
        self.hidden_size = hf_config.d_model
        self.num_layers = hf_config.encoder_layers + 1
        return self.feature_extractor.sampling_rate

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one frame."""
        return 1

    @property
    def max_samples(self) -> int:
        """Longest input: Whisper's window."""
        return self.feature_extractor.n_samples

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        mel = torch.div(num_samples + self.feature_extractor.hop_length - 1, self.feature_extractor.hop_length,
                        rounding_mode="floor")
        return self.model._get_feat_extract_output_lengths(mel)

    def finetune_parameters(self) -> list[nn.Parameter]:
        """Everything but Whisper's fixed sinusoidal position table."""
        frozen = {id(self.model.embed_positions.weight)}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    def set_finetune_masking(self, masking: FinetuneMasking | None) -> bool:
        """False: Whisper's encoder has no learnt mask embedding."""
        return False

    def _check_lengths(self, wav_lengths: torch.Tensor) -> None:
        super()._check_lengths(wav_lengths)
        longest = int(wav_lengths.max())
        if longest > self.max_samples:
            raise ValueError(f"an utterance has {longest} samples ({longest / SAMPLE_RATE:.1f} s); Whisper's encoder "
                             f"takes at most {self.max_samples} ({self.max_samples / SAMPLE_RATE:.0f} s)")

    def _states(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Log-mel features of each utterance padded alone to Whisper's window, encoded as one batch."""
        arrays = [w[:n].detach().float().cpu().numpy() for w, n in zip(wavs, wav_lengths.tolist(), strict=True)]
        device = "cuda" if wavs.is_cuda else "cpu"  # the feature extractor's torch STFT runs where the audio is
        feats = self.feature_extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                       device=device).input_features
        return encoder_states(self.model(feats.to(wavs.device, next(self.model.parameters()).dtype),
                                         output_hidden_states=True))

    # -- a save_pretrained folder -------------------------------------------------------------------
    @classmethod
    def folder_preprocessing(cls, folder: Path, config, pre: dict) -> dict:
        """The folder's ``WhisperFeatureExtractor`` settings (without a ``preprocessor_config.json`` (``pre``
        empty): its defaults at the config's number of mel channels)."""
        fe = (WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True) if pre
              else WhisperFeatureExtractor(feature_size=config.num_mel_bins))
        return {k: v for k, v in fe.to_dict().items() if k not in _UNUSED_FEATURE_KEYS}

    def load_folder_weights(self, folder: Path) -> None:
        """The encoder's weights of a Whisper folder (``WhisperModel``: ``encoder.``;
        ``WhisperForConditionalGeneration``: ``model.encoder.``), read tensor by tensor without the decoder's."""
        files = weight_files(folder)
        if not files:
            raise checkpoint_error(folder, "no model.safetensors or pytorch_model.bin weights (or their index)")
        state = {}
        try:
            for f in files:
                state.update(_encoder_tensors(f))
        except Exception as e:  # noqa: BLE001  (any failure to read becomes the one error naming the file)
            raise checkpoint_error(f, f"cannot read the weights ({type(e).__name__}: {e})") from None
        prefix = next((p for p in ("model.encoder.", "encoder.") if any(k.startswith(p) for k in state)), None)
        if prefix is None:
            raise checkpoint_error(folder, "no Whisper encoder weights (model.encoder.* or encoder.*)")
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as e:
            raise checkpoint_error(folder, f"weights do not fit config.json ({e})") from None
        if missing or unexpected:
            raise checkpoint_error(folder, f"weights do not fit config.json: missing {missing[:5]}, "
                                           f"unexpected {unexpected[:5]}")


def _encoder_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file whose names have an ``encoder`` component."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as reader:
            return {k: reader.get_tensor(k) for k in reader.keys() if ".encoder." in f".{k}"}
    return {k: v for k, v in torch.load(path, map_location="cpu", weights_only=True).items() if ".encoder." in f".{k}"}
