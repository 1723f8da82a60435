"""Keyword-spotting head training speed with and without the frozen-feature cache.

Trains the same SUPERB KS head (batch 32, weighted layer sum) for a few epochs with four
configurations, each in its own process (so peak RSS is its own): FBANK (global CMVN) and a frozen
Transformer of Mockingjay-base size (log-mel -> 3 x 768, 12 heads, FFN 3072, random weights;
4 hidden states), each with the cache on and off. Prints training steps per second (the training
loop only; extraction is reported apart), peak RSS, and the ratios side by side.

    python benchmarks/cache_speed.py [--data ../shared/data/speech_commands_fsdd] [--epochs 3]

Without ``--data`` it uses ``../shared/data/speech_commands_fsdd`` when present, else the demo corpus.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.tensors import lengths_to_mask  # noqa: E402  (after sys.path setup)
from corpora.demo import build_demo_keywords  # noqa: E402  (after sys.path setup)
from upstream.base import Upstream, UpstreamOutput  # noqa: E402  (after sys.path setup)
from upstream.frontend import HOP, kaldi_num_frames, log_mel_fbank, utterance_cmvn  # noqa: E402  (after sys.path setup)

FSDD = ROOT.parent / "shared" / "data" / "speech_commands_fsdd"


class RandomTransformer(Upstream):
    """Log-mel (80, utterance CMVN) -> Linear(80, 768) -> 3 Transformer layers; 4 hidden states (B, T, 768)."""

    name = "bench_transformer"
    downsample_rate = HOP

    def __init__(self, layers: int = 3, dim: int = 768, heads: int = 12, ffn: int = 3072, seed: int = 0):
        super().__init__()
        self.hidden_size, self.num_layers = dim, layers + 1
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.input_proj = nn.Linear(80, dim)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True) for _ in range(layers))

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return kaldi_num_frames(num_samples)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        feats, lengths = self.pad_frames([utterance_cmvn(log_mel_fbank(w[:n]))
                                          for w, n in zip(wavs, wav_lengths.tolist(), strict=True)])
        pad = ~lengths_to_mask(lengths, feats.shape[1])
        x = self.input_proj(feats)
        states = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
            states.append(x)
        return UpstreamOutput([s.masked_fill(pad.unsqueeze(-1), 0.0) for s in states], lengths)


def worker(upstream: str, cache: bool, data: Path, epochs: int, workdir: Path) -> dict:
    """One configuration, in this process: train, then report speed and peak RSS."""
    from core.config import parse_overrides  # noqa: PLC0415  (worker process only)
    from corpora.manifest import read_manifest  # noqa: PLC0415  (worker process only)
    from corpora.speech_commands import prepare_speech_commands  # noqa: PLC0415  (worker process only)
    from downstream.runner import Experiment, RunSpec, resolve_config  # noqa: PLC0415  (worker process only)
    from upstream.registry import register_upstream  # noqa: PLC0415  (worker process only)

    register_upstream(RandomTransformer.name, RandomTransformer,
                      "benchmark only: random Mockingjay-base-sized Transformer")
    train = read_manifest(prepare_speech_commands(data, workdir / "manifests", classes="all")["train"])
    steps = epochs * math.ceil(len(train) / 32)
    spec = RunSpec("ks", upstream)
    cfg = resolve_config(spec, {}, parse_overrides([
        "task.corpus=speech_commands", f"task.root={data}", "task.classes=all", f"cache.enabled={str(cache).lower()}",
        f"cache.root={workdir / 'cache'}", f"train.total_steps={steps}", f"train.eval_every={steps}",
        f"train.save_every={steps}", "train.batch_size=32"]))
    name = f"{upstream}-{'cache' if cache else 'live'}"
    results = Experiment.create(workdir / "exp", name, spec, cfg).train()
    t = results["training"]
    return {"config": name, "steps": t["train_steps"], "train_seconds": t["train_seconds"],
            "steps_per_second": t["steps_per_second"], "extract_seconds": t["extract_seconds"],
            "test_accuracy": results["splits"]["test"]["accuracy"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="Speech Commands-layout corpus")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--worker", nargs=2, metavar=("UPSTREAM", "CACHE"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.data is None:
        if FSDD.is_dir():
            args.data = FSDD
        else:
            args.data = build_demo_keywords(ROOT / "data" / "demo_keywords")
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1] == "1", args.data, args.epochs, args.workdir)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for upstream in ("fbank_global", RandomTransformer.name):
            for cache in (False, True):
                out = subprocess.run([sys.executable, __file__, "--worker", upstream, str(int(cache)),
                                      "--data", str(args.data), "--epochs", str(args.epochs), "--workdir", tmp],
                                     check=True, capture_output=True, text=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[row["config"]] = row
                print(f"{row['config']:<24} {row['steps']:>5} steps  {row['steps_per_second']:>8.2f} steps/s  "
                      f"extract {row['extract_seconds']:>6.1f} s  peak RSS {row['peak_rss_mb']:>7.0f} MB  "
                      f"test acc {row['test_accuracy']:.3f}", flush=True)
    sps = {k: v["steps_per_second"] for k, v in rows.items()}
    t = RandomTransformer.name
    print(f"\ndata: {args.data}  epochs: {args.epochs}  torch threads: {torch.get_num_threads()}")
    print(f"transformer, cache vs live:           {sps[f'{t}-cache'] / sps[f'{t}-live']:.1f}x  (target >= 10x)")
    print(f"transformer cached / FBANK live:      {sps[f'{t}-cache'] / sps['fbank_global-live']:.2f}  "
          "(target >= 0.67: within 1.5x of FBANK)")
    print(f"transformer cached / FBANK cached:    {sps[f'{t}-cache'] / sps['fbank_global-cache']:.2f}")


if __name__ == "__main__":
    main()
