"""The upstream contract, the FBANK baseline and the featurizer."""
from pathlib import Path

import pytest
import torch

from upstream import Featurizer, build_upstream
from upstream.apc.s3prl import export_s3prl_apc
from upstream.frontend import LogMelNormaliser, RunningMoments, log_mel_fbank, utterance_standardise
from upstream.mockingjay.s3prl import export_s3prl_mockingjay
from upstream.registry import save_upstream

from .conftest import noise_batch

LENGTHS = (16000, 9000, 4000)


@pytest.mark.parametrize("name", ["fbank", "fbank_global"])
def test_fbank_contract(name):
    up = build_upstream(name)
    wavs, lengths = noise_batch(LENGTHS)
    if up.needs_fit:
        with pytest.raises(RuntimeError, match="fit"):
            up(wavs, lengths)
        up.fit(w[:n] for w, n in zip(wavs, lengths, strict=True))
    out = up(wavs, lengths)
    assert len(out.hidden_states) == up.num_layers == 1
    h = out.hidden_states[0]
    assert h.shape == (3, int(out.lengths.max()), up.hidden_size) and up.hidden_size == 240
    assert up.downsample_rate == 160
    # The frame-count formula agrees with the real forward pass (Kaldi snip_edges framing).
    assert out.lengths.tolist() == up.num_frames(lengths).tolist() == [98, 54, 23]
    # Padding is zero and does not change any utterance's features.
    for i, n in enumerate(out.lengths.tolist()):
        assert torch.all(h[i, n:] == 0)
        alone = up(wavs[i:i + 1, : lengths[i]], lengths[i:i + 1]).hidden_states[0][0]
        torch.testing.assert_close(alone, h[i, :n])
    if name == "fbank":  # per-utterance CMVN: each dimension of each utterance has zero mean
        assert h[0, :98].mean(0).abs().max() < 1e-4


def test_short_input_is_an_error():
    with pytest.raises(ValueError, match="shorter than one 25 ms frame"):
        build_upstream("fbank")(torch.zeros(1, 300), torch.tensor([300]))


def test_registry_errors_and_checkpoint_round_trip(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown upstream 'nope'.*fbank"):
        build_upstream("nope")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_upstream("fbank_global", tmp_path / "missing.pt")
    up = build_upstream("fbank_global")
    wavs, lengths = noise_batch(LENGTHS)
    up.fit(w[:n] for w, n in zip(wavs, lengths, strict=True))
    save_upstream(up, tmp_path / "u.pt")
    back = build_upstream("fbank_global", tmp_path / "u.pt")
    assert not back.needs_fit and back.fingerprint() == up.fingerprint()
    torch.testing.assert_close(back(wavs, lengths).hidden_states[0], up(wavs, lengths).hidden_states[0])
    with pytest.raises(ValueError, match="holds upstream 'fbank_global', not 'fbank'"):
        build_upstream("fbank", tmp_path / "u.pt")
    # Different statistics, different fingerprint (so a different cache key).
    up.fit([0.5 * w[:n] for w, n in zip(wavs, lengths, strict=True)])
    assert up.fingerprint() != back.fingerprint()


def test_fbank_global_bestrq_and_melhubert_share_one_log_mel_normaliser():
    """One normaliser (:class:`LogMelNormaliser`): fitted on the same audio, the three give the log-mel
    statistics :class:`RunningMoments` gives, in buffers named as their checkpoints hold them."""
    wavs, lengths = noise_batch(LENGTHS)
    utterances = [w[:n] for w, n in zip(wavs, lengths, strict=True)]
    fbank = build_upstream("fbank_global")
    bestrq = build_upstream("bestrq", preset="tiny")
    hubert = build_upstream("hubert", preset="tiny", front_end="mel")
    front = hubert.model.wav2vec2.feature_extractor
    for model in (fbank, bestrq, hubert):
        assert model.needs_fit
        with pytest.raises(RuntimeError, match="no normalisation statistics"):
            model(wavs, lengths)
        model.fit(utterances)
        assert not model.needs_fit
    log_mel = [log_mel_fbank(u) for u in utterances]
    moments = RunningMoments(80)
    for feats in log_mel:
        moments.update(feats)
    mean, std = moments.mean_std()
    for normaliser in (fbank, bestrq, front):
        assert isinstance(normaliser, LogMelNormaliser)
        torch.testing.assert_close(normaliser.mean[:80], mean)  # FBANK's first 80 dimensions: the log-mel
        torch.testing.assert_close(normaliser.std[:80], std)
    torch.testing.assert_close(bestrq.normalise(log_mel[0]), (log_mel[0] - mean) / std)
    torch.testing.assert_close(front.normalise(log_mel[1], "utterance"), utterance_standardise(log_mel[1]))
    assert {"mean", "std", "fitted"} <= set(fbank.state_dict()) & set(bestrq.state_dict())
    assert {f"model.wav2vec2.feature_extractor.{k}" for k in ("mean", "std", "fitted")} <= set(hubert.state_dict())


def test_featurizer_modes():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4)  # (B, T, L, D)
    f = Featurizer(3)
    torch.testing.assert_close(f(x), x.mean(2))  # weights start equal
    assert f.layer_weights() == pytest.approx([1 / 3] * 3)
    with torch.no_grad():
        f.weights.copy_(torch.tensor([0.0, 0.0, 100.0]))
    torch.testing.assert_close(f(x), x[:, :, 2])
    assert "weights" in f.state_dict()
    torch.testing.assert_close(Featurizer(3, "last")(x), x[:, :, 2])
    torch.testing.assert_close(Featurizer(3, "layer", layer=0)(x), x[:, :, 0])
    assert Featurizer(3, "layer", layer=1).layer_weights() == [0.0, 1.0, 0.0]
    normed = Featurizer(3, layer_norm=True)(x)
    torch.testing.assert_close(normed, torch.nn.functional.layer_norm(x, (4,)).mean(2))
    with pytest.raises(ValueError, match="mode"):
        Featurizer(3, "max")
    with pytest.raises(ValueError, match="out of range"):
        Featurizer(3, "layer", layer=5)
    with pytest.raises(ValueError, match="built for 3 layers got 2"):
        f(x[:, :, :2])


def test_featurizer_utterance_mean_norm_centres_valid_frames_only():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4) + torch.tensor([10.0, -3.0])[:, None, None, None]  # a constant per utterance
    lengths = torch.tensor([5, 3])
    x[1, 3:] = 99.0  # padding must not enter utterance 1's mean
    out = Featurizer(3, "layer", layer=2, utterance_mean_norm=True)(x, lengths)
    torch.testing.assert_close(out[0], x[0, :, 2] - x[0, :, 2].mean(0))
    torch.testing.assert_close(out[1, :3], x[1, :3, 2] - x[1, :3, 2].mean(0))
    assert torch.equal(out[1, 3:], torch.zeros(2, 4))
    summed = Featurizer(3, utterance_mean_norm=True, layer_norm=True)(x, lengths)
    centred = x[0] - x[0].mean(0)
    torch.testing.assert_close(summed[0], torch.nn.functional.layer_norm(centred, (4,)).mean(1))
    with pytest.raises(ValueError, match="lengths"):
        Featurizer(3, utterance_mean_norm=True)(x)


@pytest.mark.parametrize("name", ["apc", "mockingjay"])
def test_build_upstream_recognises_s3prl_checkpoints(tmp_path: Path, name: str):
    """``-k`` takes an S3PRL checkpoint as well as this toolkit's own ``upstream.pt``."""
    small = {"apc": {"hidden_size": 16},
             "mockingjay": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}}
    model = build_upstream(name, preset="tiny", **small[name])
    (export_s3prl_apc if name == "apc" else export_s3prl_mockingjay)(model, tmp_path / "s3prl.ckpt")
    save_upstream(model, tmp_path / "ours.pt")
    wavs, lengths = noise_batch(LENGTHS)
    expected = model(wavs, lengths).hidden_states
    for ckpt in ("s3prl.ckpt", "ours.pt"):
        loaded = build_upstream(name, tmp_path / ckpt)
        for a, b in zip(loaded(wavs, lengths).hidden_states, expected, strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="cannot override a foreign checkpoint"):
        build_upstream(name, tmp_path / "s3prl.ckpt", hidden_size=8)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        build_upstream(name, tmp_path / "junk.ckpt")
