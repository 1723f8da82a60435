"""Phone alignments of a corpus split by CTC forced alignment with a trained phoneme-recognition probe.

    python -m recipes.pr.align -p exp/align -n pr-apc-10min [--splits train,dev,test] [--out ALIGNMENTS.tsv]

The experiment is a ``-d pr`` run; how its alignment is made and how sharp it can be: :mod:`downstream.alignment`.
Prints how many utterances were aligned and the aligner's dev PER.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import run_main
from downstream.alignment import align_to_file, aligner_dev_per
from downstream.runner import Experiment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.pr.align", description=__doc__.splitlines()[0])
    p.add_argument("-p", "--expdir", type=Path, required=True, help="the experiments' root")
    p.add_argument("-n", "--name", required=True, help="a trained -d pr experiment")
    p.add_argument("--splits", default="train", help="comma-separated: train, dev, test (default: train)")
    p.add_argument("--out", type=Path, help="output TSV (default: <experiment>/alignments-<splits>.tsv)")
    args = p.parse_args(argv)
    return run_main(lambda: _align(args))


def _align(args: argparse.Namespace) -> int:
    """Align the splits, write the TSV, print a summary."""
    exp = Experiment.load(args.expdir, args.name)
    out, aligned, failed = align_to_file(exp, args.splits.split(","),
                                         args.out or exp.dir / f"alignments-{args.splits.replace(',', '-')}.tsv")
    per = aligner_dev_per(exp)
    print(f"{aligned} utterances aligned, {len(failed)} too short for their phones"
          f"{f' ({failed[:5]})' if failed else ''}; aligner dev PER {per if per is None else round(per, 1)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
