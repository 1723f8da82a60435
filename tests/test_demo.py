"""The README's main command, shrunk: the demo preset of the benchmark builds its TTS keyword corpus,
trains KS on FBANK at each learning rate of its grid (two worker processes) and writes the
leaderboard; a rerun reuses the experiments."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recipes.benchmark.run import main


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed: the demo corpus cannot be built")
def test_demo_preset_end_to_end_and_idempotent(tmp_path: Path, capsys):
    args = ["--data", "demo", "--upstreams", "fbank", "--tasks", "ks", "--expdir", str(tmp_path / "exp"),
            "-o", f"task.root={tmp_path / 'demo_keywords'}", "-o", f"cache.root={tmp_path / 'cache'}",
            "-o", "train.total_steps=40", "-o", "train.eval_every=20"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert (tmp_path / "demo_keywords" / "BUILT.json").is_file()
    runs = pd.read_csv(tmp_path / "exp" / "runs.csv")
    assert set(runs["upstream"]) == {"fbank"} and set(runs["split"]) == {"dev", "test"}
    assert (runs["metric"] == "accuracy").all() and runs["value"].between(0, 1).all()
    board = pd.read_csv(tmp_path / "exp" / "leaderboard.csv")
    assert list(board["upstream"]) == ["fbank"] and "ks accuracy" in board.columns
    assert "fbank" in first and (tmp_path / "exp" / "report.html").is_file()
    assert main(args) == 0
    timing = pd.read_csv(tmp_path / "exp" / "timing.tsv", sep="\t").set_index("stage")
    stages = ["ks fbank seed 1337 lr0.001", "ks fbank seed 1337 lr0.01"]  # the demo's learning-rate grid
    assert (timing.loc[stages, "status"] == "reused").all()  # no training the second time
    assert board.loc[0, "ks lr"] in (0.001, 0.01)
