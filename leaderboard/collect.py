"""Gather every ``results.json`` under a results root into one tidy table, a row per (experiment, split).

Each downstream experiment writes ``<results_root>/<experiment>/results.json`` holding its
provenance (task, track, dataset, upstream, seed, checkpoint, parameters, ...), its learned layer
weights and one metrics dict per evaluated split. The ``upstream`` column is the run's
``upstream_label`` (``apc:apc_tiny``, ``apc:random``, ``fbank``) where present, so pre-trained and
random-weights runs of one architecture are ranked apart. Only results files are read; nothing is
imported from the rest of the project but the record type, :class:`core.runs.Results`.
"""

from __future__ import annotations

import json
import os
import warnings
from numbers import Real
from pathlib import Path

import pandas as pd

from core.runs import RESULTS_FILE, Results

COLUMNS = [
    "upstream", "task", "track", "dataset", "split", "metric", "value", "selection_value", "higher_is_better",
    "other_metrics",
    "seed", "learning_rate", "utterances", "trials", "experiment", "upstream_checkpoint", "upstream_fingerprint",
    "checkpoint_step", "train_steps", "steps_per_second", "train_seconds", "upstream_parameters", "pretrain_hours",
    "parameters_used", "macs_per_second", "rtf", "peak_mem_mb", "cost_device", "layer_weights", "path",
]
COST_COLUMNS = ("parameters_used", "macs_per_second", "rtf", "peak_mem_mb", "cost_device")
"""From ``results.json``'s ``cost`` record (``upstream.cost.measure_cost``, docs/cost.md); empty without one."""
SUMMARY_COLUMNS = ["upstream", "task", "track", "dataset", "split", "metric", "higher_is_better", "mean", "std", "n"]
BOOKKEEPING_KEYS = ("utterances", "trials", "seconds")
"""Counts and timings a split records beside its metrics; ``trials``: the verification trials scored (ASV)."""
_DTYPES = {
    "value": "float64", "selection_value": "float64", "higher_is_better": "bool", "seed": "Int64",
    "learning_rate": "float64", "utterances": "Int64",
    "trials": "Int64", "checkpoint_step": "Int64",
    "train_steps": "Int64", "steps_per_second": "float64", "train_seconds": "float64",
    "upstream_parameters": "Int64", "pretrain_hours": "float64",
    "parameters_used": "Int64", "macs_per_second": "float64", "rtf": "float64", "peak_mem_mb": "float64",
}


def collect(results_root: str | Path) -> pd.DataFrame:
    """One row per (experiment, split) for every ``results.json`` found recursively under ``results_root``.

    ``metric``/``value`` hold the primary metric (in the unit the task wrote it: accuracies as fractions,
    error rates such as WER, PER and EER in %); the split's remaining metrics (the bookkeeping keys
    :data:`BOOKKEEPING_KEYS` excluded: ``utterances`` and ``trials`` get columns of their own) go to
    ``other_metrics`` as a JSON object string. The direction, ``higher_is_better``, is the results file's.
    A results file that cannot be read or lacks the expected fields is skipped with a warning
    naming it. A root without results (or that does not exist) gives an empty frame with
    :data:`COLUMNS`.
    """
    rows = []
    found = (Path(folder) / RESULTS_FILE for folder, _, files in os.walk(results_root, followlinks=True)
             if RESULTS_FILE in files)  # experiment folders may be symlinks (a board assembled from several roots)
    for path in sorted(found):
        try:
            rows.extend(_rows_of(path))
        except (OSError, ValueError) as err:  # ValueError covers bad JSON, bad UTF-8 and bad fields
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
    return pd.DataFrame(rows, columns=COLUMNS).astype(_DTYPES)


def _rows_of(path: Path) -> list[dict]:
    """The leaderboard rows of one results file; ValueError when its content is not usable."""
    results = Results.from_dict(json.loads(path.read_text(encoding="utf-8")))
    training = results.training or {}
    provenance = {
        "seed": results.seed, "learning_rate": results.learning_rate, "checkpoint_step": results.checkpoint_step,
        "train_steps": _optional(training, "train_steps", int),
        "steps_per_second": _optional(training, "steps_per_second", Real),
        "train_seconds": _optional(training, "train_seconds", Real),
        "upstream_parameters": results.upstream_parameters, "pretrain_hours": results.pretrain_hours,
        **_cost_columns(results.cost or {}),
    }
    weights, metric = results.layer_weights, results.primary_metric
    rows = []
    for split, metrics in results.splits.items():
        value = metrics[metric]
        chosen_by = metrics.get(results.selection_metric or metric, value)  # what picked the run's checkpoint
        others = {k: v for k, v in metrics.items() if k != metric and k not in BOOKKEEPING_KEYS}
        utterances, trials = _count(metrics, "utterances"), _count(metrics, "trials")
        rows.append({
            "upstream": results.upstream_label or results.upstream, "task": results.task,
            "track": results.track or results.task, "dataset": results.dataset or "unspecified", "split": split,
            "metric": metric, "value": float(value), "selection_value": float(chosen_by),
            "higher_is_better": results.higher_is_better,
            "other_metrics": json.dumps(others, sort_keys=True), "utterances": utterances, "trials": trials,
            **provenance,
            "experiment": results.experiment or path.parent.name,
            "upstream_checkpoint": results.upstream_checkpoint, "upstream_fingerprint": results.upstream_fingerprint,
            "layer_weights": None if weights is None else json.dumps(weights), "path": str(path),
        })
    return rows


def _cost_columns(cost: dict) -> dict:
    """The :data:`COST_COLUMNS` of a ``cost`` record; ValueError when one holds a wrong type."""
    device = cost.get("device")
    if device is not None and not isinstance(device, str):
        raise ValueError(f"cost 'device' is not a string: {device!r}")
    return {"parameters_used": _optional(cost, "parameters_used", int),
            "macs_per_second": _optional(cost, "macs_per_second", Real), "rtf": _optional(cost, "rtf", Real),
            "peak_mem_mb": _optional(cost, "peak_mem_mb", Real), "cost_device": device}


def _is_number(value, kind: type) -> bool:
    """Whether ``value`` is an instance of the numeric ``kind`` (``int`` or ``Real``), booleans excluded."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _count(record: dict, key: str) -> int | None:
    """``record[key]`` as an int when it is a whole number (``37720`` or ``37720.0``: metrics dicts hold
    floats), None when absent or null; ValueError otherwise."""
    value = _optional(record, key, Real)
    if value is None:
        return None
    if not float(value).is_integer():
        raise ValueError(f"{key!r} is not a whole number: {value!r}")
    return int(value)


def _optional(record: dict, key: str, kind: type):
    """``record[key]`` when it is a number of ``kind``, None when absent or null; ValueError otherwise."""
    value = record.get(key)
    if value is not None and not _is_number(value, kind):
        raise ValueError(f"{key!r} is not a number: {value!r}")
    return value
