"""The heads library: one ``(x, x_len) -> (y, y_len)`` contract, padding never counted, names and options checked."""
from pathlib import Path

import pytest
import torch

from core.config import ConfigError
from downstream.heads import HEADS, build_head, head_names, head_options
from downstream.heads.frame import BiLSTM
from downstream.heads.pooling import StatisticsPooling, masked_mean
from downstream.heads.utterance import ProjMeanLinear, XVector, XVectorOptions
from downstream.tasks.asr import ASRConfig, SpeechRecognition
from downstream.tasks.ks import KeywordSpotting, KSConfig
from downstream.tasks.pr import PhonemeRecognition, PRConfig
from downstream.tasks.st import SpeechTranslation, STConfig

SMALL = {
    "linear": {},
    "bilstm": {"proj_dim": 8, "lstm_dim": 6, "lstm_layers": 2, "dropout": 0.0, "time_mask_frames": 3,
               "freq_mask_dims": 1},
    "mean_linear": {},
    "proj_mean_linear": {"proj_dim": 8},
    "stats_linear": {},
    "xvector": {"channels": [8, 8, 10], "kernels": [3, 3, 1], "dilations": [1, 2, 1], "embed_dim": 6},
    "s2t_transformer": {"conv_channels": 16, "d_model": 16, "heads": 2, "ffn_dim": 32, "encoder_layers": 1,
                        "decoder_layers": 1, "dropout": 0.0},
}
"""Small options for every registered head."""

D, C = 6, 5
LENGTHS = [20, 13, 16]


def _head(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(name, D, C, {**SMALL[name], **extra})


def _batch(garbage: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 20, D) frames, padding filled with ``garbage``, and their lengths."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(LENGTHS), max(LENGTHS), D, generator=g)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = garbage
    return x, torch.tensor(LENGTHS)


def _valid(name: str, y: torch.Tensor, y_len: torch.Tensor, b: int) -> torch.Tensor:
    """Utterance ``b``'s part of a head's output: its valid frames, or its row."""
    return y[b] if HEADS[name].level == "utterance" else y[b, : int(y_len[b])]


def test_every_head_is_covered_here():
    assert set(SMALL) == set(HEADS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_contract_shapes_and_lengths(name: str):
    head = _head(name).eval()
    x, x_len = _batch()
    y, y_len = head(x, x_len)
    assert y_len.shape == x_len.shape and y_len.dtype == x_len.dtype
    level = HEADS[name].level
    if level == "utterance":
        assert y.shape == (3, C) and y_len.tolist() == [1, 1, 1]
    elif level == "frame":
        assert y.shape == (3, 20, C) and y_len.tolist() == LENGTHS
    else:  # seq2seq: the encoder memory after two stride-2 convolutions
        assert y.shape == (3, 5, 16) and y_len.tolist() == [5, 4, 4]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_padding_never_changes_an_utterance(name: str):
    """Garbage in the padding changes nothing, and each utterance gives what it gives alone."""
    head = _head(name).eval()
    clean, x_len = _batch()
    y, y_len = head(clean, x_len)
    dirty, _ = _batch(garbage=1e4)
    y_dirty, y_len_dirty = head(dirty, x_len)
    assert torch.equal(y_len, y_len_dirty)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(_valid(name, y_dirty, y_len, b), _valid(name, y, y_len, b))
        alone, alone_len = head(clean[b:b + 1, :n], x_len[b:b + 1])
        torch.testing.assert_close(_valid(name, alone, alone_len, 0), _valid(name, y, y_len, b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_every_parameter(name: str):
    head = _head(name).train()
    x, x_len = _batch()
    x.requires_grad_(True)
    y, y_len = head(x, x_len)
    if name == "s2t_transformer":  # the decoder is part of the head: train it on a target prefix
        y = head.decode(y, y_len, torch.tensor([[2, 3, 4], [2, 4, 0], [2, 1, 1]]))
    y.square().sum().backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    assert x.grad[1, :13].abs().sum() > 0


@pytest.mark.parametrize("name", ["linear", "bilstm"])
def test_concatenated_frames_never_hold_padding(name: str):
    """``downsample`` concatenates neighbours: an utterance's last frame pairs its own frame with zeros."""
    head = _head(name, downsample=2).eval()
    clean, x_len = _batch()
    y, y_len = head(clean, x_len)
    assert y.shape[1] == 10 and y_len.tolist() == [10, 7, 8]
    torch.testing.assert_close(head(_batch(garbage=1e4)[0], x_len)[0][1, :7], y[1, :7])
    alone, _ = head(clean[1:2, :13], x_len[1:2])
    torch.testing.assert_close(alone[0], y[1, :7], atol=1e-5, rtol=1e-4)


def test_xvector_batch_norm_trains_on_valid_frames_only():
    """In training mode batch statistics come from the valid frames: garbage padding changes nothing."""
    head = _head("xvector").train()
    clean, x_len = _batch()
    dirty, _ = _batch(garbage=1e4)
    torch.testing.assert_close(head(dirty, x_len)[0], head(clean, x_len)[0])
    assert head.tdnn[0].norm.num_batches_tracked == 2


def test_xvector_layers_and_short_utterances():
    head = XVector(D, C, XVectorOptions(channels=[8, 10], kernels=[5, 3], dilations=[1, 3], embed_dim=4)).eval()
    assert head.context == 4 + 6
    x, x_len = _batch()
    assert head.embed(x, x_len).shape == (3, 4)
    with pytest.raises(ValueError, match="too short"):
        head(x[:, :10], torch.tensor([10, 10, 10]))
    with pytest.raises(ValueError, match="one entry per TDNN layer"):
        XVector(D, C, XVectorOptions(channels=[8], kernels=[5, 3], dilations=[1, 3]))


def test_pooling_against_hand_computed_statistics():
    x, x_len = _batch(garbage=7.0)
    torch.testing.assert_close(masked_mean(x, x_len)[1], x[1, :13].mean(0))
    stats, ones = StatisticsPooling()(x, x_len)
    assert stats.shape == (3, 2 * D) and ones.tolist() == [1, 1, 1]
    torch.testing.assert_close(stats[1, :D], x[1, :13].mean(0))
    torch.testing.assert_close(stats[1, D:], x[1, :13].std(0, unbiased=False))


def test_superb_ks_head_is_a_projection_mean_and_classifier():
    torch.manual_seed(0)
    head = ProjMeanLinear(4, 3, head_options("proj_mean_linear", {"proj_dim": 8}))
    assert [n for n, _ in head.named_parameters()] == ["projector.weight", "projector.bias", "classifier.weight",
                                                       "classifier.bias"]
    feats, lengths = torch.randn(2, 6, 4), torch.tensor([6, 3])
    logits, _ = head(feats, lengths)
    torch.testing.assert_close(logits[1], head.classifier(head.projector(feats[1, :3]).mean(0)))


def test_bilstm_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    lstm = BiLSTM(8, 16, num_layers=2, dropout=0.0).eval()
    x = torch.randn(3, 20, 8)
    lengths = torch.tensor([20, 13, 7])
    x[1, 13:] = 0
    x[2, 7:] = 0
    batch = lstm(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = lstm(x[b:b + 1, :n], lengths[b:b + 1])
        assert torch.allclose(batch[b, :n], alone[0], atol=1e-6)


# ------------------------------------------------------------------ names and options
def test_unknown_or_misplaced_names_list_the_choices():
    with pytest.raises(ConfigError, match="task.head 'lstm' unknown for asr; choose from bilstm, linear"):
        head_options("lstm", levels=("frame",), task="asr")
    with pytest.raises(ConfigError, match="'xvector' is an utterance-level head; pr takes frame-level heads"):
        head_options("xvector", levels=("frame",), task="pr")
    assert head_names(("utterance",)) == ["mean_linear", "proj_mean_linear", "stats_linear", "xvector"]


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown config key 'task.head_options.embed'.*embed_dim"):
        head_options("xvector", {"embed": 3})
    with pytest.raises(ConfigError, match="task.head_options.embed_dim"):
        head_options("xvector", {"embed_dim": "large"})
    with pytest.raises(ConfigError, match="the mean_linear head has no options; got proj_dim"):
        head_options("mean_linear", {"proj_dim": 3})
    with pytest.raises(ConfigError, match="proj_dim is a setting of asr; set task.proj_dim instead"):
        head_options("bilstm", {"proj_dim": 3}, settings={"proj_dim": 1024}, task="asr")
    opts = head_options("bilstm", {"lstm_dim": 7}, settings={"proj_dim": 9, "corpus": "demo"})
    assert (opts.proj_dim, opts.lstm_dim, opts.lstm_layers) == (9, 7, 2)


def test_each_task_defaults_to_its_superb_head_and_takes_another_by_name(tmp_path: Path):
    small = {"proj_dim": 8, "lstm_dim": 4}
    tasks = {KeywordSpotting: (KSConfig, "proj_mean_linear", {}), PhonemeRecognition: (PRConfig, "linear", {}),
             SpeechRecognition: (ASRConfig, "bilstm", small),
             SpeechTranslation: (STConfig, "s2t_transformer", {"d_model": 16, "ffn_dim": 32})}
    for task_class, (config_class, default, sizes) in tasks.items():
        assert config_class().head == default
        task = task_class(config_class(corpus="demo", root=str(tmp_path / "demo"), **sizes), tmp_path)
        assert isinstance(task.make_head(4, 3), HEADS[default])
    ks = KeywordSpotting(KSConfig(corpus="demo", root=str(tmp_path / "demo"), head="xvector",
                                  head_options={"embed_dim": 7}), tmp_path)
    assert ks.make_head(4, 3).embedding.out_features == 7
    pr = PhonemeRecognition(PRConfig(corpus="demo", root=str(tmp_path / "demo"), head="bilstm", downsample=2,
                                     head_options={"proj_dim": 8, "lstm_dim": 4}), tmp_path)
    head = pr.make_head(4, 3)
    assert head.downsample == 2 and head.proj.in_features == 8 and head.out.in_features == 8
    with pytest.raises(ConfigError, match="ks takes utterance-level heads"):
        KeywordSpotting(KSConfig(corpus="demo", root=str(tmp_path / "demo"), head="linear"), tmp_path)
    with pytest.raises(ConfigError, match="set task.downsample instead"):
        PhonemeRecognition(PRConfig(corpus="demo", root=str(tmp_path / "demo"), head_options={"downsample": 2}),
                           tmp_path)
