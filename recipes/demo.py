"""The demo benchmark: keyword spotting on the toolkit's own synthetic corpus, then the leaderboard.

    python -m recipes.demo [--upstreams fbank,fbank_global] [--seeds 1] [--expdir exp/demo]

Builds the demo keyword corpus if absent (espeak-ng), trains SUPERB's KS head on each upstream
(frozen, weighted layer sum, feature cache), evaluates the best dev checkpoint on the test
speakers, and writes ``<expdir>/leaderboard.csv``. Idempotent: experiments that already have a
``results.json`` are reused, interrupted ones resume.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from downstream.cli import setup_console_logging
from downstream.config import load_yaml, parse_overrides
from downstream.runner import Experiment, RunSpec, resolve_config
from leaderboard.cli import main as leaderboard_main

CONFIG = Path(__file__).with_name("ks") / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstreams", default="fbank,fbank_global", help="comma-separated upstream names")
    p.add_argument("--seeds", type=int, default=1, help="seeds per upstream (1337, 1338, ...)")
    p.add_argument("--expdir", type=Path, default=Path("exp/demo"))
    p.add_argument("-o", "--override", action="append", default=[], help="section.key=value for every experiment")
    args = p.parse_args(argv)
    setup_console_logging(logging.WARNING)
    for upstream in [u for u in args.upstreams.split(",") if u]:
        for seed in range(1337, 1337 + args.seeds):
            name = f"ks-{upstream}-seed{seed}"
            if (args.expdir / name / "results.json").is_file():
                print(f"{name}: done already, reusing {args.expdir / name / 'results.json'}")
                continue
            spec = RunSpec("ks", upstream)
            cfg = resolve_config(spec, load_yaml(CONFIG), parse_overrides([f"train.seed={seed}", *args.override]))
            results = Experiment.create(args.expdir, name, spec, cfg).train()
            test = results["splits"]["test"]["accuracy"]
            print(f"{name}: test accuracy {100 * test:.2f}% ({results['training']['steps_per_second']:.0f} steps/s)")
    return leaderboard_main([str(args.expdir)])


if __name__ == "__main__":
    sys.exit(main())
