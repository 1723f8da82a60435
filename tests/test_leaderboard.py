"""Tests for the leaderboard: collected rows, seed statistics, SUPERB score, ranking, CSV/Markdown/HTML outputs,
bad files."""

import json
import math

import pandas as pd
import pytest

from leaderboard import collect, leaderboard_table, superb_score
from leaderboard.cli import main
from leaderboard.collect import COLUMNS
from leaderboard.report import format_markdown, layer_weight_matrix, pretraining_curves
from leaderboard.score import parse_reference, with_overrides
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
