"""Assemble a report directory: tables from the runs' samples, PNG plots, report.md, and a copy of each
run's summary.json (``<label>.summary.json``), so that every number can be traced to what its run recorded."""

from __future__ import annotations

import json
from pathlib import Path

from . import markdown, plots, tables
from .content import ReportContent
from .runs import LoadedRun, restrict_to_common, summary_to_copy
from .sweep import find_sweep

PLOT_FILES = {
    "scores": "score_vs_ctx.png",
    "prefill": "prefill_vs_ctx.png",
    "speedup": "speedup_vs_ctx.png",
    "density": "density_vs_ctx.png",
}


def compute(runs: list[LoadedRun], title: str) -> ReportContent:
    """All tables of a report over ``runs`` (the first is the baseline), on their common samples."""
    restricted, warnings = restrict_to_common(runs)
    absent: dict[tuple[str, ...], list[str]] = {}  # tasks asked for but never run -> the runs
    for run in runs:
        missing = tuple(sorted(set(run.config.get("tasks") or []) - {r["task"] for r in run.samples}))
        if missing:
            absent.setdefault(missing, []).append(run.label)
    for missing, labels in absent.items():
        who = "every run" if len(labels) == len(runs) > 1 else ", ".join(labels)
        warnings.append(f"{who}: no samples of {', '.join(missing)}, skipped when it ran (its data unavailable "
                        "offline, or the window too small; the run's log said which)")
    by_label = {r.label: r.samples for r in restricted}
    return ReportContent(
        title=title,
        runs=restricted,
        warnings=warnings,
        lengths=tables.context_lengths(by_label),
        cells=tables.score_cells(by_label),
        suites={label: tables.suite_table(samples) for label, samples in by_label.items()},
        averages=tables.suite_averages(by_label),
        prefill=tables.prefill_by_ctx(by_label),
        density=tables.density_by_ctx(by_label),
        chunks=tables.chunk_rows(by_label, {r.label: r.prefill_chunk for r in restricted}),
        groups={label: tables.group_results(samples) for label, samples in by_label.items()},
        environment=tables.environment_rows({r.label: r.config for r in restricted},
                                            {r.label: r.env for r in restricted}),
        sweep=find_sweep(restricted) if len(restricted) > 2 else None,
    )


def _draw(content: ReportContent, out_dir: Path) -> None:
    labels = [r.label for r in content.runs]  # fixes each run's colour across figures
    content.plots["scores"] = plots.plot_scores(content.averages, out_dir / PLOT_FILES["scores"]).name
    if content.prefill:
        path = plots.plot_prefill(content.prefill, out_dir / PLOT_FILES["prefill"], labels)
        content.plots["prefill"] = path.name
        if len(content.runs) > 1 and any(r["label"] != content.baseline and r["speedup"] for r in content.prefill):
            path = plots.plot_speedup(content.prefill, content.baseline, out_dir / PLOT_FILES["speedup"], labels)
            content.plots["speedup"] = path.name
    if content.density:
        path = plots.plot_density(content.density, out_dir / PLOT_FILES["density"], labels)
        content.plots["density"] = path.name


def write_report(runs: list[LoadedRun], out_dir: Path, title: str) -> tuple[Path, ReportContent]:
    """Write ``out_dir/report.md`` with its plots and the runs' summaries; returns its path and content.
    Files of an earlier report in the same directory are replaced (a report is recomputed from data)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    content = compute(runs, title)
    for name in PLOT_FILES.values():  # a plot this report does not draw must not linger from the last one
        (out_dir / name).unlink(missing_ok=True)
    _draw(content, out_dir)
    for run in runs:  # the full, unrestricted summaries: what each run itself recorded
        name = f"{run.label}.summary.json"
        with open(out_dir / name, "w") as fh:
            json.dump(summary_to_copy(run), fh, indent=2, default=str)
            fh.write("\n")
        content.summaries[run.label] = name
    report = out_dir / "report.md"
    report.write_text(markdown.render(content))
    return report, content
