"""The frozen-feature cache: hits, misses, invalidation, and equality with the live upstream."""
from pathlib import Path

import pytest
import torch

from corpora.batching import AudioDataset, collate_waveforms
from corpora.manifest import Record, read_manifest
from corpora.speech_commands import prepare_speech_commands
from downstream.cache import FeatureCache, cache_key
from upstream import build_upstream


class CountingUpstream(torch.nn.Module):
    """Wraps an upstream and counts forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.name, self.num_layers, self.hidden_size = inner.name, inner.num_layers, inner.hidden_size

    def fingerprint(self):
        return self.inner.fingerprint()

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
