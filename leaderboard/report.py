"""Leaderboard outputs: the per-upstream CSV, a Markdown table and one self-contained HTML page.

The HTML page embeds its plots as PNG data URIs (no other files, no scripts):

- per-track bars of each upstream's primary metric (mean ± std over seeds);
- the learned layer weights (softmax of the featurizer's weights, averaged over seeds and folds at
  the chosen learning rate) as one heat map per upstream, its tracks × layers, content tasks (KS, PR,
  ASR, ...) above the line and speaker / paralinguistic tasks (SID, ASV, ER, ...) below it: which
  layers each task draws on (:func:`layer_weight_profiles`, also written as ``layer_weights.csv``);
- the SUPERB score against MACs per second of audio and against parameters, one point per ranked
  upstream (random twins hollow), the Pareto front drawn (:func:`plot_cost`, docs/cost.md);
- where the board holds QbE and PR runs, QbE's best layer per upstream against PR's learned layer
  weights (:mod:`leaderboard.layers`, passed in as an extra section);
- pre-training curves (validation loss against step) from the ``curve.tsv`` that
  ``upstream.pretrain`` writes beside each ``upstream.pt``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
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


COST_DISPLAY = (("MACs/s (G)", "macs_per_second", 1e9, ".3g"), ("RTF", "rtf", 1.0, ".3g"),
                ("peak mem (MB)", "peak_mem_mb", 1.0, ".0f"))
"""(label, :func:`leaderboard_table` column, divisor, format) of the cost columns shown (docs/cost.md)."""


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`leaderboard_table` output as strings: accuracies in %, ``mean ± std``, parameters in millions,
    MACs per second of audio in billions, real-time factor, peak memory in MB."""
    out = pd.DataFrame({
        "rank": table["rank"].map(lambda r: "–" if pd.isna(r) else str(int(r))),
        "upstream": table["upstream"],
        "params (M)": table["parameters"].map(lambda p: "–" if pd.isna(p) else f"{p / 1e6:.2f}"),
        "pre-training (h)": table["pretrain_hours"].map(lambda h: "–" if pd.isna(h) else f"{h:.2f}"),
    })
    for label, column, scale, fmt in COST_DISPLAY:
        values = table[column] if column in table.columns else pd.Series(math.nan, index=table.index)
        out[label] = values.map(lambda v, scale=scale, fmt=fmt: "–" if pd.isna(v) else format(v / scale, fmt))
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


def is_random_twin(upstream: str) -> bool:
    """Whether a leaderboard label names a random-weights twin (``apc:random``, ``hf:wavlm-random``)."""
    return upstream.endswith((":random", "-random"))


def pareto_front(cost: pd.Series, score: pd.Series) -> pd.Series:
    """True for the points no other point beats: none costs at most as much and scores at least as
    high, one of the two strictly (lower cost and higher score are better). NaN points are never on it."""
    known = cost.notna() & score.notna()
    on = pd.Series(False, index=cost.index)
    for i in cost.index[known]:
        c, s = cost[i], score[i]
        others = known & (cost <= c) & (score >= s) & ((cost < c) | (score > s))
        on[i] = not others.any()
    return on


COST_AXES = (("macs_per_second", 1e9, "MACs per second of audio (G, symmetric log)"),
             ("parameters", 1e6, "parameters (M, symmetric log)"))
"""(leaderboard column, divisor, axis label) of the score-against-cost plots."""


def plot_cost(table: pd.DataFrame):
    """SUPERB score against MACs per second and against parameters, one point per ranked upstream (random
    twins hollow), the Pareto front (:func:`pareto_front`) as a line; None when no ranked upstream has a cost."""
    ranked = table[table["superb_score"].notna()]
    axes_shown = [(c, d, label) for c, d, label in COST_AXES
                  if c in ranked.columns and ranked[c].notna().any()]
    if ranked.empty or not any(c == "macs_per_second" for c, _, _ in axes_shown):
        return None
    fig, axes = plt.subplots(1, len(axes_shown), figsize=(6.0 * len(axes_shown), 4.4), squeeze=False,
                             layout="constrained")
    for ax, (column, divisor, label) in zip(axes[0], axes_shown, strict=True):
        here = ranked[ranked[column].notna()]
        x, y = here[column].astype(float) / divisor, here["superb_score"].astype(float)
        front = pareto_front(x, y)
        twin = here["upstream"].map(is_random_twin)
        ax.scatter(x[~twin], y[~twin], color="#4878a8", zorder=3, label="pre-trained or fixed features")
        ax.scatter(x[twin], y[twin], facecolors="none", edgecolors="#c44e52", zorder=3, label="random twin")
        order = x[front].sort_values().index
        ax.plot(x[order], y[order], drawstyle="steps-post", color="#55a868", zorder=2, label="Pareto front")
        for i in here.index:
            ax.annotate(here.at[i, "upstream"], (x[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("SUPERB score", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


TRACK_ORDER = ("ks", "qbe", "pr", "asr", "ic", "sf", "st", "sid", "asv", "sd", "er")
"""Rows of the per-upstream heat maps: content tasks, semantics, then speaker and paralinguistic tasks
(a track ``<family>_<setting>``, e.g. ``asr_10min``, ``er_all``, sits with its family; others come last)."""
SPEAKER_TRACKS = frozenset({"sid", "asv", "sd", "er"})
"""Families drawn below the line in the heat maps (speaker and paralinguistic information)."""
PROFILE_COLUMNS = ["upstream", "track", "dataset", "column", "layer", "mean", "std", "n"]


def _family(column: str) -> str:
    """``asr_10min (librispeech:x)`` -> ``asr``."""
    return column.split(" (")[0].split("_")[0]


def _track_order(column: str) -> tuple:
    family = _family(column)
    return (TRACK_ORDER.index(family) if family in TRACK_ORDER else len(TRACK_ORDER), column)


def layer_weight_profiles(runs: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per upstream, track, dataset and layer: the learned weight's mean, std (over seeds and folds,
    ddof 1; NaN with one run) and number of runs, from the ``split`` rows of ``runs`` (pass the
    selected runs: those at the chosen learning rate). ``column`` is the leaderboard column (``track``,
    or ``track (dataset)`` where a track ran on several datasets). Single-layer upstreams (FBANK) are
    left out. Rows ordered by upstream, then :data:`TRACK_ORDER`, then layer (0 = the input to the first block)."""
    on_split = runs[runs["split"] == split]
    datasets = on_split.groupby("track")["dataset"].nunique()
    found: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for run in on_split[on_split["layer_weights"].notna()].itertuples(index=False):
        weights = np.asarray(json.loads(run.layer_weights), dtype=float)
        if len(weights) > 1:
            found.setdefault((run.upstream, run.track, run.dataset), []).append(weights)
    rows = []
    for (upstream, track, dataset), stack in found.items():
        width = max(len(w) for w in stack)
        padded = np.array([np.pad(w, (0, width - len(w)), constant_values=np.nan) for w in stack])
        column = track if datasets.get(track, 1) <= 1 else f"{track} ({dataset})"
        for layer in range(width):
            values = padded[:, layer][~np.isnan(padded[:, layer])]
            rows.append((upstream, track, dataset, column, layer, float(values.mean()),
                         float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values)))
    profiles = pd.DataFrame(rows, columns=PROFILE_COLUMNS).astype({"layer": "int64", "n": "int64"})
    if profiles.empty:
        return profiles
    order = profiles["column"].map(_track_order)
    return (profiles.assign(_order=order).sort_values(["upstream", "_order", "layer"])
            .drop(columns="_order").reset_index(drop=True))


def upstream_layer_matrices(runs: pd.DataFrame, split: str) -> dict[str, pd.DataFrame]:
    """Per upstream: its columns (tracks, in :data:`TRACK_ORDER`) × layers of the mean learned weights."""
    profiles = layer_weight_profiles(runs, split)
    matrices = {}
    for upstream, here in profiles.groupby("upstream", sort=True):
        matrix = here.pivot(index="column", columns="layer", values="mean")
        matrices[upstream] = matrix.loc[sorted(matrix.index, key=_track_order)]
    return matrices


def layer_weight_matrix(runs: pd.DataFrame, split: str) -> dict[str, pd.DataFrame]:
    """Per column (track): upstreams × layers of the mean learned weights; single-layer upstreams left out."""
    profiles = layer_weight_profiles(runs, split)
    return {column: here.pivot(index="upstream", columns="layer", values="mean").sort_index()
            for column, here in sorted(profiles.groupby("column"), key=lambda item: item[0])}


def weight_centre(weights: pd.Series) -> float:
    """The weights' centre of mass over layer indices, ``sum_l l w_l / sum_l w_l`` (NaN cells ignored)."""
    known = weights.dropna()
    return float((known.index.to_numpy(dtype=float) * known.to_numpy()).sum() / known.sum())


def plot_layer_weights(runs: pd.DataFrame, split: str):
    """One heat map per upstream (:func:`upstream_layer_matrices`): its tracks side by side as rows, the
    weight printed in each cell, each row labelled with its centre layer (:func:`weight_centre`), a
    white line between the content tasks and the speaker / paralinguistic ones; two maps a row where
    every upstream has at most 6 layers (the page stays readable), one a row otherwise; None without any."""
    matrices = upstream_layer_matrices(runs, split)
    if not matrices:
        return None
    widest = max(m.shape[1] for m in matrices.values())
    ncols = 2 if len(matrices) > 1 and widest <= 6 else 1
    items = list(matrices.items())
    grid = [items[i:i + ncols] for i in range(0, len(items), ncols)]
    tallest = [max(len(m) for _, m in row) for row in grid]
    fig, axes = plt.subplots(len(grid), ncols, squeeze=False, layout="constrained",
                             figsize=(ncols * max(7.0, 4.5 + 0.6 * widest), sum(1.2 + 0.38 * t for t in tallest)),
                             height_ratios=[t + 2 for t in tallest])
    for ax in axes.flat[len(items):]:
        ax.set_visible(False)
    for ax, (upstream, matrix) in zip(axes.flat, items, strict=False):  # spare axes: hidden above
        values = matrix.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * np.nanmax(values) else "black")
        speaker = [_family(c) in SPEAKER_TRACKS for c in matrix.index]
        for i in range(1, len(speaker)):
            if speaker[i] and not speaker[i - 1]:
                ax.axhline(i - 0.5, color="white", linewidth=2.5)
        labels = [f"{column} (centre {weight_centre(row):.1f})" for column, row in matrix.iterrows()]
        ax.set_yticks(range(len(matrix)), labels, fontsize=8)
        ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], fontsize=8)
        ax.set_xlabel("layer (0 = the input to the first block)", fontsize=8)
        ax.set_title(f"{upstream}: learned layer weights per task", fontsize=9)
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


def small_multiples(count: int, width: float, height: float):
    """A grid of ``count`` panels of ``width`` x ``height`` inches, at most 4 per row; the spare axes hidden.
    Returns the figure and the (rows, 4 or fewer) array of axes."""
    ncols = min(4, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes


def plot_pretraining(runs: pd.DataFrame, search: list[Path]):
    """Small multiples of training and validation loss per pre-trained upstream; None without curves."""
    curves = pretraining_curves(runs, search)
    if not curves:
        return None
    fig, axes = small_multiples(len(curves), 3.2, 2.6)
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


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG (the report's resolution) and close it."""
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


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
                references: dict[str, tuple[Reference, ...]], search_roots: list[Path], title: str,
                extra_sections: Sequence[tuple[str, object, str, str]] = ()) -> str:
    """The self-contained report page (``runs``: every run; only those at the chosen learning rates are shown).

    ``extra_sections``: (heading, figure or None, note, HTML table or ``""``) each, shown after the
    layer-weight maps (e.g. :func:`leaderboard.layers.report_section`)."""
    lr_search = chosen_rates(runs)
    runs = choose_learning_rates(runs)
    runs = runs[runs["selected"]]
    layer_note = ("Softmaxed featurizer weights, mean over seeds and folds at the chosen learning rate; one map "
                  "per upstream, content tasks above the white line, speaker and paralinguistic tasks below; "
                  "centre: the weights' mean layer index. The numbers, with std and runs: layer_weights.csv.")
    cost_note = ("One point per ranked upstream (hollow: random-weights twins); the line joins the Pareto front, "
                 "the upstreams no other one beats on both score and cost. MACs: FlopCounterMode over one forward "
                 "pass, averaged over the input lengths in results.json's cost record; FFT front ends and "
                 "element-wise work are not counted (docs/cost.md).")
    sections = [("Primary metric per task", plot_metrics(runs, split), "", ""),
                ("Which layers each task uses, per upstream", plot_layer_weights(runs, split), layer_note, ""),
                *extra_sections,
                ("Score against cost", plot_cost(table), cost_note, ""),
                ("Pre-training curves", plot_pretraining(runs, search_roots), "", "")]
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
    for heading, fig, note, table_html in sections:
        if fig is not None or table_html:
            body.append(f"<h2>{html.escape(heading)}</h2>"
                        + (f"<p class='note'>{html.escape(note)}</p>" if note else "") + table_html
                        + (f"<img alt='{html.escape(heading, quote=True)}' src='{_png(fig)}'>" if fig is not None
                           else ""))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
