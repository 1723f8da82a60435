"""Character vocabulary, transcript normalisation, CTC decoding and error rates for ASR.

Transcripts are normalised the same way for references and hypotheses: upper case, runs of
white space collapsed to one space, no leading or trailing space. The CTC vocabulary is SUPERB's
character set for LibriSpeech: the blank (id 0), the word boundary ``|`` (written for a space), the
26 letters and the apostrophe; or every character of the training transcripts. A transcript
character outside the vocabulary is an error naming the utterance (:class:`UnknownCharacterError`).
"""
from __future__ import annotations

import string
from pathlib import Path

import jiwer
import torch

BLANK = "<blank>"
WORD_BOUNDARY = "|"
SUPERB_CHARACTERS = (WORD_BOUNDARY, *string.ascii_uppercase, "'")


class UnknownCharacterError(ValueError):
    """A transcript with characters the vocabulary lacks; the message names the utterance."""


def normalize_transcript(text: str) -> str:
    """Upper case, white space collapsed to single spaces, stripped."""
    return " ".join(text.upper().split())


class CharVocabulary:
    """Character <-> id map for CTC; id 0 is the blank.

    Args:
        characters: the non-blank symbols in id order (1, 2, ...); must contain ``|``.
    """

    def __init__(self, characters: list[str] | tuple[str, ...]):
        characters = list(characters)
        if WORD_BOUNDARY not in characters or len(set(characters)) != len(characters) or BLANK in characters:
            raise ValueError(f"a CTC vocabulary needs distinct characters including {WORD_BOUNDARY!r}, "
                             f"got {characters}")
        self.tokens = [BLANK, *characters]
        self.index = {c: i for i, c in enumerate(self.tokens)}

    @classmethod
    def superb(cls) -> "CharVocabulary":
        """SUPERB's LibriSpeech characters: ``|``, A-Z and the apostrophe."""
        return cls(SUPERB_CHARACTERS)

    @classmethod
    def from_texts(cls, texts) -> "CharVocabulary":
        """Every character of the normalised ``texts`` (space as ``|``), in sorted order after ``|``."""
        chars = set()
        for t in texts:
            chars.update(normalize_transcript(t).replace(" ", ""))
        return cls([WORD_BOUNDARY, *sorted(chars - {WORD_BOUNDARY})])

    def __len__(self) -> int:
        return len(self.tokens)

    def unknown(self, text: str) -> list[str]:
        """Characters of normalised ``text`` that have no id."""
        return sorted({c for c in normalize_transcript(text).replace(" ", WORD_BOUNDARY) if c not in self.index})

    def encode(self, text: str, where: str = "transcript") -> list[int]:
        """Normalised ``text`` -> ids (spaces become ``|``); ``where`` names the utterance in errors."""
        norm = normalize_transcript(text).replace(" ", WORD_BOUNDARY)
        missing = self.unknown(text)
        if missing:
            raise UnknownCharacterError(f"{where}: character(s) {missing} not in the vocabulary "
                                        f"{''.join(self.tokens[1:])!r} (text: {text!r})")
        return [self.index[c] for c in norm]

    def decode(self, ids) -> str:
        """Ids (no blanks) -> normalised text."""
        return normalize_transcript("".join(self.tokens[i] for i in ids if i != 0).replace(WORD_BOUNDARY, " "))


def ctc_min_frames(ids: list[int]) -> int:
    """Fewest CTC input frames that can emit ``ids``: one per label plus a blank between repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:], strict=False) if a == b)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: CharVocabulary) -> list[str]:
    """Best path: argmax per frame, repeats merged, blanks dropped. (B, T, V), (B,) -> B texts."""
    best = log_probs.argmax(-1)
    return [vocab.decode(torch.unique_consecutive(best[b, : int(lengths[b])]).tolist()) for b in range(best.shape[0])]


class BeamSearchDecoder:
    """torchaudio's CTC beam search (flashlight-text), lexicon-free, or with a word n-gram LM.

    Args:
        vocab: the CTC vocabulary.
        beam_size: hypotheses kept per frame.
        lm: a KenLM model (ARPA or binary) or None. With an LM, words are spelled by a lexicon of
            ``lexicon_words`` (plus the unigrams of an ARPA file), so only those words can be output.
        lexicon_words: words for the lexicon (e.g. every training-transcript word).
        lm_weight, word_score: the usual shallow-fusion weights.
        workdir: where the lexicon file is written.
    """

    def __init__(self, vocab: CharVocabulary, beam_size: int = 50, lm: str | None = None, lexicon_words=(),
                 lm_weight: float = 2.0, word_score: float = 0.0, workdir: Path | None = None):
        try:
            from torchaudio.models.decoder import ctc_decoder  # noqa: PLC0415  (flashlight-text is optional)
        except (ImportError, RuntimeError) as e:  # torchaudio raises RuntimeError when flashlight-text is missing
            raise RuntimeError(f"beam search needs the flashlight-text package (pip install flashlight-text): "
                               f"{e}") from None
        lexicon = None
        if lm:
            if not Path(lm).is_file():
                raise FileNotFoundError(f"task.lm: language model not found: {lm}")
            words = set(lexicon_words) | set(arpa_unigrams(lm) if str(lm).endswith(".arpa") else ())
            lexicon = write_lexicon(words, vocab, Path(workdir or ".") / "lexicon.txt")
        self.decoder = ctc_decoder(lexicon=lexicon, tokens=vocab.tokens, lm=lm, beam_size=beam_size,
                                   lm_weight=lm_weight, word_score=word_score, blank_token=BLANK,
                                   sil_token=WORD_BOUNDARY, unk_word="<unk>")
        self.vocab, self.with_lexicon = vocab, lexicon is not None

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """(B, T, V) log-probabilities, (B,) frame counts -> B texts."""
        results = self.decoder(log_probs.float().contiguous().cpu(), lengths.to(torch.int32).cpu())
        out = []
        for hyps in results:
            if not hyps:
                out.append("")
            elif self.with_lexicon:
                out.append(normalize_transcript(" ".join(hyps[0].words)))
            else:
                out.append(self.vocab.decode([int(i) for i in hyps[0].tokens]))
        return out


def arpa_unigrams(path: str | Path) -> list[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (sentence markers and <unk> left out)."""
    words, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                inside = line == "\\1-grams:"
                continue
            if inside and line:
                word = line.split()[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    return words


def write_lexicon(words, vocab: CharVocabulary, path: Path) -> str:
    """A flashlight lexicon (``WORD W O R D |``) of the words spelled entirely in ``vocab``; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{w} {' '.join(w)} {WORD_BOUNDARY}" for w in sorted({normalize_transcript(w) for w in words})
             if w and " " not in w and not vocab.unknown(w)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer, in %) after :func:`normalize_transcript` on both sides."""
    refs = [normalize_transcript(r) for r in references]
    hyps = [normalize_transcript(h) for h in hypotheses]
    if any(not r for r in refs):
        raise ValueError("a reference transcript is empty after normalisation; WER is undefined for it")
    return {"wer": 100.0 * jiwer.wer(refs, hyps), "cer": 100.0 * jiwer.cer(refs, hyps)}
