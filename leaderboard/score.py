"""The SUPERB score and the one-row-per-upstream leaderboard table.

For an upstream u, a leaderboard column c (a track, e.g. ``ks``, ``asr_10min``, ``pr``, on one
dataset) and each reference metric i of that track::

    score(u, c) = clip(1000 * mean_i (s_i(u) - s_i(baseline)) / (s_i(reference) - s_i(baseline)), -1000, 1000)

The baseline (FBANK) scores 0, the reference 1000; for error rates both differences are negative,
so lower is still better. Values are in the units ``results.json`` stores: accuracy as a fraction,
error rates in % (WER/CER/PER, and ASV's EER: 4.04 means 4.04 %), BLEU 0-100, minDCF as the
normalised cost. Which way a metric is better comes from ``results.json``'s ``higher_is_better``
(for the primary metric). The reference of a column is, in this order:

1. one given on the command line (``--reference track:metric=value``): the user vouches for it;
2. the published state of the art (:data:`DEFAULT_REFERENCES`), only when the column's runs are on
   the data it was published on: a matching ``dataset`` and the published test set's size (for
   speaker verification also the number of trials);
3. otherwise the best mean on this board for that column and metric (the report names it).

A column whose reference is within noise of the baseline (``|ref - base| <= max(std_base,
std_ref)`` over seeds and folds; with one run each, only equality) is **not scored** for anyone:
dividing by noise would let that one track swing the average (as a demo BLEU near the published
CoVoST 2 number did). Clipping to ±1000 bounds what any single track can move. The SUPERB score of
u is the mean over the scored columns, given only when u has results in every column of the board.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fnmatch import fnmatch
from numbers import Real

import pandas as pd

from .collect import _is_number
from .select import choose_learning_rates

SCORE_CLIP = 1000.0


@dataclass(frozen=True)
class Reference:
    """The value a track's metric scores 1000 at, where it comes from, and which data it holds for.

    ``datasets``: patterns (``fnmatch``) over the runs' ``dataset``; ``test_utterances``: the
    published test set's size (None: any); ``test_trials``: for verification, the published trial
    list's length, which the runs must record (``trials`` in the split's metrics; None: not checked).
    A reference given on the command line holds for any data.
    """

    metric: str
    value: float
    source: str
    datasets: tuple[str, ...] = ("*",)
    test_utterances: int | None = None
    test_trials: int | None = None

    def holds_for(self, dataset: str, test_utterances: set[int], test_trials: set[int] = frozenset()) -> bool:
        """Whether the runs of a column (their dataset, test-set sizes, trial counts) are on this reference's data."""
        same_size = self.test_utterances is None or test_utterances == {self.test_utterances}
        same_trials = self.test_trials is None or test_trials == {self.test_trials}
        return same_size and same_trials and any(fnmatch(dataset, pattern) for pattern in self.datasets)


_LIBRISPEECH_100H = ("librispeech:*/train-clean-100", "hf:*")
DEFAULT_REFERENCES: dict[str, tuple[Reference, ...]] = {
    "ks": (Reference("accuracy", 0.9669, "WavLM Base+, SUPERB KS (Speech Commands v0.01 test set, frozen)",
                     ("speech_commands:*", "hf:*"), 3081),),
    "asr": (Reference("wer", 3.62, "HuBERT Large, SUPERB ASR (test-clean, no LM, frozen)", _LIBRISPEECH_100H, 2620),),
    "asr_10min": (Reference("wer", 4.8, "wav2vec 2.0 Large + Transformer LM, 10 min fine-tuned (test-clean)",
                            ("librispeech:*/librilight-10min",), 2620),),
    "pr": (Reference("per", 3.06, "WavLM Large, SUPERB PR (test-clean, frozen; as quoted in the project's "
                     "reference notes, not re-checked against the paper)", _LIBRISPEECH_100H, 2620),),
    "st": (Reference("bleu", 19.89, "HuBERT Large, SUPERB-SG ST (CoVoST 2 En-De test, frozen)",
                     ("covost2:*", "hf:*"), 15531),),
    # WavLM Large leads SUPERB's frozen speaker and emotion tasks; the numbers are those of the WavLM and
    # UniSpeech-SAT papers' SUPERB tables as quoted in the project's reference notes (REFERENCE.md)
    "sid": (Reference("accuracy", 0.9525, "WavLM Large, SUPERB SID (VoxCeleb1 iden_split test, 8251 utterances, "
                      "frozen; as quoted in the project's reference notes, not re-checked against the paper)",
                      ("voxceleb1:*",), 8251),),
    "asv": (Reference("eer", 4.04, "WavLM Large, SUPERB ASV (EER in %, VoxCeleb1 test: 4874 utterances, "
                      "voxceleb1_test_v2 list of 37720 trials; frozen; as quoted in the project's reference notes, "
                      "not re-checked against the paper)", ("voxceleb1:*",), 4874, 37720),),
    "er": (Reference("accuracy", 0.7003, "WavLM Large, SUPERB ER (IEMOCAP, 4 classes, mean of the 5 session "
                     "folds, frozen; as quoted in the project's reference notes, not re-checked against the paper)",
                     ("iemocap:*/session-folds-5",)),),
    "ic": (Reference("accuracy", 0.9916, "WavLM Base+, SUPERB IC (Fluent Speech Commands test, 3793 utterances, "
                     "every slot right; frozen; as quoted in the project's reference notes, not re-checked against "
                     "the paper)", ("fluent_commands:*",), 3793),),
}
"""Published states of the art, each valid only on the data it was published on (see :class:`Reference`).

``er`` is recognised by its dataset alone (``iemocap:<root>/session-folds-5``, the leave-one-session-out
folds): each fold tests on a different session, so no single test size names it; ``er_all`` (every
class) has no published counterpart. ``asv`` needs the runs to record both VoxCeleb1 test's 4874
utterances and the 37720 trials (``veri_test.txt``) they scored; the cleaned list (37611) is another test."""


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
    """``1000 (value - baseline) / (reference - baseline)`` clipped to ±1000; NaN when reference equals baseline."""
    if reference == baseline:
        return math.nan
    return max(-SCORE_CLIP, min(SCORE_CLIP, 1000.0 * (value - baseline) / (reference - baseline)))


def metric_table(runs: pd.DataFrame, split: str) -> pd.DataFrame:
    """Every metric of ``split`` (primary and ``other_metrics``), averaged over seeds (and folds).

    Returns columns ``upstream, column, track, dataset, metric, higher_is_better, primary, mean, std,
    n, learning_rate``; ``column`` is the track, or ``track (dataset)`` when a track ran on several
    datasets; ``learning_rate`` is the head's learning rate when all the runs share one (else NaN).
    """
    rows = []
    for run in runs[runs["split"] == split].itertuples(index=False):
        lr = run.learning_rate if "learning_rate" in runs.columns else math.nan
        rows.append((run.upstream, run.track, run.dataset, run.metric, run.value, True, run.higher_is_better, lr))
        for metric, value in json.loads(run.other_metrics).items():
            if _is_number(value, Real):
                rows.append((run.upstream, run.track, run.dataset, metric, float(value), False, None, lr))
    long = pd.DataFrame(rows, columns=["upstream", "track", "dataset", "metric", "value", "primary", "higher_is_better",
                                       "learning_rate"])
    datasets = long.groupby("track")["dataset"].nunique()
    several = long["track"].map(datasets) > 1
    long["column"] = long["track"].where(~several, long["track"] + " (" + long["dataset"] + ")")
    return (long.groupby(["upstream", "column", "track", "dataset", "metric"], sort=False)
            .agg(higher_is_better=("higher_is_better", "first"), primary=("primary", "any"),
                 mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                 learning_rate=("learning_rate", lambda x: x.iloc[0] if x.nunique(dropna=False) == 1 else math.nan))
            .reset_index())


def column_references(metrics: pd.DataFrame, runs: pd.DataFrame, split: str, baseline: str,
                      references: dict[str, tuple[Reference, ...]]) -> pd.DataFrame:
    """Per (column, metric) to score: the reference used and whether the column is scored.

    ``metrics`` is :func:`metric_table` output for ``runs`` (selected runs only). Returns columns
    ``column, track, metric, value, source, scored, note``; the metrics of a track are those of its
    references, or its primary metric for a track without any.
    """
    rows = []
    stats = metrics.set_index(["upstream", "column", "metric"])
    on_split = runs[runs["split"] == split]
    for (column, track, dataset), here in metrics.groupby(["column", "track", "dataset"], sort=False):
        mine = on_split[(on_split["track"] == track) & (on_split["dataset"] == dataset)]
        sizes = set(mine["utterances"].dropna().astype(int))
        trials = set(mine["trials"].dropna().astype(int)) if "trials" in mine.columns else set()
        known = references.get(track, ())
        wanted = [r.metric for r in known] or list(here.loc[here["primary"], "metric"].unique())
        for metric in wanted:
            given = next((r for r in known if r.metric == metric and r.holds_for(dataset, sizes, trials)), None)
            of_metric = here[here["metric"] == metric]
            if of_metric.empty:
                continue
            higher = _higher_is_better(metric, of_metric)
            if given is not None:
                value, source, ref_std = given.value, given.source, 0.0
            else:
                best = of_metric.sort_values("mean", ascending=not higher).iloc[0]
                value, ref_std = float(best["mean"]), _std(best["std"])
                source = f"best on this board ({best['upstream']}); no published reference holds for {dataset}"
            base = stats["mean"].get((baseline, column, metric))
            if base is None:
                rows.append((column, track, metric, value, source, False, f"no {baseline} result"))
                continue
            noise = max(_std(stats["std"].get((baseline, column, metric))), ref_std)
            if abs(value - base) <= noise:
                rows.append((column, track, metric, value, source, False,
                             f"not scored: {baseline} ({base:g}) is within noise ({noise:g}) of the reference"))
            else:
                rows.append((column, track, metric, value, source, True, ""))
    return pd.DataFrame(rows, columns=["column", "track", "metric", "value", "source", "scored", "note"])


def _std(value) -> float:
    return 0.0 if value is None or pd.isna(value) else float(value)


def _higher_is_better(metric: str, rows: pd.DataFrame) -> bool:
    """From the runs where the metric is primary; else :func:`higher_is_better_by_name`."""
    known = rows["higher_is_better"].dropna()
    if not known.empty:
        return bool(known.iloc[0])
    return higher_is_better_by_name(metric)


def higher_is_better_by_name(metric: str) -> bool:
    """A metric's direction by its name: error rates (``wer``, ``eer``, ...), losses and detection costs
    (``min_dcf_0.01``) are lower-is-better, the rest (accuracy, BLEU) higher."""
    name = metric.lower()
    if name.startswith(("accuracy", "top", "unweighted_recall", "slot_accuracy", "bleu", "map", "mtwv", "atwv")):
        return True  # per-slot accuracies (``accuracy_<slot>``) whatever the slot is called
    return not (name.endswith(("er", "loss")) or "dcf" in name)


def score_table(metrics: pd.DataFrame, refs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per (upstream, column): the column's SUPERB score, the mean over its scored reference metrics
    (NaN when the column is not scored or the upstream lacks a metric)."""
    means = metrics.set_index(["upstream", "column", "metric"])["mean"]
    rows = []
    for (upstream, column), _ in metrics.groupby(["upstream", "column"], sort=False):
        used = refs[(refs["column"] == column) & refs["scored"]]
        parts = []
        for ref in used.itertuples(index=False):
            mine, base = means.get((upstream, column, ref.metric)), means.get((baseline, column, ref.metric))
            parts.append(math.nan if mine is None or base is None else superb_score(mine, base, ref.value))
        rows.append((upstream, column, sum(parts) / len(parts) if parts else math.nan))
    return pd.DataFrame(rows, columns=["upstream", "column", "score"])


def upstream_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per upstream (the index): ``parameters_used`` and ``macs_per_second`` (the same in every run of an
    upstream; the largest is taken), ``rtf`` and ``peak_mem_mb`` (the median over its runs: timings
    vary from run to run) and ``cost_device`` (the devices they were measured on, joined). NaN without
    a cost record (docs/cost.md)."""
    columns = {"parameters_used": "max", "macs_per_second": "max", "rtf": "median", "peak_mem_mb": "median"}
    have = [c for c in columns if c in runs.columns]
    out = runs.groupby("upstream")[have].agg({c: columns[c] for c in have})
    devices = runs.groupby("upstream")["cost_device"] if "cost_device" in runs.columns else None
    out["cost_device"] = (devices.agg(lambda x: ", ".join(sorted(set(x.dropna()))) or None)
                          if devices is not None else None)
    return out


def leaderboard_table(runs: pd.DataFrame, split: str = "test", baseline: str = "fbank",
                      references: dict[str, tuple[Reference, ...]] | None = None) -> pd.DataFrame:
    """One row per upstream: parameters, pre-training hours, its cost (:func:`upstream_costs`:
    ``parameters_used``, ``macs_per_second``, ``rtf``, ``peak_mem_mb``, ``cost_device``), each column's
    primary metric (mean, std, runs), the head's learning rate, each column's SUPERB score,
    ``scored_tasks``, the SUPERB score and the rank.

    ``runs`` is :func:`leaderboard.collect.collect` output. Where an upstream ran a track at several
    learning rates, only the rate with the best dev mean counts (:func:`choose_learning_rates`). The
    SUPERB score averages the scored columns (:func:`column_references`) and is given only to an
    upstream with results in every column: averages over different task sets would not compare.
    Sorted by SUPERB score, best first, unranked upstreams last.
    """
    references = DEFAULT_REFERENCES if references is None else references
    runs = choose_learning_rates(runs)
    runs = runs[runs["selected"]]
    metrics = metric_table(runs, split)
    if metrics.empty:
        raise ValueError(f"no results for split {split!r}")
    scores = score_table(metrics, column_references(metrics, runs, split, baseline, references), baseline)
    primary = metrics[metrics["primary"]]
    table = pd.DataFrame({"upstream": sorted(metrics["upstream"].unique())}).set_index("upstream")
    about = runs.groupby("upstream").agg(parameters=("upstream_parameters", "max"),
                                         pretrain_hours=("pretrain_hours", "max"))
    table = table.join(about).join(upstream_costs(runs))
    columns = list(primary["column"].drop_duplicates())
    for column in columns:
        here = primary[primary["column"] == column].set_index("upstream")
        metric = here["metric"].iloc[0]
        table[f"{column} {metric}"] = here["mean"]
        table[f"{column} {metric} std"] = here["std"]
        table[f"{column} n"] = here["n"].astype("Int64")
        table[f"{column} lr"] = here["learning_rate"]
        table[f"{column} score"] = scores[scores["column"] == column].set_index("upstream")["score"]
    score_columns = [f"{c} score" for c in columns]
    complete = table[[f"{c} n" for c in columns]].notna().all(axis=1)
    table["scored_tasks"] = table[score_columns].notna().sum(axis=1)
    scored = [c for c in score_columns if table[c].notna().any()]
    table["superb_score"] = table[scored].mean(axis=1).where(complete & bool(scored))
    table = table.reset_index().sort_values(["superb_score", "upstream"], ascending=[False, True], na_position="last")
    table["rank"] = table["superb_score"].rank(ascending=False, method="min").astype("Int64")
    return table.reset_index(drop=True)
