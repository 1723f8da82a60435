"""wav2vec 2.0 checkpoints people have -> :class:`upstream.wav2vec2.model.Wav2Vec2Upstream` (``-u wav2vec2 -k PATH``),
and what HuBERT's loaders share with them: reading a Hugging Face encoder folder and loading encoder weights.

* **Hugging Face folders**: a ``Wav2Vec2ForPreTraining`` folder carries the quantiser and both
  projections, so pre-training can continue from it; a ``Wav2Vec2Model`` or ``Wav2Vec2ForCTC`` folder
  gives the encoder (the pre-training heads keep their random initialisation). Encoder names map
  onto torchaudio's as for HuBERT (:data:`HF_PREFIXES`);
  transformers is not needed.
* **fairseq and S3PRL files** (:func:`upstream.interop.fairseq_checkpoint.read_fairseq_checkpoint`,
  no fairseq needed): the encoder through torchaudio's own fairseq name table, the quantiser
  (``quantizer.vars`` → ``codevectors``), ``project_q``, ``final_proj`` (→ ``project_hid``) and
  ``mask_emb``; the objective's settings from the model config (``latent_*``, ``final_dim``,
  ``num_negatives``, ``logit_temp``, the Gumbel schedule ``latent_temp``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from ..interop.fairseq_checkpoint import parse_conv_layers, read_fairseq_checkpoint
from ..interop.s3prl_checkpoint import checkpoint_error
from .encoder import TorchaudioEncoderUpstream
from .model import Wav2Vec2Upstream, build_wav2vec2

_HEADS = (("quantizer.", "quantizer."), ("project_q.", "project_q."), ("project_hid.", "project_hid."))


# -- the encoder's weights, shared with HuBERT's loaders ----------------------------------------------
def load_encoder_weights(model: TorchaudioEncoderUpstream, mapped: dict[str, torch.Tensor],
                         where: Path | None, source: str) -> None:
    """Load ``mapped`` into ``model.model``: every encoder weight (``wav2vec2.*``) must be among them and
    none of them left over (pre-training heads may be absent). Errors say that the weights do not fit
    ``source`` and name the file ``where`` (a plain ValueError without it)."""
    def error(why: str) -> ValueError:
        return checkpoint_error(where, why) if where is not None else ValueError(why)

    try:
        missing, unexpected = model.model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:
        raise error(f"weights do not fit {source} ({e})") from None
    missing = [k for k in missing if k.startswith("wav2vec2.")]
    if missing or unexpected:
        raise error(f"weights do not fit {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def renamed(state: dict[str, torch.Tensor], prefixes) -> dict[str, torch.Tensor]:
    """The entries of ``state`` whose names start with the source of a ``(source, target)`` prefix pair,
    with it replaced by the target (the first pair that matches); the others are left out."""
    out = {}
    for key, value in state.items():
        for src, dst in prefixes:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
    return out


HF_PREFIXES = (
    ("feature_extractor.", "wav2vec2.feature_extractor."),
    ("feature_projection.", "wav2vec2.encoder.feature_projection."),
    ("encoder.pos_conv_embed.", "wav2vec2.encoder.transformer.pos_conv_embed."),
    ("encoder.layer_norm.", "wav2vec2.encoder.transformer.layer_norm."),
    ("encoder.layers.", "wav2vec2.encoder.transformer.layers."),
    ("masked_spec_embed", "mask_generator.mask_embedding"),
)
"""Hugging Face encoder name prefix -> torchaudio's (under the model's ``wav2vec2.``), shared by HuBERT's and
wav2vec 2.0's folders."""


def hf_state(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face folder, without the ``prefix`` of models with heads (``hubert.`` of
    ``HubertForCTC``; ``wav2vec2.`` of ``Wav2Vec2ForPreTraining``), whose other weights are dropped."""
    if (folder / "model.safetensors").is_file():
        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise checkpoint_error(folder, "no model.safetensors or pytorch_model.bin")
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def hf_encoder_settings(folder: Path, model_type: str, name: str) -> tuple[dict, dict]:
    """(config.json, the encoder's settings in torchaudio's terms) of a Hugging Face HuBERT / wav2vec 2.0
    folder whose ``model_type`` must be ``model_type`` (``name`` in errors); errors name the folder."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise checkpoint_error(folder, f"cannot read config.json ({e})") from None
    if cfg.get("model_type") not in (None, model_type):
        raise checkpoint_error(folder, f"config.json describes a {cfg.get('model_type')!r} model, not {name}")
    if not cfg.get("feat_proj_layer_norm", True):
        raise checkpoint_error(folder, "feat_proj_layer_norm=false is not supported "
                                       "(torchaudio's projection has a layer norm)")
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("feat_extract_activation", "gelu") != "gelu":
        raise checkpoint_error(folder, "only gelu activations are supported")
    if cfg.get("conv_pos_batch_norm", False):
        raise checkpoint_error(folder, "conv_pos_batch_norm=true is not supported")
    conv = [cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"]]
    if len({len(c) for c in conv}) != 1:
        raise checkpoint_error(folder, "conv_dim, conv_kernel and conv_stride differ in length "
                                       f"({[len(c) for c in conv]})")
    normalize = False
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", False))
    settings = dict(
        extractor_mode="layer_norm" if cfg.get("feat_extract_norm", "group") == "layer" else "group_norm",
        conv_layers=[[d, k, s] for d, k, s in zip(*conv, strict=True)],
        conv_bias=bool(cfg.get("conv_bias", False)),
        embed_dim=int(cfg["hidden_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=int(cfg["num_attention_heads"]),
        ffn_dim=int(cfg["intermediate_size"]),
        layer_norm_first=bool(cfg.get("do_stable_layer_norm", False)),
        pos_conv_kernel=int(cfg["num_conv_pos_embeddings"]),
        pos_conv_groups=int(cfg["num_conv_pos_embedding_groups"]),
        normalize_waveform=normalize,
    )
    return cfg, settings


# -- wav2vec 2.0 -------------------------------------------------------------------------------------


def load_huggingface_wav2vec2(folder: str | Path) -> Wav2Vec2Upstream:
    """A Hugging Face wav2vec 2.0 folder (see the module docstring)."""
    folder = Path(folder)
    cfg, settings = hf_encoder_settings(folder, "wav2vec2", "wav2vec 2.0")
    if cfg.get("add_adapter", False):
        raise checkpoint_error(folder, "a model with an adapter (add_adapter) is not supported")
    get = cfg.get
    settings.update(
        codebook_groups=int(get("num_codevector_groups", 2)),
        codebook_entries=int(get("num_codevectors_per_group", 320)),
        codevector_dim=int(get("codevector_dim", 256)), final_dim=int(get("proj_codevector_dim", 256)),
        num_negatives=int(get("num_negatives", 100)), logit_temp=float(get("contrastive_logits_temperature", 0.1)),
        diversity_weight=float(get("diversity_loss_weight", 0.1)),
        features_dropout=float(get("feat_quantizer_dropout", 0.0)),
        dropout=float(get("hidden_dropout", 0.1)), attention_dropout=float(get("attention_dropout", 0.1)),
        activation_dropout=float(get("activation_dropout", 0.0)),
        projection_dropout=float(get("feat_proj_dropout", 0.0)),
        layer_drop=float(get("layerdrop", 0.0)), mask_length=int(get("mask_time_length", 10)),
    )
    try:
        model = build_wav2vec2("base", **settings)
    except ValueError as e:
        raise checkpoint_error(folder, str(e)) from None
    full = hf_state(folder, prefix="")  # keep heads and the "wav2vec2." prefix to sort them here
    encoder = {k[len("wav2vec2."):]: v for k, v in full.items() if k.startswith("wav2vec2.")} or full
    mapped = {**renamed(encoder, (("masked_spec_embed", "mask_embedding"), *HF_PREFIXES)), **renamed(full, _HEADS)}
    load_encoder_weights(model, mapped, folder, "config.json")
    return model


BASE_CONV_SPEC = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
"""fairseq's default ``conv_feature_layers``."""
_FAIRSEQ_HEADS = {"quantizer.vars": "quantizer.codevectors",
                  "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
                  "quantizer.weight_proj.bias": "quantizer.weight_proj.bias", "project_q.weight": "project_q.weight",
                  "project_q.bias": "project_q.bias", "final_proj.weight": "project_hid.weight",
                  "final_proj.bias": "project_hid.bias", "mask_emb": "mask_embedding"}


def load_fairseq_wav2vec2(path: str | Path) -> Wav2Vec2Upstream:
    """A fairseq or S3PRL wav2vec 2.0 file (pre-trained, or the encoder of a fine-tuned CTC model)."""
    path = Path(path)
    model_cfg, task_cfg, state = read_fairseq_checkpoint(path, "wav2vec 2.0")
    name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    if name and "wav2vec2" not in name:
        raise checkpoint_error(path, f"holds a {name!r} model, not wav2vec 2.0")
    get = model_cfg.get
    final_dim = int(get("final_dim", 0)) or int(get("encoder_embed_dim", 768))
    temp = list(get("latent_temp", (2.0, 0.5, 0.999995)))
    try:
        model = build_wav2vec2(
            "base", extractor_mode="group_norm" if get("extractor_mode", "default") == "default" else "layer_norm",
            conv_layers=parse_conv_layers(get("conv_feature_layers", BASE_CONV_SPEC)),
            conv_bias=bool(get("conv_bias", False)), embed_dim=int(get("encoder_embed_dim", 768)),
            num_layers=int(get("encoder_layers", 12)), num_heads=int(get("encoder_attention_heads", 12)),
            ffn_dim=int(get("encoder_ffn_embed_dim", 3072)), layer_norm_first=bool(get("layer_norm_first", False)),
            pos_conv_kernel=int(get("conv_pos", 128)), pos_conv_groups=int(get("conv_pos_groups", 16)),
            dropout=float(get("dropout", 0.1)), attention_dropout=float(get("attention_dropout", 0.1)),
            activation_dropout=float(get("activation_dropout", 0.0)),
            projection_dropout=float(get("dropout_input", 0.0)), layer_drop=float(get("encoder_layerdrop", 0.0)),
            normalize_waveform=bool(task_cfg.get("normalize", False)),
            mask_start_prob=float(get("mask_prob", 0.65)) / int(get("mask_length", 10)),
            mask_length=int(get("mask_length", 10)), codebook_groups=int(get("latent_groups", 2)),
            codebook_entries=int(get("latent_vars", 320)), codevector_dim=int(get("latent_dim", 0)) or final_dim,
            final_dim=final_dim, num_negatives=int(get("num_negatives", 100)), logit_temp=float(get("logit_temp", 0.1)),
            feature_grad_mult=float(get("feature_grad_mult", 0.1)) or 1.0,
            features_dropout=float(get("dropout_features", 0.0)),
            gumbel_start=float(temp[0]), gumbel_end=float(temp[1]), gumbel_decay=float(temp[2]))
    except ValueError as e:
        raise checkpoint_error(path, str(e)) from None
    mapped = {f"wav2vec2.{k}": v for k, v in _convert_state_dict(state).items()}
    mapped.update({dst: state[src] for src, dst in _FAIRSEQ_HEADS.items() if src in state})
    load_encoder_weights(model, mapped, path, "the configured model")
    return model


def load_wav2vec2(path: str | Path) -> Wav2Vec2Upstream:
    """A folder is Hugging Face's, a file fairseq's or S3PRL's."""
    path = Path(path)
    return load_huggingface_wav2vec2(path) if path.is_dir() else load_fairseq_wav2vec2(path)
