"""A downstream experiment's configuration: :class:`ExperimentConfig` and its sections.

Defaults live here (and in each task's config class; a task's ``train_defaults``, its protocol's
learning rate, batch and budget, replace the generic ``train`` ones); YAML files and ``-o`` overrides
are merged into them and checked by :func:`core.config.merge` (:func:`downstream.runner.resolve_config`).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from core.config import ConfigError
from core.training import LoopConfig

log = logging.getLogger("downstream")


@dataclass
class TrainConfig(LoopConfig):
    """The training loop (:class:`core.training.LoopConfig`) and what downstream training adds."""

    fit_utterances: int = 500
    """Training utterances used to fit an upstream that needs statistics (fbank_global)."""


@dataclass
class FeaturizerConfig:
    """How the upstream's layers are combined (see :class:`upstream.featurizer.Featurizer`)."""

    mode: str = "weighted_sum"
    layer: int = -1
    layer_norm: bool = False
    utterance_mean_norm: bool = False
    layers: list[int] = field(default_factory=list)
    """Hidden states the featurizer sees (indices; negative from the end); empty: all. The cache stores
    only these, and live extraction (cache off, fine-tuning) passes only these on."""


@dataclass
class CacheConfig:
    """The frozen-feature cache (see :mod:`downstream.cache`)."""

    enabled: bool = True
    root: str = "cache/features"
    dtype: str = "float16"
    """float16, bfloat16 or float32."""
    layers: list[int] = field(default_factory=list)
    """Deprecated: ``featurizer.layers``, where it is moved (with a warning) when set here."""


@dataclass
class CostConfig:
    """What the upstream costs to run (:mod:`upstream.cost`), measured once per upstream fingerprint,
    device and thread count (kept under ``<cache.root>/cost/``) and written into ``results.json``."""

    enabled: bool = True
    lengths_s: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0])
    """Input lengths (seconds of audio, batch 1) the MACs are averaged over and the timed pass runs."""
    repeats: int = 3
    """Timed forwards of each length (after one warm-up) for the real-time factor."""


@dataclass
class FinetuneConfig:
    """Fine-tuning the upstream with the head (``run_downstream.py -f``), as wav2vec 2.0 / HuBERT do.

    The upstream is frozen for the first ``freeze_steps`` updates (only the featurizer and head
    learn), then trained with them. Every parameter follows wav2vec 2.0's tri-stage schedule:
    linear warm-up from ``init_lr_scale`` x lr over ``warmup_fraction`` of ``train.total_steps``, hold
    at lr for ``hold_fraction``, exponential decay to ``final_lr_scale`` x lr over the rest. The
    upstream's learning rate is ``upstream_lr_scale`` x that. During training the upstream masks
    its own input where it can (HuBERT: spans with the pre-trained mask embedding, channel bands).
    The feature cache is not used: the upstream changes.
    """

    enabled: bool = False
    freeze_steps: int = 0
    upstream_lr_scale: float = 1.0
    warmup_fraction: float = 0.1
    hold_fraction: float = 0.4
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05
    mask_time_start_prob: float = 0.065
    mask_time_span: int = 10
    mask_channel_prob: float = 0.004
    mask_channel_span: int = 64


def tri_stage_scale(step: int, total: int, cfg: FinetuneConfig) -> float:
    """The learning-rate multiplier of wav2vec 2.0's tri-stage schedule at update ``step`` of ``total``."""
    warmup, hold = int(cfg.warmup_fraction * total), int(cfg.hold_fraction * total)
    decay = max(total - warmup - hold, 1)
    if step < warmup:
        return cfg.init_lr_scale + (1.0 - cfg.init_lr_scale) * step / warmup
    if step < warmup + hold:
        return 1.0
    return cfg.final_lr_scale ** (min(step - warmup - hold, decay) / decay)


@dataclass
class ExperimentConfig:
    """One downstream experiment. ``task`` holds the task's own config dataclass."""

    task: Any
    upstream: dict = field(default_factory=dict)
    """Upstream settings for ``build_upstream`` (e.g. ``preset: tiny`` for a randomly initialised model)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self):
        """Move the deprecated ``cache.layers`` to ``featurizer.layers`` (an error when both are set and differ)."""
        if not self.cache.layers:
            return
        if self.featurizer.layers and self.featurizer.layers != self.cache.layers:
            raise ConfigError(f"cache.layers {self.cache.layers} and featurizer.layers {self.featurizer.layers} "
                              "differ; set featurizer.layers alone (cache.layers is deprecated)")
        log.warning("cache.layers is deprecated: it is read as featurizer.layers=%s", self.cache.layers)
        self.featurizer = dataclasses.replace(self.featurizer, layers=list(self.cache.layers))
        self.cache = dataclasses.replace(self.cache, layers=[])
