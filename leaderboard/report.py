"""Leaderboard outputs: the per-upstream CSV, a Markdown table and one self-contained HTML page.

The HTML page embeds its plots as PNG data URIs (no other files, no scripts):

- per-track bars of each upstream's primary metric (mean ± std over seeds);
- the learned layer weights (softmax of the featurizer's weights, averaged over seeds) as one heat
  map per track, upstreams × layers: which layers each task draws on;
- pre-training curves (validation loss against step) from the ``curve.tsv`` that
  ``upstream.pretrain`` writes beside each ``upstream.pt``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: the non-interactive backend
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .score import Reference, column_references, metric_table
from .select import choose_learning_rates, chosen_rates


def _is_accuracy(metric: str) -> bool:
    return metric.lower().endswith(("accuracy", "acc"))


def _metric_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, metric) for every ``<column> <metric>`` value column of :func:`leaderboard_table` output."""
    pairs = []
    for name in table.columns:
        if name.endswith(" n"):
            column = name[:-2]
            metric_col = next(c for c in table.columns
                              if c.startswith(f"{column} ") and not c.endswith((" std", " n", " lr", " score")))
            pairs.append((column, metric_col[len(column) + 1:]))
    return pairs


def _mean_std(mean, std, metric: str) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    scale = 100.0 if _is_accuracy(metric) else 1.0
    text = f"{mean * scale:.2f}"
    if std is not None and not pd.isna(std):
        text += f" ± {std * scale:.2f}"
    return text


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`leaderboard_table` output as strings: accuracies in %, ``mean ± std``, parameters in millions."""
    out = pd.DataFrame({
        "rank": table["rank"].map(lambda r: "–" if pd.isna(r) else str(int(r))),
        "upstream": table["upstream"],
        "params (M)": table["parameters"].map(lambda p: "–" if pd.isna(p) else f"{p / 1e6:.2f}"),
        "pre-training (h)": table["pretrain_hours"].map(lambda h: "–" if pd.isna(h) else f"{h:.2f}"),
    })
    for column, metric in _metric_columns(table):
        label = f"{column} {metric}" + (" (%)" if _is_accuracy(metric) else "")
        out[label] = [_mean_std(m, s, metric)
                      for m, s in zip(table[f"{column} {metric}"], table[f"{column} {metric} std"], strict=True)]
    for column, _ in _metric_columns(table):
        out[f"{column} lr"] = table[f"{column} lr"].map(lambda v: "–" if pd.isna(v) else f"{v:g}")
    for column, _ in _metric_columns(table):
        out[f"{column} score"] = table[f"{column} score"].map(lambda v: "–" if pd.isna(v) else f"{v:.0f}")
    total = len([c for c in table.columns if c.endswith(" score")])
    out["SUPERB score"] = [f"{v:.0f}" if not pd.isna(v) else f"– ({n}/{total} tasks)"
                           for v, n in zip(table["superb_score"], table["scored_tasks"], strict=True)]
    return out


def format_markdown(table: pd.DataFrame) -> str:
    """The display table as a GitHub Markdown table."""
    shown = display_table(table)
    return shown.to_markdown(index=False, disable_numparse=True,
                             colalign=("right", "left") + ("right",) * (len(shown.columns) - 2))


def plot_metrics(runs: pd.DataFrame, split: str):
    """One bar chart per column: each upstream's primary metric, error bars = std over seeds."""
    metrics = metric_table(runs, split)
    primary = metrics[metrics["primary"]]
    columns = list(primary["column"].drop_duplicates())
    upstreams = primary["upstream"].nunique()
    fig, axes = plt.subplots(1, len(columns), figsize=(max(4.2, 1.5 + 0.45 * upstreams) * len(columns), 4.2),
                             squeeze=False, layout="constrained")
    for ax, column in zip(axes[0], columns, strict=True):
        here = primary[primary["column"] == column].sort_values("upstream")
        metric = here["metric"].iloc[0]
        scale = 100.0 if _is_accuracy(metric) else 1.0
        ax.bar(range(len(here)), here["mean"] * scale, yerr=here["std"].fillna(0) * scale, capsize=3, color="#4878a8")
        ax.set_xticks(range(len(here)), here["upstream"], rotation=35, ha="right", fontsize=8)
        better = "higher" if bool(here["higher_is_better"].iloc[0]) else "lower"
        ax.set_title(f"{column}: {metric}{' (%)' if scale == 100 else ''}, {better} is better", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return fig


def layer_weight_matrix(runs: pd.DataFrame, split: str) -> dict[str, pd.DataFrame]:
    """Per column (track): upstreams × layers of the mean learned weights; single-layer upstreams left out."""
    rows = runs[(runs["split"] == split) & runs["layer_weights"].notna()]
    found: dict[str, dict[str, list[np.ndarray]]] = {}
    for run in rows.itertuples(index=False):
        weights = np.asarray(json.loads(run.layer_weights), dtype=float)
        if len(weights) > 1:
            found.setdefault(run.track, {}).setdefault(run.upstream, []).append(weights)
    matrices = {}
    for track, by_upstream in sorted(found.items()):
        width = max(len(w[0]) for w in by_upstream.values())
        data = {up: np.pad(np.mean(ws, axis=0), (0, width - len(ws[0])), constant_values=np.nan)
                for up, ws in sorted(by_upstream.items())}
        matrices[track] = pd.DataFrame.from_dict(data, orient="index", columns=range(width))
    return matrices


def plot_layer_weights(runs: pd.DataFrame, split: str):
    """Heat maps of :func:`layer_weight_matrix`, one per track, the weight printed in each cell; None without any."""
    matrices = layer_weight_matrix(runs, split)
    if not matrices:
        return None
    fig, axes = plt.subplots(len(matrices), 1, squeeze=False, layout="constrained",
                             figsize=(max(7.0, 3.5 + 0.75 * max(m.shape[1] for m in matrices.values())),
                                      sum(1.2 + 0.38 * len(m) for m in matrices.values())),
                             height_ratios=[len(m) + 2 for m in matrices.values()])
    for ax, (track, matrix) in zip(axes[:, 0], matrices.items(), strict=True):
        image = ax.imshow(np.ma.masked_invalid(matrix.to_numpy()), cmap="viridis", vmin=0, aspect="auto")
        for (i, j), value in np.ndenumerate(matrix.to_numpy()):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * np.nanmax(matrix.to_numpy()) else "black")
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=8)
        ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], fontsize=8)
        ax.set_xlabel("layer (0 = the input to the first block)", fontsize=8)
        ax.set_title(f"{track}: learned layer weights", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    return fig


def pretraining_curves(runs: pd.DataFrame, search: list[Path]) -> dict[str, pd.DataFrame]:
    """upstream -> its ``curve.tsv`` (step, train_loss, valid_loss, ...), found beside each run's
    ``upstream_checkpoint`` (as written, or under one of ``search``); upstreams without one are left out."""
    curves = {}
    for upstream, ckpt in (runs.dropna(subset=["upstream_checkpoint"])
                           .groupby("upstream")["upstream_checkpoint"].first().items()):
        for base in [Path("."), *search]:
            curve = base / Path(ckpt).parent / "curve.tsv"
            if curve.is_file():
                curves[upstream] = pd.read_csv(curve, sep="\t")
                break
    return curves


def plot_pretraining(runs: pd.DataFrame, search: list[Path]):
    """Small multiples of training and validation loss per pre-trained upstream; None without curves."""
    curves = pretraining_curves(runs, search)
    if not curves:
        return None
    ncols = min(4, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax, (upstream, curve) in zip(axes.flat, sorted(curves.items()), strict=False):  # spare axes: hidden above
        ax.plot(curve["step"], curve["train_loss"], label="train")
        ax.plot(curve["step"], curve["valid_loss"], label="valid")
        ax.set_title(upstream, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("pre-training loss", fontsize=8)
    return fig


def _png(fig) -> str:
    """The figure as a base64 PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; max-width: 7em; }
th { background: #f0f3f7; } td:nth-child(2) { text-align: left; font-weight: 600; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.note { color: #555; font-size: 0.9em; }
"""


def render_html(table: pd.DataFrame, runs: pd.DataFrame, split: str, baseline: str,
                references: dict[str, tuple[Reference, ...]], search_roots: list[Path], title: str) -> str:
    """The self-contained report page (``runs``: every run; only those at the chosen learning rates are shown)."""
    lr_search = chosen_rates(runs)
    runs = choose_learning_rates(runs)
    runs = runs[runs["selected"]]
    sections = [("Primary metric per task", plot_metrics(runs, split)),
                ("Which layers each task uses", plot_layer_weights(runs, split)),
                ("Pre-training curves", plot_pretraining(runs, search_roots))]
    refs = column_references(metric_table(runs, split), runs, split, baseline, references)
    ref_items = "".join(
        f"<li><b>{html.escape(r.column)}</b> {html.escape(r.metric)} = {r.value:g}: {html.escape(r.source)}"
        + (f" <b>({html.escape(r.note)})</b>" if r.note else "") + "</li>" for r in refs.itertuples(index=False))
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>Split <b>{html.escape(split)}</b>; {len(runs['path'].unique())} experiments; "
            f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. SUPERB score per task: "
            f"1000 × (s − s<sub>{html.escape(baseline)}</sub>) / "
            f"(s<sub>ref</sub> − s<sub>{html.escape(baseline)}</sub>), "
            "clipped to ±1000, averaged over the scored tasks; mean ± std over seeds and folds; "
            "lr: the head's learning rate (chosen on dev where several were tried).</p>",
            display_table(table).to_html(index=False, escape=True, border=0),
            f"<p class='note'>References (score 1000):</p><ul class='note'>{ref_items}</ul>"]
    if not lr_search.empty:
        body.append("<h2>Learning-rate search (dev)</h2>" + lr_search.to_html(index=False, escape=True, border=0))
    for heading, fig in sections:
        if fig is not None:
            body.append(f"<h2>{heading}</h2><img alt='{heading}' src='{_png(fig)}'>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
