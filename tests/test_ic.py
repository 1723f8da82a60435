"""Intent classification: Fluent Speech Commands' CSVs read as released, slot scoring, the task end to end."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.config import parse_overrides
from corpora.fluent_commands import decode_slots, encode_slots, prepare_fluent_commands
from corpora.layouts import detect_layout
from corpora.manifest import ManifestError, Record, read_manifest
from downstream.runner import Experiment, RunSpec, resolve_config
from downstream.tasks.ic import ICConfig, IntentClassification

from .conftest import shared_data

HEADER = ",path,speakerId,transcription,action,object,location"
PITCH = {"action": {"activate": 300.0, "deactivate": 500.0},
         "object": {"lights": 1500.0, "music": 2500.0, "heat": 3500.0},
         "location": {"none": 5000.0, "kitchen": 6500.0}}
"""Each slot value is a tone in its own band; an utterance sounds its three values at once."""
SPEAKERS = {"train": ("spkA", "spkB", "spkC"), "valid": ("spkD",), "test": ("spkE",)}


def make_fsc(root: Path, seconds: float = 0.5) -> Path:
    """An FSC tree in its exact format: ``data/{train,valid,test}_data.csv`` (pandas' index column first,
    a quoted transcription with a comma) and ``wavs/speakers/<speaker>/<n>.wav``; every combination of
    the slot values once per speaker (12 per speaker: 36 train, 12 dev, 12 test)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    for split, speakers in SPEAKERS.items():
        rows = [HEADER]
        for speaker in speakers:
            for n, values in enumerate(itertools.product(*(PITCH[s] for s in PITCH))):
                wave = sum(0.2 * np.sin(2 * np.pi * PITCH[s][v] * (1 + 0.01 * rng.standard_normal()) * t)
                           for s, v in zip(PITCH, values, strict=True)) + 0.01 * rng.standard_normal(t.size)
                relative = f"wavs/speakers/{speaker}/{n:03d}.wav"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / relative, wave.astype("float32"), 16000)
                text = f'"{values[0].capitalize()} the {values[1]}, {values[2]}"'
                rows.append(f"{len(rows) - 1},{relative},{speaker},{text},{','.join(values)}")
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{split}_data.csv").write_text("\n".join(rows) + "\n")
    return root


def test_fsc_csvs_are_read_as_released_with_the_slots_of_the_header_or_named(tmp_path: Path):
    root = make_fsc(tmp_path / "fsc")
    assert detect_layout(root).corpus == "fluent_commands"
    (root / "wavs" / "speakers" / "spkA" / "000.wav").write_bytes(b"RIFF not audio")  # unreadable: skipped
    paths = prepare_fluent_commands(root, tmp_path / "m")
    splits = {s: read_manifest(p) for s, p in paths.items()}
    assert {s: len(r) for s, r in splits.items()} == {"train": 35, "dev": 12, "test": 12}  # valid -> dev
    first = splits["train"][0]
    assert (first.id, first.speaker, first.text) == ("wavs/speakers/spkA/001", "spkA", "Activate the lights, kitchen")
    assert first.label == "action=activate|object=lights|location=kitchen"
    assert decode_slots(first.label) == {"action": "activate", "object": "lights", "location": "kitchen"}
    assert first.path == str(root.resolve() / "wavs/speakers/spkA/001.wav") and first.duration == 0.5
    skipped = (tmp_path / "m" / "skipped-fluent_commands.tsv").read_text()
    assert "train_data.csv:2 " in skipped and "000.wav" in skipped
    assert read_manifest(prepare_fluent_commands(root, tmp_path / "m")["train"]) == splits["train"]  # idempotent
    named = read_manifest(prepare_fluent_commands(root, tmp_path / "named", slots=["location", "action"])["test"])
    assert named[1].label == "location=kitchen|action=activate"


def test_bad_csvs_are_errors_naming_the_file_and_line(tmp_path: Path):
    root = make_fsc(tmp_path / "fsc")
    train = (root / "data" / "train_data.csv").read_text().splitlines()

    def fails(error, pattern: str, lines: list[str], slots=None):
        (root / "data" / "train_data.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(error, match=pattern):
            prepare_fluent_commands(root, tmp_path / "m", slots)
        (root / "data" / "train_data.csv").write_text("\n".join(train) + "\n")

    fails(FileNotFoundError, r"train_data.csv:3: wavs/speakers/spkA/gone.wav not found under",
          [*train[:2], "1,wavs/speakers/spkA/gone.wav,spkA,Gone,activate,lights,none", *train[3:]])
    fails(ManifestError, r"train_data.csv:4: expected 7 fields \(,path,speakerId,transcription,action,object,"
                         r"location\), found 6", [*train[:3], "2,wavs/speakers/spkA/002.wav,spkA,x,activate,lights"])
    fails(ManifestError, r"train_data.csv:5: empty value of slot object",
          [*train[:4], "3,wavs/speakers/spkA/003.wav,spkA,x,activate,,none"])
    fails(ManifestError, r"train_data.csv:3: wavs/speakers/spkA/000.wav \(id wavs/speakers/spkA/000\) is listed "
                         r"already, at .*train_data.csv:2", [*train[:2], train[1]])
    fails(ManifestError, r"train_data.csv:1: slot column 'intent' \(task.slots\) not in the header; its slot "
                         r"columns: action, object, location", train, slots=["action", "intent"])
    fails(ManifestError, r"train_data.csv:1: header .* lacks transcription",
          [HEADER.replace("transcription", "text"), *train[1:]])
    fails(ManifestError, r"valid_data.csv:1: slot columns action,object,location differ from train_data.csv's "
                         "action,object$", [HEADER.replace(",location", ""),
                                                    *(line.rsplit(",", 1)[0] for line in train[1:])])
    (root / "data" / "valid_data.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid_data.csv not found"):
        prepare_fluent_commands(root, tmp_path / "m")


def _task(tmp_path: Path, **settings) -> IntentClassification:
    return IntentClassification(ICConfig(corpus="manifest", root=str(tmp_path), **settings), tmp_path / "work")


def _records(*labels: str) -> list[Record]:
    return [Record(id=f"u{i}", path="x.wav", duration=1.0, label=label) for i, label in enumerate(labels)]


def test_an_utterance_is_right_only_with_every_slot_right(tmp_path: Path):
    task = _task(tmp_path)
    train = _records("action=activate|object=lights", "action=deactivate|object=music", "action=activate|object=music")
    test = _records("action=activate|object=lights", "action=deactivate|object=music",
                    "action=activate|object=music", "action=deactivate|object=lights")
    task.use_slots({"train": train, "dev": train, "test": test})
    assert task.slots == ["action", "object"] and task.sizes == [2, 2]
    predictions = [("activate", "lights"), ("deactivate", "lights"), ("activate", "music"), ("activate", "lights")]
    # u1 has one wrong slot (object), u3 one (action): wrong utterances, but right for the other slot
    assert task.score(predictions, test) == {"accuracy": 0.5, "slot_accuracy": 0.75, "accuracy_action": 0.75,
                                             "accuracy_object": 0.75}
    task.write_predictions(tmp_path / "p.tsv", predictions, test)
    rows = (tmp_path / "p.tsv").read_text().splitlines()
    assert rows[0] == "id\treference\thypothesis\twrong_slots"
    assert rows[2] == "u1\taction=deactivate|object=music\taction=deactivate|object=lights\tobject"
    assert rows[1].endswith("\t")  # nothing wrong


def test_head_scores_are_cut_per_slot_and_the_losses_summed(tmp_path: Path):
    task = _task(tmp_path)
    records = _records("a=x|b=p", "a=y|b=q", "a=z|b=p")
    task.use_slots({"train": records, "dev": records, "test": records})
    assert task.sizes == [3, 2] and task.build_head(5)(torch.zeros(1, 4, 5), torch.tensor([4]))[0].shape == (1, 5)
    logits = torch.tensor([[0.0, 5, 0, 5, 0], [0, 0, 5, 0, 5], [5, 0, 0, 0, 5]])  # a: y z x, b: p q q
    assert task.predict((logits, torch.ones(3))) == [("y", "p"), ("z", "q"), ("x", "q")]
    expected = (torch.nn.functional.cross_entropy(logits[:, :3], torch.tensor([0, 1, 2]))
                + torch.nn.functional.cross_entropy(logits[:, 3:], torch.tensor([0, 1, 0])))
    assert torch.allclose(task.loss((logits, torch.ones(3)), records), expected)


def test_slot_sets_are_closed_and_kept_in_the_checkpoint(tmp_path: Path):
    task = _task(tmp_path)
    train = _records("action=activate|object=lights", "action=deactivate|object=music")
    with pytest.raises(ValueError, match=r"split 'test' has 1 slot value\(s\) never seen in training: "
                                         r"object='heat' \(utterance u1\)"):
        task.use_slots({"train": train, "dev": train, "test": _records("action=activate|object=lights",
                                                                       "action=activate|object=heat")})
    with pytest.raises(ValueError, match=r"split 'dev' utterance u0 has the slots action; the training split's are "
                                         "action, object"):
        _task(tmp_path).use_slots({"train": train, "dev": _records("action=activate"), "test": train})
    with pytest.raises(ValueError, match=r"split 'train' utterance u0: label 'lights' is not slot=value"):
        _task(tmp_path).use_slots({"train": _records("lights"), "dev": train, "test": train})
    trained = _task(tmp_path)
    trained.use_slots({"train": train, "dev": train, "test": train})
    restored = _task(tmp_path)
    restored.load_state(trained.state())
    restored.use_slots({"train": train[:1], "dev": train, "test": train})  # the checkpoint's values, not train[:1]'s
    assert restored.values == {"action": ["activate", "deactivate"], "object": ["lights", "music"]}
    named = _task(tmp_path, slots=["object"])
    named.use_slots({"train": train, "dev": train, "test": train})
    assert named.slots == ["object"] and named.dataset() == f"manifest:{tmp_path.name}/slots-object"
    assert encode_slots({"object": "lights"}) == "object=lights"
    assert _task(tmp_path, select_metric="slot_accuracy").selection_metric == "slot_accuracy"
    with pytest.raises(ValueError, match=r"task.select_metric 'wer' unknown for ic; choose from accuracy, slot_acc"):
        _task(tmp_path, select_metric="wer")


def test_ic_trains_end_to_end_on_tone_slots(tmp_path: Path):
    root = make_fsc(tmp_path / "fsc")
    spec = RunSpec("ic", "fbank_global")
    cfg = resolve_config(spec, {}, parse_overrides([
        f"task.root={root}", "train.total_steps=60", "train.eval_every=30", "train.save_every=30", "train.lr=1e-2",
        "train.batch_size=8", f"cache.root={tmp_path / 'cache'}"]))
    assert cfg.task.corpus == "fluent_commands"  # recognised by its layout
    results = Experiment.create(tmp_path / "exp", "ic", spec, cfg).train()
    test = results["splits"]["test"]
    assert results["task"] == "ic" and results["head"] == "proj_mean_linear" and test["utterances"] == 12
    assert test["accuracy"] >= 0.5  # chance: 1/12 (2 x 3 x 2 value combinations)
    assert min(test[f"accuracy_{slot}"] for slot in PITCH) >= test["accuracy"]
    ckpt = torch.load(tmp_path / "exp" / "ic" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["task"] == {"slots": list(PITCH), "values": {s: sorted(v) for s, v in PITCH.items()}}
    rows = (tmp_path / "exp" / "ic" / "predictions-test.tsv").read_text().splitlines()
    assert rows[0] == "id\treference\thypothesis\twrong_slots" and len(rows) == 13


def test_the_shared_coffee_orders_have_six_slots(tmp_path: Path):
    root = shared_data("coffee_orders")
    task = IntentClassification(ICConfig(root=str(root)), tmp_path)
    assert task.cfg.corpus == "fluent_commands"
    splits = task.prepare()
    assert {s: len(r) for s, r in splits.items()} == {"train": 433, "dev": 62, "test": 124}
    assert task.slots == ["drink", "size", "roast", "shots", "milk", "sugar"]
    assert task.sizes == [10, 8, 4, 4, 7, 4]
    assert splits["train"][0].label == ("drink=coffee|size=twelve ounce|roast=light roast|shots=none|milk=none|"
                                        "sugar=none")
