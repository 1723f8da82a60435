"""APC: parity with S3PRL's APC, causality, the n-step objective, padding, checkpoints."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from core.config import ConfigError
from corpora.audio import load_audio
from upstream.apc.model import APCConfig, APCUpstream, build_apc
from upstream.apc.s3prl import export_s3prl_apc, load_s3prl_apc
from upstream.registry import save_upstream

from .conftest import shared_data

LENGTHS = (16000, 23456, 9001)


def _wavs(lengths=LENGTHS, seed=0) -> list[torch.Tensor]:
    """Noise plus a tone, a different pitch per utterance."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        out.append(0.3 * torch.sin(2 * math.pi * (220 + 110 * i) * t) + 0.05 * torch.randn(n, generator=g))
    return out


def _batch(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


def _model(seed=0, **settings) -> APCUpstream:
    torch.manual_seed(seed)
    return build_apc(**{"hidden_size": 64, **settings}).eval()


def _s3prl_expert(path: Path):
    """S3PRL's own APC wrapper (imports cleanly with current torch/torchaudio: no shim needed)."""
    expert = pytest.importorskip("s3prl.upstream.apc.expert", reason="s3prl is not installed")
    return expert.UpstreamExpert(ckpt=str(path)).eval()


def _max_valid_diff(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> float:
    return max(float((a[i, :n] - b[i, :n]).abs().max()) for i, n in enumerate(lengths.tolist()))


def _compare_with_s3prl(model: APCUpstream, wavs: list[torch.Tensor], path: Path, layers=None) -> list[float]:
    """Run our model and S3PRL's expert on the same waveforms; return the max abs diff per layer."""
    export_s3prl_apc(model, path)
    s3prl = _s3prl_expert(path)
    with torch.no_grad():
        theirs = s3prl(wavs)["hidden_states"]
        ours = model(*_batch(wavs))
    assert s3prl.get_downsample_rates("hidden_states") == model.downsample_rate == 160
    ours_h = ours.hidden_states if layers is None else [ours.hidden_states[i] for i in layers]
    assert len(theirs) == len(ours_h)
    assert ours.lengths.tolist() == model.num_frames(torch.tensor([len(w) for w in wavs])).tolist()
    diffs = []
    for a, b in zip(theirs, ours_h, strict=True):
        assert a.shape == b.shape  # S3PRL pads to the longest utterance's frames too
        diffs.append(_max_valid_diff(a, b, ours.lengths))
    return diffs


@pytest.mark.parametrize("hidden_size", [64, 512])
def test_parity_with_s3prl(tmp_path: Path, hidden_size: int):
    model = _model(hidden_size=hidden_size)
    wavs = _wavs()
    diffs = _compare_with_s3prl(model, wavs, tmp_path / "apc.ckpt")
    assert len(diffs) == model.num_layers == 3
    assert max(diffs) <= 1e-4, diffs
    # Our loader of S3PRL's format gives back the same model.
    back = load_s3prl_apc(tmp_path / "apc.ckpt")
    assert back.settings() == model.settings() and not back.training
    with torch.no_grad():
        for a, b in zip(back(*_batch(wavs)).hidden_states, model(*_batch(wavs)).hidden_states, strict=True):
            assert torch.equal(a, b)


def test_parity_with_s3prl_real_audio(tmp_path: Path):
    root = shared_data("librispeech_mini") / "LibriSpeech" / "dev-clean"
    files = sorted(root.rglob("*.flac"))[:3]
    wavs = [load_audio(f)[: 16000 * (2 + i)] for i, f in enumerate(files)]  # 2-4 s keeps the test fast
    diffs = _compare_with_s3prl(_model(hidden_size=512), wavs, tmp_path / "apc.ckpt")
    assert max(diffs) <= 1e-4, diffs


def test_s3prl_sees_layers_0_1_and_last_of_deeper_models(tmp_path: Path):
    """S3PRL's expert hooks are written for 3 layers: with 4 it returns our states 0, 1 and 3."""
    diffs = _compare_with_s3prl(_model(hidden_size=32, num_layers=4), _wavs(), tmp_path / "apc4.ckpt", layers=[0, 1, 3])
    assert max(diffs) <= 1e-4, diffs
    with pytest.warns(UserWarning, match="fewer than 3 layers"):
        export_s3prl_apc(_model(hidden_size=16, num_layers=2), tmp_path / "apc2.ckpt")
    assert load_s3prl_apc(tmp_path / "apc2.ckpt").num_layers == 2  # still our format to read back


def test_contract_and_padding():
    model = _model(hidden_size=32)
    wavs = _wavs()
    out = model(*_batch(wavs))
    assert model.name == "apc" and model.downsample_rate == 160
    assert len(out.hidden_states) == model.num_layers == 3 and model.hidden_size == 32
    assert out.lengths.tolist() == [98, 145, 54]
    for layer in out.hidden_states:
        assert layer.shape == (3, 145, 32)
    for i, (wav, n) in enumerate(zip(wavs, out.lengths.tolist(), strict=True)):
        alone = model(wav[None], torch.tensor([len(wav)]))
        for a, b in zip(alone.hidden_states, out.hidden_states, strict=True):
            assert torch.all(b[i, n:] == 0)  # padded frames are zero
            torch.testing.assert_close(a[0], b[i, :n], atol=1e-5, rtol=0)  # padding changes nothing
    with pytest.raises(ValueError, match="shorter than two 25 ms frames"):
        model(torch.zeros(1, 500), torch.tensor([500]))


def test_no_future_leakage():
    wav = _wavs((24000,))[0]
    s0 = 24000 - 4800  # perturb the last 0.3 s
    noisy = wav.clone()
    noisy[s0:] += 0.2 * torch.randn(24000 - s0, generator=torch.Generator().manual_seed(1))
    first_touched = (s0 - 400) // 160 + 1  # frames before this one have windows ending at or before s0
    lengths = torch.tensor([24000])

    # Without CMVN the whole upstream is causal in the waveform.
    model = _model(hidden_size=32, cmvn=False)
    with torch.no_grad():
        a, b = model(wav[None], lengths).hidden_states, model(noisy[None], lengths).hidden_states
    for x, y in zip(a, b, strict=True):
        assert (x[0, :first_touched] - y[0, :first_touched]).abs().max() <= 1e-6
        assert (x[0, -1] - y[0, -1]).abs().max() > 1e-3  # the perturbation is seen where it should be

    # With utterance CMVN (S3PRL's default) the normalisation statistics see the whole utterance,
    # so every frame changes; the GRU stack itself stays causal on the features.
    model = _model(hidden_size=32)
    with torch.no_grad():
        a = model(wav[None], lengths).hidden_states
        b = model(noisy[None], lengths).hidden_states
        assert (a[0][0, 0] - b[0][0, 0]).abs().max() > 0
        feats, states, n = model.encode(wav[None], lengths)
        t0 = 100
        feats2 = feats.clone()
        feats2[:, t0:] = torch.randn_like(feats2[:, t0:])
        states2 = model.rnn_layers(feats2, n)
    for x, y in zip(states, states2, strict=True):
        assert (x[0, :t0] - y[0, :t0]).abs().max() <= 1e-6
        assert (x[0, t0] - y[0, t0]).abs().max() > 1e-3


class _Constant(torch.nn.Module):
    """A stand-in postnet that ignores the hidden states and returns a fixed (B, T, F) tensor."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value


@pytest.mark.parametrize("k", [1, 3])
def test_loss_targets_the_frame_k_steps_ahead(k: int):
    model = _model(hidden_size=16, n_future=k)
    wavs, lengths = _batch(_wavs((8000, 5000)))
    with torch.no_grad():
        loss, stats = model.pretrain_loss(wavs, lengths)
        feats, states, n = model.encode(wavs, lengths)
        pred = model.postnet(states[-1])

    def by_hand(shift: int) -> tuple[float, int]:
        total, count = 0.0, 0
        for b, length in enumerate(n.tolist()):
            for t in range(length - shift):
                total += float((pred[b, t] - feats[b, t + shift]).abs().sum())
                count += 1
        return total / (count * feats.shape[2]), count

    expected, count = by_hand(k)
    assert stats["frames"] == count == sum(length - k for length in n.tolist())
    assert abs(float(loss) - expected) < 1e-5

    # An oracle postnet that outputs frame t + k at position t (and garbage where t + k is past the
    # end) scores exactly zero; one shifted by a frame either way does not.
    def oracle(shift: int) -> torch.nn.Module:
        target = torch.full_like(feats, 1e3)
        for b, length in enumerate(n.tolist()):
            if length > shift:
                target[b, : length - shift] = feats[b, shift:length]
        return _Constant(target)

    postnet = model.postnet
    with torch.no_grad():
        model.postnet = oracle(k)
        assert float(model.pretrain_loss(wavs, lengths)[0]) == 0.0
        for other in (k - 1, k + 1):
            model.postnet = oracle(other)
            assert float(model.pretrain_loss(wavs, lengths)[0]) > 0.1
    model.postnet = postnet

    model.train()
    loss, _ = model.pretrain_loss(wavs, lengths)
    loss.backward()
    assert model.postnet.weight.grad.abs().sum() > 0 and model.rnn_layers[0].weight_ih_l0.grad.abs().sum() > 0


def test_registry_format_round_trip(tmp_path: Path):
    model = _model(hidden_size=24, num_layers=2, n_future=2, residual=False, dropout=0.0)
    save_upstream(model, tmp_path / "apc.pt")
    state = torch.load(tmp_path / "apc.pt", map_location="cpu", weights_only=True)
    assert state["upstream"] == "apc"
    back = build_apc(**state["settings"])
    back.load_state_dict(state["state_dict"])
    back.eval()
    assert back.settings() == model.settings() and back.fingerprint() == model.fingerprint()
    wavs, lengths = _batch(_wavs())
    with torch.no_grad():
        for a, b in zip(back(wavs, lengths).hidden_states, model(wavs, lengths).hidden_states, strict=True):
            assert torch.equal(a, b)


def test_presets_and_settings():
    tiny, large = build_apc("tiny"), build_apc("large")
    assert (tiny.num_layers, tiny.hidden_size) == (3, 256)
    assert build_apc("base").settings() == build_apc().settings() == vars(APCConfig())
    assert (large.num_layers, large.hidden_size) == (4, 512)
    assert build_apc("tiny", n_future=5).settings()["n_future"] == 5
    keys = set(build_apc("base").state_dict())
    assert {"rnn_layers.0.weight_ih_l0", "rnn_layers.2.bias_hh_l0", "postnet.weight", "postnet.bias"} <= keys
    assert len(keys) == 3 * 4 + 2  # the GRUs and the postnet, nothing else (S3PRL's names, 1:1)
    with pytest.raises(ConfigError, match="'hiden_size'"):
        build_apc(hiden_size=3)
    with pytest.raises(ConfigError, match="huge"):
        build_apc("huge")
    with pytest.raises(ValueError, match="n_future"):
        build_apc(n_future=0)


def test_unsupported_checkpoints_are_refused(tmp_path: Path):
    model = _model(hidden_size=16)
    good = tmp_path / "good.ckpt"
    export_s3prl_apc(model, good)
    ckpt = torch.load(good, weights_only=True)

    vq = tmp_path / "vq_apc.ckpt"
    vq_paras = {"codebook_size": [128], "code_dim": [16], "gumbel_temperature": 0.5}
    paras = {**ckpt["config"]["model"]["paras"], "vq": vq_paras}
    bad = {**ckpt, "config": {**ckpt["config"], "model": {"paras": paras}}}
    bad["model"] = {**ckpt["model"], "vq_layers.0.codebook_CxE.weight": torch.zeros(16, 128)}
    torch.save(bad, vq)
    with pytest.raises(ValueError, match=r"vq_apc\.ckpt.*VQ is not supported"):
        load_s3prl_apc(vq)

    mfcc = tmp_path / "mfcc.ckpt"
    torch.save({**ckpt, "config": {**ckpt["config"], "data": {"audio": {"feat_type": "mfcc", "feat_dim": 39}}}}, mfcc)
    with pytest.raises(ValueError, match=r"mfcc\.ckpt.*'mfcc' are not supported"):
        load_s3prl_apc(mfcc)

    hop = tmp_path / "hop.ckpt"
    torch.save({**ckpt, "config": {**ckpt["config"], "data": {"audio": {
        **ckpt["config"]["data"]["audio"], "frame_shift": 20}}}}, hop)
    with pytest.raises(ValueError, match=r"hop\.ckpt.*frame_shift"):
        load_s3prl_apc(hop)

    other = tmp_path / "hubert.pt"
    torch.save({"upstream": "fbank", "settings": {}, "state_dict": {}}, other)
    with pytest.raises(ValueError, match=r"hubert\.pt.*not an S3PRL APC checkpoint"):
        load_s3prl_apc(other)

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.ckpt.*not a torch checkpoint"):
        load_s3prl_apc(junk)

    wrong = tmp_path / "wrong_size.ckpt"
    torch.save({**ckpt, "config": {**ckpt["config"], "model": {"paras": {
        **ckpt["config"]["model"]["paras"], "hidden_size": 32}}}}, wrong)
    with pytest.raises(ValueError, match=r"wrong_size\.ckpt.*do not fit"):
        load_s3prl_apc(wrong)

    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_s3prl_apc(tmp_path / "missing.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_s3prl_apc(good).settings() == model.settings()
