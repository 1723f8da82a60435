"""Gather every ``results.json`` under a results root into one tidy leaderboard table.

Each downstream experiment writes ``<results_root>/<experiment>/results.json`` holding its
provenance (task, upstream, seed, checkpoint, ...) and one metrics dict per evaluated split.
:func:`collect` turns those files into one row per (experiment, split), :func:`summarise`
averages the primary metric over seeds (never over datasets: ``dataset`` names the corpus and training set), and :func:`write_leaderboard` / :func:`main` save the
rows as CSV and print a ranked table. The ``upstream`` column is the run's ``upstream_label``
(``apc:apc_tiny``, ``apc:random``, ``fbank``) where present, so pre-trained and random-weights
runs of one architecture are ranked apart. Only results files are read; nothing is imported from
the rest of the project.

    python -m leaderboard RESULTS_ROOT [-o leaderboard.csv] [--split test]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from numbers import Real
from pathlib import Path

import pandas as pd

COLUMNS = [
    "upstream", "task", "dataset", "split", "metric", "value", "higher_is_better", "other_metrics",
    "seed", "experiment", "upstream_checkpoint", "upstream_fingerprint", "checkpoint_step",
    "train_steps", "steps_per_second", "train_seconds", "path",
]
SUMMARY_COLUMNS = ["upstream", "task", "dataset", "split", "metric", "higher_is_better", "mean", "std", "n"]
REQUIRED_KEYS = ("task", "upstream", "primary_metric", "higher_is_better", "splits")
BOOKKEEPING_KEYS = ("utterances", "seconds")
_DTYPES = {
    "value": "float64", "higher_is_better": "bool", "seed": "Int64", "checkpoint_step": "Int64",
    "train_steps": "Int64", "steps_per_second": "float64", "train_seconds": "float64",
}


def collect(results_root: str | Path) -> pd.DataFrame:
    """One row per (experiment, split) for every ``results.json`` found recursively under ``results_root``.

    ``metric``/``value`` hold the primary metric; the split's remaining metrics (bookkeeping keys
    ``utterances`` and ``seconds`` excluded) go to ``other_metrics`` as a JSON object string.
    A results file that cannot be read or lacks the expected fields is skipped with a warning
    naming it. A root without results (or that does not exist) gives an empty frame with
    :data:`COLUMNS`.
    """
    rows = []
    for path in sorted(Path(results_root).rglob("results.json")):
        try:
            rows.extend(_rows_of(path))
        except (OSError, ValueError) as err:  # ValueError covers bad JSON, bad UTF-8 and bad fields
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
    return pd.DataFrame(rows, columns=COLUMNS).astype(_DTYPES)


def _rows_of(path: Path) -> list[dict]:
    """The leaderboard rows of one results file; ValueError when its content is not usable."""
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict):
        raise ValueError("top level is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    for key in ("task", "upstream", "primary_metric"):
        if not isinstance(results[key], str):
            raise ValueError(f"{key!r} is not a string")
    if not isinstance(results["higher_is_better"], bool):
        raise ValueError("'higher_is_better' is not true or false")
    splits, metric = results["splits"], results["primary_metric"]
    if not isinstance(splits, dict) or not splits:
        raise ValueError("'splits' is not a non-empty object")
    training = results.get("training") or {}
    if not isinstance(training, dict):
        raise ValueError("'training' is not an object")
    provenance = {
        "seed": _optional(results, "seed", int), "checkpoint_step": _optional(results, "checkpoint_step", int),
        "train_steps": _optional(training, "train_steps", int),
        "steps_per_second": _optional(training, "steps_per_second", Real),
        "train_seconds": _optional(training, "train_seconds", Real),
    }
    rows = []
    for split, metrics in splits.items():
        value = metrics.get(metric) if isinstance(metrics, dict) else None
        if not _is_number(value, Real):
            raise ValueError(f"split {split!r} has no numeric {metric!r}")
        others = {k: v for k, v in metrics.items() if k != metric and k not in BOOKKEEPING_KEYS}
        rows.append({
            "upstream": results.get("upstream_label") or results["upstream"], "task": results["task"],
            "dataset": str(results.get("dataset") or "unspecified"), "split": split,
            "metric": metric, "value": float(value), "higher_is_better": results["higher_is_better"],
            "other_metrics": json.dumps(others, sort_keys=True), **provenance,
            "experiment": results.get("experiment", path.parent.name),
            "upstream_checkpoint": results.get("upstream_checkpoint"),
            "upstream_fingerprint": results.get("upstream_fingerprint"), "path": str(path),
        })
    return rows


def _is_number(value, kind: type) -> bool:
    """Whether ``value`` is an instance of the numeric ``kind`` (``int`` or ``Real``), booleans excluded."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _optional(record: dict, key: str, kind: type):
    """``record[key]`` when it is a number of ``kind``, None when absent or null; ValueError otherwise."""
    value = record.get(key)
    if value is not None and not _is_number(value, kind):
        raise ValueError(f"{key!r} is not a number: {value!r}")
    return value


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN for a single run) and run count ``n`` per (upstream, task, dataset, split, metric).

    Sorted by task, then split, then best first (highest mean when ``higher_is_better``, lowest
    otherwise), ties broken by upstream name.
    """
    summary = (
        df.groupby(["upstream", "task", "dataset", "split", "metric"], sort=False)
        .agg(higher_is_better=("higher_is_better", "first"), mean=("value", "mean"),
             std=("value", "std"), n=("value", "size"))
        .reset_index()
    )
    goodness = summary["mean"].where(summary["higher_is_better"].astype(bool), -summary["mean"])
    order = (summary.assign(_goodness=goodness)
             .sort_values(["task", "dataset", "split", "_goodness", "upstream"], ascending=[True, True, True, False, True])
             .index)
    return summary.loc[order, SUMMARY_COLUMNS].reset_index(drop=True)


def write_leaderboard(results_root: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """Collect ``results_root`` and write the per-(experiment, split) rows to ``out_csv``; returns the rows."""
    df = collect(results_root)
    _write_csv(df, out_csv)
    return df


def _write_csv(df: pd.DataFrame, out_csv: str | Path) -> None:
    """Write ``df`` without its index to ``out_csv``, creating the parent folder if needed."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)


def _is_accuracy(metric: str) -> bool:
    """Whether ``metric`` is an accuracy-like fraction, shown as a percentage."""
    return metric.lower().endswith(("accuracy", "acc"))


def format_table(summary: pd.DataFrame) -> str:
    """Markdown table of ``summarise`` output: one line per (split, task, dataset, upstream) with ``mean ± std``.

    Accuracies are shown as percentages with 2 decimals, other metrics with 4 decimals; the
    ``± std`` part is left out for a single run.
    """
    lines = []
    for row in summary.itertuples(index=False):
        percent = _is_accuracy(row.metric)
        scale, digits = (100.0, 2) if percent else (1.0, 4)
        score = f"{row.mean * scale:.{digits}f}"
        if not math.isnan(row.std):
            score += f" ± {row.std * scale:.{digits}f}"
        lines.append({
            "split": row.split, "task": row.task, "dataset": row.dataset, "metric": f"{row.metric} (%)" if percent else row.metric,
            "upstream": row.upstream, "mean ± std": score, "n": row.n,
        })
    table = pd.DataFrame(lines, columns=["split", "task", "dataset", "metric", "upstream", "mean ± std", "n"])
    return table.to_markdown(index=False, colalign=("left",) * 6 + ("right",), disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: write the leaderboard CSV and print the ranked table; 0 on success, 1 when nothing is found."""
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("results_root", type=Path, help="folder searched recursively for results.json files")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="per-(experiment, split) CSV to write (default: RESULTS_ROOT/leaderboard.csv)")
    parser.add_argument("--split", action="append", default=None,
                        help="split to show in the printed table; repeatable (default: all). The CSV keeps every split")
    args = parser.parse_args(argv)

    df = collect(args.results_root)
    if df.empty:
        where = "" if args.results_root.is_dir() else " (no such directory)"
        print(f"no usable results.json found under {args.results_root}{where}", file=sys.stderr)
        return 1
    out_csv = args.output or args.results_root / "leaderboard.csv"
    _write_csv(df, out_csv)
    print(f"{len(df)} rows from {df['path'].nunique()} results files -> {out_csv}")

    shown = df if args.split is None else df[df["split"].isin(args.split)]
    if shown.empty:
        print(f"no results for split(s) {', '.join(args.split)} under {args.results_root}; "
              f"available: {', '.join(sorted(df['split'].unique()))}", file=sys.stderr)
        return 1
    print(format_table(summarise(shown)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
