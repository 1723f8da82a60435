"""QUESST 2014 and SWS 2013 as released (corpora/quesst.py) and QbE on them (corpus: quesst14 | sws2013): tiny
8-kHz tone corpora written in the release layouts, with RTTM, ECF, term list and language key files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml

from core.config import ConfigError, to_dict
from corpora.manifest import ManifestError
from corpora.quesst import read_quesst14, read_rttm, read_sws2013
from downstream.qbe.__main__ import main as qbe_main
from downstream.qbe.run import QbEConfig, check_qbe_config, claim_qbe_folder, run_qbe

SR = 8_000
"""QUESST 2014 and SWS 2013 are 8-kHz recordings; the upstreams read them resampled to 16 kHz."""
TONES = {"AA": 300.0, "B": 520.0, "K": 800.0, "D": 1150.0, "EH": 1600.0, "F": 2100.0, "G": 2700.0, "IY": 3300.0}
WORDS = {"ALPHA": ["AA", "B", "K", "D", "EH"], "BRAVO": ["F", "G", "IY", "AA", "B"],
         "CHARLIE": ["K", "EH", "G", "AA", "IY"], "DELTA": ["D", "F", "B", "IY", "K"],
         "ECHO": ["EH", "AA", "F", "K", "G"], "FOXTROT": ["IY", "D", "G", "B", "F"], "OF": ["B", "D"],
         "TO": ["IY", "F"]}
PHONE_S, GAP_S = 0.1, 0.08
EN, CS = "nnenglish", "czech"

QUESST_DOCS = {"quesst14_00001": ("ALPHA OF BRAVO", EN), "quesst14_00002": ("CHARLIE TO DELTA", EN),
               "quesst14_00003": ("ECHO OF ALPHA", EN), "quesst14_00004": ("BRAVO TO CHARLIE", EN),
               "quesst14_00005": ("DELTA OF ECHO", EN), "quesst14_00006": ("ALPHA TO ECHO", CS)}
QUESST_QUERIES = {"dev": {"quesst14_dev_0001": ("ALPHA", EN), "quesst14_dev_0002": ("DELTA", EN),
                          "quesst14_dev_0003": ("ECHO", CS), "quesst14_dev_0004": ("FOXTROT", EN)},
                  "eval": {"quesst14_eval_0001": ("BRAVO", EN), "quesst14_eval_0002": ("CHARLIE", EN),
                           "quesst14_eval_0003": ("ECHO", EN)}}
"""dev_0003 is Czech (left out with the English key), dev_0004 occurs nowhere (no target: left out of the search)."""
SWS_DOCS = {"sws2013_00001": "ALPHA OF BRAVO", "sws2013_00002": "CHARLIE TO DELTA", "sws2013_00003": "BRAVO OF ALPHA",
            "sws2013_00004": "DELTA TO CHARLIE"}
SWS_QUERIES = {"dev": {"sws2013_dev_001": "ALPHA", "sws2013_dev_002": "DELTA"},
               "eval": {"sws2013_eval_001": "BRAVO", "sws2013_eval_002": "CHARLIE"}}


Spans = list[tuple[str, float, float]]
"""(word, start s, duration s) of each word of a recording."""


def _speak(words: list[str], pitch: float, rng: np.random.Generator) -> tuple[np.ndarray, Spans]:
    """8-kHz audio of ``words`` (each phone a tone scaled by ``pitch``, silence around words) and each word's
    (word, start, duration)."""
    pieces, spans, t = [np.zeros(int(GAP_S * SR))], [], GAP_S
    for word in words:
        start = t
        for phone in WORDS[word]:
            n = int(PHONE_S * SR)
            pieces.append(0.3 * np.sin(2 * np.pi * TONES[phone] * pitch * np.arange(n) / SR))
            t += PHONE_S
        spans.append((word, round(start, 3), round(t - start, 3)))
        pieces.append(np.zeros(int(GAP_S * SR)))
        t += GAP_S
    audio = np.concatenate(pieces)
    return (audio + 0.01 * rng.standard_normal(len(audio))).astype(np.float32), spans


def _ecf(path, docs: dict[str, float]) -> None:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<ecf source_signal_duration="{sum(docs.values()):.3f}" language="multiple" version="test">']
    lines += [f'  <excerpt audio_filename="Audio/{d}.wav" channel="1" tbeg="0.000" dur="{s:.3f}" '
              'source_type="splitcts"/>' for d, s in docs.items()]
    path.write_text("\n".join([*lines, "</ecf>"]) + "\n")


def _tlist(path, terms: list[str]) -> None:
    """Term k (from 0) is on line 3 + k."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<termlist ecf_filename="{path.name}" version="test" language="multiple" encoding="UTF-8">']
    lines += [f'  <term termid="{t}"><termtext>{t}</termtext></term>' for t in terms]
    path.write_text("\n".join([*lines, "</termlist>"]) + "\n")


def _rttm(path, spans: dict[str, Spans], term_of: dict[str, str], extra: list[str] = ()) -> None:
    """A comment line, one LEXEME line per occurrence of a term of ``term_of`` (word -> term id), then ``extra``."""
    lines = [";; occurrences of the terms"]
    for doc in sorted(spans):
        lines += [f"LEXEME {doc} 1 {start:.3f} {dur:.3f} {term_of[w]} lex <NA> <NA>"
                  for w, start, dur in spans[doc] if w in term_of]
    path.write_text("\n".join([*lines, *extra]) + "\n")


def _write_docs(base, docs: dict[str, str], rng) -> tuple[dict[str, float], dict[str, list]]:
    (base / "Audio").mkdir(parents=True)
    seconds, spans = {}, {}
    for i, (doc, text) in enumerate(docs.items()):
        audio, spans[doc] = _speak(text.split(), (1.0, 0.97, 1.03)[i % 3], rng)
        sf.write(base / "Audio" / f"{doc}.wav", audio, SR)
        seconds[doc] = len(audio) / SR
    return seconds, spans


def _write_queries(base, split: str, queries: dict[str, str], rng) -> None:
    (base / f"{split}_queries").mkdir()
    for termid, word in queries.items():
        sf.write(base / f"{split}_queries" / f"{termid}.wav", _speak([word], 1.05, rng)[0], SR)


def quesst14(tmp_path, seed: int = 0):
    """``<tmp_path>/quesst14Database`` in the release layout."""
    rng = np.random.default_rng(seed)
    base = tmp_path / "quesst14Database"
    seconds, spans = _write_docs(base, {d: text for d, (text, _) in QUESST_DOCS.items()}, rng)
    keys = {"utterances": [f"quesst14Database/Audio/{d}.wav {lang}" for d, (_, lang) in QUESST_DOCS.items()]}
    for split, queries in QUESST_QUERIES.items():
        _write_queries(base, split, {t: w for t, (w, _) in queries.items()}, rng)
        truth = base / "scoring" / f"groundtruth_quesst14_{split}"
        truth.mkdir(parents=True)
        _ecf(truth / "quesst14.ecf.xml", seconds)
        _tlist(truth / f"quesst14_{split}.tlist.xml", list(queries))
        _rttm(truth / f"quesst14_{split}.rttm", spans, {w: t for t, (w, _) in queries.items()})
        keys[split] = [f"quesst14Database/{split}_queries/{t}.wav {lang}" for t, (_, lang) in queries.items()]
    for name, lines in keys.items():
        (base / "scoring" / f"language_key_{name}.lst").write_text("\n".join(lines) + "\n")
    return base


def sws2013(tmp_path, seed: int = 1):
    """``<tmp_path>/sws2013Database_dev_eval`` in the release layout (scoring_atwv_sws2013_full.tgz unpacked), with
    an extra example of one dev term and a LEXEME of a term no term list has."""
    rng = np.random.default_rng(seed)
    base = tmp_path / "sws2013Database_dev_eval"
    seconds, spans = _write_docs(base, SWS_DOCS, rng)
    for split, queries in SWS_QUERIES.items():
        _write_queries(base, split, queries, rng)
        truth = base / "scoring_atwv_sws2013" / f"sws2013_{split}"
        truth.mkdir(parents=True)
        _ecf(truth / "sws2013.ecf.xml", seconds)
        _tlist(truth / f"sws2013_{split}.tlist.xml", list(queries))
        _rttm(truth / f"sws2013_{split}.rttm", spans, {w: t for t, w in queries.items()},
              extra=["LEXEME sws2013_00002 1 0.080 0.500 NO_KEYWORD lex <NA> <NA>"])
    sf.write(base / "dev_queries" / "sws2013_dev_001_02.wav", _speak(["ALPHA"], 0.95, rng)[0], SR)
    return base


# ---------------------------------------------------------------- the readers


def test_quesst14_reader_queries_documents_and_targets(tmp_path):
    base = quesst14(tmp_path)
    corpus = read_quesst14(tmp_path)  # the folder holding quesst14Database
    assert corpus.name == "quesst14" and corpus.language == EN and corpus.root == str(base)
    assert [(q.id, q.split, q.language) for q in corpus.queries] == [
        ("quesst14_dev_0001", "dev", EN), ("quesst14_dev_0002", "dev", EN), ("quesst14_dev_0004", "dev", EN),
        ("quesst14_eval_0001", "eval", EN), ("quesst14_eval_0002", "eval", EN), ("quesst14_eval_0003", "eval", EN)]
    assert corpus.queries[0].record.path == str((base / "dev_queries" / "quesst14_dev_0001.wav").resolve())
    english = [f"quesst14_0000{i}" for i in range(1, 6)]
    assert [d.id for d in corpus.documents] == english
    assert corpus.documents[0].path == str((base / "Audio" / "quesst14_00001.wav").resolve())
    assert corpus.documents[0].duration == pytest.approx(0.08 * 4 + 0.1 * 12, abs=1e-3)  # 3 gaps + 12 phones
    assert corpus.split_documents == {"dev": frozenset(english), "eval": frozenset(english)}
    assert corpus.targets == {"quesst14_dev_0001": {"quesst14_00001", "quesst14_00003"},
                              "quesst14_dev_0002": {"quesst14_00002", "quesst14_00005"},
                              "quesst14_dev_0004": set(),
                              "quesst14_eval_0001": {"quesst14_00001", "quesst14_00004"},
                              "quesst14_eval_0002": {"quesst14_00002", "quesst14_00004"},
                              "quesst14_eval_0003": {"quesst14_00003", "quesst14_00005"}}
    report = corpus.report
    assert report["other_language_queries"] == 1 and report["other_language_documents"] == 1
    # dev: ALPHA in the Czech document, and the Czech query's three ECHOs; eval: ECHO in the Czech document
    assert report["other_language_occurrences"] == {"dev": 4, "eval": 1}
    assert report["queries_without_targets"] == {"dev": 1, "eval": 0}
    # every language: the Czech query and document too
    every = read_quesst14(base, language="")
    assert [d.id for d in every.documents] == [*english, "quesst14_00006"]
    assert every.targets["quesst14_dev_0003"] == {"quesst14_00003", "quesst14_00005", "quesst14_00006"}
    assert every.targets["quesst14_dev_0001"] == {"quesst14_00001", "quesst14_00003", "quesst14_00006"}
    assert {q.language for q in every.queries} == {""}
    with pytest.raises(ManifestError, match="language 'klingon' is in no language key"):
        read_quesst14(base, language="klingon")


def test_sws2013_reader(tmp_path):
    base = sws2013(tmp_path)
    corpus = read_sws2013(base)
    assert [(q.id, q.split) for q in corpus.queries] == [("sws2013_dev_001", "dev"), ("sws2013_dev_002", "dev"),
                                                         ("sws2013_eval_001", "eval"), ("sws2013_eval_002", "eval")]
    assert [d.id for d in corpus.documents] == sorted(SWS_DOCS)
    assert corpus.targets == {"sws2013_dev_001": {"sws2013_00001", "sws2013_00003"},
                              "sws2013_dev_002": {"sws2013_00002", "sws2013_00004"},
                              "sws2013_eval_001": {"sws2013_00001", "sws2013_00003"},
                              "sws2013_eval_002": {"sws2013_00002", "sws2013_00004"}}
    assert corpus.report["unlisted_query_files"] == {"dev": 1, "eval": 0}  # the extra example of dev_001
    assert corpus.report["other_lexemes"] == {"dev": 1, "eval": 1}  # NO_KEYWORD
    # the other folder name for the ground truth: scoring_atwv_sws2013_<split>/
    for split in ("dev", "eval"):
        shutil.move(base / "scoring_atwv_sws2013" / f"sws2013_{split}", base / f"scoring_atwv_sws2013_{split}")
    assert read_sws2013(tmp_path).targets == corpus.targets
    shutil.rmtree(base / "scoring_atwv_sws2013_eval")
    (base / "scoring_atwv_sws2013_full.tgz").write_bytes(b"")
    with pytest.raises(ManifestError, match=r"ground truth of eval not found.*unpack scoring_atwv_sws2013_full\.tgz"):
        read_sws2013(base)


def test_rttm_errors_name_file_and_line(tmp_path):
    base = quesst14(tmp_path)
    rttm = base / "scoring" / "groundtruth_quesst14_dev" / "quesst14_dev.rttm"
    lines = rttm.read_text().splitlines()
    assert [o.line for o in read_rttm(rttm)] == list(range(2, len(lines) + 1))  # line 1 is the comment
    good = list(lines)
    lines[2] = lines[2].replace(lines[2].split()[3], "abc", 1)  # line 3: a start that is no number
    rttm.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"quesst14_dev\.rttm:3: LEXEME start 'abc'"):
        read_quesst14(base)
    rttm.write_text("\n".join([*good, "LEXEME quesst14_00001 1 0.5"]) + "\n")
    with pytest.raises(ManifestError, match=rf"quesst14_dev\.rttm:{len(good) + 1}: LEXEME line with 4 fields"):
        read_quesst14(base)
    rttm.write_text("\n".join([*good, "LEXEME quesst14_00001 1 -0.5 0.4 quesst14_dev_0001"]) + "\n")
    with pytest.raises(ManifestError, match=rf"quesst14_dev\.rttm:{len(good) + 1}: .* must be >= 0"):
        read_quesst14(base)
    rttm.write_text("\n".join([*good, "quesst14_00001 1 0.5 0.4 quesst14_dev_0001"]) + "\n")
    with pytest.raises(ManifestError, match=rf"quesst14_dev\.rttm:{len(good) + 1}: not an RTTM line"):
        read_quesst14(base)
    rttm.write_text("\n".join([*good, "LEXEME quesst14_09999 1 0.5 0.4 quesst14_dev_0001 lex <NA> <NA>"]) + "\n")
    with pytest.raises(ManifestError, match=rf"quesst14_dev\.rttm:{len(good) + 1}: .*'quesst14_09999', which the ECF"):
        read_quesst14(base)


def test_layout_errors(tmp_path):
    base = quesst14(tmp_path)
    (base / "eval_queries" / "quesst14_eval_0002.wav").unlink()
    with pytest.raises(ManifestError, match=r"quesst14_eval\.tlist\.xml:4: term 'quesst14_eval_0002' has no query "
                                            r"recording \(.*eval_queries/quesst14_eval_0002\.wav not found\)"):
        read_quesst14(base)
    tlist = base / "scoring" / "groundtruth_quesst14_dev" / "quesst14_dev.tlist.xml"
    tlist.write_text(tlist.read_text().replace("</termlist>", ""))
    with pytest.raises(ManifestError, match=r"quesst14_dev\.tlist\.xml:\d+: not a well-formed term list XML file"):
        read_quesst14(base, language="")
    (base / "scoring" / "language_key_dev.lst").write_text("quesst14Database/dev_queries/quesst14_dev_0001.wav\n")
    with pytest.raises(ManifestError, match=r"language_key_dev\.lst:1: expected '<audio path> <language>'"):
        read_quesst14(base)
    (base / "Audio" / "quesst14_00004.wav").unlink()
    with pytest.raises(ManifestError, match=r"quesst14\.ecf\.xml:6: document 'quesst14_00004': .*file not found"):
        read_quesst14(base, language="")
    shutil.rmtree(base / "scoring" / "groundtruth_quesst14_eval")
    with pytest.raises(ManifestError, match="groundtruth_quesst14_eval: QUESST 2014 ground-truth folder not found"):
        read_quesst14(base)
    with pytest.raises(ManifestError, match="no quesst14Database database here"):
        read_quesst14(tmp_path / "elsewhere")


# ---------------------------------------------------------------- QbE on them


def test_qbe_on_quesst14_selected_by_the_config_key(tmp_path):
    base = quesst14(tmp_path / "data")
    out = tmp_path / "exp" / "qbe-quesst"
    argv = ["-u", "fbank", "--root", str(tmp_path / "data"), "--out", str(out), "--device", "cpu",
            "-o", "corpus=quesst14", "-o", f"cache_root={tmp_path / 'cache'}", "-o", "precision_k=2"]
    assert qbe_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "quesst14:quesst14Database/nnenglish"
    selection = results["metric_info"]["selection"]
    assert selection["corpus"] == "quesst14" and selection["root"] == str(base)
    assert selection["dev_queries"] == 2 and selection["test_queries"] == 3 and selection["documents"] == 5
    assert selection["left_out"] == {"dev": {"no_target": 1, "all_targets": 0},
                                     "eval": {"no_target": 0, "all_targets": 0}}
    # the release's own parts: dev queries choose the layer, eval queries are the test part
    rows = [line.split("\t") for line in (out / "queries.tsv").read_text().splitlines()[1:]]
    assert [(r[0], r[2]) for r in rows] == [("quesst14_dev_0001", "dev"), ("quesst14_dev_0002", "dev"),
                                            ("quesst14_eval_0001", "test"), ("quesst14_eval_0002", "test"),
                                            ("quesst14_eval_0003", "test")]
    assert rows[0][-1] == "quesst14_00001,quesst14_00003"
    for split, queries in (("dev", 2), ("test", 3)):
        metrics = results["splits"][split]
        assert metrics["utterances"] == queries and metrics["trials"] == queries * 5
        assert metrics["map"] == pytest.approx(1.0), (split, metrics)
        assert metrics["mtwv"] > 0.9 and metrics["p_at_2"] == pytest.approx(1.0)
    predictions = (out / "predictions-test.tsv").read_text().splitlines()
    assert len(predictions) == 1 + 3 * 5 and "quesst14_00006" not in "".join(predictions)
    assert results["layer"] == 0 and results["learning_rate"] is None
    assert yaml.safe_load((out / "config.yaml").read_text())["config"]["corpus"] == "quesst14"


def test_qbe_on_sws2013_scores_each_part_on_its_ecf(tmp_path):
    base = sws2013(tmp_path / "data")
    # the eval ECF lists three documents: the eval queries are scored on those only
    ecf = base / "scoring_atwv_sws2013" / "sws2013_eval" / "sws2013.ecf.xml"
    ecf.write_text("\n".join(line for line in ecf.read_text().splitlines() if "sws2013_00004" not in line) + "\n")
    rttm = ecf.parent / "sws2013_eval.rttm"
    rttm.write_text("\n".join(line for line in rttm.read_text().splitlines() if "sws2013_00004" not in line) + "\n")
    cfg = QbEConfig(corpus="sws2013", root=str(base), cache_root=str(tmp_path / "cache"), precision_k=1)
    results = run_qbe(tmp_path / "exp" / "qbe-sws", "fbank", None, cfg)
    assert results["dataset"] == "sws2013:sws2013Database_dev_eval"
    assert results["splits"]["dev"]["trials"] == 2 * 4 and results["splits"]["test"]["trials"] == 2 * 3
    assert results["splits"]["dev"]["map"] == pytest.approx(1.0)
    assert results["splits"]["test"]["map"] == pytest.approx(1.0)
    predictions = (tmp_path / "exp" / "qbe-sws" / "predictions-test.tsv").read_text()
    assert "sws2013_00004" not in predictions and len(predictions.splitlines()) == 1 + 2 * 3


def test_corpus_config_checks_and_old_folders_resume(tmp_path):
    check_qbe_config(QbEConfig(root="x", alignments="a.tsv"))  # the default corpus, as before
    with pytest.raises(ConfigError, match="corpus must be one of librispeech, quesst14, sws2013, not 'quesst'"):
        check_qbe_config(QbEConfig(root="x", corpus="quesst"))
    with pytest.raises(ConfigError, match="alignments, dev_fraction: only corpus librispeech reads these keys"):
        check_qbe_config(QbEConfig(root="x", corpus="quesst14", alignments="a.tsv", dev_fraction=0.3))
    with pytest.raises(ConfigError, match="quesst14_language is for corpus quesst14, not sws2013"):
        check_qbe_config(QbEConfig(root="x", corpus="sws2013", quesst14_language=""))
    with pytest.raises(ValueError, match="QbE needs root: the sws2013 database folder"):
        check_qbe_config(QbEConfig(corpus="sws2013"))
    # a run folder made before corpus and quesst14_language existed resumes with their defaults
    cfg = QbEConfig(root="x", alignments="a.tsv")
    old = to_dict(cfg)
    del old["corpus"], old["quesst14_language"]
    folder = tmp_path / "qbe-old"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"run": {"task": "qbe", "upstream": "fbank", "upstream_ckpt": None}, "config": old}, sort_keys=False))
    claim_qbe_folder(folder, "fbank", None, cfg)
    assert yaml.safe_load((folder / "config.yaml").read_text())["config"]["corpus"] == "librispeech"
    with pytest.raises(ConfigError, match="corpus: 'librispeech' -> 'quesst14'"):
        claim_qbe_folder(folder, "fbank", None, QbEConfig(root="x", corpus="quesst14"))
