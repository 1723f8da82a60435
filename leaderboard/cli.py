"""``python -m leaderboard RESULTS_ROOT``: collect every results.json below it and write the leaderboard.

Writes into ``--out`` (default: RESULTS_ROOT)::

    runs.csv          one row per (experiment, split): every metric, the provenance, and whether the
                      run counts (``selected``: at the learning rate chosen on dev)
    leaderboard.csv   one row per upstream: a column per task metric (mean, std, runs, learning rate), parameters,
                      pre-training hours, cost (MACs per second of audio, real-time factor, peak memory),
                      per-task and overall SUPERB score, rank
    leaderboard.md    the same as a Markdown table (also printed)
    layer_weights.csv per upstream, track, dataset and layer: the learned layer weight's mean, std and
                      number of runs (seeds, folds) at the chosen learning rate; multi-layer upstreams only
    qbe_layers.csv    only where the folder holds both a qbe and a pr track: per upstream, the layer QbE
                      chose on dev (per seed) with every layer's dev MTWV and MAP, next to the PR head's
                      mean learned layer weights and top layer (python -m leaderboard.layers)
    report.html       self-contained page: the table, per-task bars, layer-weight heat maps (one per
                      upstream, its tracks side by side), QbE's best layer against PR's weights (with
                      qbe_layers.csv), SUPERB score against MACs and against parameters with the Pareto
                      front, pre-training curves
    score_vs_cost.png the score-against-cost figure of the report, where a ranked upstream has a cost record
"""
from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from core.cli import run_main

from .collect import collect
from .layers import PR_TRACK, QBE_TRACK, layer_comparison, report_section, write_csv
from .report import format_markdown, layer_weight_profiles, plot_cost, render_html, save_figure
from .score import DEFAULT_REFERENCES, leaderboard_table, with_overrides
from .select import choose_learning_rates

OUTPUTS = ("runs.csv", "leaderboard.csv", "leaderboard.md", "layer_weights.csv", "report.html")
COST_FIGURE = "score_vs_cost.png"
"""Written besides :data:`OUTPUTS` where a ranked upstream has a cost record (:func:`leaderboard.report.plot_cost`)."""
QBE_LAYERS = "qbe_layers.csv"
"""Written besides :data:`OUTPUTS` where the results hold both a ``qbe`` and a ``pr`` track."""


def write_outputs(results_root: Path, out_dir: Path, split: str = "test", baseline: str = "fbank",
                  references=None, title: str | None = None) -> str:
    """Write :data:`OUTPUTS` (and :data:`QBE_LAYERS` where there are QbE and PR runs) for the results under
    ``results_root`` into ``out_dir``; returns the Markdown.

    ValueError when there is no usable result for ``split``.
    """
    return _write_all(results_root, out_dir, split, baseline, references, title)[0]


def _write_all(results_root: Path, out_dir: Path, split: str, baseline: str, references,
               title: str | None) -> tuple[str, list[str]]:
    """:func:`write_outputs`; (the Markdown, the names of the files written)."""
    runs = collect(results_root)
    if runs.empty:
        where = "" if results_root.is_dir() else " (no such directory)"
        raise ValueError(f"no usable results.json found under {results_root}{where}")
    if split not in set(runs["split"]):
        raise ValueError(f"no results for split {split!r} under {results_root}; "
                         f"available: {', '.join(sorted(runs['split'].unique()))}")
    references = DEFAULT_REFERENCES if references is None else references
    table = leaderboard_table(runs, split, baseline, references)
    markdown = format_markdown(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = choose_learning_rates(runs)
    chosen.to_csv(out_dir / "runs.csv", index=False)
    (layer_weight_profiles(chosen[chosen["selected"]], split).drop(columns="column")
     .to_csv(out_dir / "layer_weights.csv", index=False))
    table.to_csv(out_dir / "leaderboard.csv", index=False)
    (out_dir / "leaderboard.md").write_text(markdown + "\n", encoding="utf-8")
    written, extra = list(OUTPUTS), []
    if {QBE_TRACK, PR_TRACK} <= set(runs["track"]):
        try:
            layers = layer_comparison(runs, split=split, source=str(results_root))
        except ValueError as err:  # the qbe runs record no per-layer results: the rest of the board stands
            warnings.warn(f"{QBE_LAYERS} not written: {err}", stacklevel=2)
        else:
            write_csv(layers, out_dir / QBE_LAYERS)
            written.insert(written.index("report.html"), QBE_LAYERS)
            if not layers.empty:
                extra.append(report_section(layers))
    cost_figure = plot_cost(table)
    if cost_figure is not None:
        save_figure(cost_figure, out_dir / COST_FIGURE)
        written.append(COST_FIGURE)
    page = render_html(table, runs, split, baseline, references, search_roots=[results_root],
                       title=title or f"Leaderboard: {results_root}", extra_sections=extra)
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    return markdown, written


def main(argv: list[str] | None = None) -> int:
    """CLI; 0 on success, 2 when there is nothing to show (``error: ...``)."""
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("results_root", type=Path, help="folder searched recursively for results.json files")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS_ROOT)")
    parser.add_argument("--split", default="test", help="split the table and scores use (default: test)")
    parser.add_argument("--baseline", default="fbank", help="upstream that scores 0 (default: fbank)")
    parser.add_argument("--reference", action="append", default=[], metavar="TRACK:METRIC=VALUE",
                        help="value that scores 1000, replacing the published default (e.g. st:bleu=25.3); repeatable")
    parser.add_argument("--title", default=None, help="report title")
    args = parser.parse_args(argv)
    return run_main(lambda: _board(args), log_level=logging.WARNING)


def _board(args: argparse.Namespace) -> int:
    """Write the outputs and print the table."""
    references = with_overrides(args.reference)
    out = args.out or args.results_root
    markdown, written = _write_all(args.results_root, out, args.split, args.baseline, references, args.title)
    print(markdown)
    print(f"-> {', '.join(str(out / name) for name in written)}")
    return 0
