"""Tests for leaderboard.layers: QbE's dev-chosen layer per upstream next to the PR head's learned layer
weights, from results.json files shaped as downstream.qbe and the runner write them."""

import json
import math

import pandas as pd
import pytest

from leaderboard import collect
from leaderboard.cli import main as board_main
from leaderboard.layers import (
    COLUMNS,
    collect_roots,
    csv_frame,
    layer_comparison,
    main,
    plot_layer_comparison,
)

QBE_DATA = "librispeech:librispeech_mini/dev-clean-queries/test-clean-documents"
PR_DATA = "demo:demo_asr/train-clean-100"


def _write(root, experiment, payload):
    path = root / experiment / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def _qbe(root, name, label, seed, layer, dev_mtwv, dev_map, test_mtwv, test_map, *, searched=None, num_layers=None,
         track="qbe", dataset=QBE_DATA):
    """A QbE results.json as downstream/qbe/run.py writes it: ``layer`` (chosen on dev), ``layers`` (every
    searched layer's dev_* and test_* metrics), one-hot ``layer_weights``, the chosen layer's metrics in splits."""
    searched = list(range(len(dev_mtwv))) if searched is None else searched
    num_layers = len(dev_mtwv) if num_layers is None else num_layers
    layers = []
    for i, index in enumerate(searched):
        layers.append({"layer": index, "dev_mtwv": dev_mtwv[i], "dev_mtwv_threshold": None, "dev_atwv": -0.2,
                       "dev_map": dev_map[i], "dev_p_at_10": 0.01, "test_mtwv": test_mtwv[i],
                       "test_mtwv_threshold": None, "test_atwv": -0.2, "test_map": test_map[i], "test_p_at_10": 0.02})
    at = searched.index(layer)
    payload = {
        "schema_version": 1, "task": "qbe", "track": track, "upstream": label.split(":")[0], "upstream_label": label,
        "primary_metric": "mtwv", "higher_is_better": True, "selection_metric": "mtwv", "dataset": dataset,
        "experiment": name, "seed": seed, "learning_rate": None, "checkpoint_step": None,
        "splits": {"dev": {"mtwv": dev_mtwv[at], "mtwv_threshold": None, "atwv": -0.2, "map": dev_map[at],
                           "p_at_10": 0.01, "utterances": 23, "trials": 2507},
                   "test": {"mtwv": test_mtwv[at], "mtwv_threshold": None, "atwv": -0.2, "map": test_map[at],
                            "p_at_10": 0.02, "utterances": 23, "trials": 2507}},
        "layer_weights": [1.0 if i == layer else 0.0 for i in range(num_layers)],
        "training": {"train_steps": 0, "dtw_seconds": 1.0, "wall_seconds": 2.0},
        "layer": layer, "layers": layers,
    }
    return _write(root, name, payload)


def _pr(root, name, label, seed, lr, dev_per, weights, *, dataset=PR_DATA):
    """A PR results.json as downstream.runner writes it (PER in %, lower is better)."""
    return _write(root, name, {
        "schema_version": 1, "task": "pr", "track": "pr", "upstream": label.split(":")[0], "upstream_label": label,
        "primary_metric": "per", "higher_is_better": False, "selection_metric": "per", "dataset": dataset,
        "experiment": name, "seed": seed, "learning_rate": lr, "checkpoint_step": 200, "head": "linear",
        "splits": {"dev": {"per": dev_per, "sub": 10.0, "del": 5.0, "ins": 1.0, "utterances": 80},
                   "test": {"per": dev_per + 1.0, "sub": 10.0, "del": 5.0, "ins": 1.0, "utterances": 80}},
        "layer_weights": weights,
        "training": {"train_steps": 200, "train_seconds": 3.0, "steps_per_second": 60.0},
    })


HUBERT_DEV_MTWV = ([0.00, 0.10, 0.20, 0.30], [0.00, 0.05, 0.20, 0.25], [0.00, 0.10, 0.30, 0.20])
HUBERT_TEST = ([0.01, 0.11, 0.21, 0.31], [0.02, 0.12, 0.22, 0.32], [0.03, 0.13, 0.23, 0.33])


def _qbe_runs(root):
    """hubert (4 layers): seeds 1, 2, 3 choose layers 3, 3, 2; apc (3 layers): seeds 1, 2 choose 1 and 2 (a
    tie: the lower counts); wavlm (5 layers, layers 0, 2, 4 searched): no PR runs; fbank: single-layer."""
    for seed, (mtwv, test, layer) in enumerate(zip(HUBERT_DEV_MTWV, HUBERT_TEST, (3, 3, 2), strict=True), start=1):
        _qbe(root, f"qbe-hubert-seed{seed}", "hubert:hubert_base", seed, layer, mtwv, [0.1, 0.2, 0.3, 0.4],
             test, [m + 0.5 for m in test])
    _qbe(root, "qbe-apc-seed1", "apc:apc_tiny", 1, 1, [0.0, 0.4, 0.1], [0.1, 0.6, 0.2], [0.0, 0.3, 0.1],
         [0.2, 0.5, 0.3])
    _qbe(root, "qbe-apc-seed2", "apc:apc_tiny", 2, 2, [0.0, 0.1, 0.5], [0.1, 0.2, 0.7], [0.0, 0.1, 0.4],
         [0.2, 0.3, 0.6])
    _qbe(root, "qbe-wavlm-seed1", "wavlm:wavlm_x", 1, 4, [0.1, 0.2, 0.3], [0.3, 0.4, 0.5], [0.1, 0.2, 0.3],
         [0.3, 0.4, 0.5], searched=[0, 2, 4], num_layers=5)
    _qbe(root, "qbe-fbank-seed1", "fbank", 1, 0, [0.01], [0.05], [0.02], [0.06])


def _pr_runs(root):
    """hubert at two rates: 1e-3 has the lower dev PER (its weights' mean peaks at layer 3), 1e-2 (peaking at
    layer 2) does not count; apc at one rate peaks at layer 2; fbank single-layer; mockingjay has no QbE run."""
    _pr(root, "pr-hubert-seed1-lr0.001", "hubert:hubert_base", 1, 1e-3, 20.0, [0.1, 0.2, 0.3, 0.4])
    _pr(root, "pr-hubert-seed2-lr0.001", "hubert:hubert_base", 2, 1e-3, 22.0, [0.1, 0.1, 0.3, 0.5])
    _pr(root, "pr-hubert-seed1-lr0.01", "hubert:hubert_base", 1, 1e-2, 40.0, [0.05, 0.05, 0.8, 0.1])
    _pr(root, "pr-apc-seed1-lr0.01", "apc:apc_tiny", 1, 1e-2, 60.0, [0.1, 0.3, 0.6])
    _pr(root, "pr-fbank-seed1-lr0.01", "fbank", 1, 1e-2, 80.0, [1.0])
    _pr(root, "pr-mockingjay-seed1-lr0.01", "mockingjay:mockingjay_tiny", 1, 1e-2, 50.0, [0.7, 0.2, 0.1])


@pytest.fixture
def board(tmp_path):
    """One experiment folder holding both tracks."""
    root = tmp_path / "exp"
    _qbe_runs(root)
    _pr_runs(root)
    return root


def test_chosen_layers_pr_top_layer_and_agreement(board):
    table = layer_comparison(collect(board))
    assert list(table.columns) == COLUMNS
    # a row per multi-layer upstream with QbE runs: fbank (single-layer) and mockingjay (PR only) left out
    assert list(table["upstream"]) == ["apc:apc_tiny", "hubert:hubert_base", "wavlm:wavlm_x"]
    rows = table.set_index("upstream")

    hubert = rows.loc["hubert:hubert_base"]
    assert hubert["qbe_seed_layers"] == [(1, 3), (2, 3), (3, 2)]
    assert (hubert["qbe_layer"], hubert["qbe_layer_votes"], hubert["qbe_runs"]) == (3, 2, 3)
    assert hubert["qbe_dev_mtwv"] == pytest.approx([0.0, 0.25 / 3, 0.7 / 3, 0.75 / 3])  # mean over seeds
    assert hubert["qbe_dev_map"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert hubert["qbe_test_mtwv"] == pytest.approx((0.31 + 0.32 + 0.23) / 3)  # each seed's chosen layer
    assert hubert["qbe_test_map"] == pytest.approx((0.81 + 0.82 + 0.73) / 3)
    assert hubert["qbe_dataset"] == QBE_DATA and hubert["pr_dataset"] == PR_DATA
    # PR at the rate chosen on dev (1e-3; 1e-2 would have put the top at layer 2), mean over its two seeds
    assert hubert["pr_learning_rate"] == pytest.approx(1e-3) and hubert["pr_runs"] == 2
    assert hubert["pr_weights"] == pytest.approx([0.1, 0.15, 0.3, 0.45])
    assert hubert["pr_top_layer"] == 3 and hubert["pr_top_weight"] == pytest.approx(0.45)
    assert hubert["pr_centre"] == pytest.approx(0.15 + 0.6 + 1.35)
    assert bool(hubert["agree"]) and hubert["layer_gap"] == 0

    apc = rows.loc["apc:apc_tiny"]
    assert apc["qbe_seed_layers"] == [(1, 1), (2, 2)]
    assert (apc["qbe_layer"], apc["qbe_layer_votes"]) == (1, 1)  # one vote each: the lower layer
    assert apc["pr_top_layer"] == 2 and apc["pr_weights"] == pytest.approx([0.1, 0.3, 0.6])
    assert not bool(apc["agree"]) and apc["layer_gap"] == -1

    wavlm = rows.loc["wavlm:wavlm_x"]  # layers 0, 2, 4 of 5 searched; no PR run
    assert wavlm["qbe_layer"] == 4
    assert wavlm["qbe_dev_mtwv"][::2] == pytest.approx([0.1, 0.2, 0.3])
    assert math.isnan(wavlm["qbe_dev_mtwv"][1]) and math.isnan(wavlm["qbe_dev_mtwv"][3])
    assert wavlm["pr_weights"] is None and pd.isna(wavlm["pr_top_layer"])
    assert pd.isna(wavlm["agree"]) and pd.isna(wavlm["layer_gap"])

    fig = plot_layer_comparison(table)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel()]
    assert len(visible) == 3  # one plot per row (the PR weights on a twin axis of the same plot)
    assert list(visible[0].lines[0].get_ydata()) == pytest.approx([0.0, 0.25, 0.3])  # apc's dev MTWV per layer


def test_cli_prints_the_markdown_table_and_writes_csv(board, tmp_path, capsys):
    out = tmp_path / "tables" / "layers.csv"
    assert main([str(board), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    hubert = next(line for line in printed.splitlines() if "hubert:hubert_base" in line)
    cells = [cell.strip() for cell in hubert.strip("|").split("|")]
    assert cells[1:4] == ["1:3, 2:3, 3:2", "3 (2/3)", "0.000 0.083 0.233 [0.250]"]
    assert cells[-4:] == ["0.10 0.15 0.30 [0.45]", "0.001 (2)", "3", "yes"]
    apc = next(line for line in printed.splitlines() if "apc:apc_tiny" in line)
    assert apc.rstrip(" |").endswith("no (QbE -1)")
    wavlm = next(line for line in printed.splitlines() if "wavlm" in line)
    assert "0.100 – 0.200 – [0.300]" in wavlm
    written = pd.read_csv(out)
    assert list(written.columns) == COLUMNS
    rows = written.set_index("upstream")
    assert rows.loc["hubert:hubert_base", "qbe_seed_layers"] == "1:3 2:3 3:2"
    assert json.loads(rows.loc["wavlm:wavlm_x", "qbe_dev_mtwv"]) == pytest.approx([0.1, None, 0.2, None, 0.3])
    assert rows["agree"].tolist()[:2] == [False, True] and pd.isna(rows.loc["wavlm:wavlm_x", "agree"])
    assert rows["pr_top_layer"].tolist()[:2] == [2, 3]

    md = tmp_path / "layers.md"
    assert main([str(board), "--out", str(md)]) == 0
    assert md.read_text().strip() in capsys.readouterr().out


def test_upstreams_are_matched_across_folders(tmp_path, capsys):
    """QbE runs in one folder, PR runs in another: the rows join on upstream_label; the table equals the
    one of a single folder holding both."""
    _qbe_runs(tmp_path / "qbe_exp")
    _pr_runs(tmp_path / "pr_exp")
    _qbe_runs(tmp_path / "both")
    _pr_runs(tmp_path / "both")
    runs = collect_roots([tmp_path / "qbe_exp", tmp_path / "pr_exp"])
    across = layer_comparison(runs)
    assert across["pr_top_layer"].tolist()[:2] == [2, 3] and across["agree"].tolist()[:2] == [False, True]
    pd.testing.assert_frame_equal(csv_frame(across), csv_frame(layer_comparison(collect(tmp_path / "both"))))
    # a folder reached twice (nested in another argument) counts its runs once
    twice = layer_comparison(collect_roots([tmp_path / "qbe_exp", tmp_path / "qbe_exp" / "qbe-hubert-seed1",
                                            tmp_path / "pr_exp", tmp_path / "pr_exp" / "pr-hubert-seed2-lr0.001"]))
    hubert = twice.set_index("upstream").loc["hubert:hubert_base"]
    assert hubert["qbe_runs"] == 3 and hubert["pr_runs"] == 2
    assert hubert["pr_weights"] == pytest.approx([0.1, 0.15, 0.3, 0.45])

    out = tmp_path / "across.csv"
    assert main([str(tmp_path / "qbe_exp"), str(tmp_path / "pr_exp"), "--out", str(out)]) == 0
    assert pd.read_csv(out).set_index("upstream").loc["hubert:hubert_base", "agree"]
    assert "| hubert:hubert_base" in capsys.readouterr().out


def test_a_folder_without_qbe_runs_is_a_clear_error(tmp_path, capsys):
    _pr_runs(tmp_path / "pr_exp")
    with pytest.raises(ValueError, match=r"no runs of track 'qbe' in .*pr_exp; tracks found: pr"):
        layer_comparison(collect(tmp_path / "pr_exp"), source=str(tmp_path / "pr_exp"))
    assert main([str(tmp_path / "pr_exp")]) == 2
    err = capsys.readouterr().err
    assert "error: no runs of track 'qbe'" in err and str(tmp_path / "pr_exp") in err and "tracks found: pr" in err

    _qbe_runs(tmp_path / "qbe_exp")  # and the other way round: no PR runs
    assert main([str(tmp_path / "qbe_exp")]) == 2
    assert "no runs of track 'pr'" in capsys.readouterr().err
    assert main([str(tmp_path / "qbe_exp"), str(tmp_path / "missing"), str(tmp_path / "pr_exp")]) == 2
    assert "(no such directory)" in capsys.readouterr().err
    assert main([str(tmp_path / "qbe_exp"), str(tmp_path / "pr_exp"), "--out", str(tmp_path / "t.txt")]) == 2
    assert ".csv or .md" in capsys.readouterr().err


def test_other_track_names_and_qbe_runs_without_per_layer_results(tmp_path, capsys):
    root = tmp_path / "exp"
    _qbe(root, "qbe-words-hubert", "hubert:hubert_base", 1, 2, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3],
         [0.1, 0.2, 0.3], track="qbe_words")
    _pr(root, "pr-hubert", "hubert:hubert_base", 1, 1e-3, 20.0, [0.2, 0.3, 0.5])
    assert main([str(root)]) == 2
    assert "tracks found: pr, qbe_words" in capsys.readouterr().err
    assert main([str(root), "--qbe-track", "qbe_words"]) == 0
    assert "| yes" in capsys.readouterr().out
    # a track whose runs do not record per-layer results (here PR's runs named as the QbE track): each file is
    # named in a warning, then an error
    with pytest.warns(UserWarning, match=r"pr-hubert.*'layer'"):
        with pytest.raises(ValueError, match="per-layer results"):
            layer_comparison(collect(root), qbe_track="pr")


def test_leaderboard_writes_qbe_layers_csv_and_a_report_section(board, tmp_path, capsys):
    out = tmp_path / "out"
    assert board_main([str(board), "--out", str(out)]) == 0
    assert str(out / "qbe_layers.csv") in capsys.readouterr().out
    written = pd.read_csv(out / "qbe_layers.csv").set_index("upstream")
    assert written.loc["hubert:hubert_base", ["qbe_layer", "pr_top_layer"]].tolist() == [3, 3]
    assert not written.loc["apc:apc_tiny", "agree"]
    page = (out / "report.html").read_text()
    assert "QbE&#x27;s best layer against PR&#x27;s learned layer weights, per upstream" in page
    assert "0.10 0.15 0.30 [0.45]" in page  # the table, beside the plots
    assert page.count("data:image/png;base64,") == 3  # bars, layer-weight maps, the QbE-against-PR plots

    pr_only = tmp_path / "pr_only"  # without a qbe track: no qbe_layers.csv, no section
    _pr_runs(pr_only)
    assert board_main([str(pr_only)]) == 0
    assert not (pr_only / "qbe_layers.csv").exists()
    assert "qbe_layers.csv" not in capsys.readouterr().out
    assert "QbE&#x27;s best layer" not in (pr_only / "report.html").read_text()
