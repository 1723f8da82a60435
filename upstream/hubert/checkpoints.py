"""HuBERT checkpoints people already have -> :class:`upstream.hubert.model.HubertUpstream`.

Three formats, told apart by content (``build_upstream("hubert", PATH)`` calls :func:`load_hubert`):

* **fairseq** (``hubert_base_ls960.pt``): ``{"cfg": {"model": ..., "task": ...}, "model": state}``
  (newer, an OmegaConf ``DictConfig``) or ``{"args": Namespace, "model": state}`` (older);
* **S3PRL** (its converted ``hubert_base_ls960.pt``): ``{"task_cfg", "model_cfg", "model_weight",
  "dictionaries_symbols"}``; the weights keep fairseq's names;
* **Hugging Face** (a ``HubertModel`` folder): ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``; a ``preprocessor_config.json`` with ``do_normalize`` turns on waveform
  normalisation, as the Hugging Face feature extractor would apply it.

Fairseq names map onto torchaudio's with torchaudio's own fairseq importer table; Hugging Face
names differ from torchaudio's only by where the feature projection and Transformer sit
(:data:`upstream.wav2vec2.checkpoints.HF_PREFIXES`, shared with wav2vec 2.0). Weights
of the pre-training heads (``final_proj``, ``label_embs_concat``, ``mask_emb``) are kept where
present, so a fairseq or S3PRL checkpoint can continue pre-training here.
"""
from __future__ import annotations

from pathlib import Path

from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from ..interop.fairseq_checkpoint import parse_conv_layers, read_fairseq_checkpoint
from ..interop.s3prl_checkpoint import checkpoint_error
from ..wav2vec2.checkpoints import HF_PREFIXES, hf_encoder_settings, hf_state, load_encoder_weights, renamed
from .model import HubertUpstream, build_hubert


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


def load_huggingface_hubert(folder: str | Path) -> HubertUpstream:
    """A Hugging Face ``HubertModel`` folder (``save_pretrained``); transformers is not needed."""
    folder = Path(folder)
    _, settings = hf_encoder_settings(folder, "hubert", "HuBERT")
    model = build_hubert("base", **settings)
    load_encoder_weights(model, renamed(hf_state(folder, "hubert."), HF_PREFIXES), folder, "config.json")
    return model


def load_hubert(path: str | Path) -> HubertUpstream:
    """Any of the three formats: a folder is Hugging Face's, a file fairseq's or S3PRL's."""
    path = Path(path)
    if path.is_dir():
        return load_huggingface_hubert(path)
    return load_fairseq_or_s3prl_hubert(path)
