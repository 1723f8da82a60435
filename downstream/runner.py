"""Train and evaluate a downstream head on a frozen upstream.

One experiment folder ``<output_root>/<name>/`` describes itself completely:
    ``config.yaml``          the full resolved config (upstream, task, every hyper-parameter)
    ``upstream.pt``          the upstream as used, where no checkpoint names it: fitted statistics
                             (fbank_global) or the random initial weights of a random-weights baseline
    ``checkpoints/last.pt``  the latest state (head, featurizer, optimiser, RNG, position), for resume;
                             ``last.prev.pt`` the one before it
    ``checkpoints/best.pt``  the state with the best dev metric
    ``train.log``, ``tb/``   the log and TensorBoard event files
    ``layer_weights.json``   the featurizer weights of the best checkpoint and the upstream layers they weigh
    ``results.json``         metrics per split with provenance; ``predictions-<split>.tsv``
The names are :mod:`core.runs`'s. Checkpoints are written atomically; re-running ``train`` with the
same name resumes from ``last.pt`` and gives the same result as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import platform
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset

from core import distributed, runs
from core.checkpoint import atomic_write_text
from core.config import ConfigError, claim_folder, merge, to_dict
from core.locks import exclusive
from core.logs import log_to_file
from core.runs import Results
from core.training import TrainingLoop, seed_everything
from corpora.audio import SAMPLE_RATE
from corpora.batching import AudioDataset, DurationBatcher, collate_waveforms, ordered_loader
from corpora.manifest import Record
from upstream import Featurizer, Upstream, build_upstream
from upstream.base import FinetuneMasking
from upstream.cost import cached_cost
from upstream.registry import save_upstream, upstream_label

from .cache import FeatureCache, MeanFrameSubset, collate_features, kept_layers
from .config import ExperimentConfig, tri_stage_scale
from .tasks import Task, get_task

log = logging.getLogger("downstream")


@dataclass
class RunSpec:
    """What names an experiment besides its hyper-parameters."""

    task: str
    upstream: str
    upstream_ckpt: str | None = None


def resolve_config(spec: RunSpec, yaml_dict: dict, overrides: dict, *, corpus: bool = True) -> ExperimentConfig:
    """The dataclasses' defaults with the task's own ``train`` defaults (``Task.train_defaults``: its
    protocol), then the YAML file, then ``-o`` overrides, each checked against the dataclasses.

    With ``corpus``, ``task.corpus: auto`` becomes the corpus that ``task.root`` holds, and any other
    value is checked (``Task.resolve_corpus``: a ConfigError naming what was found and what to set);
    without, the settings alone (the defaults a run folder's config is compared with).
    """
    task = get_task(spec.task)
    cfg = merge(ExperimentConfig(task=task.config_class()), {"train": task.train_defaults})
    cfg = merge(merge(cfg, yaml_dict), overrides)
    return replace(cfg, task=task.resolve_corpus(cfg.task)) if corpus else cfg


class FeatureSource:
    """Per split, batches of (indices, (B, T, L, D) features, (B,) lengths) on the process's device
    (:func:`core.distributed.device`): from the split's part of the cache (``cached``, see
    :meth:`Experiment._cached_splits`) or, without it, the live upstream.
    """

    def __init__(self, upstream: Upstream, records: list[Record], cfg: ExperimentConfig, cached: Dataset | None):
        self.upstream, self.records, self.cfg, self.cached = upstream, records, cfg, cached

    def batches(self, index_batches: list[list[int]], grad: bool = False):
        """Yield the batches; with ``grad`` the live upstream's forward pass is recorded for backpropagation."""
        device = distributed.device()
        if self.cached is not None:
            loader = ordered_loader(self.cached, index_batches, collate_features, self.cfg.train.num_workers)
            for idx, feats, lengths in loader:
                yield idx, feats.to(device, non_blocking=True), lengths.to(device)
            return
        loader = ordered_loader(AudioDataset(self.records), index_batches, collate_waveforms,
                                self.cfg.train.num_workers)
        layers = kept_layers(self.cfg.featurizer.layers, self.upstream.num_layers)
        for idx, wavs, lengths in loader:
            with torch.set_grad_enabled(grad):
                out = self.upstream(wavs.to(device, non_blocking=True), lengths.to(device))
                stacked = out.stacked() if layers is None else out.stacked()[:, :, layers]
            yield idx, stacked, out.lengths.to(device)


def reads_mean_frame(featurizer: Featurizer, head: torch.nn.Module) -> bool:
    """Whether ``head(featurizer(x))`` depends on an utterance's frames only through their mean, so that
    the mean frame, as a one-frame utterance, gives the same output: an affine featurizer
    (:attr:`Featurizer.frame_affine`) under a head that declares ``reads_frame_mean`` (SUPERB's
    ``proj_mean_linear`` and ``mean_linear``)."""
    return featurizer.frame_affine and getattr(head, "reads_frame_mean", False)


class Downstream(torch.nn.Module):
    """What downstream training updates, as one module (so DDP can wrap it): featurizer, then head."""

    def __init__(self, featurizer: Featurizer, head: torch.nn.Module):
        super().__init__()
        self.featurizer, self.head = featurizer, head

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        """(B, T, L, D) stacked layers, (B,) lengths -> the head's ``(y, y_len)`` (:mod:`downstream.heads`)."""
        return self.head(self.featurizer(features, lengths), lengths)


class Experiment:
    """A named experiment: builds upstream, task, featurizer and head from a config, trains, evaluates."""

    def __init__(self, exp_dir: Path, spec: RunSpec, cfg: ExperimentConfig):
        self.dir, self.spec, self.cfg = Path(exp_dir), spec, cfg
        self.ckpt_dir = self.dir / runs.CHECKPOINT_DIR
        self.task: Task = get_task(spec.task)(cfg.task, self.dir)
        self.variant = ""
        """Non-empty when evaluating with decoding overrides: names the extra results and predictions files."""

    # ---------------------------------------------------------------- setup
    @classmethod
    def create(cls, output_root: Path, name: str, spec: RunSpec, cfg: ExperimentConfig) -> "Experiment":
        """A new experiment, or the existing one of that name if its config is identical (to resume)."""
        exp_dir = Path(output_root) / name
        with distributed.main_first():
            claim_folder(exp_dir, {"run": spec.__dict__, "config": to_dict(cfg)}, f"experiment '{name}'",
                         defaults={"config": to_dict(resolve_config(spec, {}, {}, corpus=False))})
        return cls(exp_dir, spec, cfg)

    @classmethod
    def load(cls, output_root: Path, name: str, decoding: dict | None = None) -> "Experiment":
        """An existing experiment, rebuilt from its config snapshot.

        ``decoding``: ``{"task": {key: value}}`` overrides of the task's decoding settings (keys in
        ``Task.decoding_keys``, e.g. ``decoder``, ``lm``); evaluating with them writes
        ``results-<overrides>.json`` and ``predictions-<overrides>-<split>.tsv`` beside the main results.
        """
        exp_dir = Path(output_root) / name
        cfg_file = exp_dir / runs.CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"no experiment '{name}' in {output_root} ({cfg_file} missing)")
        snapshot = yaml.safe_load(cfg_file.read_text())
        spec = RunSpec(**snapshot["run"])
        decoding = decoding or {}
        allowed = get_task(spec.task).decoding_keys
        bad = [f"{section}.{key}" for section, keys in decoding.items()
               for key in (keys if isinstance(keys, dict) else {None: None}) if section != "task" or key not in allowed]
        if bad:
            raise ConfigError(f"evaluate accepts only decoding overrides "
                              f"({', '.join('task.' + k for k in allowed) or 'none for this task'}); "
                              f"got {', '.join(bad)}")
        cfg = resolve_config(spec, snapshot["config"], decoding)
        exp = cls(exp_dir, spec, cfg)
        exp.variant = "-".join(f"{k}={v}" for k, v in sorted(decoding.get("task", {}).items()))
        return exp

    def _setup(self):
        if distributed.is_main():
            log_to_file(log, self.dir / runs.TRAIN_LOG)
        splits = self.task.prepare()
        upstream = self._upstream(splits["train"])
        for name, records in splits.items():
            samples = torch.tensor([round(r.duration * SAMPLE_RATE) for r in records])
            self.task.check_frames(name, records, upstream.num_frames(samples).tolist())
        layers = kept_layers(self.cfg.featurizer.layers, upstream.num_layers)
        layer = self.cfg.featurizer.layer  # an upstream layer; with a subset, its place among the kept ones
        if layers and self.cfg.featurizer.mode == "layer":
            if layer % upstream.num_layers not in layers:
                raise ConfigError(f"featurizer.layer {layer} is not among featurizer.layers "
                                  f"{self.cfg.featurizer.layers}")
            layer = layers.index(layer % upstream.num_layers)
        featurizer = Featurizer(len(layers) if layers else upstream.num_layers, self.cfg.featurizer.mode,
                                layer, self.cfg.featurizer.layer_norm, self.cfg.featurizer.utterance_mean_norm)
        head = self.task.build_head(upstream.hidden_size)
        device = distributed.device()
        return splits, upstream.to(device), featurizer.to(device), head.to(device)

    def _upstream(self, train_records: list[Record]) -> Upstream:
        fitted = self.dir / runs.UPSTREAM_FILE
        if fitted.is_file():
            with torch.random.fork_rng():  # building it draws random weights: the head's start stays a fresh run's
                return build_upstream(self.spec.upstream, fitted)
        with torch.random.fork_rng():  # random initial weights are a function of the seed alone
            torch.manual_seed(self.cfg.train.seed)
            upstream = build_upstream(self.spec.upstream, self.spec.upstream_ckpt, **self.cfg.upstream)
        random_weights = self.spec.upstream_ckpt is None and upstream.has_weights
        needs_fit = upstream.needs_fit
        if needs_fit:  # e.g. global normalisation statistics (fbank_global, a random BEST-RQ)
            n = min(len(train_records), self.cfg.train.fit_utterances)
            chosen = random.Random(self.cfg.train.seed).sample(train_records, n)
            log.info("fitting %s statistics on %d training utterances", upstream.name, n)
            upstream.fit(AudioDataset(chosen)[i][1] for i in range(n))
        if random_weights or needs_fit:
            save_upstream(upstream, fitted)  # evaluate must see the same random weights and statistics
        return upstream

    def _cached_splits(self, upstream: Upstream, splits: dict[str, list[Record]], featurizer: Featurizer,
                       head: torch.nn.Module) -> dict[str, Dataset]:
        """Each split's features from the cache (one entry for the whole corpus), or nothing when the
        cache is off or the upstream is fine-tuned (it changes, so features come from the live model).
        Where the head reads only the mean frame of what an affine featurizer makes (:func:`reads_mean_frame`),
        each utterance is its mean frame (:class:`MeanFrameSubset`): the same outputs, far less to read."""
        cfg = self.cfg
        if not cfg.cache.enabled or cfg.finetune.enabled:
            return {}
        subsets = FeatureCache(cfg.cache.root, cfg.cache.dtype, cfg.featurizer.layers).get_splits(
            upstream, splits, cfg.train.batch_seconds, cfg.train.batch_size, desc="extract every split")
        if reads_mean_frame(featurizer, head):
            return {name: MeanFrameSubset(subset) for name, subset in subsets.items()}
        return subsets

    def _cost(self, upstream: Upstream) -> dict | None:
        """The upstream's cost record (:func:`upstream.cost.cached_cost`, kept under ``<cache.root>/cost``);
        None when ``cost.enabled`` is off or the measurement fails (logged: a run never fails for it)."""
        cfg = self.cfg.cost
        if not cfg.enabled:
            return None
        try:
            with torch.random.fork_rng(devices=[d for d in [distributed.device()] if d.type == "cuda"]):
                return cached_cost(upstream, Path(self.cfg.cache.root) / "cost", cfg.lengths_s, cfg.repeats)
        except (RuntimeError, ValueError, OSError) as err:  # e.g. out of memory, an input too short for the model
            log.warning("could not measure the cost of %s: %s", upstream.name, err)
            return None

    # ---------------------------------------------------------------- train
    def train(self) -> dict:
        """Train to ``train.total_steps`` (resuming from ``last.pt`` if present), then evaluate dev and test.

        Under torchrun, every process trains on its share of each batch (:mod:`core.distributed`);
        process 0 validates, saves and evaluates, and alone returns the results (the others: ``{}``).
        A second process asked to train the same experiment while one does is refused
        (:class:`core.locks.FolderBusyError`, naming the holder).
        """
        if not distributed.is_main():
            return self._train()
        with exclusive(self.dir, f"experiment '{self.dir.name}'"):
            return self._train()

    def _train(self) -> dict:
        cfg, tcfg, ft = self.cfg, self.cfg.train, self.cfg.finetune
        if ft.enabled and distributed.world_size() > 1:
            raise ConfigError("fine-tuning (finetune.enabled) runs in one process; launch it without torchrun")
        seed_everything(tcfg.seed)
        with distributed.main_first():  # process 0 writes manifests, fitted statistics and the feature cache
            splits, upstream, featurizer, head = self._setup()
            if distributed.is_main() and not ft.enabled:  # measured before extraction fills memory; evaluate reads it
                self._cost(upstream)
            t0 = time.perf_counter()
            cached = self._cached_splits(upstream, splits, featurizer, head)
            sources = {s: FeatureSource(upstream, splits[s], cfg, cached.get(s)) for s in ("train", "dev")}
            extract_s = time.perf_counter() - t0
        model = distributed.data_parallel(Downstream(featurizer, head))
        if distributed.world_size() > 1:
            log.info("data-parallel over %d processes (%s backend): each trains on 1/%d of every batch",
                     distributed.world_size(), distributed.backend_for(distributed.device()), distributed.world_size())
        log.info("training on %s", distributed.describe_device())
        params = [*featurizer.parameters(), *head.parameters()]
        groups = [{"params": params, "lr": tcfg.lr}]
        if ft.enabled:
            upstream_params = self._unfreeze(upstream)
            params = params + upstream_params
            groups.append({"params": upstream_params, "lr": tcfg.lr * ft.upstream_lr_scale})
        optimizer = torch.optim.Adam(groups, lr=tcfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: tri_stage_scale(step, tcfg.total_steps, ft)) if ft.enabled else None
        loop = TrainingLoop(tcfg, params, optimizer, scheduler, checkpoint=self.ckpt_dir / runs.LAST_CHECKPOINT,
                            tensorboard=self.dir / runs.TENSORBOARD_DIR,
                            desc=f"train {self.spec.upstream}/{self.task.name}", log=log)
        loop.position.update(best=None, best_step=None)
        resumed = loop.resume()
        if resumed is not None:
            featurizer.load_state_dict(resumed["featurizer"])
            head.load_state_dict(resumed["head"])
            if ft.enabled:
                upstream.load_state_dict(resumed["upstream"])
        train_records = splits["train"]
        batcher = DurationBatcher([r.duration for r in train_records], tcfg.batch_seconds, tcfg.batch_size,
                                  seed=tcfg.seed, weights=self.task.sample_weights(train_records))

        def epoch_losses(epoch: int, first: int):
            shards = [distributed.shard(batch, lambda idx: self.task.loss_units([train_records[i] for i in idx]))
                      for batch in batcher.epoch(epoch)[first:]]
            tune_upstream = ft.enabled and loop.position["step"] >= ft.freeze_steps
            upstream.train(tune_upstream)
            local_batches = sources["train"].batches([local for local, _ in shards], grad=tune_upstream)
            for (idx, feats, lengths), (_, weight) in zip(local_batches, shards, strict=True):
                yield self.task.loss(model(feats, lengths), [train_records[i] for i in idx.tolist()]), weight, {}

        def states() -> dict:
            """Head state, plus the fine-tuned upstream when fine-tuning."""
            return {"featurizer": featurizer.state_dict(), "head": head.state_dict(), "task": self.task.state(),
                    "layer_weights": featurizer.layer_weights(),
                    **({"upstream": upstream.state_dict()} if ft.enabled else {})}

        def validate(step: int, train_loss: float, stats: dict) -> None:
            metrics = self._validate(sources["dev"], splits["dev"], upstream, featurizer, head)
            value = metrics[self.task.selection_metric]
            for k, v in metrics.items():
                loop.writer.add_scalar(f"dev/{k}", v, step)
            best = loop.position["best"]
            better = best is None or (value > best if self.task.higher_is_better else value < best)
            log.info("step %d dev %s%s", step, json.dumps(metrics), " (best)" if better else "")
            if better:
                loop.position.update(best=value, best_step=step)
                loop.save(self.ckpt_dir / runs.BEST_CHECKPOINT, **states())

        featurizer.train()
        head.train()
        loop.run(epoch_losses, evaluate=validate, save=lambda: loop.save(loop.checkpoint, **states()),
                 regroup_at=ft.freeze_steps if ft.enabled else None)
        upstream.eval()
        if not distributed.is_main():
            distributed.barrier()  # until process 0 has evaluated
            return {}
        position = loop.position
        summary = {"train_steps": position["step"], "train_seconds": round(position["train_seconds"], 3),
                   "steps_per_second": round(position["step"] / max(position["train_seconds"], 1e-9), 3),
                   "extract_seconds": round(extract_s, 3), "best_step": position["best_step"],
                   "processes": distributed.world_size(), "device": distributed.describe_device()}
        results = self.evaluate(("dev", "test"), summary=summary, prepared=(splits, upstream, featurizer, head))
        distributed.barrier()
        return results

    def _unfreeze(self, upstream: Upstream) -> list[torch.nn.Parameter]:
        """Prepare ``upstream`` for fine-tuning (its own input masking, gradients only where it
        trains: not HuBERT's CNN); return the parameters it trains."""
        ft = self.cfg.finetune
        if not upstream.has_weights:
            raise ValueError(f"fine-tuning needs an upstream with weights; '{self.spec.upstream}' has none")
        masks = upstream.set_finetune_masking(FinetuneMasking(ft.mask_time_start_prob, ft.mask_time_span,
                                                              ft.mask_channel_prob, ft.mask_channel_span))
        if not masks:
            log.info("%s has no input masking of its own: only the head's masking applies", upstream.name)
        upstream_params = upstream.finetune_parameters()
        trained = {id(p) for p in upstream_params}
        for p in upstream.parameters():
            p.requires_grad_(id(p) in trained)
        return upstream_params

    def _validate(self, source, records, upstream, featurizer, head) -> dict:
        """Dev metrics, with the task's validation behaviour; leaves the trained modules in training mode."""
        mode = upstream.training
        self.task.validating = True
        try:
            metrics = self._run_eval(source, records, upstream, featurizer, head)[0]
        finally:
            self.task.validating = False
        upstream.train(mode)
        featurizer.train()
        head.train()
        return metrics

    # ---------------------------------------------------------------- evaluate
    @torch.no_grad()
    def _run_eval(self, source: FeatureSource, records: list[Record], upstream, featurizer, head) -> tuple[dict, list]:
        upstream.eval()
        featurizer.eval()
        head.eval()
        batcher = DurationBatcher([r.duration for r in records], self.cfg.train.batch_seconds,
                                  self.cfg.train.batch_size, seed=0)
        predictions: list = [None] * len(records)
        for idx, feats, lengths in source.batches(batcher.sequential()):
            for i, p in zip(idx.tolist(), self.task.predict(head(featurizer(feats, lengths), lengths)), strict=True):
                predictions[i] = p
        return self.task.score(predictions, records), predictions

    def _best(self, prepared=None) -> tuple[dict, tuple]:
        """The best checkpoint and (splits, upstream, featurizer, head) with its weights loaded
        (``prepared``: what :meth:`_setup` returned, when training has just built it)."""
        best = self.ckpt_dir / runs.BEST_CHECKPOINT
        if not best.is_file():
            raise FileNotFoundError(f"{best} missing: train experiment '{self.dir.name}' first")
        ckpt = torch.load(best, map_location="cpu", weights_only=True)  # tensors and plain data: runs no code
        self.task.load_state(ckpt["task"])
        splits, upstream, featurizer, head = prepared or self._setup()
        featurizer.load_state_dict(ckpt["featurizer"])
        head.load_state_dict(ckpt["head"])
        if "upstream" in ckpt:  # fine-tuned
            upstream.load_state_dict(ckpt["upstream"])
        return ckpt, (splits, upstream, featurizer, head)

    @torch.no_grad()
    def head_outputs(self, split: str):
        """The best checkpoint's head on ``split``: yields (the records of a batch, the head's ``(y, y_len)``
        for them: raw scores, which a CTC task's ``log_probs`` turns into log-probabilities)."""
        _, (splits, upstream, featurizer, head) = self._best()
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; available: {', '.join(splits)}")
        for module in (upstream, featurizer, head):
            module.eval()
        records = splits[split]
        source = FeatureSource(upstream, records, self.cfg,
                               self._cached_splits(upstream, splits, featurizer, head).get(split))
        batches = DurationBatcher([r.duration for r in records], self.cfg.train.batch_seconds,
                                  self.cfg.train.batch_size, seed=0).sequential()
        for idx, feats, lengths in source.batches(batches):
            yield [records[i] for i in idx.tolist()], head(featurizer(feats, lengths), lengths)

    def evaluate(self, split_names=("test",), summary: dict | None = None, prepared=None) -> dict:
        """Score the best checkpoint on ``split_names``; write predictions, layer weights and the results
        record (:class:`core.runs.Results`; splits evaluated earlier are kept)."""
        ckpt, (splits, upstream, featurizer, head) = self._best(prepared)
        results_path = self.dir / runs.results_file(self.variant)
        earlier = json.loads(results_path.read_text()) if results_path.is_file() else {}
        metrics_by_split = dict(earlier.get("splits") or {})
        cost = self._cost(upstream)  # before extraction: a measurement (or the one train made) reads memory cleanly
        cached = self._cached_splits(upstream, splits, featurizer, head)
        for split in split_names:
            if split not in splits:
                raise ValueError(f"unknown split {split!r}; available: {', '.join(splits)}")
            t0 = time.perf_counter()
            source = FeatureSource(upstream, splits[split], self.cfg, cached.get(split))
            metrics, predictions = self._run_eval(source, splits[split], upstream, featurizer, head)
            metrics_by_split[split] = {**metrics, "utterances": len(splits[split]),
                                       "seconds": round(time.perf_counter() - t0, 3)}
            self.task.write_predictions(self.dir / runs.predictions_file(split, self.variant), predictions,
                                        splits[split])
            log.info("%s %s", split, json.dumps(metrics))
        layers = kept_layers(self.cfg.featurizer.layers, upstream.num_layers) or list(range(upstream.num_layers))
        (self.dir / runs.LAYER_WEIGHTS_FILE).write_text(json.dumps(
            {"upstream": self.spec.upstream, "mode": self.cfg.featurizer.mode, "layers": layers,
             "weights": ckpt["layer_weights"]}, indent=1))
        record = Results(
            task=self.task.name, track=self.task.track(), dataset=self.task.dataset(),
            upstream=self.spec.upstream, upstream_checkpoint=self.spec.upstream_ckpt,
            upstream_label=upstream_label(self.spec.upstream, self.spec.upstream_ckpt, upstream)
            + ("+finetuned" if self.cfg.finetune.enabled else ""), finetuned=self.cfg.finetune.enabled,
            upstream_fingerprint=upstream.fingerprint(),
            upstream_parameters=sum(p.numel() for p in upstream.parameters()), cost=cost or earlier.get("cost"),
            pretrain_hours=runs.pretrain_hours(self.spec.upstream_ckpt), experiment=self.dir.name,
            seed=self.cfg.train.seed, learning_rate=self.cfg.train.lr,
            checkpoint_step=ckpt["position"]["step"], layer_weights=ckpt["layer_weights"],
            primary_metric=self.task.primary_metric, selection_metric=self.task.selection_metric,
            head=getattr(self.cfg.task, "head", None),
            higher_is_better=self.task.higher_is_better, torch=torch.__version__, host=platform.node(),
            metric_info=self.task.metric_info() or earlier.get("metric_info"),
            training=summary or earlier.get("training"), decoding=self.variant or earlier.get("decoding"),
            splits=metrics_by_split)
        results = record.to_dict()
        atomic_write_text(results_path, json.dumps(results, indent=1))
        return results


