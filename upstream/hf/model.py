"""The ``transformers`` waveform encoders behind the upstream contract: :class:`HFUpstream`.

wav2vec 2.0 (XLS-R, and the encoder of ``*ForCTC`` / ``*ForPreTraining`` checkpoints), HuBERT
(DistilHuBERT-style shallow models too), WavLM, Data2VecAudio, UniSpeech, UniSpeechSat and
Wav2Vec2-Conformer; Whisper's encoder, which takes log-mel features, is the subclass
:class:`upstream.hf.whisper.WhisperUpstream`. See :mod:`upstream.hf` for hidden states, preprocessing,
frame counts and batch independence.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, logging as hf_logging

from core.tensors import lengths_to_mask

from ..base import FinetuneMasking, Upstream, UpstreamOutput
from ..interop.s3prl_checkpoint import checkpoint_error

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WAVEFORM_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                     "wav2vec2-conformer")
"""``model_type`` values of the waveform encoders :class:`HFUpstream` takes."""
PADDING_SAFE = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")
"""Families whose LayerNorm-CNN models give an utterance the same states in any batch (attention mask given);
Data2VecAudio's stacked position convolutions and the Conformer's convolution module see padded frames."""
NORMALIZE_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor``'s epsilon in waveform normalisation."""
FAMILIES = WAVEFORM_FAMILIES + ("whisper",)
"""Every ``model_type`` the ``hf`` upstream takes (Whisper is the one log-mel family)."""
_UNUSED_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype")
"""Config entries that do not change the network (left out of the settings and the fingerprint)."""
WEIGHT_FILES = (("model.safetensors.index.json", "model.safetensors"),
                ("pytorch_model.bin.index.json", "pytorch_model.bin"))
"""(index of shards, single file) of each full-precision weight format, in order of preference."""


class HFUpstream(Upstream):
    """A ``transformers`` speech encoder (``model``) with its preprocessing.

    Args:
        config: the model's config as a dict (``model_type`` one of the class's :attr:`families`).
        preprocessing: ``{"do_normalize": bool}`` (and optionally ``normalize_eps``, ``sampling_rate``)
            for waveform models; the subclass :class:`upstream.hf.whisper.WhisperUpstream` takes the
            ``WhisperFeatureExtractor`` settings.
    """

    name = "hf"
    families: tuple[str, ...] = WAVEFORM_FAMILIES

    def __init__(self, config: dict, preprocessing: dict | None = None):
        super().__init__()
        config = {k: v for k, v in config.items() if k not in _UNUSED_CONFIG_KEYS}
        model_type = config.get("model_type")
        if model_type not in self.families:
            raise ValueError(f"Hugging Face model_type {model_type!r} is not a speech encoder {type(self).__name__} "
                             f"takes; supported: {', '.join(self.families)}")
        self._settings = {"config": config, "preprocessing": dict(preprocessing or {})}
        hf_config = AutoConfig.for_model(**config)
        # transformers 5 records hidden states per layer run: LayerDrop in training mode (fine-tuning)
        # would change how many states a batch has, so it is off.
        hf_config.encoder_layerdrop = hf_config.layerdrop = 0.0
        self.family = model_type
        rate = self._build(hf_config)
        if rate != SAMPLE_RATE:
            raise ValueError(f"this {model_type} model expects {rate} Hz audio; the toolkit gives every upstream "
                             f"{SAMPLE_RATE} Hz and does not resample for it")

    def _build(self, hf_config) -> int:
        """Make ``self.model`` from the ``transformers`` config and set the contract's sizes; returns the
        sampling rate the model expects."""
        if getattr(hf_config, "add_adapter", False):
            raise ValueError("a model with an adapter (add_adapter: its last states at a lower frame rate "
                             "than the others) is not supported")
        self.model = AutoModel.from_config(hf_config)
        self.downsample_rate = math.prod(hf_config.conv_stride)
        self.per_utterance = (self.family not in PADDING_SAFE
                              or getattr(hf_config, "feat_extract_norm", "layer") == "group")
        # Hugging Face masks spans itself in training mode when the config asks for it; fine-tuning
        # masking is set explicitly here (set_finetune_masking), so it starts off.
        hf_config.mask_time_prob = 0.0
        hf_config.mask_feature_prob = 0.0
        self.hidden_size = hf_config.hidden_size
        self.num_layers = hf_config.num_hidden_layers + 1
        return self._settings["preprocessing"].get("sampling_rate", SAMPLE_RATE)

    def settings(self) -> dict:
        return self._settings

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one frame."""
        n = 1
        for kernel, stride in zip(reversed(self.model.config.conv_kernel), reversed(self.model.config.conv_stride),
                                  strict=True):
            n = (n - 1) * stride + kernel
        return n

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.model._get_feat_extract_output_lengths(num_samples), min=0)

    def finetune_parameters(self) -> list[nn.Parameter]:
        """Everything but the waveform CNN, frozen with Hugging Face's ``freeze_feature_encoder`` (no
        gradient reaches it at all)."""
        self.model.freeze_feature_encoder()
        frozen = {id(p) for p in self.model.feature_extractor.parameters()}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    def set_finetune_masking(self, masking: FinetuneMasking | None) -> bool:
        """Hugging Face's own SpecAugment (``mask_time_prob`` = start probability x span, as fairseq's
        ``mask_prob``) with the model's learnt mask embedding; False for models without one."""
        if getattr(self.model, "masked_spec_embed", None) is None:
            return False
        cfg = self.model.config
        cfg.mask_time_prob = masking.time_start_prob * masking.time_span if masking else 0.0
        cfg.mask_feature_prob = masking.channel_prob * masking.channel_span if masking else 0.0
        if masking:
            cfg.apply_spec_augment = True
            cfg.mask_time_length, cfg.mask_feature_length = masking.time_span, masking.channel_span
            cfg.mask_time_min_masks = cfg.mask_feature_min_masks = 0
        return True

    def _check_lengths(self, wav_lengths: torch.Tensor) -> None:
        shortest = int(wav_lengths.min())
        if shortest < self.min_samples:
            raise ValueError(f"an utterance has {shortest} samples; this {self.family} model needs at least "
                             f"{self.min_samples}")

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        self._check_lengths(wav_lengths)
        lengths = self.num_frames(wav_lengths)
        states = self._states(wavs, wav_lengths)
        frames = int(lengths.max())
        keep = lengths_to_mask(lengths.to(wavs.device), frames)[:, :, None]
        return UpstreamOutput([h[:, :frames] * keep.to(h.dtype) for h in states], lengths)

    def _states(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state of a padded batch (B, T', D each, T' >= the longest utterance's frames), the
        waveforms normalised first when the preprocessing says ``do_normalize``."""
        pre = self._settings["preprocessing"]
        if pre.get("do_normalize", False):
            wavs = normalize_waveforms(wavs, wav_lengths, pre.get("normalize_eps", NORMALIZE_EPS))
        if self.per_utterance:
            per_utt = [encoder_states(self.model(w[None, :n], output_hidden_states=True))
                       for w, n in zip(wavs, wav_lengths.tolist(), strict=True)]
            return [nn.utils.rnn.pad_sequence([u[i][0] for u in per_utt], batch_first=True)
                    for i in range(self.num_layers)]
        mask = lengths_to_mask(wav_lengths.to(wavs.device), wavs.shape[1])
        return encoder_states(self.model(wavs, attention_mask=mask.long(), output_hidden_states=True))

    # -- a save_pretrained folder -------------------------------------------------------------------
    @classmethod
    def folder_preprocessing(cls, folder: Path, config, pre: dict) -> dict:
        """The preprocessing settings of ``folder`` from its ``preprocessor_config.json`` (``pre``; without
        one: no normalisation, as the HuBERT upstream reads such folders, and 16 kHz)."""
        return {"do_normalize": bool(pre.get("do_normalize", False)),
                "sampling_rate": int(pre.get("sampling_rate", SAMPLE_RATE))}

    def load_folder_weights(self, folder: Path) -> None:
        """Weights of ``folder`` into ``self.model`` through ``from_pretrained`` (which knows every
        family's legacy names and head prefixes); every encoder weight must be there."""
        cls = type(self.model)
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # unused head weights (lm_head, quantizer, decoder) are expected
        hf_logging.disable_progress_bar()
        try:
            loaded, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise checkpoint_error(folder, f"cannot load the weights ({e})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        missing = sorted(info["missing_keys"])
        if missing or info.get("mismatched_keys"):
            raise checkpoint_error(folder, f"weights do not fit config.json: missing {missing[:5]}, "
                                           f"mismatched {sorted(info.get('mismatched_keys') or [])[:5]}")
        try:
            self.model.load_state_dict(loaded.state_dict(), strict=False)  # masked_spec_embed: where the config has it
        except RuntimeError as e:
            raise checkpoint_error(folder, f"weights do not fit config.json ({e})") from None
        if info["unexpected_keys"]:
            log.info("%s: %d weights outside the encoder left unused (e.g. %s)", folder, len(info["unexpected_keys"]),
                     sorted(info["unexpected_keys"])[0])


def encoder_states(output) -> list[torch.Tensor]:
    """A model output's hidden states with the encoder's output (``last_hidden_state``) as the last one."""
    return [*output.hidden_states[:-1], output.last_hidden_state]


def normalize_waveforms(wavs: torch.Tensor, wav_lengths: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Each (B, S) waveform to zero mean and unit variance over its valid samples, padding zero:
    ``(w - mean) / sqrt(var + eps)`` with the population variance (``Wav2Vec2FeatureExtractor``'s
    ``do_normalize`` with eps 1e-7; fairseq's task ``normalize``, a layer norm, with 1e-5)."""
    out = torch.zeros_like(wavs)
    for b, n in enumerate(wav_lengths.tolist()):
        w = wavs[b, :n]
        out[b, :n] = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + eps)
    return out


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds full-precision weights (a single file or the index of shards)."""
    return any((folder / name).is_file() for pair in WEIGHT_FILES for name in pair)


def weight_files(folder: Path) -> list[Path]:
    """The files of a folder's one set of full weights: the shards its index names, or the single file
    (safetensors before bin), never other variants lying beside them."""
    for index, single in WEIGHT_FILES:
        if (folder / index).is_file():
            return [folder / f for f in sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))]
        if (folder / single).is_file():
            return [folder / single]
    return []
