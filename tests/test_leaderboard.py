"""Tests for leaderboard.collect: rows, seed statistics, ranking, CSV round trip, CLI and bad files."""

import json
import math

import pandas as pd
import pytest

from leaderboard import collect, summarise, write_leaderboard
from leaderboard.collect import COLUMNS, main


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


def test_summarise_mean_std_and_order(root):
    summary = summarise(_collect_quietly(root))
    assert list(summary[["task", "split", "upstream"]].itertuples(index=False, name=None)) == [
        ("ks", "dev", "hubert"), ("ks", "dev", "fbank_global"),
        ("ks", "test", "hubert"), ("ks", "test", "fbank_global"),
    ]
    fbank = summary[(summary["upstream"] == "fbank_global") & (summary["split"] == "test")].iloc[0]
    assert fbank["n"] == 2
    assert fbank["mean"] == pytest.approx(0.40)
    assert fbank["std"] == pytest.approx(math.sqrt(2 * 0.02**2 / 1))  # sample std, ddof=1
    hubert = summary[(summary["upstream"] == "hubert") & (summary["split"] == "test")].iloc[0]
    assert hubert["n"] == 1 and hubert["mean"] == pytest.approx(0.88) and math.isnan(hubert["std"])


def test_summarise_lower_is_better_ranks_smallest_first(tmp_path):
    for name, upstream, wer in [("a", "fbank_global", 0.30), ("b", "hubert", 0.12), ("c", "wavlm", 0.20)]:
        _write(tmp_path, name, _results(upstream, 1, wer, wer, task="asr", metric="wer", higher=False))
    summary = summarise(collect(tmp_path))
    test = summary[summary["split"] == "test"]
    assert list(test["upstream"]) == ["hubert", "wavlm", "fbank_global"]
    assert not test["higher_is_better"].any()


def test_runs_on_different_datasets_are_never_averaged(tmp_path):
    for name, dataset, wer in [("ls", "librispeech:librispeech_mini/librilight-10min", 60.0),
                               ("lj", "librispeech:ljspeech_reread/librilight-10min", 40.0)]:
        payload = _results("fbank", 1, wer, wer, task="asr", metric="wer", higher=False)
        payload["dataset"] = dataset
        _write(tmp_path, name, payload)
    _write(tmp_path, "old", _results("fbank", 2, 50.0, 50.0, task="asr", metric="wer", higher=False))  # no dataset key
    test = summarise(collect(tmp_path)).query("split == 'test'")
    assert sorted(zip(test["dataset"], test["mean"], test["n"])) == [
        ("librispeech:librispeech_mini/librilight-10min", 60.0, 1), ("librispeech:ljspeech_reread/librilight-10min", 40.0, 1),
        ("unspecified", 50.0, 1)]


def test_csv_round_trip(root, tmp_path):
    out = tmp_path / "out" / "board.csv"
    with pytest.warns(UserWarning, match="broken"):
        df = write_leaderboard(root, out)
    back = pd.read_csv(out).astype(df.dtypes.to_dict())

    def missing_as_none(frame):
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(missing_as_none(back), missing_as_none(df))


def test_cli_prints_table_and_writes_csv(root, capsys):
    with pytest.warns(UserWarning, match="broken"):
        assert main([str(root), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert (root / "leaderboard.csv").is_file()
    assert "fbank_global" in out and "hubert" in out
    assert "88.00" in out and "40.00 ± 2.83" in out  # accuracy as percentages, mean ± std
    table = [line for line in out.splitlines() if line.startswith("| test")]
    assert len(table) == 2 and "hubert" in table[0]  # only the chosen split, best first


def test_cli_output_option(root, tmp_path):
    out_csv = tmp_path / "elsewhere.csv"
    with pytest.warns(UserWarning):
        assert main([str(root), "-o", str(out_csv)]) == 0
    assert len(pd.read_csv(out_csv)) == 6 and not (root / "leaderboard.csv").exists()


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
    assert list(summarise(df)["upstream"]) == ["apc:apc_tiny", "apc:random"]
