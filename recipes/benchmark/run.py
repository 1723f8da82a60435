"""The whole benchmark in one command: corpora, pre-training, every task on every upstream, leaderboard.

    python -m recipes.benchmark [--data demo|shared|CONFIG.yaml] [--expdir exp/benchmark-demo]
        [--upstreams fbank,apc_tiny] [--tasks ks,st] [--seeds N] [--jobs N] [-o section.key=value]
        [--launcher local|slurm|submitit-local [--partition P --time MIN --gpus-per-node N ...] [--dry-run]]
        [--collect]

Stages, each timed (``<expdir>/timing.tsv``, printed at the end):

1. **corpora**: each task's corpus is built when it is a demo corpus and absent (TTS); a training-free
   track (``qbe``) has no Task to build and searches the corpus its config names;
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
   same architecture and settings, its initial weights. ``--jobs N`` trains N experiments at once.
   A training-free track (task ``qbe``, :data:`TRAINING_FREE`) runs its search once per upstream × seed
   into ``<track>-<upstream>-seed<N>/`` (no folds, no learning rates);
4. **leaderboard**: ``runs.csv``, ``leaderboard.csv``, ``leaderboard.md``, ``report.html`` in ``<expdir>``;
   where a track has a learning-rate grid, each upstream's rate with the best dev mean counts.

Idempotent: a second run trains nothing; an interrupted run resumes each experiment from its last
checkpoint. An experiment folder whose config differs from what the benchmark config now asks for is
an error naming the differences (delete the folder, or use another ``--expdir``), never reused.
``--launcher slurm`` submits the pre-training runs and one job per (track, upstream) through submitit
(:mod:`core.launcher`; ``--dry-run`` prints the first job's sbatch script),
``--launcher submitit-local`` runs the same jobs as local subprocesses; ``--collect`` writes the
leaderboard from whatever has finished and lists the runs still missing.
``--data demo`` (default) uses the toolkit's own corpora (``recipes/benchmark/demo.yaml``),
``--data shared`` the real recordings in ``../shared/data`` (``recipes/benchmark/shared.yaml``);
any other value is a benchmark YAML of the same shape pointing at your corpora.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml

from core import distributed, launcher as launchers, runs, signals
from core.cli import run_main
from core.config import ConfigError, config_file, load_yaml, parse_overrides
from core.launcher import (
    Job,
    JobsFailed,
    LauncherConfig,
    Stage,
    add_launcher_options,
    launcher_from_args,
    load_launcher,
)
from core.logs import setup_console_logging
from downstream.alignment import align_to_file, aligner_dev_per
from downstream.cli import TRAINING_FREE
from downstream.config import ExperimentConfig
from downstream.qbe.run import (
    LIBRISPEECH,
    TASK as QBE_TASK,
    QbEConfig,
    claim_qbe_folder,
    resolve_qbe_config,
    run_qbe,
)
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks import get_task
from downstream.tasks.transcribed import frame_rate_settings
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
QBE_KEYS = {f.name for f in dataclasses.fields(QbEConfig)}
"""Top-level keys of a training-free track's config: a command-line ``-o`` applies to such a track
when its first key is one of these (``upstream.preset=tiny``, ``document_limit=100``)."""


@dataclass
class PretrainJob:
    """One upstream to pre-train (or, with ``checkpoint``, to take as it is)."""

    upstream: str
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    checkpoint: str = ""


ALIGN_SPLITS = ("train", "dev", "test")
"""The splits of a PR experiment an ``align`` entry can align."""


@dataclass
class AlignJob:
    """How a QbE track gets the phone alignments of its query split: a phoneme-recognition probe on
    ``upstream`` (a baseline or a pre-trained upstream of the config) trained by ``config`` (a PR YAML)
    with ``overrides``, once, into ``<expdir>/align/<track>_align-<upstream>-seed1337/``, then its
    CTC forced alignment of ``split`` (:func:`downstream.alignment.align_to_file`) written there as
    ``alignments-<split>.tsv`` and given to every run of the track as ``alignments``."""

    config: str
    upstream: str = "fbank"
    overrides: list[str] = field(default_factory=list)
    split: str = "dev"


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
    align: AlignJob | None = None
    """A QbE track's alignments, made by the benchmark (:class:`AlignJob`), instead of a file its config names."""
    seeds: int = 0
    """Seeds of this track (0: the benchmark's ``seeds``); ``--seeds`` on the command line sets every track's."""


@dataclass
class BenchmarkConfig:
    pretrain_data: list[str]
    pretrain: dict[str, PretrainJob]
    upstreams: list[str]
    tasks: dict[str, TaskJob]
    seeds: int = 1
    jobs: int = 1
    """Downstream experiments trained at once (one thread each); ``--jobs`` overrides."""
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """Slurm settings of ``--launcher slurm`` (the YAML's ``launcher:`` section; flags override)."""


def load_benchmark(path: Path) -> BenchmarkConfig:
    """Read and check a benchmark YAML; ConfigError names the file and the bad key."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    unknown = set(raw) - {"pretrain", "upstreams", "tasks", "seeds", "jobs", "launcher"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: pretrain, upstreams, tasks, seeds, jobs, "
                          "launcher")
    pretrain = raw.get("pretrain") or {}
    pretrain_jobs = {name: _job(PretrainJob, spec, f"{where}: pretrain.upstreams.{name}")
                     for name, spec in (pretrain.get("upstreams") or {}).items()}
    tasks = {name: _task_job(spec, f"{where}: tasks.{name}") for name, spec in (raw.get("tasks") or {}).items()}
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
        if job.task in TRAINING_FREE and (job.folds or job.lrs):
            raise ConfigError(f"{where}: tasks.{name}: {job.task} is training-free (no head): no folds, no lrs")
        if job.align is not None:
            _check_align(job, pretrain_jobs, f"{where}: tasks.{name}.align")
        if job.folds and job.task not in FOLD_KEYS:
            raise ConfigError(f"{where}: tasks.{name}.folds: only {', '.join(FOLD_KEYS)} re-split into folds")
        if not isinstance(job.seeds, int) or isinstance(job.seeds, bool) or job.seeds < 0:
            raise ConfigError(f"{where}: tasks.{name}.seeds must be a whole number >= 1 (0: the benchmark's), "
                              f"got {job.seeds!r}")
        if any(not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0 for lr in job.lrs):
            raise ConfigError(f"{where}: tasks.{name}.lrs must be positive numbers, got {job.lrs}")
    if not upstreams or not tasks:
        raise ConfigError(f"{where}: needs at least one upstream and one task")
    return BenchmarkConfig(list(pretrain.get("data") or []), pretrain_jobs, upstreams, tasks, int(raw.get("seeds", 1)),
                           int(raw.get("jobs", 1)), load_launcher(raw.get("launcher"), f"{where}: launcher"))


def _task_job(spec: dict, where: str) -> TaskJob:
    if isinstance(spec, dict) and spec.get("align") is not None:
        spec = {**spec, "align": _job(AlignJob, spec["align"], f"{where}.align")}
    return _job(TaskJob, spec, where)


def _check_align(job: TaskJob, pretrain_jobs: dict[str, PretrainJob], where: str) -> None:
    """An ``align`` entry belongs to a QbE track whose config names no alignments, and names an upstream
    the config can build (a baseline or one of ``pretrain.upstreams``) and an existing PR config."""
    if job.task != QBE_TASK:
        raise ConfigError(f"{where}: only a {QBE_TASK} track takes its alignments from the benchmark")
    qbe = resolve_qbe_config(load_yaml(job.config), parse_overrides(job.overrides))
    if qbe.corpus != LIBRISPEECH:
        raise ConfigError(f"{where}: the {qbe.corpus} corpus brings its own queries; only {LIBRISPEECH} is aligned")
    named = [k for k in ("alignments", "word_alignments") if getattr(qbe, k)]
    if named:
        raise ConfigError(f"{where}: {job.config} already names {named[0]}; give either the file or align")
    if job.align.upstream not in BASELINES and job.align.upstream not in pretrain_jobs:
        raise ConfigError(f"{where}.upstream: {job.align.upstream!r} is neither a baseline ({', '.join(BASELINES)}) "
                          f"nor in pretrain.upstreams")
    config_file(job.align.config)  # a ConfigError naming it when it is neither a file nor a recipe
    if job.align.split not in ALIGN_SPLITS:
        raise ConfigError(f"{where}.split: {job.align.split!r}; a PR experiment's splits are {', '.join(ALIGN_SPLITS)}")


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
    """One experiment of the benchmark, its config already checked against its folder: ``action()``
    makes its results (a downstream experiment's training, or a training-free track's search)."""

    stage: str
    folder: Path
    action: Callable[[], dict]

    @property
    def done(self) -> bool:
        return (self.folder / runs.RESULTS_FILE).is_file()


def run_benchmark(bench: BenchmarkConfig, expdir: Path, extra: list[str], upstreams: list[str], tracks: list[str],
                  jobs: int = 1) -> str:
    """Run every stage for ``upstreams`` × ``tracks``; returns the leaderboard Markdown. ``jobs`` > 1
    trains that many downstream experiments at once, each process on one thread."""
    expdir.mkdir(parents=True, exist_ok=True)
    timer = Timer(expdir / "timing.tsv")
    overrides = {track: _track_overrides(bench, track, extra) for track in tracks}
    _build_corpora(bench, tracks, overrides, expdir, timer)
    checkpoints, to_pretrain = _pretrain_plan(bench, _with_aligners(bench, tracks, upstreams), expdir / "pretrain")
    for name, job, folder, finished in to_pretrain:  # in the config's order: a teacher comes before its student
        pretrainer = _pretrainer(job, folder, bench.pretrain_data, expdir / "pretrain")  # a changed config: error
        timer.run(f"pretrain {name}", pretrainer.run, done_already=finished)
    _align_tracks(bench, tracks, overrides, checkpoints, expdir, timer)
    groups = [group for track in tracks
              for group in _track_runs(bench, track, overrides[track], upstreams, checkpoints, expdir / "downstream")]
    _train_all(groups, timer, jobs)
    return timer.run("leaderboard", lambda: _write_leaderboard(expdir), done_already=False)


def _with_aligners(bench: BenchmarkConfig, tracks: list[str], upstreams: list[str]) -> list[str]:
    """``upstreams`` and the upstreams the tracks' alignment probes use (their checkpoints are planned too)."""
    aligners = [bench.tasks[t].align.upstream for t in tracks if bench.tasks[t].align is not None]
    return list(dict.fromkeys([*upstreams, *aligners]))


def _align_tracks(bench: BenchmarkConfig, tracks: list[str], overrides: dict[str, list[str]],
                  checkpoints: dict[str, str | None], expdir: Path, timer: Timer, *, make: bool = True) -> None:
    """The alignment stage of every track with ``align`` (:class:`AlignJob`): train its PR probe and align
    its split unless done, then put ``alignments=<the TSV>`` first in the track's overrides (a command
    line ``-o alignments=`` still wins). ``make=False``: only the override (``--dry-run``)."""
    for track in tracks:
        align = bench.tasks[track].align
        if align is None:
            continue
        name = f"{track}_align"
        probe = dataclasses.replace(bench, tasks={name: TaskJob("pr", align.config, list(align.overrides))}, seeds=1)
        out = expdir / "align" / _experiment_name(name, align.upstream, "-seed1337") / f"alignments-{align.split}.tsv"
        if make:
            [[run]] = _track_runs(probe, name, list(align.overrides), [align.upstream], checkpoints, expdir / "align")
            timer.run(f"align {track}: train {run.folder.name}", run.action, done_already=run.done)
            exp = Experiment.load(run.folder.parent, run.folder.name)
            timer.run(f"align {track}: {align.split} of {run.folder.name}",
                      functools.partial(align_to_file, exp, [align.split], out), done_already=out.is_file())
            per = aligner_dev_per(exp)
            print(f"alignments of {track}: {out} (aligner dev PER {per if per is None else round(per, 1)})", flush=True)
        overrides[track] = [f"alignments={out.resolve()}", *overrides[track]]


def _write_leaderboard(expdir: Path) -> str:
    from leaderboard.cli import write_outputs  # noqa: PLC0415  (matplotlib: not in every worker and job)

    return write_outputs(expdir / "downstream", expdir, title=f"Benchmark: {expdir}")


def _track_overrides(bench: BenchmarkConfig, track: str, extra: list[str]) -> list[str]:
    """The track's overrides, then the command line's ``-o``; a training-free track takes only those
    ``-o`` whose first key is one of its config's (:data:`QBE_KEYS`)."""
    job = bench.tasks[track]
    if job.task in TRAINING_FREE:
        extra = [o for o in extra if o.partition("=")[0].split(".")[0] in QBE_KEYS]
    return [*job.overrides, *extra]


def _build_corpora(bench: BenchmarkConfig, tracks: list[str], overrides: dict[str, list[str]], expdir: Path,
                   timer: Timer) -> None:
    for track in tracks:
        job = bench.tasks[track]
        if job.task in TRAINING_FREE:  # no Task: the search reads the corpus its config names
            continue
        task_cfg = resolve_config(RunSpec(job.task, "fbank"), load_yaml(job.config),
                                  parse_overrides(overrides[track])).task
        timer.run(f"corpus {track}", get_task(job.task)(task_cfg, expdir).build_corpus, done_already=False)


def _train_all(groups: list[list[Run]], timer: Timer, jobs: int) -> None:
    """Train every run not done yet. A group (one track and upstream: its seeds, folds and rates)
    runs in order in one process, so its first run extracts the shared feature cache for the rest."""
    if jobs <= 1:
        for group in groups:
            for run in group:
                timer.run(run.stage, run.action, done_already=run.done)
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
                for stage, seconds, _ in future.result():  # a failed run raises here, naming its error
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


def _train_group(runs: list[Run]) -> list[Stage]:
    """Every run of a group not done yet, in order; (stage, seconds, reused) of each."""
    out = []
    for run in runs:
        if run.done:
            out.append((run.stage, 0.0, True))
            continue
        t0 = time.perf_counter()
        run.action()  # a stop (Interrupted) reaches the parent, which exits
        out.append((run.stage, time.perf_counter() - t0, False))
    return out


def _train_experiment(folder: Path, spec: RunSpec, cfg: ExperimentConfig) -> dict:
    return Experiment(folder, spec, cfg).train()


def _pretrain_plan(bench: BenchmarkConfig, upstreams: list[str], root: Path, check: bool = True
                   ) -> tuple[dict[str, str | None], list[tuple[str, PretrainJob, Path, bool]]]:
    """Where every upstream asked for finds its checkpoint (None: FBANK; a pre-trained one: the
    ``upstream.pt`` its run leaves), and the pre-training runs it takes, the teachers they name
    included, in the config's order (a teacher before its student): (name, job, folder, whether it
    has finished). ``check=False`` checks no ``checkpoint`` entry: for a plan that changes nothing
    (``--dry-run``)."""
    checkpoints: dict[str, str | None] = {name: None for name in upstreams if name in BASELINES}
    pretrained = {u.removeprefix(TWIN_PREFIX) for u in upstreams if u not in BASELINES}
    teachers = {name for u in pretrained for name in _teachers(bench, bench.pretrain[u])}
    to_pretrain = []
    for name, job in bench.pretrain.items():  # in the config's order: a teacher comes before its student
        if name not in pretrained and name not in teachers:
            continue
        if job.checkpoint:
            path = Path(job.checkpoint)
            if check and not path.exists() and not takes_model_ids(job.upstream):
                raise FileNotFoundError(f"pretrain.upstreams.{name}.checkpoint not found: {job.checkpoint}")
            if check and runs.unfinished_run_checkpoint(path):
                raise ConfigError(f"pretrain.upstreams.{name}.checkpoint: {job.checkpoint} belongs to a pre-training "
                                  f"run that has not finished (no summary.json in {path.parent}), and its "
                                  "upstream.pt is rewritten at every save: results trained on it would be kept "
                                  "after it changes. Wait for the run to finish, or copy the file elsewhere to use "
                                  "this state of the model")
            checkpoints[name] = str(path.resolve()) if path.exists() else job.checkpoint  # else a model id
            continue
        folder = root / name
        to_pretrain.append((name, job, folder, runs.pretraining_finished(folder)))
        checkpoints[name] = str((folder / runs.UPSTREAM_FILE).resolve())
    return checkpoints, to_pretrain


def _teachers(bench: BenchmarkConfig, job: PretrainJob) -> list[str]:
    """The pre-training runs whose folders ``job``'s overrides name (``{pretrain}/NAME/``)."""
    return [name for name in bench.pretrain if any(f"{{pretrain}}/{name}/" in o for o in job.overrides)]


def _variants(bench: BenchmarkConfig, track: str) -> list[tuple[str, str, list[str]]]:
    """(folder suffix, stage suffix, overrides) of every run of one upstream on ``track``: seed × fold ×
    learning rate (a training-free track: seeds alone)."""
    job = bench.tasks[track]
    folds = [(f"-fold{k}", [f"task.{FOLD_KEYS[job.task]}={job.folds}", f"task.fold={k}"]) for k in range(job.folds)] \
        if job.folds else [("", [])]
    rates = [(f"-lr{lr:g}", [f"train.lr={lr}"]) for lr in job.lrs] or [("", [])]
    seed_key = "seed" if job.task in TRAINING_FREE else "train.seed"
    return [(f"-seed{seed}{fold_suffix}{lr_suffix}",
             f" seed {seed}{fold_suffix.replace('-', ' ')}{lr_suffix.replace('-', ' ')}",
             [*fold_overrides, *lr_overrides, f"{seed_key}={seed}"])
            for seed in range(1337, 1337 + (job.seeds or bench.seeds))
            for fold_suffix, fold_overrides in folds
            for lr_suffix, lr_overrides in rates]


def _experiment_name(track: str, upstream: str, suffix: str) -> str:
    return f"{track}-{upstream.replace(':', '-')}{suffix}"


def expected_runs(bench: BenchmarkConfig, tracks: list[str], upstreams: list[str]) -> list[tuple[str, str]]:
    """(stage, experiment folder name) of every downstream run the benchmark asks for."""
    return [(f"{track} {name}{stage_suffix}", _experiment_name(track, name, suffix))
            for track in tracks for name in upstreams for suffix, stage_suffix, _ in _variants(bench, track)]


def _track_runs(bench: BenchmarkConfig, track: str, overrides: list[str], upstreams: list[str],
                checkpoints: dict[str, str | None], root: Path) -> list[list[Run]]:
    """One track's experiments, one group per upstream: every seed × fold × learning rate. Each
    experiment folder is created (or checked: a changed config is an error here)."""
    job = bench.tasks[track]
    groups = []
    for name in upstreams:
        spec, settings = _upstream_spec(bench, job.task, name, checkpoints)
        upstream_settings = {"upstream": settings} if settings else {}
        frame_rate = []
        if job.task in FRAME_RATE_TASKS:
            frame_samples = build_upstream(spec.upstream, checkpoints[name.removeprefix(TWIN_PREFIX)]).downsample_rate
            frame_rate = [f"task.{k}={v}" for k, v in frame_rate_settings(frame_samples, job.task == "asr").items()]
        group = []
        for suffix, stage_suffix, variant in _variants(bench, track):
            exp_name = _experiment_name(track, name, suffix)
            folder = root / exp_name
            if job.task == QBE_TASK:
                cfg = resolve_qbe_config(load_yaml(job.config), upstream_settings,
                                         parse_overrides([*overrides, *variant]))
                # as run_qbe claims its folder: a changed config is an error now, not once it runs
                claim_qbe_folder(folder, spec.upstream, spec.upstream_ckpt, cfg)
                action = functools.partial(run_qbe, folder, spec.upstream, spec.upstream_ckpt, cfg)
            elif job.task in TRAINING_FREE:
                raise ConfigError(f"tasks.{track}: the benchmark does not run the training-free task {job.task!r}")
            else:
                cfg = resolve_config(spec, {**load_yaml(job.config), **upstream_settings},
                                     parse_overrides([*overrides, *frame_rate, *variant]))
                Experiment.create(root, exp_name, spec, cfg)
                action = functools.partial(_train_experiment, folder, spec, cfg)
            group.append(Run(f"{track} {name}{stage_suffix}", folder, action))
        groups.append(group)
    return groups


# ---------------------------------------------------------------- through submitit (core/launcher.py)


def launch_benchmark(bench: BenchmarkConfig, expdir: Path, extra: list[str], upstreams: list[str], tracks: list[str],
                     kind: str, *, device: str = "auto", jobs: int = 1, dry_run: bool = False,
                     poll_seconds: float | None = None) -> str | None:
    """The benchmark as submitit jobs (``kind``: ``slurm`` or ``submitit-local``): corpora here, then one
    job per pre-training run and one per (track, upstream) group, waited for; returns the leaderboard's
    Markdown (None when nothing has finished). ``dry_run``: print the first job's sbatch script and the
    list of jobs, change nothing.

    A group whose upstream is pre-trained by a job of this launch resolves its runs (frame rate, a
    twin's settings: both read the checkpoint) when it starts; the others are resolved here, so a
    changed config is an error before anything is submitted.
    """
    cfg = bench.launcher
    jobs_folder = Path(cfg.folder) if cfg.folder else expdir / "slurm" / "%j"
    overrides = {track: _track_overrides(bench, track, extra) for track in tracks}
    if dry_run:
        checkpoints, to_pretrain = _pretrain_plan(bench, _with_aligners(bench, tracks, upstreams), expdir / "pretrain",
                                                  check=False)
        _align_tracks(bench, tracks, overrides, checkpoints, expdir, Timer(os.devnull), make=False)
        plan = _launch_plan(bench, tracks, upstreams, overrides, checkpoints, to_pretrain, expdir, resolve=False)
        print(launchers.dry_run(plan, cfg, jobs_folder, expdir.name))
        return None
    launchers.check_available(kind)  # before any corpus is built or folder claimed
    expdir.mkdir(parents=True, exist_ok=True)
    timer = Timer(expdir / "timing.tsv")
    _build_corpora(bench, tracks, overrides, expdir, timer)
    checkpoints, to_pretrain = _pretrain_plan(bench, _with_aligners(bench, tracks, upstreams), expdir / "pretrain")
    for name, job, run_dir, finished in to_pretrain:
        _pretrainer(job, run_dir, bench.pretrain_data, expdir / "pretrain")  # a changed config: error before submitting
        if finished:
            timer.record(f"pretrain {name}", 0.0, reused=True)
    pending = {name for name, _, _, finished in to_pretrain if not finished}
    waiting = [t for t in tracks if bench.tasks[t].align is not None and bench.tasks[t].align.upstream in pending]
    if waiting:
        raise ConfigError(f"tasks.{waiting[0]}.align.upstream {bench.tasks[waiting[0]].align.upstream!r} is not "
                          "pre-trained yet, and a launch aligns before it submits: align with a baseline, or "
                          "pre-train it first (--tasks without this track)")
    _align_tracks(bench, tracks, overrides, checkpoints, expdir, timer)  # here, before the jobs: one short probe
    plan = _launch_plan(bench, tracks, upstreams, overrides, checkpoints, to_pretrain, expdir, resolve=True,
                        timer=timer)
    failed = None
    try:
        launchers.launch(plan, kind, cfg, jobs_folder, device=device, parallel=jobs, prefix=expdir.name,
                         record=expdir / launchers.JOBS_FILE if kind == "slurm" else None,
                         on_finished=lambda job, stages: [timer.record(*stage) for stage in stages],
                         poll_seconds=poll_seconds)
    except JobsFailed as err:  # the board still shows what has finished; the missing runs are listed
        failed = err
    markdown = collect_benchmark(bench, expdir, upstreams, tracks, timer)
    if failed is not None:
        raise failed
    return markdown


def _launch_plan(bench: BenchmarkConfig, tracks: list[str], upstreams: list[str], overrides: dict[str, list[str]],
                 checkpoints: dict[str, str | None], to_pretrain: list, expdir: Path, *, resolve: bool,
                 timer: Timer | None = None) -> list[Job]:
    """The jobs: pre-training runs not finished, then every (track, upstream) group with a run not done
    (``launcher.job_per: upstream``: every such group of one upstream in one job, track after track)."""
    pending = {name for name, _, _, finished in to_pretrain if not finished}
    plan = [Job(f"pretrain-{name}", "pretrain",
                functools.partial(_pretrain_job, name, job, bench.pretrain_data, expdir / "pretrain"),
                [f"pretrain-{t}" for t in _teachers(bench, job) if t in pending])
            for name, job, _, finished in to_pretrain if not finished]
    root = expdir / "downstream"
    per_upstream: dict[str, list] = {}
    for track in tracks:
        for name in upstreams:
            pretrained = name.removeprefix(TWIN_PREFIX)
            after = [f"pretrain-{pretrained}"] if pretrained in pending else []
            if after or not resolve:  # its checkpoint comes later: the job resolves its runs
                names = [folder for _, folder in expected_runs(bench, [track], [name])]
                if not after and all((root / n / runs.RESULTS_FILE).is_file() for n in names):
                    continue
                action = functools.partial(_group_job, bench, track, overrides[track], name, checkpoints, root)
            else:
                group = _track_runs(bench, track, overrides[track], [name], checkpoints, root)[0]
                for run in group:
                    if run.done and timer is not None:
                        timer.record(run.stage, 0.0, reused=True)
                todo = [run for run in group if not run.done]
                if not todo:
                    continue
                action = functools.partial(_train_group, todo)
            if bench.launcher.job_per == "upstream":
                per_upstream.setdefault(name, [after, []])[1].append(action)
            else:
                plan.append(Job(_experiment_name(track, name, ""), "downstream", action, after))
    plan += [Job(name.replace(":", "-"), "downstream", functools.partial(_chain, actions), after)
             for name, (after, actions) in per_upstream.items()]
    return plan


def _chain(actions: list[Callable[[], list[Stage]]]) -> list[Stage]:
    """One job, several groups in turn."""
    return [stage for action in actions for stage in action()]


def _pretrain_job(name: str, job: PretrainJob, data: list[str], root: Path) -> list[Stage]:
    """A pre-training job: the run (resumed from its last checkpoint by a second attempt)."""
    t0 = time.perf_counter()
    _pretrainer(job, root / name, data, root).run()
    return [(f"pretrain {name}", time.perf_counter() - t0, False)]


def _group_job(bench: BenchmarkConfig, track: str, overrides: list[str], name: str, checkpoints: dict[str, str | None],
               root: Path) -> list[Stage]:
    """A (track, upstream) job whose runs are resolved where it runs (its upstream was pre-trained by
    the job it waited for)."""
    return _train_group(_track_runs(bench, track, overrides, [name], checkpoints, root)[0])


def collect_benchmark(bench: BenchmarkConfig, expdir: Path, upstreams: list[str], tracks: list[str],
                      timer: Timer | None = None) -> str | None:
    """The leaderboard from whatever has finished (``--collect``, and at the end of a launch): writes
    and returns its Markdown (None when no run has finished) and prints the runs still missing."""
    root = expdir / "downstream"
    missing = [(stage, name) for stage, name in expected_runs(bench, tracks, upstreams)
               if not (root / name / runs.RESULTS_FILE).is_file()]
    markdown = None
    if any(root.glob(f"*/{runs.RESULTS_FILE}")):
        markdown = timer.run("leaderboard", lambda: _write_leaderboard(expdir), done_already=False) \
            if timer is not None else _write_leaderboard(expdir)
    if missing:
        print(f"{len(missing)} of {len(expected_runs(bench, tracks, upstreams))} runs have no results.json yet:\n"
              + "\n".join(f"  {stage}  ({root / name})" for stage, name in missing), flush=True)
    return markdown


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
    p.add_argument("--collect", action="store_true",
                   help="run nothing: write the leaderboard from whatever has finished and list the missing runs")
    add_launcher_options(p, "--launcher slurm or submitit-local: one job per pre-training run and per (track, "
                            "upstream), through submitit (at most --jobs at once with submitit-local); each setting "
                            "also a key of the YAML's launcher: section (the flag wins)",
                         "<expdir>/slurm/%%j", job_per=True)
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
        bench.tasks = {name: dataclasses.replace(job, seeds=0) for name, job in bench.tasks.items()}
    upstreams = _subset(args.upstreams, bench.upstreams, "upstream")
    tracks = _subset(args.tasks, list(bench.tasks), "task")
    expdir = args.expdir or Path("exp") / f"benchmark-{args.data if args.data in PRESETS else config.stem}"
    if args.dry_run and args.launcher != "slurm":
        raise ConfigError("--dry-run prints the sbatch script of --launcher slurm; add --launcher slurm")
    if args.collect:
        markdown = collect_benchmark(bench, expdir, upstreams, tracks)
        print(markdown or f"no run under {expdir / 'downstream'} has finished yet")
        return 0
    if args.launcher == "local":
        markdown = run_benchmark(bench, expdir, args.override, upstreams, tracks, args.jobs or bench.jobs)
    else:
        bench.launcher = launcher_from_args(bench.launcher, args)
        try:
            markdown = launch_benchmark(bench, expdir, args.override, upstreams, tracks, args.launcher,
                                        device=args.device, jobs=args.jobs or bench.jobs, dry_run=args.dry_run)
        except JobsFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if args.dry_run:
            return 0
    print(markdown or "no run has finished")
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
