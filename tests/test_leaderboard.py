"""Tests for the leaderboard: collected rows, seed statistics, SUPERB score, ranking, CSV/Markdown/HTML outputs, bad files."""

import json
import math

import pandas as pd
import pytest

from leaderboard import collect, leaderboard_table, superb_score
from leaderboard.cli import main
from leaderboard.collect import COLUMNS
from leaderboard.report import format_markdown, layer_weight_matrix, pretraining_curves
from leaderboard.score import parse_reference, with_overrides


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
        f"skipping {tmp_path / name / 'results.json'}" for name in ("list", "no_metric", "missing_keys", "bad_seed", "bad_training"))
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
    # SUPERB score against the default KS reference 0.9669: 1000 (0.88 - 0.40) / (0.9669 - 0.40)
    assert hubert["ks score"] == pytest.approx(846.71, abs=0.01) and fbank["ks score"] == 0
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
    assert hubert_line.split("|")[-2].strip() == "847"  # the SUPERB score column, last
    page = (root / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "40.00 ± 2.83" in page
    assert page.count("data:image/png;base64,") == 1  # bars only: no multi-layer weights, no pre-training curves
    assert "<script" not in page and "src='http" not in page  # self-contained


def test_report_plots_layer_weights_and_pretraining_curves(tmp_path):
    pretrain = tmp_path / "pretrain" / "apc_tiny"
    pretrain.mkdir(parents=True)
    (pretrain / "curve.tsv").write_text("step\ttrain_loss\tvalid_loss\tlr\tseconds\n100\t0.5\t0.45\t1e-3\t10\n200\t0.4\t0.41\t9e-4\t20\n")
    for name, upstream, acc, weights in [("f", "fbank", 0.3, [1.0]), ("a1", "apc", 0.8, [0.2, 0.3, 0.5]),
                                         ("a2", "apc", 0.7, [0.4, 0.3, 0.3])]:
        payload = _results(upstream, 1, acc, acc)
        payload.update(layer_weights=weights, upstream_checkpoint=None if upstream == "fbank" else str(pretrain / "upstream.pt"),
                       upstream_label=upstream if upstream == "fbank" else "apc:apc_tiny")
        _write(tmp_path / "exp", name, payload)
    runs = collect(tmp_path / "exp")
    matrix = layer_weight_matrix(runs, "test")["ks"]
    assert list(matrix.index) == ["apc:apc_tiny"]  # single-layer fbank left out
    assert matrix.loc["apc:apc_tiny"].tolist() == pytest.approx([0.3, 0.3, 0.4])  # mean over seeds
    assert list(pretraining_curves(runs, [])["apc:apc_tiny"]["valid_loss"]) == [0.45, 0.41]
    assert main([str(tmp_path / "exp"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png;base64,") == 3


def test_cli_empty_folder_exits_1(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert str(empty) in capsys.readouterr().err
    assert not (empty / "leaderboard.csv").exists()


def test_cli_unknown_split_exits_1(root, capsys):
    with pytest.warns(UserWarning):
        assert main([str(root), "--split", "eval"]) == 1
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
