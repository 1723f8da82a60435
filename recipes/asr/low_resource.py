"""Low-resource ASR (Libri-light style): frozen upstreams with the small CTC head, and fine-tuning.

    python -m recipes.asr.low_resource [-c recipes/asr/librispeech_mini.yaml] [--setting 10min|1h|10h]
        [-u fbank -u apc=exp/pretrain/apc_tiny/upstream.pt ...] [--finetune apc] [--lrs 1e-4,1e-3,1e-2]
        [--expdir exp/asr] [--tag ls]

A thin wrapper over the benchmark (:mod:`recipes.benchmark`): the arguments become a benchmark
config with one track ``<tag>-<setting>`` (the ASR config with ``task.train_set=librilight-<setting>``,
the ``--lrs`` grid) and, for the upstreams named by ``--finetune``, a track
``<tag>-<setting>-finetuned`` (the config's finetune settings). Each upstream is a baseline
(``fbank``, ``fbank_global``, ``fbank_raw``), ``NAME=CHECKPOINT`` (labelled by the pre-training folder
or the file's name) or ``random:LABEL``, the random-weights twin of one of them. Heads run at 20-ms
frames, the rate is chosen per upstream on dev, runs land in ``<expdir>/downstream/`` and the benchmark's
leaderboard in ``<expdir>``; the dev and test WER/CER table is also written to
``<expdir>/<tag>-<setting>-leaderboard.csv``. Idempotent: finished experiments are reused, interrupted
ones resume. Without ``-c`` it runs on the toolkit's synthetic demo corpus.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from core import distributed, runs
from core.cli import run_main
from core.config import ConfigError
from leaderboard.collect import collect
from leaderboard.select import choose_learning_rates
from recipes.benchmark.run import BASELINES, TWIN_PREFIX, BenchmarkConfig, PretrainJob, TaskJob, run_benchmark

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", type=Path, default=DEMO_CONFIG, help="ASR config (default: the demo corpus)")
    p.add_argument("--setting", default="10min", choices=("10min", "1h", "10h"), help="Libri-light training set")
    p.add_argument("-u", "--upstream", action="append", default=[],
                   help="a baseline (fbank), NAME=CHECKPOINT or random:LABEL, repeatable (default: fbank)")
    p.add_argument("--finetune", action="append", default=[],
                   help="upstream label (NAME or checkpoint folder) to fine-tune too")
    p.add_argument("--lrs", default="", help="comma-separated learning-rate grid (default: the config's train.lr)")
    p.add_argument("--expdir", type=Path, default=Path("exp/asr"))
    p.add_argument("--tag", default="demo", help="track name prefix")
    p.add_argument("-o", "--override", action="append", default=[], help="section.key=value for every experiment")
    distributed.add_device_option(p)
    args = p.parse_args(argv)
    return run_main(lambda: _run(args), log_level=logging.WARNING,
                    resume_hint="run the same command again to go on (finished runs are kept, stopped ones resume)")


def _run(args: argparse.Namespace) -> int:
    distributed.init(args.device)
    bench, finetuned = benchmark_config(args)
    track = f"{args.tag}-{args.setting}"
    run_benchmark(bench, args.expdir, [], bench.upstreams, [track])
    if finetuned:
        run_benchmark(bench, args.expdir, [], finetuned, [f"{track}-finetuned"])
    table = error_rate_table(args.expdir / "downstream", list(bench.tasks))
    out = args.expdir / f"{track}-leaderboard.csv"
    table.to_csv(out, index=False)
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print(f"-> {out}")
    return 0


def benchmark_config(args: argparse.Namespace) -> tuple[BenchmarkConfig, list[str]]:
    """The benchmark config the arguments describe, and the upstreams to fine-tune as well."""
    try:
        lrs = [float(lr) for lr in args.lrs.split(",") if lr]
    except ValueError as err:
        raise ConfigError(f"--lrs {args.lrs!r}: {err}") from None
    pretrain, upstreams = {}, []
    for item in args.upstream or ["fbank"]:
        name, _, ckpt = item.partition("=")
        if ckpt:
            label = Path(ckpt).parent.name if Path(ckpt).name == runs.UPSTREAM_FILE else Path(ckpt).stem
            pretrain[label] = PretrainJob(upstream=name, checkpoint=str(Path(ckpt).resolve()))
            upstreams.append(label)
        elif name in BASELINES or name.startswith(TWIN_PREFIX):
            upstreams.append(name)
        else:
            raise ConfigError(f"-u {item!r}: give a checkpoint (NAME=CHECKPOINT), a baseline ({', '.join(BASELINES)}) "
                              "or random:LABEL for the random-weights twin of an upstream given with its checkpoint")
    for name in upstreams:
        if name.startswith(TWIN_PREFIX) and name.removeprefix(TWIN_PREFIX) not in pretrain:
            raise ConfigError(f"-u {name}: no upstream labelled {name.removeprefix(TWIN_PREFIX)!r} was given "
                              f"with a checkpoint (labels: {', '.join(pretrain) or 'none'})")
    track = f"{args.tag}-{args.setting}"
    overrides = [f"task.train_set=librilight-{args.setting}", *args.override]
    tasks = {track: TaskJob("asr", str(args.config), overrides, lrs=lrs)}
    finetuned = [name for name in upstreams
                 if name in args.finetune or (name in pretrain and pretrain[name].upstream in args.finetune)]
    if finetuned:
        tasks[f"{track}-finetuned"] = TaskJob("asr", str(args.config), [*overrides, "finetune.enabled=true"], lrs=lrs)
    return BenchmarkConfig([], pretrain, upstreams, tasks), finetuned


def error_rate_table(results_root: Path, tracks: list[str]) -> pd.DataFrame:
    """One row per upstream (``+finetuned`` apart) of the benchmark ``tracks`` at its chosen learning
    rate: dev and test WER and CER (%), sorted by test CER."""
    rows = collect(results_root)
    rows = choose_learning_rates(rows[rows["experiment"].str.startswith(tuple(f"{t}-" for t in tracks))])
    table = {}
    for row in rows[rows["selected"]].itertuples(index=False):
        entry = table.setdefault(row.upstream, {"upstream": row.upstream, "lr": row.learning_rate})
        entry[f"{row.split}_wer"] = row.value
        entry[f"{row.split}_cer"] = json.loads(row.other_metrics)["cer"]
    columns = ["upstream", "lr", "dev_wer", "dev_cer", "test_wer", "test_cer"]
    return pd.DataFrame(list(table.values()), columns=columns).sort_values("test_cer").reset_index(drop=True)


if __name__ == "__main__":
    sys.exit(main())
