"""Upstreams by name: ``build_upstream(name, ckpt=None, **overrides)``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .base import Upstream
from .checkpoint import atomic_save
from .fbank import FbankUpstream

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


def register_upstream(name: str, factory: Callable[..., Upstream], description: str) -> None:
    """Make ``factory(**overrides)`` available as ``build_upstream(name)``."""
    if name in _FACTORIES:
        raise ValueError(f"upstream {name!r} is already registered")
    _FACTORIES[name] = factory
    _DESCRIPTIONS[name] = description


def available_upstreams() -> dict[str, str]:
    """Name -> one-line description."""
    return dict(_DESCRIPTIONS)


def build_upstream(name: str, ckpt: str | Path | None = None, **overrides) -> Upstream:
    """Build an upstream by name; load ``ckpt`` (a file this toolkit saved with :func:`save_upstream`) if given."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown upstream {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    if ckpt is not None:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise FileNotFoundError(f"upstream checkpoint not found: {ckpt}")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("upstream") != name:
            raise ValueError(f"{ckpt} holds upstream {state.get('upstream')!r}, not {name!r}")
        model = _FACTORIES[name](**{**state["settings"], **overrides})
        model.load_state_dict(state["state_dict"])
    else:
        model = _FACTORIES[name](**overrides)
    model.name = name  # the registry name is what checkpoints, caches and results record
    return model.eval()


def save_upstream(model: Upstream, path: str | Path) -> Path:
    """Save weights and settings atomically in the format :func:`build_upstream` loads."""
    return atomic_save({"upstream": model.name, "settings": model.settings(), "state_dict": model.state_dict()}, path)
