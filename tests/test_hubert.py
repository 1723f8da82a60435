"""HuBERT: parity with Hugging Face, S3PRL and fairseq weights; masking; label-rate alignment; k-means stages;
the log-mel front end (MelHuBERT)."""
import dataclasses
from pathlib import Path

import pytest
import sklearn.cluster
import torch

import upstream.hubert.targets as kt
from core.config import merge
from corpora.folder import scan_audio
from upstream import build_upstream
from upstream.base import FinetuneMasking
from upstream.hubert.model import MEL_SETTINGS, HubertConfig, build_hubert
from upstream.hubert.targets import KMeansTargetConfig, KMeansTargets, mfcc_39
from upstream.pretrain import PretrainConfig, Pretrainer, main
from upstream.registry import checkpoint_settings, save_upstream

from .conftest import mask_runs, noise_batch

SMALL_CONV = [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2
SMALL = dict(conv_layers=SMALL_CONV, embed_dim=64, num_layers=2, num_heads=4, ffn_dim=128, pos_conv_kernel=16,
             pos_conv_groups=4, final_dim=16, num_classes=20)
SMALL_MEL = {**SMALL, "front_end": "mel"}


@pytest.mark.parametrize("stable_layer_norm", [False, True])
def test_huggingface_parity_every_layer(tmp_path: Path, stable_layer_norm: bool):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=stable_layer_norm,
        feat_extract_norm="layer" if stable_layer_norm else "group", conv_bias=stable_layer_norm)
    hf = transformers.HubertModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = build_upstream("hubert", tmp_path / "hf")
    assert ours.num_layers == 4 and ours.hidden_size == 64 and ours.downsample_rate == 320
    wavs, lengths = noise_batch([16000])
    with torch.no_grad():
        hf_out = hf(wavs, output_hidden_states=True)
        out = ours(wavs, lengths)
    # The last state is the encoder's output (after the final layer norm of pre-LN models), as in
    # S3PRL and transformers 4; transformers 5 lists the last layer before that norm.
    ref = [*hf_out.hidden_states[:-1], hf_out.last_hidden_state]
    assert len(ref) == len(out.hidden_states) == 4
    for i, (a, b) in enumerate(zip(ref, out.hidden_states, strict=True)):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-4, f"layer {i} differs"
    assert out.lengths.tolist() == [49] == [ref[0].shape[1]]


def test_batch_equals_single_utterance_and_frame_formula():
    model = build_hubert("base", **SMALL).eval()
    wavs, lengths = noise_batch([16000, 9000, 400, 719])
    with torch.no_grad():
        out = model(wavs, lengths)
        assert out.lengths.tolist() == model.num_frames(lengths).tolist() == [49, 27, 1, 1]
        for i, n in enumerate(out.lengths.tolist()):
            alone = model(wavs[i:i + 1, : lengths[i]], lengths[i:i + 1])
            assert alone.hidden_states[0].shape[1] == n
            for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
                torch.testing.assert_close(h[i, :n], a[0], atol=1e-5, rtol=1e-5)
                assert torch.all(h[i, n:] == 0)
    with pytest.raises(ValueError, match="at least 400"):
        model(torch.zeros(1, 399), torch.tensor([399]))


def _s3prl_model(tmp_path: Path):
    hub = pytest.importorskip("s3prl.upstream.hubert.hubert_model")
    torch.manual_seed(0)
    mc = hub.HubertConfig(label_rate=50, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                          encoder_attention_heads=4,
                          conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                          conv_pos=16, conv_pos_groups=4, final_dim=16)
    tc = hub.HubertPretrainingConfig()
    model = hub.HubertModel(mc, tc, [list(range(20))]).eval()
    return model, dataclasses.asdict(mc), dataclasses.asdict(tc)


def _s3prl_states(model, wavs):
    """S3PRL's hubert expert: the input of every Transformer layer, then the encoder's output."""
    states = []
    hooks = [layer.register_forward_hook(lambda m, i, o: states.append(i[0].transpose(0, 1)))
             for layer in model.encoder.layers]
    with torch.no_grad():
        final, _ = model.extract_features(wavs, padding_mask=None, mask=False)
    for h in hooks:
        h.remove()
    frames = final.shape[1]  # fairseq pads inside the layers to an even length; S3PRL trims it away
    return [h[:, :frames] for h in states] + [final]


def test_s3prl_and_fairseq_checkpoints_match_the_reference(tmp_path: Path):
    omegaconf = pytest.importorskip("omegaconf")
    model, model_cfg, task_cfg = _s3prl_model(tmp_path)
    torch.save({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                "dictionaries_symbols": [list(range(20))]}, tmp_path / "s3prl.pt")
    # fairseq's layout: an OmegaConf config and the same parameter names.
    cfg = omegaconf.OmegaConf.create({"model": {"_name": "hubert", **model_cfg}, "task": task_cfg})
    torch.save({"cfg": cfg, "model": model.state_dict()}, tmp_path / "fairseq.pt")
    wavs, lengths = noise_batch([12000])
    ref = _s3prl_states(model, wavs)
    for name in ("s3prl.pt", "fairseq.pt"):
        ours = build_upstream("hubert", tmp_path / name)
        assert ours.config.num_classes == 20 and ours.config.final_dim == 16
        with torch.no_grad():
            out = ours(wavs, lengths).hidden_states
        assert len(out) == len(ref) == 3
        for i, (a, b) in enumerate(zip(ref, out, strict=True)):
            assert (a - b).abs().max() <= 1e-4, f"{name}: layer {i} differs"
        # The pre-training head came along: a fairseq model can go on pre-training here.
        torch.testing.assert_close(ours.model.logit_generator.label_embeddings, model.label_embs_concat)


def test_foreign_checkpoint_errors_name_the_file(tmp_path: Path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*neither a fairseq nor an S3PRL"):
        build_upstream("hubert", tmp_path / "other.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "wav2vec2"}')
    with pytest.raises(ValueError, match="hf.*not HuBERT"):
        build_upstream("hubert", tmp_path / "hf")


def test_mask_sampling_spans_padding_and_seed():
    model = build_hubert("base", **SMALL)
    x = torch.zeros(4, 500, 64)
    valid = torch.arange(500)[None, :] < torch.tensor([500, 500, 300, 100])[:, None]
    torch.manual_seed(3)
    _, mask = model.model.mask_generator(x.clone(), ~valid)
    torch.manual_seed(3)
    _, again = model.model.mask_generator(x.clone(), ~valid)
    assert torch.equal(mask, again)
    assert not (mask & ~valid).any()
    # As in fairseq, every utterance of a batch gets as many masked frames as the least masked one.
    assert len(set(mask.sum(1).tolist())) == 1
    # p = 8 % of frames start a 10-frame span: about 1 - e^-0.8 = 55 % masked when spans overlap freely.
    _, mask = model.model.mask_generator(torch.zeros(8, 500, 64), torch.zeros(8, 500, dtype=torch.bool))
    frac = mask.float().mean().item()
    assert 0.45 < frac < 0.65, frac
    # Alone in its batch, every masked run of an utterance is at least one whole span long.
    _, mask = model.model.mask_generator(torch.zeros(1, 500, 64), torch.zeros(1, 500, dtype=torch.bool))
    row = mask[0].int().tolist()
    assert min(mask_runs(row)) >= 10 or row[-1]


def test_label_rate_alignment():
    model = build_hubert("base", **SMALL)
    for n in [400, 719, 720, 1039, 16000, 16001, 33333]:
        frames = int(model.num_frames(torch.tensor([n]))[0])
        assert mfcc_39(0.1 * torch.randn(n)).shape == (frames, 39), n
    wavs, lengths = noise_batch([16000, 9600])
    frames = model.num_frames(lengths).tolist()
    good = [torch.randint(0, 20, (t,)) for t in frames]
    loss, stats = model.pretrain_loss(wavs, lengths, good)
    assert loss.isfinite() and 0.3 < stats["masked_fraction"] < 0.8
    with pytest.raises(ValueError, match="frame rate"):  # labels at the 100 Hz MFCC rate: the classic bug
        model.pretrain_loss(wavs, lengths, [torch.randint(0, 20, (2 * t,)) for t in frames])
    with pytest.raises(ValueError, match="frame rate"):
        model.pretrain_loss(wavs, lengths, [good[0], good[1][:-1]])
    with pytest.raises(ValueError, match="outside 0..19"):
        model.pretrain_loss(wavs, lengths, [good[0], torch.full((frames[1],), 20)])


def test_teacher_at_another_frame_rate_is_refused(sc_root: Path, tmp_path: Path):
    apc = build_upstream("apc", preset="tiny", hidden_size=16, num_layers=1)
    save_upstream(apc, tmp_path / "apc.pt")
    cfg = KMeansTargetConfig(source=str(tmp_path / "apc.pt"), teacher="apc", layer=0)
    train, _ = scan_audio(sc_root)
    stages = KMeansTargets(tmp_path / "t", cfg, build_hubert("base", **SMALL), 4)
    with pytest.raises(ValueError, match="label rate mismatch"):
        stages.sample_features(train)


def test_kmeans_stages_resume_and_reuse(sc_root: Path, tmp_path: Path, monkeypatch):
    records, _ = scan_audio(sc_root)
    train, valid = records[:-3], records[-3:]
    student = build_hubert("base", **SMALL)
    cfg = KMeansTargetConfig(sample_fraction=0.5, n_init=1)

    # A kill while labelling leaves features and centroids, and no labels file.
    real_assign = kt.assign
    monkeypatch.setattr(kt, "assign", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("kill")))
    with pytest.raises(KeyboardInterrupt):
        KMeansTargets(tmp_path / "t", cfg, student, 8).labels(train, valid)
    assert (tmp_path / "t/features.npy").is_file() and (tmp_path / "t/kmeans.npy").is_file()
    assert not (tmp_path / "t/labels.pt").exists() and not list((tmp_path / "t").glob("*.tmp*"))
    monkeypatch.setattr(kt, "assign", real_assign)

    # The rerun does not fit k-means again.
    monkeypatch.setattr(sklearn.cluster, "MiniBatchKMeans", None)
    labels = KMeansTargets(tmp_path / "t", cfg, student, 8).labels(train, valid)
    assert set(labels) == {r.id for r in records}
    for r in records:
        assert labels[r.id].shape == (int(student.num_frames(torch.tensor([round(r.duration * 16000)]))[0]),)
    usage = (tmp_path / "t/usage.json").read_text()
    assert '"used"' in usage and '"perplexity"' in usage

    # Saved centroids are reusable by another experiment, giving the same labels.
    reuse = KMeansTargetConfig(kmeans=str(tmp_path / "t/kmeans.npy"))
    again = KMeansTargets(tmp_path / "u", reuse, student, 8).labels(train, valid)
    assert all(torch.equal(labels[k], again[k]) for k in labels)
    assert not (tmp_path / "u/features.npy").exists()
    with pytest.raises(ValueError, match="8 centroids"):
        KMeansTargets(tmp_path / "v", reuse, student, 5).labels(train, valid)


def test_pretrain_two_iterations_end_to_end(sc_root: Path, tmp_path: Path):
    loop = {"total_steps": 3, "eval_every": 3, "save_every": 3, "log_every": 1, "batch_size": 8, "batch_seconds": 8.0,
            "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.3, "lr": 1e-3}
    it1 = merge(PretrainConfig(), {"upstream": {"preset": "base", **SMALL, "num_classes": 8},
                                   "targets": {"sample_fraction": 0.5, "n_init": 1}, "train": loop})
    summary = Pretrainer(tmp_path / "it1", "hubert", it1, [sc_root]).run()
    assert summary["steps"] == 3
    header = (tmp_path / "it1/curve.tsv").read_text().splitlines()[0].split("\t")
    assert {"acc_masked", "masked_fraction"} <= set(header)
    # Iteration 2 clusters layer 1 of iteration 1, through the command line, in explicit stages.
    args = ["-u", "hubert", "-n", "it2", "-p", str(tmp_path), "--data", str(sc_root),
            "-o", "upstream.preset=base", "-o", f"upstream.conv_layers={SMALL_CONV}", "-o", "upstream.embed_dim=64",
            "-o", "upstream.num_layers=2", "-o", "upstream.num_heads=4", "-o", "upstream.ffn_dim=128",
            "-o", "upstream.pos_conv_kernel=16", "-o", "upstream.pos_conv_groups=4", "-o", "upstream.final_dim=16",
            "-o", "upstream.num_classes=6", "-o", f"targets.source={tmp_path / 'it1/upstream.pt'}",
            "-o", "targets.layer=1", "-o", "targets.n_init=1", "-o", "targets.sample_fraction=0.5",
            *[x for k, v in loop.items() for x in ("-o", f"train.{k}={v}")]]
    assert main([*args, "--until", "targets"]) == 0
    assert (tmp_path / "it2/targets/labels.pt").is_file() and not (tmp_path / "it2/upstream.pt").exists()
    assert "layer 1 of" in (tmp_path / "it2/targets/kmeans.json").read_text()
    assert main(args) == 0
    model = build_upstream("hubert", tmp_path / "it2/upstream.pt")
    assert model.config.num_classes == 6 and model.num_layers == 3
    assert main([*args[:-1], "targets.layer=9"]) == 2  # config differs from the experiment's: refused


# -- the log-mel front end (front_end: mel) -------------------------------------------------------------------------
def _fitted_mel(**settings):
    model = build_hubert("base", **{**SMALL_MEL, **settings})
    assert model.needs_fit
    model.fit(noise_batch([16000, 8000], seed=1)[0].unbind())
    assert not model.needs_fit
    return model


def test_mel_frames_equal_the_mfcc_targets_and_the_cnn():
    mel, cnn = _fitted_mel(), build_hubert("base", **SMALL)
    assert mel.downsample_rate == cnn.downsample_rate == 320 and mel.min_samples == cnn.min_samples == 400
    samples = torch.arange(400, 200_000)
    torch.testing.assert_close(mel.num_frames(samples), cnn.num_frames(samples), rtol=0, atol=0)
    torch.testing.assert_close(mel.num_frames(samples), (samples - 400) // 320 + 1, rtol=0, atol=0)
    lengths = [400, 401, 559, 560, 719, 720, 721, 879, 880, 1039, 1040, 1199, 1200, 3333, 16000, 16001, 16160, 16319]
    wavs, lengths = noise_batch(lengths)
    feats, frames = mel.input_features(wavs, lengths)
    assert frames.tolist() == mel.num_frames(lengths).tolist()
    assert feats.shape == (len(lengths), int(frames.max()), 160)
    for b, n in enumerate(lengths.tolist()):
        assert mfcc_39(wavs[b, :n]).shape[0] == frames[b], n
        assert torch.all(feats[b, frames[b]:] == 0)
    # An odd number of 10 ms frames: the last stack repeats the last frame (400 samples: 1 log-mel frame).
    torch.testing.assert_close(feats[0, 0, :80], feats[0, 0, 80:])
    with pytest.raises(ValueError, match="at least 400"):
        mel(torch.zeros(1, 399), torch.tensor([399]))


def test_mel_model_batch_independence_parameters_and_settings():
    model = build_hubert("base", **SMALL_MEL).eval()
    with pytest.raises(RuntimeError, match="no normalisation statistics"):
        model(*noise_batch([16000]))
    model = _fitted_mel().eval()
    wavs, lengths = noise_batch([16000, 9000, 400, 719])
    with torch.no_grad():
        out = model(wavs, lengths)
        assert out.lengths.tolist() == [49, 27, 1, 1] and len(out.hidden_states) == 3
        for i, n in enumerate(out.lengths.tolist()):
            alone = model(wavs[i:i + 1, : lengths[i]], lengths[i:i + 1])
            for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
                torch.testing.assert_close(h[i, :n], a[0], atol=1e-5, rtol=1e-5)
                assert torch.all(h[i, n:] == 0)
    # No CNN is left: the front end holds buffers only, the feature projection takes 2 x 80 values.
    front = {k for k in model.state_dict() if k.startswith("model.wav2vec2.feature_extractor.")}
    assert front == {f"model.wav2vec2.feature_extractor.{k}" for k in ("mean", "std", "fitted")}
    assert not list(model.model.wav2vec2.feature_extractor.parameters())
    assert model.model.wav2vec2.encoder.feature_projection.projection.in_features == 160
    assert model.finetune_parameters() == list(model.model.wav2vec2.parameters())
    assert model.settings()["front_end"] == "mel" and model.settings()["mel_stack"] == 2
    # A CNN model's settings are what they were before the front-end settings existed (same fingerprints).
    fields = {f.name for f in dataclasses.fields(HubertConfig)}
    assert set(build_hubert("tiny").settings()) == fields - set(MEL_SETTINGS)
    with pytest.raises(ValueError, match="front_end"):
        build_hubert("tiny", front_end="spectrogram")
    with pytest.raises(ValueError, match="only HuBERT's log-mel"):
        build_hubert("base", **SMALL).fit([torch.zeros(16000)])


def test_mel_checkpoint_round_trip(tmp_path: Path):
    model = _fitted_mel(normalize_waveform=True)
    model.name = "hubert"
    save_upstream(model, tmp_path / "mel.pt")
    settings = checkpoint_settings(tmp_path / "mel.pt")  # mel_norm left out at its default (global)
    assert {k: settings[k] for k in MEL_SETTINGS if k in settings} == dict(front_end="mel", mel_bins=80, mel_stack=2)
    loaded = build_upstream("hubert", tmp_path / "mel.pt")
    assert loaded.config == model.config and loaded.fingerprint() == model.fingerprint() and not loaded.needs_fit
    wavs, lengths = noise_batch([12000, 7000])
    with torch.no_grad():
        for a, b in zip(model.eval()(wavs, lengths).hidden_states, loaded(wavs, lengths).hidden_states, strict=True):
            assert torch.equal(a, b)
    # The random-weights twin of a checkpoint: its settings build the same architecture, needing statistics.
    twin = build_upstream("hubert", **checkpoint_settings(tmp_path / "mel.pt"))
    assert twin.needs_fit and twin.state_dict().keys() == model.state_dict().keys()


def test_mel_utterance_norm_needs_no_fit_ignores_gain_and_round_trips(tmp_path: Path):
    model = build_hubert("base", **SMALL_MEL, mel_norm="utterance").eval()
    assert not model.needs_fit and model.settings()["mel_norm"] == "utterance"
    wavs, lengths = noise_batch([16000, 9000], seed=2)
    feats, frames = model.input_features(wavs, lengths)
    for f, t in zip(feats, frames.tolist(), strict=True):  # 98 and 54 log-mel frames: whole stacks of 2
        unstacked = f[:t].reshape(-1, 80)
        torch.testing.assert_close(unstacked.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
        torch.testing.assert_close(unstacked.std(0, unbiased=False), torch.ones(80), atol=1e-3, rtol=0)
    with torch.no_grad():
        for a, b in zip(model(wavs, lengths).hidden_states, model(wavs * 5.0, lengths).hidden_states, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    model.name = "hubert"
    save_upstream(model, tmp_path / "utt.pt")
    assert checkpoint_settings(tmp_path / "utt.pt")["mel_norm"] == "utterance"
    twin = build_upstream("hubert", **checkpoint_settings(tmp_path / "utt.pt"))
    assert twin.config.mel_norm == "utterance" and not twin.needs_fit
    with pytest.raises(ValueError, match="mel_norm"):
        build_hubert("base", **SMALL_MEL, mel_norm="speaker")


def test_kmeans_features_with_per_utterance_cmvn():
    student = build_hubert("base", **SMALL)
    wavs, lengths = noise_batch([16000, 9600], seed=4)
    plain = kt.FeatureSource(KMeansTargetConfig(), student)
    normed = kt.FeatureSource(KMeansTargetConfig(cmvn=True), student)
    assert "per-utterance CMVN" in normed.describe() and "CMVN" not in plain.describe()
    for raw, f, loud in zip(plain.batch(wavs, lengths), normed.batch(wavs, lengths),
                            normed.batch(wavs * 3.0, lengths), strict=True):
        torch.testing.assert_close(f, (raw - raw.mean(0)) / raw.std(0, unbiased=False), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f, loud, atol=1e-3, rtol=1e-3)  # a gain moves MFCC c0 only: CMVN removes it


def test_mel_pretrain_loss_decreases_and_finetune_masking():
    torch.manual_seed(0)
    model = _fitted_mel(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, layer_drop=0.0).train()
    wavs, lengths = noise_batch([16000, 12000, 9600])
    targets = [torch.randint(0, 20, (int(t),)) for t in model.num_frames(lengths)]

    def loss_at_seed() -> float:
        torch.manual_seed(1)  # the same masks each time
        with torch.no_grad():
            return model.pretrain_loss(wavs, lengths, targets)[0].item()

    before = loss_at_seed()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(8):
        loss, stats = model.pretrain_loss(wavs, lengths, targets)
        assert set(stats) == {"loss_masked", "masked_fraction", "acc_masked"}
        assert loss.item() == stats["loss_masked"]  # plain cross-entropy: no feature penalty on log-mel
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_at_seed() < before - 0.1
    # Fine-tuning's masks apply to the projected log-mel frames as to CNN features.
    assert model.set_finetune_masking(FinetuneMasking(time_start_prob=0.2))
    torch.manual_seed(2)
    masked = model(wavs, lengths).hidden_states[0]
    assert model.set_finetune_masking(None)
    torch.manual_seed(2)
    plain = model(wavs, lengths).hidden_states[0]
    assert masked.shape == plain.shape == (3, 49, 64) and not torch.equal(masked, plain)


def test_mel_pretrain_end_to_end_and_a_teacher_across_front_ends(sc_root: Path, tmp_path: Path):
    args = ["-u", "hubert", "-p", str(tmp_path), "--data", str(sc_root), "-o", "upstream.preset=base",
            *[x for k, v in SMALL.items() if k != "num_classes" for x in ("-o", f"upstream.{k}={v}")],
            "-o", "targets.n_init=1", "-o", "targets.sample_fraction=0.5",
            *[x for k, v in {"total_steps": 2, "eval_every": 2, "save_every": 2, "log_every": 1, "batch_size": 8,
                             "batch_seconds": 8.0, "valid_fraction": 0.15, "num_workers": 0}.items()
              for x in ("-o", f"train.{k}={v}")]]
    assert main([*args, "-n", "mel1", "-o", "upstream.front_end=mel", "-o", "upstream.num_classes=8"]) == 0
    mel = build_upstream("hubert", tmp_path / "mel1/upstream.pt")
    assert mel.config.front_end == "mel" and not mel.needs_fit
    assert [line.split("\t")[0] for line in (tmp_path / "mel1/curve.tsv").read_text().splitlines()] == ["step", "2"]
    # Iteration 2 of a CNN student on layer 1 of the log-mel model: the frame counts agree.
    teacher = ["-o", f"targets.source={tmp_path / 'mel1/upstream.pt'}", "-o", "targets.layer=1"]
    assert main([*args, "-n", "cnn2", "-o", "upstream.num_classes=6", *teacher, "--until", "targets"]) == 0
    assert "layer 1 of" in (tmp_path / "cnn2/targets/kmeans.json").read_text()
