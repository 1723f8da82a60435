"""ASR: corpus readers, vocabulary, CTC lengths, decoding, error rates, the head, and training end to end."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.config import parse_overrides
from corpora.librilight import read_librilight, subset_dirs
from corpora.librispeech import read_librispeech_dir
from corpora.manifest import ManifestError, Record
from downstream.cli import main
from downstream.config import FinetuneConfig, tri_stage_scale
from downstream.heads.frame import BiLSTMHead, BiLSTMOptions
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.asr import ASRConfig, SpeechRecognition
from downstream.tasks.ctc_text import (
    BeamSearchDecoder,
    CharVocabulary,
    UnknownCharacterError,
    ctc_min_frames,
    error_rates,
    greedy_decode,
    normalize_transcript,
)
from tests.conftest import killed_at_update, noise_batch, shared_data, tone_transcripts
from upstream import build_upstream
from upstream.base import FinetuneMasking


def _chapter(folder: Path, speaker: int, chapter: int, texts: list[str], seconds: float = 0.5, skip_audio=()) -> None:
    """One LibriSpeech chapter folder: FLAC noise files and their ``.trans.txt``."""
    d = folder / str(speaker) / str(chapter)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(speaker + chapter)
    lines = []
    for i, text in enumerate(texts):
        utt = f"{speaker}-{chapter}-{i:04d}"
        if i not in skip_audio:
            sf.write(d / f"{utt}.flac", (0.05 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        lines.append(f"{utt} {text}")
    (d / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")


def _librilight_tree(root: Path) -> Path:
    base = root / "librispeech_finetuning"
    _chapter(base / "1h/0/clean", 10, 100, ["A B", "C D"])
    _chapter(base / "1h/0/other", 11, 110, ["E F"])
    _chapter(base / "1h/1/clean", 12, 120, ["G H", "I J", "K L"])
    _chapter(base / "9h/clean", 13, 130, ["M N"])
    _chapter(base / "9h/other", 10, 100, ["O P"])  # same speaker-chapter id as in 1h/0: ids must stay unique
    return root


# ------------------------------------------------------------------ corpora
def test_librilight_settings_on_a_tiny_tree(tmp_path: Path):
    root = _librilight_tree(tmp_path)
    assert ([p.relative_to(root / "librispeech_finetuning").as_posix() for p in subset_dirs(root, "10min")]
            == ["1h/0/clean", "1h/0/other"])
    counts = {s: len(read_librilight(root, s)) for s in ("10min", "1h", "10h")}
    assert counts == {"10min": 3, "1h": 6, "10h": 8}
    records = read_librilight(root, "10h")
    assert len({r.id for r in records}) == 8
    assert {r.id for r in records} >= {"1h-0-clean/10-100-0000", "9h-other/10-100-0000"}
    r = next(r for r in records if r.id == "1h-1-clean/12-120-0002")
    assert r.text == "K L" and r.speaker == "12" and math.isclose(r.duration, 0.5) and Path(r.path).is_file()
    # either root works
    assert read_librilight(root / "librispeech_finetuning", "10min") == read_librilight(root, "10min")
    with pytest.raises(ValueError, match="unknown Libri-light subset"):
        subset_dirs(root, "5h")


@pytest.mark.parametrize("texts,skip,message", [
    (["HELLO", "", "WORLD"], (), r"trans\.txt:2: utterance '5-50-0001' has no text"),
    (["HELLO WORLD", "FOO"], (1,), r"trans\.txt:2: no audio for utterance '5-50-0001'"),
])
def test_bad_transcript_files_name_file_and_line(tmp_path: Path, texts, skip, message):
    _chapter(tmp_path / "split", 5, 50, texts, skip_audio=skip)
    with pytest.raises(ManifestError, match=message):
        read_librispeech_dir(tmp_path / "split")


@pytest.mark.parametrize("content,message", [
    ("5-50-0000 HELLO\n\n5-50-0001 WORLD\n", r"5-50\.trans\.txt:2: empty transcript line"),
    ("5-50-0000 HELLO\n   \n", r"5-50\.trans\.txt:2: empty transcript line"),
    ("5-50-0000\n", r"5-50\.trans\.txt:1: utterance '5-50-0000' has no text"),
])
def test_empty_transcript_lines(tmp_path: Path, content: str, message: str):
    d = tmp_path / "split/5/50"
    d.mkdir(parents=True)
    for i in range(2):
        sf.write(d / f"5-50-000{i}.flac", np.zeros(1600, dtype=np.float32), 16000)
    (d / "5-50.trans.txt").write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_librispeech_dir(tmp_path / "split")


def test_unknown_character_names_the_utterance(tmp_path: Path):
    root = tmp_path / "ls"
    _chapter(root / "librispeech_finetuning/1h/0/clean", 1, 10, ["HELLO WORLD"])
    _chapter(root / "LibriSpeech/dev-clean", 2, 20, ["CAFÉ OLÉ"])
    _chapter(root / "LibriSpeech/test-clean", 3, 30, ["FINE"])
    task = SpeechRecognition(ASRConfig(corpus="librispeech", root=str(root)), tmp_path / "exp")
    with pytest.raises(UnknownCharacterError, match=r"dev utterance 2-20-0000 .*\['É'\]"):
        task.prepare()


# ------------------------------------------------------------------ text and metrics
def test_vocabulary_round_trip():
    vocab = CharVocabulary.superb()
    assert vocab.tokens[0] == "<blank>" and len(vocab) == 29
    text = "  it's a  Test\tof THE vocabulary "
    ids = vocab.encode(text)
    assert 0 not in ids and ids.count(vocab.index["|"]) == 5
    assert vocab.decode(ids) == normalize_transcript(text) == "IT'S A TEST OF THE VOCABULARY"
    built = CharVocabulary.from_texts(["b a", "c'"])
    assert built.tokens == ["<blank>", "|", "'", "A", "B", "C"]
    assert CharVocabulary(built.tokens[1:]).tokens == built.tokens  # what a checkpoint restores
    with pytest.raises(UnknownCharacterError, match=r"utt-7: character\(s\) \['1', '2'\]"):
        vocab.encode("ROOM 12", where="utt-7")


def test_error_rates_against_hand_counts():
    refs = ["the cat sat", "hello world"]
    hyps = ["THE CAT SIT", "hello"]
    rates = error_rates(refs, hyps)
    assert math.isclose(rates["wer"], 100 * 2 / 5)  # one substitution, one deletion, five reference words
    assert math.isclose(rates["cer"], 100 * 7 / 22)  # 'A'->'I', then ' WORLD' deleted; 11 + 11 characters
    assert error_rates(["a b"], ["  A   b "]) == {"wer": 0.0, "cer": 0.0}  # same normalisation on both sides
    assert error_rates(["a b"], [""])["wer"] == 100.0
    with pytest.raises(ValueError, match="reference transcript is empty"):
        error_rates([" "], ["a"])


def _emissions(path: list[str], vocab: CharVocabulary, peak: float = 0.9) -> torch.Tensor:
    """(1, T, V) log-probabilities putting ``peak`` on each frame's symbol of ``path``."""
    probs = torch.full((len(path), len(vocab)), (1 - peak) / (len(vocab) - 1))
    for t, sym in enumerate(path):
        probs[t, vocab.index[sym]] = peak
    return probs.log()[None]


def test_greedy_and_beam_decoding_of_a_known_emission_matrix():
    vocab = CharVocabulary.superb()
    path = ["<blank>", "A", "A", "<blank>", "B", "|", "|", "B", "<blank>", "B", "<blank>"]
    emissions = _emissions(path, vocab)
    # repeats merge, a blank between two B's keeps both, '|' is the space
    assert greedy_decode(emissions, torch.tensor([11]), vocab) == ["AB BB"]
    assert greedy_decode(emissions, torch.tensor([5]), vocab) == ["AB"]  # only the valid frames count
    assert BeamSearchDecoder(vocab, beam_size=10)(emissions, torch.tensor([11])) == ["AB BB"]


def test_beam_search_with_a_word_lm_prefers_the_likely_word(tmp_path: Path):
    vocab = CharVocabulary.superb()
    # Acoustically "CAT" is a little more likely than "CAR"; the LM knows only "CAR" is a common word.
    frames = torch.full((4, len(vocab)), 1e-4)
    for t, (sym, p) in enumerate([("C", 0.99), ("A", 0.99), ("T", 0.55), ("|", 0.99)]):
        frames[t, vocab.index[sym]] = p
    frames[2, vocab.index["R"]] = 0.44
    emissions = (frames / frames.sum(-1, keepdim=True)).log()[None]
    assert greedy_decode(emissions, torch.tensor([4]), vocab) == ["CAT"]
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=5\nngram 2=2\n\n\\1-grams:\n-0.5\t<s>\t-0.3\n-0.5\t</s>\n-3.0\t<unk>\n"
                    "-0.1\tCAR\t-0.3\n-4.0\tCAT\t-0.3\n\n\\2-grams:\n-0.1\t<s> CAR\n-0.1\tCAR </s>\n\n\\end\\\n")
    decoder = BeamSearchDecoder(vocab, beam_size=10, lm=str(arpa), lm_weight=2.0, workdir=tmp_path)
    assert decoder(emissions, torch.tensor([4])) == ["CAR"]
    assert (tmp_path / "lexicon.txt").read_text().split("\n")[:2] == ["CAR C A R |", "CAT C A T |"]


# ------------------------------------------------------------------ CTC lengths and the head
def test_ctc_min_frames_counts_blanks_between_repeats():
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8
    lp = torch.randn(3, 1, 5).log_softmax(-1)
    for target, finite in (([1, 1], True), ([1, 1, 1], False)):  # 3 frames: 'AA' fits (A _ A), 'AAA' does not
        loss = torch.nn.functional.ctc_loss(lp, torch.tensor([target]), torch.tensor([3]), torch.tensor([len(target)]))
        assert math.isfinite(loss.item()) == finite == (ctc_min_frames(target) <= 3)


@pytest.mark.parametrize("name,downsample", [("fbank", 1), ("fbank", 2), ("apc", 2), ("mockingjay", 2), ("hubert", 1),
                                             ("bestrq", 1)])
def test_real_transcripts_fit_every_upstreams_frame_rate(name: str, downsample: int, tmp_path: Path):
    """On real LibriSpeech speech: frames after the upstream (and the head's downsampling) never fall short of
    CTC's need."""
    root = shared_data("librispeech_mini")
    task = SpeechRecognition(ASRConfig(corpus="librispeech", root=str(root), downsample=downsample), tmp_path)
    splits = task.prepare()
    upstream = build_upstream(name, None, **({} if name == "fbank" else {"preset": "tiny"}))
    records = [r for rs in splits.values() for r in rs]
    samples = torch.tensor([round(r.duration * 16000) for r in records])
    frames = upstream.num_frames(samples).tolist()
    task.check_frames("all", records, frames)  # raises if any utterance falls short
    short = records[:1]
    with pytest.raises(ValueError, match=rf"1 all utterance\(s\) give fewer upstream frames .*{short[0].id}"):
        task.check_frames("all", short, [ctc_min_frames(task.targets[short[0].id]) * downsample - downsample])
    # the formula is the real forward pass's frame count
    if upstream.needs_fit:
        upstream.fit([torch.randn(16000)])
    wavs = torch.zeros(2, 24000)
    out = upstream(wavs, torch.tensor([24000, 17000]))
    assert out.lengths.tolist() == upstream.num_frames(torch.tensor([24000, 17000])).tolist()


def test_linear_ctc_head_without_lstm(tmp_path: Path):
    task = SpeechRecognition(ASRConfig(corpus="demo", root=str(tmp_path / "demo"), lstm_layers=0, downsample=2,
                                       specaug=False), tmp_path)
    head = task.make_head(12, 29)
    assert [name for name, _ in head.named_parameters()] == ["out.weight", "out.bias"]
    log_probs, lengths = task.log_probs(head(torch.randn(2, 9, 12), torch.tensor([9, 4])))
    assert log_probs.shape == (2, 5, 29) and lengths.tolist() == [5, 2]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5))


def test_upsampling_repeats_coarse_frames_for_ctc(tmp_path: Path):
    head = BiLSTMHead(12, 29, BiLSTMOptions(lstm_layers=0, upsample=2, specaug=False))
    x = torch.randn(2, 5, 12)
    scores, lengths = head(x, torch.tensor([5, 3]))
    assert scores.shape == (2, 10, 29) and lengths.tolist() == [10, 6]
    assert torch.equal(scores[:, 0::2], scores[:, 1::2])  # each 40-ms frame twice
    with pytest.raises(ValueError, match="one of them 1"):
        BiLSTMHead(12, 29, BiLSTMOptions(downsample=2, upsample=2))
    task = SpeechRecognition(ASRConfig(upsample=2), tmp_path)
    task.targets = {"u": [3, 4, 5, 6, 7]}
    record = Record(id="u", path="u.flac", duration=1.0)
    task.check_frames("train", [record], [3])  # 6 frames after upsampling: enough for 5 labels
    task.cfg.upsample = 1
    with pytest.raises(ValueError, match="task.upsample=2"):
        task.check_frames("train", [record], [3])


def test_tri_stage_schedule():
    cfg = FinetuneConfig(warmup_fraction=0.1, hold_fraction=0.4, init_lr_scale=0.01, final_lr_scale=0.05)
    scales = [tri_stage_scale(s, 100, cfg) for s in range(101)]
    assert math.isclose(scales[0], 0.01) and math.isclose(scales[5], 0.505)
    assert all(s == 1.0 for s in scales[10:50])
    assert math.isclose(scales[75], 0.05 ** 0.5) and math.isclose(scales[100], 0.05)
    assert all(a >= b for a, b in zip(scales[50:], scales[51:], strict=False))


# ------------------------------------------------------------------ end to end
def _asr_corpus(root: Path) -> Path:
    """A tiny LibriSpeech-layout corpus: each 'letter' is a tone, so CTC can learn to read them."""
    return tone_transcripts(root, {"A": 300.0, "B": 700.0, "C": 1500.0}, tones_per_word=2)


def _asr_run(tmp_path: Path, name: str, upstream: str, *extra: str):
    overrides = ["task.corpus=librispeech", f"task.root={tmp_path / 'corpus'}", "task.proj_dim=32", "task.lstm_dim=32",
                 "task.specaug=false", f"cache.root={tmp_path / 'cache'}", "train.lr=0.01", "train.batch_size=8",
                 "train.eval_every=20", "train.save_every=10", *extra]
    spec = RunSpec("asr", upstream)
    return Experiment.create(tmp_path / "exp", name, spec, resolve_config(spec, {}, parse_overrides(overrides)))


def test_asr_trains_decodes_and_writes_hypotheses(tmp_path: Path):
    _asr_corpus(tmp_path / "corpus")
    results = _asr_run(tmp_path, "fb", "fbank", "train.total_steps=160", "task.downsample=2",
                       "task.select_metric=cer").train()
    test = results["splits"]["test"]
    assert results["primary_metric"] == "wer" and results["selection_metric"] == "cer"
    assert test["cer"] < 50.0, test  # tones of three pitches are easy to read; an untrained head gives 100
    rows = (tmp_path / "exp/fb/predictions-test.tsv").read_text().strip().split("\n")
    assert rows[0] == "id\treference\thypothesis" and len(rows) == 7
    refs, hyps = zip(*(r.split("\t")[1:] for r in rows[1:]), strict=True)
    assert math.isclose(error_rates(list(refs), list(hyps))["cer"], test["cer"])
    ckpt = torch.load(tmp_path / "exp/fb/checkpoints/best.pt", weights_only=False)
    assert ckpt["task"]["characters"][0] == "|" and "upstream" not in ckpt

    # evaluate again with beam search: a separate results file; the greedy results stay
    args = ["-m", "evaluate", "-n", "fb", "-p", str(tmp_path / "exp"), "-s", "test", "-o", "task.decoder=beam",
            "-o", "task.beam_size=8"]
    assert main(args) == 0
    beam = json.loads((tmp_path / "exp/fb/results-beam_size=8-decoder=beam.json").read_text())
    assert beam["decoding"] == "beam_size=8-decoder=beam" and beam["splits"]["test"]["cer"] <= test["cer"] + 10
    assert (tmp_path / "exp/fb/predictions-beam_size=8-decoder=beam-test.tsv").is_file()
    assert json.loads((tmp_path / "exp/fb/results.json").read_text())["splits"]["test"] == test
    assert main(["-m", "evaluate", "-n", "fb", "-p", str(tmp_path / "exp"), "-o", "train.lr=1"]) == 2


def test_finetuning_freezes_then_trains_the_upstream_and_resumes(tmp_path: Path, monkeypatch):
    _asr_corpus(tmp_path / "corpus")
    args = ("train.total_steps=12", "finetune.enabled=true", "finetune.freeze_steps=6", "upstream.preset=tiny",
            "finetune.mask_time_start_prob=0.05")
    exp = _asr_run(tmp_path, "ft", "hubert", *args)
    seen = []
    real_step = torch.optim.Adam.step

    def record(self, *a, **k):
        out = real_step(self, *a, **k)
        seen.append(self.param_groups[1]["params"][5].detach().clone())  # a Transformer weight of the upstream
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    exp.train()
    assert all(torch.equal(seen[0], s) for s in seen[:6]), "the upstream moved while frozen"
    assert not torch.equal(seen[5], seen[-1]), "the upstream did not train after freeze_steps"
    best = torch.load(tmp_path / "exp/ft/checkpoints/best.pt", weights_only=False)
    assert "upstream" in best and "scheduler" in best
    results = json.loads((tmp_path / "exp/ft/results.json").read_text())
    assert results["finetuned"] and results["upstream_label"] == "hubert:random+finetuned"
    # the random initial weights are saved; evaluate rebuilds them and applies the fine-tuned state
    again = Experiment.load(tmp_path / "exp", "ft").evaluate(("test",))
    assert again["splits"]["test"]["cer"] == results["splits"]["test"]["cer"]

    # killed after the upstream was unfrozen, then resumed: the same weights as the uninterrupted run
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    with killed_at_update(9):
        _asr_run(tmp_path, "ft2", "hubert", *args, "train.save_every=4").train()
    assert torch.load(tmp_path / "exp/ft2/checkpoints/last.pt", weights_only=False)["position"]["step"] == 8
    _asr_run(tmp_path, "ft2", "hubert", *args, "train.save_every=4").train()
    whole = _asr_run(tmp_path, "ft3", "hubert", *args, "train.save_every=4")
    whole.train()
    a, b = (torch.load(tmp_path / f"exp/{n}/checkpoints/last.pt", weights_only=False) for n in ("ft3", "ft2"))
    for part in ("upstream", "head"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


def test_hubert_finetuning_masks_only_in_training_and_keeps_its_cnn_out():
    torch.manual_seed(0)
    model = build_upstream("hubert", None, preset="tiny", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                           projection_dropout=0.0, layer_drop=0.0)
    keys = list(model.state_dict())
    wavs, lengths = noise_batch([16000, 12000])
    plain = model.eval()(wavs, lengths).hidden_states[-1]
    assert model.set_finetune_masking(FinetuneMasking(time_start_prob=0.2, time_span=5))
    assert list(model.state_dict()) == keys  # the mask generator is not part of the checkpoint
    assert torch.equal(model.eval()(wavs, lengths).hidden_states[-1], plain)  # eval: no masking
    masked = model.train()(wavs, lengths).hidden_states[-1]
    assert not torch.allclose(masked, plain)
    assert model.set_finetune_masking(None) and torch.allclose(
        model.train()(wavs, lengths).hidden_states[-1], plain, atol=1e-6)
    cnn = {id(p) for p in model.model.wav2vec2.feature_extractor.parameters()}
    tuned = model.finetune_parameters()
    assert tuned and not any(id(p) in cnn for p in tuned)
    assert build_upstream("apc", None, preset="tiny").set_finetune_masking(FinetuneMasking()) is False
