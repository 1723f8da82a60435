"""Cached head training on each utterance's mean frame against training on all its frames.

SUPERB's utterance heads (``proj_mean_linear``: Linear, mean pooling, Linear) under the weighted layer sum
depend on an utterance's frames only through their mean, so the runner trains them on the mean frame of
each cached utterance (:func:`downstream.runner.reads_mean_frame`, :class:`downstream.cache.MeanFrameSubset`).
This script trains the same experiment both ways, each in its own process, from one feature-cache entry:
``mean`` as the toolkit runs it, ``frames`` with the mean-frame path switched off in that process. Prints
training steps per second, the time the means take (part of extraction), the dev and test metrics of both
(equal up to float rounding: the same model, the same batches) and the speed ratio.

    python benchmarks/mean_frame_speed.py [--task ic] [--root ../shared/data/coffee_orders] [--steps 200]
        [--upstream fbank_global]

Defaults: intent classification on ``../shared/data/coffee_orders`` (about 9-s utterances) when present,
else keyword spotting on the demo keywords (1-s utterances: the smaller gain).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpora.demo import build_demo_keywords  # noqa: E402  (after sys.path setup)

COFFEE = ROOT.parent / "shared" / "data" / "coffee_orders"
TASKS = {"ic": ["task.corpus=fluent_commands", "task.select_metric=slot_accuracy"],
         "ks": ["task.corpus=speech_commands", "task.classes=all"]}


def worker(task: str, root: Path, upstream: str, steps: int, mode: str, workdir: Path) -> dict:
    """One configuration, in this process: train, then report speed and metrics."""
    import downstream.runner as runner  # noqa: PLC0415  (worker process only)
    from core.config import parse_overrides  # noqa: PLC0415  (worker process only)

    if mode == "frames":  # this process only: every frame of every utterance, as before the mean-frame path
        runner.reads_mean_frame = lambda featurizer, head: False
    spec = runner.RunSpec(task, upstream)
    cfg = runner.resolve_config(spec, {}, parse_overrides([
        *TASKS[task], f"task.root={root}", f"cache.root={workdir / 'cache'}", f"train.total_steps={steps}",
        f"train.eval_every={steps}", f"train.save_every={steps}", "train.batch_size=32", "train.lr=1e-3"]))
    results = runner.Experiment.create(workdir / "exp", f"{task}-{upstream}-{mode}", spec, cfg).train()
    t = results["training"]
    primary, selection = results["primary_metric"], results["selection_metric"]
    return {"mode": mode, "steps": t["train_steps"], "steps_per_second": t["steps_per_second"],
            "extract_seconds": t["extract_seconds"], "primary": primary,
            "dev": results["splits"]["dev"][primary], "test": results["splits"]["test"][primary],
            "selection": selection, "dev_selection": results["splits"]["dev"][selection],
            "test_selection": results["splits"]["test"][selection]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(TASKS), default=None, help="default: ic when coffee_orders is present")
    p.add_argument("--root", type=Path, default=None, help="the task's corpus")
    p.add_argument("--upstream", default="fbank_global")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--worker", choices=("mean", "frames"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.task is None:
        args.task = "ic" if COFFEE.is_dir() else "ks"
    if args.root is None:
        args.root = COFFEE if args.task == "ic" else build_demo_keywords(ROOT / "data" / "demo_keywords")
    if args.worker:
        print(json.dumps(worker(args.task, args.root, args.upstream, args.steps, args.worker, args.workdir)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("mean", "frames"):  # the first process fills the cache entry both read
            out = subprocess.run([sys.executable, __file__, "--worker", mode, "--task", args.task, "--root",
                                  str(args.root), "--upstream", args.upstream, "--steps", str(args.steps),
                                  "--workdir", tmp], check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows[mode] = row
            print(f"{mode:<7} {row['steps']:>5} steps  {row['steps_per_second']:>9.2f} steps/s  "
                  f"extract (+ means) {row['extract_seconds']:>6.1f} s  dev {row['primary']} {row['dev']:.4f}  "
                  f"test {row['test']:.4f}  ({row['selection']}: dev {row['dev_selection']:.4f} test "
                  f"{row['test_selection']:.4f})", flush=True)
    threads = torch.get_num_threads()
    print(f"\n{args.task} on {args.root}, {args.upstream}, {args.steps} steps, torch threads: {threads}")
    ratio = rows["mean"]["steps_per_second"] / rows["frames"]["steps_per_second"]
    print(f"mean frame / all frames, steps/s: {ratio:.1f}x")
    for key in ("dev", "test", "dev_selection", "test_selection"):
        print(f"|{key} difference| {abs(rows['mean'][key] - rows['frames'][key]):.4f}")


if __name__ == "__main__":
    main()
