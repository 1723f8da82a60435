"""Speech encoders that ``transformers`` implements, behind the upstream contract (``-u hf``).

One upstream for the published families people compare: Wav2Vec2 (XLS-R, and the encoder of
``*ForCTC`` / ``*ForPreTraining`` checkpoints), HuBERT (DistilHuBERT-style shallow models too),
WavLM, Data2VecAudio, UniSpeech, UniSpeechSat, Wav2Vec2-Conformer and Whisper's encoder. The
network is the ``transformers`` model itself; what this module adds:

* **Hidden states** as the model defines them: ``output_hidden_states`` (the Transformer input,
  then every layer) with the last one the encoder's output, after the final layer norm of pre-LN
  models (Large, XLS-R, Whisper), as S3PRL and transformers 4 give them (transformers 5 lists the
  last layer before that norm); zero past each utterance's frames.
* **Input preprocessing from the checkpoint's feature-extractor config**
  (``preprocessor_config.json``): per-utterance zero-mean unit-variance normalisation over the valid
  samples when ``do_normalize`` is set, exactly as ``Wav2Vec2FeatureExtractor``; Whisper's log-mel
  features from its own ``WhisperFeatureExtractor``. A model that expects another sampling rate
  than 16 kHz is refused.
* **Exact frame counts** from the model's own length formula (``_get_feat_extract_output_lengths``).
* **Batch independence.** Models whose CNN starts with a GroupNorm (``feat_extract_norm: group``:
  wav2vec 2.0 Base, HuBERT Base, WavLM Base, DistilHuBERT ...) normalise each channel over the whole
  padded input, and Hugging Face's own guidance is to give them no attention mask; their outputs then
  depend on how much padding the batch adds. Data2VecAudio's stacked position convolutions and the
  Conformer's convolution module also mix padded frames into valid ones. These models run one
  utterance at a time here. The others (wav2vec 2.0, HuBERT, WavLM, UniSpeech(-SAT) with a per-frame
  LayerNorm CNN: Large models, XLS-R) run as a batch with an attention mask; Hugging Face zeroes
  padded frames before their one position convolution, so the states equal the single utterance's.
  Whisper pads every utterance to its fixed 30-s window alone (its feature extractor's own padding)
  and keeps the input's own frames: ``(ceil(S / 160) - 1) // 2 + 1``; longer inputs are refused.

Where a model comes from (:func:`load_hf`): a Hugging Face folder (``config.json`` with
``model.safetensors`` or ``pytorch_model.bin``), a model id resolved from the local Hugging Face
cache first (:func:`resolve_model`), or a fairseq / S3PRL wav2vec 2.0 or WavLM checkpoint file
(:mod:`upstream.interop.fairseq_wav2vec2`). The upstream's settings are the model config and the
preprocessing, so :func:`upstream.registry.save_upstream` and ``build_upstream("hf", **settings)``
round-trip it (and give its random-weights twin).
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import torch
from torch import nn

from .base import FinetuneMasking, Upstream, UpstreamOutput

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WAVEFORM_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                     "wav2vec2-conformer")
"""``model_type`` values of the waveform encoders this upstream takes (Whisper is the one log-mel family)."""
PADDING_SAFE = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")
"""Families whose LayerNorm-CNN models give an utterance the same states in any batch (attention mask given);
Data2VecAudio's stacked position convolutions and the Conformer's convolution module see padded frames."""
NORMALIZE_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor``'s epsilon in waveform normalisation."""
FAMILIES = WAVEFORM_FAMILIES + ("whisper",)
HUB_CONFIGS = ["config.json", "preprocessor_config.json"]
HUB_WEIGHTS = (["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"],
               ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"])
"""What a model id fetches from the hub: its configs and one format of full-precision weights (safetensors
where the repository has them), nothing else."""
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``namespace/name``: what is tried as a model id when no file or folder of that name exists."""
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json")
_UNUSED_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype")
"""Config entries that do not change the network (left out of the settings and the fingerprint)."""


class HFUpstream(Upstream):
    """A ``transformers`` speech encoder (``model``) with its preprocessing.

    Args:
        config: the model's config as a dict (``model_type`` one of :data:`FAMILIES`).
        preprocessing: ``{"do_normalize": bool}`` for waveform models; for Whisper, the
            ``WhisperFeatureExtractor`` settings (its ``to_dict()``).
    """

    name = "hf"

    def __init__(self, config: dict, preprocessing: dict | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel  # noqa: PLC0415  (loaded when this upstream is used)

        config = {k: v for k, v in config.items() if k not in _UNUSED_CONFIG_KEYS}
        model_type = config.get("model_type")
        if model_type not in FAMILIES:
            raise ValueError(f"Hugging Face model_type {model_type!r} is not a speech encoder this upstream takes; "
                             f"supported: {', '.join(FAMILIES)}")
        self._settings = {"config": config, "preprocessing": dict(preprocessing or {})}
        hf_config = AutoConfig.for_model(**config)
        # transformers 5 records hidden states per layer run: LayerDrop in training mode (fine-tuning)
        # would change how many states a batch has, so it is off.
        hf_config.encoder_layerdrop = hf_config.layerdrop = 0.0
        self.family = model_type
        if model_type == "whisper":
            from transformers import WhisperFeatureExtractor  # noqa: PLC0415  (Whisper only)
            from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: PLC0415  (Whisper only)

            self.model = WhisperEncoder(hf_config)
            fe = {k: v for k, v in self._settings["preprocessing"].items() if k != "feature_extractor_type"}
            self.feature_extractor = WhisperFeatureExtractor(**fe)
            rate = self.feature_extractor.sampling_rate
            self.mel_frames = hf_config.max_source_positions * self.model.conv1.stride[0] * self.model.conv2.stride[0]
            if self.feature_extractor.nb_max_frames != self.mel_frames:
                raise ValueError(f"Whisper feature extractor gives {self.feature_extractor.nb_max_frames} frames, "
                                 f"the encoder takes {self.mel_frames}")
            self.downsample_rate = self.feature_extractor.hop_length * self.model.conv2.stride[0]
            self.per_utterance = False
        else:
            if getattr(hf_config, "add_adapter", False):
                raise ValueError("a model with an adapter (add_adapter: its last states at a lower frame rate "
                                 "than the others) is not supported")
            self.model = AutoModel.from_config(hf_config)
            rate = self._settings["preprocessing"].get("sampling_rate", SAMPLE_RATE)
            self.downsample_rate = math.prod(hf_config.conv_stride)
            self.per_utterance = (model_type not in PADDING_SAFE
                                  or getattr(hf_config, "feat_extract_norm", "layer") == "group")
            # Hugging Face masks spans itself in training mode when the config asks for it; fine-tuning
            # masking is set explicitly here (set_finetune_masking), so it starts off.
            hf_config.mask_time_prob = 0.0
            hf_config.mask_feature_prob = 0.0
        if rate != SAMPLE_RATE:
            raise ValueError(f"this {model_type} model expects {rate} Hz audio; the toolkit gives every upstream "
                             f"{SAMPLE_RATE} Hz and does not resample for it")
        self.hidden_size = hf_config.d_model if model_type == "whisper" else hf_config.hidden_size
        layers = hf_config.encoder_layers if model_type == "whisper" else hf_config.num_hidden_layers
        self.num_layers = layers + 1

    def settings(self) -> dict:
        return self._settings

    @property
    def min_samples(self) -> int:
        """Shortest input that gives one frame."""
        if self.family == "whisper":
            return 1
        n = 1
        for kernel, stride in zip(reversed(self.model.config.conv_kernel), reversed(self.model.config.conv_stride),
                                  strict=True):
            n = (n - 1) * stride + kernel
        return n

    @property
    def max_samples(self) -> int | None:
        """Longest input (Whisper's window), or None."""
        return self.feature_extractor.n_samples if self.family == "whisper" else None

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        if self.family == "whisper":
            mel = torch.div(num_samples + self.feature_extractor.hop_length - 1, self.feature_extractor.hop_length,
                            rounding_mode="floor")
            return self.model._get_feat_extract_output_lengths(mel)
        return torch.clamp(self.model._get_feat_extract_output_lengths(num_samples), min=0)

    def finetune_parameters(self) -> list[nn.Parameter]:
        """Everything but the waveform CNN, frozen with Hugging Face's ``freeze_feature_encoder`` (no
        gradient reaches it at all), and Whisper's fixed sinusoidal position table."""
        frozen = set()
        if self.family == "whisper":
            frozen = {id(self.model.embed_positions.weight)}
        else:
            self.model.freeze_feature_encoder()
            frozen = {id(p) for p in self.model.feature_extractor.parameters()}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    def set_finetune_masking(self, masking: FinetuneMasking | None) -> bool:
        """Hugging Face's own SpecAugment (``mask_time_prob`` = start probability x span, as fairseq's
        ``mask_prob``) with the model's learnt mask embedding; False for models without one (Whisper)."""
        if self.family == "whisper" or getattr(self.model, "masked_spec_embed", None) is None:
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
        shortest, longest = int(wav_lengths.min()), int(wav_lengths.max())
        if shortest < self.min_samples:
            raise ValueError(f"an utterance has {shortest} samples; this {self.family} model needs at least "
                             f"{self.min_samples}")
        if self.max_samples is not None and longest > self.max_samples:
            raise ValueError(f"an utterance has {longest} samples ({longest / SAMPLE_RATE:.1f} s); Whisper's encoder "
                             f"takes at most {self.max_samples} ({self.max_samples / SAMPLE_RATE:.0f} s)")

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        self._check_lengths(wav_lengths)
        lengths = self.num_frames(wav_lengths)
        if self.family == "whisper":
            states = self._whisper_states(wavs, wav_lengths)
        else:
            pre = self._settings["preprocessing"]
            if pre.get("do_normalize", False):
                wavs = normalize_waveforms(wavs, wav_lengths, pre.get("normalize_eps", NORMALIZE_EPS))
            if self.per_utterance:
                per_utt = [encoder_states(self.model(w[None, :n], output_hidden_states=True))
                           for w, n in zip(wavs, wav_lengths.tolist(), strict=True)]
                states = [nn.utils.rnn.pad_sequence([u[i][0] for u in per_utt], batch_first=True)
                          for i in range(self.num_layers)]
            else:
                mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < wav_lengths[:, None]
                states = encoder_states(self.model(wavs, attention_mask=mask.long(), output_hidden_states=True))
        frames = int(lengths.max())
        keep = (torch.arange(frames, device=wavs.device)[None, :] < lengths[:, None])[:, :, None]
        return UpstreamOutput([h[:, :frames] * keep.to(h.dtype) for h in states], lengths)

    def _whisper_states(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Log-mel features of each utterance padded alone to Whisper's window, encoded as one batch."""
        arrays = [w[:n].detach().float().cpu().numpy() for w, n in zip(wavs, wav_lengths.tolist(), strict=True)]
        device = "cuda" if wavs.is_cuda else "cpu"  # the feature extractor's torch STFT runs where the audio is
        feats = self.feature_extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                       device=device).input_features
        return encoder_states(self.model(feats.to(wavs.device, next(self.model.parameters()).dtype),
                                         output_hidden_states=True))


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


_TINY = dict(conv_dim=[128] * 7, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16)
PRESETS: dict[str, dict] = {
    # The published Base shapes (transformers' defaults: 12 x 768, GroupNorm CNN, 20-ms frames).
    "wav2vec2-base": dict(model_type="wav2vec2"),
    "wavlm-base": dict(model_type="wavlm"),
    "hubert-base": dict(model_type="hubert"),
    # The Base CNN geometry at 128 channels and a 4 x 256 Transformer (about 3.6 M parameters), for
    # random-weight runs and tests on 2 CPU cores.
    "wav2vec2-tiny": dict(model_type="wav2vec2", **_TINY),
    "wavlm-tiny": dict(model_type="wavlm", **_TINY),
}
"""Configs of randomly initialised models (``-u hf -o upstream.preset=NAME``), as Hugging Face config entries."""


def build_hf(config: dict | None = None, preprocessing: dict | None = None, preset: str | None = None) -> HFUpstream:
    """A randomly initialised model: a config dict (the settings of a saved ``hf`` upstream) or a :data:`PRESETS` name.

    Raises:
        ValueError: neither (a model comes from ``-k FOLDER_OR_ID`` instead), both, or an unsupported config.
    """
    if preset is not None:
        if config:
            raise ValueError("upstream 'hf': give a preset or a config, not both")
        if preset not in PRESETS:
            raise ValueError(f"unknown hf preset {preset!r}; available: {', '.join(PRESETS)}")
        from transformers import AutoConfig  # noqa: PLC0415  (loaded when this upstream is used)

        spec = dict(PRESETS[preset])
        config = AutoConfig.for_model(spec.pop("model_type"), **spec).to_dict()
    if not config:
        raise ValueError("upstream 'hf' needs a model: -k FOLDER, a Hugging Face model id or a fairseq "
                         "wav2vec 2.0 / WavLM checkpoint, or a random one: -o upstream.preset="
                         + "|".join(PRESETS))
    return HFUpstream(config, preprocessing)


# -- where models come from ------------------------------------------------------------------------
def resolve_model(ref: str | Path) -> Path:
    """A folder or file path as it is; a Hugging Face model id as its folder in the local cache.

    An id not in the cache is downloaded (configs and weights only) unless the hub is offline
    (``HF_HUB_OFFLINE=1``); when that fails, or offline, the error names the id, the cache folder and
    how to bring the model over from a machine that has the network.

    Raises:
        FileNotFoundError: a path that does not exist, or an id that cannot be had.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path
    ref = str(ref)
    if not _MODEL_ID.match(ref) or ref.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"upstream checkpoint not found: {ref}")
    from huggingface_hub import constants, snapshot_download  # noqa: PLC0415  (model ids only)
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415  (model ids only)

    cache = constants.HF_HUB_CACHE
    try:
        folder = Path(snapshot_download(ref, cache_dir=cache, local_files_only=True))
        if (folder / "config.json").is_file() and _has_weights(folder):
            return folder
    except LocalEntryNotFoundError:
        pass
    advice = (f"On a machine with the network run `huggingface-cli download {ref}` (or `python -c \"from "
              f"huggingface_hub import snapshot_download; snapshot_download('{ref}')\"`) and copy its cache folder "
              f"models--{ref.replace('/', '--')} into {cache}, or pass the model's folder as -k")
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"Hugging Face model {ref!r} is not in the local cache {cache} and the hub is offline "
                                f"(HF_HUB_OFFLINE). {advice}") from None
    try:
        for weights in HUB_WEIGHTS:
            folder = Path(snapshot_download(ref, cache_dir=cache, allow_patterns=HUB_CONFIGS + weights))
            if _has_weights(folder):
                return folder
        raise FileNotFoundError("the repository has no model.safetensors or pytorch_model.bin weights")
    except Exception as e:  # noqa: BLE001  (any failure to fetch becomes the one error naming the id)
        raise FileNotFoundError(f"Hugging Face model {ref!r} is not in the local cache {cache} and could not be "
                                f"downloaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                                f"{advice}") from None


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json",
                                                      "pytorch_model.bin", "pytorch_model.bin.index.json"))


def _weight_files(folder: Path) -> list[Path]:
    """The files of a folder's one set of full weights: the shards its index names, or the single file
    (safetensors before bin), never other variants lying beside them."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index).is_file():
            return [folder / f for f in sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))]
        if (folder / single).is_file():
            return [folder / single]
    return []


def load_hf(ref: str | Path) -> HFUpstream:
    """The model at ``ref``: a Hugging Face folder, a model id (:func:`resolve_model`), or a fairseq /
    S3PRL wav2vec 2.0 or WavLM checkpoint file."""
    path = resolve_model(ref)
    if path.is_file():
        from .interop.fairseq_wav2vec2 import load_fairseq_wav2vec2  # noqa: PLC0415  (fairseq files only)

        return load_fairseq_wav2vec2(path)
    return load_hf_folder(path)


def load_hf_folder(folder: Path) -> HFUpstream:
    """A ``save_pretrained`` folder of a supported family (base model or one with heads: the encoder is used)."""
    from transformers import AutoConfig  # noqa: PLC0415  (loaded when this upstream is used)

    from .interop.s3prl_checkpoint import checkpoint_error  # noqa: PLC0415  (errors naming the folder)

    if not (folder / "config.json").is_file():
        raise checkpoint_error(folder, "no config.json (not a Hugging Face model folder)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise checkpoint_error(folder, f"cannot read config.json ({e})") from None
    if config.model_type not in FAMILIES:
        raise checkpoint_error(folder, f"config.json describes a {config.model_type!r} model; this upstream takes "
                                       f"{', '.join(FAMILIES)}")
    pre_file = folder / "preprocessor_config.json"
    try:
        pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise checkpoint_error(folder, f"cannot read preprocessor_config.json ({e})") from None
    if not pre:
        log.warning("%s: no preprocessor_config.json; using the feature extractor's defaults", folder)
    if config.model_type == "whisper":
        from transformers import WhisperFeatureExtractor  # noqa: PLC0415  (Whisper only)

        fe = (WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True) if pre
              else WhisperFeatureExtractor(feature_size=config.num_mel_bins))
        preprocessing = {k: v for k, v in fe.to_dict().items()
                         if k not in ("feature_extractor_type", "processor_class", "n_samples", "nb_max_frames")}
    else:  # without a config: no normalisation (as the HuBERT upstream reads such folders), 16 kHz
        preprocessing = {"do_normalize": bool(pre.get("do_normalize", False)),
                         "sampling_rate": int(pre.get("sampling_rate", SAMPLE_RATE))}
    try:
        upstream = HFUpstream(config.to_dict(), preprocessing)
    except ValueError as e:
        raise checkpoint_error(folder, str(e)) from None
    _load_weights(upstream, folder)
    return upstream


def _load_weights(upstream: HFUpstream, folder: Path) -> None:
    """Weights of ``folder`` into ``upstream.model`` through ``from_pretrained`` (which knows every
    family's legacy names and head prefixes); every encoder weight must be there."""
    from transformers import logging as hf_logging  # noqa: PLC0415  (loaded when this upstream is used)

    from .interop.s3prl_checkpoint import checkpoint_error  # noqa: PLC0415  (errors naming the folder)

    if upstream.family == "whisper":
        _load_whisper_encoder(upstream, folder)
        return
    cls = type(upstream.model)
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
        upstream.model.load_state_dict(loaded.state_dict(), strict=False)  # masked_spec_embed: where the config has it
    except RuntimeError as e:
        raise checkpoint_error(folder, f"weights do not fit config.json ({e})") from None
    if info["unexpected_keys"]:
        log.info("%s: %d weights outside the encoder left unused (e.g. %s)", folder, len(info["unexpected_keys"]),
                 sorted(info["unexpected_keys"])[0])


def _load_whisper_encoder(upstream: HFUpstream, folder: Path) -> None:
    """The encoder's weights of a Whisper folder (``WhisperModel``: ``encoder.``; ``WhisperForConditionalGeneration``:
    ``model.encoder.``), read tensor by tensor without the decoder's."""
    from .interop.s3prl_checkpoint import checkpoint_error  # noqa: PLC0415  (errors naming the folder)

    files = _weight_files(folder)
    if not files:
        raise checkpoint_error(folder, "no model.safetensors or pytorch_model.bin weights (or their index)")
    state = {}
    try:
        for f in files:
            if f.suffix == ".safetensors":
                from safetensors import safe_open  # noqa: PLC0415  (safetensors folders only)

                with safe_open(str(f), framework="pt") as reader:
                    state.update({k: reader.get_tensor(k) for k in reader.keys() if ".encoder." in f".{k}"})
            else:
                state.update({k: v for k, v in torch.load(f, map_location="cpu", weights_only=True).items()
                              if ".encoder." in f".{k}"})
    except Exception as e:  # noqa: BLE001  (any failure to read becomes the one error naming the file)
        raise checkpoint_error(f, f"cannot read the weights ({type(e).__name__}: {e})") from None
    prefix = next((p for p in ("model.encoder.", "encoder.") if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise checkpoint_error(folder, "no Whisper encoder weights (model.encoder.* or encoder.*)")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        missing, unexpected = upstream.model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise checkpoint_error(folder, f"weights do not fit config.json ({e})") from None
    if missing or unexpected:
        raise checkpoint_error(folder, f"weights do not fit config.json: missing {missing[:5]}, "
                                       f"unexpected {unexpected[:5]}")
