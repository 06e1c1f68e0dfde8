"""Exit codes a CI gate can trust: one meaning each, the same in every command (``errors.ExitCode``),
listed by ``--help``, the README, and the nightly workflow's gate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2o_eval.cli import COMMANDS, app
from s2o_eval.errors import EXIT_CODES_HELP, ExitCode

from test_readme import section
from test_regress import good_scores, write_run

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def test_help_readme_and_nightly_workflow_agree_on_the_codes():
    assert " ".join(EXIT_CODES_HELP.split()) in " ".join(_cli("--help").output.split())
    for code in ExitCode:
        assert f" {code.value} " in EXIT_CODES_HELP
    readme_codes = re.findall(r"^\| `(\d+)` \|", section("Exit codes", "###"), re.M)
    assert [int(c) for c in readme_codes] == [code.value for code in ExitCode]
    gate = (ROOT / ".github" / "workflows" / "nightly.yml").read_text().split("Gate s2o against the baseline")[1]
    for code in (ExitCode.OK, ExitCode.CHECK_FAILED, ExitCode.NOT_COMPARABLE, ExitCode.USAGE):
        assert f"  {code.value}) verdict=" in gate


@pytest.mark.parametrize("command", [name for _, name in COMMANDS])
def test_a_usage_error_exits_4_in_every_command(command):
    """Not click's 2, which means "not comparable" here."""
    result = _cli(command, "--no-such-option")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "No such option" in result.output


def test_usage_errors_outside_a_command_exit_4():
    for args in ([], ["no-such-command"], ["regress"], ["regress", "run", "--against", "b.json", "--tolerance", "x"]):
        assert _cli(*args).exit_code == ExitCode.USAGE, args


def test_regress_exits_4_for_a_bad_baseline_or_tolerance(tmp_path):
    run = write_run(tmp_path / "runs", "good", good_scores())
    baseline = tmp_path / "baseline.json"
    assert _cli("regress", run, "--against", baseline, "--update").exit_code == 0

    for tolerance in ("-1", "nan"):
        result = _cli("regress", run, "--against", baseline, "--tolerance", tolerance)
        assert result.exit_code == ExitCode.USAGE and "Error: --tolerance" in result.output, result.output

    text = baseline.read_text()
    damaged = {
        "cut short": text[: len(text) // 2].encode(),
        "not UTF-8": b"\xff" + text.encode(),
        "a sample without its score": text.replace('"score": 100.0}', "}", 1).encode(),
    }
    for what, content in damaged.items():
        baseline.write_bytes(content)
        result = _cli("regress", run, "--against", baseline)
        assert result.exit_code == ExitCode.USAGE, (what, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith(f"Error: {baseline}"), (what, result.output)
    baseline.unlink()
    assert _cli("regress", run, "--against", baseline).exit_code == ExitCode.USAGE


def test_a_run_that_evaluates_nothing_exits_3(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = _cli("run", "--model", tiny_model, "--task", "longbench-v2", "--ctx", "2k", "--data-dir", tmp_path / "empty",
                  "--method", "sdpa", "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == ExitCode.NOTHING_EVALUATED, result.output
    assert "Skipped: longbench-v2:longbench_v2 at 2K: LongBench-v2 data missing" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("Error: nothing was evaluated in ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fa3 may run on a GPU machine")
def test_a_bench_that_measures_nothing_exits_3(tmp_path):
    result = _cli("bench", "--workload", "llama8b-random", "--ctx", "256", "--methods", "fa3", "--dtype", "fp32",
                  "--reps", "1", "--warmup", "0", "--out", tmp_path, "-q")
    assert result.exit_code == ExitCode.NOTHING_EVALUATED, result.output
    assert json.loads((tmp_path / "llama8b-random-256.json").read_text())[0]["skipped"]


def test_an_unexpected_error_exits_5_with_its_traceback(monkeypatch):
    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr("s2o_eval.cli.methods.methods_table", broken)
    monkeypatch.delenv("S2O_EVAL_DEBUG", raising=False)
    result = _cli("methods")
    assert result.exit_code == ExitCode.INTERNAL
    assert "Traceback" in result.output and "RuntimeError: a bug" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("Error: an unexpected error (traceback above)")
