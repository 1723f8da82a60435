"""``python -m leaderboard.layers DIR [DIR ...]``: which layer wins QbE for each upstream, next to the layer
weights the PR head learns for it.

QbE (docs/qbe.md) trains nothing: it searches with every layer of the upstream and keeps the one with the
best dev MTWV. Phoneme recognition learns a softmax weight per layer. Both ask where an upstream keeps its
phonetic content; this table puts the two answers side by side, one row per upstream (its
``upstream_label``, so QbE runs in one folder meet PR runs of the same upstream in another):

- **QbE** (track ``qbe``): each seed's chosen layer (``layer`` in results.json), the most frequent of them
  (ties: the lower layer) with its count, each layer's dev MTWV and dev MAP (``layers`` in results.json;
  mean over seeds), and the test MTWV and MAP of each seed's chosen layer (mean over seeds);
- **PR** (track ``pr``): the learned layer weights of the runs at the learning rate chosen on dev
  (:func:`leaderboard.select.choose_learning_rates`), mean over seeds and folds
  (:func:`leaderboard.report.layer_weight_profiles`, as ``layer_weights.csv``), the top-weighted layer
  (ties: the lower) and the weights' centre (:func:`leaderboard.report.weight_centre`);
- ``agree``: whether the QbE layer (the most frequent) is PR's top layer; ``layer_gap``: QbE layer − PR
  top layer.

Layers count from 0, the input to the first block. A row per upstream with QbE runs: one without PR runs
keeps its PR side empty, and upstreams without QbE runs are left out (their weights are in
``layer_weights.csv``), as are single-layer upstreams (FBANK). Where a track ran on several datasets, an
upstream has a row per (QbE dataset, PR dataset).

Prints the table as Markdown; ``--out FILE.csv`` or ``--out FILE.md`` also writes it (CSV: per-layer values
as JSON lists, per-seed layers as ``seed:layer``). ``python -m leaderboard`` writes the same table as
``qbe_layers.csv``, with a plot per upstream in report.html, when its folder holds both tracks.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import warnings
from collections import Counter
from numbers import Real
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: the non-interactive backend (as report.py)
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from core.cli import run_main
from core.runs import Results

from .collect import _is_number, collect
from .report import layer_weight_profiles, small_multiples, weight_centre
from .select import choose_learning_rates

QBE_TRACK, PR_TRACK = "qbe", "pr"
LAYER_METRICS = ("dev_mtwv", "dev_map", "test_mtwv", "test_map")
"""The per-layer metrics read from a QbE results.json's ``layers`` entries."""
COLUMNS = ["upstream", "qbe_dataset", "qbe_runs", "qbe_seed_layers", "qbe_layer", "qbe_layer_votes",
           "qbe_dev_mtwv", "qbe_dev_map", "qbe_test_mtwv", "qbe_test_map",
           "pr_dataset", "pr_runs", "pr_learning_rate", "pr_weights", "pr_top_layer", "pr_top_weight", "pr_centre",
           "agree", "layer_gap"]
"""Columns of :func:`layer_comparison`. ``qbe_seed_layers``: (seed, chosen layer) per QbE run;
``qbe_dev_mtwv``, ``qbe_dev_map``, ``pr_weights``: one value per layer (NaN: a layer QbE did not search)."""
LIST_COLUMNS = ("qbe_dev_mtwv", "qbe_dev_map", "pr_weights")
_QBE_COLUMNS = COLUMNS[1:10]
_PR_COLUMNS = COLUMNS[10:17]
_DTYPES = {"qbe_runs": "Int64", "qbe_layer": "Int64", "qbe_layer_votes": "Int64", "qbe_test_mtwv": "float64",
           "qbe_test_map": "float64", "pr_runs": "Int64", "pr_learning_rate": "float64", "pr_top_layer": "Int64",
           "pr_top_weight": "float64", "pr_centre": "float64", "agree": "boolean", "layer_gap": "Int64"}


def collect_roots(roots: list[Path]) -> pd.DataFrame:
    """:func:`leaderboard.collect.collect` of every folder, concatenated (a results file reached from two
    folders counted once); ValueError naming a folder without any usable results.json."""
    frames = []
    for root in roots:
        runs = collect(root)
        if runs.empty:
            where = "" if Path(root).is_dir() else " (no such directory)"
            raise ValueError(f"no usable results.json found under {root}{where}")
        frames.append(runs)
    return pd.concat(frames, ignore_index=True).drop_duplicates(["path", "split"], ignore_index=True)


def _qbe_record(path: str) -> tuple[int, int, dict[int, dict[str, float]]]:
    """(chosen layer, number of layers, layer -> :data:`LAYER_METRICS`) of one QbE results.json;
    ValueError when it does not record them."""
    results = Results.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    chosen, entries = results.extra.get("layer"), results.extra.get("layers")
    if not _is_number(chosen, int):
        raise ValueError("no chosen 'layer' (not a QbE results file?)")
    if not isinstance(entries, list) or not entries:
        raise ValueError("no per-layer results 'layers' (not a QbE results file?)")
    per_layer = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _is_number(entry.get("layer"), int) or entry["layer"] < 0:
            raise ValueError(f"a 'layers' entry without a layer index: {entry!r}")
        values = {}
        for key in LAYER_METRICS:
            value = entry.get(key)
            if value is not None and not _is_number(value, Real):
                raise ValueError(f"layer {entry['layer']}: {key!r} is not a number: {value!r}")
            values[key] = math.nan if value is None else float(value)
        per_layer[entry["layer"]] = values
    if chosen not in per_layer:
        raise ValueError(f"the chosen layer {chosen} is not among the searched layers {sorted(per_layer)}")
    return chosen, max(len(results.layer_weights or []), max(per_layer) + 1), per_layer


def qbe_layer_runs(runs: pd.DataFrame, track: str = QBE_TRACK) -> pd.DataFrame:
    """One row per run of ``track`` in collected ``runs``: upstream, dataset, seed, experiment, path, the
    chosen ``layer``, ``n_layers`` and per layer (a list, NaN where not searched) each of
    :data:`LAYER_METRICS`, read from the run's results.json. A file without per-layer results is skipped
    with a warning naming it."""
    rows = []
    for run in runs[runs["track"] == track].drop_duplicates("path").itertuples(index=False):
        try:
            chosen, width, per_layer = _qbe_record(run.path)
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping {run.path} for the QbE layer table: {err}", stacklevel=2)
            continue
        row = {"upstream": run.upstream, "dataset": run.dataset, "seed": run.seed, "experiment": run.experiment,
               "path": run.path, "layer": chosen, "n_layers": width}
        for key in LAYER_METRICS:
            row[key] = [per_layer[i][key] if i in per_layer else math.nan for i in range(width)]
        rows.append(row)
    return pd.DataFrame(rows, columns=["upstream", "dataset", "seed", "experiment", "path", "layer", "n_layers",
                                       *LAYER_METRICS])


def _layer_means(lists: list[list[float]]) -> list[float]:
    """Per position, the mean of the known (non-NaN) values of ``lists`` (padded to the longest); NaN where none."""
    width = max(len(values) for values in lists)
    stack = np.array([list(values) + [math.nan] * (width - len(values)) for values in lists], dtype=float)
    known = ~np.isnan(stack)
    sums = np.where(known, stack, 0.0).sum(axis=0)
    counts = known.sum(axis=0)
    return [float(s / c) if c else math.nan for s, c in zip(sums, counts, strict=True)]


def _seed_key(seed) -> tuple:
    return (pd.isna(seed), 0 if pd.isna(seed) else int(seed))


def _qbe_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per upstream and dataset (multi-layer upstreams only): the :data:`COLUMNS` of the QbE side."""
    rows = []
    for (upstream, dataset), group in per_run[per_run["n_layers"] > 1].groupby(["upstream", "dataset"], sort=True):
        pairs = sorted(((None if pd.isna(s) else int(s), int(layer)) for s, layer in zip(group["seed"], group["layer"],
                                                                                         strict=True)),
                       key=lambda pair: _seed_key(pair[0]))
        votes = Counter(layer for _, layer in pairs)
        most = max(votes.values())
        mode = min(layer for layer, count in votes.items() if count == most)
        chosen = [(run.layer, run.test_mtwv[run.layer], run.test_map[run.layer]) for run in group.itertuples()]
        rows.append({"upstream": upstream, "qbe_dataset": dataset, "qbe_runs": len(group), "qbe_seed_layers": pairs,
                     "qbe_layer": mode, "qbe_layer_votes": most,
                     "qbe_dev_mtwv": _layer_means(list(group["dev_mtwv"])),
                     "qbe_dev_map": _layer_means(list(group["dev_map"])),
                     "qbe_test_mtwv": float(np.mean([mtwv for _, mtwv, _ in chosen])),
                     "qbe_test_map": float(np.mean([map_ for _, _, map_ in chosen]))})
    return pd.DataFrame(rows, columns=["upstream", *_QBE_COLUMNS])


def _pr_summary(runs: pd.DataFrame, track: str, split: str) -> pd.DataFrame:
    """Per upstream and dataset (multi-layer upstreams only): the :data:`COLUMNS` of the PR side, from the
    runs of ``track`` at the learning rate chosen on dev."""
    chosen = choose_learning_rates(runs[runs["track"] == track])
    chosen = chosen[chosen["selected"]]
    profiles = layer_weight_profiles(chosen, split)
    rows = []
    for (upstream, dataset), here in profiles.groupby(["upstream", "dataset"], sort=True):
        weights = here.set_index("layer")["mean"].sort_index()
        top = int(weights.idxmax())  # the first maximum: ties go to the lower layer
        rates = chosen.loc[(chosen["upstream"] == upstream) & (chosen["dataset"] == dataset),
                           "learning_rate"].dropna().unique()
        rows.append({"upstream": upstream, "pr_dataset": dataset, "pr_runs": int(here["n"].max()),
                     "pr_learning_rate": float(rates[0]) if len(rates) == 1 else math.nan,
                     "pr_weights": [float(w) for w in weights.reindex(range(int(weights.index.max()) + 1))],
                     "pr_top_layer": top, "pr_top_weight": float(weights[top]), "pr_centre": weight_centre(weights)})
    return pd.DataFrame(rows, columns=["upstream", *_PR_COLUMNS])


def layer_comparison(runs: pd.DataFrame, qbe_track: str = QBE_TRACK, pr_track: str = PR_TRACK,
                     split: str = "test", source: str = "the collected runs") -> pd.DataFrame:
    """The QbE-against-PR layer table (:data:`COLUMNS`, a row per multi-layer upstream with QbE runs, sorted)
    from collected ``runs`` (:func:`leaderboard.collect.collect`, possibly of several folders); PR's weights
    from its ``split`` rows.

    ValueError naming ``source`` and the tracks it has when it has no run of ``qbe_track`` or of
    ``pr_track``, or when no run of ``qbe_track`` records per-layer results.
    """
    tracks = sorted(set(runs["track"].dropna()))
    for track in (qbe_track, pr_track):
        if track not in tracks:
            raise ValueError(f"no runs of track {track!r} in {source}; tracks found: {', '.join(tracks) or 'none'}")
    per_run = qbe_layer_runs(runs, qbe_track)
    if per_run.empty:
        raise ValueError(f"no run of track {qbe_track!r} in {source} records per-layer results ('layer' and "
                         "'layers' in results.json, as QbE writes them)")
    table = pd.merge(_qbe_summary(per_run), _pr_summary(runs, pr_track, split), on="upstream", how="left")
    table = table.sort_values(["upstream", "qbe_dataset", "pr_dataset"], na_position="last", ignore_index=True)
    for column in (*LIST_COLUMNS, "qbe_seed_layers"):
        table[column] = table[column].map(lambda v: v if isinstance(v, list) else None)
    both = table["qbe_layer"].notna() & table["pr_top_layer"].notna()
    table["agree"] = pd.array([q == p if known else pd.NA for q, p, known
                               in zip(table["qbe_layer"], table["pr_top_layer"], both, strict=True)], dtype="boolean")
    table["layer_gap"] = pd.array([int(q) - int(p) if known else pd.NA for q, p, known
                                   in zip(table["qbe_layer"], table["pr_top_layer"], both, strict=True)], dtype="Int64")
    return table[COLUMNS].astype(_DTYPES)


def csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`layer_comparison` output for a CSV file: per-layer lists as JSON (NaN as null), per-seed layers
    as ``seed:layer`` separated by spaces (``?``: a run without a seed)."""
    out = table.copy()
    for column in LIST_COLUMNS:
        out[column] = out[column].map(lambda v: None if v is None else json.dumps(
            [None if math.isnan(x) else x for x in v]))
    out["qbe_seed_layers"] = out["qbe_seed_layers"].map(lambda v: None if v is None else " ".join(
        f"{'?' if seed is None else seed}:{layer}" for seed, layer in v))
    return out


def write_csv(table: pd.DataFrame, path: Path) -> None:
    csv_frame(table).to_csv(path, index=False)


def _values(values, fmt: str, mark) -> str:
    """Per-layer values in a row of text, the one at layer ``mark`` in brackets, ``–`` for NaN."""
    if values is None:
        return "–"
    shown = ["–" if math.isnan(v) else format(v, fmt) for v in values]
    if mark is not None and not pd.isna(mark) and 0 <= int(mark) < len(shown):
        shown[int(mark)] = f"[{shown[int(mark)]}]"
    return " ".join(shown)


def _agreement(agree, gap) -> str:
    if pd.isna(agree):
        return "–"
    return "yes" if agree else f"no (QbE {int(gap):+d})"


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`layer_comparison` output as strings: per-layer values in a row, the chosen (QbE) and the top
    (PR) layer's in brackets; dataset columns only where a track ran on several datasets."""
    def known(value, fmt: str) -> str:
        return "–" if pd.isna(value) else format(value, fmt)

    out = pd.DataFrame({"upstream": table["upstream"]})
    if table["qbe_dataset"].nunique() > 1 or table["pr_dataset"].nunique() > 1:
        out["QbE data"] = table["qbe_dataset"].fillna("–")
        out["PR data"] = table["pr_dataset"].fillna("–")
    out["QbE layer per seed"] = table["qbe_seed_layers"].map(lambda v: "–" if v is None else ", ".join(
        f"{'?' if seed is None else seed}:{layer}" for seed, layer in v))
    out["QbE layer (votes)"] = [f"{q} ({v}/{n})" if not pd.isna(q) else "–" for q, v, n
                                in zip(table["qbe_layer"], table["qbe_layer_votes"], table["qbe_runs"], strict=True)]
    out["QbE dev MTWV per layer"] = [_values(v, ".3f", q) for v, q
                                     in zip(table["qbe_dev_mtwv"], table["qbe_layer"], strict=True)]
    out["QbE dev MAP per layer"] = [_values(v, ".3f", q) for v, q
                                    in zip(table["qbe_dev_map"], table["qbe_layer"], strict=True)]
    out["QbE test MTWV / MAP"] = [f"{known(t, '.3f')} / {known(m, '.3f')}" if not pd.isna(t) else "–"
                                  for t, m in zip(table["qbe_test_mtwv"], table["qbe_test_map"], strict=True)]
    out["PR weights per layer"] = [_values(v, ".2f", p) for v, p
                                   in zip(table["pr_weights"], table["pr_top_layer"], strict=True)]
    out["PR lr (runs)"] = [f"{known(lr, 'g')} ({n})" if not pd.isna(n) else "–"
                           for lr, n in zip(table["pr_learning_rate"], table["pr_runs"], strict=True)]
    out["PR top layer"] = table["pr_top_layer"].map(lambda v: known(v, "d"))
    out["agree"] = [_agreement(a, g) for a, g in zip(table["agree"], table["layer_gap"], strict=True)]
    return out


def format_markdown(table: pd.DataFrame) -> str:
    """The display table (:func:`display_frame`) as a GitHub Markdown table."""
    shown = display_frame(table)
    return shown.to_markdown(index=False, disable_numparse=True, colalign=("left",) * len(shown.columns))


QBE_COLOUR, PR_COLOUR = "#4878a8", "#c44e52"


def plot_layer_comparison(table: pd.DataFrame):
    """Small multiples, one per row of ``table``: QbE's dev MTWV per layer (mean over seeds; dashed line at the
    chosen layer) and, on a second axis, the PR head's mean layer weights (dotted line at the top layer);
    None for an empty table."""
    if table.empty:
        return None
    fig, axes = small_multiples(len(table), 3.6, 2.8)
    repeated = table["upstream"].duplicated(keep=False)
    for ax, row, again in zip(axes.flat, table.itertuples(index=False), repeated, strict=False):  # spare: hidden
        handles = []
        if row.qbe_dev_mtwv is not None:
            mtwv = np.asarray(row.qbe_dev_mtwv, dtype=float)
            known = ~np.isnan(mtwv)
            handles += ax.plot(np.arange(len(mtwv))[known], mtwv[known], marker="o", markersize=4,
                               color=QBE_COLOUR, label="QbE dev MTWV")
            handles.append(ax.axvline(row.qbe_layer, color=QBE_COLOUR, linestyle="--", linewidth=1,
                                      label=f"QbE layer {row.qbe_layer} ({row.qbe_layer_votes}/{row.qbe_runs})"))
            ax.set_ylabel("QbE dev MTWV", fontsize=8, color=QBE_COLOUR)
        if row.pr_weights is not None:
            twin = ax.twinx()
            weights = np.asarray(row.pr_weights, dtype=float)
            handles += twin.plot(np.arange(len(weights)), weights, marker="s", markersize=4, color=PR_COLOUR,
                                 label="PR layer weight")
            handles.append(twin.axvline(row.pr_top_layer, color=PR_COLOUR, linestyle=":", linewidth=1.5,
                                        label=f"PR top layer {row.pr_top_layer}"))
            twin.set_ylim(bottom=0)
            twin.set_ylabel("PR layer weight", fontsize=8, color=PR_COLOUR)
            twin.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("layer (0 = the input to the first block)", fontsize=8)
        title = row.upstream
        if again:
            title += f"\nQbE {row.qbe_dataset or '–'}, PR {row.pr_dataset or '–'}"
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=6)
    return fig


REPORT_HEADING = "QbE's best layer against PR's learned layer weights, per upstream"
REPORT_NOTE = ("QbE (training-free) keeps the layer with the best dev MTWV, per seed; PR learns softmax weights "
               "over the layers (mean over seeds and folds at the learning rate chosen on dev). Brackets: QbE's "
               "most frequent layer, PR's top layer; agree: whether they are the same layer (otherwise QbE's "
               "layer minus PR's). The numbers: qbe_layers.csv.")


def report_section(table: pd.DataFrame) -> tuple[str, object, str, str]:
    """(heading, figure or None, note, HTML table) of the comparison for
    :func:`leaderboard.report.render_html`'s ``extra_sections``."""
    return (REPORT_HEADING, plot_layer_comparison(table), REPORT_NOTE,
            display_frame(table).to_html(index=False, escape=True, border=0))


def main(argv: list[str] | None = None) -> int:
    """CLI; 0 on success, 2 when there is nothing to compare (``error: ...``)."""
    p = argparse.ArgumentParser(prog="python -m leaderboard.layers", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("results_roots", nargs="+", type=Path, metavar="DIR",
                   help="folders searched recursively for results.json files (QbE and PR runs may be in different "
                        "ones)")
    p.add_argument("--qbe-track", default=QBE_TRACK, help=f"track of the QbE runs (default: {QBE_TRACK})")
    p.add_argument("--pr-track", default=PR_TRACK,
                   help=f"track whose learned layer weights are shown (default: {PR_TRACK})")
    p.add_argument("--split", default="test", help="split whose PR rows give the weights (default: test)")
    p.add_argument("--out", type=Path, default=None, help="also write the table to FILE.csv or FILE.md")
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), log_level=logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.suffix not in (".csv", ".md"):
        raise ValueError(f"--out {args.out}: the file must end in .csv or .md")
    runs = collect_roots(args.results_roots)
    table = layer_comparison(runs, args.qbe_track, args.pr_track, args.split,
                             source=", ".join(str(root) for root in args.results_roots))
    if table.empty:
        raise ValueError(f"no upstream with more than one layer has runs of track {args.qbe_track!r}")
    markdown = format_markdown(table)
    print(markdown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".csv":
            write_csv(table, args.out)
        else:
            args.out.write_text(markdown + "\n", encoding="utf-8")
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
