"""wav2vec 2.0: the contrastive objective against transformers' Wav2Vec2ForPreTraining on the same weights
(fixed mask, distractors and Gumbel noise), hidden states, masking statistics, distractor sampling,
kill-and-resume of pre-training."""
from pathlib import Path

import pytest
import torch

from core.config import merge
from upstream import build_upstream
from upstream.pretrain import PretrainConfig, Pretrainer
from upstream.wav2vec2.model import build_wav2vec2

from .conftest import killed_at_update, noise_batch

transformers = pytest.importorskip("transformers")

SMALL_HF = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 4, 4), num_conv_pos_embeddings=8,
                num_conv_pos_embedding_groups=2, num_codevector_groups=2, num_codevectors_per_group=8,
                codevector_dim=16, proj_codevector_dim=8, num_negatives=5, hidden_dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0,
                layerdrop=0.0, mask_time_prob=0.05, mask_time_length=3)
SMALL = dict(conv_layers=[[16, 10, 5], [16, 3, 4], [16, 2, 4]], embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64,
             pos_conv_kernel=8, pos_conv_groups=2, codebook_entries=8, codevector_dim=16, final_dim=8,
             num_negatives=5, mask_length=3, layer_drop=0.0)


@pytest.fixture
def hf_pair(tmp_path: Path):
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**SMALL_HF))
    hf.save_pretrained(tmp_path / "w2v")
    return hf, build_upstream("wav2vec2", tmp_path / "w2v")


def test_contrastive_and_diversity_terms_equal_transformers(hf_pair, monkeypatch):
    """Same weights, mask, distractors and Gumbel noise: the quantised targets, the contrastive loss,
    the diversity loss and the perplexity agree with Wav2Vec2ForPreTraining's."""
    hf, ours = hf_pair
    hf.train()
    ours.train()
    wavs, lengths = noise_batch([4000, 4000])
    frames = int(ours.num_frames(lengths)[0])
    torch.manual_seed(1)
    mask = ours.sample_mask(torch.ones(2, frames, dtype=torch.bool))
    negatives = ours.sample_negatives(mask)
    noise = -torch.empty(2 * frames * 2, 8).exponential_().log()

    def fixed_gumbel(logits, tau=1.0, hard=False, **kwargs):
        soft = ((logits + noise) / tau).softmax(-1)
        return torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0) - soft.detach() + soft

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", fixed_gumbel)
    ours.updates.fill_(1000)
    hf.set_gumbel_temperature(ours.gumbel_temperature)
    terms = ours.contrastive_terms(wavs, lengths, mask, negatives, noise)
    out = hf(wavs, mask_time_indices=mask, sampled_negative_indices=negatives + frames * torch.arange(2)[:, None, None])
    assert (terms["targets"] - out.projected_quantized_states).abs().max() <= 1e-5
    assert abs(float(terms["contrastive_sum"]) - float(out.contrastive_loss)) <= 1e-5 * float(out.contrastive_loss)
    assert abs(float(terms["diversity"] * terms["masked"]) - float(out.diversity_loss)) <= 1e-5
    assert abs(float(terms["perplexity"]) - float(out.codevector_perplexity)) <= 1e-5


def test_hidden_states_equal_transformers(hf_pair):
    hf, ours = hf_pair
    hf.eval()
    wavs, lengths = noise_batch([4000, 2500])
    with torch.no_grad():
        out = ours(wavs, lengths)
        for b, n in enumerate(lengths.tolist()):
            ref = hf.wav2vec2(wavs[b:b + 1, :n], output_hidden_states=True)
            ref = [*ref.hidden_states[:-1], ref.last_hidden_state]
            frames = int(out.lengths[b])
            assert len(ref) == len(out.hidden_states) == 3
            for i, (r, got) in enumerate(zip(ref, out.hidden_states, strict=True)):
                assert r.shape[1] == frames and (r[0] - got[b, :frames]).abs().max() <= 1e-5, f"layer {i}"


def test_masking_statistics_and_distractors():
    model = build_wav2vec2("tiny")
    torch.manual_seed(0)
    lengths = torch.tensor([200, 150, 180, 200])
    valid = torch.arange(200)[None, :] < lengths[:, None]
    fractions = []
    for _ in range(20):
        mask = model.sample_mask(valid)
        assert not (mask & ~valid).any()  # padding is never masked
        counts = mask.sum(1)
        assert (counts == counts[0]).all() and counts[0] >= 2 * model.config.mask_length // 2
        fractions.append(float(mask.sum() / valid.sum()))
        negatives = model.sample_negatives(mask)
        for b in range(4):
            frames = mask[b].nonzero().squeeze(1)
            drawn = negatives[b, frames]  # (M, K)
            assert drawn.shape[1] == model.config.num_negatives
            assert not (drawn == frames[:, None]).any()  # never the positive frame itself
            assert mask[b, drawn].all()  # only masked frames of the same utterance (so never padding)
    # p = 0.065 span starts of 10 frames, overlapping: about 1 - exp(-0.65) = 48 % of the frames
    assert 0.38 <= sum(fractions) / len(fractions) <= 0.58


def test_new_model_starts_with_unit_scale_features_and_confident_codes():
    """fairseq's pre-training initialisation: with PyTorch's defaults the tiny CNN's output had std 5e-4,
    below the LayerNorm's epsilon, so every frame quantised alike and the loss stayed at chance."""
    torch.manual_seed(0)
    model = build_wav2vec2("tiny").eval()
    wavs, lengths = noise_batch([16000, 16000])
    with torch.no_grad():
        feats, _ = model.input_features(wavs, lengths)
        normed = model.model.wav2vec2.encoder.feature_projection.layer_norm(feats)
        _, distribution, _ = model.model.quantizer(normed.flatten(0, 1), model.gumbel_temperature)
    assert feats.std() > 0.05
    assert distribution.max(-1).values.mean() > 0.5  # each frame picks its code clearly


def test_target_ids_are_the_quantisers_evaluation_codes():
    torch.manual_seed(0)
    model = build_wav2vec2("tiny").eval()
    wavs, lengths = noise_batch([16000])
    valid = torch.ones(1, int(model.num_frames(lengths)), dtype=torch.bool)
    with torch.no_grad():
        terms = model.contrastive_terms(wavs, lengths, valid, torch.zeros(1, valid.shape[1], 1, dtype=torch.long))
    (ids,) = model.target_ids(wavs, lengths)
    groups = terms["code_ids"][0]  # (T, G)
    assert ids.shape == (valid.shape[1],)
    assert torch.equal(ids, groups[:, 0] * model.config.codebook_entries + groups[:, 1])


def test_gumbel_temperature_anneals_per_training_update():
    model = build_wav2vec2("tiny", **{k: v for k, v in SMALL.items() if k not in ("conv_layers",)})
    assert model.gumbel_temperature == 2.0
    wavs, lengths = noise_batch([16000, 12000])
    model.train()
    _, stats = model.pretrain_loss(wavs, lengths)
    assert int(model.updates) == 1 and model.gumbel_temperature == pytest.approx(2.0 * 0.999995)
    assert {"loss_contrastive", "diversity", "feature_penalty", "acc_masked", "codes_used_fraction",
            "perplexity_g0", "perplexity_g1", "gumbel_temperature"} <= stats.keys()
    with torch.no_grad():
        model.pretrain_loss(wavs, lengths)
    model.eval()
    model.pretrain_loss(wavs, lengths)
    assert int(model.updates) == 1  # validation (no gradients, or evaluation mode) does not move it
    model.updates.fill_(10**9)
    assert model.gumbel_temperature == 0.5


def test_pretraining_resumes_to_identical_weights(sc_root: Path, tmp_path: Path):
    loop = {"total_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1, "batch_size": 8, "batch_seconds": 8.0,
            "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.2}
    cfg = merge(PretrainConfig(), {"upstream": {"preset": "tiny", **SMALL}, "train": loop})
    Pretrainer(tmp_path / "whole", "wav2vec2", cfg, [sc_root]).run()
    with killed_at_update(5):
        Pretrainer(tmp_path / "killed", "wav2vec2", cfg, [sc_root]).run()
    Pretrainer(tmp_path / "killed", "wav2vec2", cfg, [sc_root]).run()
    a = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["updates"]) == 6
    model = build_upstream("wav2vec2", tmp_path / "whole" / "upstream.pt")
    out = model(*noise_batch([16000]))
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape[-1] == 32


@pytest.mark.parametrize("fmt", ["fairseq", "s3prl"])
def test_fairseq_checkpoint_loads_with_its_quantiser(tmp_path: Path, fmt: str):
    """A fairseq-format file of S3PRL's own (fairseq-code) Wav2Vec2Model: every weight lands, quantiser
    included, and the hidden states equal S3PRL's expert's."""
    pytest.importorskip("s3prl")
    from s3prl.upstream.wav2vec2.expert import UpstreamExpert  # noqa: PLC0415  (after importorskip)
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model  # noqa: PLC0415  (as above)

    cfg = dict(_name="wav2vec2", extractor_mode="default", encoder_layers=2, encoder_embed_dim=32,
               encoder_ffn_embed_dim=64, encoder_attention_heads=2,
               conv_feature_layers="[(16,10,5)] + [(16,3,4)] + [(16,2,4)]", conv_pos=8, conv_pos_groups=2,
               final_dim=16, latent_vars=8, latent_groups=2, latent_dim=0, quantize_targets=True, num_negatives=7,
               encoder_layerdrop=0.0)
    task = dict(normalize=False, sample_rate=16000)
    torch.manual_seed(0)
    reference = Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in cfg.items() if k != "_name"}))
    state = reference.state_dict()
    torch.save({"task_cfg": task, "model_cfg": cfg, "model_weight": state}, tmp_path / "s3prl.pt")
    path = tmp_path / "s3prl.pt"
    if fmt == "fairseq":
        path = tmp_path / "fairseq.pt"
        torch.save({"cfg": {"model": cfg, "task": task}, "model": state}, path)
    ours = build_upstream("wav2vec2", path)
    assert ours.config.codebook_entries == 8 and ours.config.num_negatives == 7 and ours.config.final_dim == 16
    assert torch.equal(ours.model.quantizer.codevectors, state["quantizer.vars"])
    assert torch.equal(ours.model.project_hid.weight, state["final_proj.weight"])
    assert torch.equal(ours.mask_embedding, state["mask_emb"])
    expert = UpstreamExpert(str(tmp_path / "s3prl.pt")).eval()
    wavs, lengths = noise_batch([3000])
    with torch.no_grad():
        ref, out = expert([wavs[0]])["hidden_states"], ours(wavs, lengths)
    assert len(ref) == len(out.hidden_states)
    for i, (r, got) in enumerate(zip(ref, out.hidden_states, strict=True)):
        assert (r[0] - got[0, :r.shape[1]]).abs().max() <= 1e-5, f"layer {i}"
