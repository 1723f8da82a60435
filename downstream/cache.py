"""Frozen-feature cache: every hidden layer extracted once per (upstream, audio list, settings).

Because the upstream is frozen, its hidden states for a corpus split never change. They are
extracted once, batch by batch (bounded RAM), into one flat file of shape (total frames, L, D)
and read back utterance by utterance with positional reads, so training the head costs no
upstream forward and resident memory does not grow with the corpus.

Size: frames x L x D x bytes per value, frames = seconds of audio x the upstream's frame rate.
``layers`` keeps a subset of the hidden states (the featurizer then sums those), ``dtype`` is
float16 (default), bfloat16 (stored as its raw 16 bits) or float32. Before extracting, the cache
computes that size from the records' durations and the upstream's own frame formula and refuses,
naming the estimate, the free space and the options, when it does not fit with a margin
(:func:`check_space`).

Layout of one entry, ``<root>/<key>/``:
    ``features.bin``  raw (sum of T_i, L, D) array in ``dtype``
    ``index.npy``     (N, 2) int64: frame offset and frame count of record i (manifest order)
    ``meta.json``     shape, dtype, kept layers, upstream fingerprint, the ids of the records
    ``means.npy``     (N, L, D) float32 mean frame of each record, added on first use (:class:`MeanFrameSubset`)
The key hashes the upstream fingerprint (name, settings, every weight), the records (id, path,
segment, file size and modification time) and the cache settings, so any change of checkpoint,
audio list or feature settings is a miss. Entries are built in a temporary folder
(``.<key>.tmp-<host>-<pid>``) and renamed into place, so a killed extraction (or a full disk) leaves
no half-written entry.

Concurrency: a writer holds an exclusive ``fcntl.flock`` on ``.<key>.lock`` (which names it: host and
pid) from its second look-up to the rename, so of several processes asked for one missing entry at
once (two runs of a learning-rate grid, on one machine or on a shared filesystem whose locks work),
one extracts and the others wait, then open its entry. The holder deletes the lock file as it
unlocks; the kernel drops the lock of a process that dies, so no lock goes stale (a killed holder's
file stays and is reused). Under the lock, a temporary folder of the same key can only be a dead
writer's leftover and is removed (with a warning); leftovers of other keys are removed when their
writer is a dead process of this host.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from core import distributed
from corpora.audio import SAMPLE_RATE
from corpora.batching import AudioDataset, DurationBatcher, collate_waveforms, ordered_loader
from corpora.manifest import Record
from upstream.base import Upstream

try:
    import fcntl
except ImportError:  # not POSIX: no locking; the rename alone keeps entries whole
    fcntl = None

log = logging.getLogger("downstream")
CACHE_VERSION = 1
MEANS_FILE = "means.npy"
"""Each utterance's mean frame, made on first use by utterance heads that read only that (:class:`MeanFrameSubset`)."""
DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
"""Stored types; bfloat16 values are kept as their raw 16 bits (NumPy has no bfloat16)."""
SPACE_MARGIN = 1.05, 256 * 2**20
"""Extraction needs free space of at least this factor times the estimate plus this many bytes."""


class CacheSpaceError(ValueError):
    """The cache entry would not fit on its filesystem; the message gives the estimate and the options."""


def cache_key(upstream: Upstream, records: list[Record], dtype: str, layers: list[int] | None = None) -> str:
    """The hash that names a cache entry (see the module docstring for what it covers)."""
    settings = {"version": CACHE_VERSION, "upstream": upstream.fingerprint(), "dtype": dtype}
    if layers is not None:  # all layers: the key entries had before subsets existed
        settings["layers"] = layers
    h = hashlib.sha256(json.dumps(settings).encode())
    for r in records:
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except FileNotFoundError:
            stamp = "missing"
        h.update(f"{r.id}\t{r.path}\t{r.start}\t{r.duration}\t{stamp}\n".encode())
    return f"{upstream.name}-{h.hexdigest()[:20]}"


class CachedFeatures(Dataset):
    """Item i: (index, (T_i, L, D) float16 tensor), read from the entry's file on demand.

    Reads are positional (``os.preadv``) into fresh buffers, so resident memory stays at one
    batch whatever the corpus size; the operating system's page cache keeps hot data in RAM.
    """

    def __init__(self, entry: Path):
        meta = json.loads((entry / "meta.json").read_text())
        self.entry = entry
        self.num_layers, self.hidden_size = meta["num_layers"], meta["hidden_size"]
        self.bfloat16 = meta["dtype"] == "bfloat16"
        self.dtype = np.dtype(DTYPES[meta["dtype"]])
        self.frame_bytes = self.num_layers * self.hidden_size * self.dtype.itemsize
        self.index = np.load(entry / "index.npy")
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        if self._pid != os.getpid():  # one descriptor per process (DataLoader workers fork)
            self._fd, self._pid = os.open(self.entry / "features.bin", os.O_RDONLY), os.getpid()
        offset, count = (int(v) for v in self.index[i])
        frames = np.empty((count, self.num_layers, self.hidden_size), dtype=self.dtype)
        if os.preadv(self._fd, [frames], offset * self.frame_bytes) != frames.nbytes:
            raise OSError(f"{self.entry / 'features.bin'}: truncated cache entry (utterance {i}); delete the folder")
        if self.bfloat16:
            return i, torch.from_numpy(frames.view(np.int16)).view(torch.bfloat16)
        return i, torch.from_numpy(frames)

    def mean_frames(self) -> Path:
        """``means.npy`` of the entry, (N, L, D) float32: each utterance's mean frame (summed in float64; NaN
        where it has no frames), computed on first use under the entry's lock and written atomically."""
        path = self.entry / MEANS_FILE
        if path.is_file():
            return path
        with entry_lock(self.entry.parent, self.entry.name):
            if path.is_file():  # another process made it while this one waited
                return path
            means = np.empty((len(self), self.num_layers, self.hidden_size), dtype=np.float32)
            for i in tqdm(range(len(self)), desc="mean frames", unit="utt", leave=False):
                frames = self[i][1]
                means[i] = frames.double().mean(0).float().numpy() if len(frames) else np.nan
            tmp = path.with_name(f".{MEANS_FILE}.tmp-{socket.gethostname()}-{os.getpid()}")
            with open(tmp, "wb") as f:
                np.save(f, means)
            os.replace(tmp, path)
        return path

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class FeatureSubset(Dataset):
    """Item i: (i, features of record ``positions[i]`` of a larger entry): one split of a corpus
    whose every split was extracted into one entry (folds re-deal the same utterances)."""

    def __init__(self, features: CachedFeatures, positions: list[int]):
        self.features, self.positions = features, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.features[self.positions[i]][1]


class MeanFrameSubset(Dataset):
    """Item i: (i, the mean over time of ``subset``'s item i as a one-frame utterance (1, L, D), float32;
    an utterance of no frames stays (0, L, D), as it pools to zeros either way).

    For a head and featurizer whose output depends on the frames only through their mean
    (:attr:`downstream.heads.utterance.ProjMeanLinear.reads_frame_mean`,
    :attr:`upstream.featurizer.Featurizer.frame_affine`), the mean frame gives the same output as the
    whole utterance, and a training step reads L x D numbers per utterance instead of T x L x D. The
    means of every utterance of the entry are computed once per entry (:meth:`CachedFeatures.mean_frames`)
    and memory-mapped, so resident memory stays flat and every run of the entry reads the same file.
    """

    def __init__(self, subset: FeatureSubset):
        self.path = subset.features.mean_frames()
        self.positions = subset.positions
        self.counts = subset.features.index[:, 1]
        self.shape = (subset.features.num_layers, subset.features.hidden_size)
        self._means: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        position = self.positions[i]
        if self.counts[position] == 0:
            return i, torch.zeros((0, *self.shape))
        if self._pid != os.getpid():  # one mapping per process (DataLoader workers fork)
            self._means, self._pid = np.load(self.path, mmap_mode="r"), os.getpid()
        return i, torch.from_numpy(np.array(self._means[position:position + 1]))

    def __getstate__(self) -> dict:  # a spawned worker maps the file itself
        return {**self.__dict__, "_means": None, "_pid": None}


def _record_key(r: Record) -> tuple[str, str, float]:
    return r.id, r.path, r.start


def pooled(splits: dict[str, list[Record]]) -> list[Record]:
    """Every record of every split once, in a fixed order (by id, path, segment): what one cache entry holds."""
    unique = {_record_key(r): r for records in splits.values() for r in records}
    return [unique[key] for key in sorted(unique)]


def collate_features(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> indices (B,), zero-padded float32 features (B, T_max, L, D), lengths (B,)."""
    idx = torch.tensor([i for i, _ in items])
    feats = [f for _, f in items]
    lengths = torch.tensor([f.shape[0] for f in feats])
    return idx, torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).float(), lengths


def estimate_bytes(upstream: Upstream, records: list[Record], num_layers: int, dtype: str) -> int:
    """Size of the entry for ``records``: their frames (the upstream's own formula) x layers x D x bytes."""
    samples = torch.tensor([round(r.duration * SAMPLE_RATE) for r in records], dtype=torch.long)
    frames = int(upstream.num_frames(samples).sum()) if len(records) else 0
    return frames * num_layers * upstream.hidden_size * np.dtype(DTYPES[dtype]).itemsize


def check_space(root: Path, need: int) -> None:
    """Refuse (:class:`CacheSpaceError`) when ``need`` bytes with :data:`SPACE_MARGIN` do not fit where ``root`` is."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    factor, extra = SPACE_MARGIN
    if need * factor + extra > free:
        gib = 2**30
        raise CacheSpaceError(
            f"the feature cache needs about {need / gib:.2f} GiB in {root} but its filesystem has {free / gib:.2f} GiB "
            f"free (and a margin of {factor - 1:.0%} + {extra / 2**20:.0f} MiB is kept). Options: keep fewer layers "
            f"(-o featurizer.layers=[0,4,8,12]), store bfloat16/float16 instead of float32 (-o cache.dtype=float16), "
            f"put the cache elsewhere (-o cache.root=PATH), or extract on the fly (-o cache.enabled=false)")


class FeatureCache:
    """Builds and opens cache entries under ``root``; extraction runs the upstream (already moved
    there) on the process's device, :func:`core.distributed.device`.

    Args:
        root: the folder of entries.
        dtype: a key of :data:`DTYPES`.
        layers: indices of the hidden states to keep (negative: from the end); None or empty: all.
    """

    def __init__(self, root: str | Path, dtype: str = "float16", layers: list[int] | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"cache.dtype must be one of {list(DTYPES)}, not {dtype!r}")
        self.root, self.dtype, self.layers = Path(root), dtype, list(layers) if layers else None

    def kept_layers(self, upstream: Upstream) -> list[int] | None:
        """The layer indices (0 .. L-1, in order) an entry of ``upstream`` keeps; None: all."""
        return kept_layers(self.layers, upstream.num_layers)

    def lookup(self, upstream: Upstream, records: list[Record]) -> Path | None:
        """The complete entry for these inputs, or None (a miss)."""
        entry = self.root / cache_key(upstream, records, self.dtype, self.kept_layers(upstream))
        return entry if (entry / "meta.json").is_file() else None

    def get(self, upstream: Upstream, records: list[Record], batch_seconds: float = 100.0,
            batch_size: int = 32, desc: str = "extract") -> CachedFeatures:
        """Open the entry for these inputs, extracting it first on a miss (under the entry's lock: a
        process that finds another extracting it waits and opens that one's entry)."""
        entry = self.lookup(upstream, records)
        if entry is None:
            key = cache_key(upstream, records, self.dtype, self.kept_layers(upstream))
            with entry_lock(self.root, key):
                entry = self.lookup(upstream, records)  # another process may have built it while we waited
                if entry is None:
                    remove_leftovers(self.root, key)
                    entry = self._build(upstream, records, batch_seconds, batch_size, desc)
        return CachedFeatures(entry)

    def get_splits(self, upstream: Upstream, splits: dict[str, list[Record]], batch_seconds: float = 100.0,
                   batch_size: int = 32, desc: str = "extract") -> dict[str, FeatureSubset]:
        """One entry for every record of every split together (:func:`pooled`), opened once (extracted
        on a miss), and each split's records read from it: re-dealing the same utterances into other
        splits (folds) extracts nothing again."""
        pool = pooled(splits)
        features = self.get(upstream, pool, batch_seconds, batch_size, desc)
        position = {_record_key(r): i for i, r in enumerate(pool)}
        return {name: FeatureSubset(features, [position[_record_key(r)] for r in records])
                for name, records in splits.items()}

    @torch.inference_mode()
    def _build(self, upstream: Upstream, records: list[Record], batch_seconds: float, batch_size: int,
               desc: str) -> Path:
        layers = self.kept_layers(upstream)
        entry = self.root / cache_key(upstream, records, self.dtype, layers)
        num_layers = len(layers) if layers is not None else upstream.num_layers
        check_space(self.root, estimate_bytes(upstream, records, num_layers, self.dtype))
        tmp = entry.with_name(f".{entry.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        batches = DurationBatcher([r.duration for r in records], batch_seconds, batch_size, seed=0).sequential()
        loader = ordered_loader(AudioDataset(records), batches, collate_waveforms)
        index = np.zeros((len(records), 2), dtype=np.int64)
        offset = 0
        device = distributed.device()
        upstream.eval()
        try:
            with open(tmp / "features.bin", "wb") as f:
                for idx, wavs, lengths in tqdm(loader, desc=desc, unit="batch", leave=False):
                    out = upstream(wavs.to(device, non_blocking=True), lengths.to(device))
                    stacked = out.stacked() if layers is None else out.stacked()[:, :, layers]
                    if self.dtype == "bfloat16":
                        stacked = stacked.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
                    else:
                        stacked = stacked.to(torch.float32).cpu().numpy().astype(DTYPES[self.dtype])
                    for row, i in enumerate(idx.tolist()):
                        n = int(out.lengths[row])
                        f.write(np.ascontiguousarray(stacked[row, :n]).tobytes())
                        index[i] = (offset, n)
                        offset += n
            np.save(tmp / "index.npy", index)
            meta = {"version": CACHE_VERSION, "upstream": upstream.name, "fingerprint": upstream.fingerprint(),
                    "num_layers": num_layers, "layers": layers or list(range(upstream.num_layers)),
                    "hidden_size": upstream.hidden_size, "dtype": self.dtype,
                    "frames": offset, "ids": [r.id for r in records]}
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                os.replace(tmp, entry)
            except OSError:
                if not (entry / "meta.json").is_file():
                    raise
                shutil.rmtree(tmp)  # another process finished the same entry first (locks not honoured here)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return entry


TMP_MARK = ".tmp-"
"""Temporary folders are ``.<key>.tmp-<host>-<pid>``."""


@contextlib.contextmanager
def entry_lock(root: Path, key: str):
    """Hold the exclusive lock of entry ``key`` (``fcntl.flock`` on ``<root>/.<key>.lock``, which names
    the holder) for the block, waiting for another holder first (logged, naming it). The holder
    deletes the file before unlocking, and a waiter whose file was deleted meanwhile locks anew, so
    no lock file outlives its holder (a killed holder's file is reused: the kernel released its lock).
    Without ``fcntl`` the block runs unlocked."""
    root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = root / f".{key}.lock"
    while True:
        f = open(path, "a+")  # closed below, on every path
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log.info("waiting for %s to finish extracting cache entry %s", f.read().strip() or "another process", key)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as err:  # a filesystem without locks (ENOLCK, EOPNOTSUPP): the rename alone keeps it whole
            f.close()
            log.warning("cannot lock %s (%s): extracting unlocked; a concurrent run may extract it too", path, err)
            yield
            return
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # the holder we waited for deleted the file: lock the current one
    try:
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        f.close()  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_leftovers(root: Path, key: str) -> list[Path]:
    """Remove the temporary folders interrupted extractions left in ``root``: every one of entry ``key``
    (call this holding its lock: a live writer of it would hold the lock), and those of other entries
    whose writer was a process of this host that is gone. Returns what was removed (each logged)."""
    host, removed = socket.gethostname(), []
    for tmp in root.glob(".*.tmp*"):
        name, _, writer = tmp.name[1:].partition(".tmp")
        writer_host, _, pid = writer[1:].rpartition("-") if writer.startswith("-") else (host, "", writer)
        mine = name == key  # (.<key>.tmp<pid>: the name an earlier version gave them, on this host)
        dead = writer_host == host and pid.isdigit() and not _alive(int(pid))
        if tmp.is_dir() and (mine or dead):
            log.warning("removing %s, the leftover of an interrupted extraction (process %s on %s)",
                        tmp, pid, writer_host)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def kept_layers(layers: list[int] | None, num_layers: int) -> list[int] | None:
    """``layers`` as sorted distinct indices in 0 .. num_layers-1 (negative ones count from the end);
    None for all. Raises ValueError naming ``featurizer.layers`` for an index out of range."""
    if not layers:
        return None
    bad = [i for i in layers if not isinstance(i, int) or not -num_layers <= i < num_layers]
    if bad:
        raise ValueError(f"featurizer.layers {list(layers)}: {bad} out of range for an upstream with {num_layers} "
                         f"hidden states (0 .. {num_layers - 1})")
    kept = sorted({i % num_layers for i in layers})
    return None if len(kept) == num_layers else kept
