"""The run-folder contracts (:mod:`core.runs`) and the CLI wrapper (:mod:`core.cli`)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from core import runs
from core.cli import run_main
from core.config import ConfigError
from core.runs import SCHEMA_VERSION, Results
from core.signals import Interrupted

RECORD = {"task": "ks", "upstream": "fbank", "primary_metric": "accuracy", "higher_is_better": True,
          "splits": {"dev": {"accuracy": 0.5, "utterances": 4, "seconds": 0.1}, "test": {"accuracy": 0.75}},
          "seed": 1337, "learning_rate": 1e-4, "layer_weights": [0.25, 0.75], "head": "proj_mean_linear",
          "training": {"train_steps": 6}}


def test_results_round_trip_and_keep_what_they_do_not_know():
    results = Results.from_dict({**RECORD, "schema_version": SCHEMA_VERSION, "from_a_newer_writer": [1, 2]})
    assert results.seed == 1337 and results.head == "proj_mean_linear" and results.splits["test"]["accuracy"] == 0.75
    out = results.to_dict()
    assert out["schema_version"] == SCHEMA_VERSION and out["from_a_newer_writer"] == [1, 2]
    assert Results.from_dict(out) == results
    assert "metric_info" not in out and "decoding" not in out  # unset optional sections are left out


def test_a_file_written_before_the_schema_had_a_version_reads_as_version_0():
    assert Results.from_dict(RECORD).schema_version == 0


@pytest.mark.parametrize("change, message", [
    ({"seed": "1337"}, "'seed' has the wrong type"),
    ({"higher_is_better": 1}, "'higher_is_better' has the wrong type"),
    ({"learning_rate": True}, "'learning_rate' has the wrong type"),
    ({"splits": {"test": {"accuracy": "high"}}}, "split 'test' has no numeric 'accuracy'"),
    ({"splits": {}}, "'splits' is not a non-empty object"),
    ({"layer_weights": [0.5, "x"]}, "'layer_weights' is not a list of numbers"),
    ({"schema_version": SCHEMA_VERSION + 1}, "schema_version"),
])
def test_a_bad_field_is_named(change: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Results.from_dict({**RECORD, **change})
    with pytest.raises(ValueError, match="missing task"):
        Results.from_dict({k: v for k, v in RECORD.items() if k != "task"})


def test_a_pretraining_run_is_unfinished_until_its_summary(tmp_path: Path):
    checkpoint = tmp_path / runs.UPSTREAM_FILE
    checkpoint.touch()
    assert not runs.unfinished_run_checkpoint(checkpoint)  # a bare upstream.pt: nothing says it is training
    (tmp_path / runs.RESUME_CHECKPOINT).parent.mkdir()
    (tmp_path / runs.RESUME_CHECKPOINT).touch()
    assert runs.unfinished_run_checkpoint(checkpoint) and not runs.pretraining_finished(tmp_path)
    (tmp_path / runs.SUMMARY_FILE).write_text("{}")
    assert runs.pretraining_finished(tmp_path) and not runs.unfinished_run_checkpoint(checkpoint)
    assert runs.pretraining_summary_of(checkpoint) == tmp_path / runs.SUMMARY_FILE
    assert runs.pretraining_summary_of(tmp_path / "model.pt") is None
    assert (runs.results_file(), runs.results_file("decoder=beam")) == ("results.json", "results-decoder=beam.json")
    assert runs.predictions_file("test", "decoder=beam") == "predictions-decoder=beam-test.tsv"


def test_run_main_turns_bad_input_into_one_line_and_status_2(capsys):
    def bad():
        raise ConfigError("unknown config key 'train.lrr'")

    assert run_main(bad, log_level=None) == 2
    assert capsys.readouterr().err == "error: unknown config key 'train.lrr'\n"
    assert run_main(lambda: None, log_level=None) == 0 and run_main(lambda: 3, log_level=None) == 3


def test_run_main_reports_a_stop_with_the_signal_status(capsys):
    def stopped():
        raise Interrupted(signal.SIGTERM, saved="exp/x/checkpoints/last.pt")

    assert run_main(stopped, log_level=None, resume_hint="run it again") == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM" in err and "last.pt" in err and err.rstrip().endswith("run it again")


def test_run_main_lets_a_bug_through():
    def bug():
        raise KeyError("not the user's fault")

    with pytest.raises(KeyError):
        run_main(bug, log_level=None)
