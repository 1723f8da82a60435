"""Learning-rate search as SUPERB does it: per upstream and track, the rate with the best dev result counts.

A head's learning rate moves results a lot (SUPERB tunes it per upstream; FBANK on a small keyword
corpus swings by 30 points with it). When an upstream has runs of one track and dataset at several
learning rates (``learning_rate`` in ``results.json``), the mean of their dev selection metric (the
task's ``selection_metric``, its primary metric unless the task selects on another; over seeds and folds)
is compared, the best rate is kept, and only the runs at that rate reach the
leaderboard. Runs of an upstream at a single rate are kept as they are.
"""
from __future__ import annotations

import pandas as pd

GROUP = ["upstream", "track", "dataset"]
SELECTION_SPLIT = "dev"


def choose_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (:func:`leaderboard.collect.collect` output) with a boolean ``selected`` column.

    ValueError naming the upstream and track when runs at several rates have no dev results to choose by.
    """
    runs = runs.copy()
    runs["selected"] = True
    for (upstream, track, dataset), group in runs.groupby(GROUP, sort=False, dropna=False):
        rates = group["learning_rate"].dropna().unique()
        if len(rates) < 2:
            continue
        dev = group[group["split"] == SELECTION_SPLIT].groupby("learning_rate")[_selection_column(group)].mean()
        missing = sorted(set(rates) - set(dev.index))
        if missing:
            raise ValueError(f"{upstream} on {track} ({dataset}) ran at learning rates {sorted(rates)}, but those at "
                             f"{missing} have no {SELECTION_SPLIT} results to choose by")
        higher = bool(group["higher_is_better"].iloc[0])
        best = dev.idxmax() if higher else dev.idxmin()
        runs.loc[group.index, "selected"] = group["learning_rate"] == best
    return runs


def _selection_column(group: pd.DataFrame) -> str:
    """``selection_value`` (the dev metric that selected each run's checkpoint, e.g. IC's slot accuracy where
    the primary utterance accuracy is 0 for every rate) where the runs record it, else the primary ``value``."""
    if "selection_value" in group and group["selection_value"].notna().all():
        return "selection_value"
    return "value"


def chosen_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per upstream, track and dataset with a search: the rates tried, each one's dev mean, and the chosen one."""
    runs = choose_learning_rates(runs)
    dev = runs[runs["split"] == SELECTION_SPLIT]
    rows = []
    for (upstream, track, dataset), group in dev.groupby(GROUP, sort=False, dropna=False):
        means = group.groupby("learning_rate")[_selection_column(group)].mean()
        if len(means) > 1:
            chosen = group.loc[group["selected"], "learning_rate"].iloc[0]
            rows.append((upstream, track, dataset, group["metric"].iloc[0], chosen,
                         "; ".join(f"{lr:g}: {v:.4g}" for lr, v in means.items())))
    return pd.DataFrame(rows, columns=[*GROUP, "metric", "chosen_lr", "dev_mean_per_lr"])
