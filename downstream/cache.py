"""Frozen-feature cache: every hidden layer extracted once per (upstream, audio list, settings).

Because the upstream is frozen, its hidden states for a corpus split never change. They are
extracted once, batch by batch (bounded RAM), into one flat file of shape (total frames, L, D)
in float16 and read back utterance by utterance with positional reads, so training the head costs
no upstream forward and resident memory does not grow with the corpus.

Layout of one entry, ``<root>/<key>/``:
    ``features.bin``  raw (sum of T_i, L, D) array in ``dtype``
    ``index.npy``     (N, 2) int64: frame offset and frame count of record i (manifest order)
    ``meta.json``     shape, dtype, upstream fingerprint, the ids of the records
The key hashes the upstream fingerprint (name, settings, every weight), the records (id, path,
segment, file size and modification time) and the cache settings, so any change of checkpoint,
audio list or feature settings is a miss. Entries are built in a temporary folder and renamed into
place, so a killed extraction leaves no half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from core import distributed
from corpora.batching import AudioDataset, DurationBatcher, collate_waveforms, ordered_loader
from corpora.manifest import Record
from upstream.base import Upstream

CACHE_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_key(upstream: Upstream, records: list[Record], dtype: str) -> str:
    """The hash that names a cache entry (see the module docstring for what it covers)."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "upstream": upstream.fingerprint(),
                                   "dtype": dtype}).encode())
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
        return i, torch.from_numpy(frames)

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


class FeatureCache:
    """Builds and opens cache entries under ``root``; extraction runs the upstream (already moved
    there) on the process's device, :func:`core.distributed.device`."""

    def __init__(self, root: str | Path, dtype: str = "float16"):
        if dtype not in DTYPES:
            raise ValueError(f"cache.dtype must be one of {list(DTYPES)}, not {dtype!r}")
        self.root, self.dtype = Path(root), dtype

    def lookup(self, upstream: Upstream, records: list[Record]) -> Path | None:
        """The complete entry for these inputs, or None (a miss)."""
        entry = self.root / cache_key(upstream, records, self.dtype)
        return entry if (entry / "meta.json").is_file() else None

    def get(self, upstream: Upstream, records: list[Record], batch_seconds: float = 100.0,
            batch_size: int = 32, desc: str = "extract") -> CachedFeatures:
        """Open the entry for these inputs, extracting it first on a miss."""
        entry = self.lookup(upstream, records) or self._build(upstream, records, batch_seconds, batch_size, desc)
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
        entry = self.root / cache_key(upstream, records, self.dtype)
        tmp = entry.with_name(f".{entry.name}.tmp{os.getpid()}")
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
                    stacked = out.stacked().to(torch.float32).cpu().numpy().astype(DTYPES[self.dtype])
                    for row, i in enumerate(idx.tolist()):
                        n = int(out.lengths[row])
                        f.write(np.ascontiguousarray(stacked[row, :n]).tobytes())
                        index[i] = (offset, n)
                        offset += n
            np.save(tmp / "index.npy", index)
            meta = {"version": CACHE_VERSION, "upstream": upstream.name, "fingerprint": upstream.fingerprint(),
                    "num_layers": upstream.num_layers, "hidden_size": upstream.hidden_size, "dtype": self.dtype,
                    "frames": offset, "ids": [r.id for r in records]}
            (tmp / "meta.json").write_text(json.dumps(meta))
            if entry.exists():  # another process finished the same entry first
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return entry
