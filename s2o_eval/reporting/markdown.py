"""Markdown rendering of a report's tables (computed in ``tables``, assembled in ``build``)."""

from __future__ import annotations

from typing import Any, Iterable

from ..formatting import ctx_label, fmt_delta, fmt_ms, fmt_num, fmt_ratio
from .content import ReportContent


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: Iterable[list[Any]], align_right_from: int = 1) -> str:
    """A GitHub markdown table; columns from ``align_right_from`` on are right-aligned (numbers)."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" if i < align_right_from else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _runs_section(content: ReportContent) -> str:
    rows = []
    for i, run in enumerate(content.runs):
        requested, resolved = run.config.get("method"), run.config.get("method_resolved")
        method = requested if resolved in (None, requested) else f"{requested} -> {resolved}"
        role = "baseline" if i == 0 and len(content.runs) > 1 else ""
        rows.append([run.label, role, method, run.model, run.env.get("gpu") or run.env.get("device") or "-",
                     f"`{run.path}`", len(run.samples)])
    return table(["run", "role", "method", "model", "device", "directory", "samples"], rows, align_right_from=6)


def _suite_averages_section(content: ReportContent) -> str:
    lengths = content.lengths
    compare = len(content.runs) > 1
    rows = []
    for row in content.averages:
        cells = []
        for c in lengths:
            value = fmt_num(row["ctx_avg"].get(c))
            if compare and row["label"] != content.baseline and row["delta"].get(c) is not None:
                value += f" ({fmt_delta(row['delta'][c])})"
            cells.append(value)
        overall = fmt_num(row["overall"])
        if compare and row["label"] != content.baseline and row["overall_delta"] is not None:
            overall += f" ({fmt_delta(row['overall_delta'])})"
        rows.append([row["label"], *cells, overall])
    return table(["run", *[ctx_label(c) for c in lengths], "Avg"], rows)


def _suite_table_section(content: ReportContent, label: str) -> str:
    """RULER's layout: tasks as rows, lengths as columns, an average row; deltas against the baseline
    in brackets, bold where they leave the baseline's binomial interval."""
    suite = content.suites[label]
    cells = {(r["task"], r["ctx"]): r for r in content.cells}
    show_delta = len(content.runs) > 1 and label != content.baseline
    rows = []
    for task in suite["tasks"]:
        row = [task]
        for c in suite["ctx"]:
            value = fmt_num(suite["scores"][task].get(c))
            cell = cells.get((task, c))
            if show_delta and cell is not None and cell["delta"].get(label) is not None:
                value += f" ({fmt_delta(cell['delta'][label], cell['beyond_noise'][label])})"
            row.append(value)
        row.append(fmt_num(suite["task_avg"][task]))
        rows.append(row)
    rows.append(["**average**", *[f"**{fmt_num(suite['ctx_avg'][c])}**" for c in suite["ctx"]],
                 f"**{fmt_num(suite['overall'])}**"])
    return table(["task", *[ctx_label(c) for c in suite["ctx"]], "Avg"], rows)


def _cells_section(content: ReportContent) -> str:
    labels = [r.label for r in content.runs]
    others = labels[1:]
    header = ["task", "length", "n", *labels, *[f"delta {o}" for o in others]]
    if others:
        header.append(f"{content.baseline} 95% interval")
    rows = []
    for cell in content.cells:
        counts = sorted(set(cell["n"].values()))
        row = [cell["task"], ctx_label(cell["ctx"]), "/".join(str(n) for n in counts),
               *[fmt_num(cell["score"][label]) for label in labels],
               *[fmt_delta(cell["delta"].get(o), cell["beyond_noise"].get(o, False)) for o in others]]
        if others:
            lo, hi = cell["interval"] or (None, None)
            row.append(f"{fmt_num(lo)}-{fmt_num(hi)}" if lo is not None else "-")
        rows.append(row)
    return table(header, rows, align_right_from=2)


def _prefill_section(content: ReportContent) -> str:
    compare = len(content.runs) > 1
    header = ["length", "run", "timed samples", "mean ms", "p50 ms", "p90 ms"]
    if compare:
        header.append(f"speedup vs {content.baseline}")
    rows = []
    for row in content.prefill:
        line = [ctx_label(row["ctx"]), row["label"], row["n"], *(fmt_ms(row[k]) for k in ("mean", "p50", "p90"))]
        if compare:
            line.append(fmt_ratio(row["speedup"]))
        rows.append(line)
    return table(header, rows, align_right_from=2)


def _density_section(content: ReportContent) -> str:
    with_error = any(r["rel_l2"] is not None for r in content.density)
    header = ["run", "length", "density (mean)", "lowest task", "highest task"]
    if with_error:
        header.append("operator rel. L2 error")
    rows = []
    for row in content.density:
        line = [row["label"], ctx_label(row["ctx"]), fmt_num(row["density"], ".3f"),
                fmt_num(row["task_min"], ".3f"), fmt_num(row["task_max"], ".3f")]
        if with_error:
            line.append(fmt_num(row["rel_l2"], ".2e"))
        rows.append(line)
    return table(header, rows, align_right_from=2)


def _chunks_section(content: ReportContent) -> str:
    rows = []
    for row in content.chunks:
        chunk = "whole" if row["chunk"] is None else row["chunk"]
        rows.append([ctx_label(row["ctx"]), row["label"], chunk, row["offset"], fmt_num(row["queries"], ".0f"),
                     row["n"], fmt_ms(row["ms"]), fmt_num(row["density"], ".3f")])
    return table(["length", "run", "chunk", "queries at", "queries (mean)", "samples", "mean ms", "density"], rows,
                 align_right_from=2)


def _groups_section(content: ReportContent) -> str:
    labels = [r.label for r in content.runs]
    keys = sorted({k for groups in content.groups.values() for k in groups})
    rows = []
    for task, group, ctx in keys:
        cells = [content.groups[label].get((task, group, ctx)) for label in labels]
        n = "/".join(str(n) for n in sorted({c["n"] for c in cells if c}))
        rows.append([task, group, ctx_label(ctx), n, *[fmt_num(c["score"]) if c else "-" for c in cells]])
    return table(["task", "group", "length", "n", *labels], rows, align_right_from=3)


def _environment_section(content: ReportContent) -> str:
    labels = [r.label for r in content.runs]
    rows = []
    for row in content.environment:
        name = f"{row['source']}.{row['field']}"
        if row["differs"]:
            name = f"**{name}**"
        rows.append([name, *[row["values"][label] for label in labels]])
    return table(["field", *labels], rows, align_right_from=len(labels) + 1)


def _sweep_section(content: ReportContent) -> list[str]:
    from .sweep import ALPHA, MAX_MEAN_DELTA, MIN_BASELINE_SCORE

    sweep = content.sweep
    rows = [[p.label, p.value, p.cells, p.samples, fmt_delta(p.mean_delta), fmt_num(p.p_value, ".3f"),
             "yes" if p.passed else ("unfinished" if p.missing else "no")] for p in sweep.points]
    chosen = sweep.chosen
    verdict = (f"**Chosen: {sweep.parameter} = {chosen.value}** ({chosen.label})." if chosen else
               f"**No value passes**: every {sweep.parameter} tried costs accuracy; sweep lower.")
    return [f"## Choosing {sweep.method}'s {sweep.parameter}", "",
            f"Over the cells where {content.baseline} scores >= {MIN_BASELINE_SCORE:g}, each run's paired score "
            f"difference from {content.baseline} (same samples); a value passes when the mean stays within "
            f"{MAX_MEAN_DELTA:g} point and the paired test (exact McNemar on pass/fail scores, else permutation) "
            f"gives p >= {ALPHA}. The largest passing value is chosen.", "",
            table([sweep.parameter + " run", sweep.parameter, "cells", "samples", "mean delta", "p", "passes"], rows,
                  align_right_from=1), "", verdict, ""]


def _image(content: ReportContent, key: str, alt: str) -> str:
    name = content.plots.get(key)
    return f"![{alt}]({name})\n" if name else ""


def render(content: ReportContent) -> str:
    """The whole report.md text."""
    compare = len(content.runs) > 1
    out: list[str] = [f"# {content.title}", ""]
    if compare:
        out += [f"Computed from the stored run files alone. Baseline: **{content.baseline}** (the first run); "
                "deltas and speedups are against it. Scores are 0-100.", ""]
    else:
        out += ["Computed from the stored run files alone. Scores are 0-100.", ""]
    for warning in content.warnings:
        out += [f"> **Warning:** {warning}", ""]
    out += ["## Runs", "", _runs_section(content), ""]
    out += ["## Suite average per context length", "", _suite_averages_section(content), "",
            _image(content, "scores", "score vs context length")]
    out += ["## Scores by task", ""]
    if compare:
        out += ["Deltas against the baseline in brackets; **bold** where a delta leaves the baseline's 95% "
                "binomial (Wilson) interval, i.e. exceeds the noise its sample count allows.", ""]
    for run in content.runs:
        out += [f"### {run.label}", "", _suite_table_section(content, run.label), ""]
    if compare:
        out += ["### Per task and length", "", _cells_section(content), ""]
    if content.groups and any(content.groups.values()):
        out += ["## Scores by sample group", "", _groups_section(content), ""]
    if content.sweep is not None:
        out += _sweep_section(content)
    out += ["## Prefill time", ""]
    if content.prefill:
        out += ["Per prompt, batch size 1, pooled over tasks at each length"
                + (f"; speedup = {content.baseline}'s mean / the run's mean." if compare else "."), "",
                _prefill_section(content), "",
                _image(content, "prefill", "prefill time vs context length"),
                _image(content, "speedup", "speedup vs context length")]
    else:
        out += ["No sample recorded a prefill time.", ""]
    if content.chunks:
        out += ["## Prefill in chunks", "",
                "A chunked run prefills each prompt in chunks of its chunk size (its label's `chunkN`), as vLLM and "
                "SGLang do: a chunk's queries sit at key position \"queries at\" and attend to the KV cache of the "
                "chunks before them and to themselves, so later chunks attend to more keys. Per chunk index, over "
                "the samples that have it: its queries (the last chunk holds the rest of the prompt), mean time "
                "(ms) and density; a whole-prompt run's one row is its whole prefill. The chunks' times add up to "
                "the prefill time above.", "",
                _chunks_section(content), ""]
    if content.density:
        out += ["## Density (sparse methods)", "",
                "Density = QK pairs computed / causal QK pairs, averaged over samples; lowest / highest task = "
                "the extremes of the per-task means.", "",
                _density_section(content), "", _image(content, "density", "density vs context length")]
    out += ["## Environment", ""]
    if compare:
        out += ["Fields in **bold** differ between the runs.", ""]
    out += [_environment_section(content), ""]
    if content.summaries:
        out += ["## Files", "",
                *[f"- [`{name}`]({name}): summary.json of {label}" for label, name in content.summaries.items()], ""]
    return "\n".join(out).rstrip() + "\n"
