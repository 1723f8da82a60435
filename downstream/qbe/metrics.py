"""Detection metrics of query-by-example search: term-weighted value (ATWV, MTWV) and ranking (MAP, P@k).

Inputs are per query: a score for every document (higher: more likely to hold the term) and the
documents that do hold it (the targets). A trial is one (query, document) pair; a document is
detected at threshold θ when its score is ≥ θ.

Term-weighted value (NIST STD 2006, as QUESST 2014 and SWS score it, with file-level trials)::

    TWV(θ)   = 1 - mean_q [ P_miss(q, θ) + β P_fa(q, θ) ]
    P_miss   = (targets of q scored below θ) / (targets of q)
    P_fa     = (non-targets of q scored at or above θ) / (non-targets of q)      non-targets: documents without q
    β        = (C / V) (1 / P_target - 1)

with the usual constants C = 1 (cost of a false alarm), V = 100 (value of a hit) and P_target =
0.0008 (prior of a term in a trial), so β = 12.49: one false alarm costs 12.49 / (non-targets) while one
miss costs 1 / (targets). A query without targets (or without non-targets) has no P_miss (P_fa): NIST
leaves such queries out of the mean; here they are an error, and the query selection keeps none.

- ATWV (actual TWV): TWV at the system's own decision threshold. SUPERB's QbE recipe says YES for a
  per-query z-normalised score above 2 (top 2.5 %), so ATWV here is TWV(θ = 2.0) on such scores.
- MTWV (maximum TWV): max over one global θ shared by every query; θ above every score detects
  nothing and gives TWV = 0, so MTWV ≥ 0. Ties: documents with equal scores are detected together.

Ranking metrics, per query over its documents, then averaged: average precision (scikit-learn's
``average_precision_score``, non-interpolated) for MAP, and precision at k (the targets among the k
highest scores, ties broken by document order) for P@k.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

COST_FA = 1.0
"""C: cost of a false alarm."""
VALUE_HIT = 100.0
"""V: value of a correct detection."""
P_TARGET = 0.0008
"""Prior probability of a term in a trial."""
BETA = COST_FA / VALUE_HIT * (1.0 / P_TARGET - 1.0)
"""β = (C / V) (P_target⁻¹ - 1) = 12.49."""
ATWV_THRESHOLD = 2.0
"""Decision threshold of ATWV on per-query z-normalised scores (S3PRL's QbE YES decision)."""


def znorm(scores: np.ndarray) -> np.ndarray:
    """Scores (Q, K) z-normalised per query over its documents (population std, floor 1e-9), as S3PRL does."""
    scores = np.asarray(scores, dtype=np.float64)
    std = np.clip(scores.std(axis=1, keepdims=True), 1e-9, None)
    return (scores - scores.mean(axis=1, keepdims=True)) / std


def _check(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=bool)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (queries, documents)")
    hits = targets.sum(axis=1)
    if (hits == 0).any() or (hits == targets.shape[1]).any():
        bad = int(np.flatnonzero((hits == 0) | (hits == targets.shape[1]))[0])
        raise ValueError(f"query #{bad} has {int(hits[bad])} target documents of {targets.shape[1]}: every query "
                         "needs at least one target and one non-target document")
    return scores, targets


def term_weighted_value(scores: np.ndarray, targets: np.ndarray, threshold: float, beta: float = BETA) -> float:
    """TWV at one global ``threshold`` (documents scored ≥ threshold are detected).

    Args:
        scores: (Q, K) detection scores.
        targets: (Q, K) booleans, True where document k holds query q's term.
    """
    scores, targets = _check(scores, targets)
    detected = scores >= threshold
    p_miss = (targets & ~detected).sum(1) / targets.sum(1)
    p_fa = (~targets & detected).sum(1) / (~targets).sum(1)
    return float(1.0 - np.mean(p_miss + beta * p_fa))


def maximum_term_weighted_value(scores: np.ndarray, targets: np.ndarray, beta: float = BETA) -> tuple[float, float]:
    """(MTWV, its threshold): the best TWV over one global threshold; threshold ``inf`` when detecting
    nothing (TWV 0) is best. Exact over every distinct score, in O(QK log QK)."""
    scores, targets = _check(scores, targets)
    q = scores.shape[0]
    # each trial's change of TWV once detected: +1/(Q n_target) for a hit, -β/(Q n_nontarget) for a false alarm
    gain = np.where(targets, 1.0 / targets.sum(1, keepdims=True), -beta / (~targets).sum(1, keepdims=True)) / q
    flat, order = scores.ravel(), np.argsort(-scores.ravel(), kind="stable")
    ordered, twv = flat[order], np.cumsum(gain.ravel()[order])
    last_of_tie = np.append(ordered[1:] != ordered[:-1], True)  # a threshold detects all of a tie or none
    candidates = np.flatnonzero(last_of_tie)
    best = candidates[np.argmax(twv[candidates])]
    if twv[best] <= 0.0:
        return 0.0, float("inf")
    return float(twv[best]), float(ordered[best])


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over queries of scikit-learn's average precision of the documents ranked by score."""
    scores, targets = _check(scores, targets)
    return float(np.mean([average_precision_score(t, s) for s, t in zip(scores, targets, strict=True)]))


def precision_at_k(scores: np.ndarray, targets: np.ndarray, k: int = 10) -> float:
    """Mean over queries of the fraction of targets among the ``k`` best-scored documents
    (``min(k, documents)``; ties in document order)."""
    scores, targets = _check(scores, targets)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(targets, top, axis=1).mean())


def detection_metrics(scores: np.ndarray, targets: np.ndarray, k: int = 10,
                      atwv_threshold: float = ATWV_THRESHOLD) -> dict[str, float]:
    """Every metric of raw (Q, K) scores, after per-query z-normalisation: ``mtwv``, ``mtwv_threshold``
    (None when detecting nothing is best), ``atwv`` (at ``atwv_threshold``), ``map``, ``p_at_<k>``."""
    z = znorm(scores)
    mtwv, threshold = maximum_term_weighted_value(z, targets)
    return {"mtwv": mtwv, "mtwv_threshold": None if np.isinf(threshold) else threshold,
            "atwv": term_weighted_value(z, targets, atwv_threshold), "map": mean_average_precision(z, targets),
            f"p_at_{k}": precision_at_k(z, targets, k)}
