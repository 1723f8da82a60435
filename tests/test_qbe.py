"""Query-by-example search: DTW against hand-worked and plain-Python references, TWV and ranking metrics
against hand-worked cases, word timings from phone alignments, and the whole run on a tiny tone corpus."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics import average_precision_score

from core.runs import Results
from corpora.alignments import SILENCE, WORD_HEADER, read_alignments, words_from_phones, write_alignments
from corpora.manifest import Record
from downstream.cli import main as downstream_main
from downstream.qbe.__main__ import main as qbe_main
from downstream.qbe.dtw import distance_matrix, match_scores, reference_dtw, subsequence_dtw
from downstream.qbe.metrics import (
    BETA,
    detection_metrics,
    maximum_term_weighted_value,
    mean_average_precision,
    precision_at_k,
    term_weighted_value,
    znorm,
)
from downstream.qbe.queries import QuerySettings, select_queries, split_queries
from downstream.qbe.run import QbEConfig, run_qbe, upstream_label
from upstream import registry
from upstream.base import Upstream, UpstreamOutput
from upstream.fbank.model import FbankUpstream

# ---------------------------------------------------------------- DTW

HAND = [[4.0, 1.0, 3.0, 2.0],
        [2.0, 5.0, 6.0, 1.0],
        [3.0, 2.0, 4.0, 2.0]]
"""Query frames on rows, document frames on columns. By hand, g[i, j] = d[i, j] + min(g[i-1, j], g[i-1, j-1],
g[i-1, j-2]) with g[0] = d[0] (open begin):
    g[0] = [4, 1, 3, 2]
    g[1] = [2+4, 5+min(1,4), 6+min(3,1,4), 1+min(2,3,1)] = [6, 6, 7, 2]      (j=3 comes from j=1: a 2-frame skip)
    g[2] = [3+6, 2+min(6,6), 4+min(7,6,6), 2+min(2,7,6)] = [9, 8, 10, 4]     (j=3 stays on j=3: a repeat)
cost = min(g[2]) / 3 = 4/3 (open end at j = 3); path (0,1) -> (1,3) -> (2,3): 1 + 1 + 2."""


def test_dtw_hand_computed_3x4():
    d = torch.tensor(HAND)
    assert subsequence_dtw(d, min_query_frames=1).item() == pytest.approx(4 / 3)
    assert reference_dtw(HAND) == pytest.approx(4 / 3)
    # the recursion is the step pattern: every start column and every sequence of document steps 0, 1, 2
    best = min(sum(HAND[i][j] for i, j in enumerate(itertools.accumulate((start, *steps))))
               for start in range(4) for steps in itertools.product((0, 1, 2), repeat=2)
               if start + sum(steps) < 4)
    assert best / 3 == pytest.approx(4 / 3)


def test_distance_matrix_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    raw0 = [0.0, math.expm1(1 - 1 / math.sqrt(2)), math.expm1(1.0), math.expm1(2.0)]  # cos = 1, 1/√2, 0, -1
    raw1 = [math.expm1(1.0), math.expm1(1 - 1 / math.sqrt(2)), 0.0, math.expm1(1.0)]
    expected = [[v / raw0[3] for v in raw0], [v / raw1[0] for v in raw1]]  # min-max per row (min 0 in both)
    assert distance_matrix(q, x).numpy() == pytest.approx(np.array(expected), abs=1e-6)
    assert distance_matrix(q, x, minmax=False).numpy() == pytest.approx(np.array([raw0, raw1]), abs=1e-6)


def _scipy_distances(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """S3PRL's cosine_exp with min-max rows, in NumPy/SciPy: the independent reference."""
    d = np.exp(cdist(q, x, "cosine")) - 1
    low, high = d.min(1, keepdims=True), d.max(1, keepdims=True)
    return (d - low) / np.clip(high - low, 1e-9, None)


def test_batched_dtw_matches_plain_python_on_random_padded_batches():
    g = torch.Generator().manual_seed(0)
    for trial in range(3):
        q_len = torch.randint(5, 12, (4,), generator=g)
        d_len = torch.randint(1, 20, (5,), generator=g)
        queries = torch.randn(4, int(q_len.max()) + trial, 6, generator=g)  # extra padding on the last trials
        docs = torch.randn(5, int(d_len.max()), 6, generator=g)
        dist = distance_matrix(queries, docs, q_len, d_len)
        costs = subsequence_dtw(dist, q_len, d_len)
        scores = match_scores(queries, q_len, docs, d_len, max_elements=500, query_group=3)  # chunks, groups
        for a, b in itertools.product(range(4), range(5)):
            local = _scipy_distances(queries[a, :q_len[a]].double().numpy(), docs[b, :d_len[b]].double().numpy())
            assert dist[a, b, :q_len[a], :d_len[b]].numpy() == pytest.approx(local, abs=1e-5)
            ref = reference_dtw(local.tolist())
            assert costs[a, b].item() == pytest.approx(ref, abs=1e-5)
            assert -scores[a, b].item() == pytest.approx(ref, abs=1e-5)


def test_too_short_query_names_it():
    dist = torch.rand(2, 3, 6, 8)
    with pytest.raises(ValueError, match="'beta' has 4 frames"):
        subsequence_dtw(dist, torch.tensor([6, 4]), query_ids=["alpha", "beta"])
    assert subsequence_dtw(dist, torch.tensor([6, 5])).shape == (2, 3)


# ---------------------------------------------------------------- metrics

SCORES = np.array([[0.9, 0.2, 0.5, 0.1],
                   [0.3, 0.4, 0.8, 0.6]])
TARGETS = np.array([[True, True, False, False],
                    [False, False, True, False]])
"""Query A holds documents 0 and 1 (2 non-targets), query B document 2 (3 non-targets); β = 0.01 × 1249 = 12.49.
TWV(θ) = 1 - ½ [P_miss(A) + β P_fa(A) + P_miss(B) + β P_fa(B)]:
    θ > 0.9 : nothing detected                    1 - ½ [1 + 1]                     = 0
    θ = 0.9 : A's doc 0                           1 - ½ [½ + 1]                     = 0.25
    θ = 0.8 : + B's doc 2                         1 - ½ [½ + 0]                     = 0.75   <- MTWV
    θ = 0.6 : + B's doc 3 (false alarm)           1 - ½ [½ + β/3]                   = -1.3317
    θ = 0.5 : + A's doc 2 (false alarm)           1 - ½ [½ + β/2 + β/3]             = -4.4542
    lower θ only add false alarms but A's doc 1 at 0.2: 1 - ½ [β/2 + β] = -8.3675.
MAP: A ranks 0(t) 2 1(t) 3: AP = (1/1 + 2/3) / 2 = 5/6; B ranks 2(t) first: AP = 1; MAP = 11/12.
P@2: A {0, 2}: 1/2; B {2, 3}: 1/2; P@2 = 1/2."""


def test_mtwv_hand_worked():
    assert BETA == pytest.approx(12.49)
    assert maximum_term_weighted_value(SCORES, TARGETS) == pytest.approx((0.75, 0.8))
    assert term_weighted_value(SCORES, TARGETS, 0.9) == pytest.approx(0.25)
    assert term_weighted_value(SCORES, TARGETS, 0.5) == pytest.approx(1 - 0.5 * (0.5 + BETA / 2 + BETA / 3))
    assert term_weighted_value(SCORES, TARGETS, 0.2) == pytest.approx(1 - 0.5 * (BETA / 2 + BETA))
    # a tie between a target and a non-target is detected as one: B's target tied with its false alarm
    tied = SCORES.copy()
    tied[1, 3] = 0.8
    assert maximum_term_weighted_value(tied, TARGETS)[0] == pytest.approx(0.25)
    # nothing worth detecting: MTWV 0 at an infinite threshold
    assert maximum_term_weighted_value(-SCORES, TARGETS) == (0.0, float("inf"))
    with pytest.raises(ValueError, match="query #1"):
        maximum_term_weighted_value(SCORES, np.array([[True, False, False, False], [False] * 4]))


def test_map_and_precision_hand_worked_and_against_plain_ap():
    assert mean_average_precision(SCORES, TARGETS) == pytest.approx(11 / 12)
    assert precision_at_k(SCORES, TARGETS, 2) == pytest.approx(0.5)
    assert precision_at_k(SCORES, TARGETS, 1) == pytest.approx(1.0)

    def plain_ap(scores, targets):  # mean of the precision at each target's rank (no ties in random scores)
        ranked = [t for _, t in sorted(zip(scores, targets, strict=True), key=lambda p: -p[0])]
        hits = [sum(ranked[:i + 1]) / (i + 1) for i, t in enumerate(ranked) if t]
        return sum(hits) / len(hits)

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 30))
    targets = rng.random((6, 30)) < 0.2
    targets[:, 0], targets[:, 1] = True, False
    expected = np.mean([plain_ap(s, t) for s, t in zip(scores, targets, strict=True)])
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    assert expected == pytest.approx(np.mean([average_precision_score(t, s) for s, t in zip(scores, targets,
                                                                                             strict=True)]))
    z = znorm(scores)
    assert z.mean(1) == pytest.approx(0, abs=1e-12) and z.std(1) == pytest.approx(1)
    metrics = detection_metrics(scores, targets, k=5)
    assert metrics["map"] == pytest.approx(expected)  # z-normalising per query keeps each ranking
    assert set(metrics) == {"mtwv", "mtwv_threshold", "atwv", "map", "p_at_5"}


# ---------------------------------------------------------------- word timings and query selection

def test_words_from_phones():
    phones = [(0.0, 0.2, SILENCE), (0.2, 0.3, "DH"), (0.3, 0.4, "AH"), (0.4, 0.5, "K"), (0.5, 0.7, "AE"),
              (0.7, 0.8, "T"), (0.8, 1.0, SILENCE)]
    assert words_from_phones(phones, [("THE", ["DH", "AH"]), ("CAT", ["K", "AE", "T"])]) == \
        [(0.2, 0.4, "THE"), (0.4, 0.8, "CAT")]
    assert words_from_phones(phones, [("THE", ["DH", "AH"]), ("KAT", None)]) == [(0.2, 0.4, "THE"), (0.4, 0.8, "KAT")]
    assert words_from_phones(phones, [("THE", ["DH", "IY"]), ("CAT", ["K", "AE", "T"])]) is None  # other phones
    assert words_from_phones(phones, [("THE", ["DH", "AH"]), ("CATS", ["K", "AE", "T", "S"])]) is None
    assert words_from_phones(phones, [("A", None), ("B", None)]) is None


def test_query_selection_refuses_shared_speakers_and_is_seeded():
    def rec(uid, speaker, text):
        return Record(id=uid, path=f"/x/{uid}.flac", duration=3.0, speaker=speaker, text=text)

    queries = [rec("1-1-0", "1", "ELEPHANT ZEBRA"), rec("1-1-1", "1", "GIRAFFE")]
    words = {"1-1-0": [(0.1, 0.7, "ELEPHANT"), (0.8, 1.4, "ZEBRA")], "1-1-1": [(0.2, 0.9, "GIRAFFE")]}
    docs = [rec("2-1-0", "2", "AN ELEPHANT"), rec("2-1-1", "2", "A ZEBRA AND A GIRAFFE"), rec("3-1-0", "3", "NONE")]
    count = {"ELEPHANT": 7, "ZEBRA": 5, "GIRAFFE": 5}.get
    chosen, report = select_queries(queries, words, docs, count, QuerySettings(max_queries=2), seed=3)
    again, _ = select_queries(queries, words, docs, count, QuerySettings(max_queries=2), seed=3)
    assert [q.id for q in chosen] == [q.id for q in again] and len(chosen) == 2
    assert {q.word: q.targets for q in chosen}.items() <= {"ELEPHANT": {"2-1-0"}, "ZEBRA": {"2-1-1"},
                                                            "GIRAFFE": {"2-1-1"}}.items()
    assert report.candidate_terms == 3
    elephant = select_queries(queries, words, docs, count, QuerySettings(min_phones=6))[0]
    assert [(q.word, q.record.start, q.record.duration) for q in elephant] == [("ELEPHANT", 0.1, 0.6)]
    with pytest.raises(ValueError, match="share 1 speaker"):
        select_queries(queries, words, [*docs, rec("1-2-0", "1", "ZEBRA")], count)
    dev, test = split_queries(chosen, 0.5, seed=0)
    assert len(dev) == len(test) == 1 and {q.id for q in dev + test} == {q.id for q in chosen}


# ---------------------------------------------------------------- the whole run on a tone corpus

PHONES = {"AA": 300.0, "B": 520.0, "K": 800.0, "D": 1150.0, "EH": 1600.0, "F": 2100.0, "G": 2700.0, "IY": 3400.0}
"""Each 'phone' is a tone; a word is a sequence of them."""
LEXICON = {"ALPHA": ["AA", "B", "K", "D", "EH"], "BRAVO": ["F", "G", "IY", "AA", "B"],
           "CHARLIE": ["K", "EH", "G", "AA", "IY"], "DELTA": ["D", "F", "B", "IY", "K"],
           "ECHO": ["EH", "AA", "F", "K", "G"], "OF": ["B", "D"], "TO": ["IY", "F"]}
DOCUMENTS = ["ALPHA OF BRAVO", "CHARLIE TO DELTA", "ECHO OF ALPHA", "BRAVO TO CHARLIE", "DELTA OF ECHO",
             "ALPHA TO DELTA", "OF TO OF", "CHARLIE OF ECHO"]
PHONE_SECONDS, GAP_SECONDS, SR = 0.1, 0.08, 16_000
_TEXTS: dict[str, str] = {}
"""Utterance id -> transcript of the tone corpus last written."""


def _speak(words: list[str], rng: np.random.Generator, pitch: float) -> tuple[np.ndarray, list[tuple]]:
    """Audio of ``words`` (phones as tones, scaled by a speaker's ``pitch``, gaps between words) and its
    phone alignment."""
    pieces, segments, t = [np.zeros(int(GAP_SECONDS * SR))], [(0.0, GAP_SECONDS, SILENCE)], GAP_SECONDS
    for word in words:
        for phone in LEXICON[word]:
            n = int(PHONE_SECONDS * SR)
            f = PHONES[phone] * pitch
            pieces.append(0.3 * np.sin(2 * np.pi * f * np.arange(n) / SR))
            segments.append((round(t, 3), round(t + PHONE_SECONDS, 3), phone))
            t += PHONE_SECONDS
        pieces.append(np.zeros(int(GAP_SECONDS * SR)))
        t += GAP_SECONDS
    segments.append((segments[-1][1], round(t, 3), SILENCE))
    audio = np.concatenate(pieces)
    return (audio + 0.01 * rng.standard_normal(len(audio))).astype(np.float32), segments


def _tone_corpus(root, rng):
    """dev-clean (speaker 10: queries, with a phone alignment) and test-clean (speakers 20, 21: documents)."""
    alignments = {}
    for split, speaker_texts in {"dev-clean": {"10": ["ALPHA OF BRAVO TO CHARLIE", "DELTA OF ECHO"]},
                                 "test-clean": {"20": DOCUMENTS[:4], "21": DOCUMENTS[4:]}}.items():
        for speaker, texts in speaker_texts.items():
            folder = root / "LibriSpeech" / split / speaker / "1"
            folder.mkdir(parents=True)
            pitch = {"10": 1.0, "20": 1.03, "21": 0.97}[speaker]
            lines = []
            for i, text in enumerate(texts):
                uid = f"{speaker}-1-{i:04d}"
                audio, segments = _speak(text.split(), rng, pitch)
                sf.write(folder / f"{uid}.flac", audio, SR)
                lines.append(f"{uid} {text}")
                _TEXTS[uid] = text
                alignments[uid] = segments
            (folder / f"{speaker}-1.trans.txt").write_text("\n".join(lines) + "\n")
    write_alignments(root / "phones.tsv", {k: v for k, v in alignments.items() if k.startswith("10-")})
    (root / "lexicon.txt").write_text("".join(f"{w} {' '.join(p)}\n" for w, p in LEXICON.items()))


def test_qbe_end_to_end_on_tones(tmp_path):
    from leaderboard.collect import collect  # noqa: PLC0415  (the test checks the board reads the results)

    _tone_corpus(tmp_path / "corpus", np.random.default_rng(0))
    cfg = QbEConfig(root=str(tmp_path / "corpus"), alignments=str(tmp_path / "corpus" / "phones.tsv"),
                    lexicon=str(tmp_path / "corpus" / "lexicon.txt"), cache_root=str(tmp_path / "cache"),
                    precision_k=2)
    results = run_qbe(tmp_path / "exp" / "qbe-fbank", "fbank", None, cfg)
    # every 5-phone word is a query (the 2-phone ones are not); each is found in exactly its documents
    info = results["metric_info"]["selection"]
    assert info["queries"] == 5 and info["dev_queries"] + info["test_queries"] == 5
    assert info["rejected"]["phones"] == 3  # OF, TO and OF: the 2-phone words of the two query utterances
    for split in ("dev", "test"):
        metrics = results["splits"][split]
        assert metrics["map"] == pytest.approx(1.0), (split, metrics)
        assert metrics["mtwv"] > 0.9 and metrics["p_at_2"] == pytest.approx(1.0)
        assert metrics["trials"] == metrics["utterances"] * len(DOCUMENTS)
    predictions = (tmp_path / "exp" / "qbe-fbank" / "predictions-test.tsv").read_text().splitlines()
    assert len(predictions) == 1 + info["test_queries"] * len(DOCUMENTS)
    assert results["layer"] == 0 and [row["layer"] for row in results["layers"]] == [0]
    assert results["learning_rate"] is None and results["training"]["dtw_pairs_per_second"] > 0
    record = Results.from_dict(json.loads((tmp_path / "exp" / "qbe-fbank" / "results.json").read_text()))
    assert record.extra["layer"] == 0 and record.primary_metric == "mtwv" and record.higher_is_better
    board = collect(tmp_path / "exp")
    assert sorted(board["split"]) == ["dev", "test"]
    assert set(board["task"]) == {"qbe"} and set(board["metric"]) == {"mtwv"} and set(board["upstream"]) == {"fbank"}
    assert board["value"].tolist() == pytest.approx([results["splits"][s]["mtwv"] for s in board["split"]])
    # the same run again: the same queries and numbers (seeded selection, cached features)
    again = run_qbe(tmp_path / "exp" / "qbe-fbank", "fbank", None, cfg)
    assert again["splits"] == results["splits"]
    # word alignments given directly (here: the ones the phones give) select and score the same
    phones = read_alignments(tmp_path / "corpus" / "phones.tsv")
    words = {uid: words_from_phones(segments, [(w, LEXICON[w]) for w in _TEXTS[uid].split()])
             for uid, segments in phones.items()}
    write_alignments(tmp_path / "words.tsv", words, WORD_HEADER)
    out = tmp_path / "exp" / "qbe-fbank-words"
    assert qbe_main(["-u", "fbank", "--root", cfg.root, "--word-alignments", str(tmp_path / "words.tsv"),
                     "--lexicon", cfg.lexicon, "--out", str(out), "-o", f"cache_root={cfg.cache_root},,precision_k=2",
                     "--device", "cpu"]) == 0
    by_words = json.loads((out / "results.json").read_text())
    assert by_words["splits"] == results["splits"]
    # run_downstream.py -m train -d qbe runs the same search; -m evaluate on it says there is nothing to evaluate
    argv = ["-m", "train", "-u", "fbank", "-d", "qbe", "-n", "qbe-cli", "-p", str(tmp_path / "exp"),
            "-o", f"root={cfg.root}", "-o", f"alignments={cfg.alignments}", "-o", f"lexicon={cfg.lexicon}",
            "-o", f"cache_root={cfg.cache_root}", "-o", "precision_k=2"]
    assert downstream_main(argv) == 0
    assert json.loads((tmp_path / "exp" / "qbe-cli" / "results.json").read_text())["splits"] == results["splits"]
    assert downstream_main(["-m", "evaluate", "-n", "qbe-cli", "-p", str(tmp_path / "exp")]) == 2


class NoiseAroundFbank(Upstream):
    """Three layers: noise, FBANK, noise: the search must choose layer 1 on its dev queries."""

    downsample_rate, num_layers = 160, 3

    def __init__(self):
        super().__init__()
        self.fbank = FbankUpstream()
        self.hidden_size = self.fbank.hidden_size

    def num_frames(self, num_samples):
        return self.fbank.num_frames(num_samples)

    def forward(self, wavs, wav_lengths):
        out = self.fbank(wavs, wav_lengths)
        g = torch.Generator().manual_seed(int(wav_lengths.sum()))
        noise = [torch.randn(out.hidden_states[0].shape, generator=g) for _ in range(2)]
        return UpstreamOutput([noise[0], out.hidden_states[0], noise[1]], out.lengths)


def test_qbe_chooses_the_best_dev_layer(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._FACTORIES, "noise_fbank", NoiseAroundFbank)
    _tone_corpus(tmp_path / "corpus", np.random.default_rng(1))
    cfg = QbEConfig(root=str(tmp_path / "corpus"), alignments=str(tmp_path / "corpus" / "phones.tsv"),
                    lexicon=str(tmp_path / "corpus" / "lexicon.txt"), cache_root=str(tmp_path / "cache"))
    results = run_qbe(tmp_path / "exp" / "qbe-noise", "noise_fbank", None, cfg)
    assert results["layer"] == 1 and results["layer_weights"] == [0.0, 1.0, 0.0]
    by_layer = {row["layer"]: row for row in results["layers"]}
    assert by_layer[1]["test_map"] == pytest.approx(1.0) and by_layer[0]["dev_map"] < 1.0
    assert results["splits"]["test"]["map"] == by_layer[1]["test_map"]


def test_upstream_label_matches_the_runner(tmp_path):
    from downstream.runner import upstream_label as runner_label  # noqa: PLC0415  (both now call upstream.registry.upstream_label)
    from upstream import build_upstream  # noqa: PLC0415

    fbank = build_upstream("fbank")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "upstream.pt").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"")
    for ckpt in (None, "org/model-id", str(tmp_path / "run"), str(tmp_path / "run" / "upstream.pt"),
                 str(tmp_path / "model.pt")):
        assert upstream_label("fbank", ckpt, fbank) == runner_label("fbank", ckpt, fbank)
