"""The cost of an upstream (:mod:`upstream.cost`): MACs against hand counts and a second counter,
parameters counted once, what is not counted, the timed pass, the cached record and results.json."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.runs import Results
from upstream import build_upstream
from upstream.base import Upstream, UpstreamOutput
from upstream.cost import cached_cost, count_macs, measure_cost, parameter_counts

SR = 16000
WIN, HOP, D, HEADS = 400, 320, 8, 2


class Tiny(Upstream):
    """Conv1d framing (1 -> D channels, 400-sample window, 320 hop), one Linear called twice (a shared
    module), a GRU, self-attention through ``scaled_dot_product_attention``; a predictor never called."""

    name, downsample_rate, hidden_size, num_layers = "tiny", HOP, D, 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, D, WIN, stride=HOP)
        self.shared = nn.Linear(D, D)
        self.gru = nn.GRU(D, D, batch_first=True)
        self.predictor = nn.Linear(D, 100)  # pre-training only: not run by forward

    def num_frames(self, num_samples):
        return (num_samples - WIN) // HOP + 1

    def forward(self, wavs, wav_lengths):
        x = self.conv(wavs[:, None]).transpose(1, 2)  # (B, T, D)
        a = self.shared(self.shared(x))
        g, _ = self.gru(a)
        q = g.view(g.shape[0], g.shape[1], HEADS, D // HEADS).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(g.shape)
        return UpstreamOutput([x, a, g, att], self.num_frames(wav_lengths))


def hand_macs(seconds: float) -> int:
    """The multiply-accumulates of :class:`Tiny` on ``seconds`` of audio, counted by hand."""
    t = (round(seconds * SR) - WIN) // HOP + 1
    conv = t * D * WIN  # each frame: D outputs of a 400-tap filter
    linear = 2 * t * D * D  # the shared Linear runs twice: computing it twice costs twice
    gru = t * 3 * D * (D + D)  # per step, 3 gates of W_ih x + W_hh h
    attention = 2 * HEADS * t * t * (D // HEADS)  # Q K^T and A V, per head
    return conv + linear + gru + attention


def test_macs_match_a_hand_count_on_every_length():
    model = Tiny().eval()
    for seconds in (0.5, 2.0, 5.0):
        macs, uncounted, _ = count_macs(model, seconds)
        assert macs == hand_macs(seconds) and uncounted == []
    cost = measure_cost(model, lengths_s=(1.0, 2.0), repeats=1)
    assert cost["macs"] == [hand_macs(1.0), hand_macs(2.0)]
    assert cost["macs_per_second"] == pytest.approx((hand_macs(1.0) / 1 + hand_macs(2.0) / 2) / 2)


def test_attention_is_counted_on_the_cpu_although_its_fused_kernel_has_no_formula():
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415  (this test only)
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    q = torch.randn(1, HEADS, 50, D // HEADS)
    with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION), FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, q, q)
    assert plain.get_total_flops() == 0  # why the counting pass uses the math kernel
    model = Tiny().eval()
    model.conv, model.shared, model.gru = nn.Identity(), nn.Identity(), nn.Identity()
    model.forward = lambda wavs, lengths: F.scaled_dot_product_attention(q, q, q)
    assert count_macs(model, 1.0)[0] == 2 * HEADS * 50 * 50 * (D // HEADS)


def test_shared_and_unused_parameters():
    model = Tiny()
    total, used = parameter_counts(model, count_macs(model.eval(), 1.0)[2])
    conv, shared, gru, predictor = (sum(p.numel() for p in m.parameters())
                                    for m in (model.conv, model.shared, model.gru, model.predictor))
    assert total == conv + shared + gru + predictor  # the shared Linear once
    assert used == conv + shared + gru  # the predictor never runs
    model.tied = model.shared  # a second name for the same module: still counted once
    assert parameter_counts(model)[0] == total


def test_fbank_lists_its_fft_as_not_counted_and_leaves_the_mode_alone():
    up = build_upstream("fbank")
    up.train()
    cost = measure_cost(up, lengths_s=(1.0,), repeats=1)
    assert up.training  # restored
    assert cost["uncounted_ops"] == ["aten._fft_r2c"]
    assert cost["parameters"] == cost["parameters_used"] == 0
    mel = 99 * 257 * 80  # 98.. frames x power spectrum bins x mel filters: the filterbank product
    assert mel * 0.95 < cost["macs"][0] < mel * 1.1
    assert cost["features_per_frame"] == 240 and cost["frames_per_second"] == pytest.approx(100, abs=0.5)
    assert cost["rtf"] > 0 and cost["peak_mem_mb"] > 0 and cost["threads"] == torch.get_num_threads()
    assert cost["device"] == "cpu" and "cpu" in cost["memory"]


def test_agrees_with_fvcore_where_both_count():
    fvcore = pytest.importorskip("fvcore.nn", reason="fvcore (a second MAC counter) is not installed")

    class Stacked(nn.Module):  # fvcore traces a module returning tensors
        def __init__(self, up):
            super().__init__()
            self.up = up

        def forward(self, wavs, lengths):
            return torch.stack(self.up(wavs, lengths).hidden_states)

    up = build_upstream("mockingjay", preset="tiny").eval()
    ours, _, _ = count_macs(up, 2.0)
    wav, length = 0.1 * torch.randn(1, 2 * SR), torch.tensor([2 * SR])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = fvcore.FlopCountAnalysis(Stacked(up), (wav, length))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        theirs = analysis.by_operator()
    assert set(theirs) == {"linear", "matmul"}  # the Transformer; the mel filterbank after an (uncounted) STFT
    frames, layers = int(up.num_frames(length)[0]), up.config.num_hidden_layers
    attention = 2 * frames * frames * up.hidden_size * layers  # fvcore does not count SDPA
    assert ours == theirs["linear"] + theirs["matmul"] + attention


def test_cached_cost_measures_once_per_fingerprint(tmp_path: Path, monkeypatch):
    import upstream.cost as cost_module  # noqa: PLC0415  (patched below)

    calls = []
    real = cost_module.measure_cost
    monkeypatch.setattr(cost_module, "measure_cost", lambda *a, **k: calls.append(1) or real(*a, **k))
    up = build_upstream("apc", preset="tiny", hidden_size=16, num_layers=2)
    first = cached_cost(up, tmp_path, (1.0,), 1)
    assert cached_cost(up, tmp_path, (1.0,), 1) == first and len(calls) == 1  # a learning-rate grid: measured once
    with torch.no_grad():
        next(up.parameters()).add_(1.0)  # new weights, new fingerprint
    cached_cost(up, tmp_path, (1.0,), 1)
    assert len(calls) == 2 and len(list(tmp_path.glob("apc-*.json"))) == 2
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_results_json_round_trip_with_and_without_cost():
    cost = measure_cost(Tiny(), lengths_s=(1.0,), repeats=1)
    record = {"task": "ks", "upstream": "tiny", "primary_metric": "accuracy", "higher_is_better": True,
              "splits": {"test": {"accuracy": 0.5}}, "schema_version": 1}
    results = Results.from_dict(json.loads(json.dumps({**record, "cost": cost})))
    assert results.cost == cost and results.extra == {}
    assert Results.from_dict(json.loads(json.dumps(results.to_dict()))) == results
    older = Results.from_dict(record)  # written before the cost record existed
    assert older.cost is None and "cost" not in older.to_dict()
    with pytest.raises(ValueError, match="'cost' has the wrong type"):
        Results.from_dict({**record, "cost": 3})
