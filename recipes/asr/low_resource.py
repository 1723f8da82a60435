"""Low-resource ASR (Libri-light style): frozen upstreams with the small CTC head, and fine-tuning.

    python -m recipes.asr.low_resource [-c recipes/asr/librispeech_mini.yaml] [--setting 10min|1h|10h]
        [-u fbank -u apc=exp/pretrain/apc_tiny/upstream.pt ...] [--finetune hubert] [--lrs 1e-4,1e-3,1e-2]
        [--expdir exp/asr] [--tag ls]

For each upstream (``NAME`` or ``NAME=CHECKPOINT``) trains the ASR head on the frozen upstream
(experiment ``<tag>-<setting>-<label>``); for each upstream named by ``--finetune`` also fine-tunes
it with the head (``…-finetuned``, the finetune settings of the config). Upstreams with 10-ms frames get
``task.downsample=2``, 40-ms ones ``task.upsample=2``, so that every head runs at 20 ms. With
``--lrs``, every experiment trains once per learning rate (``…-lr<rate>``) and the table keeps, per
upstream, the rate with the best dev WER (:func:`leaderboard.select.choose_learning_rates`).
Reports dev and test WER/CER in ``<expdir>/<tag>-<setting>-leaderboard.csv``. Idempotent: finished
experiments are reused, interrupted ones resume. Without ``-c`` it runs on the toolkit's synthetic demo corpus.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from core import distributed
from core.config import load_yaml, parse_overrides
from core.logs import setup_console_logging
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.transcribed import frame_rate_settings
from leaderboard.collect import collect
from leaderboard.select import choose_learning_rates
from upstream import build_upstream

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", type=Path, default=DEMO_CONFIG, help="ASR config (default: the demo corpus)")
    p.add_argument("--setting", default="10min", choices=("10min", "1h", "10h"), help="Libri-light training set")
    p.add_argument("-u", "--upstream", action="append", default=[],
                   help="NAME or NAME=CHECKPOINT, repeatable (default: fbank)")
    p.add_argument("--finetune", action="append", default=[],
                   help="upstream label (NAME or checkpoint folder) to fine-tune too")
    p.add_argument("--lrs", default="", help="comma-separated learning-rate grid (default: the config's train.lr)")
    p.add_argument("--expdir", type=Path, default=Path("exp/asr"))
    p.add_argument("--tag", default="demo", help="experiment name prefix")
    p.add_argument("-o", "--override", action="append", default=[], help="section.key=value for every experiment")
    distributed.add_device_option(p)
    args = p.parse_args(argv)
    setup_console_logging(logging.WARNING)
    try:
        distributed.init(args.device)
        rates = [(f"-lr{float(lr):g}", [f"train.lr={float(lr)}"]) for lr in args.lrs.split(",") if lr] or [("", [])]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = []
    for item in args.upstream or ["fbank"]:
        upstream, _, ckpt = item.partition("=")
        ckpt = str(Path(ckpt).resolve()) if ckpt else None
        label = (Path(ckpt).parent.name if ckpt and Path(ckpt).name == "upstream.pt"
                 else Path(ckpt).stem if ckpt else upstream)
        frames = frame_rate_settings(build_upstream(upstream, ckpt).downsample_rate, concatenate=True)
        base = [f"task.train_set=librilight-{args.setting}", *(f"task.{k}={v}" for k, v in frames.items()),
                *args.override]
        runs = [(f"{args.tag}-{args.setting}-{label}{suffix}", [*base, *lr]) for suffix, lr in rates]
        if label in args.finetune or upstream in args.finetune:
            runs += [(f"{args.tag}-{args.setting}-{label}-finetuned{suffix}", [*base, *lr, "finetune.enabled=true"])
                     for suffix, lr in rates]
        for name, overrides in runs:
            names.append(name)
            if (args.expdir / name / "results.json").is_file():
                print(f"{name}: done already, reusing {args.expdir / name / 'results.json'}")
                continue
            spec = RunSpec("asr", upstream, ckpt)
            cfg = resolve_config(spec, load_yaml(args.config), parse_overrides(overrides))
            results = Experiment.create(args.expdir, name, spec, cfg).train()
            test = results["splits"]["test"]
            print(f"{name}: test WER {test['wer']:.1f}% CER {test['cer']:.1f}%")
    table = error_rate_table(args.expdir, names)
    out = args.expdir / f"{args.tag}-{args.setting}-leaderboard.csv"
    table.to_csv(out, index=False)
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print(f"-> {out}")
    return 0


def error_rate_table(expdir: Path, names: list[str]) -> pd.DataFrame:
    """One row per experiment at its upstream's chosen learning rate: upstream label, learning rate,
    dev and test WER and CER (%), sorted by test CER."""
    rows = collect(expdir)
    rows = choose_learning_rates(rows[rows["experiment"].isin(names)])
    table = {}
    for row in rows[rows["selected"]].itertuples(index=False):
        entry = table.setdefault(row.experiment, {"experiment": row.experiment, "upstream": row.upstream,
                                                  "lr": row.learning_rate})
        entry[f"{row.split}_wer"] = row.value
        entry[f"{row.split}_cer"] = json.loads(row.other_metrics)["cer"]
    columns = ["upstream", "lr", "dev_wer", "dev_cer", "test_wer", "test_cer", "experiment"]
    return pd.DataFrame(list(table.values()), columns=columns).sort_values("test_cer").reset_index(drop=True)


if __name__ == "__main__":
    sys.exit(main())
