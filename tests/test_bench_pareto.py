"""Bench Pareto fronts, matched comparisons, the two plots per workload x ctx, and re-rendering from JSON.

Hand-made records only (no method runs): every expected number below is worked out in a comment.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from s2o_eval.bench.markdown import render_markdown, render_report, write_markdown
from s2o_eval.bench.pareto import cost_at_error, error_at_cost, error_at_density_rows, pareto_front, s2o_vs_peers
from s2o_eval.bench.plots import write_plots
from s2o_eval.bench.records import add_ratios, write_records
from s2o_eval.cli import app
from s2o_eval.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(method, *, rel_l2, density=1.0, ms_total=10.0, dense=False, tau=None, ctx=1024):
    return {"name": "n", "workload": "w", "workload_kind": "capture", "workload_note": "real attention", "ctx": ctx,
            "device": "Test GPU", "versions": {"torch": "x"}, "reps": 1, "warmup": 0,
            "shape": {"B": 1, "Hq": 2, "Hkv": 1, "N": ctx, "D": 64, "dtype": "bfloat16"},
            "method": method, "dense": dense, "args": {} if tau is None else {"tau": tau},
            "sweep": None if tau is None else {"tau": tau}, "skipped": None, "note": None,
            "ms_plan": None if dense else 1.0, "ms_execute": ms_total if dense else ms_total - 1.0,
            "ms_total": ms_total, "density": density, "rel_l2": rel_l2, "mse": rel_l2 ** 2, "speedup": {}}


def _sweep(method, points):
    """points: (rel_l2, density, ms_total) per sweep point."""
    return [_record(method, rel_l2=e, density=d, ms_total=t, tau=str(i)) for i, (e, d, t) in enumerate(points)]


def peer_records(ctx=1024):
    records = [_record("fa2", rel_l2=0.002, ms_total=100.0, dense=True, ctx=ctx),
               _record("fa3", rel_l2=0.002, ms_total=50.0, dense=True, ctx=ctx)]
    records += _sweep("s2o", [(0.01, 0.1, 20.0), (0.04, 0.05, 12.0)])
    records += _sweep("pbs", [(0.01, 0.4, 60.0), (0.04, 0.2, 35.0), (0.08, 0.1, 25.0)])
    records += _sweep("xattention", [(0.01, 0.5, 70.0), (0.04, 0.3, 40.0)])
    records += _sweep("token_oracle", [(0.01, 0.02, 90.0), (0.04, 0.01, 80.0)])  # beats S2O, but an oracle
    for record in records:
        record["ctx"] = ctx
        record["shape"]["N"] = ctx
    add_ratios(records)
    return records


# ------------------------------------------------------------------------------------ pure functions

def test_front_keeps_only_undominated_points_sorted_by_error():
    points = [(0.1, 0.05), (0.03, 0.3), (0.005, 0.5), (0.02, 0.2), (0.02, 0.25), (float("nan"), 0.01),
              (0.005, 0.5)]
    # (0.03, 0.3) and (0.02, 0.25) are beaten by (0.02, 0.2); NaN is dropped; the duplicate kept once
    assert pareto_front(points) == [(0.005, 0.5), (0.02, 0.2), (0.1, 0.05)]
    assert pareto_front([(0.1, 0.2), (0.1, 0.2)]) == [(0.1, 0.2)]
    assert pareto_front([]) == []


def test_interpolation_on_the_front_never_extrapolates():
    front = pareto_front([(0.1, 0.05), (0.005, 0.5), (0.02, 0.2), (0.03, 0.3)])
    assert cost_at_error(front, 0.01) == pytest.approx(0.5 + (0.005 / 0.015) * (0.2 - 0.5))  # 0.4
    assert cost_at_error(front, 0.02) == pytest.approx(0.2)
    assert cost_at_error(front, 0.03) == pytest.approx(0.2 + (0.01 / 0.08) * (0.05 - 0.2))  # not the dominated 0.3
    assert cost_at_error(front, 0.2) is None and cost_at_error(front, 0.001) is None
    assert error_at_cost(front, 0.1) == pytest.approx(0.1 + (0.05 / 0.15) * (0.02 - 0.1))
    assert error_at_cost(front, 0.03) is None and error_at_cost(front, 0.6) is None
    assert cost_at_error([(0.02, 0.3)], 0.02) == 0.3 and cost_at_error([(0.02, 0.3)], 0.03) is None


def test_error_at_matched_density_and_ratio_to_s2o():
    rows = {(r["method"], r["density"]): r for r in error_at_density_rows(peer_records())}
    assert rows[("s2o", 0.1)]["rel_l2"] == pytest.approx(0.01) and rows[("s2o", 0.1)]["vs_s2o"] == pytest.approx(1.0)
    assert rows[("pbs", 0.1)]["rel_l2"] == pytest.approx(0.08) and rows[("pbs", 0.1)]["vs_s2o"] == pytest.approx(8.0)
    assert rows[("pbs", 0.3)]["rel_l2"] == pytest.approx(0.025)  # halfway between (0.04, 0.2) and (0.01, 0.4)
    assert rows[("pbs", 0.3)]["vs_s2o"] is None  # S2O's sweep spans densities 0.05 to 0.1 only
    assert rows[("xattention", 0.1)]["rel_l2"] is None and rows[("xattention", 0.1)]["density_range"] == (0.3, 0.5)
    assert not any(r["method"] in ("fa2", "fa3") for r in rows.values())


def test_s2o_against_the_best_non_oracle_peer():
    rows = {(r["matched"], r["target"]): r for r in s2o_vs_peers(peer_records(), (0.01, 0.03, 0.08))}
    at_1 = rows[("error", 0.01)]
    assert at_1["s2o"] == pytest.approx(0.1) and at_1["peer"] == "pbs" and at_1["peer_value"] == pytest.approx(0.4)
    assert at_1["lower"] == pytest.approx(4.0)  # the oracle's 0.02 is not a peer; xattention's 0.5 is worse
    at_3 = rows[("error", 0.03)]  # s2o 0.1 - (2/3) 0.05, pbs 0.4 - (2/3) 0.2
    assert at_3["lower"] == pytest.approx((0.4 - 0.2 * 2 / 3) / (0.1 - 0.05 * 2 / 3))
    assert rows[("error", 0.08)]["s2o"] is None and rows[("error", 0.08)]["lower"] is None
    at_density = rows[("density", 0.1)]
    assert at_density["peer"] == "pbs" and at_density["lower"] == pytest.approx(8.0)
    assert rows[("density", 0.3)]["lower"] is None  # S2O does not reach density 0.3
    without_peers = [r for r in peer_records() if r["method"] in ("fa2", "s2o", "token_oracle")]
    assert all(r["peer"] is None and r["lower"] is None for r in s2o_vs_peers(without_peers, (0.01,)))


# ------------------------------------------------------------------------------------ report

def test_markdown_tables_and_plot_links(tmp_path):
    records = peer_records(1024) + peer_records(2048)
    path = write_markdown(tmp_path / "n.md", records)
    text = path.read_text()
    assert "## Error at matched density" in text and "## S2O vs the best non-oracle peer" in text
    assert "| w | 1K | 0.10 | pbs | 8.00e-02 | 8.00x |" in text
    assert "| w | 1K | 0.10 | xattention | not reached (sweep: 0.300 to 0.500) | - |" in text
    assert "| w | 1K | rel L2 1% | 0.100 | pbs | 0.400 | 4.00x lower density |" in text
    assert "| w | 2K | density 0.10 | 1.00e-02 | pbs | 8.00e-02 | 8.00x lower error |" in text
    for ctx in ("1k", "2k"):
        for kind in ("error-density", "time-error"):
            name = f"n-w-{ctx}-{kind}.png"
            assert f"]({name})" in text
            data = (tmp_path / name).read_bytes()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 1024


def test_a_method_whose_outputs_hold_nan_stays_off_the_fronts(tmp_path):
    records = peer_records() + _sweep("flexprefill", [(float("nan"), 0.3, 30.0), (float("nan"), 0.2, 20.0)])
    text = write_markdown(tmp_path / "nan.md", records).read_text()  # tables and plots still render
    assert "| w | 1K | 0.10 | flexprefill |" not in text
    assert "| w | 1K | 0.10 | pbs | 8.00e-02 | 8.00x |" in text


def test_plots_need_two_sweep_points():
    one_point = [_record("fa2", rel_l2=0.002, dense=True), *_sweep("s2o", [(0.01, 0.1, 20.0)])]
    assert write_plots(one_point, "/nonexistent-never-written", "n") == {}
    assert "](n-w-1k-" not in render_markdown(one_point)


def test_rerender_from_json_without_running(tmp_path):
    records = peer_records()
    json_path = write_records(tmp_path / "stored" / "run.json", records)
    markdown = render_report(json_path, tmp_path / "again")
    assert markdown == tmp_path / "again" / "run.md"
    assert markdown.read_text() == render_markdown(records, {("w", 1024): {
        "error-density": "run-w-1k-error-density.png", "time-error": "run-w-1k-time-error.png"}})
    assert (tmp_path / "again" / "run-w-1k-time-error.png").read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (tmp_path / "stored").iterdir()) == ["run.json"]  # the source is left alone

    result = CliRunner().invoke(app, ["bench", "--render", str(json_path), "--out-dir", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "run.md").read_text() == markdown.read_text()

    (tmp_path / "bad.json").write_text(json.dumps({"not": "records"}))
    for bad in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(UserError):
            render_report(bad, tmp_path)
