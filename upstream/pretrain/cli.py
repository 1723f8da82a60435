"""The command line of pre-training, ``python -m upstream.pretrain`` (console script ``superb-pretrain``)."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

from core import distributed, launcher as launchers, runs
from core.cli import run_main
from core.config import ConfigError, load_yaml, override_items
from core.launcher import Job, JobsFailed, LauncherConfig, Stage, add_launcher_options, launcher_from_args
from core.logs import setup_console_logging

from ..registry import available_upstreams
from .trainer import Pretrainer, resolve_pretrain_config

DESCRIPTION = "``python -m upstream.pretrain``: self-supervised pre-training of an upstream on unlabelled audio."


def main(argv: list[str] | None = None) -> int:
    """Pre-train as ``argv`` says (with ``--until targets``, only the target stages); the exit status
    (2 for a configuration error, the signal's for a stop)."""
    p = argparse.ArgumentParser(prog="python -m upstream.pretrain", description=DESCRIPTION)
    p.add_argument("-u", "--upstream", required=True, help=f"one of: {', '.join(available_upstreams())}")
    p.add_argument("-n", "--name", required=True, help="experiment name (folder under -p)")
    p.add_argument("--data", action="append", required=True,
                   help="audio folder, Speech Commands tree (training part used) or .tsv manifest; repeatable")
    p.add_argument("-c", "--config", help="YAML with sections 'upstream', 'train', 'augment' and (HuBERT) 'targets'")
    p.add_argument("-o", "--override", action="append", default=[],
                   help="section.key=value, repeatable (or several joined by ',,'; "
                        "sections: upstream, train, targets, augment)")
    p.add_argument("-p", "--expdir", default="exp/pretrain")
    p.add_argument("--until", choices=["targets", "train"], default="train",
                   help="'targets': run only the target stages (HuBERT's k-means features, centroids, labels)")
    distributed.add_device_option(p)
    add_launcher_options(p, "--launcher slurm or submitit-local: the run as one submitit job; pre-empted or out of "
                            "time, it is requeued and resumes from its last checkpoint", "<expdir>/<name>/slurm/%%j")
    args = p.parse_args(argv)
    return run_main(lambda: _pretrain(args), log_level=None, user_errors=(TypeError,))


def _pretrain(args: argparse.Namespace) -> int:
    """Run the stages ``args`` ask for (here, or as a job: :func:`_launch`); print the summary and where the
    checkpoint is."""
    if args.dry_run and args.launcher != "slurm":
        raise ConfigError("--dry-run prints the sbatch script of --launcher slurm; add --launcher slurm")
    if args.launcher != "local":
        return _launch(args)
    distributed.init(args.device)  # under torchrun: one process per rank, data-parallel
    setup_console_logging(logging.INFO if distributed.is_main() else logging.WARNING)
    cfg = resolve_pretrain_config(load_yaml(args.config) if args.config else {}, override_items(args.override))
    pretrainer = Pretrainer(Path(args.expdir) / args.name, args.upstream, cfg, args.data)
    if args.until == "targets":
        pretrainer.prepare()
        print(f"target stages done: {pretrainer.dir / 'targets'}")
        return 0
    summary = pretrainer.run()
    if not distributed.is_main():
        return 0
    print(json.dumps(summary, indent=1))
    print(f"checkpoint for run_downstream.py: {Path(args.expdir) / args.name / runs.UPSTREAM_FILE}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """The run as one submitit job (``--launcher slurm`` or ``submitit-local``), waited for. The config is
    resolved and the run folder claimed here, so a bad or changed config is an error before submitting;
    a finished run (``summary.json``) submits nothing. ``--dry-run``: print the sbatch script only."""
    launcher = launcher_from_args(LauncherConfig(), args)
    run_dir = Path(args.expdir) / args.name
    folder = Path(launcher.folder) if launcher.folder else run_dir / "slurm" / "%j"
    cfg = resolve_pretrain_config(load_yaml(args.config) if args.config else {}, override_items(args.override))
    job = Job(f"pretrain-{args.name}", "pretrain",
              functools.partial(_pretrain_job, str(run_dir), args.upstream, cfg, list(args.data), args.until))
    if args.dry_run:
        print(launchers.dry_run([job], launcher, folder, args.name))
        return 0
    launchers.check_available(args.launcher)
    Pretrainer(run_dir, args.upstream, cfg, args.data)  # claims the folder: a changed config is an error now
    if runs.pretraining_finished(run_dir):
        print(f"{run_dir} has finished (summary.json): nothing to submit")
        return 0
    try:
        launchers.launch([job], args.launcher, launcher, folder, device=args.device, prefix=args.name,
                         record=run_dir / launchers.JOBS_FILE if args.launcher == "slurm" else None)
    except JobsFailed as err:
        print(f"error: {err}")
        return 1
    if args.until == "train":
        print(json.dumps(json.loads((run_dir / runs.SUMMARY_FILE).read_text()), indent=1))
        print(f"checkpoint for run_downstream.py: {run_dir / runs.UPSTREAM_FILE}")
    return 0


def _pretrain_job(run_dir: str, upstream: str, cfg, data: list[str], until: str) -> list[Stage]:
    """What the job runs (module level, so submitit can pickle it): the same stages as a local run; a
    requeued attempt resumes from the last checkpoint."""
    t0 = time.perf_counter()
    pretrainer = Pretrainer(Path(run_dir), upstream, cfg, data)
    if until == "targets":
        pretrainer.prepare()
    else:
        pretrainer.run()
    return [(f"pretrain {Path(run_dir).name}", time.perf_counter() - t0, False)]
