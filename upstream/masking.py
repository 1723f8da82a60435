"""Masking for masked-prediction pre-training: time spans and feature-dimension bands.

Written for Mockingjay's masked acoustic model (MAM) and kept model-agnostic so that HuBERT and
BEST-RQ can share it. Everything is drawn from an optional :class:`torch.Generator` (CPU), so a
seeded generator gives the same masks on every machine; ``None`` uses torch's global generator.

How spans are drawn (S3PRL's Mockingjay recipe, ``s3prl/pretrain/mockingjay/task.py``, v0.4.18,
lines 104-115), for one utterance of ``L`` valid frames, span length ``c`` and proportion ``p``:

* ``n = round(L * p / c)`` spans (Python's ``round``: halves go to the even number);
* start points range over ``0 .. S`` with ``S = max(L - c - 1, 0)`` (S3PRL's bound: a span never
  covers the last frame unless the utterance is shorter than ``c + 1`` frames);
* ``allow_overlap=True`` (S3PRL's default in every Mockingjay/TERA config): ``n`` *distinct* start
  points drawn uniformly without replacement from ``0 .. S``; spans may overlap, so the masked
  fraction is a little below ``p`` (for long utterances about ``1 - exp(-p)``: 0.139 for p = 0.15;
  :func:`expected_masked_fraction` gives the exact expectation);
* ``allow_overlap=False``: a grid of candidate starts ``r, r + b, r + 2b, ... <= S`` with bucket
  ``b = round(c * bucket_ratio)`` and a random offset ``r`` uniform in ``0 .. min(c, S)``; ``n`` grid
  points are drawn without replacement. With ``bucket_ratio >= 1`` spans never overlap and the
  masked fraction is ``n * c / L`` (about ``p``) as long as the grid holds ``n`` points.

Unlike S3PRL, spans are clipped at the utterance end: where ``L < c + 1`` S3PRL's span runs into the
padding; here padding is never masked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SpanMask:
    """Spans drawn for a batch.

    Attributes:
        mask: (B, T) bool, True on masked frames; always False at or past each utterance's length.
        starts: per utterance, (n_b,) int64 span start frames, in the order drawn.
        span_lengths: (B,) int64 span length used for each utterance (before clipping at its end).
    """

    mask: torch.Tensor
    starts: list[torch.Tensor]
    span_lengths: torch.Tensor

    @property
    def num_masked(self) -> int:
        """Masked frames in the batch."""
        return int(self.mask.sum())


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``low .. high`` (both included), like Python's ``random.randint``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def max_span_start(length: int, span: int) -> int:
    """Largest start frame S3PRL allows for a span of ``span`` frames: ``max(length - span - 1, 0)``."""
    return max(length - span - 1, 0)


def num_spans(length: int, proportion: float, span: int) -> int:
    """Spans to draw for an utterance of ``length`` frames: ``round(length * proportion / span)``."""
    return round(length * proportion / span)


def sample_span_starts(
    length: int,
    proportion: float,
    span: int,
    *,
    allow_overlap: bool = True,
    bucket_ratio: float = 1.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Start frames of the spans of one utterance, drawn as described in the module docstring.

    Args:
        length: valid frames of the utterance.
        proportion: target fraction of frames to mask (before overlaps).
        span: frames per span.
        allow_overlap: distinct random starts (True) or starts on a randomly shifted grid (False).
        bucket_ratio: grid step as a multiple of ``span`` (``allow_overlap=False`` only).
        generator: source of randomness.

    Returns:
        (n,) int64 start frames (possibly fewer than :func:`num_spans` when too few candidates).
    """
    if span < 1:
        raise ValueError(f"span length must be >= 1, got {span}")
    if length <= 0 or proportion <= 0:
        return torch.zeros(0, dtype=torch.long)
    last = max_span_start(length, span)
    n = num_spans(length, proportion, span)
    if allow_overlap:
        return torch.randperm(last + 1, generator=generator)[:n]
    bucket = max(round(span * bucket_ratio), 1)
    offset = _randint(0, min(span, last), generator)
    grid = torch.arange(offset, last + 1, bucket)
    return grid[torch.randperm(len(grid), generator=generator)[:n]]


def spans_to_mask(
    starts: list[torch.Tensor], span_lengths: torch.Tensor, lengths: torch.Tensor, max_len: int
) -> torch.Tensor:
    """(B, max_len) bool mask of the frames covered by ``[start, start + span)``, clipped at each length."""
    batch = len(starts)
    mask = torch.zeros(batch, max_len, dtype=torch.bool)
    frames = torch.arange(max_len)
    for b in range(batch):
        s = starts[b]
        if s.numel() == 0:
            continue
        covered = (frames[None, :] >= s[:, None]) & (frames[None, :] < s[:, None] + int(span_lengths[b]))
        mask[b] = covered.any(0) & (frames < int(lengths[b]))
    return mask


def span_mask(
    lengths: torch.Tensor,
    proportion: float,
    span: int,
    *,
    span_max: int | None = None,
    allow_overlap: bool = True,
    bucket_ratio: float = 1.5,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> SpanMask:
    """Draw masked spans for a padded batch.

    Args:
        lengths: (B,) valid frame counts.
        proportion: target fraction of masked frames per utterance (0 disables masking).
        span: span length in frames; with ``span_max``, each utterance draws its span length
            uniformly in ``span .. span_max`` (S3PRL's ``mask_consecutive_min/max``).
        allow_overlap, bucket_ratio: how starts are drawn (module docstring).
        max_len: T of the mask (default ``lengths.max()``).
        generator: source of randomness (CPU generator).

    Returns:
        A :class:`SpanMask` on the CPU; the mask never covers frames at or past ``lengths[b]``.
    """
    lengths = lengths.detach().cpu().long()
    span_max = span if span_max is None else span_max
    if not 1 <= span <= span_max:
        raise ValueError(f"need 1 <= span <= span_max, got span={span}, span_max={span_max}")
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"mask proportion must be in [0, 1], got {proportion}")
    max_len = int(lengths.max()) if max_len is None else max_len
    starts, spans = [], []
    for length in lengths.tolist():
        c = span if span_max == span else _randint(span, span_max, generator)
        spans.append(c)
        starts.append(
            sample_span_starts(
                length, proportion, c, allow_overlap=allow_overlap, bucket_ratio=bucket_ratio, generator=generator
            )
        )
    span_lengths = torch.tensor(spans, dtype=torch.long)
    return SpanMask(spans_to_mask(starts, span_lengths, lengths, max_len), starts, span_lengths)


def expected_masked_fraction(length: int, proportion: float, span: int) -> float:
    """Exact expected masked fraction of :func:`span_mask` with ``allow_overlap=True``.

    A frame is unmasked when none of the ``k`` starts that would cover it is among the ``n``
    distinct starts drawn from ``N`` candidates: probability ``C(N - k, n) / C(N, n)``.
    """
    last = max_span_start(length, span)
    n_cand, n = last + 1, min(num_spans(length, proportion, span), last + 1)
    total = 0.0
    for t in range(length):
        k = max(0, min(t, last) - max(0, t - span + 1) + 1)
        total += 1.0 - (math.comb(n_cand - k, n) / math.comb(n_cand, n) if n_cand - k >= n else 0.0)
    return total / length


def band_mask(
    batch_size: int, dim: int, max_width: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One band of consecutive feature dimensions per utterance (S3PRL's frequency masking).

    As in ``s3prl/pretrain/mockingjay/task.py`` (lines 135-140): the width ``w`` is uniform in
    ``0 .. max_width`` and the first masked dimension uniform in ``0 .. dim - w - 1`` (no band when
    ``w == dim``).

    Returns:
        (batch_size, dim) bool, True on masked dimensions.
    """
    if not 0 <= max_width <= dim:
        raise ValueError(f"band width must be in [0, {dim}], got {max_width}")
    mask = torch.zeros(batch_size, dim, dtype=torch.bool)
    if max_width == 0:
        return mask
    for b in range(batch_size):
        width = _randint(0, max_width, generator)
        if width == 0 or width >= dim:
            continue
        start = int(torch.randint(0, dim - width, (1,), generator=generator))
        mask[b, start : start + width] = True
    return mask
