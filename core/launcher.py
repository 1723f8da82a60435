"""Jobs through submitit: on a Slurm cluster (``--launcher slurm``), or as local subprocesses through the
same pickling path (``--launcher submitit-local``, the test path). The benchmark
(``python -m recipes.benchmark``) and pre-training (``python -m upstream.pretrain``) launch with it.

A :class:`Job` is one unit of work with the names of the jobs it must wait for: a pre-training run,
or one (track, upstream) group of downstream runs (seeds, folds, learning rates), which shares one
feature cache. Each is pickled as a :class:`SubmititTask`, a :class:`submitit.helpers.Checkpointable`:
when Slurm warns of pre-emption or of the time limit (``USR2``, ``--signal=USR2@90``) submitit pickles
the same task again and requeues it; the new attempt skips the runs that have a ``results.json`` and
resumes the others from their last checkpoint (``train.save_every``).

Dependencies: on Slurm every job is submitted at once, a dependent one with
``--dependency=afterok:<ids>`` (one job array per set of dependencies, ``array_parallelism`` of its
tasks at once), so the submitting process may end and the jobs go on; ``submitit-local`` has no
scheduler to hold jobs back, so it submits a job when the jobs it waits for have ended well, at most
``parallel`` at once. A job whose dependency failed is cancelled (Slurm would keep it pending).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import submitit
import torch
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import _make_sbatch_string

from . import distributed, signals
from .config import ConfigError, merge, parse_overrides
from .logs import setup_console_logging

log = logging.getLogger("launcher")

LAUNCHERS = ("local", "slurm", "submitit-local")
"""``local``: the command's own process (the benchmark: its process pool); the others go through submitit
(this module)."""
JOB_PER = ("track-upstream", "upstream")
"""What one downstream job runs: one (track, upstream) group (its seeds, folds and rates, which share a
feature cache), or every group of one upstream, track after track (fewer, longer jobs)."""
JOBS_FILE = "slurm_jobs.tsv"
"""In the experiment folder: the Slurm jobs of the last submission (name, job id, dependencies), so
a second submission while they still run is refused."""
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}
"""Slurm job states of a job that has not ended."""

Stage = tuple[str, float, bool]
"""What a job reports per run: the stage's name, its seconds, whether it was already done (reused)."""


@dataclass
class LauncherConfig:
    """The ``launcher:`` section of a benchmark YAML; each key also a flag (``--partition``, ``--time``, ...).

    Attributes:
        partition: Slurm partition (empty: the cluster's default).
        time: minutes per job (Slurm ``--time``; submitit-local's timeout). A job that reaches it is
            requeued (``max_num_timeout`` times) and resumes.
        gpus_per_node, cpus_per_task, mem_gb: resources per job (0: the cluster's default); with
            ``cpus_per_task`` a job trains on that many threads.
        array_parallelism: most tasks of one job array running at once (Slurm ``--array=...%N``).
        additional_parameters: other ``#SBATCH`` flags, e.g. ``{account: my_lab, qos: normal}``.
        setup: shell lines run before the job's Python (``module load ...``, ``source .venv/bin/activate``).
        folder: where submitit writes the jobs' pickles and logs; ``%j`` is the job id (empty:
            ``<expdir>/slurm/%j``).
        max_num_timeout: how often a job that runs out of time is requeued (pre-emptions do not count).
        job_per: ``track-upstream`` (one job per group) or ``upstream`` (:data:`JOB_PER`).
    """

    partition: str = ""
    time: int = 240
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    mem_gb: float = 0.0
    array_parallelism: int = 256
    additional_parameters: dict = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    folder: str = ""
    max_num_timeout: int = 3
    job_per: str = "track-upstream"


def load_launcher(raw, where: str) -> LauncherConfig:
    """The ``launcher:`` section, checked: unknown keys and wrong types are a ConfigError naming them."""
    if raw is None:
        return LauncherConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of launcher settings, got {raw!r}")
    known = [f.name for f in dataclasses.fields(LauncherConfig)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {', '.join(known)}")
    return check_launcher(merge(LauncherConfig(), raw, where), where)


def check_launcher(cfg: LauncherConfig, where: str) -> LauncherConfig:
    if cfg.time <= 0:
        raise ConfigError(f"{where}.time: minutes per job must be positive, got {cfg.time}")
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb", "max_num_timeout"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{where}.{key} must be 0 or more, got {getattr(cfg, key)}")
    if cfg.job_per not in JOB_PER:
        raise ConfigError(f"{where}.job_per must be one of {', '.join(JOB_PER)}, got {cfg.job_per!r}")
    if cfg.array_parallelism < 1:
        raise ConfigError(f"{where}.array_parallelism must be at least 1, got {cfg.array_parallelism}")
    return cfg


@dataclass
class Job:
    """One job: ``action()`` (picklable: a module-level function or a partial of one) returns its stages."""

    name: str
    kind: str
    """``pretrain`` or ``downstream``: jobs of one kind with the same dependencies share one job array."""
    action: Callable[[], list[Stage]]
    after: list[str] = field(default_factory=list)
    """Names of the jobs that must end well first."""


class SubmititTask(Checkpointable):
    """What a submitit job runs: sets the process up as a worker (logging, stop signals, threads, device)
    and calls the job's action.

    ``checkpoint`` (called by submitit on pre-emption or time-out) returns the same task: runs already
    finished are skipped by the new attempt, the one under way resumes from its last checkpoint."""

    def __init__(self, name: str, action: Callable[[], list[Stage]], device: str = "auto", threads: int = 0):
        self.name, self.action, self.device, self.threads = name, action, device, threads

    def __call__(self) -> list[Stage]:
        setup_console_logging(logging.INFO)
        signals.handle_stop_signals()  # SIGTERM (scancel): the training loop saves its checkpoint and stops
        if self.threads:
            torch.set_num_threads(self.threads)
        distributed.init(self.device)
        log.info("job %s on %s", self.name, distributed.describe_device())
        return self.action()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        log.warning("job %s: pre-empted or out of time; requeued, its runs resume from their last "
                    "checkpoints", self.name)
        return super().checkpoint(*args, **kwargs)


class JobsFailed(RuntimeError):
    """Some jobs failed (or never ran because a job they wait for failed); the message names each."""


# ---------------------------------------------------------------- Slurm parameters and scripts


def slurm_parameters(cfg: LauncherConfig, job_name: str, dependencies: list[str]) -> dict:
    """Keyword arguments of :class:`submitit.SlurmExecutor`'s ``update_parameters`` (the same names as
    ``submitit.slurm.slurm._make_sbatch_string``'s) for one submission."""
    params = {"job_name": job_name, "time": cfg.time, "array_parallelism": cfg.array_parallelism,
              "additional_parameters": dict(cfg.additional_parameters)}
    if cfg.partition:
        params["partition"] = cfg.partition
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.cpus_per_task:
        params["cpus_per_task"] = cfg.cpus_per_task
    if cfg.mem_gb:
        params["mem"] = f"{int(cfg.mem_gb)}GB" if cfg.mem_gb == int(cfg.mem_gb) else f"{int(cfg.mem_gb * 1024)}MB"
    if cfg.setup:
        params["setup"] = list(cfg.setup)
    if dependencies:
        params["additional_parameters"]["dependency"] = "afterok:" + ":".join(dependencies)
    return params


def submit_command(folder: Path) -> str:
    """The command a submitit job script runs (as :class:`submitit.SlurmExecutor` writes it)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def sbatch_script(cfg: LauncherConfig, folder: Path, job_name: str, dependencies: list[str], tasks: int = 1) -> str:
    """The sbatch script of one submission, built without a cluster (``--dry-run``): the text
    :class:`submitit.SlurmExecutor` would submit (``tasks`` > 1: a job array)."""
    return _make_sbatch_string(command=submit_command(folder), folder=folder, map_count=tasks if tasks > 1 else None,
                               **slurm_parameters(cfg, job_name, dependencies))


def submissions(jobs: list[Job]) -> list[list[Job]]:
    """The jobs in submission order, one list per submission (a job array when longer than one): a job
    after every job it waits for; jobs of one kind with the same dependencies together."""
    names = {job.name for job in jobs}
    unknown = [(job.name, a) for job in jobs for a in job.after if a not in names]
    if unknown:
        raise ValueError(f"jobs wait for jobs that are not submitted: {unknown}")
    done: set[str] = set()
    batches: list[list[Job]] = []
    remaining = list(jobs)
    while remaining:
        ready = [job for job in remaining if set(job.after) <= done]
        if not ready:
            raise ValueError(f"circular job dependencies among {[job.name for job in remaining]}")
        groups: dict[tuple, list[Job]] = {}
        for job in ready:
            groups.setdefault((job.kind, tuple(sorted(job.after))), []).append(job)
        batches += list(groups.values())
        done |= {job.name for job in ready}
        remaining = [job for job in remaining if job.name not in done]
    return batches


def dry_run(jobs: list[Job], cfg: LauncherConfig, folder: Path, prefix: str) -> str:
    """The sbatch script of the first submission and the list of every job with its dependencies."""
    if not jobs:
        return "nothing to submit: every run has its results.json"
    batches = submissions(jobs)
    first = batches[0]
    lines = [f"# sbatch script of the first submission ({_batch_name(prefix, first)}: "
             f"{', '.join(job.name for job in first)})",
             sbatch_script(cfg, folder, _batch_name(prefix, first), [], len(first)), "",
             f"# {len(jobs)} jobs in {len(batches)} submissions (nothing submitted):"]
    for i, batch in enumerate(batches, 1):
        after = sorted({a for job in batch for a in job.after})
        what = batch[0].name if len(batch) == 1 else \
            f"job array {_batch_name(prefix, batch)} of {len(batch)}: {', '.join(job.name for job in batch)}"
        lines.append(f"#  {i}. {what}" + (f"  (afterok: {', '.join(after)})" if after else ""))
    return "\n".join(lines)


def _batch_name(prefix: str, batch: list[Job]) -> str:
    return f"{prefix}-{batch[0].name if len(batch) == 1 else batch[0].kind}"


# ---------------------------------------------------------------- launching and waiting


def check_available(kind: str) -> None:
    """ConfigError when ``kind`` cannot submit from this machine (Slurm without ``srun``)."""
    if kind == "slurm" and shutil.which("srun") is None:
        raise ConfigError("--launcher slurm: no srun on this machine, so no Slurm cluster to submit to (--dry-run "
                          "prints the job script without one; --launcher submitit-local runs the jobs here)")


def launch(jobs: list[Job], kind: str, cfg: LauncherConfig, folder: Path, *, device: str = "auto",
           parallel: int = 1, prefix: str = "superb", record: Path | None = None,
           on_finished: Callable[[Job, list[Stage]], None] = lambda job, stages: None,
           poll_seconds: float | None = None) -> None:
    """Run ``jobs`` through submitit (``kind``: ``slurm`` or ``submitit-local``) and wait for them;
    ``on_finished`` gets each job's stages as it ends. ``record``: the file that lists the Slurm jobs
    submitted (:data:`JOBS_FILE`).

    Raises:
        JobsFailed: after every job has ended, naming those that failed or were cancelled.
        ConfigError: ``slurm`` without a cluster (no ``srun``), or jobs of the last submission still queued.
    """
    if not jobs:
        return
    threads = cfg.cpus_per_task or (1 if kind == "submitit-local" and parallel > 1 else 0)
    tasks = {job.name: _task(job, device, threads) for job in jobs}
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # jobs inherit it: no progress bars in their log files (read when tqdm loads)
    try:
        _launch(jobs, tasks, kind, cfg, folder, parallel, prefix, record, on_finished, poll_seconds)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def _launch(jobs, tasks, kind, cfg, folder, parallel, prefix, record, on_finished, poll_seconds) -> None:
    if kind == "slurm":
        handles = _submit_slurm(jobs, tasks, cfg, folder, prefix, record)
        _wait(jobs, handles, on_finished, poll_seconds or 30.0, start=None, on_interrupt=_leave_running)
    elif kind == "submitit-local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=cfg.max_num_timeout)
        executor.update_parameters(timeout_min=cfg.time, **({"setup": list(cfg.setup)} if cfg.setup else {}))

        def start(job: Job):
            return executor.submit(tasks[job.name])

        _wait(jobs, {}, on_finished, poll_seconds or 0.5, start=start, parallel=parallel, on_interrupt=_stop_local)
    else:
        raise ValueError(f"launcher {kind!r}: submitit launches slurm or submitit-local jobs")


def _task(job: Job, device: str, threads: int) -> SubmititTask:
    return SubmititTask(job.name, job.action, device, threads)


def _submit_slurm(jobs: list[Job], tasks: dict[str, SubmititTask], cfg: LauncherConfig, folder: Path, prefix: str,
                  record: Path | None) -> dict:
    check_available("slurm")
    executor = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_num_timeout)
    if record is not None:
        _refuse_if_queued(record, folder)
    handles: dict = {}
    rows = []
    for batch in submissions(jobs):
        dependencies = sorted({handles[a].job_id for job in batch for a in job.after})
        executor.update_parameters(**slurm_parameters(cfg, _batch_name(prefix, batch), dependencies))
        with executor.batch():
            submitted = [executor.submit(tasks[job.name]) for job in batch]
        for job, handle in zip(batch, submitted, strict=True):
            handles[job.name] = handle
            rows.append([job.name, handle.job_id, ",".join(job.after)])
            print(f"submitted {job.name}: Slurm job {handle.job_id}"
                  + (f" (afterok: {', '.join(job.after)})" if job.after else ""), flush=True)
        if record is not None:  # after each submission: an interrupted submission still leaves its record
            _write_record(record, rows)
    return handles


def _write_record(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["job", "slurm_id", "after"])
        writer.writerows(rows)


def _refuse_if_queued(record: Path, folder: Path) -> None:
    """A second submission while jobs of the last one run would train the same folders twice at once."""
    if not record.is_file():
        return
    with record.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    active = [f"{row['job']} ({row['slurm_id']}: {state})" for row in rows
              if (state := submitit.SlurmJob(folder, row["slurm_id"]).state) in ACTIVE_STATES]
    if active:
        raise ConfigError(f"jobs of the last submission ({record}) have not ended: {', '.join(active)}; wait for "
                          "them (--collect writes the leaderboard from what has finished) or scancel them")


def _wait(jobs: list[Job], handles: dict, on_finished, poll: float, *, start, parallel: int = 1,
          on_interrupt) -> None:
    """Wait for every job (starting each with ``start`` once its dependencies ended well, at most
    ``parallel`` running, when ``start`` is given), report each as it ends, cancel the dependents of a
    failed one; raise :class:`JobsFailed` at the end if any failed."""
    by_name = {job.name: job for job in jobs}
    state: dict[str, str] = {}  # name -> "ok" | "failed"
    failures: list[str] = []
    running = dict(handles)
    pending = [job for job in jobs if job.name not in running]
    try:
        while pending or running:
            for job in list(pending):
                failed = [a for a in job.after if state.get(a) == "failed"]
                if failed:
                    pending.remove(job)
                    state[job.name] = "failed"
                    failures.append(f"{job.name}: not run, it waits for {', '.join(failed)}, which failed")
                elif start is not None and len(running) < parallel and all(state.get(a) == "ok" for a in job.after):
                    pending.remove(job)
                    running[job.name] = start(job)
            finished = [name for name, handle in running.items() if _ended(handle)]
            for name in finished:
                handle = running.pop(name)
                try:
                    stages = _result(handle)
                except Exception as err:  # noqa: BLE001  (submitit's FailedJobError, UncompletedJobError: any failure)
                    state[name] = "failed"
                    failures.append(f"{name} (job {handle.job_id}) failed: {_last_line(err)}; "
                                    f"log: {handle.paths.stderr}")
                    print(f"job {name} failed; see {handle.paths.stderr}", file=sys.stderr, flush=True)
                    for dependent in _dependents(name, jobs):
                        if dependent in running:  # submitted with afterok: Slurm would hold it forever
                            running.pop(dependent).cancel(check=False)
                            state[dependent] = "failed"
                            failures.append(f"{dependent}: cancelled, it waits for {name}, which failed")
                    continue
                state[name] = "ok"
                on_finished(by_name[name], stages)
            if not finished:
                time.sleep(poll)
    except (signals.Interrupted, KeyboardInterrupt):
        on_interrupt(running)
        raise
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(jobs)} jobs did not finish:\n  " + "\n  ".join(failures))


def _result(handle) -> list[Stage]:
    """The job's return value (read from its result file: a local job's ``result()`` would wait for its
    process to end), or its error raised."""
    if handle.paths.result_pickle.exists():
        outcome, value = submitit.core.utils.pickle_load(handle.paths.result_pickle)
        if outcome != "success":
            raise submitit.core.utils.FailedJobError(value)
        return value
    return handle.result()  # ended without a result: raises, naming the job's state


def _ended(handle) -> bool:
    """The job has written its result (a local job's process may still be shutting down), or has ended
    without one."""
    return handle.paths.result_pickle.exists() or handle.done()


def _dependents(name: str, jobs: list[Job]) -> list[str]:
    """Every job that waits for ``name``, directly or through another."""
    out: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for job in jobs:
            if current in job.after and job.name not in out:
                out.append(job.name)
                frontier.append(job.name)
    return out


def _last_line(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


def _leave_running(running: dict) -> None:
    if running:
        print(f"the Slurm jobs go on ({', '.join(f'{n}: {h.job_id}' for n, h in running.items())}); "
              "--collect writes the leaderboard from what has finished", file=sys.stderr, flush=True)


def _stop_local(running: dict, grace_seconds: float = 120.0) -> None:
    """SIGTERM to each local job's controller, which passes it to the job: its training loop saves the
    checkpoint and stops; wait for them to end."""
    for handle in running.values():
        try:
            os.kill(int(handle.job_id), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + grace_seconds
    while any(not handle.done() for handle in running.values()) and time.monotonic() < deadline:
        time.sleep(0.2)


# ---------------------------------------------------------------- command-line flags


def add_launcher_options(parser: argparse.ArgumentParser, description: str, default_folder: str,
                         job_per: bool = False) -> argparse._ArgumentGroup:
    """The launcher flags (``--launcher``, ``--dry-run`` and one per :class:`LauncherConfig` key) as an
    argument group of ``parser``; ``job_per``: also ``--job-per`` (the benchmark's)."""
    s = parser.add_argument_group("launchers", description)
    s.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: this process (default); slurm: submit to Slurm; submitit-local: the same jobs as "
                        "local subprocesses (the test path)")
    s.add_argument("--dry-run", action="store_true",
                   help="with --launcher slurm: print the first job's sbatch script and the job list, submit nothing")
    s.add_argument("--partition", help="Slurm partition")
    s.add_argument("--time", type=int, help="minutes per job (default 240); a job out of time is requeued and resumes")
    s.add_argument("--gpus-per-node", type=int, help="GPUs per job")
    s.add_argument("--cpus-per-task", type=int, help="CPU cores per job (its training threads)")
    s.add_argument("--mem-gb", type=float, help="memory per job")
    s.add_argument("--array-parallelism", type=int, help="most tasks of one job array at once (default 256)")
    s.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="another #SBATCH flag, e.g. --sbatch account=my_lab (repeatable)")
    s.add_argument("--job-folder", help=f"submitit's pickles and logs, %%j the job id (default: {default_folder})")
    if job_per:
        s.add_argument("--job-per", choices=JOB_PER,
                       help="one downstream job per (track, upstream) group (default), or per upstream "
                            "(all its tracks)")
    return s


def launcher_from_args(cfg: LauncherConfig, args: argparse.Namespace) -> LauncherConfig:
    """``cfg`` (a YAML's ``launcher:`` section, or the defaults) with the command line's flags on top, checked."""
    flags = {key: getattr(args, key) for key in ("partition", "time", "gpus_per_node", "cpus_per_task", "mem_gb",
                                                 "array_parallelism") if getattr(args, key, None) is not None}
    if args.job_folder:
        flags["folder"] = args.job_folder
    if getattr(args, "job_per", None):
        flags["job_per"] = args.job_per
    if args.sbatch:
        flags["additional_parameters"] = parse_overrides(args.sbatch)
    return check_launcher(merge(cfg, flags, "launcher"), "launcher (with the command line's flags)")
