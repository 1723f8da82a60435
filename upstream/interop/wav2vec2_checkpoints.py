"""Hugging Face wav2vec 2.0 folders -> :class:`upstream.wav2vec2.Wav2Vec2Upstream` (``-u wav2vec2 -k FOLDER``).

A ``Wav2Vec2ForPreTraining`` folder carries the quantiser and both projections, so pre-training can
continue from it; a ``Wav2Vec2Model`` or ``Wav2Vec2ForCTC`` folder gives the encoder (the
pre-training heads keep their random initialisation). Encoder names map onto torchaudio's as for
HuBERT (:data:`upstream.interop.hubert_checkpoints._HF_PREFIXES`); transformers is not needed.
"""
from __future__ import annotations

from pathlib import Path

from ..wav2vec2 import Wav2Vec2Upstream, build_wav2vec2
from .hubert_checkpoints import _HF_PREFIXES, hf_encoder_settings, hf_state
from .s3prl_checkpoint import checkpoint_error

_HEADS = (("quantizer.", "quantizer."), ("project_q.", "project_q."), ("project_hid.", "project_hid."))


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
    mapped = {}
    for key, value in encoder.items():
        if key == "masked_spec_embed":
            mapped["mask_embedding"] = value
            continue
        for src, dst in _HF_PREFIXES:
            if key.startswith(src):
                mapped[dst + key[len(src):]] = value
                break
    for key, value in full.items():
        for src, dst in _HEADS:
            if key.startswith(src):
                mapped[dst + key[len(src):]] = value
    try:
        missing, unexpected = model.model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:
        raise checkpoint_error(folder, f"weights do not fit config.json ({e})") from None
    missing = [k for k in missing if k.startswith("wav2vec2.")]
    if missing or unexpected:
        raise checkpoint_error(folder, f"weights do not fit config.json: missing {missing[:5]}, "
                                       f"unexpected {unexpected[:5]}")
    return model
