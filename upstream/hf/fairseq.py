"""fairseq-family wav2vec 2.0 and WavLM checkpoints -> :class:`upstream.hf.model.HFUpstream`.

Formats (read by :func:`upstream.interop.fairseq_checkpoint.read_fairseq_checkpoint`, no fairseq
needed): fairseq's own wav2vec 2.0 files (pre-trained, or fine-tuned CTC models, whose encoder is
used), S3PRL's converted wav2vec 2.0 files, and Microsoft's WavLM release as S3PRL's WavLM expert
loads it. The config becomes a Hugging Face ``Wav2Vec2Config`` / ``WavLMConfig`` and the weights
are renamed onto the Hugging Face module tree (the table :data:`RENAMES`); pre-training heads
(quantiser, projections) are left out. WavLM's gated relative position bias exists in Hugging Face
only in its released form (relative positions and gating both on), so other WavLM variants are refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..interop.fairseq_checkpoint import parse_conv_layers, read_fairseq_checkpoint
from ..interop.s3prl_checkpoint import checkpoint_error
from .model import HFUpstream

RENAMES: list[tuple[str, str]] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.", r"feature_extractor.conv_layers.\1.layer_norm."),  # layer_norm
    (r"^feature_extractor\.conv_layers\.0\.2\.", r"feature_extractor.conv_layers.0.layer_norm."),  # group norm
    (r"^layer_norm\.", r"feature_projection.layer_norm."),
    (r"^post_extract_proj\.", r"feature_projection.projection."),
    (r"^mask_emb$", r"masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.weight_g$", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", r"encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.layer_norm\.", r"encoder.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.", r"encoder.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.", r"encoder.layers.\1.attention.gru_rel_pos_linear."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.", r"encoder.layers.\1.attention.rel_attn_embed."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
]
"""fairseq name pattern -> Hugging Face name (``re.sub``); names matching none are pre-training heads."""
FAIRSEQ_NORMALIZE_EPS = 1e-5
"""fairseq's task ``normalize`` is ``F.layer_norm`` over the waveform: epsilon 1e-5, not Hugging Face's 1e-7."""
_HEADS = ("quantizer.", "project_q.", "final_proj.", "label_embs_concat")


def hf_config(model_cfg: dict, wavlm: bool) -> dict:
    """A Hugging Face ``wav2vec2`` / ``wavlm`` config dict from fairseq's model config."""
    get = model_cfg.get
    conv = parse_conv_layers(get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
    if get("activation_fn", "gelu") != "gelu":
        raise ValueError(f"activation_fn {get('activation_fn')!r} is not supported (Hugging Face uses gelu)")
    config = dict(
        model_type="wavlm" if wavlm else "wav2vec2",
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=bool(get("conv_bias", False)),
        feat_extract_norm="group" if get("extractor_mode", "default") == "default" else "layer",
        feat_extract_activation="gelu", hidden_act="gelu",
        hidden_size=int(get("encoder_embed_dim", 768)), num_hidden_layers=int(get("encoder_layers", 12)),
        num_attention_heads=int(get("encoder_attention_heads", 12)),
        intermediate_size=int(get("encoder_ffn_embed_dim", 3072)),
        do_stable_layer_norm=bool(get("layer_norm_first", False)),
        num_conv_pos_embeddings=int(get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(get("conv_pos_groups", 16)),
        hidden_dropout=float(get("dropout", 0.1)), attention_dropout=float(get("attention_dropout", 0.1)),
        activation_dropout=float(get("activation_dropout", 0.0)), layerdrop=float(get("encoder_layerdrop", 0.0)),
        mask_time_prob=float(get("mask_prob", 0.05)), mask_time_length=int(get("mask_length", 10)),
        num_codevector_groups=int(get("latent_groups", 2)), num_codevectors_per_group=int(get("latent_vars", 320)),
        proj_codevector_dim=int(get("final_dim", 256) or 256),
    )
    if wavlm:
        if not (get("relative_position_embedding", False) and get("gru_rel_pos", False)):
            raise ValueError("WavLM without relative_position_embedding and gru_rel_pos has no Hugging Face form")
        config.update(num_buckets=int(get("num_buckets", 320)), max_bucket_distance=int(get("max_distance", 800)))
    return config


def hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fairseq-named encoder weights renamed by :data:`RENAMES`; pre-training heads dropped."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in RENAMES:
            new, hits = re.subn(pattern, replacement, key)
            if hits:
                out[new] = value
                break
        else:
            if not key.startswith(_HEADS):
                raise ValueError(f"unknown weight {key!r}")
    return out


def load_fairseq_wav2vec2(path: str | Path) -> HFUpstream:
    """A fairseq / S3PRL wav2vec 2.0 or WavLM checkpoint file as a Hugging Face model."""
    path = Path(path)
    model_cfg, task_cfg, state = read_fairseq_checkpoint(path, "wav2vec 2.0")
    name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    wavlm = any(".grep_linear." in k or ".relative_attention_bias." in k for k in state)
    if name and not wavlm and "wav2vec2" not in name:
        raise checkpoint_error(path, f"holds a {name!r} model, not wav2vec 2.0 or WavLM"
                               + (" (HuBERT checkpoints load with -u hubert)" if "hubert" in name else ""))
    try:
        preprocessing = {"do_normalize": bool(task_cfg.get("normalize", False)), "normalize_eps": FAIRSEQ_NORMALIZE_EPS,
                         "sampling_rate": int(task_cfg.get("sample_rate", 16000))}
        upstream = HFUpstream(hf_config(model_cfg, wavlm), preprocessing)
        weights = hf_state(state)
    except ValueError as e:
        raise checkpoint_error(path, str(e)) from None
    try:
        missing, unexpected = upstream.model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise checkpoint_error(path, f"weights do not fit the configured model ({e})") from None
    missing = [k for k in missing if k != "masked_spec_embed"]
    if missing or unexpected:
        raise checkpoint_error(path, f"weights do not fit the configured model: missing {missing[:5]}, "
                                     f"unexpected {unexpected[:5]}")
    return upstream
