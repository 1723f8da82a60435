"""The whole benchmark in one command: corpora, pre-training, every task on every upstream, leaderboard.

    python -m recipes.benchmark [--data demo|shared|CONFIG.yaml] [--expdir exp/benchmark-demo]
        [--upstreams fbank,apc_tiny] [--tasks ks,st] [--seeds N] [--jobs N] [-o section.key=value]

Stages, each timed (``<expdir>/timing.tsv``, printed at the end):

1. **corpora**: each task's corpus is built when it is a demo corpus and absent (TTS);
2. **pre-training**: each upstream of the config's ``pretrain`` section is pre-trained on
   ``pretrain.data`` into ``<expdir>/pretrain/<name>/`` unless it has a ``summary.json`` (or the
   config gives its ``checkpoint``: not the ``upstream.pt`` of a pre-training run that has not
   finished); ``{pretrain}`` in overrides names that folder's parent, so HuBERT's second iteration
   finds the first;
3. **downstream**: every task (a leaderboard track) × upstream × seed (× fold, where a task sets
   ``folds``; × learning rate, where it sets ``lrs``) trains into
   ``<expdir>/downstream/<track>-<upstream>-seed<N>[-fold<k>][-lr<rate>]/`` unless it has a
   ``results.json``; ASR heads run at 20-ms frames (``task.downsample``/``task.upsample`` from
   :func:`downstream.tasks.transcribed.frame_rate_settings`), PR heads at the upstream's frames,
   40-ms ones repeated to 20 ms.
   An upstream written ``random:NAME`` is the random-weights twin of the pre-trained ``NAME``: the
   same architecture and settings, its initial weights. ``--jobs N`` trains N experiments at once;
4. **leaderboard**: ``runs.csv``, ``leaderboard.csv``, ``leaderboard.md``, ``report.html`` in ``<expdir>``;
   where a track has a learning-rate grid, each upstream's rate with the best dev mean counts.

Idempotent: a second run trains nothing; an interrupted run resumes each experiment from its last
checkpoint. An experiment folder whose config differs from what the benchmark config now asks for is
an error naming the differences (delete the folder, or use another ``--expdir``), never reused.
``--data demo`` (default) uses the toolkit's own corpora (``recipes/benchmark/demo.yaml``),
``--data shared`` the real recordings in ``../shared/data`` (``recipes/benchmark/shared.yaml``);
any other value is a benchmark YAML of the same shape pointing at your corpora.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml

from core import distributed, runs, signals
from core.cli import run_main
from core.config import ConfigError, load_yaml, parse_overrides
from core.logs import setup_console_logging
from downstream.config import ExperimentConfig
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks import get_task
from downstream.tasks.transcribed import frame_rate_settings
from leaderboard.cli import write_outputs
from upstream import build_upstream
from upstream.pretrain import Pretrainer, resolve_pretrain_config
from upstream.registry import checkpoint_settings, takes_model_ids

HERE = Path(__file__).parent
PRESETS = {"demo": HERE / "demo.yaml", "shared": HERE / "shared.yaml"}
BASELINES = ("fbank", "fbank_global", "fbank_raw")
"""Upstreams without weights: named directly in ``upstreams``, nothing to pre-train."""
TWIN_PREFIX = "random:"
"""``random:NAME`` in ``upstreams``: the random-weights twin of the pre-trained upstream NAME."""
FRAME_RATE_TASKS = ("asr", "pr")
"""Tasks whose heads run at 20-ms frames or faster (:func:`downstream.tasks.transcribed.frame_rate_settings`): ASR
concatenates 10-ms frames to 20 ms, PR keeps them (SUPERB's linear probe sees the upstream's own
frames); both repeat 40-ms frames."""
FOLD_KEYS = {"ks": "speaker_folds", "pr": "folds", "er": "folds"}
"""The task setting that re-splits a corpus into folds, per task that has one."""


@dataclass
class PretrainJob:
    """One upstream to pre-train (or, with ``checkpoint``, to take as it is)."""

    upstream: str
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    checkpoint: str = ""


@dataclass
class TaskJob:
    """One leaderboard track: a task with its config and overrides."""

    task: str
    config: str
    overrides: list[str] = field(default_factory=list)
    folds: int = 0
    """Run every fold of a re-split corpus (keyword spotting: ``task.speaker_folds``; phoneme recognition and
    emotion recognition: ``task.folds``)."""
    lrs: list[float] = field(default_factory=list)
    """Learning-rate grid: each (upstream, seed, fold) trains once per rate and the leaderboard keeps,
    per upstream, the rate with the best dev mean. Empty: the task config's ``train.lr`` alone."""


@dataclass
class BenchmarkConfig:
    pretrain_data: list[str]
    pretrain: dict[str, PretrainJob]
    upstreams: list[str]
    tasks: dict[str, TaskJob]
    seeds: int = 1
    jobs: int = 1
    """Downstream experiments trained at once (one thread each); ``--jobs`` overrides."""


def load_benchmark(path: Path) -> BenchmarkConfig:
    """Read and check a benchmark YAML; ConfigError names the file and the bad key."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    unknown = set(raw) - {"pretrain", "upstreams", "tasks", "seeds", "jobs"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: pretrain, upstreams, tasks, seeds, jobs")
    pretrain = raw.get("pretrain") or {}
    pretrain_jobs = {name: _job(PretrainJob, spec, f"{where}: pretrain.upstreams.{name}")
                     for name, spec in (pretrain.get("upstreams") or {}).items()}
    tasks = {name: _job(TaskJob, spec, f"{where}: tasks.{name}") for name, spec in (raw.get("tasks") or {}).items()}
    upstreams = list(raw.get("upstreams") or [])
    for name in upstreams:
        if name.removeprefix(TWIN_PREFIX) not in pretrain_jobs and name not in BASELINES:
            raise ConfigError(f"{where}: upstream {name!r} is neither a baseline ({', '.join(BASELINES)}) "
                              f"nor in pretrain.upstreams ({', '.join(pretrain_jobs) or 'empty'}), "
                              "nor random:NAME of one of those")
    twins = [pretrain_jobs[n.removeprefix(TWIN_PREFIX)].upstream for n in upstreams if n.startswith(TWIN_PREFIX)]
    if len(twins) != len(set(twins)):
        raise ConfigError(f"{where}: two random twins of one architecture ({sorted(twins)}) would share the "
                          "leaderboard row '<architecture>:random'")
    for name, job in tasks.items():
        if job.folds and job.task not in FOLD_KEYS:
            raise ConfigError(f"{where}: tasks.{name}.folds: only {', '.join(FOLD_KEYS)} re-split into folds")
        if any(not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0 for lr in job.lrs):
            raise ConfigError(f"{where}: tasks.{name}.lrs must be positive numbers, got {job.lrs}")
    if not upstreams or not tasks:
        raise ConfigError(f"{where}: needs at least one upstream and one task")
    return BenchmarkConfig(list(pretrain.get("data") or []), pretrain_jobs, upstreams, tasks, int(raw.get("seeds", 1)),
                           int(raw.get("jobs", 1)))


def _job(cls, spec: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(spec, dict) or set(spec) - names:
        raise ConfigError(f"{where}: expected keys among {sorted(names)}, got {spec!r}")
    try:
        return cls(**spec)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


class Timer:
    """Wall time per stage, appended to ``timing.tsv`` as each stage ends; the printed clock is the
    wall time since the benchmark started (stages of parallel jobs overlap)."""

    def __init__(self, path: Path):
        self.path, self.rows, self.start = path, [], time.perf_counter()

    def run(self, stage: str, action, done_already: bool):
        t0 = time.perf_counter()
        result = None if done_already else action()
        self.record(stage, time.perf_counter() - t0, done_already)
        return result

    def record(self, stage: str, seconds: float, reused: bool) -> None:
        self.rows.append({"stage": stage, "seconds": round(seconds, 1), "status": "reused" if reused else "ran"})
        pd.DataFrame(self.rows).to_csv(self.path, sep="\t", index=False)
        print(f"[{(time.perf_counter() - self.start) / 60:6.1f} min] "
              f"{stage}: {'reused' if reused else f'{seconds:.1f} s'}", flush=True)


@dataclass
class Run:
    """One downstream experiment of the benchmark, its config already checked against its folder."""

    stage: str
    folder: Path
    spec: RunSpec
    cfg: ExperimentConfig

    @property
    def done(self) -> bool:
        return (self.folder / runs.RESULTS_FILE).is_file()


def run_benchmark(bench: BenchmarkConfig, expdir: Path, extra: list[str], upstreams: list[str], tracks: list[str],
                  jobs: int = 1) -> str:
    """Run every stage for ``upstreams`` × ``tracks``; returns the leaderboard Markdown. ``jobs`` > 1
    trains that many downstream experiments at once, each process on one thread."""
    expdir.mkdir(parents=True, exist_ok=True)
    timer = Timer(expdir / "timing.tsv")
    overrides = {track: [*bench.tasks[track].overrides, *extra] for track in tracks}
    for track in tracks:
        job = bench.tasks[track]
        task_cfg = resolve_config(RunSpec(job.task, "fbank"), load_yaml(job.config),
                                  parse_overrides(overrides[track])).task
        timer.run(f"corpus {track}", get_task(job.task)(task_cfg, expdir).build_corpus, done_already=False)
    checkpoints = _pretrain_all(bench, upstreams, expdir / "pretrain", timer)
    groups = [group for track in tracks
              for group in _track_runs(bench, track, overrides[track], upstreams, checkpoints, expdir / "downstream")]
    _train_all(groups, timer, jobs)
    return timer.run("leaderboard", lambda: write_outputs(expdir / "downstream", expdir, title=f"Benchmark: {expdir}"),
                     done_already=False)


def _train_all(groups: list[list[Run]], timer: Timer, jobs: int) -> None:
    """Train every run not done yet. A group (one track and upstream: its seeds, folds and rates)
    runs in order in one process, so its first run extracts the shared feature cache for the rest."""
    if jobs <= 1:
        for group in groups:
            for run in group:
                timer.run(run.stage, Experiment(run.folder, run.spec, run.cfg).train, done_already=run.done)
        return
    for group in groups:
        for run in (r for r in group if r.done):
            timer.record(run.stage, 0.0, reused=True)
    pending = [[r for r in group if not r.done] for group in groups]
    os.environ["TQDM_DISABLE"] = "1"  # progress bars of parallel workers would interleave; the timer reports
    context = multiprocessing.get_context("spawn")  # no fork of a process whose thread pools already run
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                               initargs=(str(distributed.device()),))
    try:
        futures = {pool.submit(_train_group, group) for group in pending if group}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                for stage, seconds in future.result():  # a failed run raises here, naming its error
                    timer.record(stage, seconds, reused=False)
    except signals.Interrupted:  # pass the stop on: each worker saves its run's checkpoint and ends
        for process in list(pool._processes.values()):  # noqa: SLF001  (the executor's workers: no public handle)
            process.terminate()
        raise
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure: no new group starts, running ones finish
        os.environ.pop("TQDM_DISABLE", None)


def _worker_init(device: str) -> None:
    os.setpgrp()  # out of the terminal's process group: a Ctrl-C reaches the parent, which passes one SIGTERM on
    signals.handle_stop_signals()
    torch.set_num_threads(1)
    setup_console_logging(logging.WARNING)
    distributed.init(device)


def _train_group(runs: list[Run]) -> list[tuple[str, float]]:
    out = []
    for run in runs:
        t0 = time.perf_counter()
        Experiment(run.folder, run.spec, run.cfg).train()  # a stop (Interrupted) reaches the parent, which exits
        out.append((run.stage, time.perf_counter() - t0))
    return out


def _pretrain_all(bench: BenchmarkConfig, upstreams: list[str], root: Path, timer: Timer) -> dict[str, str | None]:
    """Pre-train (or reuse) every upstream asked for and the teachers they name; upstream -> checkpoint
    (None: FBANK)."""
    checkpoints: dict[str, str | None] = {name: None for name in upstreams if name in BASELINES}
    pretrained = {u.removeprefix(TWIN_PREFIX) for u in upstreams if u not in BASELINES}
    teachers = {name for u in pretrained for o in bench.pretrain[u].overrides
                for name in bench.pretrain if f"{{pretrain}}/{name}/" in o}
    for name, job in bench.pretrain.items():  # in the config's order: a teacher comes before its student
        if name not in pretrained and name not in teachers:
            continue
        if job.checkpoint:
            path = Path(job.checkpoint)
            if not path.exists() and not takes_model_ids(job.upstream):
                raise FileNotFoundError(f"pretrain.upstreams.{name}.checkpoint not found: {job.checkpoint}")
            if runs.unfinished_run_checkpoint(path):
                raise ConfigError(f"pretrain.upstreams.{name}.checkpoint: {job.checkpoint} belongs to a pre-training "
                                  f"run that has not finished (no summary.json in {path.parent}), and its "
                                  "upstream.pt is rewritten at every save: results trained on it would be kept "
                                  "after it changes. Wait for the run to finish, or copy the file elsewhere to use "
                                  "this state of the model")
            checkpoints[name] = str(path.resolve()) if path.exists() else job.checkpoint  # else a model id
            continue
        folder = root / name
        pretrainer = _pretrainer(job, folder, bench.pretrain_data, root)  # a changed config is an error here
        timer.run(f"pretrain {name}", pretrainer.run, done_already=runs.pretraining_finished(folder))
        checkpoints[name] = str((folder / runs.UPSTREAM_FILE).resolve())
    return checkpoints


def _track_runs(bench: BenchmarkConfig, track: str, overrides: list[str], upstreams: list[str],
                checkpoints: dict[str, str | None], root: Path) -> list[list[Run]]:
    """One track's experiments, one group per upstream: every seed × fold × learning rate. Each
    experiment folder is created (or checked: a changed config is an error here)."""
    job = bench.tasks[track]
    folds = [(f"-fold{k}", [f"task.{FOLD_KEYS[job.task]}={job.folds}", f"task.fold={k}"]) for k in range(job.folds)] \
        if job.folds else [("", [])]
    rates = [(f"-lr{lr:g}", [f"train.lr={lr}"]) for lr in job.lrs] or [("", [])]
    groups = []
    for name in upstreams:
        spec, settings = _upstream_spec(bench, job.task, name, checkpoints)
        frame_rate = []
        if job.task in FRAME_RATE_TASKS:
            frame_samples = build_upstream(spec.upstream, checkpoints[name.removeprefix(TWIN_PREFIX)]).downsample_rate
            frame_rate = [f"task.{k}={v}" for k, v in frame_rate_settings(frame_samples, job.task == "asr").items()]
        group = []
        for seed in range(1337, 1337 + bench.seeds):
            for fold_suffix, fold_overrides in folds:
                for lr_suffix, lr_overrides in rates:
                    exp_name = f"{track}-{name.replace(':', '-')}-seed{seed}{fold_suffix}{lr_suffix}"
                    cfg = resolve_config(spec,
                                         {**load_yaml(job.config), **({"upstream": settings} if settings else {})},
                                         parse_overrides([*overrides, *frame_rate, *fold_overrides, *lr_overrides,
                                                          f"train.seed={seed}"]))
                    Experiment.create(root, exp_name, spec, cfg)
                    stage = f"{track} {name} seed {seed}{fold_suffix.replace('-', ' ')}{lr_suffix.replace('-', ' ')}"
                    group.append(Run(stage, root / exp_name, spec, cfg))
        groups.append(group)
    return groups


def _upstream_spec(bench: BenchmarkConfig, task: str, name: str,
                   checkpoints: dict[str, str | None]) -> tuple[RunSpec, dict]:
    """The run spec of a benchmark upstream and, for a random twin, the settings of its pre-trained sibling."""
    if name in BASELINES:
        return RunSpec(task, name, None), {}
    pretrained = name.removeprefix(TWIN_PREFIX)
    arch, ckpt = bench.pretrain[pretrained].upstream, checkpoints[pretrained]
    if name.startswith(TWIN_PREFIX):
        return RunSpec(task, arch, None), checkpoint_settings(ckpt, arch)
    return RunSpec(task, arch, ckpt), {}


def _pretrainer(job: PretrainJob, folder: Path, data: list[str], pretrain_root: Path) -> Pretrainer:
    cfg = resolve_pretrain_config(load_yaml(job.config) if job.config else {},
                                  [o.replace("{pretrain}", str(pretrain_root)) for o in job.overrides])
    return Pretrainer(folder, job.upstream, cfg, data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.benchmark", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--data", default="demo", help="demo, shared, or a benchmark YAML (default: demo)")
    p.add_argument("--expdir", type=Path, default=None, help="output folder (default: exp/benchmark-<data>)")
    p.add_argument("--upstreams", default="", help="comma-separated subset of the config's upstreams")
    p.add_argument("--tasks", default="", help="comma-separated subset of the config's tasks (tracks)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per experiment (default: the config's)")
    p.add_argument("-o", "--override", action="append", default=[],
                   help="section.key=value for every downstream experiment")
    p.add_argument("--jobs", type=int, default=None,
                   help="downstream experiments trained at once, one thread each (default: the config's jobs, else 1: "
                        "one at a time, all threads)")
    distributed.add_device_option(p)
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), log_level=logging.WARNING,
                    resume_hint="run the same command again to go on (finished runs are kept, stopped ones resume)")


def _run(args: argparse.Namespace) -> int:
    """The benchmark ``args`` ask for; print the leaderboard and the stage times."""
    started = time.perf_counter()
    config = PRESETS.get(args.data, Path(args.data))
    distributed.init(args.device)
    if not config.is_file():
        raise ConfigError(f"--data {args.data!r}: neither demo, shared nor a benchmark YAML file")
    bench = load_benchmark(config)
    if args.seeds is not None:
        bench.seeds = args.seeds
    upstreams = _subset(args.upstreams, bench.upstreams, "upstream")
    tracks = _subset(args.tasks, list(bench.tasks), "task")
    expdir = args.expdir or Path("exp") / f"benchmark-{args.data if args.data in PRESETS else config.stem}"
    markdown = run_benchmark(bench, expdir, args.override, upstreams, tracks, args.jobs or bench.jobs)
    print(markdown)
    print(stage_times(expdir / "timing.tsv"))
    print(f"wall time {(time.perf_counter() - started) / 60:.1f} min -> {expdir}/leaderboard.csv, leaderboard.md, "
          f"report.html; stage times in {expdir}/timing.tsv")
    return 0


def stage_times(timing_tsv: Path) -> str:
    """Minutes per stage kind (corpus, pretrain, each track, leaderboard) of the last run, as Markdown.
    With parallel jobs the stages of a kind overlap: their minutes add up to more than the wall time."""
    timing = pd.read_csv(timing_tsv, sep="\t")
    kind = timing["stage"].str.split(" ").str[0]
    table = timing.groupby(kind, sort=False).agg(minutes=("seconds", lambda x: round(x.sum() / 60, 2)),
                                                 stages=("stage", "size"),
                                                 reused=("status", lambda x: int((x == "reused").sum())))
    table.loc["sum of stages"] = [round(timing["seconds"].sum() / 60, 2), len(timing),
                                  int((timing["status"] == "reused").sum())]
    return table.reset_index(names="stage").to_markdown(index=False)


def _subset(chosen: str, available: list[str], what: str) -> list[str]:
    names = [n for n in chosen.split(",") if n] or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; the config has {', '.join(available)}")
    return names
