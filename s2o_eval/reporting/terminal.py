"""Rich tables for the terminal: what ``compare``, ``report`` and ``regress`` print at the end."""

from __future__ import annotations

from rich.table import Table

from ..suites import ctx_label
from .build import ReportContent
from .regress import AverageCheck, Verdict


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def suite_averages_table(content: ReportContent) -> Table:
    """Suite average per length for each run, deltas against the baseline when there are several."""
    compare = len(content.runs) > 1
    table = Table(title="Suite average score (0-100) per context length")
    table.add_column("run")
    for c in content.lengths:
        table.add_column(ctx_label(c), justify="right")
    table.add_column("Avg", justify="right")
    for row in content.averages:
        cells = []
        for c in content.lengths:
            text = _num(row["ctx_avg"].get(c))
            if compare and row["label"] != content.baseline and row["delta"].get(c) is not None:
                text += f" ({row['delta'][c]:+.1f})"
            cells.append(text)
        overall = _num(row["overall"])
        if compare and row["label"] != content.baseline and row["overall_delta"] is not None:
            overall += f" ({row['overall_delta']:+.1f})"
        table.add_row(row["label"], *cells, overall)
    return table


def prefill_table(content: ReportContent) -> Table:
    compare = len(content.runs) > 1
    table = Table(title="Prefill time per prompt (ms)")
    for name in ("length", "run", "mean", "p50", "p90"):
        table.add_column(name, justify="left" if name in ("length", "run") else "right")
    if compare:
        table.add_column(f"speedup vs {content.baseline}", justify="right")
    for row in content.prefill:
        cells = [ctx_label(row["ctx"]), row["label"], _num(row["mean"]), _num(row["p50"]), _num(row["p90"])]
        if compare:
            cells.append(_num(row["speedup"], "{:.2f}x"))
        table.add_row(*cells)
    return table


def _where(check) -> tuple[str, str]:
    if isinstance(check, AverageCheck):
        return "suite average", "all" if check.ctx is None else ctx_label(check.ctx)
    return check.task, ctx_label(check.ctx)


def verdict_table(verdict: Verdict, only_regressions: bool) -> Table:
    """The suite averages and cells (or only the regressions): baseline, now, delta, p."""
    title = "Regressions against the baseline" if only_regressions else "Run against the baseline"
    table = Table(title=title)
    for name in ("task", "length", "baseline", "now", "delta", "p"):
        table.add_column(name, justify="left" if name in ("task", "length") else "right")
    checks = verdict.regressions if only_regressions else [*verdict.averages, *verdict.cells]
    for check in checks:
        task, length = _where(check)
        p = "-" if isinstance(check, AverageCheck) else f"{check.p:.3g}"
        style = "red" if check.regressed else None
        table.add_row(task, length, _num(check.baseline), _num(check.now), f"{check.delta:+.1f}", p, style=style)
    return table
