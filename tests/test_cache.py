"""The frozen-feature cache: hits, misses, invalidation, and equality with the live upstream."""
from pathlib import Path

import pytest
import torch

from corpora.batching import AudioDataset, collate_waveforms
from corpora.manifest import Record, read_manifest
from corpora.speech_commands import prepare_speech_commands
from downstream.cache import CacheSpaceError, FeatureCache, cache_key, estimate_bytes
from upstream import build_upstream


class CountingUpstream(torch.nn.Module):
    """Wraps an upstream and counts forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.name, self.num_layers, self.hidden_size = inner.name, inner.num_layers, inner.hidden_size

    def fingerprint(self):
        return self.inner.fingerprint()

    def num_frames(self, samples):
        return self.inner.num_frames(samples)

    def forward(self, wavs, lengths):
        self.calls += 1
        return self.inner(wavs, lengths)


@pytest.fixture
def records(sc_root: Path, tmp_path: Path) -> list[Record]:
    return read_manifest(prepare_speech_commands(sc_root, tmp_path / "m")["dev"])


def test_hit_miss_and_values(records, tmp_path: Path):
    up = CountingUpstream(build_upstream("fbank"))
    cache = FeatureCache(tmp_path / "cache")
    assert cache.lookup(up, records) is None
    feats = cache.get(up, records, batch_seconds=4.0)
    assert up.calls > 0 and len(feats) == len(records)
    calls = up.calls
    again = cache.get(up, records, batch_seconds=4.0)
    assert up.calls == calls  # a hit: no upstream forward at all
    assert again.entry == feats.entry
    # Cached features are the live upstream's (to float16 precision), in manifest order.
    idx, wavs, lengths = collate_waveforms([AudioDataset(records)[i] for i in (0, 5)])
    live = up.inner(wavs, lengths)
    for row, i in enumerate(idx.tolist()):
        _, cached = feats[i]
        n = int(live.lengths[row])
        assert cached.shape == (n, 1, 240) and cached.dtype == torch.float16
        torch.testing.assert_close(cached[:, 0].float(), live.hidden_states[0][row, :n], atol=2e-2, rtol=2e-3)


def test_key_changes_with_checkpoint_records_and_settings(records, tmp_path: Path, sc_root: Path):
    up = build_upstream("fbank_global")
    up.fit(AudioDataset(records)[i][1] for i in range(4))
    key = cache_key(up, records, "float16")
    assert cache_key(up, records, "float16") == key
    assert cache_key(up, records[:-1], "float16") != key  # audio list
    assert cache_key(up, records, "float32") != key  # cache settings
    assert cache_key(build_upstream("fbank_global", num_mel_bins=40), records, "float16") != key  # feature settings
    other = build_upstream("fbank_global")
    other.fit(AudioDataset(records)[i][1] for i in range(5))
    assert cache_key(other, records, "float16") != key  # checkpoint (statistics)
    first = Path(records[0].path)
    first.write_bytes(first.read_bytes())  # same bytes, new modification time: the audio may have changed
    assert cache_key(up, records, "float16") != key


def test_interrupted_extraction_leaves_no_entry(records, tmp_path: Path):
    class Exploding(CountingUpstream):
        def forward(self, wavs, lengths):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().forward(wavs, lengths)

    cache = FeatureCache(tmp_path / "cache")
    up = Exploding(build_upstream("fbank"))
    with pytest.raises(KeyboardInterrupt):
        cache.get(up, records, batch_seconds=2.0)
    assert cache.lookup(up, records) is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_disk_guard_refuses_with_the_estimate_and_leaves_nothing(records, tmp_path: Path, monkeypatch):
    import shutil  # noqa: PLC0415  (patched below)

    up = build_upstream("fbank")
    need = estimate_bytes(up, records, up.num_layers, "float16")
    frames = int(up.num_frames(torch.tensor([round(r.duration * 16000) for r in records])).sum())
    assert need == frames * 1 * 240 * 2  # frames x layers x dim x bytes
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=need))  # fits, but not with the margin
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(CacheSpaceError,
                       match=r"needs about .* GiB .* free .*featurizer.layers.*cache.dtype.*cache.root"):
        cache.get(up, records)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_layer_subsets_and_bfloat16_store_less_and_read_back(records, tmp_path: Path):
    up = build_upstream("apc", preset="tiny", hidden_size=16, num_layers=3)
    last = up.num_layers - 1
    whole = FeatureCache(tmp_path / "cache").get(up, records, batch_seconds=4.0)
    some = FeatureCache(tmp_path / "cache", layers=[0, -1]).get(up, records, batch_seconds=4.0)
    half = FeatureCache(tmp_path / "cache", dtype="bfloat16", layers=[-1, 0]).get(up, records, batch_seconds=4.0)
    assert (whole.num_layers, some.num_layers, half.num_layers) == (up.num_layers, 2, 2) and up.num_layers > 2
    for i in range(len(records)):
        a, b, c = whole[i][1], some[i][1], half[i][1]
        assert torch.equal(b, a[:, [0, last]])
        assert c.dtype == torch.bfloat16 and torch.allclose(c.float(), a[:, [0, last]].float(), rtol=1e-2, atol=1e-2)
    size = {n: (f.entry / "features.bin").stat().st_size for n, f in (("whole", whole), ("some", some), ("half", half))}
    assert size["some"] == size["half"] == size["whole"] * 2 // up.num_layers  # float16 and bfloat16: 2 bytes each
    everything = list(range(up.num_layers))
    assert FeatureCache(tmp_path / "cache", layers=everything).lookup(up, records) == whole.entry  # all: same entry
    with pytest.raises(ValueError, match=r"featurizer.layers \[7\]"):
        FeatureCache(tmp_path / "cache", layers=[7]).get(up, records)


def test_runs_on_a_layer_subset_agree_cached_and_live(sc_root: Path, tmp_path: Path):
    import json  # noqa: PLC0415  (this test only)

    from core.config import parse_overrides  # noqa: PLC0415  (this test only)
    from downstream.runner import Experiment, RunSpec, resolve_config  # noqa: PLC0415  (this test only)

    def run(name: str, cache: bool) -> dict:
        overrides = ["task.corpus=speech_commands", f"task.root={sc_root}", "task.classes=all",
                     f"cache.root={tmp_path / 'cache'}", f"cache.enabled={str(cache).lower()}",
                     "featurizer.layers=[0,-1]",
                     "train.total_steps=12", "train.eval_every=6", "train.save_every=6", "train.batch_size=8"]
        spec = RunSpec("ks", "apc")
        cfg = resolve_config(spec, {"upstream": {"preset": "tiny", "hidden_size": 16, "num_layers": 3}},
                             parse_overrides(overrides))
        return Experiment.create(tmp_path / "exp", name, spec, cfg).train()

    cached, live = run("cached", True), run("live", False)
    for split in cached["splits"]:
        assert cached["splits"][split]["accuracy"] == live["splits"][split]["accuracy"]
    weights = json.loads((tmp_path / "exp" / "cached" / "layer_weights.json").read_text())
    assert len(weights["weights"]) == 2 and weights["layers"][0] == 0 and weights["layers"][1] > 1
