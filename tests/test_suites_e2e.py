"""The other suites and the nightly gate, end to end on the CPU through ``s2o-eval`` with a tiny
random Llama: LongBench-v2 and InfiniteBench on fixture files, then run -> compare -> regress."""

import pytest
from typer.testing import CliRunner

from s2o_eval.cli import app
from s2o_eval.run.rundir import RunDir

import suite_fixtures


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return suite_fixtures.write(tmp_path_factory.mktemp("data"))


def _run(*args):
    return CliRunner().invoke(app, ["run", "-q", *args])


def _single_run(runs_dir):
    (path,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return RunDir(path)


def test_longbench_v2_and_infinitebench_run_end_to_end(tiny_model, data_dir, tmp_path):
    result = _run("--model", str(tiny_model), "--task", "longbench-v2",
                  "--task", "infinitebench:passkey,kv_retrieval,longbook_choice_eng,longbook_qa_eng",
                  "--ctx", "2k", "--limit", "4", "--data-dir", str(data_dir), "--method", "sdpa",
                  "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = _single_run(tmp_path)
    samples = run.samples()
    by_task = {}
    for record in samples:
        by_task.setdefault(record["task"], []).append(record)
        assert record["prompt_tokens"] + 128 <= 2048 or not record["task"].startswith("s2o_longbench")
    assert len(by_task["s2o_longbench_v2"]) == 4
    assert {len(v) for k, v in by_task.items() if "infinitebench" in k} == {2}  # two records per file
    # LongBench-v2 samples carry their difficulty and length labels; the summary breaks scores down
    assert all(set(r["group"]) & {"easy", "hard"} and set(r["group"]) & {"short", "medium", "long"}
               for r in by_task["s2o_longbench_v2"])
    rows = [r for r in run.summary()["results"] if r["task"] == "s2o_longbench_v2"]
    assert {r.get("group") for r in rows} >= {None, "easy", "hard"}
    overall = next(r for r in rows if r.get("group") is None)
    assert overall["n"] == 4 and sum(r["n"] for r in rows if r.get("group") in ("easy", "hard")) == 4


def test_missing_dataset_offline_is_one_line_and_the_rest_runs(tiny_model, tmp_path):
    (tmp_path / "nothing").mkdir()
    result = _run("--model", str(tiny_model), "--task", "longbench-v2", "--task", "ruler:vt", "--ctx", "2k",
                  "--limit", "1", "--data-dir", str(tmp_path / "nothing"), "--method", "sdpa",
                  "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "longbench_v2/data.json" in result.output
    assert [r["task"] for r in _single_run(tmp_path / "runs").samples()] == ["s2o_ruler_vt"]


def test_nightly_gate_end_to_end(tiny_model, tmp_path):
    runs = tmp_path / "runs"
    common = ["--model", str(tiny_model), "--suite", "nightly", "--ctx", "2k", "--limit", "1", "--runs-dir", str(runs)]
    first = _run(*common, "--method", "sdpa")
    assert first.exit_code == 0, first.output
    second = _run(*common, "--method", "eager")
    assert second.exit_code == 0, second.output
    run_dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(run_dirs) == 2
    sdpa_run = next(p for p in run_dirs if "-sdpa-" in p.name)
    eager_run = next(p for p in run_dirs if "-eager-" in p.name)
    assert RunDir(sdpa_run).config()["suite"] == "nightly"

    report_dir = tmp_path / "report"
    compared = CliRunner().invoke(app, ["compare", str(sdpa_run), str(eager_run), "--out", str(report_dir)])
    assert compared.exit_code == 0, compared.output
    assert "vt" in (report_dir / "report.md").read_text()

    baseline = tmp_path / "baseline.json"
    made = CliRunner().invoke(app, ["regress", str(sdpa_run), "--against", str(baseline), "--update"])
    assert made.exit_code == 0, made.output
    # the same model greedy-decoded with another dense kernel: same answers, no regression
    gate = CliRunner().invoke(app, ["regress", str(eager_run), "--against", str(baseline)])
    assert gate.exit_code == 0, gate.output
