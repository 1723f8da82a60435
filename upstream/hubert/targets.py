"""HuBERT's discrete targets: k-means ids of MFCCs or of a teacher's layer, as resumable stages.

Three stages, each written atomically into the pre-training experiment's ``targets/`` folder and
skipped when its output is there (so a killed run redoes at most the stage it was in):

1. ``features.npy``: (N, D) float32 frames from a deterministic sample of the training utterances
   (``sample_fraction`` of them, chosen by a hash of their ids; at most ``max_sample_frames``);
2. ``kmeans.npy``: (K, D) float32 centroids from scikit-learn's ``MiniBatchKMeans`` fitted on them,
   with ``kmeans.json`` (inertia, frames, settings); ``kmeans: PATH`` reuses centroids from an
   earlier run instead (stages 1-2 are skipped);
3. ``labels.pt``: every training and validation utterance's ids (id -> (T,) int16, T = the student's
   frame count), with ``usage.json``: clusters used and the perplexity of the id distribution.

Feature sources:
    ``mfcc`` (iteration 1): 13 Kaldi MFCCs + deltas + delta-deltas (39-d), 25 ms windows every 20 ms,
        i.e. exactly one vector per HuBERT frame (both give ``floor((S - 400) / 320) + 1``).
    a checkpoint path (iteration 2): hidden state ``layer`` of that upstream (e.g. the
        iteration-1 HuBERT's ``upstream.pt``); its frame count must equal the student's.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from tqdm import tqdm

from core import distributed
from core.checkpoint import atomic_save
from core.config import merge
from corpora.audio import SAMPLE_RATE
from corpora.batching import AudioDataset, DurationBatcher, collate_waveforms, ordered_loader
from corpora.manifest import Record

from ..base import Upstream
from ..frontend import Deltas, utterance_standardise
from ..registry import build_upstream
from ..target_usage import id_usage

log = logging.getLogger(__name__)

MFCC_SHIFT_MS = 20.0
MFCC_LENGTH_MS = 25.0


@dataclass
class KMeansTargetConfig:
    """The ``targets`` section of a HuBERT pre-training config.

    Attributes:
        source: ``mfcc``, or the path of an upstream checkpoint whose hidden state ``layer`` is clustered.
        teacher: registry name of the upstream in ``source`` (when it is a checkpoint).
        layer: hidden state index of the teacher (0 = its first state; HuBERT Base: 6).
        cmvn: normalise each utterance's features by its own per-dimension mean and standard deviation
            before clustering and labelling (the ids then ignore a fixed channel and gain).
        sample_fraction: share of training utterances whose frames the k-means sees (paper: ~10 %).
        max_sample_frames: cap on those frames (a seeded random subset beyond it).
        kmeans: reuse these centroids (a ``kmeans.npy`` of an earlier run); empty: fit new ones.
        batch_size, max_iter, n_init, max_no_improvement: ``MiniBatchKMeans`` settings.
        batch_seconds: padded seconds per batch when computing features.
        seed: k-means and subsampling seed.
    """

    source: str = "mfcc"
    teacher: str = "hubert"
    layer: int = 6
    cmvn: bool = False
    sample_fraction: float = 0.1
    max_sample_frames: int = 300_000
    kmeans: str = ""
    batch_size: int = 10_000
    max_iter: int = 100
    n_init: int = 5
    max_no_improvement: int = 100
    batch_seconds: float = 160.0
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.sample_fraction <= 1:
            raise ValueError(f"targets.sample_fraction must be in (0, 1], got {self.sample_fraction!r}")
        if self.source != "mfcc" and not Path(self.source).is_file():
            raise FileNotFoundError(f"targets.source: no such checkpoint {self.source!r} (or use 'mfcc')")
        if self.kmeans and not Path(self.kmeans).is_file():
            raise FileNotFoundError(f"targets.kmeans: no such centroid file {self.kmeans!r}")


def mfcc_39(wav: torch.Tensor) -> torch.Tensor:
    """(S,) 16 kHz waveform -> (T, 39) MFCC + deltas + delta-deltas, T = floor((S - 400) / 320) + 1."""
    mfcc = kaldi.mfcc(wav.unsqueeze(0), sample_frequency=SAMPLE_RATE, frame_length=MFCC_LENGTH_MS,
                      frame_shift=MFCC_SHIFT_MS, use_energy=False, dither=0.0)
    return Deltas(order=2)(mfcc)


class FeatureSource:
    """Frame features for clustering: ``batch(wavs, lengths) -> list of (T_b, D)`` at the student's frame rate."""

    def __init__(self, cfg: KMeansTargetConfig, student: Upstream):
        self.cfg, self.student = cfg, student
        self.teacher: Upstream | None = None
        if cfg.source != "mfcc":
            self.teacher = build_upstream(cfg.teacher, cfg.source).eval().to(distributed.device())
            if not 0 <= cfg.layer < self.teacher.num_layers:
                raise ValueError(f"targets.layer {cfg.layer} is out of range: {cfg.source} has "
                                 f"{self.teacher.num_layers} hidden states (0..{self.teacher.num_layers - 1})")

    def describe(self) -> str:
        source = "39-d MFCC" if self.teacher is None else f"layer {self.cfg.layer} of {self.cfg.source}"
        return source + (", per-utterance CMVN" if self.cfg.cmvn else "")

    @torch.no_grad()
    def batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        expected = self.student.num_frames(lengths).tolist()
        if self.teacher is None:
            feats = [mfcc_39(w[:n]) for w, n in zip(wavs, lengths.tolist(), strict=True)]
        else:
            device = distributed.device()
            out = self.teacher(wavs.to(device), lengths.to(device))
            feats = [h[:n].cpu() for h, n in zip(out.hidden_states[self.cfg.layer], out.lengths.tolist(), strict=True)]
        for f, n in zip(feats, expected, strict=True):
            if f.shape[0] != n:
                raise ValueError(f"label rate mismatch: {self.describe()} gives {f.shape[0]} frames where the "
                                 f"model has {n}; targets must be at the model's frame rate")
        if self.cfg.cmvn:
            feats = [utterance_standardise(f) for f in feats]
        return feats


def _sampled(records: list[Record], fraction: float) -> list[Record]:
    """A deterministic ``fraction`` of the records (by a hash of the id; at least one)."""

    def h(r: Record) -> float:
        return int(hashlib.sha1(r.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    chosen = [r for r in records if h(r) < fraction]
    return chosen or sorted(records, key=h)[:1]


def _batches(records: list[Record], seconds: float) -> Callable:
    batches = DurationBatcher([r.duration for r in records], seconds, 64, seed=0).sequential()
    return lambda: ordered_loader(AudioDataset(records), batches, collate_waveforms)


class KMeansTargets:
    """Runs (or reuses) the stages for one experiment folder; :meth:`labels` returns id -> ids."""

    def __init__(self, work_dir: Path, cfg: KMeansTargetConfig, student: Upstream, num_clusters: int):
        self.dir, self.cfg, self.student, self.k = Path(work_dir), cfg, student, num_clusters
        self.dir.mkdir(parents=True, exist_ok=True)
        self._source: FeatureSource | None = None

    @property
    def source(self) -> FeatureSource:
        if self._source is None:
            self._source = FeatureSource(self.cfg, self.student)
        return self._source

    # stage 1 ------------------------------------------------------------------------------------
    def sample_features(self, train: list[Record]) -> np.ndarray:
        path = self.dir / "features.npy"
        if path.is_file():
            log.info("targets: features %s done already", path)
            return np.load(path)
        records = _sampled(train, self.cfg.sample_fraction)
        chunks = []
        for _, wavs, lengths in tqdm(_batches(records, self.cfg.batch_seconds)(),
                                     desc=f"k-means features ({self.source.describe()})", unit="batch"):
            chunks += [f.float().numpy() for f in self.source.batch(wavs, lengths)]
        feats = np.concatenate(chunks)
        if len(feats) > self.cfg.max_sample_frames:
            keep = np.random.default_rng(self.cfg.seed).choice(len(feats), self.cfg.max_sample_frames, replace=False)
            feats = feats[np.sort(keep)]
        if len(feats) < self.k:
            raise ValueError(f"k-means: {len(feats)} sampled frames for {self.k} clusters; raise "
                             "targets.sample_fraction or lower num_classes")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(path)
        log.info("targets: %d frames of %d utterances (%s)", len(feats), len(records), self.source.describe())
        return feats

    # stage 2 ------------------------------------------------------------------------------------
    def centroids(self, train: list[Record]) -> np.ndarray:
        if self.cfg.kmeans:
            cents = np.load(self.cfg.kmeans)
            if cents.shape[0] != self.k:
                raise ValueError(f"targets.kmeans {self.cfg.kmeans} has {cents.shape[0]} centroids; the model has "
                                 f"num_classes={self.k}")
            return cents
        path = self.dir / "kmeans.npy"
        if path.is_file():
            log.info("targets: k-means %s done already", path)
            return np.load(path)
        from sklearn.cluster import MiniBatchKMeans  # noqa: PLC0415  (slow import: only when fitting k-means)

        feats = self.sample_features(train)
        log.info("targets: fitting k-means, %d clusters on %d x %d frames", self.k, *feats.shape)
        km = MiniBatchKMeans(n_clusters=self.k, batch_size=self.cfg.batch_size, max_iter=self.cfg.max_iter,
                             n_init=self.cfg.n_init, max_no_improvement=self.cfg.max_no_improvement,
                             random_state=self.cfg.seed, compute_labels=False, init="k-means++")
        km.fit(feats)
        cents = km.cluster_centers_.astype(np.float32)
        inertia = float(-km.score(feats) / len(feats))
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, cents)
        tmp.replace(path)
        (self.dir / "kmeans.json").write_text(json.dumps(
            {"clusters": self.k, "frames": len(feats), "dim": feats.shape[1], "mean_squared_distance": inertia,
             "source": self.source.describe(), "settings": asdict(self.cfg)}, indent=1))
        return cents

    # stage 3 ------------------------------------------------------------------------------------
    def labels(self, train: list[Record], valid: list[Record]) -> dict[str, torch.Tensor]:
        path = self.dir / "labels.pt"
        records = train + valid
        if path.is_file():
            labels = torch.load(path, weights_only=True)
            missing = [r.id for r in records if r.id not in labels]
            if not missing:
                log.info("targets: labels %s done already", path)
                return labels
            log.info("targets: %s lacks %d utterances; labelling again", path, len(missing))
        cents = torch.from_numpy(self.centroids(train))
        labels: dict[str, torch.Tensor] = {}
        for idx, wavs, lengths in tqdm(_batches(records, self.cfg.batch_seconds)(), desc="k-means labels",
                                       unit="batch"):
            for i, f in zip(idx.tolist(), self.source.batch(wavs, lengths), strict=True):
                labels[records[i].id] = assign(f.float(), cents).to(torch.int16)
        atomic_save(labels, path)
        usage = id_usage(torch.bincount(torch.cat(list(labels.values())).long(), minlength=self.k))
        (self.dir / "usage.json").write_text(json.dumps(usage, indent=1))
        log.info("targets: %d utterances labelled; %d of %d clusters used, perplexity %.1f", len(labels),
                 usage["used"], self.k, usage["perplexity"])
        return labels


def assign(feats: torch.Tensor, centroids: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Nearest centroid (squared Euclidean) of each (T, D) frame -> (T,) int64."""
    out = []
    c_sq = (centroids * centroids).sum(1)
    for start in range(0, feats.shape[0], chunk):
        f = feats[start:start + chunk]
        out.append((c_sq[None, :] - 2 * f @ centroids.T).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans_targets(work_dir: Path, settings: dict, student: Upstream, num_clusters: int,
                   train: list[Record], valid: list[Record]) -> dict[str, torch.Tensor]:
    """All three stages for ``student``; returns record id -> (T,) int16 ids.

    ``settings`` is the ``targets`` config section (:class:`KMeansTargetConfig` fields; an unknown
    key or a wrong type is a ConfigError naming it).
    """
    cfg = merge(KMeansTargetConfig(), settings, "targets")
    return KMeansTargets(work_dir, cfg, student, num_clusters).labels(train, valid)
