"""Small tensor helpers every layer uses on padded batches."""
from __future__ import annotations

import torch


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) valid lengths -> (B, max_len) bool, True at positions ``t < lengths[b]``, on ``lengths``' device.

    Args:
        lengths: (B,) integer valid lengths (frames or samples) of a padded batch.
        max_len: width of the mask; None: the longest length (0 for an empty batch). Lengths above it
            give rows that are all True.
    """
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
