"""HuBERT checkpoints people already have -> :class:`upstream.hubert.HubertUpstream`.

Three formats, told apart by content (``build_upstream("hubert", PATH)`` calls :func:`load_hubert`):

* **fairseq** (``hubert_base_ls960.pt``): ``{"cfg": {"model": ..., "task": ...}, "model": state}``
  (newer, an OmegaConf ``DictConfig``) or ``{"args": Namespace, "model": state}`` (older);
* **S3PRL** (its converted ``hubert_base_ls960.pt``): ``{"task_cfg", "model_cfg", "model_weight",
  "dictionaries_symbols"}``; the weights keep fairseq's names;
* **Hugging Face** (a ``HubertModel`` folder): ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``; a ``preprocessor_config.json`` with ``do_normalize`` turns on waveform
  normalisation, as the Hugging Face feature extractor would apply it.

Fairseq names map onto torchaudio's with torchaudio's own fairseq importer table; Hugging Face
names differ from torchaudio's only by where the feature projection and Transformer sit. Weights
of the pre-training heads (``final_proj``, ``label_embs_concat``, ``mask_emb``) are kept where
present, so a fairseq or S3PRL checkpoint can continue pre-training here.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from ..hubert import HubertUpstream, build_hubert
from ..w2v_encoder import TorchaudioEncoderUpstream
from .fairseq_checkpoint import parse_conv_layers, read_fairseq_checkpoint
from .s3prl_checkpoint import checkpoint_error


def _fairseq_settings(model_cfg: dict, task_cfg: dict, state: dict) -> dict:
    """HubertConfig fields from fairseq's model and task configs (and the number of classes from the weights)."""
    get = model_cfg.get
    settings = dict(
        extractor_mode="group_norm" if get("extractor_mode", "default") == "default" else "layer_norm",
        conv_layers=parse_conv_layers(get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")),
        conv_bias=bool(get("conv_bias", False)),
        embed_dim=int(get("encoder_embed_dim", 768)),
        num_layers=int(get("encoder_layers", 12)),
        num_heads=int(get("encoder_attention_heads", 12)),
        ffn_dim=int(get("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(get("layer_norm_first", False)),
        pos_conv_kernel=int(get("conv_pos", 128)),
        pos_conv_groups=int(get("conv_pos_groups", 16)),
        final_dim=int(get("final_dim", 0)) or int(get("encoder_embed_dim", 768)),
        normalize_waveform=bool(task_cfg.get("normalize", False)),
    )
    if get("activation_fn", "gelu") != "gelu":
        raise ValueError(f"activation_fn {get('activation_fn')!r} is not supported (torchaudio's HuBERT uses gelu)")
    if "label_embs_concat" in state:
        settings["num_classes"] = int(state["label_embs_concat"].shape[0])
    return settings


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


def _from_fairseq_state(settings: dict, state: dict) -> HubertUpstream:
    model = build_hubert("base", **settings)
    mapped = {f"wav2vec2.{k}": v for k, v in _convert_state_dict(state).items() if k != "label_embs_concat"}
    label_embeddings = model.model.logit_generator.label_embeddings
    if "label_embs_concat" in state and state["label_embs_concat"].shape == label_embeddings.shape:
        mapped["logit_generator.label_embeddings"] = state["label_embs_concat"]
    for src, dst in (("final_proj.weight", "logit_generator.final_proj.weight"),
                     ("final_proj.bias", "logit_generator.final_proj.bias"),
                     ("mask_emb", "mask_generator.mask_embedding")):
        if src in state and state[src].shape == model.model.state_dict()[dst].shape:
            mapped[dst] = state[src]
    load_encoder_weights(model, mapped, None, "the configured model")
    return model


def load_fairseq_or_s3prl_hubert(path: str | Path) -> HubertUpstream:
    """A fairseq or S3PRL HuBERT checkpoint file (see the module docstring)."""
    path = Path(path)
    model_cfg, task_cfg, state = read_fairseq_checkpoint(path, "HuBERT")
    name = model_cfg.get("_name") or model_cfg.get("arch")
    if name and "hubert" not in str(name):
        raise checkpoint_error(path, f"holds a {name!r} model, not HuBERT")
    try:
        return _from_fairseq_state(_fairseq_settings(model_cfg, task_cfg, state), state)
    except ValueError as e:
        raise checkpoint_error(path, str(e)) from None


_HF_PREFIXES = (
    ("feature_extractor.", "wav2vec2.feature_extractor."),
    ("feature_projection.", "wav2vec2.encoder.feature_projection."),
    ("encoder.pos_conv_embed.", "wav2vec2.encoder.transformer.pos_conv_embed."),
    ("encoder.layer_norm.", "wav2vec2.encoder.transformer.layer_norm."),
    ("encoder.layers.", "wav2vec2.encoder.transformer.layers."),
    ("masked_spec_embed", "mask_generator.mask_embedding"),
)


def hf_state(folder: Path, prefix: str = "hubert.") -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face folder, without the ``prefix`` of models with heads (``hubert.`` of
    ``HubertForCTC``; ``wav2vec2.`` of ``Wav2Vec2ForPreTraining``), whose other weights are dropped."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file  # noqa: PLC0415  (safetensors folders only)

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


def load_huggingface_hubert(folder: str | Path) -> HubertUpstream:
    """A Hugging Face ``HubertModel`` folder (``save_pretrained``); transformers is not needed."""
    folder = Path(folder)
    _, settings = hf_encoder_settings(folder, "hubert", "HuBERT")
    model = build_hubert("base", **settings)
    load_encoder_weights(model, renamed(hf_state(folder), _HF_PREFIXES), folder, "config.json")
    return model


def load_hubert(path: str | Path) -> HubertUpstream:
    """Any of the three formats: a folder is Hugging Face's, a file fairseq's or S3PRL's."""
    path = Path(path)
    if path.is_dir():
        return load_huggingface_hubert(path)
    return load_fairseq_or_s3prl_hubert(path)
