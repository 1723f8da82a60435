"""Pre-training throughput of the tiny presets, side by side: audio seconds per wall second of one update.

Times forward + backward of ``pretrain_loss`` (training mode, each tiny preset's own dropout and
masking) on the same batch of 8 ten-second utterances (80 s of audio, the tiny recipes'
``batch_seconds``) for each model: HuBERT with the waveform CNN (``hubert``) and with the log-mel
front end (``hubert_mel``, MelHuBERT), wav2vec 2.0 (``wav2vec2``), BEST-RQ (``bestrq``). The models
live in one process and take turns, one step each per round after a warm-up round, so a load that
changes over the run slows them alike; the ratios printed are medians of per-round ratios to the
first model. Random weights; HuBERT gets random targets (100 classes), BEST-RQ draws its own from
its frozen quantiser; the audio is Gaussian noise (the compute does not depend on the content).

    python benchmarks/pretrain_speed.py [--models hubert wav2vec2] [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upstream import build_upstream  # noqa: E402  (after sys.path setup)

MODELS = {"hubert": ("hubert", {}), "hubert_mel": ("hubert", {"front_end": "mel"}), "wav2vec2": ("wav2vec2", {}),
          "bestrq": ("bestrq", {})}
UTTERANCES, SECONDS, CLASSES = 8, 10.0, 100


def timed_step(model, wavs: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor] | None) -> float:
    """Seconds of one forward + backward of ``pretrain_loss``."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss, _ = model.pretrain_loss(wavs, lengths, targets) if targets is not None else model.pretrain_loss(wavs, lengths)
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["hubert", "wav2vec2"])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (one step of each model), after a warm-up")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    samples = int(SECONDS * 16000)
    wavs = 0.1 * torch.randn(UTTERANCES, samples)
    lengths = torch.full((UTTERANCES,), samples)
    models, targets = {}, {}
    for name in args.models:
        upstream, settings = MODELS[name]
        extra = {"num_classes": CLASSES} if upstream == "hubert" else {}
        models[name] = model = build_upstream(upstream, preset="tiny", **settings, **extra).train()
        if model.needs_fit:
            model.fit(wavs.unbind())
        targets[name] = ([torch.randint(0, CLASSES, (int(n),)) for n in model.num_frames(lengths)]
                         if upstream == "hubert" else None)
    times = {name: [] for name in args.models}
    for _ in range(args.rounds + 1):  # the first round is the warm-up
        for name in args.models:
            times[name].append(timed_step(models[name], wavs, lengths, targets[name]))
    audio = UTTERANCES * SECONDS
    first = args.models[0]
    for name in args.models:
        step = statistics.median(times[name][1:])
        params = sum(p.numel() for p in models[name].parameters())
        ratios = [t0 / t for t0, t in zip(times[first][1:], times[name][1:], strict=True)]
        print(f"{name:<10} {step:6.2f} s per update of {audio:.0f} s of audio = {audio / step:6.1f} audio s per s; "
              f"{params / 1e6:.2f} M parameters; throughput vs {first}: median {statistics.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"{args.rounds} rounds, {args.threads} threads")


if __name__ == "__main__":
    main()
