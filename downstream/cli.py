"""``run_downstream.py``: train or evaluate a downstream head on a frozen upstream (S3PRL-style flags)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from core import distributed
from core.cli import run_main
from core.config import ConfigError, list_recipes, load_yaml, override_items, parse_overrides
from core.logs import setup_console_logging
from core.runs import RESULTS_FILE, results_file
from corpora.audio import AudioError
from upstream import available_upstreams
from upstream.registry import takes_model_ids

from .qbe.run import resolve_qbe_config, run_qbe
from .runner import Experiment, RunSpec, resolve_config
from .tasks import TASKS

TRAINING_FREE = ("qbe",)
"""Tasks without a head: ``-m train`` runs their search and writes results.json (docs/qbe.md)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_downstream.py",
        description="Train (-m train) or evaluate (-m evaluate) a SUPERB-style downstream head on a frozen upstream.",
        epilog="Upstreams: " + "; ".join(f"{k}: {v}" for k, v in available_upstreams().items())
        + ". Tasks: " + ", ".join(sorted([*TASKS, *TRAINING_FREE])) + " (qbe: training-free, docs/qbe.md).",
    )
    p.add_argument("-m", "--mode", choices=("train", "evaluate"), help="train or evaluate (required unless listing)")
    p.add_argument("-u", "--upstream", help="upstream name (train)")
    p.add_argument("-k", "--upstream_ckpt",
                   help="upstream checkpoint (optional): a file, a folder (Hugging Face), or for -u hf a model id")
    p.add_argument("--list-upstreams", action="store_true", help="print every upstream this toolkit knows and exit")
    p.add_argument("-d", "--downstream", help="task name (train)")
    p.add_argument("-n", "--name", help="experiment name: folder under -p (required unless listing)")
    p.add_argument("-c", "--config", help="YAML config (sections: task, upstream, train, featurizer, cache, finetune): "
                                          "a file, or a recipe name such as ks/fsdd (see --list-recipes)")
    p.add_argument("--list-recipes", action="store_true", help="print the recipe names -c accepts and exit")
    p.add_argument("-o", "--override", action="append", default=[],
                   help="section.key=value, repeatable (or several joined by ',,'); checked against the config. "
                        "With -m evaluate only decoding settings (e.g. task.decoder=beam), "
                        "written to results-<overrides>.json")
    p.add_argument("-f", "--finetune", action="store_true",
                   help="train: fine-tune the upstream with the head (sets finetune.enabled=true; see FinetuneConfig)")
    p.add_argument("-p", "--expdir", default="exp", help="output root (default: exp)")
    p.add_argument("-s", "--split", default="test", help="evaluate: comma-separated splits (default: test)")
    distributed.add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_upstreams:
        for name, description in available_upstreams().items():
            print(f"{name:14s} {description}")
        return 0
    if args.list_recipes:
        print("\n".join(list_recipes()))
        return 0
    if not args.mode or not args.name:
        parser.error("-m/--mode and -n/--name are required")
    return run_main(lambda: _run(args), log_level=None, user_errors=(AudioError,))


def _run(args: argparse.Namespace) -> int:
    """Train or evaluate as ``args`` say; print the results' summary."""
    distributed.init(args.device)  # under torchrun: one process per rank, data-parallel training
    setup_console_logging(logging.INFO if distributed.is_main() else logging.WARNING)
    if args.mode == "train":
        results = _train(args)
        results_name = RESULTS_FILE
    else:
        splits = tuple(s for s in args.split.split(",") if s)
        done = Path(args.expdir) / args.name / RESULTS_FILE
        if done.is_file() and json.loads(done.read_text()).get("task") in TRAINING_FREE:
            raise ConfigError(f"{done.parent} is a training-free QbE run: it has no evaluate step; -m train wrote "
                              f"its results ({done})")
        exp = Experiment.load(Path(args.expdir), args.name, parse_overrides(override_items(args.override)))
        results = exp.evaluate(splits)
        results_name = results_file(exp.variant)
    if not distributed.is_main():
        return 0
    print(json.dumps({k: results[k] for k in ("task", "upstream", "experiment", "splits", "layer_weights")}, indent=1))
    print(f"results: {Path(args.expdir) / args.name / results_name}")
    return 0


def _train(args: argparse.Namespace) -> dict:
    """``-m train``: check the names, resolve the config, train (or resume) the experiment."""
    if not args.upstream or not args.downstream:
        raise ConfigError("-m train needs -u UPSTREAM and -d TASK")
    if args.upstream not in available_upstreams():
        raise ConfigError(f"unknown upstream {args.upstream!r}; "
                          f"available: {', '.join(sorted(available_upstreams()))}")
    if args.downstream not in TASKS and args.downstream not in TRAINING_FREE:
        raise ConfigError(f"unknown task {args.downstream!r}; available: {', '.join(sorted([*TASKS, *TRAINING_FREE]))}")
    ckpt = args.upstream_ckpt
    if ckpt and Path(ckpt).exists():
        ckpt = str(Path(ckpt).resolve())
    elif ckpt and not takes_model_ids(args.upstream):
        raise FileNotFoundError(f"upstream checkpoint not found: {ckpt}")
    items = override_items(args.override)
    if args.downstream == "qbe":  # training-free: the search writes results.json itself
        cfg = resolve_qbe_config(load_yaml(args.config) if args.config else {}, parse_overrides(items))
        return run_qbe(Path(args.expdir) / args.name, args.upstream, ckpt or None, cfg)
    if args.finetune:
        items.append("finetune.enabled=true")
    spec = RunSpec(args.downstream, args.upstream, ckpt or None)
    cfg = resolve_config(spec, load_yaml(args.config) if args.config else {}, parse_overrides(items))
    return Experiment.create(Path(args.expdir), args.name, spec, cfg).train()
