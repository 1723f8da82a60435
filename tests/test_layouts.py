"""Corpora recognised by layout (corpora/layouts.py), ``task.corpus: auto`` and the tasks' protocol defaults."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core.config import ConfigError, load_yaml, parse_overrides, to_dict
from corpora.layouts import describe_folder, detect_layout
from downstream.cli import main
from downstream.runner import RunSpec, resolve_config
from downstream.tasks import TASKS

from .conftest import shared_data

REPO = Path(__file__).resolve().parents[1]


def _touch(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not name.endswith("/"):
            path.write_text("x")
    return root


def _librispeech(root: Path) -> Path:
    return _touch(root, "LibriSpeech/dev-clean/1/2/1-2.trans.txt", "LibriSpeech/dev-clean/1/2/1-2-0.flac",
                  "librispeech_finetuning/1h/0/clean/3/4/3-4.trans.txt")


def _speech_commands(root: Path) -> Path:
    return _touch(root, "yes/a_nohash_0.wav", "no/b_nohash_0.wav", "validation_list.txt", "testing_list.txt")


def _csv_lists(root: Path) -> Path:
    _touch(root, "audio/a.wav")
    for name in ("train.csv", "dev.csv", "test.csv"):
        (root / name).write_text("path,label,speaker\naudio/a.wav,anger,s1\n")
    return root


LAYOUTS = {
    "librispeech": (_librispeech, ("LibriSpeech/dev-clean", "librispeech_finetuning/1h")),
    "speech_commands": (_speech_commands, ("validation_list.txt", "testing_list.txt", "2 word folders")),
    "covost2": (lambda r: _touch(r, "covost_v2.en_de.train.tsv", "covost_v2.en_de.dev.tsv", "clips/a.mp3"),
                ("covost_v2.en_de.dev.tsv", "covost_v2.en_de.train.tsv", "clips/")),
    "voxceleb1": (lambda r: _touch(r, "wav/id1/s1/00001.wav", "wav/id2/s1/00001.flac", "iden_split.txt"),
                  ("iden_split.txt", "wav/ with 2 speaker folders")),
    "fluent_commands": (lambda r: _touch(r, "data/train_data.csv", "data/test_data.csv", "wavs/train/a.wav"),
                        ("data/train_data.csv", "data/test_data.csv", "wavs/")),
    "iemocap": (lambda r: _touch(r, "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt",
                                 "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"),
                ("1 Session folder with dialog/EmoEvaluation/",)),
    "csv": (_csv_lists, ("train.csv", "dev.csv", "test.csv")),
    "manifest": (lambda r: _touch(r, "train.tsv", "dev.tsv", "test.tsv"), ("train.tsv", "dev.tsv", "test.tsv")),
    "hf": (lambda r: _touch(r, "dataset_dict.json", "train/state.json"), ("dataset_dict.json",)),
}


@pytest.mark.parametrize("corpus", sorted(LAYOUTS))
def test_each_layout_is_recognised_and_a_demo_stamp_marks_the_demo(tmp_path: Path, corpus: str):
    make, found = LAYOUTS[corpus]
    layout = detect_layout(make(tmp_path / "c"))
    assert (layout.corpus, layout.found, layout.demo) == (corpus, found, False)
    (tmp_path / "c" / "BUILT.json").write_text("{}")
    demo = detect_layout(tmp_path / "c")
    assert demo.corpus == corpus and demo.demo and demo.describe().startswith("a demo corpus built by this toolkit")


def test_variants_of_the_librispeech_layout(tmp_path: Path):
    _touch(tmp_path / "ls", "dev-clean/1/2/1-2.trans.txt", "test-other/5/6/5-6.trans.txt")
    assert detect_layout(tmp_path / "ls").found == ("dev-clean", "test-other")  # task.root = .../LibriSpeech
    _touch(tmp_path / "ft", "1h/0/clean/1/2/1-2.trans.txt")
    assert detect_layout(tmp_path / "ft").found == ("1h/0",)  # task.root = .../librispeech_finetuning
    _touch(tmp_path / "untranscribed", "LibriSpeech/test-other/1/2/1-2-0.flac")
    assert detect_layout(tmp_path / "untranscribed") is None  # audio without *.trans.txt is not a corpus


def test_nothing_recognisable_is_described(tmp_path: Path):
    assert detect_layout(tmp_path / "absent") is None and describe_folder(tmp_path / "absent") == "does not exist"
    (tmp_path / "empty").mkdir()
    assert detect_layout(tmp_path / "empty") is None and describe_folder(tmp_path / "empty") == "is empty"
    _touch(tmp_path / "misc", "notes.txt", "a/b.txt", "validation_list.txt")  # a list, but no word folder of audio
    assert detect_layout(tmp_path / "misc") is None
    (tmp_path / "misc" / "data.csv").write_text("file,emotion\n")  # a CSV, but not path,label
    assert detect_layout(tmp_path / "misc") is None
    _speech_commands(tmp_path / "parent" / "sc")
    _touch(tmp_path / "parent", "README.md")
    text = describe_folder(tmp_path / "parent")
    assert text == "holds README.md, sc/, in no corpus layout known here (sub-folders in one: sc/ (Speech Commands))"


@pytest.mark.parametrize("name, corpus", [
    ("speech_commands_fsdd", "speech_commands"), ("librispeech_mini", "librispeech"),
    ("ljspeech_reread", "librispeech"), ("speechocean762_spk", "voxceleb1"), ("coffee_orders", "fluent_commands")])
def test_the_shared_corpora_are_recognised(name: str, corpus: str):
    layout = detect_layout(shared_data(name))
    assert layout.corpus == corpus and not layout.demo, layout


# ------------------------------------------------------------------ task.corpus: auto
def _resolve(task: str, *overrides: str):
    return resolve_config(RunSpec(task, "fbank"), {}, parse_overrides(list(overrides)))


def test_auto_reads_the_layout_that_fits_the_task_and_logs_it(tmp_path: Path, caplog):
    _librispeech(tmp_path / "ls")
    _speech_commands(tmp_path / "sc")
    with caplog.at_level(logging.INFO, logger="downstream.tasks"):
        assert _resolve("pr", f"task.root={tmp_path / 'ls'}").task.corpus == "librispeech"
    assert f"task.root {tmp_path / 'ls'}: reading it as task.corpus=librispeech" in caplog.text
    assert _resolve("asr", f"task.root={tmp_path / 'ls'}").task.corpus == "librispeech"
    assert _resolve("ks", f"task.root={tmp_path / 'sc'}").task.corpus == "speech_commands"
    _touch(tmp_path / "man", "train.tsv", "dev.tsv", "test.tsv")
    assert _resolve("st", f"task.root={tmp_path / 'man'}").task.corpus == "manifest"


def test_a_layout_the_task_does_not_read_names_what_was_found_and_what_to_set(tmp_path: Path):
    _speech_commands(tmp_path / "sc")
    with pytest.raises(ConfigError) as err:
        _resolve("pr", f"task.root={tmp_path / 'sc'}")
    text = str(err.value)
    assert f"task.root {tmp_path / 'sc'} holds a Speech Commands layout (validation_list.txt, testing_list.txt, " \
           "2 word folders), read by task ks with task.corpus=speech_commands" in text
    assert "task pr reads task.corpus=demo | librispeech | manifest | hf" in text and "set -o task.corpus=" in text
    _touch(tmp_path / "vox", "wav/id1/s1/1.wav", "veri_test.txt")
    with pytest.raises(ConfigError, match=r"VoxCeleb1 layout \(veri_test.txt, wav/ with 1 speaker folder\), read by "
                                          "task asv, sid with task.corpus=voxceleb1"):
        _resolve("ks", f"task.root={tmp_path / 'vox'}")
    _touch(tmp_path / "fsc", "data/train_data.csv", "wavs/x.wav")
    with pytest.raises(ConfigError, match=r"Fluent Speech Commands layout \(data/train_data.csv, wavs/\), read by "
                                          "task ic with task.corpus=fluent_commands"):
        _resolve("ks", f"task.root={tmp_path / 'fsc'}")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(ConfigError, match=r"Fluent Speech Commands layout "
                                                              r"\(data/train_data.csv, wavs/\), which no task of "
                                                              "this toolkit reads yet"):
        patch.setattr(TASKS["ic"], "corpora", ("manifest", "hf"))  # a layout no task reads
        _resolve("ks", f"task.root={tmp_path / 'fsc'}")
    _touch(tmp_path / "misc", "notes.txt")
    with pytest.raises(ConfigError, match=r"holds notes.txt, in no corpus layout known here; task ks reads"):
        _resolve("ks", f"task.root={tmp_path / 'misc'}")


def test_the_demo_corpus_goes_only_into_an_empty_folder_the_default_root_or_a_demo_of_the_task(
        tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _resolve("ks").task.corpus == "demo"  # the default root, absent: built there
    (tmp_path / "empty").mkdir()
    assert _resolve("pr", "task.root=empty").task.corpus == "demo"
    with pytest.raises(ConfigError, match=r"task.root typo does not exist \(task.corpus=demo builds the demo corpus "
                                          r"there\); task pr reads"):
        _resolve("pr", "task.root=typo")
    _touch(_speech_commands(tmp_path / "kw"), "BUILT.json")
    assert _resolve("ks", "task.root=kw").task.corpus == "demo"
    with pytest.raises(ConfigError, match="a demo corpus built by this toolkit .* not the demo corpus of task pr"):
        _resolve("pr", "task.root=kw")
    _librispeech(tmp_path / "ls")
    with pytest.raises(ConfigError, match=r"task.corpus=demo builds the demo corpus into task.root, but ls holds a "
                                          r"LibriSpeech / Libri-light layout \(.*\); read it with -o "
                                          r"task.corpus=librispeech \(or leave task.corpus at auto\)$"):
        _resolve("pr", "task.corpus=demo", "task.root=ls")


def test_an_explicit_corpus_is_obeyed(tmp_path: Path):
    _speech_commands(tmp_path / "sc")
    cfg = _resolve("pr", "task.corpus=librispeech", f"task.root={tmp_path / 'sc'}")  # the reader will say what is wrong
    assert cfg.task.corpus == "librispeech"
    with pytest.raises(ConfigError, match="task.corpus 'speech_commands' unknown for pr; choose from auto, demo"):
        _resolve("pr", "task.corpus=speech_commands")


def test_the_command_line_shows_the_layout_error(tmp_path: Path, capsys):
    _speech_commands(tmp_path / "sc")
    code = main(["-m", "train", "-u", "fbank", "-d", "pr", "-n", "x", "-p", str(tmp_path / "exp"),
                 "-o", f"task.root={tmp_path / 'sc'}"])
    assert code == 2 and "holds a Speech Commands layout" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------------ defaults = the protocol
def test_pr_without_a_config_trains_what_its_recipe_trains(monkeypatch):
    """``-d pr -o task.root=<librispeech_mini>`` with no ``-c``: the recipe's settings but its 5 folds."""
    shared_data("librispeech_mini")
    monkeypatch.chdir(REPO)
    spec = RunSpec("pr", "fbank")
    recipe = load_yaml(REPO / "recipes/pr/librispeech_mini.yaml")
    bare = resolve_config(spec, {}, {"task": {"root": recipe["task"]["root"]}})
    assert to_dict(bare) == to_dict(resolve_config(spec, recipe, {"task": {"folds": 0}}))
    assert (bare.train.lr, bare.train.batch_seconds, bare.task.corpus) == (1e-2, 60.0, "librispeech")


def test_protocol_defaults_per_task():
    train = {name: resolve_config(RunSpec(name, "fbank"), {}, {}, corpus=False).train for name in TASKS}
    assert {name: (t.lr, t.batch_size) for name, t in train.items()} == {
        "ks": (1e-4, 32), "asr": (1e-4, 32), "pr": (1e-2, 32), "st": (1e-3, 32), "sid": (1e-4, 32),
        "er": (1e-4, 32), "asv": (1e-4, 32), "ic": (1e-4, 32)}
    assert resolve_config(RunSpec("ks", "fbank"), {}, {}, corpus=False).task.corpus == "auto"


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(REPO)) for p in REPO.glob("recipes/*/*.yaml")
                                          if p.parent.name in TASKS))
def test_every_recipe_sets_what_its_task_defaults(recipe: str):
    """A recipe keeps its numbers when a task's protocol defaults change only if it sets every one of them."""
    settings = load_yaml(REPO / recipe)
    assert "corpus" in settings["task"]
    missing = set(TASKS[Path(recipe).parent.name].train_defaults) - set(settings.get("train", {}))
    assert not missing, f"{recipe} leaves {sorted(missing)} to the task's defaults"
