"""Speech translation: CoVoST 2 reader, SentencePiece, the Transformer head's decoding, BLEU, and the runner."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.config import parse_overrides
from corpora.covost2 import prepare_covost2, read_covost2
from corpora.manifest import ManifestError, Record, write_manifest
from downstream.heads import build_head
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.st import STConfig, translation_scores
from downstream.tasks.st_decoding import beam_search, greedy
from downstream.tasks.subwords import BOS, EOS, PAD, PieceModel

GERMAN = ["Ein roter Hund läuft im Park.", "Die kleine Katze schläft.", "Zwei Männer spielen Fußball auf der Straße.",
          "Ein Mädchen springt ins Wasser.", "Das alte Auto wartet vor dem Haus.", "Eine Frau liest ein Buch.",
          "Der Junge isst einen Apfel.", "Kinder spielen im Schnee.", "Ein Vogel sitzt auf dem Dach.",
          "Ein weißes Pferd steht auf der Wiese."]


# ------------------------------------------------------------------ corpus
def _covost_tree(root: Path, missing_clip: bool = True) -> Path:
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("dev", 2), ("test", 2)):
        lines = ["path\tsentence\ttranslation\tclient_id"]
        for i in range(n):
            clip = f"common_voice_en_{split}{i}.mp3"
            sf.write(root / "clips" / clip, (0.05 * rng.standard_normal(8000)).astype(np.float32), 16000)
            lines.append(f"{clip}\tA \"quoted\" sentence {i}.\t{GERMAN[i]}\tspk{i % 2}")
        if split == "train" and missing_clip:
            lines.append("common_voice_en_gone.mp3\tLost.\tVerloren.\tspk9")
        (root / f"covost_v2.en_de.{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_covost_reader_reports_a_missing_clip(tmp_path: Path, caplog):
    root = _covost_tree(tmp_path / "covost")
    records, skipped = read_covost2(root, "train")
    assert len(records) == 4 and skipped == [(6, "common_voice_en_gone.mp3", "file not found")]
    r = records[1]
    assert r.id == "common_voice_en_train1" and r.text == 'A "quoted" sentence 1.' and r.translation == GERMAN[1]
    assert r.speaker == "spk1" and math.isclose(r.duration, 0.5, abs_tol=0.05)
    assert "skipped 1 row" in caplog.text
    paths = prepare_covost2(root, tmp_path / "man")
    assert set(paths) == {"train", "dev", "test"}
    skipped = (tmp_path / "man/skipped-covost2.tsv").read_text().splitlines()
    assert skipped[1] == f"{root / 'covost_v2.en_de.train.tsv'}:6 (common_voice_en_gone.mp3)\tfile not found"


@pytest.mark.parametrize("row,message", [
    ("x.mp3\tonly two", r"\.train\.tsv:2: expected 4 tab-separated fields, found 2"),
    ("x.mp3\t\tÜbersetzung\tspk", r"\.train\.tsv:2: empty sentence for clip 'x.mp3'"),
])
def test_covost_reader_malformed_rows(tmp_path: Path, row: str, message: str):
    (tmp_path / "clips").mkdir()
    (tmp_path / "covost_v2.en_de.train.tsv").write_text("path\tsentence\ttranslation\tclient_id\n" + row + "\n")
    with pytest.raises(ManifestError, match=message):
        read_covost2(tmp_path, "train")
    with pytest.raises(ManifestError, match="split file not found"):
        read_covost2(tmp_path, "dev")


# ------------------------------------------------------------------ pieces and metrics
@pytest.mark.parametrize("pieces", ["char", "unigram", "bpe"])
def test_sentencepiece_round_trip(pieces: str):
    model = PieceModel.train(GERMAN * 3, pieces, vocab_size=60)
    for text in GERMAN:
        ids = model.encode(text)
        assert all(i > EOS for i in ids)  # no specials inside a sentence
        assert model.decode(ids) == text
    if pieces == "char":
        assert len(model.encode("Hund")) == 5  # word-start marker + 4 characters
    restored = PieceModel(model.proto)  # what a checkpoint carries
    assert restored.encode(GERMAN[2]) == model.encode(GERMAN[2])


def test_bleu_and_chrf_against_hand_counts():
    scores, signatures = translation_scores(["a b c d e f"], ["a b c d e g"])
    # n-gram precisions 5/6, 4/5, 3/4, 2/3, equal lengths (no brevity penalty): BLEU = (1/3) ** (1/4)
    assert math.isclose(scores["bleu"], 100 * (1 / 3) ** 0.25, rel_tol=1e-9)
    assert math.isclose(translation_scores(["Der Hund läuft."], ["Der Hund läuft."])[0]["bleu"], 100.0)
    assert translation_scores(["der hund läuft ."], ["Der Hund läuft."])[0]["bleu"] < 100.0  # case-sensitive
    assert signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "chrF2" in signatures["chrf"] or "nc:6" in signatures["chrf"]


# ------------------------------------------------------------------ the head
def _head(input_dim: int, vocab_size: int, cfg: STConfig) -> torch.nn.Module:
    """The task's head (``s2t_transformer``) with the sizes ``cfg`` sets."""
    return build_head(cfg.head, input_dim, vocab_size, settings=dataclasses.asdict(cfg))


def _memorise(steps: int = 250):
    """Train the head on 10 (random features, German sentence) pairs by teacher forcing."""
    torch.manual_seed(0)
    cfg = STConfig(d_model=64, heads=4, ffn_dim=128, encoder_layers=2, decoder_layers=2, conv_channels=64, dropout=0.0,
                   label_smoothing=0.0, max_len=60)
    pieces = PieceModel.train(GERMAN, "char", 1000)
    head = _head(16, len(pieces), cfg)
    feats = torch.randn(10, 40, 16)
    lengths = torch.tensor([40, 38, 36, 34, 32, 30, 28, 26, 24, 22])
    for b, n in enumerate(lengths.tolist()):
        feats[b, n:] = 0
    seqs = [pieces.encode(t) for t in GERMAN]
    prev = torch.nn.utils.rnn.pad_sequence([torch.tensor([BOS, *s]) for s in seqs], batch_first=True, padding_value=PAD)
    gold = torch.nn.utils.rnn.pad_sequence([torch.tensor([*s, EOS]) for s in seqs], batch_first=True, padding_value=PAD)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        memory, memory_len = head(feats, lengths)
        logits = head.decode(memory, memory_len, prev)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval(), pieces, feats, lengths, prev, gold


@pytest.fixture(scope="module")
def memorised():
    return _memorise()


def test_head_memorises_ten_pairs_and_greedy_agrees_with_teacher_forcing(memorised):
    head, pieces, feats, lengths, prev, gold = memorised
    memory, memory_len = head(feats, lengths)
    greedy_ids = greedy(head, memory, memory_len, max_len=60)
    assert translation_scores([pieces.decode(g) for g in greedy_ids], GERMAN)[0]["bleu"] > 90
    forced = head.decode(memory, memory_len, prev).argmax(-1)  # teacher forcing: each position sees the gold prefix
    exact = 0
    for b, seq in enumerate(greedy_ids):
        n = int((gold[b] != PAD).sum())
        wrong = (forced[b, :n] != gold[b, :n]).nonzero()
        k = int(wrong[0]) if len(wrong) else n
        # up to the first teacher-forced error the prefixes are the same, so greedy must emit exactly that
        assert seq[:k] == gold[b, :k].tolist()[: len(seq[:k])] and len(seq) >= min(k, n - 1)
        exact += seq == gold[b, : n - 1].tolist()
    assert exact >= 9


def test_beam_one_is_greedy_and_wider_beams_do_not_score_worse(memorised):
    head, pieces, feats, lengths, *_ = memorised
    memory, memory_len = head(feats + 0.3 * torch.randn_like(feats), lengths)  # perturbed: the model is less sure
    greedy_ids = greedy(head, memory, memory_len, max_len=60)
    assert beam_search(head, memory, memory_len, beam_size=1, max_len=60, length_penalty=0.0) == greedy_ids
    beam = beam_search(head, memory, memory_len, beam_size=4, max_len=60, length_penalty=0.0)

    @torch.no_grad()
    def logprob(b: int, seq: list[int]) -> float:
        prev = torch.tensor([[BOS, *seq]])
        logp = torch.log_softmax(head.decode(memory[b:b + 1], memory_len[b:b + 1], prev)[0], -1)
        return float(logp[torch.arange(len(seq) + 1), torch.tensor([*seq, EOS])].sum())

    for b in range(10):
        assert logprob(b, beam[b]) >= logprob(b, greedy_ids[b]) - 1e-4


def test_batched_beam_search_does_not_depend_on_the_batch(memorised):
    head, pieces, feats, lengths, *_ = memorised
    memory, memory_len = head(feats + 0.3 * torch.randn_like(feats), lengths)
    together = beam_search(head, memory, memory_len, beam_size=4, max_len=60)
    alone = [beam_search(head, memory[b:b + 1, :int(memory_len[b])], memory_len[b:b + 1], beam_size=4, max_len=60)[0]
             for b in range(len(together))]
    assert together == alone


def test_incremental_decoding_equals_full_prefix_decoding(memorised):
    head, pieces, feats, lengths, prev, _ = memorised
    memory, memory_len = head(feats, lengths)
    full = head.decode(memory, memory_len, prev[:, :12])
    cache = None
    with torch.no_grad():
        for t in range(12):
            step, cache = head.decode_step(memory, memory_len, prev[:, t], cache)
            assert torch.allclose(step, full[:, t], atol=1e-4), t


def test_encoder_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    head = _head(8, 20, STConfig(d_model=32, heads=2, ffn_dim=64, conv_channels=32, dropout=0.0)).eval()
    x = torch.randn(2, 30, 8)
    x[1, 17:] = 0
    memory, memory_len = head(x, torch.tensor([30, 17]))
    alone, alone_len = head(x[1:, :17], torch.tensor([17]))
    n = int(alone_len[0])
    assert int(memory_len[1]) == n == 5
    assert torch.allclose(memory[1, :n], alone[0, :n], atol=1e-5)


# ------------------------------------------------------------------ runner
def test_st_runs_end_to_end_through_the_runner(tmp_path: Path):
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 6), ("dev", 2), ("test", 2)):
        records = []
        for i in range(n):
            path = tmp_path / "audio" / f"{split}{i}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000)
            records.append(Record(id=f"{split}{i}", path=str(path), duration=0.75, text="x", translation=GERMAN[i]))
        splits[split] = write_manifest(tmp_path / "man" / f"{split}.tsv", records)
    overrides = ["task.corpus=manifest", f"task.root={tmp_path / 'man'}", "task.d_model=32", "task.heads=2",
                 "task.ffn_dim=64", "task.conv_channels=32", "task.encoder_layers=1", "task.decoder_layers=1",
                 "task.beam_size=2",
                 "task.max_len=20", f"cache.root={tmp_path / 'cache'}", "train.total_steps=6", "train.eval_every=3",
                 "train.save_every=3", "train.batch_size=4"]
    spec = RunSpec("st", "fbank")
    cfg = resolve_config(spec, {}, parse_overrides(overrides))
    results = Experiment.create(tmp_path / "exp", "st", spec, cfg).train()
    assert results["primary_metric"] == "bleu" and results["higher_is_better"]
    assert set(results["splits"]["test"]) >= {"bleu", "chrf"}
    assert results["metric_info"]["signatures"]["bleu"].startswith("nrefs:1|case:mixed")
    rows = (tmp_path / "exp/st/predictions-test.tsv").read_text().splitlines()
    assert rows[1].split("\t")[1] == GERMAN[0]
    ckpt = torch.load(tmp_path / "exp/st/checkpoints/best.pt", weights_only=False)
    assert PieceModel(ckpt["task"]["pieces"]).decode(PieceModel(ckpt["task"]["pieces"]).encode(GERMAN[3])) == GERMAN[3]
    assert json.loads((tmp_path / "exp/st/results.json").read_text())["task"] == "st"
