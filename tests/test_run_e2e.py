"""``s2o-eval run`` end to end on the CPU: a tiny random Llama through lm-eval on RULER tasks."""

import json

import pytest
from typer.testing import CliRunner

from s2o_eval.cli import app
from s2o_eval.run.rundir import RunDir

TASKS = "ruler:niah_single_1,niah_multivalue,vt"


def _run(args, runs_dir):
    return CliRunner().invoke(app, ["run", "--runs-dir", str(runs_dir), "-q", *args])


def _only_run(runs_dir) -> RunDir:
    (path,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return RunDir(path)


def test_run_writes_a_complete_run_directory(tiny_model, tmp_path):
    result = _run(["--model", str(tiny_model), "--task", TASKS, "--ctx", "2k", "--limit", "2",
                   "--method", "sdpa"], tmp_path)
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path)
    config, env, summary = run.config(), run.env(), run.summary()
    assert config["method"] == "sdpa" and config["method_resolved"] == "sdpa"
    assert config["tasks"] == ["s2o_ruler_niah_single_1", "s2o_ruler_niah_multivalue", "s2o_ruler_vt"]
    assert config["ctx"] == [2048] and config["limit"] == 2 and config["batch_size"] == 1
    assert "torch" in env["versions"] and "device" in env
    samples = run.samples()
    assert len(samples) == 6
    for record in samples:
        assert set(record) >= {"task", "ctx", "index", "prompt_tokens", "prompt_sha", "prediction", "golds",
                               "score", "prefill_ms", "density", "peak_mem_mb"}
        assert 0.0 <= record["score"] <= 100.0 and record["prefill_ms"] > 0
        # prompt + generation budget fits the window; the prompt fills it to within 1%
        budget = 30 if record["task"].endswith("_vt") else 128
        assert 0.99 * (2048 - budget) <= record["prompt_tokens"] + budget <= 2048
    assert {r["index"] for r in samples} == {0, 1}
    cells = {(r["task"], r["ctx"]): r for r in summary["results"]}
    assert len(cells) == 3 and all(r["n"] == 2 for r in cells.values())
    assert "vt" in result.output and "2K" in result.output


def test_interrupted_run_resumes_without_redoing_samples(tiny_model, tmp_path, monkeypatch):
    args = ["--model", str(tiny_model), "--task", "ruler:niah_single_1,vt", "--ctx", "2k", "--limit", "2",
            "--method", "eager"]
    original = RunDir.append_sample
    calls = {"n": 0}

    def dies_after_three(self, record):
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the machine went away mid-run
        calls["n"] += 1
        original(self, record)

    monkeypatch.setattr(RunDir, "append_sample", dies_after_three)
    interrupted = _run(args, tmp_path)
    assert interrupted.exit_code == 130
    run = _only_run(tmp_path)
    first = {(r["task"], r["index"]): r["prompt_sha"] for r in run.samples()}
    assert len(first) == 3

    monkeypatch.setattr(RunDir, "append_sample", original)
    evaluated = []
    import lm_eval.evaluator

    real_evaluate = lm_eval.evaluator.evaluate

    def counting_evaluate(*a, **kw):
        evaluated.append(kw["samples"])
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(lm_eval.evaluator, "evaluate", counting_evaluate)
    resumed = _run(args, tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert len(evaluated) == 1  # only the missing sample ran
    lines = run.samples_path.read_text().splitlines()
    assert len(lines) == 4 and len({(json.loads(l)["task"], json.loads(l)["index"]) for l in lines}) == 4
    assert _only_run(tmp_path).path == run.path


@pytest.mark.parametrize("args, message", [
    (["--task", "rular"], "unknown task suite 'rular'"),
    (["--task", "ruler:niah_single_9"], "unknown task 'niah_single_9'"),
    (["--task", "ruler:vt", "--method", "magic"], "unknown method 'magic'"),
    (["--task", "ruler:vt", "--ctx", "8k"], "beyond"),
    (["--task", "ruler:vt", "--method", "fa3"], "not available here"),
])
def test_user_mistakes_end_in_one_line(tiny_model, tmp_path, args, message):
    import torch

    if "fa3" in args and torch.cuda.is_available():
        pytest.skip("fa3 may be available on a GPU machine")
    result = _run(["--model", str(tiny_model), *args], tmp_path)
    assert result.exit_code == 4
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([l for l in result.output.splitlines() if l.startswith("Error:")]) == 1


def test_beyond_window_is_allowed_on_request_and_recorded(tiny_model, tmp_path):
    result = _run(["--model", str(tiny_model), "--task", "ruler:vt", "--ctx", "5k", "--limit", "1",
                   "--allow-beyond-window", "--method", "sdpa"], tmp_path)
    assert result.exit_code == 0, result.output
    config = _only_run(tmp_path).config()
    assert config["allow_beyond_window"] is True and config["model_window"] == 4096


def test_several_methods_share_one_command_and_their_samples(tiny_model, tmp_path):
    """--method sdpa,eager: a run directory each, the same samples, the static-cache decode in both."""
    result = _run(["--model", str(tiny_model), "--task", "ruler:vt", "--ctx", "1k", "--limit", "2",
                   "--method", "sdpa,eager", "--decode", "static"], tmp_path)
    assert result.exit_code == 0, result.output
    runs = {RunDir(p).config()["method"]: RunDir(p) for p in tmp_path.iterdir() if p.is_dir()}
    assert set(runs) == {"sdpa", "eager"}
    assert all(run.config()["decode"] == "static" for run in runs.values())
    samples = {name: {(r["index"], r["prompt_sha"]) for r in run.samples()} for name, run in runs.items()}
    assert samples["sdpa"] == samples["eager"] and len(samples["sdpa"]) == 2
