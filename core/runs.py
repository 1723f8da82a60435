"""The run-folder contracts: what a downstream experiment folder and a pre-training run folder hold,
named once, and the typed results record the runner writes and the leaderboard reads.

A downstream experiment ``<expdir>/<name>/`` (see :mod:`downstream.runner`)::

    config.yaml               the resolved config and the run's names (task, upstream, checkpoint)
    upstream.pt               the upstream as used where no checkpoint names it (fitted statistics, random weights)
    checkpoints/last.pt       the latest training state, for resume (last.prev.pt: the one before it)
    checkpoints/best.pt       the state with the best dev metric
    train.log, tb/            the log and TensorBoard event files
    layer_weights.json        the featurizer's weights of the best checkpoint
    results.json              a :class:`Results` record; predictions-<split>.tsv

A pre-training run ``<expdir>/pretrain/<name>/`` (see :mod:`upstream.pretrain`)::

    config.yaml               the resolved config
    upstream.pt               the model in the format ``build_upstream`` loads (rewritten at every save)
    checkpoints/last.pt       the training state, for resume
    summary.json              written last: the run has finished
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
UPSTREAM_FILE = "upstream.pt"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAIN_LOG = "train.log"
TENSORBOARD_DIR = "tb"
LAYER_WEIGHTS_FILE = "layer_weights.json"
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
RESUME_CHECKPOINT = Path(CHECKPOINT_DIR) / LAST_CHECKPOINT


def results_file(variant: str = "") -> str:
    """``results.json``, or ``results-<variant>.json`` for an evaluation with decoding overrides."""
    return f"results-{variant}.json" if variant else RESULTS_FILE


def predictions_file(split: str, variant: str = "") -> str:
    """``predictions-<split>.tsv``, or ``predictions-<variant>-<split>.tsv``."""
    return f"predictions-{variant}-{split}.tsv" if variant else f"predictions-{split}.tsv"


def pretraining_finished(run_dir: str | Path) -> bool:
    """Whether the pre-training run in ``run_dir`` has finished: ``summary.json`` is its last write."""
    return (Path(run_dir) / SUMMARY_FILE).is_file()


def unfinished_run_checkpoint(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is the ``upstream.pt`` of a pre-training run that is still training or was
    stopped (a resumable ``checkpoints/last.pt`` beside it, not finished): every save rewrites it."""
    checkpoint = Path(checkpoint)
    return (checkpoint.name == UPSTREAM_FILE and (checkpoint.parent / RESUME_CHECKPOINT).is_file()
            and not pretraining_finished(checkpoint.parent))


def pretraining_summary_of(checkpoint: str | Path | None) -> Path | None:
    """The ``summary.json`` beside ``checkpoint`` when it is a pre-training run's ``upstream.pt``; else None."""
    if not checkpoint or Path(checkpoint).name != UPSTREAM_FILE:
        return None
    return Path(checkpoint).parent / SUMMARY_FILE


def pretrain_hours(checkpoint: str | Path | None) -> float | None:
    """Hours of audio the upstream was pre-trained on, from the ``summary.json`` that
    ``upstream.pretrain`` writes beside ``upstream.pt``; None when unknown (foreign checkpoints)."""
    summary = pretraining_summary_of(checkpoint)
    if summary is None:
        return None
    try:
        return float(json.loads(summary.read_text())["train_hours_of_audio"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


SCHEMA_VERSION = 1
"""Version of :class:`Results`. Files written before the record had a version read as version 0
(the same keys, without ``schema_version``)."""


@dataclass
class Results:
    """One downstream experiment's ``results.json``: provenance, the learnt layer weights and one
    metrics dict per evaluated split (``{split: {metric: value, ..., "utterances": n, "seconds": s}}``)."""

    task: str
    upstream: str
    primary_metric: str
    higher_is_better: bool
    splits: dict[str, dict[str, Any]]
    track: str | None = None
    dataset: str | None = None
    upstream_checkpoint: str | None = None
    upstream_label: str | None = None
    finetuned: bool = False
    upstream_fingerprint: str | None = None
    upstream_parameters: int | None = None
    pretrain_hours: float | None = None
    experiment: str | None = None
    seed: int | None = None
    learning_rate: float | None = None
    checkpoint_step: int | None = None
    layer_weights: list[float] | None = None
    selection_metric: str | None = None
    head: str | None = None
    """The task's head (``task.head``, :mod:`downstream.heads`)."""
    torch: str | None = None
    host: str | None = None
    metric_info: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    """Training summary: train_steps, train_seconds, steps_per_second, extract_seconds, best_step, ..."""
    decoding: str | None = None
    cost: dict[str, Any] | None = None
    """What the upstream costs to run (:func:`upstream.cost.measure_cost`): ``parameters``,
    ``parameters_used``, ``macs_per_second``, ``rtf``, ``peak_mem_mb``, ``device``, ``threads``, ...
    (docs/cost.md). Optional: files written before it existed load without it (same schema version)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know (a newer writer's): kept, written back unchanged."""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        """The JSON object of ``results.json`` (optional fields that are unset are left out)."""
        out = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "schema_version") or (value is None and f.name in _OMIT_WHEN_NONE):
                continue
            out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: object) -> "Results":
        """Read a ``results.json`` object; ValueError naming the key when a field has the wrong type."""
        if not isinstance(data, dict):
            raise ValueError("top level is not a JSON object")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        version = data.get("schema_version", 0)
        if not _is(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is not one this toolkit reads (0..{SCHEMA_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        for key, kinds in _TYPES.items():
            value = data.get(key)
            if value is not None and not any(_is(value, kind) for kind in kinds):
                raise ValueError(f"{key!r} has the wrong type: {value!r}")
        _check_splits(data["splits"], data["primary_metric"])
        weights = data.get("layer_weights")
        if weights is not None and not all(_is(w, Real) for w in weights):
            raise ValueError("'layer_weights' is not a list of numbers")
        fields = {k: v for k, v in data.items() if k in known}
        fields["schema_version"] = version
        return cls(**fields, extra={k: v for k, v in data.items() if k not in known})


_REQUIRED = ("task", "upstream", "primary_metric", "higher_is_better", "splits")
_OMIT_WHEN_NONE = ("metric_info", "training", "decoding", "head", "cost")
_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,), "upstream": (str,), "primary_metric": (str,), "higher_is_better": (bool,), "splits": (dict,),
    "track": (str,), "dataset": (str,), "upstream_checkpoint": (str,), "upstream_label": (str,), "finetuned": (bool,),
    "upstream_fingerprint": (str,), "upstream_parameters": (int,), "pretrain_hours": (Real,), "experiment": (str,),
    "seed": (int,), "learning_rate": (Real,), "checkpoint_step": (int,), "layer_weights": (list,),
    "selection_metric": (str,), "head": (str,), "torch": (str,), "host": (str,), "metric_info": (dict,),
    "training": (dict,), "decoding": (str,), "cost": (dict,),
}


def _is(value: object, kind: type) -> bool:
    """Whether ``value`` is of ``kind``; a boolean is no number, and ``bool`` accepts only booleans."""
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_splits(splits: dict, metric: str) -> None:
    """ValueError unless every split holds a numeric ``metric``."""
    if not splits:
        raise ValueError("'splits' is not a non-empty object")
    for split, metrics in splits.items():
        value = metrics.get(metric) if isinstance(metrics, dict) else None
        if not _is(value, Real):
            raise ValueError(f"split {split!r} has no numeric {metric!r}")
