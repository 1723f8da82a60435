"""Speaker verification: VoxCeleb1's trial lists read as released, EER and minDCF, the task end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.config import parse_overrides
from corpora.manifest import ManifestError, read_manifest
from corpora.voxceleb1 import dev_trials, prepare_voxceleb1_verification, read_trials
from downstream.heads.speaker import SpeakerEmbeddingHead, additive_margin_loss
from downstream.heads.utterance import XVector
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.asv import equal_error_rate, min_dcf

from .conftest import shared_data

TRAIN = {"id10001": 200.0, "id10002": 300.0, "id10003": 450.0, "id10004": 650.0}
TEST = {"id10270": 250.0, "id10271": 380.0, "id10272": 560.0}


def write_tone(path: Path, pitch: float, n: int, rng: np.random.Generator, seconds: float = 1.0) -> None:
    """A tone "speaker": its pitch (with harmonics), slightly detuned per utterance, in noise."""
    t = np.arange(int(16000 * seconds)) / 16000
    f = pitch * (1 + 0.01 * n)
    wave = 0.2 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype("float32"), 16000)


def make_voxceleb1(root: Path, iden_split: bool = True) -> Path:
    """Four training speakers (6 utterances: 4 train, 1 dev, 1 test in iden_split.txt) and three test speakers
    (4 utterances each) in a veri_test.txt of 6 target and 6 non-target trials, as VoxCeleb1 ships it (.wav)."""
    rng = np.random.default_rng(0)
    lines = []
    for speaker, pitch in TRAIN.items():
        for n in range(6):
            relative = f"{speaker}/sess{n % 2}/{n:05d}.wav"
            write_tone(root / "wav" / relative, pitch, n, rng)
            lines.append(f"{1 if n < 4 else 2 if n == 4 else 3} {relative}")
    if iden_split:
        (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    for speaker, pitch in TEST.items():
        for n in range(4):
            write_tone(root / "wav" / f"{speaker}/v/{n:05d}.wav", pitch, n, rng)
    spk = list(TEST)
    trials = [f"1 {s}/v/00000.wav {s}/v/{n:05d}.wav" for s in spk for n in (1, 2)]
    trials += [f"0 {a}/v/00000.wav {b}/v/0000{n}.wav" for a in spk for b in spk if a != b for n in (3,)]
    (root / "veri_test.txt").write_text("\n".join(trials) + "\n")
    return root


def test_eer_and_min_dcf_against_a_hand_computed_case():
    # targets 0.9 0.8 0.7 0.2, non-targets 0.6 0.3 0.1 0.05: any threshold between 0.3 and 0.6 misses one
    # target of 4 (0.2) and accepts one non-target of 4 (0.6): EER = 25 %.
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert equal_error_rate(labels, scores) == pytest.approx(0.25)
    # p = 0.01: cost / 0.01 = P_miss + 99 P_fa; rejecting only below 0.7 (P_miss 1/4, P_fa 0) is the cheapest.
    assert min_dcf(labels, scores, 0.01) == pytest.approx(0.25)
    # p = 0.5: P_miss + P_fa; 1/4 + 0 again, while accepting everything would cost 1.
    assert min_dcf(labels, scores, 0.5) == pytest.approx(0.25)
    # separable scores: EER 0 and minDCF 0; reversed ones: EER 100 %, minDCF 1 (reject everything).
    assert equal_error_rate(labels, np.arange(8.0)[::-1]) == pytest.approx(0.0)
    assert min_dcf(labels, np.arange(8.0)[::-1], 0.01) == pytest.approx(0.0)
    assert equal_error_rate(labels, np.arange(8.0)) == pytest.approx(1.0)
    assert min_dcf(labels, np.arange(8.0), 0.05) == pytest.approx(1.0)


def test_the_trial_list_and_training_speakers_are_read_as_released(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    paths, trials = prepare_voxceleb1_verification(root, tmp_path / "manifests")
    splits = {split: read_manifest(path) for split, path in paths.items()}
    assert {split: len(records) for split, records in splits.items()} == {"train": 16, "dev": 8, "test": 12}
    assert {r.speaker for r in splits["train"]} == set(TRAIN)  # no trial speaker is trained on
    assert {r.speaker for r in splits["test"]} == set(TEST)
    assert len(trials) == 12 and sum(t.target for t in trials) == 6
    assert trials[0].enrol == "id10270/v/00000" and trials[0].target
    dev = dev_trials(splits["dev"])  # 2 dev utterances per training speaker: 4 target pairs, 4 non-target
    assert sum(t.target for t in dev) == 4 and len(dev) == 8
    assert all((t.enrol.split("/")[0] == t.test.split("/")[0]) == t.target for t in dev)
    # without iden_split.txt: every speaker outside the trials trains, a seeded share of each is dev
    bare = make_voxceleb1(tmp_path / "bare", iden_split=False)
    paths, _ = prepare_voxceleb1_verification(bare, tmp_path / "m2", dev_fraction=0.34)
    counts = {split: len(read_manifest(path)) for split, path in paths.items()}
    assert counts == {"train": 16, "dev": 8, "test": 12}


def test_flac_audio_is_found_for_a_wav_trial_list(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    for wav in (root / "wav" / "id10270").rglob("*.wav"):
        data, rate = sf.read(wav)
        sf.write(wav.with_suffix(".flac"), data, rate)
        wav.unlink()
    trials, files = read_trials(root / "veri_test.txt", root / "wav")
    assert files["id10270/v/00000"].suffix == ".flac" and len(trials) == 12


def test_a_trial_naming_a_missing_file_or_a_bad_line_is_an_error_naming_the_line(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    lines = (root / "veri_test.txt").read_text().splitlines()
    (root / "veri_test.txt").write_text("\n".join([*lines[:3], "1 id10270/v/00000.wav id10270/v/00099.wav",
                                                   *lines[3:]]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"veri_test.txt:4: id10270/v/00099.wav not found"):
        prepare_voxceleb1_verification(root, tmp_path / "m1")
    (root / "veri_test.txt").write_text("\n".join([*lines[:5], "yes id10270/v/00000.wav id10270/v/00001.wav"]))
    with pytest.raises(ManifestError, match=r"veri_test.txt:6: expected '<1\|0> <enrol utterance>"):
        prepare_voxceleb1_verification(root, tmp_path / "m2")
    (root / "veri_test.txt").write_text("\n".join(line for line in lines if line.startswith("1")))
    with pytest.raises(ManifestError, match="needs target .* and non-target"):
        prepare_voxceleb1_verification(root, tmp_path / "m3")


def test_the_margin_softmax_head_embeds_in_evaluation_and_scores_speakers_in_training():
    torch.manual_seed(0)
    head = SpeakerEmbeddingHead(XVector(20, 16), embed_dim=16, num_speakers=5)
    x, x_len = torch.randn(3, 40, 20), torch.tensor([40, 30, 25])
    cosines, _ = head.train()(x, x_len)
    assert cosines.shape == (3, 5) and cosines.abs().max() <= 1.0 + 1e-6
    embeddings, y_len = head.eval()(x, x_len)
    assert embeddings.shape == (3, 512) and torch.allclose(embeddings.norm(dim=-1), torch.ones(3))  # the x-vector
    assert y_len.tolist() == [1, 1, 1]
    # the margin only lowers the target's logit: a larger margin never lowers the loss
    targets = torch.tensor([0, 1, 2])
    losses = [additive_margin_loss(cosines, targets, m, 30.0).item() for m in (0.0, 0.2, 0.4)]
    assert losses[0] < losses[1] < losses[2]


def test_asv_trains_end_to_end_on_tone_speakers(tmp_path: Path):
    root = make_voxceleb1(tmp_path / "vox")
    spec = RunSpec("asv", "fbank_global")
    cfg = resolve_config(spec, {}, parse_overrides([
        f"task.root={root}", "train.total_steps=60", "train.eval_every=30", "train.save_every=30", "train.lr=3e-3",
        "train.batch_size=8", "task.head_options={channels: [64, 64, 64, 64, 128]}",
        "task.embed_dim=64", f"cache.root={tmp_path / 'cache'}"]))
    assert cfg.task.corpus == "voxceleb1"  # recognised by its layout
    results = Experiment.create(tmp_path / "exp", "asv", spec, cfg).train()
    assert results["task"] == "asv" and results["head"] == "xvector" and results["higher_is_better"] is False
    test = results["splits"]["test"]
    assert test["trials"] == 12 and 0.0 <= test["eer"] <= 100.0
    assert test["eer"] < 50.0  # unseen pitches: their embeddings still tell them apart better than chance
    rows = (tmp_path / "exp" / "asv" / "predictions-test.tsv").read_text().splitlines()
    assert rows[0] == "target\tenrol\ttest\tscore" and len(rows) == 13


def test_speechocean762_has_a_verification_list_of_other_speakers(tmp_path: Path):
    root = shared_data("speechocean762_spk")
    paths, trials = prepare_voxceleb1_verification(root, tmp_path / "manifests")
    splits = {split: read_manifest(path) for split, path in paths.items()}
    assert len(trials) == 2700 and sum(t.target for t in trials) == 1350
    assert {split: len({r.speaker for r in records}) for split, records in splits.items()} == {
        "train": 80, "dev": 80, "test": 30}
    assert not {r.speaker for r in splits["test"]} & {r.speaker for r in splits["train"]}
