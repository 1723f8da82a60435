"""The frozen-feature cache: hits, misses, invalidation, and equality with the live upstream."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from corpora.batching import AudioDataset, collate_waveforms
from corpora.manifest import Record, read_manifest
from corpora.speech_commands import prepare_speech_commands
from downstream.cache import (
    CachedFeatures,
    CacheSpaceError,
    FeatureCache,
    FeatureSubset,
    MeanFrameSubset,
    cache_key,
    collate_features,
    estimate_bytes,
)
from downstream.heads import HEADS
from downstream.runner import reads_mean_frame
from upstream import Featurizer, build_upstream


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


CHILD = """
import hashlib, json, os, sys, time
from pathlib import Path
import torch
from corpora.manifest import read_manifest
from downstream.cache import FeatureCache
from upstream import build_upstream

root, manifest, calls, ready, go, delay = sys.argv[1:7]
inner = build_upstream("fbank")

class Slow(torch.nn.Module):  # fbank, slowed down, noting each forward call
    name, num_layers, hidden_size = inner.name, inner.num_layers, inner.hidden_size
    def fingerprint(self):
        return inner.fingerprint()
    def num_frames(self, samples):
        return inner.num_frames(samples)
    def forward(self, wavs, lengths):
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(float(delay))
        return inner(wavs, lengths)

records = read_manifest(manifest)[:8]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
features = FeatureCache(root).get(Slow(), records, batch_seconds=2.0, batch_size=2)
digest = hashlib.sha256((features.entry / "features.bin").read_bytes()).hexdigest()
print(json.dumps({"entry": str(features.entry), "sha": digest, "items": len(features)}))
"""


def _child(tmp_path: Path, name: str, manifest: Path, delay: float):
    """A separate Python process that extracts the first 8 records of ``manifest`` into ``tmp_path/cache``
    once ``tmp_path/go`` exists (it touches ``tmp_path/<name>.ready`` first); forward calls go to ``calls``."""
    import os  # noqa: PLC0415  (these tests only)
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    args = [str(tmp_path / "cache"), str(manifest), str(tmp_path / "calls"), str(tmp_path / f"{name}.ready"),
            str(tmp_path / "go"), str(delay)]
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, what: str, timeout: float = 30.0):
    import time  # noqa: PLC0415  (these tests only)

    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_two_processes_asked_for_one_entry_at_once_build_it_once(sc_root: Path, tmp_path: Path):
    import json  # noqa: PLC0415  (this test only)

    manifest = prepare_speech_commands(sc_root, tmp_path / "m")["dev"]
    children = [_child(tmp_path, name, manifest, delay=0.2) for name in ("a", "b")]
    _wait_for(lambda: all((tmp_path / f"{n}.ready").exists() for n in "ab"), "both processes to start")
    (tmp_path / "go").touch()  # both look the entry up at once
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1] and outputs[0]["items"] == 8  # the same entry, the same bytes
    writers = set((tmp_path / "calls").read_text().split())
    assert len(writers) == 1  # one process extracted; the other waited and opened its entry
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(outputs[0]["entry"]).name]  # no lock, no temp
    up = build_upstream("fbank")
    records = read_manifest(manifest)[:8]
    assert FeatureCache(tmp_path / "cache").lookup(up, records) == Path(outputs[0]["entry"])


def test_a_killed_writers_leftovers_are_removed_and_the_entry_built(sc_root: Path, tmp_path: Path, caplog):
    import os  # noqa: PLC0415  (this test only)
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from downstream.cache import remove_leftovers  # noqa: PLC0415

    manifest = prepare_speech_commands(sc_root, tmp_path / "m")["dev"]
    (tmp_path / "go").touch()
    child = _child(tmp_path, "a", manifest, delay=5.0)
    cache = tmp_path / "cache"
    _wait_for(lambda: (tmp_path / "calls").exists(), "the writer's first batch")
    child.kill()  # SIGKILL mid-extraction: no clean-up runs
    child.wait(timeout=30)
    leftovers = sorted(p.name for p in cache.iterdir())
    assert len(leftovers) == 2 and leftovers[0].endswith(".lock") and f".tmp-{socket.gethostname()}-" in leftovers[1]
    # a dead process's temporary folder of another entry goes too; a live writer's stays
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = cache / f".other-1.tmp-{socket.gethostname()}-{gone.stdout.strip()}", \
        cache / f".other-2.tmp-{socket.gethostname()}-{os.getpid()}"
    dead.mkdir()
    live.mkdir()
    up = build_upstream("fbank")
    records = read_manifest(manifest)[:8]
    with caplog.at_level("WARNING", logger="downstream"):
        features = FeatureCache(cache).get(up, records, batch_seconds=2.0, batch_size=2)
    assert "leftover of an interrupted extraction" in caplog.text
    assert sorted(p.name for p in cache.iterdir()) == sorted([live.name, features.entry.name])
    assert len(features) == 8 and features[7][1].shape[1:] == (1, 240)
    assert remove_leftovers(cache, "nothing") == []  # the live writer's folder is not touched


def test_without_locks_the_first_rename_wins_and_the_other_writer_reuses_it(records, tmp_path: Path, monkeypatch):
    import downstream.cache as cache_module  # noqa: PLC0415  (patched below)

    monkeypatch.setattr(cache_module, "fcntl", None)  # a filesystem where flock does not work
    up, cache = build_upstream("fbank"), FeatureCache(tmp_path / "cache")
    first = cache.get(up, records[:4], batch_seconds=2.0).entry
    second = cache._build(up, records[:4], 2.0, 32, "extract")  # a process that missed it too, finishing later
    assert second == first and [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


def _entry(folder: Path, utterances: list[torch.Tensor]) -> Path:
    """A cache entry written by hand (float32, the layout :class:`CachedFeatures` reads)."""
    folder.mkdir(parents=True)
    frames = torch.cat(utterances).numpy().astype(np.float32)
    frames.tofile(folder / "features.bin")
    counts = [len(u) for u in utterances]
    np.save(folder / "index.npy", np.array([[sum(counts[:i]), n] for i, n in enumerate(counts)], dtype=np.int64))
    _, layers, dim = utterances[0].shape
    (folder / "meta.json").write_text(json.dumps({"num_layers": layers, "hidden_size": dim, "dtype": "float32"}))
    return folder


@pytest.mark.parametrize("head_name", ["proj_mean_linear", "mean_linear"])
def test_mean_frame_gives_the_whole_utterances_output(head_name: str, tmp_path: Path):
    """An affine featurizer under a head that reads the frame mean: the mean frame of each utterance, as a
    one-frame utterance, gives the output of its padded frames (what cached training of KS/IC/ER/SID uses),
    an utterance of no frames included; the means are computed once per entry and read back after."""
    torch.manual_seed(0)
    utterances = [torch.randn(t, 3, 8) * 4 + 1 for t in (5, 17, 0, 11)]  # (T, L, D), different lengths
    features = CachedFeatures(_entry(tmp_path / "entry", utterances))
    subset = FeatureSubset(features, [3, 0, 2, 1])
    featurizer = Featurizer(3)
    featurizer.weights.data = torch.tensor([0.3, -1.0, 2.0])
    head = HEADS[head_name](8, 6)
    assert reads_mean_frame(featurizer, head)
    _, feats, lengths = collate_features([subset[i] for i in range(len(subset))])
    whole, _ = head(featurizer(feats, lengths), lengths)
    means = MeanFrameSubset(subset)
    _, mean_feats, mean_lengths = collate_features([means[i] for i in range(len(means))])
    assert mean_feats.shape == (4, 1, 3, 8) and mean_lengths.tolist() == [1, 1, 0, 1]
    pooled, _ = head(featurizer(mean_feats, mean_lengths), mean_lengths)
    assert torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled, whole, rtol=1e-5, atol=1e-5)
    made = (tmp_path / "entry" / "means.npy").stat().st_mtime_ns
    again = MeanFrameSubset(FeatureSubset(CachedFeatures(tmp_path / "entry"), [1]))
    torch.testing.assert_close(again[0][1], means[3][1])  # utterance 1 both times
    assert (tmp_path / "entry" / "means.npy").stat().st_mtime_ns == made  # read back, not made again
    # not where a frame's output depends on more than its own hidden states (and an affine map of them)
    assert not reads_mean_frame(Featurizer(3, layer_norm=True), head)
    assert not reads_mean_frame(Featurizer(3, utterance_mean_norm=True), head)
    assert not reads_mean_frame(featurizer, HEADS["stats_linear"](8, 6))
