"""Subsequence DTW speed of query-by-example search: batched torch against a plain-Python loop.

Random 768-dim features, queries of ``--query-frames`` frames (50: a 1-s word at 20 ms) against documents
of ``--document-frames`` frames (500: a 10-s utterance). Prints pairs per second for

- ``dtw``: :func:`downstream.qbe.dtw.subsequence_dtw` on precomputed local distances, all
  queries x ``--documents`` documents in one call, and :func:`downstream.qbe.dtw.reference_dtw` (plain
  Python, one pair at a time) on a few of the same matrices, with the ratio;
- ``distances + dtw``: :func:`downstream.qbe.dtw.match_scores` (cosine-exp distances, min-max, DTW), what a
  search costs per layer, against S3PRL's way pair by pair (SciPy ``cdist``, NumPy min-max, then the
  plain-Python DTW standing in for dtw-python's C loop).

On the CPU the batched search is bound by the distance product (N x M x D multiply-adds per pair:
1.9 G for the defaults), not by DTW (N x M cells).

    python benchmarks/qbe_dtw_speed.py [--queries 50] [--documents 32] [--threads 1] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from downstream.qbe.dtw import distance_matrix, match_scores, reference_dtw, subsequence_dtw  # noqa: E402


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--documents", type=int, default=32)
    p.add_argument("--query-frames", type=int, default=50)
    p.add_argument("--document-frames", type=int, default=500)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--python-pairs", type=int, default=4, help="pairs the plain-Python loop times")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(args.queries, args.query_frames, args.dim, generator=g).to(device)
    docs = torch.randn(args.documents, args.document_frames, args.dim, generator=g).to(device)
    q_len = torch.full((args.queries,), args.query_frames, device=device)
    d_len = torch.full((args.documents,), args.document_frames, device=device)
    pairs = args.queries * args.documents

    dist = distance_matrix(queries, docs, q_len, d_len)
    dtw_s = timed(lambda: subsequence_dtw(dist, q_len, d_len), device, args.repeats)
    full_s = timed(lambda: match_scores(queries, q_len, docs, d_len, max_elements=2**26), device, args.repeats)
    matrices = [dist[i % args.queries, i % args.documents].cpu().tolist() for i in range(args.python_pairs)]
    t0 = time.perf_counter()
    reference = [reference_dtw(m) for m in matrices]
    python_s = (time.perf_counter() - t0) / args.python_pairs
    features = [(queries[i % args.queries].cpu().double().numpy(), docs[i % args.documents].cpu().double().numpy())
                for i in range(args.python_pairs)]
    t0 = time.perf_counter()
    for q, x in features:
        local = np.expm1(cdist(q, x, "cosine"))
        low, high = local.min(1, keepdims=True), local.max(1, keepdims=True)
        reference_dtw(((local - low) / np.clip(high - low, 1e-9, None)).tolist())
    pair_s = (time.perf_counter() - t0) / args.python_pairs
    batched = subsequence_dtw(dist, q_len, d_len)
    assert all(abs(batched[i % args.queries, i % args.documents].item() - r) < 1e-4 for i, r in enumerate(reference))

    print(f"{args.query_frames}-frame queries x {args.document_frames}-frame documents, {args.dim} dims, "
          f"{args.queries} x {args.documents} = {pairs} pairs per call, device {device}"
          f"{f', {args.threads} CPU thread(s)' if device.type == 'cpu' else ''}")
    rows = [("dtw: plain Python, pair by pair", 1 / python_s, 1.0),
            ("dtw: batched torch", pairs / dtw_s, python_s * pairs / dtw_s),
            ("distances + dtw: SciPy + Python, pair by pair", 1 / pair_s, 1.0),
            ("distances + dtw: batched torch", pairs / full_s, pair_s * pairs / full_s)]
    print(f"{'':46s} {'pairs/s':>10s} {'ratio':>8s}")
    for name, rate, ratio in rows:
        print(f"{name:46s} {rate:10.1f} {ratio:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
