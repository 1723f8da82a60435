"""How each hidden layer of an upstream spreads its frames: what a frame-level head has to work with.

Per layer, over the valid frames of a sample of utterances:

* ``within_utterance``: the share of the feature variance (summed over dimensions) left after
  subtracting each utterance's mean frame. Low: the layer mostly says which utterance (speaker,
  channel) a frame is from, which a per-frame phone or character head cannot use;
* ``adjacent_cosine``: mean cosine similarity of consecutive frames, each centred on its utterance's
  mean. Near 0: frame-to-frame noise; near 1: slowly varying features;
* ``effective_rank``: exp of the entropy of the normalised squared singular values of the centred
  frames (Roy & Vetterli, 2007): how many directions the frames really use, out of the layer's width.

A random-weights twin (``--random``: the checkpoint's settings, the seed's weights, normalisation
statistics fitted on the sampled audio as a downstream run fits them) shows what the architecture
gives on its own, as the benchmark's ``random:NAME`` rows do.

    python -m upstream.pretrain.layer_stats -u bestrq -k exp/pretrain/bestrq_tiny/upstream.pt \
        --data ../shared/data/librispeech_mini/librispeech_finetuning [--random] [--utterances 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

import torch

from core.cli import run_main
from corpora.audio import load_audio
from corpora.folder import scan_audio

from ..base import Upstream
from ..registry import build_upstream, checkpoint_settings


def layer_statistics(frames: list[torch.Tensor]) -> dict[str, float]:
    """The statistics of one layer (module docstring) from each utterance's valid frames, (T_i, D) each."""
    if not frames or any(f.ndim != 2 or f.shape[0] < 2 for f in frames):
        raise ValueError("need at least one utterance, each with two or more frames of shape (T, D)")
    frames = [f.double() for f in frames]
    pooled = torch.cat(frames)
    centred = [f - f.mean(0) for f in frames]
    total = pooled.var(0, unbiased=False).sum()
    within = torch.cat(centred).var(0, unbiased=False).sum()
    adjacent = torch.cat([torch.nn.functional.cosine_similarity(c[1:], c[:-1], dim=-1) for c in centred])
    power = torch.linalg.svdvals(pooled - pooled.mean(0)) ** 2
    p = power / power.sum()
    rank = torch.exp(-(p[p > 0] * p[p > 0].log()).sum())
    return {"within_utterance": float(within / total), "adjacent_cosine": float(adjacent.mean()),
            "effective_rank": float(rank)}


@torch.no_grad()
def upstream_layer_statistics(upstream: Upstream, wavs: list[torch.Tensor]) -> list[dict[str, float]]:
    """:func:`layer_statistics` of every hidden layer of ``upstream`` on (S,) 16 kHz waveforms."""
    lengths = torch.tensor([len(w) for w in wavs])
    out = upstream.eval()(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths)
    frames = upstream.num_frames(lengths).tolist()
    return [{"layer": i, **layer_statistics([h[b, : frames[b]] for b in range(len(wavs))])}
            for i, h in enumerate(out.hidden_states)]


def sample_audio(sources: list[str], utterances: int, seed: int) -> list[torch.Tensor]:
    """``utterances`` segments (of at most 10 s) drawn with ``seed`` from the audio under ``sources``."""
    records = [r for s in sources for r in scan_audio(s)[0]]
    chosen = random.Random(seed).sample(records, min(utterances, len(records)))
    return [load_audio(r.path, r.start, r.duration) for r in chosen]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m upstream.pretrain.layer_stats", description=__doc__.split("\n\n")[0])
    p.add_argument("-u", "--upstream", required=True, help="upstream name (as run_downstream.py -u)")
    p.add_argument("-k", "--upstream_ckpt", help="checkpoint (needed with --random: its settings are used)")
    p.add_argument("--data", action="append", required=True, help="audio folder or manifest; repeatable")
    p.add_argument("--random", action="store_true", help="the checkpoint's random-weights twin")
    p.add_argument("--utterances", type=int, default=8, help="segments to sample (default: 8)")
    p.add_argument("--seed", type=int, default=1337, help="sampling seed, and the twin's weights (default: 1337)")
    p.add_argument("--out", type=Path, help="also write the statistics as JSON here")
    args = p.parse_args(argv)
    if args.random and not args.upstream_ckpt:
        p.error("--random needs -k: the twin takes that checkpoint's settings")
    return run_main(lambda: _report(args), log_level=logging.WARNING)


def _report(args: argparse.Namespace) -> int:
    """Sample, measure every layer, print (and write ``--out``)."""
    wavs = sample_audio(args.data, args.utterances, args.seed)
    if args.random:
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            upstream = build_upstream(args.upstream, **checkpoint_settings(args.upstream_ckpt, args.upstream))
        if upstream.needs_fit:
            upstream.fit(wavs)
    else:
        upstream = build_upstream(args.upstream, args.upstream_ckpt)
    stats = upstream_layer_statistics(upstream, wavs)
    print(f"{args.upstream} {'random twin of ' if args.random else ''}{args.upstream_ckpt or ''}: "
          f"{len(wavs)} segments, width {upstream.hidden_size}")
    print("layer  within_utterance  adjacent_cosine  effective_rank")
    for s in stats:
        print(f"{s['layer']:5d}  {s['within_utterance']:16.3f}  {s['adjacent_cosine']:15.3f}  "
              f"{s['effective_rank']:14.1f}")
    if args.out:
        args.out.write_text(json.dumps({"upstream": args.upstream, "checkpoint": args.upstream_ckpt,
                                        "random": args.random, "segments": len(wavs), "layers": stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
