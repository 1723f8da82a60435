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
    board = pd.read_csv(tmp_path / "exp" / "leaderboard.csv")
    assert set(board["upstream"]) == {"fbank", "fbank_global"}
    assert set(board["split"]) == {"dev", "test"} and (board["metric"] == "accuracy").all()
    assert "| test" in first and "fbank_global" in first
    assert main(args) == 0
    second = capsys.readouterr().out
    assert second.count("done already") == 2  # no training the second time
