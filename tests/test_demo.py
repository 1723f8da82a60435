"""The README's main command, shrunk: demo corpus -> KS on both FBANK variants -> leaderboard; reruns reuse."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recipes.demo import main


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed: the demo corpus cannot be built")
def test_demo_end_to_end_and_idempotent(tmp_path: Path, capsys):
    args = ["--expdir", str(tmp_path / "exp"), "-o", f"task.root={tmp_path / 'demo_keywords'}",
            "-o", f"cache.root={tmp_path / 'cache'}", "-o", "train.total_steps=40", "-o", "train.eval_every=20"]
    assert main(args) == 0
    first = capsys.readouterr().out
    runs = pd.read_csv(tmp_path / "exp" / "runs.csv")
    assert set(runs["upstream"]) == {"fbank", "fbank_global"}
    assert set(runs["split"]) == {"dev", "test"} and (runs["metric"] == "accuracy").all()
    board = pd.read_csv(tmp_path / "exp" / "leaderboard.csv")
    assert set(board["upstream"]) == {"fbank", "fbank_global"} and "ks accuracy" in board.columns
    assert "fbank_global" in first and (tmp_path / "exp" / "report.html").is_file()
    assert main(args) == 0
    second = capsys.readouterr().out
    assert second.count("done already") == 2  # no training the second time
