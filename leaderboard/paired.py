"""``python -m leaderboard.paired RESULTS_ROOT --pair A=B [--pair A2=B2 ...]``: paired differences.

A study that changes one setting of a pre-training (same data, budget and seed, one setting apart) compares
its upstreams in pairs: pair k is ``A_k`` (with the change) against ``B_k`` (without), both pre-trained with
seed k. Per track, each pair's test metric (the mean over folds and downstream seeds, at the learning rate
chosen on dev, :func:`leaderboard.select.choose_learning_rates`) and its difference A − B; then the mean
and sample standard deviation of the differences, how many pairs moved the metric the better way, and
scipy's paired t-test (``ttest_rel``; with three pairs it detects only large, consistent effects).
Upstream names match the leaderboard's labels (``mockingjay:mockingjay_s1``) or their part after the colon.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel

from core.cli import run_main

from .collect import collect
from .score import higher_is_better_by_name
from .select import choose_learning_rates


def _label(upstreams: set[str], name: str) -> str:
    """The leaderboard label ``name`` means: itself, or the one label ending in ``:name``."""
    if name in upstreams:
        return name
    found = sorted(u for u in upstreams if u.split(":", 1)[-1] == name)
    if len(found) != 1:
        raise ValueError(f"upstream {name!r}: {'ambiguous: ' + ', '.join(found) if found else 'no results'}; "
                         f"upstreams with results: {', '.join(sorted(upstreams))}")
    return found[0]


def _metric_values(rows: pd.DataFrame, metric: str | None) -> pd.Series:
    """The primary metric of each row, or the other metric ``metric``."""
    if metric is None or (rows["metric"] == metric).all():
        return rows["value"]
    values = rows["other_metrics"].map(lambda s: json.loads(s).get(metric) if isinstance(s, str) else None)
    if values.isna().any():
        raise ValueError(f"metric {metric!r} missing from some runs of track {rows['track'].iloc[0]}")
    return values.astype(float)


def paired_differences(runs: pd.DataFrame, pairs: list[tuple[str, str]], split: str = "test",
                       metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per pair and track: a, b, their values and a − b; per track: mean and std of the differences,
    pairs better, n, t-test p) from collected ``runs``. ``metric``: another metric than each track's primary."""
    runs = choose_learning_rates(runs)
    runs = runs[runs["selected"] & (runs["split"] == split)]
    upstreams = set(runs["upstream"])
    labelled = [(_label(upstreams, a), _label(upstreams, b)) for a, b in pairs]
    rows = []
    for track, group in runs.groupby("track", sort=False):
        try:
            group = group.assign(_v=_metric_values(group, metric))
        except ValueError:  # another metric that this track does not record (a --metric of one track)
            continue
        means = group.groupby("upstream")["_v"].mean()
        for a, b in labelled:
            if a in means and b in means:
                rows.append({"track": track, "metric": metric or group["metric"].iloc[0],
                             "higher_is_better": bool(group["higher_is_better"].iloc[0]) if metric is None
                             else higher_is_better_by_name(metric),
                             "a": a, "b": b, "value_a": means[a], "value_b": means[b],
                             "difference": means[a] - means[b]})
    per_pair = pd.DataFrame(rows)
    if per_pair.empty:
        raise ValueError(f"no track has {split} results{f' with metric {metric}' if metric else ''} for both "
                         "upstreams of any pair")
    summary = []
    for (track, metric_name, higher), group in per_pair.groupby(["track", "metric", "higher_is_better"], sort=False):
        d = group["difference"].to_numpy()
        better = int((d > 0).sum() if higher else (d < 0).sum())
        p = float(ttest_rel(group["value_a"], group["value_b"]).pvalue) if len(d) > 1 and np.ptp(d) > 1e-9 else np.nan
        summary.append({"track": track, "metric": metric_name, "higher_is_better": higher, "pairs": len(d),
                        "mean_difference": d.mean(), "std_difference": d.std(ddof=1) if len(d) > 1 else np.nan,
                        "a_better": better, "t_test_p": p})
    return per_pair, pd.DataFrame(summary)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leaderboard.paired", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("results_root", type=Path, help="folder holding the runs' results.json files (searched below)")
    p.add_argument("--pair", action="append", required=True, metavar="A=B",
                   help="upstream A (with the change) against B (without); repeat per seed")
    p.add_argument("--split", default="test")
    p.add_argument("--metric", default=None, help="another metric than each track's primary (e.g. min_dcf_0.01)")
    p.add_argument("--out", type=Path, default=None, help="also write the two tables as Markdown to this file")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), log_level=logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    pairs = []
    for spec in args.pair:
        a, sep, b = spec.partition("=")
        if not sep or not a or not b:
            raise ValueError(f"--pair {spec!r} is not A=B")
        pairs.append((a, b))
    per_pair, summary = paired_differences(collect(args.results_root), pairs, args.split, args.metric)
    tables = [table.to_markdown(index=False, floatfmt=".4g") for table in (per_pair, summary)]
    text = (f"Paired differences A − B ({args.split}, at each upstream's learning rate chosen on dev)\n\n"
            f"{tables[0]}\n\n{tables[1]}\n")
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
