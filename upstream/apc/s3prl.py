"""S3PRL APC checkpoints: load them as :class:`upstream.apc.model.APCUpstream`, and export ours for S3PRL.

S3PRL's format (written by ``s3prl/pretrain/apc/pretrain_expert.py``, read by
``s3prl/upstream/apc/expert.py``) is a ``torch.save``d dict::

    {
        "config": {
            "model": {"paras": {"num_layers": 3, "hidden_size": 512, "dropout": 0.1, "residual": True}},
            "task": {"sequence_length": 1500, "n_future": 5},
            "data": {"audio": {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25,
                               "frame_shift": 10, "decode_wav": False, "cmvn": True}},
        },
        "model": APC state dict (rnn_layers.{i}.*_l0, postnet.*),
        ...  # optimizer, step, ... (ignored)
    }

S3PRL builds ``APC(feat_dim, **paras)``: ``paras`` must not hold ``input_size``, and a ``vq`` entry
makes it VQ-APC, which is not supported here. ``data.audio`` keys other than ``feat_type``,
``feat_dim``, ``decode_wav`` and ``cmvn`` go to ``torchaudio.compliance.kaldi.fbank``.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from core.checkpoint import atomic_save

from ..interop.s3prl_checkpoint import checkpoint_error, load_checkpoint
from .model import APCConfig, APCUpstream

S3PRL_DEFAULT_N_FUTURE = 5
"""S3PRL's ``pretrain/apc/config_model.yaml`` value, used when a checkpoint has no ``task.n_future``."""
S3PRL_SEQUENCE_LENGTH = 1500
"""S3PRL's default pre-training crop (frames); written for S3PRL's pre-training scripts only."""

# data.audio options that reach kaldi.fbank, with the only value this implementation computes.
_FBANK_OPTIONS = {"frame_length": 25.0, "frame_shift": 10.0, "dither": 0.0}
_PARAS = ("num_layers", "hidden_size", "dropout", "residual")


def load_s3prl_apc(path: str | Path, *, trusted: bool = False) -> APCUpstream:
    """Read an S3PRL APC checkpoint into an :class:`APCUpstream` (in eval mode).

    Args:
        path: the ``.ckpt`` file S3PRL's ``UpstreamExpert(ckpt=...)`` takes.
        trusted: allow arbitrary pickled objects (``torch.load(weights_only=False)``); only for
            files from a source you trust. Default: tensors and plain containers only.

    Raises:
        FileNotFoundError: no such file.
        ValueError (naming the file): not an S3PRL APC checkpoint, a VQ-APC checkpoint, features
            other than Kaldi fbank with the standard 25 ms / 10 ms framing, or weights that do not
            fit the configuration.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, trusted)
    if (not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict)
            or not isinstance(ckpt.get("model"), dict)):
        found = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise checkpoint_error(path, f"not an S3PRL APC checkpoint (expected a dict with 'config' and 'model'; "
                                     f"found {found})")
    config, state = ckpt["config"], ckpt["model"]
    try:
        paras = dict(config["model"]["paras"])
        audio = dict(config["data"]["audio"])
    except (KeyError, TypeError):
        raise checkpoint_error(path, "not an S3PRL APC checkpoint (config lacks model.paras or data.audio)") from None

    if paras.get("vq") is not None or any(str(k).startswith("vq_layers.") for k in state):
        raise checkpoint_error(path, f"VQ-APC checkpoint (model.paras.vq = {paras.get('vq')!r}); "
                                     "VQ is not supported, only plain APC")
    paras.pop("vq", None)

    feat_type = audio.pop("feat_type", None)
    if feat_type != "fbank":
        raise checkpoint_error(path, f"features {feat_type!r} are not supported (only S3PRL APC's 'fbank' log-mel)")
    if "feat_dim" not in audio:
        raise checkpoint_error(path, "config data.audio has no feat_dim")
    feat_dim = audio.pop("feat_dim")
    audio.pop("decode_wav", None)  # how S3PRL read files; no effect on features
    cmvn = audio.pop("cmvn", True)
    for key, value in audio.items():
        if key not in _FBANK_OPTIONS:
            raise checkpoint_error(path, f"fbank option data.audio.{key} = {value!r} is not supported")
        if not isinstance(value, (int, float)) or float(value) != _FBANK_OPTIONS[key]:
            raise checkpoint_error(path, f"fbank option data.audio.{key} = {value!r} is not supported "
                                         f"(only {_FBANK_OPTIONS[key]:g})")

    if "input_size" in paras and paras.pop("input_size") != feat_dim:
        raise checkpoint_error(path, f"model.paras.input_size differs from data.audio.feat_dim ({feat_dim})")
    unknown = sorted(set(paras) - set(_PARAS))
    missing = sorted(set(_PARAS) - set(paras))
    if unknown or missing:
        raise checkpoint_error(path, f"unsupported model.paras: unknown {unknown}, missing {missing}")

    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    try:
        cfg = APCConfig(
            feat_dim=feat_dim,
            hidden_size=paras["hidden_size"],
            num_layers=paras["num_layers"],
            dropout=paras["dropout"],
            residual=bool(paras["residual"]),
            n_future=task.get("n_future", S3PRL_DEFAULT_N_FUTURE),
            cmvn=bool(cmvn),
        )
    except ValueError as e:
        raise checkpoint_error(path, str(e)) from None
    model = APCUpstream(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise checkpoint_error(path, f"weights do not fit the configuration {cfg}: {e}") from None
    return model.eval()


def export_s3prl_apc(model: APCUpstream, path: str | Path) -> Path:
    """Write ``model`` as an S3PRL APC checkpoint that ``s3prl.upstream.apc.expert.UpstreamExpert`` loads.

    S3PRL's expert hooks ``rnn_layers[1]``, ``rnn_layers[2]`` and the model output, so it needs at
    least 3 layers (a warning says so otherwise) and, for more than 3, exposes only layers 0, 1
    and the last.

    Returns:
        ``path``, written atomically.
    """
    if not isinstance(model, APCUpstream):
        raise TypeError(f"expected an APCUpstream, got {type(model).__name__}")
    cfg = model.config
    if cfg.num_layers < 3:
        warnings.warn(
            f"exporting a {cfg.num_layers}-layer APC: S3PRL's UpstreamExpert hooks rnn_layers[1] and [2] "
            "and cannot load models with fewer than 3 layers (S3PRL's APC class can)", stacklevel=2)
    config = {
        "model": {"paras": {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                            "dropout": cfg.dropout, "residual": cfg.residual}},
        "task": {"sequence_length": S3PRL_SEQUENCE_LENGTH, "n_future": cfg.n_future},
        "data": {"audio": {"feat_type": "fbank", "feat_dim": cfg.feat_dim, "frame_length": 25, "frame_shift": 10,
                           "decode_wav": False, "cmvn": cfg.cmvn}},
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # "Upstream_Config" duplicates "config", as S3PRL's pre-training expert writes it.
    return atomic_save({"config": config, "model": state, "Upstream_Config": copy.deepcopy(config)}, path)
