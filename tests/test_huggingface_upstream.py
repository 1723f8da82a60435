"""The Hugging Face upstream (``-u hf``): parity with transformers for every family, exact frame counts,
batch independence, the HuBERT upstream on the same weights, fairseq / S3PRL / WavLM checkpoints against
S3PRL's own models, model ids from an offline cache, and clear refusals."""
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from upstream import build_upstream  # noqa: E402  (after importorskip)
from upstream.base import FinetuneMasking  # noqa: E402  (after importorskip)
from upstream.hf.hub import resolve_model  # noqa: E402  (as above)
from upstream.hf.model import FAMILIES, HFUpstream, normalize_waveforms  # noqa: E402  (as above)
from upstream.hf.whisper import WhisperUpstream  # noqa: E402  (as above)
from upstream.registry import save_upstream  # noqa: E402  (after importorskip)

from .conftest import noise_batch  # noqa: E402  (after importorskip)

CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 4, 4))  # 80 samples per frame
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, **CONV)
LENGTHS = [400, 1601, 2399, 4000]
TOL = 1e-5


def _config(family: str, norm: str):
    """A small random config of ``family``; ``norm``: its CNN's first normalisation (``group`` or ``layer``)."""
    stable = norm == "layer"
    if family == "whisper":
        return transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                          decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                                          num_mel_bins=80, max_source_positions=1500, vocab_size=64,
                                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                          max_target_positions=32)
    common = dict(SMALL, feat_extract_norm=norm, conv_bias=stable)
    if family == "data2vec-audio":
        return transformers.Data2VecAudioConfig(**{k: v for k, v in common.items() if k != "feat_extract_norm"},
                                                conv_pos_kernel_size=5)
    if family == "wav2vec2-conformer":
        return transformers.Wav2Vec2ConformerConfig(**common, position_embeddings_type="relative",
                                                    conv_depthwise_kernel_size=7)
    cls = transformers.AutoConfig.for_model(family).__class__
    if family in ("wavlm",):
        return cls(**common, do_stable_layer_norm=stable, num_buckets=16, max_bucket_distance=40)
    return cls(**common, do_stable_layer_norm=stable)


CASES = [(f, "group") for f in ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")] + [
    (f, "layer") for f in ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat", "data2vec-audio",
                           "wav2vec2-conformer")] + [("whisper", "-")]


def _save(tmp_path: Path, family: str, norm: str, head: str = "") -> tuple[Path, torch.nn.Module]:
    """A random model saved with ``save_pretrained`` (as a model with ``head`` if given) and its feature
    extractor config; returns the folder and the encoder (eval mode) as transformers runs it."""
    torch.manual_seed(0)
    cfg = _config(family, norm)
    folder = tmp_path / f"{family}-{norm}{head}"
    if family == "whisper":
        full = transformers.WhisperForConditionalGeneration(cfg).eval()
        full.save_pretrained(folder)
        transformers.WhisperFeatureExtractor().save_pretrained(folder)
        return folder, full.model.encoder
    model = (getattr(transformers, head)(cfg) if head else transformers.AutoModel.from_config(cfg)).eval()
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=norm == "layer",
                                          return_attention_mask=norm == "layer").save_pretrained(folder)
    return folder, (model.base_model if head else model)


def _reference(encoder, folder: Path, family: str, wav: torch.Tensor) -> list[torch.Tensor]:
    """transformers' own hidden states of one utterance, preprocessed by the checkpoint's own feature extractor."""
    fe = transformers.AutoFeatureExtractor.from_pretrained(folder)
    inputs = fe(wav.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = encoder(inputs["input_features" if family == "whisper" else "input_values"], output_hidden_states=True)
    return [*out.hidden_states[:-1], out.last_hidden_state]


@pytest.mark.parametrize(("family", "norm"), CASES)
def test_every_state_equals_transformers_and_batch_equals_single(tmp_path: Path, family: str, norm: str):
    folder, encoder = _save(tmp_path, family, norm)
    ours = build_upstream("hf", folder)
    assert isinstance(ours, HFUpstream) and ours.name == "hf" and ours.num_layers == 3 and ours.hidden_size == 32
    wavs, lengths = noise_batch(LENGTHS)
    with torch.no_grad():
        batch = ours(wavs, lengths)
    assert len(batch.hidden_states) == 3
    for b, n in enumerate(LENGTHS):
        ref = _reference(encoder, folder, family, wavs[b, :n])
        frames = ref[0].shape[1] if family != "whisper" else int(ours.num_frames(torch.tensor([n])))
        assert int(batch.lengths[b]) == frames == int(ours.num_frames(torch.tensor([n])))
        with torch.no_grad():
            alone = ours(wavs[b:b + 1, :n], lengths[b:b + 1])
        for i, (r, got, single) in enumerate(zip(ref, batch.hidden_states, alone.hidden_states, strict=True)):
            assert (r[0, :frames] - got[b, :frames]).abs().max() <= TOL, f"layer {i} differs from transformers"
            assert (single[0, :frames] - got[b, :frames]).abs().max() <= TOL, f"layer {i} depends on the batch"
            assert not got[b, frames:].any(), "padding frames must be zero"


def test_whisper_frames_follow_the_input_and_long_inputs_are_refused(tmp_path: Path):
    folder, _ = _save(tmp_path, "whisper", "-")
    ours = build_upstream("hf", folder)
    # Whisper's own attention mask over mel frames (the feature extractor's) gives ceil(S / 160) frames,
    # its encoder (n - 1) // 2 + 1 of those.
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    for n in (1, 159, 160, 161, 16000, 16001):
        mask = fe([torch.zeros(n).numpy()], sampling_rate=16000, return_attention_mask=True).attention_mask
        assert int(ours.num_frames(torch.tensor([n]))) == (int(mask.sum()) - 1) // 2 + 1
    wavs, lengths = noise_batch([30 * 16000 + 1])
    with pytest.raises(ValueError, match="at most 480000"):
        ours(wavs, lengths)


@pytest.mark.parametrize("head", ["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"])
def test_checkpoints_with_heads_give_their_encoder(tmp_path: Path, head: str):
    folder, encoder = _save(tmp_path, "wav2vec2", "layer", head=head)
    ours = build_upstream("hf", folder)
    wavs, lengths = noise_batch([3000])
    ref = _reference(encoder, folder, "wav2vec2", wavs[0])
    with torch.no_grad():
        out = ours(wavs, lengths)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, out.hidden_states, strict=True)) <= TOL


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_hubert_upstream_agrees_on_the_same_weights(tmp_path: Path, norm: str):
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(**{**SMALL, "conv_dim": (32,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
                                       "conv_stride": (5, 2, 2, 2, 2, 2, 2)}, feat_extract_norm=norm,
                                    conv_bias=norm == "layer", do_stable_layer_norm=norm == "layer")
    transformers.HubertModel(cfg).eval().save_pretrained(tmp_path / "h")
    ours, theirs = build_upstream("hf", tmp_path / "h"), build_upstream("hubert", tmp_path / "h")
    wavs, lengths = noise_batch([16000, 7000, 400])
    with torch.no_grad():
        a, b = ours(wavs, lengths), theirs(wavs, lengths)
    assert a.lengths.tolist() == b.lengths.tolist() == [49, 21, 1]
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states, strict=True)):
        assert (x - y).abs().max() <= 1e-4, f"layer {i}"


def test_normalisation_is_the_feature_extractors():
    wavs, lengths = noise_batch([1000, 640])
    wavs = wavs + 0.3
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    ours = normalize_waveforms(wavs, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref = fe(wavs[b, :n].numpy(), sampling_rate=16000, return_tensors="pt").input_values[0]
        assert (ours[b, :n] - ref).abs().max() <= 1e-5 and not ours[b, n:].any()


def test_saved_upstream_and_random_twin_round_trip(tmp_path: Path):
    folder, _ = _save(tmp_path, "wavlm", "group")
    ours = build_upstream("hf", folder)
    save_upstream(ours, tmp_path / "upstream.pt")
    again = build_upstream("hf", tmp_path / "upstream.pt")
    assert again.fingerprint() == ours.fingerprint()
    twin = build_upstream("hf", **ours.settings())  # the same network with fresh random weights
    assert twin.settings() == ours.settings() and twin.fingerprint() != ours.fingerprint()
    wavs, lengths = noise_batch([2000])
    with torch.no_grad():
        assert torch.equal(again(wavs, lengths).hidden_states[-1], ours(wavs, lengths).hidden_states[-1])


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_fine_tuning_keeps_every_state_and_trains_no_cnn(tmp_path: Path, family: str):
    """In training mode (fine-tuning) LayerDrop is off, so every batch has every state; the CNN (and
    Whisper's fixed position table) get no gradient."""
    torch.manual_seed(0)
    cfg = _config(family, "group").to_dict()
    cfg["encoder_layerdrop" if family == "whisper" else "layerdrop"] = 0.9
    ours = build_upstream("hf", config=cfg, preprocessing={} if family != "whisper" else None).train()
    trained = {id(p) for p in ours.finetune_parameters()}
    for p in ours.parameters():
        p.requires_grad_(id(p) in trained)
    wavs, lengths = noise_batch([1600, 2400])
    for _ in range(3):
        out = ours(wavs, lengths)
        assert len(out.hidden_states) == ours.num_layers
    sum(h.sum() for h in out.hidden_states).backward()
    frozen = ours.model.embed_positions if family == "whisper" else ours.model.feature_extractor
    assert all(p.grad is None for p in frozen.parameters())
    assert any(p.grad is not None for p in ours.parameters())


def test_refusals_name_what_is_wrong(tmp_path: Path):
    with pytest.raises(ValueError, match="needs a model"):
        build_upstream("hf")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"bert.*'bert' model"):
        build_upstream("hf", tmp_path / "bert")
    folder, _ = _save(tmp_path, "wav2vec2", "group")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(folder)
    with pytest.raises(ValueError, match="expects 8000 Hz"):
        build_upstream("hf", folder)
    assert set(FAMILIES) >= {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech-sat", "whisper"}
    with pytest.raises(ValueError, match="adapter"):
        build_upstream("hf", config=dict(_config("wav2vec2", "layer").to_dict(), add_adapter=True))
    with pytest.raises(ValueError, match="'bert' is not a speech encoder this upstream takes; supported: .*whisper"):
        build_upstream("hf", config={"model_type": "bert"})


def test_whisper_is_its_own_class_picked_by_the_config():
    """A Whisper config builds :class:`WhisperUpstream` (log-mel input, no fine-tuning masks, still upstream
    ``hf``); a waveform config the base class; neither class takes the other's configs."""
    whisper, wav2vec2 = _config("whisper", "-").to_dict(), _config("wav2vec2", "group").to_dict()
    ours = build_upstream("hf", config=whisper)
    assert type(ours) is WhisperUpstream and ours.name == "hf" and ours.family == "whisper"
    assert not ours.set_finetune_masking(FinetuneMasking()) and ours.min_samples == 1 and ours.max_samples == 480000
    assert type(build_upstream("hf", config=wav2vec2, preprocessing={})) is HFUpstream
    with pytest.raises(ValueError, match="'whisper' is not a speech encoder HFUpstream takes"):
        HFUpstream(whisper)
    with pytest.raises(ValueError, match="'wav2vec2' is not a speech encoder WhisperUpstream takes"):
        WhisperUpstream(wav2vec2)


# -- model ids ------------------------------------------------------------------------------------
def _fake_cache(cache: Path, model_id: str, source: Path) -> None:
    """``source``'s files as the hub cache's snapshot of ``model_id`` (the layout huggingface_hub writes)."""
    repo = cache / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_model_id_from_offline_cache_and_clear_error_when_absent(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants  # noqa: PLC0415  (a dependency of transformers, imported after it)

    folder, _ = _save(tmp_path, "wav2vec2", "group")
    cache = tmp_path / "hub"
    _fake_cache(cache, "someone/tiny-w2v", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model("someone/tiny-w2v").parent.parent.name == "models--someone--tiny-w2v"
    ours = build_upstream("hf", "someone/tiny-w2v")
    assert ours.fingerprint() == build_upstream("hf", folder).fingerprint()
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"'someone/absent'.*hub.*offline.*huggingface-cli download"):
        build_upstream("hf", "someone/absent")
    assert time.perf_counter() - t0 < 5  # no network wait
    for missing in ("./missing", "missing.pt", "ckpts/w2v.pt"):  # paths, never tried as model ids
        with pytest.raises(FileNotFoundError, match=f"not found: {missing}"):
            resolve_model(missing)


# -- fairseq, S3PRL and WavLM checkpoints against S3PRL's own models ------------------------------
FAIRSEQ_CFG = dict(extractor_mode="default", encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                   encoder_attention_heads=2, conv_feature_layers="[(16,10,5)] + [(16,3,4)] + [(16,2,4)]",
                   conv_pos=8, conv_pos_groups=2, final_dim=16, latent_vars=8, latent_groups=2, latent_dim=0,
                   encoder_layerdrop=0.0)


def _s3prl_states(expert, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return expert([wav])["hidden_states"]


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("fmt", ["s3prl", "fairseq"])
def test_fairseq_wav2vec2_checkpoint_equals_s3prl(tmp_path: Path, fmt: str, layer_norm: bool):
    pytest.importorskip("s3prl")
    from s3prl.upstream.wav2vec2.expert import UpstreamExpert  # noqa: PLC0415  (after importorskip)
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model  # noqa: PLC0415  (as above)

    cfg = dict(FAIRSEQ_CFG, _name="wav2vec2", extractor_mode="layer_norm" if layer_norm else "default",
               layer_norm_first=layer_norm, conv_bias=layer_norm)
    task = dict(normalize=layer_norm, sample_rate=16000)
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in cfg.items() if k != "_name"}))
    s3prl_file = tmp_path / "s3prl.pt"
    torch.save({"task_cfg": task, "model_cfg": cfg, "model_weight": model.state_dict()}, s3prl_file)
    path = s3prl_file
    if fmt == "fairseq":
        path = tmp_path / "fairseq.pt"
        torch.save({"cfg": {"model": cfg, "task": task}, "model": model.state_dict()}, path)
    expert = UpstreamExpert(str(s3prl_file)).eval()
    ours = build_upstream("hf", path)
    assert ours.family == "wav2vec2" and ours.per_utterance != layer_norm
    wavs, lengths = noise_batch([1600, 4000])
    with torch.no_grad():
        out = ours(wavs, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref = _s3prl_states(expert, wavs[b, :n])
        assert len(ref) == len(out.hidden_states)
        frames = int(out.lengths[b])
        for i, (r, got) in enumerate(zip(ref, out.hidden_states, strict=True)):
            assert r.shape[1] == frames
            assert (r[0] - got[b, :frames]).abs().max() <= TOL, f"layer {i} differs from S3PRL's"


def test_fine_tuned_fairseq_ctc_checkpoint_gives_its_encoder(tmp_path: Path):
    pytest.importorskip("s3prl")
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model  # noqa: PLC0415  (as above)

    cfg, task = dict(FAIRSEQ_CFG, _name="wav2vec2"), dict(normalize=False, sample_rate=16000)
    torch.manual_seed(0)
    state = Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in cfg.items() if k != "_name"})).state_dict()
    torch.save({"cfg": {"model": cfg, "task": task}, "model": state}, tmp_path / "pre.pt")
    ctc = {**{f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()},
           "w2v_encoder.proj.weight": torch.zeros(5, 32), "w2v_encoder.proj.bias": torch.zeros(5)}
    torch.save({"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": cfg, "task": task}}, "task": task},
                "model": ctc}, tmp_path / "ctc.pt")
    fingerprint = build_upstream("hf", tmp_path / "pre.pt").fingerprint()
    assert build_upstream("hf", tmp_path / "ctc.pt").fingerprint() == fingerprint
    torch.save({"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": None}, "task": task}, "model": ctc},
               tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt.*w2v_args"):
        build_upstream("hf", tmp_path / "bare.pt")


def test_wavlm_release_checkpoint_equals_s3prl(tmp_path: Path):
    pytest.importorskip("s3prl")
    from s3prl.upstream.wavlm.expert import UpstreamExpert  # noqa: PLC0415  (after importorskip)
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig  # noqa: PLC0415  (as above)

    cfg = {k: v for k, v in FAIRSEQ_CFG.items() if k not in ("final_dim", "latent_vars", "latent_groups", "latent_dim")}
    cfg.update(relative_position_embedding=True, gru_rel_pos=True, num_buckets=16, max_distance=40, normalize=False)
    torch.manual_seed(0)
    model = WavLM(WavLMConfig(cfg))
    torch.nn.init.normal_(model.encoder.layers[0].self_attn.grep_a, 1.0, 0.1)
    path = tmp_path / "wavlm.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    expert = UpstreamExpert(str(path)).eval()
    ours = build_upstream("hf", path)
    assert ours.family == "wavlm"
    wavs, lengths = noise_batch([3000])
    with torch.no_grad():
        out = ours(wavs, lengths)
    ref = _s3prl_states(expert, wavs[0])
    assert len(ref) == len(out.hidden_states)
    for i, (r, got) in enumerate(zip(ref, out.hidden_states, strict=True)):
        assert (r[0] - got[0, :r.shape[1]]).abs().max() <= TOL, f"layer {i} differs from S3PRL's"


def test_fairseq_hubert_file_is_pointed_to_the_hubert_upstream(tmp_path: Path):
    path = tmp_path / "h.pt"
    torch.save({"cfg": {"model": {"_name": "hubert"}, "task": {}}, "model": {}}, path)
    with pytest.raises(ValueError, match=r"h\.pt.*'hubert'.*-u hubert"):
        build_upstream("hf", path)


# -- through the runner, the cache and the leaderboard ---------------------------------------------
def test_ks_run_labels_the_model_and_records_size_and_hash(sc_root: Path, tmp_path: Path, monkeypatch, capsys):
    from huggingface_hub import constants  # noqa: PLC0415  (a dependency of transformers, imported after it)

    from downstream.cli import main  # noqa: PLC0415  (after importorskip)
    from leaderboard.collect import collect  # noqa: PLC0415  (as above)

    folder, _ = _save(tmp_path, "wavlm", "group")
    cache = tmp_path / "hub"
    _fake_cache(cache, "someone/tiny-wavlm", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    common = ["-m", "train", "-d", "ks", "-u", "hf", "-p", str(tmp_path / "exp"), "-o", "task.corpus=speech_commands",
              "-o", f"task.root={sc_root}", "-o", "task.classes=all", "-o", f"cache.root={tmp_path / 'cache'}",
              "-o", "train.total_steps=20,,train.eval_every=10,,train.save_every=10,,train.batch_size=8"]
    assert main([*common, "-n", "folder", "-k", str(folder)]) == 0
    assert main([*common, "-n", "id", "-k", "someone/tiny-wavlm"]) == 0
    assert main([*common, "-n", "random", "-o", "upstream.preset=wavlm-tiny"]) == 0
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name != "cost"]
    assert len(entries) == 2  # one per model: the folder and the id share theirs (cost/: measured costs)
    runs = collect(tmp_path / "exp")
    labels = set(runs["upstream"])
    assert labels == {f"hf:{folder.name}", "hf:someone/tiny-wavlm", "hf:wavlm-random"}
    sizes = runs.groupby("upstream")["upstream_parameters"].first()
    assert sizes[f"hf:{folder.name}"] == sum(p.numel() for p in build_upstream("hf", folder).parameters())
    hashes = runs.groupby("upstream")["upstream_fingerprint"].first()
    assert hashes[f"hf:{folder.name}"] == hashes["hf:someone/tiny-wavlm"] != hashes["hf:wavlm-random"]
    capsys.readouterr()
    assert main(["--list-upstreams"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("fbank", "apc", "hubert", "bestrq", "hf"))
