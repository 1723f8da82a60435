"""Speech-translation decoding speed: greedy, beam search one utterance at a time, batched beam search.

Loads a trained ST experiment's best checkpoint, encodes the first N utterances of a split once
(frozen-feature cache), then times the three decoders on the same encoder outputs, checks that
both beam searches return the same translations, and prints utterances per second and the ratios.

    python benchmarks/st_decode_speed.py EXPDIR NAME [--split test] [-n 100] [--beam 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import runs  # noqa: E402  (after sys.path setup)
from corpora.batching import DurationBatcher  # noqa: E402  (after sys.path setup)
from downstream.runner import Experiment, FeatureSource  # noqa: E402  (after sys.path setup)
from downstream.tasks.st_decoding import beam_search, greedy  # noqa: E402  (after sys.path setup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("expdir", type=Path)
    p.add_argument("name")
    p.add_argument("--split", default="test")
    p.add_argument("-n", type=int, default=100, help="utterances (the first N of the split)")
    p.add_argument("--beam", type=int, default=5)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    exp = Experiment.load(args.expdir, args.name)
    ckpt = torch.load(exp.ckpt_dir / runs.BEST_CHECKPOINT, map_location="cpu", weights_only=True)
    exp.task.load_state(ckpt["task"])
    splits, upstream, featurizer, head = exp._setup()
    featurizer.load_state_dict(ckpt["featurizer"])
    head.load_state_dict(ckpt["head"])
    featurizer.eval()
    head.eval()
    records = splits[args.split][: args.n]
    cfg = exp.cfg
    cached = exp._cached_splits(upstream, {**splits, "sample": records}, featurizer, head)  # "sample" adds no record
    source = FeatureSource(upstream, records, cfg, cached.get("sample"))
    batches = DurationBatcher([r.duration for r in records], cfg.train.batch_seconds, cfg.train.batch_size,
                              seed=0).sequential()
    encoded = []
    for _, feats, lengths in source.batches(batches):
        memory, memory_len = head(featurizer(feats), lengths)
        encoded.append((memory, memory_len,
                        min(cfg.task.max_len, int(cfg.task.max_len_ratio * int(memory_len.max())) + 10)))

    def timed(decode):
        t0 = time.perf_counter()
        out = [hyp for memory, memory_len, max_len in encoded for hyp in decode(memory, memory_len, max_len)]
        return out, time.perf_counter() - t0

    def one_at_a_time(memory, memory_len, max_len):
        out = []
        for b in range(memory.shape[0]):
            n = int(memory_len[b])
            out += beam_search(head, memory[b:b + 1, :n], memory_len[b:b + 1], args.beam, max_len,
                               cfg.task.length_penalty)
        return out

    greedy_out, t_greedy = timed(lambda m, k, n: greedy(head, m, k, n))
    single, t_single = timed(one_at_a_time)
    batched, t_batched = timed(lambda m, k, n: beam_search(head, m, k, args.beam, n, cfg.task.length_penalty))
    n = len(records)
    print(f"{args.name}: {n} {args.split} utterances, {torch.get_num_threads()} threads, beam {args.beam}")
    print(f"  greedy (batched)           {t_greedy:7.1f} s  {n / t_greedy:6.2f} utt/s")
    print(f"  beam, one utterance a time {t_single:7.1f} s  {n / t_single:6.2f} utt/s")
    print(f"  beam, batched              {t_batched:7.1f} s  {n / t_batched:6.2f} utt/s")
    print(f"  batched / one-at-a-time beam speed-up: {t_single / t_batched:.2f}x; "
          f"beam / greedy time: {t_batched / t_greedy:.2f}x")
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    differs = sum(a != b for a, b in zip(batched, greedy_out, strict=True))
    print(f"  identical beam outputs: {same}/{n}; beam differs from greedy on {differs}/{n}")


if __name__ == "__main__":
    main()
