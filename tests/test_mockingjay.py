"""Mockingjay: parity with S3PRL, masking, the MAM loss, padding, checkpoints."""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import pytest
import torch

from core.config import ConfigError
from corpora.audio import load_audio
from upstream.masking import band_mask, expected_masked_fraction, max_span_start, span_mask, spans_to_mask
from upstream.mockingjay.model import MockingjayUpstream, build_mockingjay, chunk_bounds
from upstream.mockingjay.s3prl import export_s3prl_mockingjay, load_s3prl_mockingjay
from upstream.registry import save_upstream

from .conftest import shared_data

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
LENGTHS = (16000, 12345, 7000)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is faster, and immune to OpenMP contention on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(lengths=LENGTHS, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy tones of different pitch and length, zero-padded."""
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        wavs[i, :n] = 0.3 * torch.sin(2 * math.pi * 220 * (i + 1) * t) + 0.05 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


def _model(seed=0, **overrides) -> MockingjayUpstream:
    torch.manual_seed(seed)
    return build_mockingjay(**{**SMALL, **overrides}).eval()


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor as (start, end) pairs."""
    runs, start = [], None
    for t, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            runs.append((start, t))
            start = None
    return runs


# ------------------------------------------------------------------------------------------------
# 1. Parity with S3PRL's own UpstreamExpert
# ------------------------------------------------------------------------------------------------
def _s3prl_expert(ckpt: Path):
    expert_mod = pytest.importorskip("s3prl.upstream.mockingjay.expert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return expert_mod.UpstreamExpert(ckpt=str(ckpt)).eval()


def _assert_parity(model: MockingjayUpstream, expert, wavs: torch.Tensor, lengths: torch.Tensor, atol=1e-4) -> None:
    """Ours on the padded batch vs S3PRL on each utterance alone (S3PRL's batched features depend on
    the longest utterance of the batch; see upstream/mockingjay/__init__.py)."""
    with torch.no_grad():
        out = model(wavs, lengths)
        assert out.lengths.tolist() == model.num_frames(lengths).tolist()
        for i, n in enumerate(lengths.tolist()):
            ref = expert([wavs[i, :n]])["hidden_states"]
            assert len(ref) == len(out.hidden_states) == model.num_layers
            t = int(out.lengths[i])
            for r, h in zip(ref, out.hidden_states, strict=True):
                assert r.shape == (1, t, model.hidden_size)
                assert torch.isfinite(h).all()
                assert float((r[0] - h[i, :t]).abs().max()) <= atol
    assert expert.get_downsample_rates("hidden_states") == model.downsample_rate == 160


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # chunked encoding (S3PRL's sequence_length), pre-LN layers, shared layers, ReLU
        dict(max_sequence_length=30, pre_layer_norm=True),
        dict(share_layer=True, hidden_act="relu"),
        # other OnlinePreprocessor features: MFCC + deltas in, linear spectrogram target
        dict(input_feat_type="mfcc", input_log=False, input_delta=2, target_feat_type="linear"),
    ],
    ids=["default", "chunks-preLN", "shared-relu", "mfcc-linear"],
)
def test_parity_with_s3prl(tmp_path, overrides):
    model = _model(**overrides)
    ckpt = export_s3prl_mockingjay(model, tmp_path / "states-0.ckpt")
    expert = _s3prl_expert(ckpt)
    wavs, lengths = _batch()
    _assert_parity(model, expert, wavs, lengths)

    # S3PRL's prediction head (PretrainedTransformerWithHead) agrees with ours as well.
    builder = pytest.importorskip("s3prl.upstream.mockingjay.builder")
    options = {
        "ckpt_file": str(ckpt), "load_pretrain": "True", "no_grad": "True", "dropout": "default",
        "spec_aug": "False", "spec_aug_prev": "True", "output_hidden_states": "False",
        "permute_input": "False", "select_layer": -1,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_head = builder.PretrainedTransformerWithHead(options, inp_dim=-1).eval()
    with torch.no_grad():
        n = int(lengths[1])
        ours = model.spec_head(model(wavs, lengths).hidden_states[-1])[1, : model.num_frames(lengths)[1]]
        theirs = with_head([wavs[1, :n]])[0]
    assert theirs.shape == ours.shape == (int(model.num_frames(lengths)[1]), model.target_dim)
    assert float((theirs - ours).abs().max()) <= 1e-4

    # Our loader reproduces the model S3PRL's file came from.
    reloaded = load_s3prl_mockingjay(ckpt)
    with torch.no_grad():
        for a, b in zip(model(wavs, lengths).hidden_states, reloaded(wavs, lengths).hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert reloaded.settings() == model.settings()


def test_parity_with_s3prl_real_speech(tmp_path):
    root = shared_data("librispeech_mini") / "LibriSpeech" / "dev-clean"
    files = sorted(root.glob("*/*/*.flac"))[:3]
    # 4 s, 2.5 s and 1.3 s of three speakers, with a 100-frame limit to exercise chunking.
    wavs_l = [load_audio(f)[: int(s * 16000)] for f, s in zip(files, (4.0, 2.5, 1.3), strict=True)]
    lengths = torch.tensor([len(w) for w in wavs_l])
    wavs = torch.nn.utils.rnn.pad_sequence(wavs_l, batch_first=True)
    model = _model(seed=1, max_sequence_length=100)
    expert = _s3prl_expert(export_s3prl_mockingjay(model, tmp_path / "real.ckpt"))
    _assert_parity(model, expert, wavs, lengths)


def test_s3prl_legacy_layout_and_refusals(tmp_path):
    model = _model()
    ckpt = export_s3prl_mockingjay(model, tmp_path / "ours.ckpt")
    states = torch.load(ckpt, weights_only=True)
    # Legacy layout: upstream config under "Config", LayerNorm parameters named gamma/beta, argparse Args.
    legacy = {
        "Transformer": {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                        for k, v in states["Transformer"].items()},
        "SpecHead": states["SpecHead"],
        "Config": states["Upstream_Config"],
        "Args": argparse.Namespace(expdir="x"),
    }
    torch.save(legacy, tmp_path / "legacy.ckpt")
    loaded = load_s3prl_mockingjay(tmp_path / "legacy.ckpt")
    wavs, lengths = _batch()
    with torch.no_grad():
        torch.testing.assert_close(model(wavs, lengths).hidden_states[-1], loaded(wavs, lengths).hidden_states[-1])

    kaldi = dict(states, Upstream_Config={**states["Upstream_Config"], "audio": {"kaldi": {"feat_type": "fbank"}}})
    torch.save(kaldi, tmp_path / "kaldi.ckpt")
    with pytest.raises(ValueError, match="kaldi.ckpt.*Kaldi"):
        load_s3prl_mockingjay(tmp_path / "kaldi.ckpt")
    no_audio = dict(states, Upstream_Config={k: v for k, v in states["Upstream_Config"].items() if k != "audio"})
    torch.save(no_audio, tmp_path / "offline.ckpt")
    with pytest.raises(ValueError, match="offline.ckpt.*audio"):
        load_s3prl_mockingjay(tmp_path / "offline.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_s3prl_mockingjay(tmp_path / "junk.ckpt")
    torch.save({"model": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt.*Transformer"):
        load_s3prl_mockingjay(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        load_s3prl_mockingjay(tmp_path / "missing.ckpt")


# ------------------------------------------------------------------------------------------------
# 2. Masking policy
# ------------------------------------------------------------------------------------------------
def test_span_mask_shapes_runs_and_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 400, (300,), generator=g)
    lengths[:5] = torch.tensor([3, 6, 7, 8, 30])  # shorter than a span, and just around it
    for overlap in (True, False):
        spans = span_mask(lengths, 0.15, 7, allow_overlap=overlap, max_len=420, generator=g)
        assert spans.mask.shape == (300, 420) and spans.mask.dtype == torch.bool
        assert torch.equal(spans.mask, spans_to_mask(spans.starts, spans.span_lengths, lengths, 420))
        for b, n in enumerate(lengths.tolist()):
            row = spans.mask[b]
            assert not row[n:].any(), "padding masked"
            assert all(0 <= s <= max_span_start(n, 7) for s in spans.starts[b].tolist())
            for start, end in _runs(row):
                # a run is a union of whole 7-frame spans, cut only by the end of the utterance
                assert end - start >= 7 or end == n, (n, start, end)
                if not overlap:
                    assert end - start == 7 or end == n  # grid of step round(7 * 1.5) = 10: no overlaps
    # S3PRL's bound: a span starts at most at L - 8, so the last frame is never masked (L >= 8)
    long = span_mask(torch.full((200,), 50), 1.0, 7, generator=g)
    assert not long.mask[:, 49].any() and long.mask[:, 48].any()


def test_span_mask_ratio():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(100, 1500, (1500,), generator=g)
    overlap = span_mask(lengths, 0.15, 7, generator=g)
    ratio = overlap.num_masked / int(lengths.sum())
    expected = sum(expected_masked_fraction(n, 0.15, 7) * n for n in lengths.tolist()) / int(lengths.sum())
    # Overlapping spans make S3PRL's default policy mask ~13.9 % rather than 15 % of the frames.
    assert 0.13 < expected < 0.145
    assert abs(ratio - expected) < 0.003
    grid = span_mask(lengths, 0.15, 7, allow_overlap=False, generator=g)
    assert abs(grid.num_masked / int(lengths.sum()) - 0.15) < 0.005


def test_masking_determinism_and_span_range():
    lengths = torch.tensor([500, 321, 40])
    a = span_mask(lengths, 0.15, 5, span_max=9, generator=torch.Generator().manual_seed(3))
    b = span_mask(lengths, 0.15, 5, span_max=9, generator=torch.Generator().manual_seed(3))
    c = span_mask(lengths, 0.15, 5, span_max=9, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert all(5 <= s <= 9 for s in a.span_lengths.tolist())
    assert torch.equal(band_mask(4, 80, 16, generator=torch.Generator().manual_seed(0)),
                       band_mask(4, 80, 16, generator=torch.Generator().manual_seed(0)))


def test_band_mask_width():
    g = torch.Generator().manual_seed(0)
    bands = band_mask(2000, 80, 16, generator=g)
    widths = bands.sum(1)
    assert int(widths.max()) == 16 and int(widths.min()) == 0
    assert set(widths.tolist()) == set(range(17))  # width uniform in 0 .. max_width
    for row in bands[:200]:
        assert len(_runs(row)) <= 1  # one contiguous band
    assert not band_mask(5, 80, 0).any()


def test_mam_replacement_policy():
    model = _model()
    wavs, lengths = _batch()
    feats, _, n = model.extract_features(wavs, lengths)
    g = torch.Generator().manual_seed(0)
    for zero, rand in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0)):
        model.config.mask_zero_prob, model.config.mask_random_prob = zero, rand
        masked, label, tmask = model.mam_inputs(feats, n, g)
        assert tmask.any()
        torch.testing.assert_close(masked[~tmask], feats[~tmask], rtol=0, atol=0)  # unmasked frames untouched
        assert torch.equal(label, tmask[:, :, None].expand_as(label))
        for b in range(len(n)):
            got = masked[b][tmask[b]]
            if zero == 1.0:
                assert not got.any()
            elif rand == 1.0:  # every masked frame now holds some frame of the same utterance
                frames = feats[b, : n[b]]
                assert all(bool((frames == f).all(1).any()) for f in got)
            else:
                assert torch.equal(got, feats[b][tmask[b]])
    # Frequency-band masking zeroes one band of input dimensions; the loss covers it on valid frames.
    model.config.mask_zero_prob, model.config.mask_random_prob = 0.8, 0.1
    model.config.mask_frequency = 0.2
    masked, label, tmask = model.mam_inputs(feats, n, torch.Generator().manual_seed(5))
    widths = []
    for b in range(len(n)):
        band = (masked[b, : n[b]] == 0).all(0)
        widths.append(int(band.sum()))
        assert int(band.sum()) <= 16 and len(_runs(band)) <= 1
        assert torch.equal(label[b, : n[b]][:, band], torch.ones_like(label[b, : n[b]][:, band]))
        assert not label[b, n[b]:].any()
    assert max(widths) > 0


# ------------------------------------------------------------------------------------------------
# 3. The MAM loss
# ------------------------------------------------------------------------------------------------
def test_pretrain_loss_uses_masked_frames_only_and_trains_the_encoder():
    model = _model()
    wavs, lengths = _batch()
    feats, target, n = model.extract_features(wavs, lengths, with_target=True)
    masked, label, tmask = model.mam_inputs(feats, n, torch.Generator().manual_seed(0))
    assert label.any() and not label.all()
    with torch.no_grad():
        loss = model.mam_loss(masked, target, label, n)
        corrupted = target.masked_fill(~label, 1e3)  # change the target everywhere it is not masked
        assert float(model.mam_loss(masked, corrupted, label, n)) == pytest.approx(float(loss), abs=0)
        # by hand: mean |prediction - target| over the masked positions
        pred = model.spec_head(model.encode(masked, n)[-1])
        assert float(loss) == pytest.approx(float((pred - target).abs()[label].mean()), rel=1e-6)

    model.train()
    loss, stats = model.pretrain_loss(wavs, lengths, generator=torch.Generator().manual_seed(0))
    again, _ = model.pretrain_loss(wavs, lengths, generator=torch.Generator().manual_seed(0))
    assert stats["masked_frames"] == float(tmask.sum()) > 0
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for p in (model.transformer.input_representations.spec_transform.weight,
              model.transformer.encoder.layer[0].attention.self.query.weight,
              model.spec_head.output.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------
# 4. Padding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_sequence_length", [1500, 25])
def test_padding_invariance(max_sequence_length):
    model = _model(max_sequence_length=max_sequence_length)
    wavs, lengths = _batch()
    with torch.no_grad():
        out = model(wavs, lengths)
        assert out.lengths.tolist() == model.num_frames(lengths).tolist() == [101, 78, 44]
        assert len(out.hidden_states) == model.num_layers == 3
        for i, n in enumerate(out.lengths.tolist()):
            alone = model(wavs[i : i + 1, : lengths[i]], lengths[i : i + 1])
            for h_batch, h_alone in zip(out.hidden_states, alone.hidden_states, strict=True):
                assert h_batch.shape == (3, 101, 64)
                assert float((h_batch[i, :n] - h_alone[0]).abs().max()) <= 1e-5
                assert not h_batch[i, n:].any()
    with pytest.raises(ValueError, match="at least"):
        model(torch.zeros(1, 150), torch.tensor([150]))


def test_chunk_bounds_follow_torch_chunk():
    for length, limit in ((101, 25), (1564, 1500), (10, 3), (7, 7)):
        x = torch.arange(length)
        expected = [(int(c[0]), int(c[-1]) + 1) for c in torch.chunk(x, math.ceil(length / limit))]
        assert chunk_bounds(length, limit) == expected


# ------------------------------------------------------------------------------------------------
# 5. Configuration and our checkpoint format
# ------------------------------------------------------------------------------------------------
def test_save_upstream_round_trip(tmp_path):
    model = _model(max_sequence_length=40, mask_frequency=0.1)
    path = save_upstream(model, tmp_path / "mj.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["upstream"] == "mockingjay"
    rebuilt = build_mockingjay(**state["settings"])
    rebuilt.load_state_dict(state["state_dict"])
    rebuilt.eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        for a, b in zip(model(wavs, lengths).hidden_states, rebuilt(wavs, lengths).hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert rebuilt.fingerprint() == model.fingerprint()


def test_config_presets_and_errors():
    tiny = build_mockingjay("tiny")
    assert (tiny.num_layers, tiny.hidden_size, tiny.input_dim, tiny.downsample_rate) == (4, 256, 80, 160)
    assert tiny.config.num_attention_heads == 4 and tiny.config.intermediate_size == 1024
    assert tiny.config.mask_proportion == 0.15 and tiny.config.mask_consecutive_min == 7
    with pytest.raises(ConfigError, match="mask_ratio"):
        build_mockingjay(preset="tiny", mask_ratio=0.2)
    with pytest.raises(ConfigError, match="preset 'huge'"):
        build_mockingjay(preset="huge")
    with pytest.raises(ValueError, match="num_attention_heads"):
        build_mockingjay(**{**SMALL, "num_attention_heads": 3})
    assert build_mockingjay(**SMALL, hop_ms=20).downsample_rate == 320
