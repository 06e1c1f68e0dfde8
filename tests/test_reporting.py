"""Reports from stored runs: table values, common-sample restriction, warnings, plots, and the
`compare` / `report` commands, on run directories built from known numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2o_eval.errors import NotComparable, UserError
from s2o_eval.reporting import tables
from s2o_eval.reporting.runs import load_runs, resolve_run, restrict_to_common
from s2o_eval.reporting.stats import wilson_interval
from s2o_eval.run.rundir import RunDir

NIAH, VT = "s2o_ruler_niah_single_1", "s2o_ruler_vt"
K4, K16 = 4096, 16384
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, name: str, method: str, scores: dict, *, resolved: str | None = None,
              prefill: dict | None = None, density: dict | None = None, model: str = "gemma-3-270m",
              gpu: str = "NVIDIA H100 80GB HBM3", method_args: dict | None = None) -> RunDir:
    """A run directory whose samples carry the given per-sample numbers.

    ``scores`` / ``prefill`` / ``density``: ``{(task, ctx): [value of sample 0, 1, ...]}``."""
    run = RunDir(root / name)
    run.write_config({"model": model, "method": method, "method_resolved": resolved or method,
                      "method_args": method_args or ({"tau": 0.01} if density else {}), "tasks": sorted({t for t, _ in scores}),
                      "ctx": sorted({c for _, c in scores}), "limit": None, "seed": 0})
    run.write_env({"gpu": gpu, "driver": "580.65", "cuda": "13.0",
                   "versions": {"torch": "2.11.0", "triton": "3.6.0"}})
    for (task, ctx), values in scores.items():
        for index, score in enumerate(values):
            run.append_sample({
                "task": task, "ctx": ctx, "index": index, "score": score,
                "prefill_ms": prefill[(task, ctx)][index] if prefill else None,
                "density": density[(task, ctx)][index] if density else None,
            })
    run.write_summary()
    return run


def by_label(runs):
    return {r.label: r.samples for r in runs}


# -- tables -------------------------------------------------------------------------------------

def test_wilson_interval_matches_textbook_values():
    lo, hi = wilson_interval(50.0, 10)
    assert lo == pytest.approx(23.66, abs=0.01) and hi == pytest.approx(76.34, abs=0.01)
    lo, hi = wilson_interval(100.0, 10)
    assert lo == pytest.approx(72.25, abs=0.01) and hi == pytest.approx(100.0)
    assert wilson_interval(70.0, 0) == (0.0, 100.0)


def test_score_cells_give_scores_deltas_counts_and_noise_marks():
    runs = {
        "fa3": [{"task": NIAH, "ctx": K4, "index": i, "score": 100.0} for i in range(10)]
               + [{"task": NIAH, "ctx": K16, "index": i, "score": 100.0 if i < 8 else 0.0} for i in range(10)],
        "s2o": [{"task": NIAH, "ctx": K4, "index": i, "score": 100.0 if i < 5 else 0.0} for i in range(10)]
               + [{"task": NIAH, "ctx": K16, "index": i, "score": 100.0 if i < 7 else 0.0} for i in range(10)],
    }
    rows = {(r["task"], r["ctx"]): r for r in tables.score_cells(runs)}
    collapse, wobble = rows[(NIAH, K4)], rows[(NIAH, K16)]
    assert collapse["score"] == {"fa3": 100.0, "s2o": 50.0}
    assert collapse["n"] == {"fa3": 10, "s2o": 10}
    assert collapse["delta"] == {"s2o": -50.0}
    assert collapse["beyond_noise"] == {"s2o": True}  # 50 lies far below 100's interval (72.2-100)
    assert wobble["delta"]["s2o"] == pytest.approx(-10.0)
    assert wobble["beyond_noise"] == {"s2o": False}  # 70 lies inside 80's interval (49-94)
    assert "fa3" not in collapse["delta"]


def test_suite_table_is_rulers_layout_with_averages():
    samples = ([{"task": NIAH, "ctx": K4, "index": i, "score": s} for i, s in enumerate([100, 100, 100, 0])]
               + [{"task": NIAH, "ctx": K16, "index": i, "score": s} for i, s in enumerate([100, 0])]
               + [{"task": VT, "ctx": K4, "index": i, "score": s} for i, s in enumerate([50, 50])]
               + [{"task": VT, "ctx": K16, "index": i, "score": s} for i, s in enumerate([20, 40])])
    table = tables.suite_table(samples)
    assert table["tasks"] == [NIAH, VT] and table["ctx"] == [K4, K16]
    assert table["scores"][NIAH] == {K4: 75.0, K16: 50.0}
    assert table["scores"][VT] == {K4: 50.0, K16: 30.0}
    assert table["task_avg"] == {NIAH: 62.5, VT: 40.0}
    assert table["ctx_avg"] == {K4: 62.5, K16: 40.0}  # the mean over tasks, not over samples
    assert table["overall"] == pytest.approx(51.25)


def test_suite_table_averages_only_the_tasks_measured_at_a_length():
    samples = [{"task": NIAH, "ctx": K4, "index": 0, "score": 80.0},
               {"task": VT, "ctx": K4, "index": 0, "score": 40.0},
               {"task": NIAH, "ctx": K16, "index": 0, "score": 20.0}]
    table = tables.suite_table(samples)
    assert table["ctx_avg"] == {K4: 60.0, K16: 20.0}
    assert K16 not in table["scores"][VT]


def test_suite_averages_carry_deltas_against_the_first_run():
    fa3 = [{"task": NIAH, "ctx": c, "index": 0, "score": s} for c, s in ((K4, 100.0), (K16, 80.0))]
    s2o = [{"task": NIAH, "ctx": c, "index": 0, "score": s} for c, s in ((K4, 90.0), (K16, 80.0))]
    base, other = tables.suite_averages({"fa3": fa3, "s2o": s2o})
    assert base["delta"] == {K4: 0.0, K16: 0.0}
    assert other["ctx_avg"] == {K4: 90.0, K16: 80.0}
    assert other["delta"] == {K4: -10.0, K16: 0.0}
    assert other["overall"] == 85.0 and other["overall_delta"] == -5.0


def test_prefill_statistics_pool_tasks_and_give_speedup_against_the_baseline():
    def timed(task, ctx, values):
        return [{"task": task, "ctx": ctx, "index": i, "score": 100.0, "prefill_ms": v} for i, v in enumerate(values)]

    runs = {
        "fa3": timed(NIAH, K16, [10.0, 20.0]) + timed(VT, K16, [30.0, 40.0]) + timed(NIAH, K4, [2.0]),
        "s2o": timed(NIAH, K16, [5.0, 5.0]) + timed(VT, K16, [5.0, None]) + timed(NIAH, K4, [4.0]),
    }
    rows = {(r["label"], r["ctx"]): r for r in tables.prefill_by_ctx(runs)}
    base = rows[("fa3", K16)]
    assert (base["n"], base["mean"], base["p50"], base["p90"]) == (4, 25.0, 25.0, pytest.approx(37.0))
    assert base["speedup"] == pytest.approx(1.0)
    sparse = rows[("s2o", K16)]
    assert sparse["n"] == 3  # the sample without a timing is not counted
    assert sparse["mean"] == 5.0 and sparse["speedup"] == pytest.approx(5.0)
    assert rows[("s2o", K4)]["speedup"] == pytest.approx(0.5)  # slower than the baseline at 4K


def test_density_rows_only_for_runs_that_recorded_density():
    runs = {
        "fa3": [{"task": NIAH, "ctx": K16, "index": 0, "score": 100.0, "density": None}],
        "s2o": [{"task": NIAH, "ctx": K16, "index": 0, "score": 100.0, "density": 0.2, "rel_l2": 0.01},
                {"task": NIAH, "ctx": K16, "index": 1, "score": 100.0, "density": 0.4, "rel_l2": 0.03},
                {"task": VT, "ctx": K16, "index": 0, "score": 100.0, "density": 0.6}],
    }
    (row,) = tables.density_by_ctx(runs)
    assert row["label"] == "s2o" and row["ctx"] == K16
    assert row["density"] == pytest.approx(0.4)  # mean over the three samples
    assert (row["task_min"], row["task_max"]) == (pytest.approx(0.3), pytest.approx(0.6))
    assert row["rel_l2"] == pytest.approx(0.02)


def test_environment_rows_flatten_and_mark_differences():
    rows = tables.environment_rows(
        {"fa3": {"method": "dense", "method_args": {}}, "s2o": {"method": "s2o", "method_args": {"tau": 0.01}}},
        {label: {"gpu": "H100", "versions": {"torch": "2.11.0"}} for label in ("fa3", "s2o")},
    )
    found = {(r["source"], r["field"]): r for r in rows}
    assert found[("config", "method")]["differs"] is True
    assert found[("config", "method_args.tau")]["values"] == {"fa3": "-", "s2o": "0.01"}
    assert found[("env", "versions.torch")]["differs"] is False
    assert ("config", "method_args") not in found  # empty in both runs: left out


# -- runs: resolution, labels, common samples ---------------------------------------------------

def test_method_names_resolve_to_the_newest_matching_run(tmp_path):
    scores = {(NIAH, K4): [100.0]}
    old_s2o = write_run(tmp_path, "old-s2o", "s2o", scores)
    new_s2o = write_run(tmp_path, "new-s2o", "s2o", scores)
    asked_dense = write_run(tmp_path, "asked-dense", "dense", scores, resolved="fa3")
    newer_fa2 = write_run(tmp_path, "newer-fa2", "fa2", scores)
    for age, run in enumerate([newer_fa2, new_s2o, asked_dense, old_s2o]):  # newest first
        os.utime(run.samples_path, (1e9 - age * 100, 1e9 - age * 100))
    assert resolve_run("s2o", tmp_path) == new_s2o.path
    assert resolve_run("fa3", tmp_path) == asked_dense.path  # the resolved method matches too
    assert resolve_run("dense", tmp_path) == asked_dense.path  # a run that asked for dense wins
    assert resolve_run(str(old_s2o.path), tmp_path) == old_s2o.path
    with pytest.raises(UserError, match="neither a run directory nor a method"):
        resolve_run("flexprefill", tmp_path)


def test_dense_falls_back_to_the_newest_run_of_a_dense_method(tmp_path):
    scores = {(NIAH, K4): [100.0]}
    older = write_run(tmp_path, "cudnn-run", "cudnn", scores)
    newer = write_run(tmp_path, "fa2-run", "fa2", scores)
    write_run(tmp_path, "s2o-run", "s2o", scores)
    os.utime(older.samples_path, (1e9, 1e9))
    os.utime(newer.samples_path, (1e9 + 10, 1e9 + 10))
    assert resolve_run("dense", tmp_path) == newer.path


def test_runs_of_one_method_get_distinct_labels(tmp_path):
    scores = {(NIAH, K4): [100.0]}
    a = write_run(tmp_path, "a", "s2o", scores)
    b = write_run(tmp_path, "b", "s2o", scores)
    labels = [r.label for r in load_runs([str(a.path), str(b.path)], tmp_path)]
    assert labels == ["s2o-a", "s2o-b"]


def test_only_common_samples_are_compared_with_warnings(tmp_path):
    base = write_run(tmp_path, "base", "fa3", {(NIAH, K4): [100.0, 100.0, 0.0], (VT, K4): [100.0]})
    other = write_run(tmp_path, "other", "s2o", {(NIAH, K4): [0.0, 100.0]})
    runs = load_runs([str(base.path), str(other.path)], tmp_path)
    restricted, warnings = restrict_to_common(runs)
    keys = [sorted((s["task"], s["index"]) for s in r.samples) for r in restricted]
    assert keys == [[(NIAH, 0), (NIAH, 1)]] * 2
    text = "\n".join(warnings)
    assert "different tasks" in text
    assert "only the 2 samples common to all" in text
    assert tables.suite_table(restricted[0].samples)["ctx_avg"] == {K4: 100.0}  # index 2 (a 0) dropped


def test_runs_of_different_models_are_not_comparable(tmp_path):
    base = write_run(tmp_path, "base", "fa3", {(NIAH, K4): [100.0, 100.0]})
    other = write_run(tmp_path, "other", "s2o", {(NIAH, K4): [0.0, 100.0]}, model="llama-3.1-8b")
    with pytest.raises(NotComparable, match="different models .*llama-3.1-8b"):
        restrict_to_common(load_runs([str(base.path), str(other.path)], tmp_path))


def test_runs_without_a_shared_sample_are_not_comparable(tmp_path):
    a = write_run(tmp_path, "a", "fa3", {(NIAH, K4): [100.0]})
    b = write_run(tmp_path, "b", "s2o", {(NIAH, K16): [100.0]})
    with pytest.raises(NotComparable):
        restrict_to_common(load_runs([str(a.path), str(b.path)], tmp_path))


# -- commands -----------------------------------------------------------------------------------

@pytest.fixture
def cli():
    from s2o_eval.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) > 1024, f"{path.name} is suspiciously small"


@pytest.fixture
def dense_and_s2o(tmp_path):
    """A dense run and an s2o run over the same 2 tasks x 2 lengths, plus one sample only s2o has."""
    runs_dir = tmp_path / "runs"
    cells = [(NIAH, K4), (NIAH, K16), (VT, K4), (VT, K16)]
    dense_scores = {cell: [100.0] * 10 for cell in cells}
    s2o_scores = {cell: [100.0] * 10 for cell in cells}
    s2o_scores[(VT, K16)] = [100.0] * 4 + [0.0] * 6
    s2o_scores[(NIAH, K4)] = [100.0] * 11  # index 10 exists only here
    dense_ms = {cell: [float(c // 1024)] * 10 for cell, c in zip(cells, [K4, K16, K4, K16])}
    s2o_ms = {cell: [v / (1 if cell[1] == K4 else 4) for v in dense_ms[cell]] for cell in cells}
    s2o_ms[(NIAH, K4)] = s2o_ms[(NIAH, K4)] + [1.0]
    density = {cell: [0.5 if cell[1] == K4 else 0.25] * len(s2o_scores[cell]) for cell in cells}
    write_run(runs_dir, "gemma-fa3-x", "dense", dense_scores, resolved="fa3", prefill=dense_ms)
    write_run(runs_dir, "gemma-s2o-y", "s2o", s2o_scores, prefill=s2o_ms, density=density)
    return runs_dir


def test_compare_writes_report_plots_and_summaries(cli, dense_and_s2o, tmp_path):
    out = tmp_path / "report"
    result = cli("compare", "dense", "s2o", "--runs-dir", dense_and_s2o, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Report:" in result.output
    text = (out / "report.md").read_text()
    assert "Baseline: **fa3**" in text
    assert "only the 40 samples common to all are compared" in text
    # the collapsed cell, with its delta marked as beyond the binomial noise
    assert f"| {VT} | 16K | 10 | 100.0 | 40.0 | **-60.0** |" in text
    assert f"| {VT} | 4K | 10 | 100.0 | 100.0 | +0.0 |" in text
    # suite averages: 16K falls from 100 to (100 + 40) / 2 = 70
    assert "| s2o | 100.0 (+0.0) | 70.0 (-30.0) | 85.0 (-15.0) |" in text
    # prefill: 16 ms at 16K for fa3, four times less for s2o; 4K timings pooled over 20 samples each
    assert "| 16K | fa3 | 20 | 16.0 | 16.0 | 16.0 | 1.00x |" in text
    assert "| 16K | s2o | 20 | 4.00 | 4.00 | 4.00 | 4.00x |" in text
    assert "| s2o | 4K | 0.500 | 0.500 | 0.500 |" in text
    assert "| **config.method** | dense | s2o |" in text
    for name in ("score_vs_ctx.png", "prefill_vs_ctx.png", "speedup_vs_ctx.png", "density_vs_ctx.png"):
        assert_png(out / name)
        assert f"]({name})" in text
    for label, run in (("fa3", "gemma-fa3-x"), ("s2o", "gemma-s2o-y")):
        copied = json.loads((out / f"{label}.summary.json").read_text())
        assert copied == json.loads((dense_and_s2o / run / "summary.json").read_text())


def test_compare_default_name_and_single_run_refusal(cli, dense_and_s2o, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("compare", "dense", "s2o", "--runs-dir", dense_and_s2o)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "fa3-vs-s2o" / "report.md").exists()
    result = cli("compare", "s2o", "--runs-dir", dense_and_s2o)
    assert result.exit_code == 4
    assert "Error: compare needs at least two runs" in result.output


def test_report_renders_one_run_without_deltas(cli, dense_and_s2o, tmp_path):
    out = tmp_path / "single"
    result = cli("report", "s2o", "--runs-dir", dense_and_s2o, "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "delta" not in text and "speedup" not in text and "Warning" not in text
    assert f"| {VT} | 100.0 | 40.0 | 70.0 |" in text  # RULER layout: 4K, 16K, Avg
    assert "| **average** | **100.0** | **70.0** | **85.0** |" in text
    for name in ("score_vs_ctx.png", "prefill_vs_ctx.png", "density_vs_ctx.png"):
        assert_png(out / name)
    assert not (out / "speedup_vs_ctx.png").exists()
    assert (out / "s2o.summary.json").exists()


def test_unknown_run_is_a_one_line_user_error(cli, tmp_path):
    result = cli("report", "flexprefill", "--runs-dir", tmp_path)
    assert result.exit_code == 4
    assert "Error: 'flexprefill' is neither a run directory nor a method" in result.output


def test_a_tau_sweep_is_judged_against_the_baseline_and_the_largest_safe_tau_chosen(cli, tmp_path):
    """Only cells the baseline passes count; a value passes when the mean paired delta stays within
    1 point and McNemar's test is not significant."""
    runs_dir = tmp_path / "runs"
    solid, failing = (NIAH, K4), (VT, K4)
    write_run(runs_dir, "fa2-run", "fa2", {solid: [100.0] * 20, failing: [0.0] * 20}, prefill=None)
    losses = {0.01: 8, 0.003: 1, 0.001: 0}  # failures the sparse run adds in the solid cell
    for tau, lost in losses.items():
        scores = {solid: [0.0] * lost + [100.0] * (20 - lost), failing: [100.0] * 20}  # gains there do not count
        density = {cell: [0.3] * 20 for cell in scores}
        write_run(runs_dir, f"s2o-{tau}", "s2o", scores, density=density, method_args={"tau": tau, "segment": 1024})
    out = tmp_path / "report"
    result = cli("compare", *(runs_dir / n for n in ["fa2-run", "s2o-0.01", "s2o-0.003", "s2o-0.001"]), "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "## Choosing s2o's tau" in text
    assert "| s2o-tau0.01 | 0.01 | 1 | 20 | -40.0 | 0.008 | no |" in text  # 8 discordant pairs: p = 2 / 2^8
    assert "| s2o-tau0.003 | 0.003 | 1 | 20 | -5.0 | 1.000 | no |" in text  # not significant, but 5 points
    assert "| s2o-tau0.001 | 0.001 | 1 | 20 | +0.0 | 1.000 | yes |" in text
    assert "**Chosen: tau = 0.001** (s2o-tau0.001)." in text


def test_an_unfinished_sweep_run_cannot_be_chosen(tmp_path):
    from s2o_eval.reporting.sweep import evaluate_sweep

    runs_dir = tmp_path / "runs"
    cell = (NIAH, K4)
    write_run(runs_dir, "fa2-run", "fa2", {cell: [100.0] * 10})
    write_run(runs_dir, "s2o-part", "s2o", {cell: [100.0] * 4}, density={cell: [0.3] * 4}, method_args={"tau": 0.1})
    baseline, partial = load_runs([str(runs_dir / "fa2-run"), str(runs_dir / "s2o-part")], runs_dir)
    (point,) = evaluate_sweep(baseline, [partial], "tau").points
    assert point.mean_delta == 0.0 and point.missing == 6 and not point.passed


def test_a_task_asked_for_but_never_run_is_named_in_the_report(cli, tmp_path):
    runs_dir = tmp_path / "runs"
    run = write_run(runs_dir, "fa2-run", "fa2", {(NIAH, K4): [100.0] * 3})
    config = run.config()
    run.write_config(dict(config, tasks=config["tasks"] + ["s2o_ruler_qa_1"]))
    result = cli("report", runs_dir / "fa2-run", "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "fa2: no samples of s2o_ruler_qa_1, skipped when it ran" in (tmp_path / "rep" / "report.md").read_text()
