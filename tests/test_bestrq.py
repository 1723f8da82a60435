"""BEST-RQ: the frozen quantizer, masking, the contract and pre-training statistics."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from upstream import build_upstream
from upstream.bestrq.model import RandomProjectionQuantizer, build_bestrq
from upstream.registry import save_upstream

from .conftest import mask_runs, noise_batch

SMALL = dict(embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64, conv_kernel=5, codebook_size=64)


def _fitted(**kw):
    model = build_bestrq("tiny", **{**SMALL, **kw})
    wavs, lengths = noise_batch([16000, 12000], seed=5)
    model.fit(w[:n] for w, n in zip(wavs, lengths, strict=True))
    return model


def test_quantizer_is_deterministic_nearest_cosine_code():
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(320, 16, 8192)
    torch.manual_seed(0)
    same = RandomProjectionQuantizer(320, 16, 8192)
    assert torch.equal(q.projection, same.projection) and torch.equal(q.codebook, same.codebook)
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(8192))
    bound = (6 / (320 + 16)) ** 0.5  # Xavier-uniform
    assert q.projection.abs().max() <= bound and q.projection.std() > 0.5 * bound / 3 ** 0.5
    x = torch.randn(50, 320)
    ids = q(x)
    assert torch.equal(ids, q(x))
    z = F.normalize(x @ q.projection, dim=-1)
    brute = torch.cdist(z, q.codebook).argmin(1)  # on the unit sphere the nearest code by distance = by cosine
    assert torch.equal(ids, brute)


def test_quantizer_is_frozen_and_saved(tmp_path: Path):
    model = _fitted(mask_start_prob=0.05)
    assert not any(n.startswith("quantizer.") for n, _ in model.named_parameters())
    proj, book = model.quantizer.projection.clone(), model.quantizer.codebook.clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    wavs, lengths = noise_batch([16000, 9000])
    model.train()
    for _ in range(2):
        loss, stats = model.pretrain_loss(wavs, lengths, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.quantizer.projection.grad is None and model.quantizer.codebook.grad is None
    assert torch.equal(proj, model.quantizer.projection) and torch.equal(book, model.quantizer.codebook)
    assert (model.classifier.weight.grad is not None
            and model.conformer.conformer_layers[0].ffn1.sequential[1].weight.grad is not None)
    save_upstream(model, tmp_path / "b.pt")
    again = build_upstream("bestrq", tmp_path / "b.pt")
    assert torch.equal(again.quantizer.codebook, book) and not again.needs_fit
    assert 1 <= stats["codes_used"] <= 64 and 1 <= stats["code_perplexity"] <= stats["codes_used"]


def test_contract_batch_equals_single_and_needs_fit():
    model = build_bestrq("tiny", **SMALL).eval()
    wavs, lengths = noise_batch([16000, 9000, 880])
    with pytest.raises(RuntimeError, match="fit"):
        model(wavs, lengths)
    model = _fitted().eval()
    with torch.no_grad():
        out = model(wavs, lengths)
        assert out.lengths.tolist() == model.num_frames(lengths).tolist() == [24, 13, 1]
        assert model.downsample_rate == 640 and len(out.hidden_states) == model.num_layers == 3
        for i, n in enumerate(out.lengths.tolist()):
            alone = model(wavs[i:i + 1, : lengths[i]], lengths[i:i + 1])
            for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
                torch.testing.assert_close(h[i, :n], a[0], atol=1e-5, rtol=1e-5)
                assert torch.all(h[i, n:] == 0)
    with pytest.raises(ValueError, match="at least 880"):
        model(torch.zeros(1, 879), torch.tensor([879]))


def test_utterance_input_norm_needs_no_fit_and_ignores_gain_and_padding(tmp_path: Path):
    model = build_bestrq("tiny", **SMALL, input_norm="utterance").eval()
    assert not model.needs_fit
    assert model.settings()["input_norm"] == "utterance" and "input_norm" not in _fitted().settings()
    save_upstream(model, tmp_path / "u.pt")
    assert build_upstream("bestrq", tmp_path / "u.pt").config.input_norm == "utterance"
    wavs, lengths = noise_batch([16000, 9000], seed=3)
    feats, frames = model.log_mel(wavs, lengths)
    for f, t in zip(feats, frames.tolist(), strict=True):  # each utterance: zero mean, unit std per channel
        valid = f[: t * model.config.stack]
        torch.testing.assert_close(valid.mean(0), torch.zeros(valid.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(valid.shape[1]), atol=1e-3, rtol=0)
    loud = model.target_ids(wavs * 4.0, lengths)  # a gain is a constant log-mel offset: the codes do not move
    for a, b in zip(model.target_ids(wavs, lengths), loud, strict=True):
        assert torch.equal(a, b)
    alone = model.target_ids(wavs[1:, : lengths[1]], lengths[1:])[0]
    assert torch.equal(alone, model.target_ids(wavs, lengths)[1])
    fitted = _fitted()
    assert not all(torch.equal(a, b) for a, b in
                   zip(fitted.target_ids(wavs, lengths), fitted.target_ids(wavs * 4.0, lengths), strict=True))
    with pytest.raises(ValueError, match="input_norm"):
        build_bestrq("tiny", **SMALL, input_norm="speaker")


def test_span_mask_probability_and_span_length():
    model = build_bestrq("tiny", **SMALL)
    lengths = torch.tensor([4000, 4000, 2000])
    g = torch.Generator().manual_seed(0)
    mask = model.span_mask(lengths, 4000, g)
    assert torch.equal(mask, model.span_mask(lengths, 4000, torch.Generator().manual_seed(0)))
    assert not mask[2, 2000:].any()
    # Starts with p = 0.01 per 10 ms frame, 400 ms (40-frame) spans: 1 - 0.99^40 = 33 % masked.
    assert 0.25 < mask[:2].float().mean().item() < 0.41
    runs = mask_runs(mask[0].int().tolist())
    assert min(runs[:-1]) >= 40  # every run (but one clipped at the end) is at least a whole span


def test_pretrain_loss_targets_only_masked_frames():
    model = _fitted(mask_start_prob=0.0)
    wavs, lengths = noise_batch([16000])
    loss, stats = model.pretrain_loss(wavs, lengths)
    assert stats["masked_fraction"] == 0.0 and float(loss) == 0.0
    model = _fitted(mask_start_prob=0.05)
    loss, stats = model.pretrain_loss(wavs, lengths, torch.Generator().manual_seed(0))
    assert 0.2 < stats["masked_fraction"] < 1.0 and float(loss) > 0
