"""Mistakes and damaged inputs a user can cause end in one line that says what to do, never a
traceback, and before any work that could not be kept."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import tiny_runs
from s2o_eval.cli import app
from s2o_eval.run.rundir import RunDir
from s2o_tasks.common import DataUnavailable
from s2o_tasks.infinitebench.data import read_records as read_infinitebench
from s2o_tasks.longbench_v2.data import read_records as read_longbench

from test_longbench_v2 import record as longbench_record


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(result, expected: str, code: int = 4) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    (line,) = tiny_runs.error_lines(result.output)
    assert expected in line, line


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the command loads the model: its mistake must be found before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("s2o_eval.models.load_model", refuse)


# -- damaged dataset files ----------------------------------------------------------------------

def _bad_data_dir(root):
    (root / "infinitebench").mkdir(parents=True)
    (root / "infinitebench" / "passkey.jsonl").write_text(
        json.dumps({"context": "x", "input": "q", "answer": ["1"], "options": []}) + '\n{"context": "cut sh\n')
    (root / "longbench_v2").mkdir()
    second = {k: v for k, v in longbench_record(1).items() if k != "question"}
    (root / "longbench_v2" / "data.json").write_text(json.dumps([longbench_record(0), second]))
    return root


def test_a_malformed_infinitebench_line_names_the_file_and_line(tmp_path):
    path = _bad_data_dir(tmp_path) / "infinitebench" / "passkey.jsonl"
    assert read_infinitebench(path, [0])[0]["input"] == "q"  # only the lines asked for are parsed
    with pytest.raises(DataUnavailable, match=rf"^{path} line 2 is not valid JSON .*: replace the file"):
        read_infinitebench(path, [0, 1])


def test_a_longbench_record_without_a_field_names_the_record(tmp_path):
    path = _bad_data_dir(tmp_path) / "longbench_v2" / "data.json"
    with pytest.raises(DataUnavailable, match=rf"^{path} is not LongBench-v2's data.json \(record 1 lacks question\): "
                                              "replace it"):
        read_longbench(path)


def test_damaged_dataset_files_skip_their_tasks_in_one_line_each(tiny_model, tmp_path):
    data_dir = _bad_data_dir(tmp_path / "data")
    result = _cli("run", "--model", tiny_model, "--task", "infinitebench:passkey", "--task", "longbench-v2",
                  "--ctx", "2k", "--data-dir", data_dir, "--method", "sdpa", "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 3 and "Traceback" not in result.output  # 3: nothing evaluated
    skipped = [line for line in result.output.splitlines() if line.startswith("Skipped:")]
    assert len(skipped) == 2
    assert "passkey.jsonl line 2 is not valid JSON" in skipped[0]
    assert "data.json is not LongBench-v2's data.json (record 1 lacks question)" in skipped[1]


# -- the model ----------------------------------------------------------------------------------

def test_a_model_directory_with_an_empty_config_is_one_line(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    result = _cli("run", "--model", tmp_path / "model", "--task", "ruler:vt", "--runs-dir", tmp_path / "runs")
    _one_line(result, f"could not load '{tmp_path / 'model'}' (Unrecognized model in {tmp_path / 'model'}): "
                      "check that it holds a complete Hugging Face model")


def test_an_unknown_hub_model_without_a_network_is_one_line_at_once(tmp_path, monkeypatch):
    import transformers

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # not declared offline: just no network
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("s2o_tasks.common.hub_reachable", lambda: False, raising=False)

    def asks_the_hub(*args, **kwargs):
        raise AssertionError("transformers was left to retry the hub")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", asks_the_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", asks_the_hub)
    result = _cli("run", "--model", "s2o-eval-tests/no-such-model", "--task", "ruler:vt", "--runs-dir", tmp_path)
    _one_line(result, "model 's2o-eval-tests/no-such-model' is not in the local Hugging Face cache and the hub "
                      "cannot be reached")


# -- option values ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--ctx", "infk"], "--ctx 'infk' is not a length"),
    (["--method", "flexprefill", "--method-args", "tau=nan"], "method 'flexprefill': tau=nan is not a finite number"),
    (["--method", "flexprefill", "--method-args", "tau=inf"], "method 'flexprefill': tau=inf is not a finite number"),
    (["--method", "minference", "--method-args", "budget_scale=inf"], "budget_scale=inf is not a finite number"),
])
def test_non_finite_numbers_are_refused(tiny_model, tmp_path, no_model_load, args, message):
    _one_line(_cli("run", "--model", tiny_model, "--task", "ruler:vt", "--runs-dir", tmp_path, *args), message)


def test_a_data_dir_that_does_not_exist_is_one_line_for_every_task(tiny_model, tmp_path, no_model_load):
    missing = tmp_path / "no-such-dir"
    expected = f"--data-dir {missing} is not a directory"
    # RULER's synthetic tasks need no data: the mistyped folder would pass unnoticed
    _one_line(_cli("run", "--model", tiny_model, "--task", "ruler:vt", "--data-dir", missing, "--runs-dir", tmp_path),
              expected)
    _one_line(_cli("tasks", "--data-dir", missing), expected)


# -- the run directory --------------------------------------------------------------------------

def test_out_that_is_a_file_is_refused_before_the_model_loads(tiny_model, tmp_path, no_model_load):
    (tmp_path / "a-file").write_text("notes")
    _one_line(tiny_runs.run(tiny_model, tmp_path / "a-file"), f"--out {tmp_path / 'a-file'} is a file")


def test_samples_that_cannot_be_written_are_refused_before_the_model_loads(tiny_model, tmp_path, no_model_load):
    (tmp_path / "run" / "samples.jsonl").mkdir(parents=True)  # unwritable as a file, even for root
    _one_line(tiny_runs.run(tiny_model, tmp_path / "run"), f"{tmp_path / 'run' / 'samples.jsonl'} cannot be written")


def test_another_limit_on_a_run_directory_names_the_fields_that_differ(finished_run, tiny_model, tmp_path):
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    expected = f"{run.path} holds a run with another configuration (limit: 3 there, 4 asked)"
    _one_line(tiny_runs.run(tiny_model, run.path, "--limit", "4"), expected)
    run.config_path.write_text("{garbage")  # then summary.json's copy of the config tells
    _one_line(tiny_runs.run(tiny_model, run.path, "--limit", "4"), expected)


# -- reports ------------------------------------------------------------------------------------

def _stored_run(root, name: str, method: str) -> RunDir:
    run = RunDir(root / name)
    run.write_config({"model": "m", "method": method, "method_resolved": method, "method_args": {},
                      "tasks": ["s2o_ruler_vt"], "ctx": [4096]})
    for index, score in enumerate([100.0, 0.0, 100.0]):
        run.append_sample({"task": "s2o_ruler_vt", "ctx": 4096, "index": index, "score": score, "prefill_ms": 2.0})
    run.write_summary()
    return run


def test_report_rebuilds_an_unreadable_summary_from_the_samples(tmp_path):
    run = _stored_run(tmp_path / "runs", "s2o-run", "s2o")
    clean = run.summary()
    run.summary_path.write_bytes(run.summary_path.read_bytes()[:40] + b"\xff garbage")
    result = _cli("report", run.path, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warnings == [f"Warning: {run.summary_path} is unreadable: rebuilt from samples.jsonl (the source of truth)"]
    assert json.loads((tmp_path / "report" / "s2o.summary.json").read_text())["results"] == clean["results"]


def test_one_corrupt_run_directory_does_not_stop_compare_by_method(tmp_path):
    runs = tmp_path / "runs"
    _stored_run(runs, "a-sdpa", "sdpa")
    _stored_run(runs, "b-s2o", "s2o")
    broken = _stored_run(runs, "c-broken", "s2o")
    broken.config_path.write_text('{"model": "m", "meth')
    result = _cli("compare", "dense", "s2o", "--runs-dir", runs, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warnings == [f"Warning: skipped {broken.path}: its config.json is unreadable"]
