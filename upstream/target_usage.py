"""How evenly discrete pre-training targets are used: a collapsed k-means or quantizer shows here."""
from __future__ import annotations

import torch


def id_usage(counts: torch.Tensor) -> dict:
    """(K,) occurrence counts of each target id -> how the K ids are used.

    Returns:
        {"ids": K, "used": ids that occur, "frames": total count, "perplexity": exp of the entropy
        of the id distribution (K when uniform, 1 when one id takes everything), "largest_share":
        the most frequent id's share of the frames}.
    """
    counts = counts.double()
    total = counts.sum()
    p = counts[counts > 0] / total
    return {"ids": int(counts.numel()), "used": int((counts > 0).sum()), "frames": int(total),
            "perplexity": float(torch.exp(-(p * p.log()).sum())), "largest_share": float(p.max())}
