"""upstream.pretrain.layer_stats: per-layer within-utterance variance share, adjacent-frame cosine, effective rank."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from upstream.pretrain.layer_stats import layer_statistics, main
from upstream.registry import build_upstream, save_upstream

from .conftest import SR, tone


def test_statistics_against_a_hand_count():
    # two utterances on one axis, means +5 and -5, each frame 1 from its mean: variance 26 in all, 1 within
    one_axis = [torch.tensor([[6.0, 0.0], [4.0, 0.0]]), torch.tensor([[-4.0, 0.0], [-6.0, 0.0]])]
    assert layer_statistics(one_axis) == pytest.approx(
        {"within_utterance": 1 / 26, "adjacent_cosine": -1.0, "effective_rank": 1.0})
    # e1, -e1, e2, -e2: two equal directions; neighbours opposite, orthogonal, opposite
    turns = [torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])]
    assert layer_statistics(turns) == pytest.approx(
        {"within_utterance": 1.0, "adjacent_cosine": -2 / 3, "effective_rank": 2.0})
    with pytest.raises(ValueError, match="two or more frames"):
        layer_statistics([torch.zeros(1, 3)])


TINY = {"apc": {"hidden_size": 32, "num_layers": 2},
        "bestrq": {"embed_dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 2}}


@pytest.mark.parametrize("name, settings", TINY.items())
def test_command_on_a_checkpoint_and_its_random_twin(tmp_path: Path, name: str, settings: dict, capsys):
    rng = np.random.default_rng(0)
    for i, freq in enumerate((220.0, 330.0, 440.0)):
        sf.write(tmp_path / f"u{i}.wav", tone(freq, 1.0, rng), SR)
    model = build_upstream(name, preset="tiny", **settings)
    if model.needs_fit:
        model.fit(torch.from_numpy(tone(300.0, 1.0, rng)) for _ in range(2))
    torch.manual_seed(5)
    for p in model.parameters():  # weights no random draw gives: the twin must not share them
        p.data.normal_(0.0, 0.3)
    save_upstream(model, tmp_path / "up.pt")
    results = {}
    for twin in (False, True):
        out = tmp_path / f"{twin}.json"
        assert main(["-u", name, "-k", str(tmp_path / "up.pt"), "--data", str(tmp_path), "--utterances", "3",
                     "--out", str(out)] + (["--random"] if twin else [])) == 0
        results[twin] = json.loads(out.read_text())
    layers = results[False]["layers"]
    assert len(layers) == model.num_layers and results[False]["segments"] == 3 and model.hidden_size == 32
    assert all(0 < s["within_utterance"] <= 1 and -1 <= s["adjacent_cosine"] <= 1
               and 1 <= s["effective_rank"] <= 32 for s in layers)
    assert results[True]["random"] and results[True]["layers"] != layers  # other weights, other statistics
    assert "effective_rank" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["-u", name, "--data", str(tmp_path), "--random"])  # a twin needs the checkpoint's settings
