"""S3PRL Mockingjay checkpoints: load them as :class:`upstream.mockingjay.model.MockingjayUpstream`, export ours.

S3PRL's format (written by ``s3prl/pretrain/runner.py`` + ``pretrain/mockingjay/pretrain_expert.py``,
read by ``s3prl/upstream/mockingjay/builder.py``) is a ``torch.save``d dict::

    {
        "Transformer": TransformerModel state dict (input_representations.*, encoder.layer.{i}.*),
        "SpecHead": TransformerSpecPredictionHead state dict (dense, LayerNorm, output),
        "Upstream_Config": {                     # new checkpoints; legacy ones keep it in "Config"
            "transformer": {hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                            hidden_act, hidden_dropout_prob, attention_probs_dropout_prob,
                            initializer_range, layer_norm_eps, share_layer, pre_layer_norm, input_dim},
            "task": {sequence_length, loss, mask_proportion, mask_consecutive_min/max, ...},
            "audio": {target_level, win_ms, hop_ms, n_freq, n_mels, n_mfcc,
                      input: {feat_type, channel, log, delta, cmvn}, target: {...}},
        },
        "Config": runner config (legacy checkpoints: the upstream config, with "transformer"),
        "Optimizer", "Step", "Args", ...        # ignored
    }

The builder takes the upstream config from ``Config`` when it has a ``transformer`` section, else
from ``Upstream_Config``; old state dicts may name LayerNorm parameters ``gamma``/``beta``. S3PRL's
upstream expert only supports checkpoints with an ``audio`` section (on-the-fly features); of those,
this module supports the ``OnlinePreprocessor`` features ``mel``, ``linear`` and ``mfcc`` (with log,
deltas, CMVN) and refuses Kaldi-extracter (``audio.kaldi``) configurations.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path

from core.checkpoint import atomic_save

from ..interop.s3prl_checkpoint import checkpoint_error, load_checkpoint
from .config import FEATURE_TYPES, MockingjayConfig
from .model import MockingjayUpstream

# Defaults S3PRL uses when a key is absent (OnlinePreprocessor's signature, select_feat's keywords).
_AUDIO_DEFAULTS = {"win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 40, "n_mfcc": 13}
_TRANSFORMER_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
)
_TASK_KEYS = (
    "loss",
    "mask_proportion",
    "mask_consecutive_min",
    "mask_consecutive_max",
    "mask_allow_overlap",
    "mask_bucket_ratio",
    "mask_frequency",
    "noise_proportion",
)
_EXTRA_KEY = "SuperbLite"
"""Our full settings, stored beside S3PRL's keys (S3PRL ignores it) so that fields S3PRL hard-codes
(the zero/random/keep split) survive a round trip."""


def _upstream_config(states: dict, path: Path) -> dict:
    """The upstream config, where S3PRL's builder looks for it."""
    for key in ("Config", "Upstream_Config"):
        cfg = states.get(key)
        if isinstance(cfg, dict) and isinstance(cfg.get("transformer"), dict):
            return cfg
    raise checkpoint_error(path, "no upstream config with a 'transformer' section under 'Config' or 'Upstream_Config'")


def _feature_settings(prefix: str, feat: dict, path: Path) -> dict:
    feat_type = feat.get("feat_type")
    if feat_type not in FEATURE_TYPES:
        raise checkpoint_error(path, f"audio.{prefix} feat_type {feat_type!r} is not supported "
                                     f"(only {', '.join(FEATURE_TYPES)})")
    return {
        f"{prefix}_feat_type": feat_type,
        f"{prefix}_log": bool(feat.get("log", False)),
        f"{prefix}_delta": int(feat.get("delta", 0)),
        f"{prefix}_cmvn": bool(feat.get("cmvn", False)),
    }


def settings_from_s3prl_config(config: dict, path: str | Path = "<config>") -> dict:
    """:class:`MockingjayConfig` fields from an S3PRL Mockingjay upstream config
    (``transformer``/``task``/``audio``)."""
    path = Path(path)
    tr = config["transformer"]
    missing = [k for k in _TRANSFORMER_KEYS if k not in tr]
    if missing:
        raise checkpoint_error(path, f"transformer config lacks {', '.join(missing)}")
    if not isinstance(tr["hidden_act"], str):
        raise checkpoint_error(path, f"transformer.hidden_act {tr['hidden_act']!r} is not a name")
    out: dict = {k: tr[k] for k in _TRANSFORMER_KEYS}
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        out[k] = int(out[k])
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps"):
        out[k] = float(out[k])
    out["share_layer"] = bool(tr.get("share_layer", False))
    out["pre_layer_norm"] = bool(tr.get("pre_layer_norm", False))

    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    out["max_sequence_length"] = int(task.get("sequence_length", 0))
    for k in _TASK_KEYS:
        if k in task:
            out[k] = task[k]

    audio = config.get("audio")
    if not isinstance(audio, dict):
        raise checkpoint_error(path, "no 'audio' section: features were extracted offline, which S3PRL's Mockingjay "
                     "upstream (and this loader) does not support")
    if "kaldi" in audio:
        raise checkpoint_error(path, "Kaldi-extracter features (audio.kaldi) are not supported, "
                                     "only S3PRL's OnlinePreprocessor")
    if int(audio.get("sample_rate", 16000)) != 16000:
        raise checkpoint_error(path, f"audio.sample_rate {audio['sample_rate']} is not supported (only 16000)")
    level = audio.get("target_level")
    if not isinstance(level, (int, float)) or isinstance(level, bool):
        raise checkpoint_error(path, f"audio.target_level {level!r} is not supported (a number of dB is needed)")
    out["target_level"] = float(level)
    for k, default in _AUDIO_DEFAULTS.items():
        out[k] = audio.get(k, default)
    out["n_freq"], out["n_mels"], out["n_mfcc"] = int(out["n_freq"]), int(out["n_mels"]), int(out["n_mfcc"])
    if not isinstance(audio.get("input"), dict):
        raise checkpoint_error(path, "audio section has no 'input' features")
    out.update(_feature_settings("input", audio["input"], path))
    target = audio.get("target") if isinstance(audio.get("target"), dict) else audio["input"]
    out.update(_feature_settings("target", target, path))
    return out


def s3prl_config_from_settings(config: MockingjayConfig) -> dict:
    """S3PRL's upstream config (``transformer``/``task``/``audio``) for one of our models."""
    c = config

    def feat(prefix: str) -> dict:
        return {
            "feat_type": getattr(c, f"{prefix}_feat_type"),
            "channel": 0,
            "log": getattr(c, f"{prefix}_log"),
            "delta": getattr(c, f"{prefix}_delta"),
            "cmvn": getattr(c, f"{prefix}_cmvn"),
        }

    return {
        "transformer": {
            "input_dim": c.feature_dim("input"),
            **{k: getattr(c, k) for k in _TRANSFORMER_KEYS},
            "share_layer": c.share_layer,
            "pre_layer_norm": c.pre_layer_norm,
        },
        "task": {
            "sequence_length": c.max_sequence_length,
            "position_encoding_size": c.hidden_size,
            **{k: getattr(c, k) for k in _TASK_KEYS},
        },
        "audio": {
            "target_level": c.target_level,
            "win_ms": c.win_ms,
            "hop_ms": c.hop_ms,
            "n_freq": c.n_freq,
            "n_mels": c.n_mels,
            "n_mfcc": c.n_mfcc,
            "input": feat("input"),
            "target": feat("target"),
        },
    }


def _renamed(state: dict) -> OrderedDict:
    """Old names ``gamma``/``beta`` -> ``weight``/``bias`` (as S3PRL's ``load_model`` does)."""
    out = OrderedDict()
    for k, v in state.items():
        out[k.replace("gamma", "weight").replace("beta", "bias")] = v
    return out


def load_s3prl_mockingjay(path: str | Path, *, trusted: bool = False) -> MockingjayUpstream:
    """Read an S3PRL Mockingjay checkpoint into a :class:`MockingjayUpstream` (in eval mode).

    Args:
        path: the ``.ckpt`` file S3PRL's ``UpstreamExpert(ckpt=...)`` takes.
        trusted: allow arbitrary pickled objects (``torch.load(weights_only=False)``, with a stand-in
            for the legacy ``optimizers`` module); only for files from a source you trust.
            Default: tensors, plain containers and ``argparse.Namespace`` only.

    Raises:
        FileNotFoundError: no such file.
        ValueError (naming the file): not an S3PRL Mockingjay checkpoint, features this
            implementation does not compute, or weights that do not fit the configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"S3PRL Mockingjay checkpoint not found: {path}")
    states = load_checkpoint(path, trusted)
    if not isinstance(states, dict) or not isinstance(states.get("Transformer"), dict):
        found = sorted(map(str, states)) if isinstance(states, dict) else type(states).__name__
        raise checkpoint_error(path, f"not an S3PRL Mockingjay checkpoint (expected a dict with 'Transformer'; "
                                     f"found {found})")
    settings = settings_from_s3prl_config(_upstream_config(states, path), path)
    extra = states.get(_EXTRA_KEY)
    if isinstance(extra, dict) and isinstance(extra.get("settings"), dict):
        names = {f.name for f in dataclasses.fields(MockingjayConfig)}
        settings = {**{k: v for k, v in extra["settings"].items() if k in names}, **settings}
    try:
        model = MockingjayUpstream(MockingjayConfig(**settings))
    except (TypeError, ValueError) as e:
        raise checkpoint_error(path, f"unsupported configuration ({e})") from None

    try:
        model.transformer.load_state_dict(_renamed(states["Transformer"]), strict=True)
    except RuntimeError as e:
        raise checkpoint_error(path, f"'Transformer' weights do not fit the configuration: {e}") from None
    head = states.get("SpecHead")
    if isinstance(head, dict):
        try:
            model.spec_head.load_state_dict(_renamed(head), strict=True)
        except RuntimeError as e:
            raise checkpoint_error(path, f"'SpecHead' weights do not fit the configuration: {e}") from None
    return model.eval()


def export_s3prl_mockingjay(model: MockingjayUpstream, path: str | Path) -> Path:
    """Write ``model`` as an S3PRL Mockingjay checkpoint that ``UpstreamExpert(ckpt=path)`` loads.

    The file holds only tensors and plain containers (no optimizer state).
    """
    if not isinstance(model, MockingjayUpstream):
        raise TypeError(f"expected a MockingjayUpstream, got {type(model).__name__}")
    cpu = lambda sd: OrderedDict((k, v.detach().cpu().clone()) for k, v in sd.items())  # noqa: E731  (a one-line local helper)
    states = {
        "Transformer": cpu(model.transformer.state_dict()),
        "SpecHead": cpu(model.spec_head.state_dict()),
        "Upstream_Config": s3prl_config_from_settings(model.config),
        "Config": {"runner": {}},  # S3PRL's runner config slot; must exist and must not hold "transformer"
        "Step": 0,
        _EXTRA_KEY: {"upstream": "mockingjay", "settings": model.settings()},
    }
    return atomic_save(states, path)


__all__ = ["load_s3prl_mockingjay", "export_s3prl_mockingjay", "settings_from_s3prl_config",
           "s3prl_config_from_settings"]
