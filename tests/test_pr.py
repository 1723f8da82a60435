"""Phoneme recognition: phone targets (CMU dictionary, espeak-ng fallback), PER, folds, the head end to end."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from core.config import parse_overrides
from corpora.folds import heldout_fold, subset_minutes
from corpora.manifest import Record
from downstream.alignment import align_split
from downstream.heads.frame import FrameLinear, FrameOptions
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.phonemes import ARPABET, PhonemeLexicon, espeak_arpabet, ipa_to_arpabet
from downstream.tasks.pr import PhonemeRecognition, phone_errors
from tests.conftest import shared_data, tone_transcripts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng): "
                                         "no G2P for unknown words")


@pytest.fixture(scope="module")
def lexicon():
    return PhonemeLexicon()


# ------------------------------------------------------------------ phone targets
def test_a_hand_checked_sentence(lexicon):
    phones, report = lexicon.convert({"u1": "the cat sat on a mat"})
    assert phones["u1"] == "DH AH K AE T S AE T AA N AH M AE T".split()
    assert report.words == 6 and report.oov_tokens == 0 and report.oov_utterances == 0


def test_stress_is_removed(lexicon):
    assert lexicon.dictionary["hello"][0] == ["HH", "AH0", "L", "OW1"]  # the dictionary itself has stress digits
    assert lexicon.lookup("HELLO") == ["HH", "AH", "L", "OW"]
    phones, _ = lexicon.convert({"u": "ABSTRACTION WITHSTOOD THE EXTRAORDINARY"})
    assert phones["u"] and set(phones["u"]) <= set(ARPABET)


@needs_espeak
def test_words_missing_from_the_dictionary_are_spelled_by_espeak_and_counted(lexicon):
    assert lexicon.lookup("ZORBLAXIAN") is None
    phones, report = lexicon.convert({"a": "THE ZORBLAXIAN SHIP", "b": "THE SHIP", "c": "ZORBLAXIAN ZORBLAXIAN"})
    spelled = espeak_arpabet(["ZORBLAXIAN"])["ZORBLAXIAN"]
    assert spelled[:3] == ["Z", "AO", "R"] and set(spelled) <= set(ARPABET)
    assert phones["a"] == ["DH", "AH", *spelled, "SH", "IH", "P"]
    assert (report.words, report.oov_tokens, report.oov_utterances, report.oov_words) == (7, 3, 2, ["ZORBLAXIAN"])
    info = report.as_dict()
    assert info["oov_token_rate"] == round(3 / 7, 4) and info["oov_examples"] == ["ZORBLAXIAN"]


def test_ipa_mapping():
    assert ipa_to_arpabet("tʃ_ˈɜː_tʃ") == ["CH", "ER", "CH"]  # church
    assert ipa_to_arpabet("b_ˈʌ_ɾ_ɚ") == ["B", "AH", "T", "ER"]  # butter: the flap is T, as CMU writes it
    assert ipa_to_arpabet("f_ˈaɪɚ") == ["F", "AY", "ER"]  # fire: a diphthong then r-coloured schwa
    assert ipa_to_arpabet("ʃ_(fr)ə_(en)z") == ["SH", "AH", "Z"]  # language-switch marks dropped
    with pytest.raises(ValueError, match=r"'QWORD'.*symbol 'ʕ'"):
        ipa_to_arpabet("k_ʕ_ɑː", "QWORD")


def test_missing_espeak_names_the_words(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"ZORBLAXIAN.*apt-get install espeak-ng"):
        espeak_arpabet(["ZORBLAXIAN"])


def test_characters_other_than_letters_are_an_error_naming_the_utterance(lexicon):
    with pytest.raises(ValueError, match=r"utterance 84-121-0003: character\(s\) \['2'\]"):
        lexicon.convert({"84-121-0003": "CHAPTER 2"})


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_every_librispeech_mini_transcript_converts():
    root = shared_data("librispeech_mini")
    texts = {}
    for path in root.rglob("*.trans.txt"):
        for line in path.read_text().splitlines():
            uid, text = line.split(" ", 1)
            texts[uid] = text
    phones, report = PhonemeLexicon().convert(texts)
    assert len(phones) == len(texts) == report.utterances
    assert all(p and set(p) <= set(ARPABET) for p in phones.values())
    assert 0.2 < report.oov_utterances / report.utterances < 0.6  # LibriSpeech is full of names and rare words


# ------------------------------------------------------------------ metric and folds
def test_per_against_a_hand_count():
    # "AH B K" -> "AH K": one deletion; "DH AH" -> "DH AH AH": one insertion; 2 errors / 5 reference phones
    assert phone_errors(["AH B K", "DH AH"], ["AH K", "DH AH AH"]) == pytest.approx(
        {"per": 40.0, "sub": 0.0, "del": 20.0, "ins": 20.0})
    # a substitution and a deletion; an empty hypothesis deletes every phone
    assert phone_errors(["AH B"], ["IY"]) == pytest.approx({"per": 100.0, "sub": 50.0, "del": 50.0, "ins": 0.0})
    assert phone_errors(["AH B", "K"], ["", "K"]) == pytest.approx(
        {"per": 100 * 2 / 3, "sub": 0.0, "del": 100 * 2 / 3, "ins": 0.0})
    with pytest.raises(ValueError, match="empty"):
        phone_errors([""], ["AH"])


def _records(speakers: int, per_speaker: int) -> list[Record]:
    return [Record(id=f"{s}-{i}", path=f"/x/{s}-{i}.flac", duration=1.0, speaker=str(s), text="A")
            for s in range(speakers) for i in range(per_speaker)]


def test_heldout_folds_test_every_speaker_once_and_keep_dev_apart():
    records = _records(speakers=20, per_speaker=3)
    tested = []
    for fold in range(5):
        split = heldout_fold(records, 5, fold, dev_fraction=0.1)
        spk = {name: {r.speaker for r in rs} for name, rs in split.items()}
        assert not spk["train"] & spk["dev"] and not spk["train"] & spk["test"] and not spk["dev"] & spk["test"]
        assert len(spk["test"]) == 4 and len(spk["dev"]) == 2 and len(spk["train"]) == 14
        tested += [r.id for r in split["test"]]
    assert sorted(tested) == sorted(r.id for r in records)  # every utterance tested exactly once


def test_heldout_folds_of_one_speaker_go_by_utterance():
    records = _records(speakers=1, per_speaker=50)
    split = heldout_fold(records, 5, 2, dev_fraction=0.1)
    assert [len(split[k]) for k in ("train", "dev", "test")] == [36, 4, 10]
    assert not {r.id for r in split["train"]} & {r.id for r in split["test"]}
    with pytest.raises(ValueError, match="at least 5"):
        heldout_fold(_records(1, 3), 5, 0)


# ------------------------------------------------------------------ end to end
TONES = {"I": 300.0, "A": 800.0, "OH": 1800.0}
"""Words of one phone each (CMU: AY, AH, OW), each spoken as a tone."""


def _pr_run(tmp_path: Path, name: str, *extra: str):
    overrides = ["task.corpus=librispeech", f"task.root={tmp_path / 'corpus'}", f"cache.root={tmp_path / 'cache'}",
                 "train.lr=0.05", "train.batch_size=8", "train.eval_every=40", "train.save_every=40", *extra]
    spec = RunSpec("pr", "fbank_raw")
    return Experiment.create(tmp_path / "exp", name, spec, resolve_config(spec, {}, parse_overrides(overrides)))


def test_pr_trains_a_linear_probe_and_writes_phone_hypotheses(tmp_path: Path):
    tone_transcripts(tmp_path / "corpus", TONES, tones_per_word=1, words=3)
    exp = _pr_run(tmp_path, "pr", "train.total_steps=120")
    results = exp.train()
    test = results["splits"]["test"]
    assert results["primary_metric"] == "per" and results["track"] == "pr"
    assert test["per"] < 40.0, test  # three tones are easy to tell apart; an untrained head gives 100
    rows = (tmp_path / "exp/pr/predictions-test.tsv").read_text().strip().split("\n")
    assert len(rows) == 7
    refs, hyps = zip(*(r.split("\t")[1:] for r in rows[1:]), strict=True)
    assert set(" ".join(refs).split()) <= {"AY", "AH", "OW"}
    errors = phone_errors(list(refs), list(hyps))
    assert errors["per"] == pytest.approx(test["per"]) and test["del"] == pytest.approx(errors["del"])
    assert test["sub"] + test["del"] + test["ins"] == pytest.approx(test["per"])
    assert results["metric_info"]["phonemes"]["oov_tokens"] == 0 and results["learning_rate"] == 0.05
    head = torch.load(tmp_path / "exp/pr/checkpoints/best.pt", weights_only=False)["head"]
    assert list(head) == ["linear.weight", "linear.bias"]  # SUPERB's PR head: one linear layer
    alignments, failed = align_split(exp, "test")  # the head's scores through downstream.alignment
    assert len(alignments) + len(failed) == 6 and alignments
    assert all(label in {"AY", "AH", "OW", "SIL"} for segments in alignments.values() for *_, label in segments)


def test_pr_folds_pool_the_corpus(tmp_path: Path):
    tone_transcripts(tmp_path / "corpus", TONES, tones_per_word=1, words=3)
    exp = _pr_run(tmp_path, "folds", "task.folds=3", "task.fold=1", "train.total_steps=1")
    splits = exp.task.prepare()
    assert sum(len(r) for r in splits.values()) == 36  # 24 + 6 + 6 pooled; 3 speakers: one per part
    assert {r.speaker for r in splits["test"]} != {r.speaker for r in splits["train"]}
    assert exp.task.dataset().endswith("/folds-3")
    results = exp.train()
    assert json.loads((tmp_path / "exp/folds/results.json").read_text())["dataset"] == results["dataset"]


def test_phoneme_head_repeats_coarse_frames():
    head = FrameLinear(4, 40, FrameOptions(upsample=2))
    log_probs, lengths = PhonemeRecognition.log_probs(head(torch.randn(2, 5, 4), torch.tensor([5, 3])))
    assert log_probs.shape == (2, 10, 40) and lengths.tolist() == [10, 6]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 10))


def test_training_subsets_are_nested_and_bounded():
    records = [Record(id=str(i), path=f"/x/{i}.flac", duration=10.0 + i % 7, text="A") for i in range(60)]
    ten, twenty = subset_minutes(records, 10), subset_minutes(records, 20)
    assert sum(r.duration for r in ten) <= 600 < sum(r.duration for r in ten) + 17
    assert set(r.id for r in ten) < set(r.id for r in twenty) and sum(r.duration for r in twenty) <= 1200
    assert subset_minutes(records, 0.01) and subset_minutes(records, 1000) == records
