"""Upstreams by name: ``build_upstream(name, ckpt=None, **overrides)``.

A checkpoint is either this toolkit's own (written by :func:`save_upstream`: name, settings,
state dict) or a foreign format a loader is registered for (e.g. S3PRL's), recognised by content.
Each family's entry names its folder's builder (``upstream.<family>.model``) and checkpoint loader
(``upstream.<family>.checkpoints``, ``.s3prl``, ``upstream.hf.load``), imported on first use; only the
FBANK baseline is imported with the registry. Saved checkpoints hold weights and settings, no module
paths, so they load whatever module defines the model.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch

from core.checkpoint import atomic_save
from core.runs import UPSTREAM_FILE

from .base import Upstream
from .fbank.model import FbankUpstream

_FACTORIES: dict[str, Callable[..., Upstream]] = {
    "fbank": lambda **kw: FbankUpstream(**{"cmvn": "utterance", **kw}),
    "fbank_global": lambda **kw: FbankUpstream(**{"cmvn": "global", **kw}),
    "fbank_raw": lambda **kw: FbankUpstream(**{"cmvn": "none", **kw}),
}
_DESCRIPTIONS = {
    "fbank": "80 log-mel + deltas (240-d), per-utterance CMVN as in S3PRL/SUPERB",
    "fbank_global": "80 log-mel + deltas (240-d), global mean/std estimated on the training audio",
    "fbank_raw": "80 log-mel + deltas (240-d), unnormalised (S3PRL's fbank_no_cmvn)",
}


_FOREIGN_LOADERS: dict[str, Callable[[Path], Upstream]] = {}
_TAKES_MODEL_IDS: set[str] = set()


def register_upstream(name: str, factory: Callable[..., Upstream], description: str,
                      foreign_loader: Callable[[Path], Upstream] | None = None, model_ids: bool = False) -> None:
    """Make ``factory(**overrides)`` available as ``build_upstream(name)``.

    ``foreign_loader(path)`` builds the model from a checkpoint in another toolkit's format; with
    ``model_ids`` it also takes names that are not paths (e.g. Hugging Face model ids) and finds them itself.
    """
    if name in _FACTORIES:
        raise ValueError(f"upstream {name!r} is already registered")
    _FACTORIES[name] = factory
    _DESCRIPTIONS[name] = description
    if foreign_loader is not None:
        _FOREIGN_LOADERS[name] = foreign_loader
    if model_ids:
        _TAKES_MODEL_IDS.add(name)


def _lazy(module: str, function: str) -> Callable:
    """``module.function``, imported on first call: models load on demand and start-up stays fast."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module, __package__), function)(*args, **kwargs)

    return call


register_upstream("apc", _lazy(".apc.model", "build_apc"),
                  "autoregressive predictive coding: GRU stack predicting the log-mel frame n steps ahead "
                  "(presets tiny/base/large; S3PRL checkpoints load)", _lazy(".apc.s3prl", "load_s3prl_apc"))
register_upstream("mockingjay", _lazy(".mockingjay.model", "build_mockingjay"),
                  "masked acoustic modelling: Transformer reconstructing masked log-mel spans "
                  "(presets tiny/base/large; S3PRL checkpoints load)",
                  _lazy(".mockingjay.s3prl", "load_s3prl_mockingjay"))

register_upstream("hubert", _lazy(".hubert.model", "build_hubert"),
                  "masked prediction of k-means ids (MFCC, then its own layer), torchaudio's HuBERT "
                  "(presets tiny/base/large; fairseq, Hugging Face and S3PRL checkpoints load)",
                  _lazy(".hubert.checkpoints", "load_hubert"))
register_upstream("bestrq", _lazy(".bestrq.model", "build_bestrq"),
                  "masked prediction of a frozen random-projection quantizer's ids from log-mel, torchaudio "
                  "Conformer (presets tiny/base/large)")
register_upstream("wav2vec2", _lazy(".wav2vec2.model", "build_wav2vec2"),
                  "contrastive prediction of quantised CNN features among distractors (wav2vec 2.0), torchaudio's "
                  "encoder (presets tiny/base/large; Hugging Face Wav2Vec2 folders load, ForPreTraining with "
                  "its quantiser; fairseq and S3PRL files too)",
                  _lazy(".wav2vec2.checkpoints", "load_wav2vec2"))
register_upstream("hf", _lazy(".hf.load", "build_hf"),
                  "a speech encoder transformers implements (wav2vec 2.0, XLS-R, HuBERT, DistilHuBERT, WavLM, "
                  "data2vec, UniSpeech(-SAT), Wav2Vec2-Conformer, Whisper's encoder): -k a Hugging Face folder, a "
                  "model id (local cache first) or a fairseq/S3PRL wav2vec 2.0 or WavLM checkpoint",
                  _lazy(".hf.load", "load_hf"), model_ids=True)


def takes_model_ids(name: str) -> bool:
    """True when upstream ``name`` takes a checkpoint that is not a path (a model id it resolves itself)."""
    return name in _TAKES_MODEL_IDS


def available_upstreams() -> dict[str, str]:
    """Name -> one-line description."""
    return dict(_DESCRIPTIONS)


def build_upstream(name: str, ckpt: str | Path | None = None, **overrides) -> Upstream:
    """Build an upstream by name; load ``ckpt`` (a file this toolkit saved with :func:`save_upstream`) if given."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown upstream {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    if ckpt is not None:
        ckpt = Path(ckpt)
        if not ckpt.exists() and name not in _TAKES_MODEL_IDS:
            raise FileNotFoundError(f"upstream checkpoint not found: {ckpt}")
        state = _load_own(ckpt) if ckpt.is_file() else None  # a folder (e.g. a Hugging Face model) or a model id
        if state is None:
            if name not in _FOREIGN_LOADERS:
                raise ValueError(f"{ckpt} is not a checkpoint of this toolkit, "
                                 f"and no other format is known for {name!r}")
            if overrides:
                raise ValueError(f"settings {sorted(overrides)} cannot override a foreign checkpoint ({ckpt})")
            model = _FOREIGN_LOADERS[name](ckpt)
        else:
            if state["upstream"] != name:
                raise ValueError(f"{ckpt} holds upstream {state['upstream']!r}, not {name!r}")
            model = _FACTORIES[name](**{**state["settings"], **overrides})
            model.load_state_dict(state["state_dict"])
    else:
        model = _FACTORIES[name](**overrides)
    model.name = name  # the registry name is what checkpoints, caches and results record
    return model.eval()


def checkpoint_settings(path: str | Path, name: str | None = None) -> dict:
    """The settings (architecture, features) of the checkpoint ``path``: with them,
    ``build_upstream(name, **settings)`` builds the same model with random weights. A checkpoint in
    another format (a Hugging Face folder or id, a fairseq file) is loaded as upstream ``name`` to read them."""
    state = _load_own(Path(path)) if Path(path).is_file() else None
    if state is not None:
        return dict(state["settings"])
    if name is None or name not in _FOREIGN_LOADERS:
        raise ValueError(f"{path} is not an upstream checkpoint of this toolkit (no settings to copy)")
    return dict(build_upstream(name, path).settings())


def _load_own(path: Path) -> dict | None:
    """This toolkit's checkpoint dict, or None when the file is in some other format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (foreign pickles may hold objects weights_only refuses)
        return None
    if isinstance(state, dict) and {"upstream", "settings", "state_dict"} <= state.keys():
        return state
    return None


def save_upstream(model: Upstream, path: str | Path) -> Path:
    """Save weights and settings atomically in the format :func:`build_upstream` loads (CPU tensors,
    whatever device the model is on)."""
    state = {key: value.cpu() for key, value in model.state_dict().items()}
    return atomic_save({"upstream": model.name, "settings": model.settings(), "state_dict": state}, path)


def upstream_label(name: str, ckpt: str | None, upstream: Upstream) -> str:
    """How the leaderboard names an upstream: ``apc:apc_tiny`` (pre-training folder or checkpoint
    file name), ``hf:wavlm-base-plus`` (a model folder's name), ``hf:microsoft/wavlm-base-plus`` (a
    model id as given), ``apc:random`` (learnable weights, no checkpoint; ``hf:wavlm-random`` for the
    Hugging Face upstream, which holds several families), or ``fbank`` (nothing learnt)."""
    if ckpt:
        path = Path(ckpt)
        if not path.exists():  # a model id
            return f"{name}:{ckpt}"
        if path.is_dir():
            return f"{name}:{path.name}"
        return f"{name}:{path.parent.name if path.name == UPSTREAM_FILE else path.stem}"
    if not upstream.has_weights:
        return name
    family = getattr(upstream, "family", None)  # one upstream name, several model families (hf)
    return f"{name}:{family}-random" if family else f"{name}:random"
