"""The accuracy gate: its paired statistics, the baseline file, comparability, the verdict, and
`s2o-eval regress` exiting 0 (pass), 1 (regression), 2 (not comparable) and 4 (no baseline)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2o_eval.errors import NotComparable, UserError
from s2o_eval.reporting import stats
from s2o_eval.reporting.regress import (BASELINE_SCHEMA, baseline_from_run, check_comparable, evaluate,
                                        load_baseline, save_baseline)
from s2o_eval.reporting.runs import load_runs
from s2o_eval.run.rundir import RunDir

NIAH, VT = "s2o_ruler_niah_single_1", "s2o_ruler_vt"
K4, K16 = 4096, 16384
CELLS = [(NIAH, K4), (NIAH, K16), (VT, K4), (VT, K16)]


def write_run(root: Path, name: str, scores: dict, *, model: str = "gemma-3-270m", revision: str = "q4km-1",
              method: str = "s2o") -> Path:
    """A run directory with ``scores = {(task, ctx): [score of sample 0, 1, ...]}``."""
    run = RunDir(root / name)
    run.write_config({"model": model, "model_revision": revision, "method": method, "method_resolved": method,
                      "method_args": {"tau": 0.01}, "tasks": sorted({t for t, _ in scores}),
                      "ctx": sorted({c for _, c in scores}), "limit": 10, "seed": 0})
    run.write_env({"gpu": "NVIDIA H100 80GB HBM3", "versions": {"torch": "2.11.0"}})
    for (task, ctx), values in scores.items():
        for index, score in enumerate(values):
            run.append_sample({"task": task, "ctx": ctx, "index": index, "score": score, "prefill_ms": 1.0})
    run.write_summary()
    return run.path


def load(path: Path):
    (run,) = load_runs([str(path)], path.parent)
    return run


def good_scores() -> dict:
    return {cell: [100.0] * 9 + [0.0] for cell in CELLS}  # 90 everywhere


# -- statistics ---------------------------------------------------------------------------------

def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert stats.mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(8, 1) == pytest.approx(2 * (1 + 9) / 2**9)
    assert stats.mcnemar_exact(3, 3) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_permutation_test_enumerates_sign_flips_exactly():
    # differences 10, 20, 30: of the 8 sign patterns only +++ and --- reach |sum| >= 60
    assert stats.paired_permutation_p([0, 0, 0], [10, 20, 30]) == pytest.approx(2 / 8)
    # differences 10, -10, 30 (sum 30): the 8 sums are +-50, +-30 twice, +-10; six reach |sum| >= 30
    assert stats.paired_permutation_p([50, 50, 50], [60, 40, 80]) == pytest.approx(6 / 8)
    assert stats.paired_permutation_p([33.3, 50], [33.3, 50]) == 1.0


def test_permutation_test_on_pass_fail_scores_is_mcnemar():
    baseline = [100.0] * 8 + [0.0] * 2
    current = [0.0] * 6 + [100.0] * 2 + [100.0, 0.0]  # 6 newly failing, 1 newly passing
    assert stats.paired_permutation_p(baseline, current) == pytest.approx(stats.mcnemar_exact(6, 1))
    assert stats.paired_p_value(baseline, current) == pytest.approx(stats.mcnemar_exact(6, 1))


def test_monte_carlo_fallback_is_deterministic_and_close_to_exact(monkeypatch):
    rng = random.Random(7)
    baseline = [rng.uniform(0, 100) for _ in range(14)]
    current = [b - rng.uniform(-5, 15) for b in baseline]
    exact = stats.paired_permutation_p(baseline, current)
    monkeypatch.setattr(stats, "_MAX_EXACT_WORK", 8)  # force the sampled estimate
    sampled = stats.paired_permutation_p(baseline, current)
    assert sampled == stats.paired_permutation_p(baseline, current)
    assert sampled == pytest.approx(exact, abs=0.01)
    assert 0 < exact < 0.2


def test_paired_p_value_uses_the_permutation_test_for_partial_scores():
    baseline, current = [100.0, 75.0, 50.0], [75.0, 50.0, 50.0]
    assert stats.paired_p_value(baseline, current) == pytest.approx(stats.paired_permutation_p(baseline, current))
    with pytest.raises(ValueError):
        stats.paired_p_value([1.0], [1.0, 2.0])


# -- baseline file ------------------------------------------------------------------------------

def test_baseline_round_trip_keeps_per_sample_scores_and_provenance(tmp_path):
    run = load(write_run(tmp_path / "runs", "good", good_scores()))
    path = tmp_path / "baselines" / "nightly.json"
    save_baseline(baseline_from_run(run), path)
    baseline = load_baseline(path)
    assert baseline["schema"] == BASELINE_SCHEMA
    assert baseline["model"] == "gemma-3-270m" and baseline["model_revision"] == "q4km-1"
    assert baseline["method_resolved"] == "s2o"
    assert baseline["tasks"] == [NIAH, VT] and baseline["ctx"] == [K4, K16]
    assert len(baseline["samples"]) == 40
    assert baseline["samples"][0] == {"task": NIAH, "ctx": K4, "index": 0, "score": 100.0}
    assert baseline["samples"] == sorted(baseline["samples"], key=lambda s: (s["task"], s["ctx"], s["index"]))
    assert {"task": VT, "ctx": K16, "n": 10, "score": 90.0} in baseline["results"]
    assert baseline["created_from"]["env"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert baseline["created_from"]["config"]["method_args"] == {"tau": 0.01}
    sample_lines = [line for line in path.read_text().splitlines() if line.strip().startswith('{"task"')]
    assert len(sample_lines) == 40  # one sample per line: baseline updates diff sample by sample


def test_missing_or_foreign_baseline_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--update"):
        load_baseline(tmp_path / "none.json")
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    with pytest.raises(UserError, match="not an s2o-eval baseline"):
        load_baseline(tmp_path / "other.json")


@pytest.mark.parametrize("change, reason", [
    ({"model": "llama-3.1-8b"}, "model 'llama-3.1-8b'"),
    ({"revision": "q4km-2"}, "model revision"),
    ({"cells": [(NIAH, K4), (NIAH, K16)]}, "tasks differ"),
    ({"cells": [(NIAH, K4), (VT, K4)]}, "context lengths"),
    ({"samples": 9}, "lacks 4 of the baseline's samples"),
    ({"samples": 11}, "has 4 samples the baseline lacks"),
])
def test_runs_that_differ_from_the_baseline_are_not_comparable(tmp_path, change, reason):
    baseline = baseline_from_run(load(write_run(tmp_path, "base", good_scores())))
    cells = change.get("cells", CELLS)
    scores = {cell: [100.0] * change.get("samples", 10) for cell in cells}
    run = load(write_run(tmp_path, "now", scores, model=change.get("model", "gemma-3-270m"),
                         revision=change.get("revision", "q4km-1")))
    with pytest.raises(NotComparable, match=reason):
        check_comparable(baseline, run)


# -- verdict ------------------------------------------------------------------------------------

def test_same_scores_pass(tmp_path):
    baseline = baseline_from_run(load(write_run(tmp_path, "base", good_scores())))
    run = load(write_run(tmp_path, "now", good_scores()))
    check_comparable(baseline, run)
    verdict = evaluate(baseline, run)
    assert verdict.passed
    assert all(c.p == 1.0 and c.delta == 0 for c in verdict.cells)


def test_a_collapsed_cell_regresses_with_its_paired_p(tmp_path):
    baseline = baseline_from_run(load(write_run(tmp_path, "base", good_scores())))
    scores = good_scores()
    scores[(VT, K16)] = [0.0] * 6 + [100.0] * 3 + [0.0]  # 6 of the 9 passing samples now fail
    verdict = evaluate(baseline, load(write_run(tmp_path, "now", scores)), tolerance=100)
    (cell,) = verdict.regressions
    assert (cell.task, cell.ctx, cell.baseline, cell.now) == (VT, K16, 90.0, 30.0)
    assert cell.p == pytest.approx(2 / 64)


def test_a_small_cell_drop_is_noise_but_a_broad_one_fails_the_average(tmp_path):
    baseline = baseline_from_run(load(write_run(tmp_path, "base", good_scores())))
    scores = {cell: [100.0] * 7 + [0.0] * 3 for cell in CELLS}  # every cell: 90 -> 70, 2 samples each
    run = load(write_run(tmp_path, "now", scores))
    verdict = evaluate(baseline, run, tolerance=2.0)
    assert not any(c.regressed for c in verdict.cells)  # 2 discordant pairs: p = 0.5
    assert {a.ctx for a in verdict.regressions} == {K4, K16, None}
    assert all(a.delta == pytest.approx(-20.0) for a in verdict.regressions)
    assert evaluate(baseline, run, tolerance=20.0).passed  # a drop of exactly the tolerance passes
    assert not evaluate(baseline, run, tolerance=19.9).passed


def test_rises_never_fail(tmp_path):
    scores = {cell: [0.0] * 10 for cell in CELLS}
    baseline = baseline_from_run(load(write_run(tmp_path, "base", scores)))
    assert evaluate(baseline, load(write_run(tmp_path, "now", good_scores())), tolerance=0).passed


# -- the command --------------------------------------------------------------------------------

@pytest.fixture
def cli():
    from s2o_eval.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_regress_command_exit_codes(cli, tmp_path):
    baseline = tmp_path / "baselines" / "nightly.json"
    good = write_run(tmp_path / "runs", "good", good_scores())
    result = cli("regress", good, "--against", baseline)
    assert result.exit_code == 4 and "Error: no baseline at" in result.output

    result = cli("regress", good, "--against", baseline, "--update")
    assert result.exit_code == 0, result.output
    assert json.loads(baseline.read_text())["schema"] == BASELINE_SCHEMA

    same = write_run(tmp_path / "runs", "same", good_scores())
    result = cli("regress", same, "--against", baseline)
    assert result.exit_code == 0, result.output
    assert "No regression" in result.output

    scores = good_scores()
    scores[(NIAH, K16)] = [0.0] * 9 + [0.0]
    worse = write_run(tmp_path / "runs", "worse", scores)
    result = cli("regress", worse, "--against", baseline)
    assert result.exit_code == 1
    assert "Regressions against the baseline" in result.output
    row = next(line for line in result.output.splitlines() if NIAH in line)
    for text in ("16K", "90.0", "0.0", "-90.0", "0.00391"):  # p = 2 / 2**9
        assert text in row
    assert "suite average" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("Error: 3 regressions against")

    other = write_run(tmp_path / "runs", "other", {cell: [100.0] * 10 for cell in CELLS[:2]})
    result = cli("regress", other, "--against", baseline)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: the run's tasks differ")
