"""Subsequence DTW for query-by-example search, vectorised over many (query, document) pairs in torch.

Frame distance (SUPERB's ``cosine_exp``, S3PRL ``quesst14_dtw``): ``d(q_i, x_j) = exp(1 - cos(q_i, x_j)) - 1``,
then each query frame's row is min-max normalised over the document's frames,
``(d - min_j d) / max(max_j d - min_j d, 1e-9)``, so every row runs from 0 to 1 (:func:`distance_matrix`).

Step pattern: dtw-python's ``asymmetric`` (Giorgino's notation ``Step(Δquery, Δdocument, weight)``:
(1, 0, 1), (1, 1, 1), (1, 2, 1)), which S3PRL's QbE recipe runs with ``open_begin`` and ``open_end``.
With the query on rows i (N frames) and the document on columns j (M frames)::

    g[0, j] = d[0, j]                                   (open begin: a match may start at any document frame)
    g[i, j] = d[i, j] + min(g[i-1, j], g[i-1, j-1], g[i-1, j-2])
    cost    = min_j g[N-1, j] / N                       (open end; normalisation "N")

Every path takes exactly one step per query frame, so it sums N local distances and dividing by
the query length is the pattern's own normalisation (dtw-python's ``normalizedDistance``). A query
frame may stay on a document frame (slope 0) or skip one (slope 2): the matched stretch of document
is between 1 and 2N - 1 frames. dtw-python implements open begin by prepending a zero row to the
local distances, which gives the same first row as ``g[0, j] = d[0, j]`` above.

Because row i depends only on row i - 1, one query frame's step is a tensor operation over every
document frame of every pair at once: :func:`subsequence_dtw` loops N times (the longest query),
whatever the number of pairs. :func:`reference_dtw` is the same recursion in plain Python, the
definition the tests compare against.

A query shorter than :data:`MIN_QUERY_FRAMES` is an error naming it (S3PRL gives such queries the
score 0 for every document; here the query selection keeps them out, so one reaching DTW is a bug).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MIN_QUERY_FRAMES = 5
"""Queries with fewer frames are refused (S3PRL's QbE recipe scores them 0 instead)."""
MINMAX_EPS = 1e-9
"""Floor of a row's (max - min) in the min-max normalisation (S3PRL's ``np.clip(..., 1e-9, inf)``)."""
COSINE_EPS = 1e-8
"""Floor of a frame's norm when computing cosines (an all-zero frame has cosine 0 with everything)."""


def distance_matrix(queries: torch.Tensor, documents: torch.Tensor, query_lengths: torch.Tensor | None = None,
                    document_lengths: torch.Tensor | None = None, minmax: bool = True) -> torch.Tensor:
    """Local distances of every query frame to every document frame, for every (query, document) pair.

    Args:
        queries: (Q, N, D) features (zero-padded after ``query_lengths``), or one (N, D) query.
        documents: (K, M, D) features, or one (M, D) document.
        query_lengths, document_lengths: (Q,) and (K,) valid frame counts; None: all frames valid.
        minmax: normalise each query frame's row to [0, 1] over the document's valid frames.

    Returns:
        (Q, K, N, M) float32 ``exp(cosine distance) - 1`` (min-max normalised per row); entries in padded
        rows or columns are 0 (no path that :func:`subsequence_dtw` scores passes through them). With a
        single query and document as 2-D inputs: the (N, M) matrix.
    """
    single = queries.dim() == 2 and documents.dim() == 2
    if queries.dim() == 2:
        queries = queries.unsqueeze(0)
    if documents.dim() == 2:
        documents = documents.unsqueeze(0)
    q_len = _lengths(query_lengths, queries.shape[0], queries.shape[1], queries.device)
    d_len = _lengths(document_lengths, documents.shape[0], documents.shape[1], documents.device)
    q = F.normalize(queries.float(), dim=-1, eps=COSINE_EPS)
    x = F.normalize(documents.float(), dim=-1, eps=COSINE_EPS)
    Q, N, D = q.shape
    K, M, _ = x.shape
    cos = q.reshape(Q * N, D) @ x.reshape(K * M, D).T  # one large product, then in-place steps: few temporaries
    dist = cos.view(Q, N, K, M).permute(0, 2, 1, 3).contiguous()
    del cos
    dist.clamp_(-1.0, 1.0).neg_().add_(1.0).expm1_()  # exp(1 - cos) - 1
    col_pad = torch.arange(M, device=dist.device) >= d_len[:, None]  # (K, M)
    cols = col_pad[None, :, None, :] if bool(col_pad.any()) else None
    if minmax:
        if cols is not None:
            low = dist.masked_fill_(cols, math.inf).amin(-1, keepdim=True)
            high = dist.masked_fill_(cols, -math.inf).amax(-1, keepdim=True)
        else:
            low, high = dist.amin(-1, keepdim=True), dist.amax(-1, keepdim=True)
        dist.sub_(low).div_((high - low).clamp_min_(MINMAX_EPS))
    if cols is not None:
        dist.masked_fill_(cols, 0.0)
    row_pad = torch.arange(N, device=dist.device) >= q_len[:, None]  # (Q, N)
    if bool(row_pad.any()):
        dist.masked_fill_(row_pad[:, None, :, None], 0.0)
    return dist[0, 0] if single else dist


def subsequence_dtw(distances: torch.Tensor, query_lengths: torch.Tensor | None = None,
                    document_lengths: torch.Tensor | None = None, query_ids: Sequence[str] | None = None,
                    min_query_frames: int = MIN_QUERY_FRAMES) -> torch.Tensor:
    """Length-normalised subsequence DTW cost of every (query, document) pair (module docstring).

    Args:
        distances: (Q, K, N, M) local distances (:func:`distance_matrix`), or one (N, M) pair.
        query_lengths, document_lengths: (Q,) and (K,) valid frame counts; None: all frames valid.
        query_ids: names for the error message (default: the query's index).
        min_query_frames: shorter queries are refused.

    Returns:
        (Q, K) costs ``min_j g[n_q - 1, j] / n_q`` over each document's valid frames (a scalar for one
        pair); the detection score is its negative.

    Raises:
        ValueError: a query has fewer than ``min_query_frames`` frames (the message names it), or a
            document has no frame.
    """
    single = distances.dim() == 2
    if single:
        distances = distances[None, None]
    Q, K, N, M = distances.shape
    q_len = _lengths(query_lengths, Q, N, distances.device)
    d_len = _lengths(document_lengths, K, M, distances.device)
    short = (q_len < min_query_frames).nonzero().flatten().tolist()
    if short:
        i = short[0]
        name = query_ids[i] if query_ids is not None else f"#{i}"
        raise ValueError(f"query {name!r} has {int(q_len[i])} frames; subsequence DTW needs at least "
                         f"{min_query_frames} ({len(short)} quer{'y' if len(short) == 1 else 'ies'} too short: select "
                         "longer terms or use an upstream with a finer frame rate)")
    if (d_len < 1).any():
        raise ValueError(f"document #{int((d_len < 1).nonzero()[0])} has no frames")
    col_pad = (torch.arange(M, device=distances.device) >= d_len[:, None])[None]  # (1, K, M)
    out = torch.empty(Q, K, dtype=distances.dtype, device=distances.device)
    ends = (q_len - 1).tolist()
    g = distances[:, :, 0].clone()
    best = torch.empty_like(g)  # min(g[j], g[j-1], g[j-2]) of the previous row, built in place
    for i in range(int(q_len.max())):
        if i:
            best[..., 0] = g[..., 0]
            torch.minimum(g[..., 1:], g[..., :-1], out=best[..., 1:])
            torch.minimum(best[..., 2:], g[..., :-2], out=best[..., 2:])
            torch.add(best, distances[:, :, i], out=g)
        done = [q for q, end in enumerate(ends) if end == i]
        if done:
            rows = torch.tensor(done, device=distances.device)
            last = g[rows].masked_fill(col_pad, math.inf).amin(-1)
            out[rows] = last / q_len[rows, None].to(distances.dtype)
    return out[0, 0] if single else out


def match_scores(queries: torch.Tensor, query_lengths: torch.Tensor, documents: torch.Tensor,
                 document_lengths: torch.Tensor, query_ids: Sequence[str] | None = None,
                 max_elements: int = 2**25, query_group: int = 16) -> torch.Tensor:
    """Detection scores ``-cost`` (Q, K) of every query against every document.

    Queries are taken by length, ``query_group`` at a time, each group padded to its own longest (little
    padding to compute through); documents in chunks whose local distances hold at most ``max_elements``
    values (bounded memory).
    """
    Q, K, M = queries.shape[0], documents.shape[0], documents.shape[1]
    q_len = _lengths(query_lengths, Q, queries.shape[1], queries.device)
    d_len = _lengths(document_lengths, K, M, documents.device)
    scores = torch.empty(Q, K, device=queries.device)
    order = sorted(range(Q), key=lambda i: (int(q_len[i]), i))
    for start in range(0, Q, query_group):
        rows = order[start:start + query_group]
        index = torch.tensor(rows, device=queries.device)
        n = int(q_len[index].max())
        group, group_len = queries[index, :n], q_len[index]
        ids = [query_ids[r] if query_ids is not None else f"#{r}" for r in rows]
        chunk = max(1, max_elements // (len(rows) * n * M))
        for k in range(0, K, chunk):
            lengths = d_len[k:k + chunk]
            width = int(lengths.max())
            dist = distance_matrix(group, documents[k:k + chunk, :width], group_len, lengths)
            scores[index, k:k + chunk] = -subsequence_dtw(dist, group_len, lengths, ids)
    return scores


def reference_dtw(distances: Sequence[Sequence[float]]) -> float:
    """The same subsequence DTW cost for one (N, M) matrix of floats, in plain Python (O(N M)):
    the readable definition that the tests and ``benchmarks/qbe_dtw_speed.py`` compare with."""
    n, m = len(distances), len(distances[0])
    g = [float(v) for v in distances[0]]
    for i in range(1, n):
        row = distances[i]
        g = [row[j] + min(g[j], g[j - 1] if j >= 1 else math.inf, g[j - 2] if j >= 2 else math.inf)
             for j in range(m)]
    return min(g) / n


def _lengths(lengths: torch.Tensor | None, count: int, size: int, device: torch.device) -> torch.Tensor:
    """``lengths`` as a (count,) long tensor on ``device``; None: ``count`` items of ``size`` frames each."""
    if lengths is None:
        return torch.full((count,), size, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.shape != (count,):
        raise ValueError(f"expected {count} lengths, got shape {tuple(lengths.shape)}")
    return lengths
