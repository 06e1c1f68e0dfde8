"""What a user sees of a run: a results table that fits 80 columns, the resume line, and option names
that lm-evaluation-harness users (and `run` / `bench` users) already know."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from typer.testing import CliRunner

import tiny_runs
from s2o_eval.cli import app
from s2o_eval.cli.tables import run_results_table
from s2o_eval.run.request import RunOutcome
from s2o_eval.run.rundir import RunDir

S2O_ARGS = {"tau": 0.0003, "segment": 1024, "block_m": 128, "block_n": 64, "patience": 2, "score": "max",
            "query_permute": True, "stop_rule": "chunk", "guide": "mean"}


def _row(task: str, group: str | None = None) -> dict:
    row = {"task": task, "ctx": 131072, "method": "s2o", "n": 1000, "score": 55.5, "prefill_ms_mean": 123456.7,
           "prefill_ms_p50": 120000.0, "prefill_ms_p90": 223456.7, "density_mean": 0.345}
    return row | ({"group": group} if group else {})


def test_the_results_table_fits_80_columns_without_cutting_task_names():
    tasks = ["s2o_ruler_niah_multikey_1", "s2o_ruler_niah_multikey_2", "s2o_ruler_niah_multikey_3",
             "s2o_infinitebench_longdialogue_qa_eng", "s2o_longbench_v2_cot_ans"]
    results = [_row(t) for t in tasks] + [_row("s2o_longbench_v2_cot_ans", "medium")]
    summary = {"config": {"model_name": "gemma-3-270m", "method_resolved": "s2o", "method_args": S2O_ARGS},
               "results": results}
    console = Console(width=80, record=True)
    console.print(run_results_table(RunOutcome(RunDir(Path("runs/gemma-3-270m-s2o-0123456789")), summary, [])))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert rows == ["niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "longdialogue_qa_eng",
                    "longbench_v2_cot_ans", "medium"]
    assert "123,457" in text and "223,457" in text  # numbers whole too
    title = " ".join(text.split("┏")[0].split())
    assert title == ("gemma-3-270m · s2o: tau=0.0003, segment=1024, block_m=128, block_n=64, patience=2, "
                     "score=max, query_permute=True, stop_rule=chunk, guide=mean")


def test_a_resumed_run_says_how_many_samples_are_already_done(finished_run, tiny_model, tmp_path):
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    lines = run.samples_path.read_bytes().splitlines(keepends=True)
    run.samples_path.write_bytes(b"".join(lines[:-1]))
    result = tiny_runs.run(tiny_model, run.path)
    assert result.exit_code == 0, result.output
    assert f"resuming: 2 of 3 samples already done in {run.path}" in result.output.splitlines()


def _option_names(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]
    return {name for param in click_command.params for name in param.opts}


def test_run_and_bench_take_the_same_names_and_lm_evals_spellings():
    shared = {"--method", "--methods", "--out", "--out-dir", "--output_path", "-o"}
    assert shared <= _option_names("run") and shared <= _option_names("bench")
    assert "--tasks" in _option_names("run")


def test_lm_evals_spellings_reach_the_same_run(finished_run, tiny_model, tmp_path):
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_model), "--tasks", "ruler:vt", "--ctx", "1k",
                                      "--limit", "3", "--methods", "sdpa", "--output_path", str(run.path), "-q"])
    assert result.exit_code == 0, result.output
    assert f"resuming: 3 of 3 samples already done in {run.path}" in result.output


def test_bench_takes_run_s_names(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--workload", "llama8b-random", "--ctx", "256", "--method", "sdpa",
                                      "--dtype", "fp32", "--reps", "1", "--warmup", "0", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "llama8b-random-256.json").exists()
