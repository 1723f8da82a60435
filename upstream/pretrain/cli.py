"""The command line of pre-training, ``python -m upstream.pretrain`` (console script ``superb-pretrain``)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from core import distributed, runs
from core.cli import run_main
from core.config import load_yaml, override_items
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
    args = p.parse_args(argv)
    return run_main(lambda: _pretrain(args), log_level=None, user_errors=(TypeError,))


def _pretrain(args: argparse.Namespace) -> int:
    """Run the stages ``args`` ask for; print the summary and where the checkpoint is."""
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
