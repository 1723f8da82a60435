"""Tests for the leaderboard: collected rows, seed statistics, SUPERB score, ranking, CSV/Markdown/HTML outputs,
bad files."""

import json
import math

import pandas as pd
import pytest

from leaderboard import DEFAULT_REFERENCES, Reference, collect, leaderboard_table, superb_score
from leaderboard.cli import main
from leaderboard.collect import COLUMNS
from leaderboard.paired import main as paired_main, paired_differences
from leaderboard.report import (
    format_markdown,
    layer_weight_matrix,
    layer_weight_profiles,
    pretraining_curves,
    upstream_layer_matrices,
    weight_centre,
)
from leaderboard.score import column_references, metric_table, parse_reference, with_overrides
from leaderboard.select import choose_learning_rates, chosen_rates


def _results(upstream, seed, dev, test, *, task="ks", metric="accuracy", higher=True, training=True):
    """A results.json payload shaped like the ones downstream.runner writes."""
    results = {
        "task": task, "upstream": upstream, "upstream_checkpoint": None,
        "upstream_fingerprint": f"{upstream}-fp", "experiment": f"{upstream}_s{seed}", "seed": seed,
        "checkpoint_step": 200, "primary_metric": metric, "higher_is_better": higher,
        "torch": "2.14.1+cu130", "host": "vm",
        "splits": {
            "dev": {metric: dev, "utterances": 500, "seconds": 0.026},
            "test": {metric: test, "utterances": 500, "seconds": 0.642},
        },
    }
    if training:
        results["training"] = {"train_steps": 200, "train_seconds": 1.5, "steps_per_second": 130.0,
                               "extract_seconds": 3.4, "best_step": 200}
    return results


def _write(root, experiment, payload):
    path = root / experiment / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload, indent=1))
    return path


@pytest.fixture
def root(tmp_path):
    """ks results: fbank_global with seeds 1 and 2, hubert evaluated only (no training), one corrupt file."""
    root = tmp_path / "results"
    _write(root, "fbank_s1", _results("fbank_global", 1, 0.40, 0.38))
    _write(root, "fbank_s2", _results("fbank_global", 2, 0.44, 0.42))
    _write(root, "hubert_s1", _results("hubert", 1, 0.90, 0.88, training=False))
    _write(root / "nested", "broken", '{"task": "ks", "splits": ')
    return root


def _collect_quietly(root):
    with pytest.warns(UserWarning, match="broken"):
        return collect(root)


def test_collect_rows(root):
    df = _collect_quietly(root)
    assert list(df.columns) == COLUMNS
    assert len(df) == 6  # 3 good experiments x 2 splits, the corrupt file skipped
    assert set(df["upstream"]) == {"fbank_global", "hubert"}
    assert set(df["task"]) == {"ks"} and set(df["metric"]) == {"accuracy"}
    row = df[(df["experiment"] == "fbank_global_s2") & (df["split"] == "test")].iloc[0]
    assert row["value"] == pytest.approx(0.42)
    assert row["seed"] == 2 and row["checkpoint_step"] == 200 and row["train_steps"] == 200
    assert row["steps_per_second"] == pytest.approx(130.0)
    assert row["upstream_fingerprint"] == "fbank_global-fp"
    assert row["path"] == str(root / "fbank_s2" / "results.json")
    assert json.loads(row["other_metrics"]) == {}  # utterances/seconds are bookkeeping, not metrics
    hubert = df[df["upstream"] == "hubert"]
    assert hubert["train_steps"].isna().all() and hubert["train_seconds"].isna().all()
    assert hubert["checkpoint_step"].eq(200).all()


def test_other_metrics_kept(tmp_path):
    payload = _results("fbank_global", 1, 0.4, 0.38)
    payload["splits"]["test"]["macro_f1"] = 0.31
    _write(tmp_path, "e", payload)
    df = collect(tmp_path).set_index("split")
    assert json.loads(df.loc["test", "other_metrics"]) == {"macro_f1": 0.31}
    assert json.loads(df.loc["dev", "other_metrics"]) == {}


def test_corrupt_file_warns_with_its_name(root):
    bad = root / "nested" / "broken" / "results.json"
    with pytest.warns(UserWarning) as record:
        df = collect(root)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and str(bad) in messages[0]
    assert str(bad) not in set(df["path"])


def test_malformed_content_is_skipped(tmp_path):
    _write(tmp_path, "list", "[1, 2]")
    _write(tmp_path, "no_metric", json.dumps({**_results("x", 1, 0.1, 0.1), "primary_metric": "f1"}))
    _write(tmp_path, "missing_keys", json.dumps({"task": "ks"}))
    _write(tmp_path, "bad_seed", {**_results("x", 1, 0.1, 0.1), "seed": "abc"})
    _write(tmp_path, "bad_training", {**_results("x", 1, 0.1, 0.1), "training": {"train_steps": "many"}})
    _write(tmp_path, "good", _results("fbank_global", 1, 0.4, 0.38))
    with pytest.warns(UserWarning) as record:
        df = collect(tmp_path)
    assert sorted(str(w.message).split(":")[0] for w in record) == sorted(
        f"skipping {tmp_path / name / 'results.json'}"
        for name in ("list", "no_metric", "missing_keys", "bad_seed", "bad_training"))
    assert set(df["experiment"]) == {"fbank_global_s1"}


def test_trial_counts_are_bookkeeping_whole_numbers(tmp_path):
    """ASV records ``trials`` beside ``utterances`` (a float, as metrics dicts hold): a column, not a metric."""
    payload = _results("fbank", 1, 9.0, 9.5, task="asv", metric="eer", higher=False)
    payload["splits"]["test"].update({"trials": 37720.0, "min_dcf_p0.01": 0.7})
    _write(tmp_path / "ok", "e", payload)
    df = collect(tmp_path / "ok").set_index("split")
    assert df.loc["test", "trials"] == 37720 and pd.isna(df.loc["dev", "trials"])
    assert json.loads(df.loc["test", "other_metrics"]) == {"min_dcf_p0.01": 0.7}
    payload["splits"]["test"]["trials"] = 37.5
    _write(tmp_path / "bad", "e", payload)
    with pytest.warns(UserWarning, match="'trials' is not a whole number"):
        assert collect(tmp_path / "bad").empty


def test_empty_root_gives_empty_frame(tmp_path):
    df = collect(tmp_path)
    assert df.empty and list(df.columns) == COLUMNS
    assert collect(tmp_path / "does_not_exist").empty


def test_table_mean_std_and_order(root):
    table = leaderboard_table(_collect_quietly(root), "test", baseline="fbank_global")
    assert list(table["upstream"]) == ["hubert", "fbank_global"]
    fbank = table.set_index("upstream").loc["fbank_global"]
    assert fbank["ks n"] == 2
    assert fbank["ks accuracy"] == pytest.approx(0.40)
    assert fbank["ks accuracy std"] == pytest.approx(math.sqrt(2 * 0.02**2 / 1))  # sample std, ddof=1
    hubert = table.set_index("upstream").loc["hubert"]
    assert hubert["ks n"] == 1 and hubert["ks accuracy"] == pytest.approx(0.88) and pd.isna(hubert["ks accuracy std"])
    # no published reference holds for this data (no dataset, 500 test utterances): the best on the board scores 1000
    assert hubert["ks score"] == pytest.approx(1000.0) and fbank["ks score"] == 0
    assert list(table["rank"]) == [1, 2]


def test_superb_score_by_hand():
    assert superb_score(0.88, 0.40, 0.9669) == pytest.approx(1000 * 0.48 / 0.5669)
    assert superb_score(20.0, 30.0, 5.0) == pytest.approx(400.0)  # WER: both differences negative
    assert superb_score(40.0, 30.0, 5.0) == pytest.approx(-400.0)  # worse than the baseline
    assert superb_score(3.0, 1.0, 21.0) == pytest.approx(100.0)  # BLEU
    assert math.isnan(superb_score(3.0, 1.0, 1.0))


def test_superb_score_averages_metrics_then_tasks(tmp_path):
    """Hand-computed: ks 1000 (0.7 - 0.5) / (0.9 - 0.5) = 500; asr_10min mean of WER
    1000 (40 - 60) / (10 - 60) = 400 and CER 1000 (20 - 30) / (5 - 30) = 400 -> 400; st BLEU
    1000 (3 - 1) / (11 - 1) = 200; SUPERB score (500 + 400 + 200) / 3 = 366.67."""
    def put(name, upstream, task, metric, value, higher, extra=None, track=None):
        payload = _results(upstream, 1, value, value, task=task, metric=metric, higher=higher)
        if track:
            payload["track"] = track
        for split in ("dev", "test"):
            payload["splits"][split].update(extra or {})
        _write(tmp_path, name, payload)

    put("ks-f", "fbank", "ks", "accuracy", 0.5, True)
    put("ks-u", "up", "ks", "accuracy", 0.7, True)
    put("asr-f", "fbank", "asr", "wer", 60.0, False, {"cer": 30.0}, track="asr_10min")
    put("asr-u", "up", "asr", "wer", 40.0, False, {"cer": 20.0}, track="asr_10min")
    put("st-f", "fbank", "st", "bleu", 1.0, True)
    put("st-u", "up", "st", "bleu", 3.0, True)
    put("ks-h", "half", "ks", "accuracy", 0.9, True)  # one track only: scored there, but no SUPERB score
    references = with_overrides(["ks:accuracy=0.9", "asr_10min:wer=10", "asr_10min:cer=5", "st:bleu=11"])
    table = leaderboard_table(collect(tmp_path), "test", "fbank", references).set_index("upstream")
    assert table.loc["up", "ks score"] == pytest.approx(500.0)
    assert table.loc["up", "asr_10min score"] == pytest.approx(400.0)
    assert table.loc["up", "st score"] == pytest.approx(200.0)
    assert table.loc["up", "superb_score"] == pytest.approx(1100 / 3)
    assert table.loc["fbank", "superb_score"] == 0 and table.loc["up", "scored_tasks"] == 3
    assert table.loc["half", "ks score"] == pytest.approx(1000.0) and table.loc["half", "scored_tasks"] == 1
    assert pd.isna(table.loc["half", "superb_score"]) and pd.isna(table.loc["half", "rank"])
    assert list(table.index) == ["up", "fbank", "half"]  # unranked last
    assert "– (1/3 tasks)" in format_markdown(table.reset_index())


def test_reference_overrides_are_checked():
    assert with_overrides(["st:bleu=25.3"])["st"][0].value == 25.3
    for bad in ("st=25", "st:bleu", "st:bleu=abc", ":bleu=1"):
        with pytest.raises(ValueError, match="track:metric=value"):
            parse_reference(bad)


def test_no_baseline_gives_no_scores(root):
    table = leaderboard_table(_collect_quietly(root), "test", baseline="fbank")
    assert table["superb_score"].isna().all() and table["rank"].isna().all()


def test_lower_is_better_ranks_smallest_first(tmp_path):
    for name, upstream, wer in [("a", "fbank", 30.0), ("b", "hubert", 12.0), ("c", "wavlm", 20.0)]:
        _write(tmp_path, name, _results(upstream, 1, wer, wer, task="asr", metric="wer", higher=False))
    table = leaderboard_table(collect(tmp_path), "test")
    assert list(table["upstream"]) == ["hubert", "wavlm", "fbank"]


def test_runs_on_different_datasets_are_never_averaged(tmp_path):
    for name, dataset, wer in [("ls", "librispeech:librispeech_mini/librilight-10min", 60.0),
                               ("lj", "librispeech:ljspeech_reread/librilight-10min", 40.0)]:
        payload = _results("fbank", 1, wer, wer, task="asr", metric="wer", higher=False)
        payload["dataset"] = dataset
        _write(tmp_path, name, payload)
    _write(tmp_path, "old", _results("fbank", 2, 50.0, 50.0, task="asr", metric="wer", higher=False))  # no dataset key
    row = leaderboard_table(collect(tmp_path), "test").iloc[0]
    assert row["asr (librispeech:librispeech_mini/librilight-10min) wer"] == 60.0
    assert row["asr (librispeech:ljspeech_reread/librilight-10min) wer"] == 40.0
    assert row["asr (unspecified) wer"] == 50.0


def test_csv_round_trip(root, tmp_path):
    df = _collect_quietly(root)
    out = tmp_path / "runs.csv"
    df.to_csv(out, index=False)
    back = pd.read_csv(out).astype(df.dtypes.to_dict())

    def missing_as_none(frame):
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(missing_as_none(back), missing_as_none(df))


def test_cli_writes_csv_markdown_and_html(root, capsys):
    with pytest.warns(UserWarning, match="broken"):
        assert main([str(root), "--baseline", "fbank_global"]) == 0
    out = capsys.readouterr().out
    board = pd.read_csv(root / "leaderboard.csv")
    assert list(board["upstream"]) == ["hubert", "fbank_global"] and list(board["rank"]) == [1, 2]
    assert len(pd.read_csv(root / "runs.csv")) == 6
    markdown = (root / "leaderboard.md").read_text()
    assert markdown.strip() in out
    assert "88.00" in markdown and "40.00 ± 2.83" in markdown  # accuracy as percentages, mean ± std
    hubert_line = next(line for line in markdown.splitlines() if "hubert" in line)
    # the SUPERB score column, last: hubert is the board's reference
    assert hubert_line.split("|")[-2].strip() == "1000"
    page = (root / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "40.00 ± 2.83" in page
    assert page.count("data:image/png;base64,") == 1  # bars only: no multi-layer weights, no pre-training curves
    assert "<script" not in page and "src='http" not in page  # self-contained


def test_report_plots_layer_weights_and_pretraining_curves(tmp_path):
    pretrain = tmp_path / "pretrain" / "apc_tiny"
    pretrain.mkdir(parents=True)
    (pretrain / "curve.tsv").write_text("step\ttrain_loss\tvalid_loss\tlr\tseconds\n"
                                        "100\t0.5\t0.45\t1e-3\t10\n200\t0.4\t0.41\t9e-4\t20\n")
    for name, upstream, acc, weights in [("f", "fbank", 0.3, [1.0]), ("a1", "apc", 0.8, [0.2, 0.3, 0.5]),
                                         ("a2", "apc", 0.7, [0.4, 0.3, 0.3])]:
        payload = _results(upstream, 1, acc, acc)
        payload.update(layer_weights=weights,
                       upstream_checkpoint=None if upstream == "fbank" else str(pretrain / "upstream.pt"),
                       upstream_label=upstream if upstream == "fbank" else "apc:apc_tiny")
        _write(tmp_path / "exp", name, payload)
    runs = collect(tmp_path / "exp")
    matrix = layer_weight_matrix(runs, "test")["ks"]
    assert list(matrix.index) == ["apc:apc_tiny"]  # single-layer fbank left out
    assert matrix.loc["apc:apc_tiny"].tolist() == pytest.approx([0.3, 0.3, 0.4])  # mean over seeds
    assert list(pretraining_curves(runs, [])["apc:apc_tiny"]["valid_loss"]) == [0.45, 0.41]
    assert main([str(tmp_path / "exp"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png;base64,") == 3


def test_cli_empty_folder_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    assert not (empty / "leaderboard.csv").exists()


def test_cli_unknown_split_exits_2(root, capsys):
    with pytest.warns(UserWarning):
        assert main([str(root), "--split", "eval"]) == 2
    assert "eval" in capsys.readouterr().err


def test_upstream_label_separates_checkpoints(tmp_path):
    for name, label, acc in (("a", "apc:random", 0.4), ("b", "apc:apc_tiny", 0.8)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "task": "ks", "upstream": "apc", "upstream_label": label, "primary_metric": "accuracy",
            "higher_is_better": True, "seed": 1, "experiment": name, "splits": {"test": {"accuracy": acc}}}))
    df = collect(tmp_path)
    assert sorted(df["upstream"]) == ["apc:apc_tiny", "apc:random"]
    assert list(leaderboard_table(df, "test")["upstream"]) == ["apc:apc_tiny", "apc:random"]


def _ks(tmp_path, name, upstream, accuracy, *, dataset="demo:demo_keywords", test_utterances=500, seed=1, lr=None,
        dev=None):
    payload = _results(upstream, seed, accuracy if dev is None else dev, accuracy)
    payload["dataset"], payload["experiment"] = dataset, name
    payload["splits"]["test"]["utterances"] = test_utterances
    if lr is not None:
        payload["learning_rate"] = lr
    return _write(tmp_path, name, payload)


def test_published_reference_only_on_its_own_data(tmp_path):
    """SUPERB's KS test set (Speech Commands v0.01, 3081 clips): the published 0.9669 is the reference;
    the same numbers on another corpus are scored against the board's best instead."""
    _ks(tmp_path / "sc", "f", "fbank", 0.40, dataset="speech_commands:speech_commands_v0.01", test_utterances=3081)
    _ks(tmp_path / "sc", "h", "hubert", 0.88, dataset="speech_commands:speech_commands_v0.01", test_utterances=3081)
    table = leaderboard_table(collect(tmp_path / "sc")).set_index("upstream")
    assert table.loc["hubert", "ks score"] == pytest.approx(1000 * 0.48 / 0.5669)
    _ks(tmp_path / "demo", "f", "fbank", 0.40)
    _ks(tmp_path / "demo", "h", "hubert", 0.88)
    _ks(tmp_path / "demo", "a", "apc", 0.64)
    table = leaderboard_table(collect(tmp_path / "demo")).set_index("upstream")
    assert table.loc["hubert", "ks score"] == pytest.approx(1000.0)
    assert table.loc["apc", "ks score"] == pytest.approx(500.0)


def test_a_track_where_fbank_equals_the_reference_does_not_count(tmp_path):
    """ST: FBANK at the reference would divide by zero (or by noise): the track is left out of every
    upstream's average; KS still scores. Scores beyond ±1000 are clipped."""
    _ks(tmp_path, "ks-f", "fbank", 0.40)
    _ks(tmp_path, "ks-u", "up", 0.70)
    for name, upstream, bleu in (("st-f", "fbank", 17.1), ("st-u", "up", 6.0)):
        payload = _results(upstream, 1, bleu, bleu, task="st", metric="bleu")
        payload["experiment"] = name
        _write(tmp_path, name, payload)
    table = leaderboard_table(collect(tmp_path), references=with_overrides(["st:bleu=17.1"])).set_index("upstream")
    assert pd.isna(table.loc["up", "st score"]) and table.loc["up", "scored_tasks"] == 1
    assert table.loc["up", "superb_score"] == pytest.approx(1000.0)  # KS alone: the board's best
    assert table.loc["fbank", "superb_score"] == 0
    table = leaderboard_table(collect(tmp_path), references=with_overrides(["st:bleu=17.2"])).set_index("upstream")
    assert table.loc["up", "st score"] == -1000.0  # 1000 (6 - 17.1) / 0.1 = -111000, clipped
    assert table.loc["up", "superb_score"] == pytest.approx(0.0)


def test_within_noise_of_fbank_is_not_scored(tmp_path):
    for seed, acc in ((1, 0.40), (2, 0.50)):  # FBANK: mean 0.45, std 0.0707
        _ks(tmp_path, f"f{seed}", "fbank", acc, seed=seed)
    _ks(tmp_path, "u", "up", 0.47)  # the board's best, within FBANK's std of its mean
    table = leaderboard_table(collect(tmp_path)).set_index("upstream")
    assert table["ks score"].isna().all() and table["superb_score"].isna().all()


def test_learning_rate_chosen_on_dev(tmp_path):
    """Per upstream and track, the rate with the best mean dev metric counts, even when its test is worse."""
    for seed in (1, 2):
        _ks(tmp_path, f"f-lr1-s{seed}", "fbank", 0.50, seed=seed, lr=1e-3, dev=0.30)
        _ks(tmp_path, f"f-lr2-s{seed}", "fbank", 0.20, seed=seed, lr=1e-2, dev=0.60 + seed / 100)
        _ks(tmp_path, f"u-lr1-s{seed}", "up", 0.80, seed=seed, lr=1e-3, dev=0.90)
        _ks(tmp_path, f"u-lr2-s{seed}", "up", 0.85, seed=seed, lr=1e-2, dev=0.10)
    runs = choose_learning_rates(collect(tmp_path))
    kept = runs[runs["selected"] & (runs["split"] == "test")]
    assert sorted(kept["experiment"]) == ["f-lr2-s1", "f-lr2-s2", "u-lr1-s1", "u-lr1-s2"]
    table = leaderboard_table(collect(tmp_path)).set_index("upstream")
    assert table.loc["fbank", "ks lr"] == 1e-2 and table.loc["fbank", "ks accuracy"] == pytest.approx(0.20)
    assert table.loc["up", "ks lr"] == 1e-3 and table.loc["up", "ks accuracy"] == pytest.approx(0.80)
    assert table.loc["up", "ks n"] == 2
    search = chosen_rates(collect(tmp_path)).set_index("upstream")
    assert search.loc["fbank", "chosen_lr"] == 1e-2 and "0.001: 0.3" in search.loc["fbank", "dev_mean_per_lr"]


def test_learning_rate_search_without_dev_is_an_error(tmp_path):
    _ks(tmp_path, "a", "fbank", 0.5, lr=1e-3)
    path = _ks(tmp_path, "b", "fbank", 0.6, lr=1e-2)
    payload = json.loads(path.read_text())
    del payload["splits"]["dev"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"fbank on ks .*0\.01.*no dev results"):
        choose_learning_rates(collect(tmp_path))


def _track_run(root, name, upstream, track, value, *, metric="accuracy", higher=True, dataset="demo:demo",
               test_utterances=160, trials=None, seed=1, lr=None, dev=None, weights=None, extra=None):
    """A results.json of any track (task = track): test ``value``, dev ``dev`` (default: the same)."""
    payload = _results(upstream, seed, value if dev is None else dev, value, task=track, metric=metric, higher=higher)
    payload.update(dataset=dataset, experiment=name)
    payload["splits"]["test"]["utterances"] = test_utterances
    if trials is not None:
        payload["splits"]["test"]["trials"] = trials
    for split in ("dev", "test"):
        payload["splits"][split].update(extra or {})
    if lr is not None:
        payload["learning_rate"] = lr
    if weights is not None:
        payload["layer_weights"] = weights
    return _write(root, name, payload)


def _asv(root, name, upstream, eer, **kwargs):
    kwargs.setdefault("dataset", "voxceleb1:speechocean762_spk")
    return _track_run(root, name, upstream, "asv", eer, metric="eer", higher=False, **kwargs)


def test_asv_eer_is_lower_is_better_everywhere(tmp_path):
    """ASV's EER (in %, lower is better, from results.json): the dev-chosen rate is the one with the
    lowest dev EER, ranks and SUPERB scores follow the smallest EER, the table shows mean ± std unscaled;
    minDCF (another metric) is recognised as lower-is-better by its name."""
    for seed, (f, w) in enumerate(((20.0, 10.0), (22.0, 12.0)), start=1):
        _asv(tmp_path, f"f{seed}", "fbank", f, seed=seed, extra={"min_dcf_p0.01": 0.9})
        _asv(tmp_path, f"w{seed}", "wavlm", w, seed=seed, extra={"min_dcf_p0.01": 0.6})
        # hubert at two rates: 1e-3 has the lower dev EER (5), so it counts though its test EER is worse
        _asv(tmp_path, f"h-lr1-{seed}", "hubert", 6.0, seed=seed, lr=1e-3, dev=5.0, extra={"min_dcf_p0.01": 0.5})
        _asv(tmp_path, f"h-lr2-{seed}", "hubert", 3.0, seed=seed, lr=1e-2, dev=8.0, extra={"min_dcf_p0.01": 0.4})
    runs = collect(tmp_path)
    assert not runs["higher_is_better"].any() and set(runs["metric"]) == {"eer"}
    assert json.loads(runs["other_metrics"].iloc[0]) == {"min_dcf_p0.01": pytest.approx(0.9)}
    table = leaderboard_table(runs).set_index("upstream")
    assert table.loc["hubert", "asv lr"] == 1e-3 and table.loc["hubert", "asv eer"] == pytest.approx(6.0)
    assert list(table.index) == ["hubert", "wavlm", "fbank"] and list(table["rank"]) == [1, 2, 3]
    # no published reference holds for 160 utterances: the lowest EER on the board (hubert, 6 %) scores 1000
    assert table.loc["hubert", "asv score"] == pytest.approx(1000.0)
    assert table.loc["wavlm", "asv score"] == pytest.approx(1000 * (11.0 - 21.0) / (6.0 - 21.0))
    assert table.loc["fbank", "asv score"] == 0
    wavlm_line = next(line for line in format_markdown(table.reset_index()).splitlines() if "wavlm" in line)
    assert "11.00 ± 1.41" in wavlm_line  # EER in %, shown as stored (not × 100 like accuracy)
    # a reference on minDCF that does not hold here falls back to the board's lowest minDCF, not its highest
    references = {"asv": (Reference("eer", 4.04, "published", ("voxceleb1:*",), 4874, 37720),
                          Reference("min_dcf_p0.01", 0.3, "published", ("voxceleb1:*",), 4874, 37720))}
    selected = choose_learning_rates(runs)
    selected = selected[selected["selected"]]
    refs = column_references(metric_table(selected, "test"), selected, "test", "fbank", references).set_index("metric")
    assert refs.loc["min_dcf_p0.01", "value"] == pytest.approx(0.5) and "hubert" in refs.loc["min_dcf_p0.01", "source"]
    assert refs.loc["eer", "value"] == pytest.approx(6.0) and refs["scored"].all()


def test_speaker_and_emotion_references_hold_only_on_their_own_data(tmp_path):
    """SID (VoxCeleb1, 8251 test utterances), ASV (VoxCeleb1 test, 4874 utterances and 37720 trials) and
    ER (IEMOCAP, any fold size) score against WavLM Large's published numbers; the shared
    speechocean762_spk (160 test utterances), a VoxCeleb1-named root without the trial count, and EmoDB
    score against the board's best."""
    vox, ours = "voxceleb1:VoxCeleb1", "voxceleb1:speechocean762_spk"
    iemocap = "iemocap:IEMOCAP_full_release/session-folds-5"
    published = tmp_path / "published"
    _track_run(published, "sid-f", "fbank", "sid", 0.01, dataset=vox, test_utterances=8251)
    _track_run(published, "sid-h", "hubert", "sid", 0.80, dataset=vox, test_utterances=8251)
    _asv(published, "asv-f", "fbank", 9.56, dataset=vox, test_utterances=4874, trials=37720.0)  # as metrics hold it
    _asv(published, "asv-h", "hubert", 5.11, dataset=vox, test_utterances=4874, trials=37720)
    for fold, size in enumerate((1085, 1023, 1151, 1031, 1241)):
        _track_run(published, f"er-f{fold}", "fbank", "er", 0.35, dataset=iemocap,
                   test_utterances=size, seed=fold)
        _track_run(published, f"er-h{fold}", "hubert", "er", 0.65, dataset=iemocap,
                   test_utterances=size, seed=fold)
    table = leaderboard_table(collect(published)).set_index("upstream")
    assert table.loc["hubert", "sid score"] == pytest.approx(1000 * (0.80 - 0.01) / (0.9525 - 0.01))
    assert table.loc["hubert", "asv score"] == pytest.approx(1000 * (5.11 - 9.56) / (4.04 - 9.56))
    assert table.loc["hubert", "er score"] == pytest.approx(1000 * (0.65 - 0.35) / (0.7003 - 0.35))
    assert table.loc["hubert", "er n"] == 5

    shared = tmp_path / "shared"
    _track_run(shared, "sid-f", "fbank", "sid", 0.01, dataset=ours, test_utterances=160)
    _track_run(shared, "sid-h", "hubert", "sid", 0.80, dataset=ours, test_utterances=160)
    _asv(shared, "asv-f", "fbank", 9.56, dataset=ours, test_utterances=160, trials=37720)
    _asv(shared, "asv-h", "hubert", 5.11, dataset=ours, test_utterances=160, trials=37720)
    _track_run(shared, "er-f", "fbank", "er", 0.35, dataset="emodb:emodb_2s/speaker-folds-5", test_utterances=100)
    _track_run(shared, "er-h", "hubert", "er", 0.65, dataset="emodb:emodb_2s/speaker-folds-5", test_utterances=100)
    table = leaderboard_table(collect(shared)).set_index("upstream")
    assert table.loc["hubert", ["sid score", "asv score", "er score"]].tolist() == pytest.approx([1000.0] * 3)

    no_trials = tmp_path / "no_trials"  # the right utterances but no (or another) trial count: not the published list
    _asv(no_trials, "asv-f", "fbank", 9.56, dataset=vox, test_utterances=4874)
    _asv(no_trials, "asv-h", "hubert", 5.11, dataset=vox, test_utterances=4874, trials=37611)
    assert leaderboard_table(collect(no_trials)).set_index("upstream").loc["hubert", "asv score"] == pytest.approx(1000)

    sid, asv, er = (DEFAULT_REFERENCES[t][0] for t in ("sid", "asv", "er"))
    assert sid.holds_for(vox, {8251}) and not sid.holds_for(ours, {160}) and not sid.holds_for(vox, {160})
    assert asv.holds_for(vox, {4874}, {37720}) and not asv.holds_for(vox, {4874})
    assert not asv.holds_for(ours, {160}, {37720})
    assert er.holds_for(iemocap, {1085, 1023}) and not er.holds_for("emodb:emodb_2s/speaker-folds-5", {100})
    assert not er.holds_for("iemocap:IEMOCAP_full_release/speaker-folds-3", {1085})  # not SUPERB's session folds
    assert asv.metric == "eer" and asv.value == pytest.approx(4.04)  # EER in %, like WER and PER


def _layer_board(root):
    """hubert (4 layers) on content and speaker tracks, 2 seeds where given; fbank single-layer; an
    unselected learning rate with other weights."""
    content, speaker = [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]
    for track, metric, higher, weights in (("asv", "eer", False, [speaker]), ("er", "accuracy", True, [speaker]),
                                           ("ks", "accuracy", True, [content, [0.1, 0.1, 0.3, 0.5]]),
                                           ("pr", "per", False, [content]), ("sid", "accuracy", True, [speaker])):
        for seed, w in enumerate(weights, start=1):
            _track_run(root, f"{track}-h{seed}", "hubert", track, 0.5, metric=metric, higher=higher, seed=seed,
                       lr=1e-3, dev=0.9 if higher else 0.1, weights=w)
        _track_run(root, f"{track}-h-other-lr", "hubert", track, 0.5, metric=metric, higher=higher, lr=1e-2,
                   dev=0.1 if higher else 0.9, weights=[0.97, 0.01, 0.01, 0.01])  # worse on dev: not counted
        _track_run(root, f"{track}-f", "fbank", track, 0.3, metric=metric, higher=higher, weights=[1.0])


def test_layer_weight_profiles_per_upstream_side_by_side(tmp_path):
    _layer_board(tmp_path / "exp")
    runs = choose_learning_rates(collect(tmp_path / "exp"))
    profiles = layer_weight_profiles(runs[runs["selected"]], "test")
    assert set(profiles["upstream"]) == {"hubert"}  # single-layer fbank left out
    assert list(profiles["track"].drop_duplicates()) == ["ks", "pr", "sid", "asv", "er"]  # content, then speaker
    ks = profiles[profiles["track"] == "ks"].set_index("layer")
    assert ks["mean"].tolist() == pytest.approx([0.1, 0.15, 0.3, 0.45])
    assert ks["std"].tolist() == pytest.approx([0.0, math.sqrt(0.005), 0.0, math.sqrt(0.005)])
    assert ks["n"].tolist() == [2] * 4
    sid = profiles[profiles["track"] == "sid"].set_index("layer")
    assert sid["mean"].tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1]) and sid["std"].isna().all()
    matrix = upstream_layer_matrices(runs[runs["selected"]], "test")["hubert"]
    assert list(matrix.index) == ["ks", "pr", "sid", "asv", "er"] and list(matrix.columns) == [0, 1, 2, 3]
    assert weight_centre(matrix.loc["sid"]) == pytest.approx(1.0)
    assert weight_centre(matrix.loc["pr"]) == pytest.approx(2.0)  # content tasks lean on later layers

    assert main([str(tmp_path / "exp"), "--out", str(tmp_path / "out")]) == 0
    written = pd.read_csv(tmp_path / "out" / "layer_weights.csv")
    assert list(written.columns) == ["upstream", "track", "dataset", "layer", "mean", "std", "n"]
    assert len(written) == 5 * 4 and set(written["upstream"]) == {"hubert"}
    er = written[written["track"] == "er"]
    assert er["mean"].tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1]) and er["n"].tolist() == [1] * 4
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Which layers each task uses, per upstream" in page and "layer_weights.csv" in page
    assert page.count("data:image/png;base64,") == 2  # bars and the layer-weight maps


def test_layer_weights_csv_is_written_without_multi_layer_upstreams(root):
    with pytest.warns(UserWarning, match="broken"):
        assert main([str(root), "--baseline", "fbank_global"]) == 0
    written = pd.read_csv(root / "layer_weights.csv")
    assert written.empty and list(written.columns) == ["upstream", "track", "dataset", "layer", "mean", "std", "n"]


def test_paired_differences_per_seed_follow_each_tracks_direction(tmp_path):
    """Three pairs (a setting on / off, seeds 1-3) on an accuracy track and an EER track; the rate chosen on dev."""
    root = tmp_path / "study"
    sid = {1: (0.50, 0.40), 2: (0.55, 0.45), 3: (0.40, 0.42)}  # seed -> (with, without): +0.10, +0.10, -0.02
    eer = {1: (10.0, 12.0), 2: (11.0, 12.0), 3: (9.0, 12.0)}  # -2, -1, -3: lower is better, so better in all 3
    for seed in (1, 2, 3):
        for name, index in (("mj_chmask", 0), ("mj", 1)):
            upstream = f"{name}_s{seed}"
            _write(root, f"sid-{upstream}", _results(upstream, 1337, 0.5, sid[seed][index], task="sid"))
            _write(root, f"asv-{upstream}", _results(upstream, 1337, 5.0, eer[seed][index], task="asv", metric="eer",
                                                     higher=False))
    # a second rate that is worse on dev but far better on test: it must not count
    bad = _results("mj_s1", 1337, 0.1, 0.99, task="sid")
    _write(root, "sid-mj_s1-lr", {**bad, "learning_rate": 0.1})
    for experiment in ("sid-mj_s1",):
        path = root / experiment / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "learning_rate": 0.01}))
    pairs = [(f"mj_chmask_s{s}", f"mj_s{s}") for s in (1, 2, 3)]
    per_pair, summary = paired_differences(collect(root), pairs)
    sid_rows = per_pair[per_pair["track"] == "sid"]
    assert sid_rows["difference"].round(4).tolist() == [0.10, 0.10, -0.02]
    row = summary.set_index("track").loc["sid"]
    assert row["pairs"] == 3 and row["a_better"] == 2
    assert row["mean_difference"] == pytest.approx(0.06) and row["std_difference"] == pytest.approx(0.069282, 1e-4)
    row = summary.set_index("track").loc["asv"]
    assert row["a_better"] == 3 and row["mean_difference"] == pytest.approx(-2.0) and row["t_test_p"] < 0.1
    out = tmp_path / "paired.md"
    assert paired_main([str(root), "--pair", "mj_chmask_s1=mj_s1", "--pair", "mj_chmask_s2=mj_s2", "--out",
                        str(out)]) == 0
    assert "| sid " in out.read_text()
    assert paired_main([str(root), "--pair", "nothing=mj_s1"]) == 2  # an unknown upstream: a clear error


def _with_cost(upstream, accuracy, macs, params, *, rtf=0.01, mem=700.0, label=None):
    payload = _results(upstream, 1, accuracy, accuracy)
    payload.update(upstream_label=label or upstream, upstream_parameters=params,
                   cost={"version": 1, "lengths_s": [2.0, 5.0, 10.0], "macs_per_second": macs, "parameters": params,
                         "parameters_used": params, "rtf": rtf, "peak_mem_mb": mem, "device": "cpu", "threads": 1})
    return payload


def test_cost_columns_score_against_cost_and_the_pareto_front(tmp_path):
    from leaderboard.report import is_random_twin, pareto_front, plot_cost  # noqa: PLC0415  (this test only)

    root = tmp_path / "exp"
    for name, payload in [("f", _with_cost("fbank", 0.40, 2e6, 0)),
                          ("s", _with_cost("small", 0.80, 1e8, 1_000_000, rtf=0.02, mem=710.0)),
                          ("b", _with_cost("big", 0.90, 1e10, 100_000_000, rtf=0.5, mem=1900.0)),
                          ("w", _with_cost("waste", 0.70, 5e9, 50_000_000)),  # costs more than small, scores less
                          ("r", _with_cost("apc", 0.60, 1e8, 1_000_000, label="apc:random")),  # small's cost, less
                          ("o", _results("old", 1, 0.5, 0.5))]:  # written before results.json had a cost
        _write(root, name, payload)
    _write(root, "s2", {**_with_cost("small", 0.80, 1e8, 1_000_000, rtf=0.04, mem=730.0), "seed": 2})
    runs = collect(root)
    assert runs.loc[runs["upstream"] == "small", "macs_per_second"].eq(1e8).all()
    assert runs.loc[runs["upstream"] == "old", ["macs_per_second", "rtf", "peak_mem_mb"]].isna().all().all()
    table = leaderboard_table(runs).set_index("upstream")
    assert table.loc["small", "rtf"] == pytest.approx(0.03) and table.loc["small", "peak_mem_mb"] == 720.0  # medians
    assert table.loc["big", "macs_per_second"] == 1e10 and table.loc["small", "cost_device"] == "cpu"
    assert math.isnan(table.loc["old", "macs_per_second"])
    shown = format_markdown(leaderboard_table(runs))
    assert "MACs/s (G)" in shown and "RTF" in shown and "peak mem (MB)" in shown
    small = [cell.strip() for cell in next(line for line in shown.splitlines() if "| small" in line).split("|")]
    assert small[5:8] == ["0.1", "0.03", "720"]  # after rank, upstream, params, pre-training
    ranked = table[table["superb_score"].notna()]
    by_macs = pareto_front(ranked["macs_per_second"], ranked["superb_score"])
    assert sorted(by_macs[by_macs].index) == ["big", "fbank", "small"]  # waste and the random twin are beaten
    by_params = pareto_front(ranked["parameters"].astype(float), ranked["superb_score"])
    assert sorted(by_params[by_params].index) == ["big", "fbank", "small"]
    assert is_random_twin("apc:random") and is_random_twin("hf:wavlm-random") and not is_random_twin("apc:apc_tiny")
    assert plot_cost(leaderboard_table(runs)) is not None
    assert main([str(root), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Score against cost" in page and page.count("data:image/png;base64,") == 2  # bars, cost
    assert (tmp_path / "out" / "score_vs_cost.png").read_bytes().startswith(b"\x89PNG")
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert {"macs_per_second", "rtf", "peak_mem_mb", "parameters_used", "cost_device"} <= set(board.columns)


def test_pareto_front_ties_and_missing_points():
    from leaderboard.report import pareto_front  # noqa: PLC0415  (this test only)

    cost = pd.Series([1.0, 1.0, 2.0, math.nan, 3.0], index=list("abcde"))
    score = pd.Series([5.0, 5.0, 4.0, 9.0, 6.0], index=list("abcde"))
    front = pareto_front(cost, score)
    assert list(front[front].index) == ["a", "b", "e"]  # equal points both stay; c is beaten; d has no cost


def test_the_rate_is_chosen_on_the_metric_that_selected_checkpoints(tmp_path):
    """IC selects checkpoints on slot accuracy when utterance accuracy is 0 on dev at every rate: the learning-rate
    search must compare slot accuracies, not a tie of zeros (which would keep whichever rate came first)."""
    root = tmp_path / "ic"
    for lr, slot in ((1e-4, 0.30), (1e-3, 0.45), (1e-2, 0.40)):
        payload = _results("fbank_global", 1, 0.0, 0.0, task="ic")
        payload["learning_rate"], payload["selection_metric"] = lr, "slot_accuracy"
        for split in ("dev", "test"):
            payload["splits"][split]["slot_accuracy"] = slot
        _write(root, f"ic-lr{lr}", payload)
    runs = choose_learning_rates(collect(root))
    assert set(runs.loc[runs["selected"], "learning_rate"]) == {1e-3}
    assert chosen_rates(collect(root))["chosen_lr"].tolist() == [1e-3]
