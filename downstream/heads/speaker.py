"""Speaker embeddings trained through a margin softmax (SUPERB's speaker verification).

:class:`SpeakerEmbeddingHead` wraps any utterance-level head of the library (SUPERB's is ``xvector``)
whose output, ``embed_dim`` numbers per utterance, is the input of a cosine classifier over the
training speakers. Its output follows the head contract, ``(y, y_len)`` with ``y_len`` all ones:

* while training, ``y`` is (B, speakers): the cosine of each utterance's output with each speaker's
  weight vector, what :func:`additive_margin_loss` reads;
* in evaluation, ``y`` is (B, E): the speaker embedding, L2-normalised: the wrapped head's ``embed()``
  where it has one (the x-vector: the affine layer after statistics pooling, before its ReLU, where
  Kaldi takes it) and its output otherwise. Trials are scored by the cosine of two embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """(B, E) -> (B, C): cosine similarity of each row with each class's weight vector (no bias)."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))


class SpeakerEmbeddingHead(nn.Module):
    """An utterance-level ``head`` (output size E) and a :class:`CosineClassifier` over ``num_speakers``."""

    level = "utterance"

    def __init__(self, head: nn.Module, embed_dim: int, num_speakers: int):
        super().__init__()
        if getattr(head, "level", None) != "utterance":
            raise ValueError(f"a speaker embedding needs an utterance-level head, not {type(head).__name__}")
        self.head = head
        self.classifier = CosineClassifier(embed_dim, num_speakers)

    def embed(self, x: torch.Tensor, x_len: torch.Tensor) -> torch.Tensor:
        """The L2-normalised speaker embeddings (B, E') of (B, T, D) frames."""
        if hasattr(self.head, "embed"):
            return F.normalize(self.head.embed(x, x_len), dim=-1)
        return F.normalize(self.head(x, x_len)[0], dim=-1)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.embed(x, x_len), torch.ones_like(x_len)
        y, y_len = self.head(x, x_len)
        return self.classifier(y), y_len


def additive_margin_loss(cosines: torch.Tensor, targets: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """AM-softmax (Wang et al., 2018): cross-entropy over ``scale * (cos - margin * onehot(target))``."""
    logits = scale * (cosines - margin * F.one_hot(targets, cosines.shape[-1]).to(cosines.dtype))
    return F.cross_entropy(logits, targets)
