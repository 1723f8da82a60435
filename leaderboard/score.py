"""The SUPERB score and the one-row-per-upstream leaderboard table.

For an upstream u, a track t (a task setting: ``ks``, ``asr``, ``asr_10min``, ``st``) and each
reference metric i of that track::

    score(u, t) = 1000 * mean_i (s_i(u) - s_i(baseline)) / (s_i(reference) - s_i(baseline))

and the SUPERB score of u is the mean of ``score(u, t)`` over the tracks where both u and the
baseline have results. The baseline (FBANK) scores 0, the reference (the published state of the art
by default) 1000; for error rates both differences are negative, so lower is still better. Values
are in the units ``results.json`` stores: accuracy as a fraction, WER/CER in %, BLEU 0-100.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Real

import pandas as pd

from .collect import _is_number


@dataclass(frozen=True)
class Reference:
    """The value a track's metric scores 1000 at, and where that value comes from."""

    metric: str
    value: float
    source: str


DEFAULT_REFERENCES: dict[str, tuple[Reference, ...]] = {
    "ks": (Reference("accuracy", 0.9669, "WavLM Base+, SUPERB KS (Speech Commands v1, frozen)"),),
    "asr": (Reference("wer", 3.62, "HuBERT Large, SUPERB ASR (test-clean, no LM, frozen)"),),
    "asr_10min": (Reference("wer", 4.8, "wav2vec 2.0 Large + Transformer LM, 10 min fine-tuned (test-clean)"),),
    "st": (Reference("bleu", 19.89, "HuBERT Large, SUPERB-SG ST (CoVoST 2 En-De, frozen)"),),
}


def parse_reference(spec: str) -> tuple[str, Reference]:
    """``track:metric=value`` (e.g. ``st:bleu=25.3``) -> (track, Reference); ValueError naming ``spec``."""
    try:
        key, value = spec.split("=", 1)
        track, metric = key.split(":", 1)
        number = float(value)
    except ValueError:
        raise ValueError(f"reference {spec!r} is not track:metric=value (e.g. st:bleu=25.3)") from None
    if not track or not metric or not math.isfinite(number):
        raise ValueError(f"reference {spec!r} is not track:metric=value (e.g. st:bleu=25.3)")
    return track, Reference(metric, number, "given on the command line")


def with_overrides(overrides: list[str]) -> dict[str, tuple[Reference, ...]]:
    """:data:`DEFAULT_REFERENCES` with each ``track:metric=value`` replacing that track's metric (or adding it)."""
    references = {track: {r.metric: r for r in refs} for track, refs in DEFAULT_REFERENCES.items()}
    for spec in overrides:
        track, ref = parse_reference(spec)
        references.setdefault(track, {})[ref.metric] = ref
    return {track: tuple(refs.values()) for track, refs in references.items()}


def superb_score(value: float, baseline: float, reference: float) -> float:
    """``1000 (value - baseline) / (reference - baseline)``; NaN when reference equals baseline."""
    if reference == baseline:
        return math.nan
    return 1000.0 * (value - baseline) / (reference - baseline)


def metric_table(runs: pd.DataFrame, split: str) -> pd.DataFrame:
    """Every metric of ``split`` (primary and ``other_metrics``), averaged over seeds.

    Returns columns ``upstream, column, track, metric, higher_is_better, primary, mean, std, n``;
    ``column`` is the track, or ``track (dataset)`` when a track ran on several datasets.
    """
    rows = []
    for run in runs[runs["split"] == split].itertuples(index=False):
        rows.append((run.upstream, run.track, run.dataset, run.metric, run.value, True, run.higher_is_better))
        for metric, value in json.loads(run.other_metrics).items():
            if _is_number(value, Real):
                rows.append((run.upstream, run.track, run.dataset, metric, float(value), False, None))
    long = pd.DataFrame(rows, columns=["upstream", "track", "dataset", "metric", "value", "primary", "higher_is_better"])
    datasets = long.groupby("track")["dataset"].nunique()
    several = long["track"].map(datasets) > 1
    long["column"] = long["track"].where(~several, long["track"] + " (" + long["dataset"] + ")")
    return (long.groupby(["upstream", "column", "track", "metric"], sort=False)
            .agg(higher_is_better=("higher_is_better", "first"), primary=("primary", "any"),
                 mean=("value", "mean"), std=("value", "std"), n=("value", "size"))
            .reset_index())


def score_table(metrics: pd.DataFrame, baseline: str, references: dict[str, tuple[Reference, ...]]) -> pd.DataFrame:
    """Per (upstream, column): the SUPERB score of that column (NaN without baseline or reference results)."""
    means = metrics.set_index(["upstream", "column", "metric"])["mean"]
    rows = []
    for (upstream, column, track), _ in metrics.groupby(["upstream", "column", "track"], sort=False):
        parts = []
        for ref in references.get(track, ()):
            mine, base = means.get((upstream, column, ref.metric)), means.get((baseline, column, ref.metric))
            if mine is not None and base is not None:
                parts.append(superb_score(mine, base, ref.value))
        rows.append((upstream, column, sum(parts) / len(parts) if parts else math.nan))
    return pd.DataFrame(rows, columns=["upstream", "column", "score"])


def leaderboard_table(runs: pd.DataFrame, split: str = "test", baseline: str = "fbank",
                      references: dict[str, tuple[Reference, ...]] | None = None) -> pd.DataFrame:
    """One row per upstream: parameters, pre-training hours, each column's primary metric (mean, std,
    seeds), each column's SUPERB score, ``scored_tasks``, the SUPERB score and the rank.

    ``runs`` is :func:`leaderboard.collect.collect` output. The SUPERB score averages every column's
    score, so an upstream missing a column (or a column without baseline results) has none and is
    not ranked: averages over different task sets would not compare. Sorted by SUPERB score, best
    first, unranked upstreams last.
    """
    references = DEFAULT_REFERENCES if references is None else references
    metrics = metric_table(runs, split)
    if metrics.empty:
        raise ValueError(f"no results for split {split!r}")
    scores = score_table(metrics, baseline, references)
    primary = metrics[metrics["primary"]]
    table = pd.DataFrame({"upstream": sorted(metrics["upstream"].unique())}).set_index("upstream")
    about = runs.groupby("upstream").agg(parameters=("upstream_parameters", "max"),
                                         pretrain_hours=("pretrain_hours", "max"))
    table = table.join(about)
    for column in primary["column"].drop_duplicates():
        here = primary[primary["column"] == column].set_index("upstream")
        metric = here["metric"].iloc[0]
        table[f"{column} {metric}"] = here["mean"]
        table[f"{column} {metric} std"] = here["std"]
        table[f"{column} n"] = here["n"].astype("Int64")
        table[f"{column} score"] = scores[scores["column"] == column].set_index("upstream")["score"]
    score_columns = [c for c in table.columns if c.endswith(" score")]
    table["scored_tasks"] = table[score_columns].notna().sum(axis=1)
    table["superb_score"] = table[score_columns].mean(axis=1, skipna=False)  # only over the full set of tracks
    table = table.reset_index().sort_values(["superb_score", "upstream"], ascending=[False, True], na_position="last")
    table["rank"] = table["superb_score"].rank(ascending=False, method="min").astype("Int64")
    return table.reset_index(drop=True)
