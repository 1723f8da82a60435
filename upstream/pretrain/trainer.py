"""The pre-training experiment: :class:`Pretrainer` runs an upstream's ``pretrain_loss`` on unlabelled audio.

Its configs (:class:`PretrainConfig`: ``upstream``, ``targets``, ``train``, ``augment``), the held-out
validation utterances, the learning-rate schedule, the run folder's names and the finished /
unfinished tests; :mod:`upstream.pretrain` describes the run folder and the command.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core import distributed
from core.config import ConfigError, claim_folder, merge, parse_overrides
from core.locks import exclusive
from core.logs import log_to_file
from core.runs import RESUME_CHECKPOINT, SUMMARY_FILE, UPSTREAM_FILE
from core.training import LoopConfig, TrainingLoop
from corpora.batching import AudioDataset, DurationBatcher, collate_waveforms, ordered_loader
from corpora.folder import scan_audio
from corpora.manifest import Record

from ..base import Pretrainable
from ..registry import build_upstream, save_upstream
from .augment import TRANSFORMS, AugmentConfig, Augmenter

log = logging.getLogger("upstream.pretrain")


class PretrainObjective(torch.nn.Module):
    """The model's ``pretrain_loss`` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: Pretrainable):
        super().__init__()
        self.model = model

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor] | None = None):
        """(B, S) waveforms, (B,) lengths[, B target tensors] -> (scalar loss, statistics)."""
        if targets is None:
            return self.model.pretrain_loss(wavs, lengths)
        return self.model.pretrain_loss(wavs, lengths, targets)


@dataclass
class PretrainLoopConfig(LoopConfig):
    """The optimisation loop (:class:`core.training.LoopConfig`, with pre-training's defaults) and
    what pre-training adds; the model's own settings are in the ``upstream`` section."""

    total_steps: int = 5000
    lr: float = 2e-4
    batch_seconds: float = 160.0
    grad_clip: float = 5.0
    eval_every: int = 250
    save_every: int = 250
    log_every: int = 25
    num_workers: int = 1
    optimizer: str = "adamw"
    """``adamw`` or ``adam``."""
    weight_decay: float = 0.01
    warmup_fraction: float = 0.07
    """Linear warm-up over this fraction of the steps, then linear decay to zero (0: constant lr)."""
    decay: bool = True
    segment_seconds: float = 10.0
    """Longer recordings are cut into segments of at most this length."""
    valid_fraction: float = 0.02
    threads: int = 0
    """torch intra-op threads (0: torch's default)."""


@dataclass
class PretrainConfig:
    upstream: dict = field(default_factory=dict)
    """Model settings passed to the upstream's factory (``preset`` and its config fields)."""
    targets: dict = field(default_factory=dict)
    """Settings of the target stages, for upstreams that have them
    (HuBERT: :class:`upstream.hubert.targets.KMeansTargetConfig`)."""
    train: PretrainLoopConfig = field(default_factory=PretrainLoopConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """On-the-fly augmentation of the training audio."""


def held_out(record: Record, fraction: float) -> bool:
    """Deterministic validation membership from a hash of the record id."""
    h = int(hashlib.md5(record.id.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def lr_factor(step: int, cfg: PretrainLoopConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based): linear warm-up, then linear decay or constant."""
    warmup = int(cfg.warmup_fraction * cfg.total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if not cfg.decay:
        return 1.0
    return max(0.0, (cfg.total_steps - step) / max(1, cfg.total_steps - warmup))


class Pretrainer:
    """One pre-training experiment: data, model, optimiser, loop, checkpoints."""

    def __init__(self, exp_dir: Path, upstream: str, cfg: PretrainConfig, data: list[str]):
        self.dir, self.upstream_name, self.cfg, self.data = Path(exp_dir), upstream, cfg, [str(d) for d in data]
        self.targets: dict | None = None
        torch.manual_seed(cfg.train.seed)
        self.model = build_upstream(upstream, **cfg.upstream)  # checks the settings before anything is written
        if not isinstance(self.model, Pretrainable):
            raise ValueError(f"upstream {upstream!r} cannot be pre-trained here")
        self.augmenter = Augmenter(cfg.augment) if cfg.augment.enabled else None  # checks its settings
        snapshot = {"upstream": upstream, "data": self.data, "config": dataclasses.asdict(cfg)}
        with distributed.main_first():  # a folder made before a config key existed resumes with its default
            claim_folder(self.dir, snapshot, f"pre-training experiment '{self.dir.name}'",
                         defaults={"config": dataclasses.asdict(PretrainConfig())})
        if distributed.world_size() > 1:  # same initial weights everywhere, different masks per process
            torch.manual_seed(cfg.train.seed + distributed.rank())

    def records(self) -> tuple[list[Record], list[Record]]:
        """(training, validation) segments of the run's data; what could not be used goes to ``skipped.tsv``."""
        records, skipped = [], []
        for source in self.data:
            recs, bad = scan_audio(source, self.cfg.train.segment_seconds)
            records += recs
            skipped += bad
        (self.dir / "skipped.tsv").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))
        valid = [r for r in records if held_out(r, self.cfg.train.valid_fraction)]
        train = [r for r in records if not held_out(r, self.cfg.train.valid_fraction)]
        if not train or not valid:
            raise ValueError(f"pre-training data {self.data}: {len(train)} training and {len(valid)} validation "
                             "utterances; need both (adjust train.valid_fraction)")
        return train, valid

    def prepare(self) -> tuple[list[Record], list[Record], dict | None]:
        """Data and the model's target stages (k-means for HuBERT): (train, valid, id -> targets or None)."""
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        with distributed.main_first():  # process 0 fits and writes the targets, the others read them
            train, valid = self.records()
            targets = self.model.prepare_pretraining(self.dir / "targets", train, valid, self.cfg.targets)
        return train, valid, targets

    def run(self) -> dict:
        """Pre-train to ``train.total_steps`` (resuming from ``last.pt`` if present); return the summary
        (process 0; the others ``{}``). A second process asked to pre-train into the same folder while one
        does is refused (:class:`core.locks.FolderBusyError`, naming the holder)."""
        if not distributed.is_main():
            return self._run()
        with exclusive(self.dir, f"pre-training folder '{self.dir.name}'"):
            return self._run()

    def _run(self) -> dict:
        tcfg = self.cfg.train
        if distributed.is_main():
            log_to_file(log, self.dir / "train.log")
        train, valid, targets = self.prepare()
        self.targets = targets
        hours = sum(r.duration for r in train) / 3600
        model = self.model.to(distributed.device())  # after the target stages, which fit statistics on the CPU
        local_objective = PretrainObjective(model)
        objective = distributed.data_parallel(local_objective, find_unused_parameters=True)
        params = [p for p in model.parameters() if p.requires_grad]
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(tcfg.optimizer)
        if opt_cls is None:
            raise ConfigError(f"train.optimizer must be 'adamw' or 'adam', not {tcfg.optimizer!r}")
        optimizer = opt_cls(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay if tcfg.optimizer == "adamw" else 0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tcfg))
        loop = TrainingLoop(tcfg, params, optimizer, scheduler, checkpoint=self.dir / RESUME_CHECKPOINT,
                            tensorboard=self.dir / "tb", desc=f"pretrain {self.upstream_name}", log=log)
        if self.augmenter is not None:  # utterances seen and changed per transform, saved with the position
            loop.position["augmented"] = dict.fromkeys(["utterances", *TRANSFORMS], 0)
        resumed = loop.resume()
        if resumed is not None:
            model.load_state_dict(resumed["model"])
        log.info("%s: %d parameters, %d training segments (%.2f h), %d validation; on %s", self.upstream_name,
                 sum(p.numel() for p in params), len(train), hours, len(valid), distributed.describe_device())
        batcher = DurationBatcher([r.duration for r in train], tcfg.batch_seconds, tcfg.batch_size, seed=tcfg.seed)
        valid_batches = DurationBatcher([r.duration for r in valid], tcfg.batch_seconds, tcfg.batch_size,
                                        seed=0).sequential()
        curve = self.dir / "curve.tsv"

        def epoch_losses(epoch: int, first: int):
            shards = [distributed.shard(batch) for batch in batcher.epoch(epoch)[first:]]
            loader = ordered_loader(AudioDataset(train), [local for local, _ in shards], collate_waveforms,
                                    tcfg.num_workers)
            for (idx, wavs, lengths), (_, weight) in zip(loader, shards, strict=True):
                if self.augmenter is not None:  # the loop's step is the update this batch is for
                    wavs, counts = self.augmenter(wavs, lengths, idx, loop.position["step"])
                    augmented = loop.position["augmented"]
                    augmented["utterances"] += len(idx)
                    for name, count in counts.items():
                        augmented[name] += count
                loss, stats = self._loss(objective, train, idx, wavs, lengths)
                yield loss, weight, stats

        def validate(step: int, train_loss: float, stats: dict) -> None:
            valid_loss = self._validate(local_objective, valid, valid_batches)
            lr = scheduler.get_last_lr()[0]
            if not curve.is_file():
                curve.write_text("\t".join(["step", "train_loss", "valid_loss", "lr", "seconds", *stats]) + "\n")
            with open(curve, "a") as f:
                f.write("\t".join([str(step), f"{train_loss:.6f}", f"{valid_loss:.6f}", f"{lr:.3e}",
                                   f"{loop.position['train_seconds']:.1f}", *(f"{v:.6g}" for v in stats.values())])
                        + "\n")
            for key, value in stats.items():
                loop.writer.add_scalar(f"train/{key}", value, step)
            loop.writer.add_scalar("valid/loss", valid_loss, step)
            loop.writer.add_scalar("train/lr", lr, step)
            log.info("step %d train %.4f valid %.4f lr %.2e", step, train_loss, valid_loss, lr)

        def save() -> None:
            save_upstream(model, self.dir / UPSTREAM_FILE)
            loop.save(loop.checkpoint, model=model.state_dict())

        model.train()
        loop.run(epoch_losses, evaluate=validate, save=save)
        if not distributed.is_main():
            return {}
        rows = [line.split("\t") for line in curve.read_text().splitlines()[1:]]
        summary = {"upstream": self.upstream_name, "settings": model.settings(), "steps": loop.position["step"],
                   "train_seconds": round(loop.position["train_seconds"], 1), "train_hours_of_audio": round(hours, 3),
                   "train_segments": len(train), "valid_segments": len(valid),
                   "first_valid_loss": float(rows[0][2]), "final_valid_loss": float(rows[-1][2]),
                   "parameters": sum(p.numel() for p in params), "data": self.data,
                   "processes": distributed.world_size(), "device": distributed.describe_device()}
        summary["augment"] = {"enabled": False} if self.augmenter is None else \
            {**dataclasses.asdict(self.cfg.augment), "augmented": loop.position["augmented"]}
        usage = self.dir / "targets" / "usage.json"
        if usage.is_file():  # cluster / codebook usage of the targets
            summary["target_usage"] = json.loads(usage.read_text())
        if len(rows[-1]) > 5:  # the model's own statistics at the last evaluation
            header = curve.read_text().splitlines()[0].split("\t")
            # strict=False: the header names the first evaluation's statistics; the last one may have others
            summary["final_train_stats"] = {k: float(v) for k, v in zip(header[5:], rows[-1][5:], strict=False)}
        (self.dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        return summary

    def _loss(self, objective, records: list[Record], idx: torch.Tensor, wavs: torch.Tensor, lengths: torch.Tensor):
        """``objective`` (:class:`PretrainObjective`, maybe DDP-wrapped) on a batch moved to the process's
        device, with the utterances' targets (on the CPU) when the model has them."""
        targets = None if self.targets is None else [self.targets[records[i].id].long() for i in idx.tolist()]
        device = distributed.device()
        return objective(wavs.to(device, non_blocking=True), lengths.to(device), targets)

    @torch.no_grad()
    def _validate(self, objective: PretrainObjective, valid: list[Record], batches: list[list[int]]) -> float:
        """Mean validation loss, weighted by batch size; the RNG is restored so masking here does not shift training."""
        rng = distributed.rng_state()
        torch.manual_seed(0)
        total, count = 0.0, 0
        for idx, wavs, lengths in ordered_loader(AudioDataset(valid), batches, collate_waveforms):
            loss, _ = self._loss(objective, valid, idx, wavs, lengths)
            total += loss.item() * len(lengths)
            count += len(lengths)
        distributed.set_rng_state(rng)
        return total / count


def resolve_pretrain_config(yaml_dict: dict, overrides: list[str]) -> PretrainConfig:
    """Defaults, then the YAML file, then ``section.key=value`` overrides, each checked by :func:`core.config.merge`."""
    return merge(merge(PretrainConfig(), yaml_dict), parse_overrides(overrides))
