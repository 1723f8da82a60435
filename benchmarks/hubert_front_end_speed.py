"""HuBERT pre-training step time with the waveform CNN and with the log-mel front end (MelHuBERT).

Times forward + backward of ``pretrain_loss`` (training mode, the tiny preset's dropout) on one
batch of 8 ten-second utterances (80 s of audio, the tiny recipes' ``batch_seconds``) for the tiny
preset with ``front_end`` ``cnn`` and ``mel``. Both models live in one process and take turns, one
step each per round after a warm-up round, so a load that changes over the run (other jobs on
shared cores) slows both alike; the ratio printed is the median of the rounds' cnn / mel ratios.
Random weights, random targets (100 classes), Gaussian noise as audio: the compute does not depend
on the content. Also prints each front end's forward time alone (for the CNN, its backward is on
top of that) and the parameters.

    python benchmarks/hubert_front_end_speed.py [--rounds 5] [--threads 2]
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

from upstream.hubert import HubertUpstream, build_hubert  # noqa: E402  (after sys.path setup)

FRONT_ENDS = ("cnn", "mel")
UTTERANCES, SECONDS, CLASSES = 8, 10.0, 100


def timed_step(model: HubertUpstream, wavs: torch.Tensor, lengths: torch.Tensor,
               targets: list[torch.Tensor]) -> tuple[float, float]:
    """Seconds of one forward + backward of ``pretrain_loss``, and of the front end's forward alone."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss, _ = model.pretrain_loss(wavs, lengths, targets)
    loss.backward()
    step = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        model.input_features(wavs, lengths)
    return step, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (one step of each model), after a warm-up")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    samples = int(SECONDS * 16000)
    wavs = 0.1 * torch.randn(UTTERANCES, samples)
    lengths = torch.full((UTTERANCES,), samples)
    models, targets = {}, {}
    for front_end in FRONT_ENDS:
        models[front_end] = model = build_hubert("tiny", front_end=front_end, num_classes=CLASSES).train()
        if model.needs_fit:
            model.fit(wavs.unbind())
        targets[front_end] = [torch.randint(0, CLASSES, (int(n),)) for n in model.num_frames(lengths)]
    times = {front_end: [] for front_end in FRONT_ENDS}
    for _ in range(args.rounds + 1):  # the first round is the warm-up
        for front_end in FRONT_ENDS:
            times[front_end].append(timed_step(models[front_end], wavs, lengths, targets[front_end]))
    for front_end in FRONT_ENDS:
        step = statistics.median(s for s, _ in times[front_end][1:])
        front = statistics.median(f for _, f in times[front_end][1:])
        params = sum(p.numel() for p in models[front_end].parameters())
        frames = int(models[front_end].num_frames(lengths)[0])
        print(f"{front_end:<4} {step:>6.2f} s per forward + backward of {UTTERANCES * SECONDS:.0f} s of audio "
              f"({frames} frames per utterance); front-end forward {front:>5.2f} s; {params / 1e6:.2f} M parameters")
    ratios = [c[0] / m[0] for c, m in zip(times["cnn"][1:], times["mel"][1:], strict=True)]
    print(f"\ncnn / mel step time: median {statistics.median(ratios):.2f} over {args.rounds} rounds "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); {args.threads} threads")


if __name__ == "__main__":
    main()
