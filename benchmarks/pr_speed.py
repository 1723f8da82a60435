"""Phoneme-recognition head training throughput next to keyword spotting's, feature cache on.

Trains SUPERB's PR head (linear + CTC) and KS head (linear, mean pooling, linear) for a fixed number
of updates on FBANK and on a tiny upstream (APC tiny: random weights, or ``--ckpt``), each
configuration in its own process, and prints audio seconds trained per wall second of the training
loop (extraction, validation and saving excluded), peak RSS, and the ratios side by side.

    python benchmarks/pr_speed.py [--steps 100] [--ckpt exp/pretrain/apc_tiny/upstream.pt]

Data: ``../shared/data`` (librispeech_mini, speech_commands_fsdd) when present, else the demo corpora.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def _task_overrides(task: str) -> list[str]:
    if task == "pr":
        if (SHARED / "librispeech_mini").is_dir():
            return ["task.corpus=librispeech", f"task.root={SHARED / 'librispeech_mini'}", "task.folds=5"]
        return ["task.corpus=demo", f"task.root={ROOT / 'data/demo_asr'}"]
    if (SHARED / "speech_commands_fsdd").is_dir():
        return ["task.corpus=speech_commands", f"task.root={SHARED / 'speech_commands_fsdd'}", "task.classes=all"]
    return ["task.corpus=demo", f"task.root={ROOT / 'data/demo_keywords'}"]


def worker(task: str, upstream: str, ckpt: str | None, steps: int, workdir: Path) -> dict:
    """One configuration, in this process: extract (cache), train ``steps`` updates, report throughput."""
    from core.config import parse_overrides  # noqa: PLC0415  (worker process only)
    from corpora.batching import DurationBatcher  # noqa: PLC0415  (worker process only)
    from downstream.runner import Experiment, RunSpec, resolve_config  # noqa: PLC0415  (worker process only)

    spec = RunSpec(task, upstream, ckpt)
    extra = ["upstream.preset=tiny"] if upstream != "fbank" and not ckpt else []
    cfg = resolve_config(spec, {}, parse_overrides([
        *_task_overrides(task), *extra, f"cache.root={workdir / 'cache'}", f"train.total_steps={steps}",
        f"train.eval_every={steps}", f"train.save_every={steps}", "train.batch_size=32", "train.batch_seconds=240"]))
    experiment = Experiment.create(workdir / "exp", f"{task}-{upstream}", spec, cfg)
    results = experiment.train()
    train = experiment.task.prepare()["train"]
    durations = [r.duration for r in train]
    batches = DurationBatcher(durations, cfg.train.batch_seconds, cfg.train.batch_size, seed=cfg.train.seed).epoch(0)
    audio_per_step = sum(durations) / len(batches)
    t = results["training"]
    return {"config": f"{task}-{upstream}", "steps": t["train_steps"], "train_seconds": t["train_seconds"],
            "audio_s_per_s": t["train_steps"] * audio_per_step / t["train_seconds"],
            "extract_seconds": t["extract_seconds"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--ckpt", default=None,
                   help="APC checkpoint for the tiny upstream (default: random weights, preset tiny)")
    p.add_argument("--worker", nargs=2, metavar=("TASK", "UPSTREAM"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        ckpt = args.ckpt if args.worker[1] == "apc" else None
        print(json.dumps(worker(args.worker[0], args.worker[1], ckpt, args.steps, args.workdir)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for upstream in ("fbank", "apc"):
            for task in ("ks", "pr"):
                cmd = [sys.executable, __file__, "--worker", task, upstream, "--steps", str(args.steps),
                       "--workdir", tmp, *(["--ckpt", args.ckpt] if args.ckpt else [])]
                row = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                rows[row["config"]] = row
                print(f"{row['config']:<10} {row['steps']:>5} steps in {row['train_seconds']:>7.1f} s  "
                      f"{row['audio_s_per_s']:>8.1f} audio s / s  extract {row['extract_seconds']:>6.1f} s  "
                      f"peak RSS {row['peak_rss_mb']:>6.0f} MB", flush=True)
    speed = {k: v["audio_s_per_s"] for k, v in rows.items()}
    print(f"\nPR / KS throughput, FBANK: {speed['pr-fbank'] / speed['ks-fbank']:.2f}   "
          f"tiny APC: {speed['pr-apc'] / speed['ks-apc']:.2f}")
    print(f"tiny APC / FBANK throughput, PR: {speed['pr-apc'] / speed['pr-fbank']:.2f}   "
          f"KS: {speed['ks-apc'] / speed['ks-fbank']:.2f}")


if __name__ == "__main__":
    main()
