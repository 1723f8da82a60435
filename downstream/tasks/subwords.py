"""SentencePiece target pieces for sequence-to-sequence heads (speech translation's translations).

A :class:`PieceModel` is trained in memory on a task's training texts (``char``, ``unigram`` or
``bpe`` pieces) with fixed special ids (:data:`PAD`, :data:`UNK`, :data:`BOS`, :data:`EOS`);
its serialized model (:attr:`PieceModel.proto`) is what a checkpoint carries, and loading those
bytes gives the same pieces back.
"""
from __future__ import annotations

import io

import sentencepiece as spm

from ..heads.seq2seq import PAD

PIECE_TYPES = ("char", "unigram", "bpe")
UNK, BOS, EOS = 1, 2, 3
"""Special ids besides :data:`PAD`, the sequence-to-sequence head's padding id."""


class PieceModel:
    """A SentencePiece model (pad 0, unk 1, bos 2, eos 3) from its serialized bytes ``proto``."""

    def __init__(self, proto: bytes):
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def train(cls, texts: list[str], pieces: str, vocab_size: int) -> PieceModel:
        """Train on ``texts``; ``pieces`` is one of :data:`PIECE_TYPES`. ``vocab_size`` is the most pieces,
        specials included, fewer where the texts do not give that many (``char``: one per character)."""
        if pieces not in PIECE_TYPES:
            raise ValueError(f"task.pieces {pieces!r} unknown; choose from {PIECE_TYPES}")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buffer, model_type=pieces, vocab_size=vocab_size,
            hard_vocab_limit=False, character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS,
            eos_id=EOS, minloglevel=2)
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)
