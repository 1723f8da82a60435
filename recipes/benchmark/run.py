"""The whole benchmark in one command: corpora, pre-training, every task on every upstream, leaderboard.

    python -m recipes.benchmark [--data demo|shared|CONFIG.yaml] [--expdir exp/benchmark-demo]
        [--upstreams fbank,apc_tiny] [--tasks ks,st] [--seeds N] [-o section.key=value]

Stages, each timed (``<expdir>/timing.tsv``, printed at the end):

1. **corpora**: each task's corpus is built when it is a demo corpus and absent (TTS);
2. **pre-training**: each upstream of the config's ``pretrain`` section is pre-trained on
   ``pretrain.data`` into ``<expdir>/pretrain/<name>/`` unless it has a ``summary.json`` (or the
   config gives its ``checkpoint``); ``{pretrain}`` in overrides names that folder's parent, so
   HuBERT's second iteration finds the first;
3. **downstream**: every task (a leaderboard track) × upstream × seed (× leave-speakers-out fold,
   where a task sets ``folds``) trains into ``<expdir>/downstream/<track>-<upstream>-seed<N>[-fold<k>]/``
   unless it has a ``results.json``; ASR heads
   run at 20-ms frames (``task.downsample``/``task.upsample``) as in :mod:`recipes.asr.low_resource`;
4. **leaderboard**: ``runs.csv``, ``leaderboard.csv``, ``leaderboard.md``, ``report.html`` in ``<expdir>``.

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from downstream.cli import setup_console_logging
from downstream.config import ConfigError, load_yaml, merge, parse_overrides
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks import get_task
from leaderboard.cli import write_outputs
from recipes.asr.low_resource import head_frame_rate
from upstream import distributed
from upstream.pretrain import PretrainConfig, Pretrainer

HERE = Path(__file__).parent
PRESETS = {"demo": HERE / "demo.yaml", "shared": HERE / "shared.yaml"}
BASELINES = ("fbank", "fbank_global", "fbank_raw")
"""Upstreams without weights: named directly in ``upstreams``, nothing to pre-train."""


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
    """Keyword spotting on a corpus with few speakers: run every leave-speakers-out fold (``task.speaker_folds``)."""


@dataclass
class BenchmarkConfig:
    pretrain_data: list[str]
    pretrain: dict[str, PretrainJob]
    upstreams: list[str]
    tasks: dict[str, TaskJob]
    seeds: int = 1


def load_benchmark(path: Path) -> BenchmarkConfig:
    """Read and check a benchmark YAML; ConfigError names the file and the bad key."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    unknown = set(raw) - {"pretrain", "upstreams", "tasks", "seeds"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: pretrain, upstreams, tasks, seeds")
    pretrain = raw.get("pretrain") or {}
    jobs = {name: _job(PretrainJob, spec, f"{where}: pretrain.upstreams.{name}")
            for name, spec in (pretrain.get("upstreams") or {}).items()}
    tasks = {name: _job(TaskJob, spec, f"{where}: tasks.{name}") for name, spec in (raw.get("tasks") or {}).items()}
    upstreams = list(raw.get("upstreams") or [])
    for name in upstreams:
        if name not in jobs and name not in BASELINES:
            raise ConfigError(f"{where}: upstream {name!r} is neither a baseline ({', '.join(BASELINES)}) "
                              f"nor in pretrain.upstreams ({', '.join(jobs) or 'empty'})")
    if not upstreams or not tasks:
        raise ConfigError(f"{where}: needs at least one upstream and one task")
    return BenchmarkConfig(list(pretrain.get("data") or []), jobs, upstreams, tasks, int(raw.get("seeds", 1)))


def _job(cls, spec: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(spec, dict) or set(spec) - names:
        raise ConfigError(f"{where}: expected keys among {sorted(names)}, got {spec!r}")
    try:
        return cls(**spec)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


class Timer:
    """Wall time per stage, appended to ``timing.tsv`` as each stage ends."""

    def __init__(self, path: Path):
        self.path, self.rows = path, []

    def run(self, stage: str, action, done_already: bool):
        t0 = time.perf_counter()
        result = None if done_already else action()
        seconds = time.perf_counter() - t0
        self.rows.append({"stage": stage, "seconds": round(seconds, 1), "status": "reused" if done_already else "ran"})
        pd.DataFrame(self.rows).to_csv(self.path, sep="\t", index=False)
        print(f"[{sum(r['seconds'] for r in self.rows) / 60:6.1f} min] {stage}: "
              f"{'reused' if done_already else f'{seconds:.1f} s'}", flush=True)
        return result


def run_benchmark(bench: BenchmarkConfig, expdir: Path, extra: list[str], upstreams: list[str], tracks: list[str]) -> str:
    """Run every stage for ``upstreams`` × ``tracks``; returns the leaderboard Markdown."""
    expdir.mkdir(parents=True, exist_ok=True)
    timer = Timer(expdir / "timing.tsv")
    overrides = {track: [*bench.tasks[track].overrides, *extra] for track in tracks}
    for track in tracks:
        job = bench.tasks[track]
        task_cfg = resolve_config(RunSpec(job.task, "fbank"), load_yaml(job.config), parse_overrides(overrides[track])).task
        timer.run(f"corpus {track}", get_task(job.task)(task_cfg, expdir).build_corpus, done_already=False)
    checkpoints = _pretrain_all(bench, upstreams, expdir / "pretrain", timer)
    for track in tracks:
        _downstream_track(bench, track, overrides[track], upstreams, checkpoints, expdir / "downstream", timer)
    return timer.run("leaderboard", lambda: write_outputs(expdir / "downstream", expdir, title=f"Benchmark: {expdir}"),
                     done_already=False)


def _pretrain_all(bench: BenchmarkConfig, upstreams: list[str], root: Path, timer: Timer) -> dict[str, str | None]:
    """Pre-train (or reuse) every upstream asked for and the teachers they name; upstream -> checkpoint (None: FBANK)."""
    checkpoints: dict[str, str | None] = {name: None for name in upstreams if name in BASELINES}
    teachers = {name for u in upstreams if u in bench.pretrain for o in bench.pretrain[u].overrides
                for name in bench.pretrain if f"{{pretrain}}/{name}/" in o}
    for name, job in bench.pretrain.items():  # in the config's order: a teacher comes before its student
        if name not in upstreams and name not in teachers:
            continue
        if job.checkpoint:
            checkpoints[name] = str(Path(job.checkpoint).resolve())
            continue
        folder = root / name
        pretrainer = _pretrainer(job, folder, bench.pretrain_data, root)  # a changed config is an error here
        timer.run(f"pretrain {name}", pretrainer.run, done_already=(folder / "summary.json").is_file())
        checkpoints[name] = str((folder / "upstream.pt").resolve())
    return checkpoints


def _downstream_track(bench: BenchmarkConfig, track: str, overrides: list[str], upstreams: list[str],
                      checkpoints: dict[str, str | None], root: Path, timer: Timer) -> None:
    """Train (or reuse) one track's experiments: every upstream × seed × fold."""
    job = bench.tasks[track]
    folds = [(f"-fold{k}", [f"task.speaker_folds={job.folds}", f"task.fold={k}"]) for k in range(job.folds)] \
        if job.folds else [("", [])]
    for name in upstreams:
        arch = name if name in BASELINES else bench.pretrain[name].upstream
        ckpt = checkpoints[name]
        frame_rate = head_frame_rate(arch, ckpt) if job.task == "asr" else []
        for seed in range(1337, 1337 + bench.seeds):
            for suffix, fold_overrides in folds:
                exp_name = f"{track}-{name}-seed{seed}{suffix}"
                spec = RunSpec(job.task, arch, ckpt)
                cfg = resolve_config(spec, load_yaml(job.config),
                                     parse_overrides([*overrides, *frame_rate, *fold_overrides, f"train.seed={seed}"]))
                experiment = Experiment.create(root, exp_name, spec, cfg)  # a changed config is an error here
                timer.run(f"{track} {name} seed {seed}{suffix.replace('-', ' ')}", experiment.train,
                          done_already=(root / exp_name / "results.json").is_file())


def _pretrainer(job: PretrainJob, folder: Path, data: list[str], pretrain_root: Path) -> Pretrainer:
    overrides = parse_overrides([o.replace("{pretrain}", str(pretrain_root)) for o in job.overrides])
    cfg = merge(PretrainConfig(), load_yaml(job.config) if job.config else {})
    cfg = dataclasses.replace(merge(cfg, {k: v for k, v in overrides.items() if k not in ("upstream", "targets")}),
                              upstream={**cfg.upstream, **overrides.get("upstream", {})},
                              targets={**cfg.targets, **overrides.get("targets", {})})
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
    p.add_argument("-o", "--override", action="append", default=[], help="section.key=value for every downstream experiment")
    distributed.add_device_option(p)
    args = p.parse_args(argv)
    setup_console_logging(logging.WARNING)
    config = PRESETS.get(args.data, Path(args.data))
    try:
        distributed.init(args.device)
        if not config.is_file():
            raise ConfigError(f"--data {args.data!r}: neither demo, shared nor a benchmark YAML file")
        bench = load_benchmark(config)
        if args.seeds is not None:
            bench.seeds = args.seeds
        upstreams = _subset(args.upstreams, bench.upstreams, "upstream")
        tracks = _subset(args.tasks, list(bench.tasks), "task")
        expdir = args.expdir or Path("exp") / f"benchmark-{args.data if args.data in PRESETS else config.stem}"
        markdown = run_benchmark(bench, expdir, args.override, upstreams, tracks)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown)
    print(stage_times(expdir / "timing.tsv"))
    print(f"-> {expdir}/leaderboard.csv, leaderboard.md, report.html; stage times in {expdir}/timing.tsv")
    return 0


def stage_times(timing_tsv: Path) -> str:
    """Minutes per stage kind (corpus, pretrain, each track, leaderboard) of the last run, as Markdown."""
    timing = pd.read_csv(timing_tsv, sep="\t")
    kind = timing["stage"].str.split(" ").str[0]
    table = timing.groupby(kind, sort=False).agg(minutes=("seconds", lambda x: round(x.sum() / 60, 2)),
                                                 stages=("stage", "size"),
                                                 reused=("status", lambda x: int((x == "reused").sum())))
    table.loc["total"] = [round(timing["seconds"].sum() / 60, 2), len(timing), int((timing["status"] == "reused").sum())]
    return table.reset_index(names="stage").to_markdown(index=False)


def _subset(chosen: str, available: list[str], what: str) -> list[str]:
    names = [n for n in chosen.split(",") if n] or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; the config has {', '.join(available)}")
    return names
