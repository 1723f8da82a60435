"""Where ``hf`` upstreams come from: the registry's two entries, :func:`build_hf` (a random model from a config
or a preset) and :func:`load_hf` (a folder, a model id or a fairseq-format file); both pick the class of the
config's ``model_type`` (:func:`upstream_class`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig

from ..interop.s3prl_checkpoint import checkpoint_error
from .fairseq import load_fairseq_wav2vec2
from .hub import resolve_model
from .model import FAMILIES, HFUpstream
from .whisper import WhisperUpstream

log = logging.getLogger(__name__)

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


def upstream_class(model_type: str | None) -> type[HFUpstream]:
    """The upstream class of a ``transformers`` ``model_type``: :class:`WhisperUpstream` for Whisper,
    :class:`HFUpstream` for the waveform families.

    Raises:
        ValueError: a ``model_type`` outside :data:`upstream.hf.model.FAMILIES`.
    """
    if model_type not in FAMILIES:
        raise ValueError(f"Hugging Face model_type {model_type!r} is not a speech encoder this upstream takes; "
                         f"supported: {', '.join(FAMILIES)}")
    return WhisperUpstream if model_type in WhisperUpstream.families else HFUpstream


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
        spec = dict(PRESETS[preset])
        config = AutoConfig.for_model(spec.pop("model_type"), **spec).to_dict()
    if not config:
        raise ValueError("upstream 'hf' needs a model: -k FOLDER, a Hugging Face model id or a fairseq "
                         "wav2vec 2.0 / WavLM checkpoint, or a random one: -o upstream.preset="
                         + "|".join(PRESETS))
    return upstream_class(config.get("model_type"))(config, preprocessing)


def load_hf(ref: str | Path) -> HFUpstream:
    """The model at ``ref``: a Hugging Face folder, a model id (:func:`upstream.hf.hub.resolve_model`), or a
    fairseq / S3PRL wav2vec 2.0 or WavLM checkpoint file (:mod:`upstream.hf.fairseq`)."""
    path = resolve_model(ref)
    if path.is_file():
        return load_fairseq_wav2vec2(path)
    return load_hf_folder(path)


def load_hf_folder(folder: Path) -> HFUpstream:
    """A ``save_pretrained`` folder of a supported family (base model or one with heads: the encoder is used)."""
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
    cls = upstream_class(config.model_type)
    preprocessing = cls.folder_preprocessing(folder, config, pre)
    try:
        upstream = cls(config.to_dict(), preprocessing)
    except ValueError as e:
        raise checkpoint_error(folder, str(e)) from None
    upstream.load_folder_weights(folder)
    return upstream
