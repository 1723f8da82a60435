"""The cost record (:func:`upstream.cost.measure_cost`) of several upstreams, one after the other in one run.

Each upstream is built with random weights from its preset (``NAME`` or ``NAME:PRESET``, e.g.
``hf:wav2vec2-base``, ``hf:wavlm-base``: published shapes) or loaded from a checkpoint (``NAME=PATH``), measured
with the runner's defaults (2, 5 and 10 s, 3 repeats) on this process's device and threads, and printed as one
Markdown row: parameters, those the forward pass reads, L x D, frames/s, MACs per second of audio, real-time
factor and peak memory (CPU: the process's resident set; the level before the pass is printed beside it).

    python benchmarks/cost_table.py [fbank apc:tiny hf:wav2vec2-base hf:wavlm-base ...] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upstream import build_upstream  # noqa: E402  (after sys.path setup)
from upstream.cost import measure_cost  # noqa: E402  (after sys.path setup)

DEFAULT = ["fbank", "apc:tiny", "mockingjay:tiny", "hubert:tiny", "wav2vec2:tiny", "bestrq:tiny",
           "hf:wav2vec2-base", "hf:wavlm-base"]


def build(spec: str):
    """``NAME``, ``NAME:PRESET`` (random weights) or ``NAME=CHECKPOINT``."""
    if "=" in spec:
        name, ckpt = spec.split("=", 1)
        return build_upstream(name, ckpt)
    name, _, preset = spec.partition(":")
    torch.manual_seed(0)
    return build_upstream(name, None, **({"preset": preset} if preset else {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("upstreams", nargs="*", default=DEFAULT)
    p.add_argument("--json", type=Path, help="also write every record here")
    args = p.parse_args()
    records = {}
    print(f"torch threads: {torch.get_num_threads()}")
    print("| upstream | parameters (M) | used (M) | L × D | frames/s | MACs/s (G) | RTF | peak mem (MB) "
          "| before (MB) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for spec in args.upstreams:
        upstream = build(spec).eval()
        cost = measure_cost(upstream)
        records[spec] = cost
        used = cost["parameters_used"]
        print(f"| `{spec}` | {cost['parameters'] / 1e6:.2f} | {'–' if used is None else f'{used / 1e6:.2f}'} | "
              f"{cost['num_layers']} × {cost['hidden_size']} | {cost['frames_per_second']:g} | "
              f"{cost['macs_per_second'] / 1e9:.3g} | {cost['rtf']:.4f} | {cost['peak_mem_mb']:.0f} | "
              f"{cost['mem_before_mb'] or 0:.0f} |", flush=True)
        del upstream
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
