"""The one training loop that pre-training and downstream training both run on.

:class:`TrainingLoop` owns what every trainer needs and nothing model-specific: the position
(update, epoch, batch within the epoch, training seconds), resume from ``checkpoints/last.pt``
with the optimiser, schedule and random-number states, the update itself (zero the gradients,
backward of the loss weighted by the process's share of the batch, gradient-norm clipping,
optimiser and schedule step), the progress bar, TensorBoard's ``train/loss``, the mean loss
across processes (:mod:`core.distributed`) and the schedule of evaluations and checkpoints.

The trainer supplies the losses, one batch at a time, through ``epoch_losses(epoch, first_batch)``,
and its own evaluation and checkpoint contents through callbacks. Process 0 alone evaluates, saves
and writes TensorBoard events; every process meets at a barrier after them. Evaluation and saving
do not count as training time. Checkpoints are written atomically (:func:`core.checkpoint.atomic_save`),
the one they replace kept as ``last.prev.pt``: a killed run resumes from the last one (from the previous
one, with a warning, when the last cannot be read) and, on the CPU, ends bit-identical to an
uninterrupted run. SIGTERM or SIGINT during :meth:`TrainingLoop.run` finishes the update under way,
saves, and raises :class:`core.signals.Interrupted` (:mod:`core.signals`).
"""
from __future__ import annotations

import logging
import pickle
import random
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from . import distributed, signals
from .checkpoint import atomic_save, previous_checkpoint

Losses = Iterator[tuple[torch.Tensor, float, dict[str, float]]]
"""(scalar loss of this process's share of a batch, that share's weight, statistics to average)."""


@dataclass
class LoopConfig:
    """The optimisation loop's settings, the ``train`` section of every training config."""

    seed: int = 1337
    total_steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 32
    """Most utterances in a batch."""
    batch_seconds: float = 200.0
    """Most padded audio seconds in a batch (batch size x longest utterance): bounds memory."""
    grad_clip: float = 1.0
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 20
    num_workers: int = 0
    """DataLoader worker processes (0: load in the main process)."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class TrainingLoop:
    """Updates ``params`` with ``optimizer`` (and ``scheduler``, stepped once per update) until
    ``cfg.total_steps``.

    Args:
        cfg: the loop's settings.
        params: the parameters whose gradient norm is clipped.
        optimizer, scheduler: the optimiser and an optional per-update learning-rate schedule.
        checkpoint: the resume checkpoint (``.../checkpoints/last.pt``).
        tensorboard: the folder of TensorBoard events.
        desc: the progress bar's label.
        log: where ``resumed from`` and the per-log-step losses (DEBUG) go.
    """

    def __init__(self, cfg: LoopConfig, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, *, checkpoint: Path, tensorboard: Path,
                 desc: str, log: logging.Logger):
        self.cfg, self.params, self.optimizer, self.scheduler = cfg, params, optimizer, scheduler
        self.checkpoint, self.tensorboard, self.desc, self.log = Path(checkpoint), Path(tensorboard), desc, log
        self.position: dict = {"step": 0, "epoch": 0, "batch": 0, "train_seconds": 0.0}
        """Where training stands; trainers may add their own keys (saved and restored with it)."""
        self.writer: SummaryWriter | None = None
        """TensorBoard's writer on process 0 while :meth:`run` runs (None elsewhere)."""

    def resume(self) -> dict | None:
        """Restore optimiser, schedule, random-number states and position from :attr:`checkpoint`
        when it exists; return the checkpoint (for the trainer's own states) or None.

        A checkpoint that cannot be read (truncated, e.g. by a full disk) is passed over with a warning
        for the one before it (``last.prev.pt``); with neither readable, training starts afresh."""
        ckpt, loaded, unreadable = None, None, []
        for path in (self.checkpoint, previous_checkpoint(self.checkpoint)):
            if not path.is_file():
                continue
            try:
                ckpt, loaded = torch.load(path, map_location="cpu", weights_only=True), path  # runs no code
                break
            except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:  # truncated, damaged
                unreadable.append(path)
                self.log.warning("cannot read checkpoint %s (%s: %s); trying the one before it",
                                 path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        if ckpt is None:
            if unreadable:
                raise ValueError(f"no readable checkpoint to resume from ({', '.join(map(str, unreadable))}); "
                                 f"delete them to train from the beginning")
            return None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        distributed.set_rng_state(ckpt["rng"])
        self.position.update(ckpt["position"])
        self.log.info("resumed from %s at step %d", loaded, self.position["step"])
        return ckpt

    def save(self, path: Path, **states) -> None:
        """Write ``states`` (the trainer's model states and anything else) with the optimiser,
        schedule, random-number states and position, atomically, to ``path``."""
        extra = {"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}
        atomic_save({**states, "optimizer": self.optimizer.state_dict(), **extra, "rng": distributed.rng_state(),
                     "position": dict(self.position)}, path, keep_previous=Path(path) == self.checkpoint)

    def run(self, epoch_losses: Callable[[int, int], Losses], *, evaluate: Callable[[int, float, dict], None],
            save: Callable[[], None], regroup_at: int | None = None) -> None:
        """Train from :attr:`position` to ``cfg.total_steps``.

        Args:
            epoch_losses: ``(epoch, first_batch)`` -> the losses of that epoch's batches from
                ``first_batch`` on, computed lazily, one per update.
            evaluate: on process 0 every ``eval_every`` updates and at the end, with the update,
                the mean training loss and the mean statistics since the last evaluation.
            save: on process 0 every ``save_every`` updates and at the end (after ``evaluate``),
                typically :meth:`save` of the trainer's states to :attr:`checkpoint`.
            regroup_at: after this update, ask ``epoch_losses`` again for the rest of the epoch
                (a trainer whose batches change there, e.g. when fine-tuning unfreezes the upstream).

        Raises:
            core.signals.Interrupted: SIGTERM or SIGINT arrived; the update under way was finished and
                ``save`` called (on process 0) before this is raised.
        """
        with signals.deferred() as stop:
            self._run(epoch_losses, evaluate, save, regroup_at, stop)
        if stop:  # arrived after the last update: the run is complete and saved, but was asked to stop
            raise signals.Interrupted(stop.signum, str(self.checkpoint))

    def _run(self, epoch_losses, evaluate, save, regroup_at, stop: signals.StopFlag) -> None:
        cfg, position = self.cfg, self.position
        main = distributed.is_main()
        self.writer = SummaryWriter(str(self.tensorboard), purge_step=position["step"] + 1) if main else None
        bar = tqdm(total=cfg.total_steps, initial=position["step"], desc=self.desc, unit="step",
                   **({} if main else {"disable": True}))  # tqdm's defaults on process 0: TQDM_DISABLE=1 silences
        since_log: list[float] = []
        since_eval: list[float] = []
        stats: list[dict[str, float]] = []
        started = time.perf_counter()
        while position["step"] < cfg.total_steps:
            for loss, weight, batch_stats in epoch_losses(position["epoch"], position["batch"]):
                self.optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                position["step"] += 1
                position["batch"] += 1
                value = distributed.global_mean(loss.item(), weight)
                since_log.append(value)
                since_eval.append(value)
                stats.append(batch_stats)
                bar.update(1)
                step = position["step"]
                done = step >= cfg.total_steps
                if main and (step % cfg.log_every == 0 or done):
                    mean = float(np.mean(since_log))
                    since_log.clear()
                    self.writer.add_scalar("train/loss", mean, step)
                    bar.set_postfix(loss=f"{mean:.4f}")
                    self.log.debug("step %d loss %.4f", step, mean)
                stopping = distributed.any_process(bool(stop))  # every process stops at the same update
                evaluate_now = step % cfg.eval_every == 0 or done
                save_now = step % cfg.save_every == 0 or done or stopping
                if evaluate_now or save_now:
                    position["train_seconds"] += time.perf_counter() - started
                    if main and evaluate_now:
                        means = {k: float(np.mean([s[k] for s in stats if k in s]))
                                 for k in sorted({k for s in stats for k in s})}
                        evaluate(step, float(np.mean(since_eval)), means)
                        since_eval.clear()
                        stats.clear()
                    if main and save_now:
                        save()
                    distributed.barrier()
                    started = time.perf_counter()
                if stopping and not done:
                    bar.close()
                    if main:
                        self.writer.close()
                    signum = stop.signum or signal.SIGTERM  # a process told by another
                    self.log.warning("stopped by %s at step %d; the checkpoint is saved, run again to resume",
                                     signal_name(signum), step)
                    raise signals.Interrupted(signum, str(self.checkpoint))
                if done or step == regroup_at:
                    break
            else:
                position["epoch"] += 1
                position["batch"] = 0
        bar.close()
        if main:
            self.writer.close()
