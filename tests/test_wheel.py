"""The toolkit as a user installs it, outside the checkout: ``scripts/check_wheel.sh`` builds the wheel,
installs it into a fresh venv (dependencies borrowed from .venv), runs every console script's --help and
one tiny train + evaluate + leaderboard from an empty folder with a recipe named as the wheel ships it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").is_file() or shutil.which("bash") is None,
                    reason="needs the checkout's .venv (scripts/setup.sh) and bash")
def test_the_wheel_installs_and_runs_outside_the_checkout():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_wheel.sh")], capture_output=True, text=True,
                          timeout=900)
    sys.stdout.write(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check_wheel: passed" in done.stdout
    for command in ("superb-downstream", "superb-pretrain", "superb-leaderboard", "python -m recipes.benchmark"):
        assert f"check_wheel: {command} --help: ok" in done.stdout
