"""Phone alignments and the phonetic quality of pre-training targets (phone purity, cluster purity, PNMI)."""
import json
import math
from pathlib import Path

import pytest
from torchaudio.functional import TokenSpan

from core.config import merge
from corpora.alignments import SILENCE, phones_at, read_alignments, write_alignments
from corpora.manifest import ManifestError
from downstream.alignment import segments
from upstream.pretrain import PretrainConfig, Pretrainer
from upstream.pretrain.target_quality import heldout_phone_purity, main, purity_and_pnmi

HUBERT = dict(preset="base", conv_layers=[[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2, embed_dim=64,
              num_layers=2, num_heads=4, ffn_dim=128, pos_conv_kernel=16, pos_conv_groups=4, final_dim=16,
              num_classes=8)
BESTRQ = dict(preset="tiny", embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64, conv_kernel=5, codebook_size=64)
WAV2VEC2 = {**{k: v for k, v in HUBERT.items() if k != "num_classes"}, "preset": "tiny", "codebook_entries": 8,
            "codevector_dim": 16, "num_negatives": 5}
LOOP = {"total_steps": 2, "eval_every": 2, "save_every": 2, "log_every": 1, "batch_size": 8, "batch_seconds": 8.0,
        "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.5}


def test_purity_and_pnmi_by_hand():
    perfect = purity_and_pnmi(["a", "a", "b", "c"], [7, 7, 3, 5])
    assert perfect["phone_purity"] == perfect["cluster_purity"] == 1.0 and perfect["pnmi"] == pytest.approx(1.0)
    independent = purity_and_pnmi(["a", "b", "a", "b"], [1, 1, 2, 2])
    assert independent["pnmi"] == pytest.approx(0.0, abs=1e-12) and independent["phone_purity"] == 0.5
    # One id for everything: phone purity is the majority phone's share, cluster purity 1, PNMI 0.
    merged = purity_and_pnmi(["a", "a", "a", "b"], [0, 0, 0, 0])
    assert (merged["phone_purity"], merged["cluster_purity"], merged["pnmi"]) == (0.75, 1.0, 0.0)
    # Ids that split a phone: phone purity 1, cluster purity 1/2; H(y) = ln 2, I = ln 2 -> PNMI 1.
    split = purity_and_pnmi(["a", "a", "b", "b"], [0, 1, 2, 3])
    assert split["phone_purity"] == 1.0 and split["cluster_purity"] == 0.5 and math.isclose(split["pnmi"], 1.0)
    with pytest.raises(ValueError, match="as many"):
        purity_and_pnmi(["a"], [1, 2])


def test_heldout_phone_purity_does_not_reward_many_ids():
    # Every frame its own id: plug-in purity 1, but nothing carries over to unseen utterances.
    pairs = [(["a", "b", "a"], [3 * u, 3 * u + 1, 3 * u + 2]) for u in range(6)]
    assert purity_and_pnmi([y for p, _ in pairs for y in p], [z for _, i in pairs for z in i])["phone_purity"] == 1.0
    assert heldout_phone_purity(pairs) == pytest.approx(2 / 3)  # the majority phone "a" for unseen ids
    shared = [(["a", "b"], [0, 1])] * 4
    assert heldout_phone_purity(shared) == 1.0


def test_alignment_file_round_trip_and_errors(tmp_path: Path):
    alignments = {"u2": [(0.0, 0.1, SILENCE), (0.1, 0.25, "AH")], "u1": [(0.0, 0.5, "K")]}
    path = write_alignments(tmp_path / "a.tsv", alignments)
    assert read_alignments(path) == alignments
    assert phones_at(alignments["u2"], [0.0, 0.099, 0.1, 0.249, 0.25, -1.0]) == [SILENCE, SILENCE, "AH", "AH", None,
                                                                                    None]
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tstart\tend\tphone\nu1\t0.0\t0.5\tK\nu1\t0.4\t0.6\tAE\n")
    with pytest.raises(ManifestError, match=r"bad.tsv:3: .*overlaps"):
        read_alignments(bad)
    bad.write_text("id\tstart\tend\tphone\nu1\tzero\t0.5\tK\n")
    with pytest.raises(ManifestError, match=r"bad.tsv:2: start and end must be numbers"):
        read_alignments(bad)


def test_ctc_spans_become_phone_segments():
    phones = ["<blank>", "K", "AE", "T"]
    times = [i * 0.01 for i in range(11)]  # 10 frames
    spans = [TokenSpan(token=1, start=2, end=3, score=1.0), TokenSpan(token=2, start=5, end=7, score=1.0),
             TokenSpan(token=3, start=7, end=8, score=1.0)]
    assert segments(spans, times, phones) == [(0.0, 0.02, SILENCE), (0.02, 0.05, "K"), (0.05, 0.07, "AE"),
                                              (0.07, 0.08, "T"), (0.08, 0.1, SILENCE)]


def _alignments_for(sc_root: Path, path: Path) -> Path:
    """Made-up segments keyed by file stem (``<speaker>_nohash_<take>``, shared by the word folders):
    silence, a 'phone' per take, silence."""
    clips = sorted(p for p in sc_root.rglob("*.wav") if not p.parent.name.startswith("_"))
    return write_alignments(path, {p.stem: [(0.0, 0.2, SILENCE), (0.2, 0.6, "T" + p.stem.rsplit("_", 1)[1]),
                                            (0.6, 5.0, SILENCE)] for p in clips})


@pytest.mark.parametrize("upstream", ["hubert", "bestrq", "wav2vec2"])
def test_a_runs_targets_against_alignments(upstream: str, sc_root: Path, tmp_path: Path, capsys):
    sections = {"upstream": HUBERT, "targets": {"sample_fraction": 0.5, "n_init": 1}} if upstream == "hubert" \
        else {"upstream": BESTRQ if upstream == "bestrq" else WAV2VEC2}
    cfg = merge(PretrainConfig(), {**sections, "train": LOOP})
    Pretrainer(tmp_path / "run", upstream, cfg, [sc_root]).run()
    alignments = _alignments_for(sc_root, tmp_path / "align.tsv")
    assert main([str(tmp_path / "run"), "--alignments", str(alignments)]) == 0
    quality = json.loads((tmp_path / "run/target_quality.json").read_text())
    assert json.loads((tmp_path / "run/summary.json").read_text())["target_quality"] == quality
    assert quality["utterances"] == 36 and quality["frames"] > 100 and quality["phones"] == 5  # 4 takes + SIL
    assert 0 < quality["pnmi"] <= 1 and 0 < quality["phone_purity"] <= 1 and 0 < quality["cluster_purity"] <= 1
    assert 0 < quality["heldout_phone_purity"] <= 1
    assert quality["targets"].startswith("k-means" if upstream == "hubert" else "the model's")
    assert main([str(tmp_path / "run"), "--alignments", str(tmp_path / "missing.tsv")]) == 2
    assert "alignment file not found" in capsys.readouterr().err
