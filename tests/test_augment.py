"""On-the-fly augmentation of pre-training batches: lengths and padding kept, seeded per (seed, step,
utterance), torch's global generator untouched, settings checked."""
import pytest
import torch

from core.config import ConfigError, merge
from upstream.pretrain import resolve_pretrain_config
from upstream.pretrain.augment import TRANSFORMS, AugmentConfig, Augmenter

from .conftest import noise_batch

ALWAYS = AugmentConfig(enabled=True, bandreject_prob=1.0, reverb_prob=1.0, noise_prob=1.0)
LENGTHS = [16000, 9000, 3000]
UTTERANCES = torch.tensor([7, 3, 11])


def test_lengths_and_padding_kept():
    wavs, lengths = noise_batch(LENGTHS)
    out, counts = Augmenter(ALWAYS)(wavs, lengths, UTTERANCES, step=4)
    assert out.shape == wavs.shape and out.dtype == wavs.dtype and torch.isfinite(out).all()
    assert counts == dict.fromkeys(TRANSFORMS, 3)
    for b, n in enumerate(LENGTHS):
        assert (out[b, n:] == 0).all(), "padding must stay zero"
        assert not torch.allclose(out[b, :n], wavs[b, :n])
    assert (wavs == noise_batch(LENGTHS)[0]).all(), "the input batch is left as it was"


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_alone(name: str):
    cfg = AugmentConfig(enabled=True, **{f"{t}_prob": float(t == name) for t in TRANSFORMS})
    wavs, lengths = noise_batch(LENGTHS)
    out, counts = Augmenter(cfg)(wavs, lengths, UTTERANCES, step=0)
    assert counts == {t: 3 * (t == name) for t in TRANSFORMS}
    assert not torch.allclose(out, wavs) and (out[2, 3000:] == 0).all()


def test_seeded_per_step_and_utterance_without_the_global_generator():
    wavs, lengths = noise_batch(LENGTHS)
    augment = Augmenter(AugmentConfig(enabled=True))
    before = torch.get_rng_state()
    a, counts = augment(wavs, lengths, UTTERANCES, step=5)
    assert torch.equal(torch.get_rng_state(), before), "augmentation must not draw from torch's global generator"
    b, again = augment(wavs, lengths, UTTERANCES, step=5)
    assert torch.equal(a, b) and counts == again
    assert not torch.equal(a, augment(wavs, lengths, UTTERANCES, step=6)[0])
    assert not torch.equal(a, Augmenter(AugmentConfig(enabled=True, seed=1))(wavs, lengths, UTTERANCES, step=5)[0])
    # An utterance is augmented the same way whatever batch (or process's share of it) it is in.
    alone, _ = augment(wavs[1:2, :9000], lengths[1:2], UTTERANCES[1:2], step=5)
    assert torch.equal(alone[0], a[1, :9000])


def test_probabilities_hold_over_many_utterances():
    wavs, lengths = noise_batch([800] * 200)
    _, counts = Augmenter(AugmentConfig(enabled=True))(wavs, lengths, torch.arange(200), step=0)
    assert 30 <= counts["bandreject"] <= 90 and 30 <= counts["reverb"] <= 90 and 70 <= counts["noise"] <= 130


@pytest.mark.parametrize("override, message", [
    ("augment.snr=10", "unknown config key 'augment.snr'"),
    ("augment.snr_db=[20, 5]", "'augment.snr_db': expected [low, high]"),
    ("augment.rt60=[0.5]", "'augment.rt60': expected [low, high]"),
    ("augment.bandreject_hz=[100, 9000]", "'augment.bandreject_hz'"),
    ("augment.noise_prob=1.5", "'augment.noise_prob': a probability in [0, 1]"),
    ("augment.seed=-1", "'augment.seed'"),
])
def test_bad_settings_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError) as e:
        Augmenter(resolve_pretrain_config({}, ["augment.enabled=true", override]).augment)
    assert message in str(e.value)


def test_yaml_section_merges():
    cfg = merge(resolve_pretrain_config({"augment": {"enabled": True, "snr_db": [0, 10]}}, []),
                {"augment": {"seed": 3}}).augment
    assert cfg.enabled and cfg.snr_db == [0.0, 10.0] and cfg.seed == 3 and cfg.rt60 == AugmentConfig().rt60
