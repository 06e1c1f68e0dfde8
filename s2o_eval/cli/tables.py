"""Every rich table the commands print, built here: the commands only print them.

Text columns come first and are left-aligned; number columns follow, right-aligned. No cell is ever cut
(``_fit``): a number never becomes ``1.0…``, and what a user copies (hints, paths, URLs) is printed below
the tables, not in a cell.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterable

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from ..bench.records import BASELINES, measured
from ..formatting import ctx_label, fmt_args, fmt_delta, fmt_ms, fmt_num, fmt_ratio, operator_ms
from ..methods import METHODS, resolve_dense
from ..reporting.regress import AverageCheck
from ..run.suites import SUITES, short_task_name

if TYPE_CHECKING:
    from ..run.request import RunOutcome
    from ..reporting import ReportContent, Verdict


def _table(title: str, columns: Iterable[str], *, text_columns: int, caption: str | None = None,
           no_wrap: tuple[str, ...] = ()) -> Table:
    """Number columns (after the first ``text_columns``) never wrap; ``no_wrap`` text columns neither."""
    table = Table(title=title, caption=caption)
    for i, name in enumerate(columns):
        is_text = i < text_columns
        table.add_column(name, justify="left" if is_text else "right", no_wrap=name in no_wrap or not is_text)
    return table


def _least_width(column: Column) -> int:
    """The narrowest the column can be with nothing cut: its widest cell (header included) where it does
    not wrap, else its longest word."""
    texts = [Text.from_markup(str(cell)).plain for cell in column.cells] + [str(column.header)]
    pieces = texts if column.no_wrap else [word for text in texts for word in text.split()]
    return max((cell_len(piece) for piece in pieces), default=1)


def _fit(table: Table, droppable: tuple[str, ...] = ()) -> Table:
    """Give every column the width that cuts nothing; where the table then is wider than the terminal,
    leave out the ``droppable`` columns in that order until it fits, and say which in the caption. Past
    that, cells wrap, numbers included (fold), rather than end in "…" or run off the edge."""
    width = Console().width  # what the commands' consoles take: the terminal's, else $COLUMNS or 80

    def needed() -> int:  # each column has a space either side and a rule after it; the table one more
        return sum(column.min_width + 3 for column in table.columns) + 1

    for column in table.columns:
        column.min_width, column.overflow = _least_width(column), "fold"
    left_out = []
    for name in droppable:
        if needed() <= width:
            break
        table.columns[:] = [column for column in table.columns if column.header != name]
        left_out.append(name)
    if left_out:
        table.caption = f"left out at {width} columns: {', '.join(left_out)} (in the markdown report)"
    if needed() > width:
        for column in table.columns:
            column.no_wrap, column.min_width = False, None
    return table


# ------------------------------------------------------------------------------ run

def method_title(name: str, args: dict[str, Any] | None) -> str:
    """``s2o: tau=0.01, segment=1024``, or the bare name of a method without parameters."""
    return f"{name}: {fmt_args(args)}" if args else name


def run_results_table(outcome: RunOutcome) -> Table:
    """One run's results: score, prefill time and density per task and length, and per group label
    (indented under its task). Task names are the short ones of the command line and are never cut:
    80 columns hold the longest. The run directory is the caller's to print, below."""
    config = outcome.summary["config"]
    title = f"{config['model_name']} · {method_title(config['method_resolved'], config['method_args'])}"
    if config.get("prefill_chunk"):
        title += f" · prefill in chunks of {ctx_label(config['prefill_chunk'])}"
    table = _table(escape(title),
                   ("task", "ctx", "n", "score", "prefill ms", "p90 ms", "density"), text_columns=1,
                   no_wrap=("task",))
    for row in outcome.summary["results"]:
        label = f"  {row['group']}" if row.get("group") else short_task_name(row["task"])
        table.add_row(escape(label), ctx_label(row["ctx"]), str(row["n"]), fmt_num(row["score"]),
                      fmt_ms(row["prefill_ms_mean"]), fmt_ms(row["prefill_ms_p90"]),
                      fmt_num(row["density_mean"], ".3f"))
    return _fit(table)


# ------------------------------------------------------------------------------ compare, report, regress

def suite_averages_table(content: ReportContent) -> Table:
    """Suite average per length for each run, deltas against the baseline when there are several."""
    compare = len(content.runs) > 1
    table = _table("Suite average score (0-100) per context length",
                   ("run", *(ctx_label(c) for c in content.lengths), "Avg"), text_columns=1)
    for row in content.averages:
        with_delta = compare and row["label"] != content.baseline
        cells = []
        for c in content.lengths:
            text = fmt_num(row["ctx_avg"].get(c))
            if with_delta and row["delta"].get(c) is not None:
                text += f" ({fmt_delta(row['delta'][c])})"
            cells.append(text)
        overall = fmt_num(row["overall"])
        if with_delta and row["overall_delta"] is not None:
            overall += f" ({fmt_delta(row['overall_delta'])})"
        table.add_row(row["label"], *cells, overall)
    return _fit(table)


def prefill_table(content: ReportContent) -> Table:
    compare = len(content.runs) > 1
    speedup = [f"speedup vs {content.baseline}"] if compare else []
    table = _table("Prefill time per prompt (ms)", ("length", "run", "mean", "p50", "p90", *speedup), text_columns=2)
    for row in content.prefill:
        cells = [ctx_label(row["ctx"]), row["label"], fmt_num(row["mean"]), fmt_num(row["p50"]), fmt_num(row["p90"])]
        if compare:
            cells.append(fmt_ratio(row["speedup"]))
        table.add_row(*cells)
    return _fit(table)


def chunk_table(content: ReportContent) -> Table:
    """Time and density per prefill chunk (``tables.chunk_rows``); a whole-prompt run's one row."""
    table = _table("Prefill per chunk", ("length", "run", "chunk", "queries at", "n", "mean ms", "density"),
                   text_columns=2)
    for row in content.chunks:
        table.add_row(ctx_label(row["ctx"]), row["label"], "whole" if row["chunk"] is None else str(row["chunk"]),
                      str(row["offset"]), str(row["n"]), fmt_ms(row["ms"]), fmt_num(row["density"], ".3f"))
    return _fit(table)


def verdict_table(verdict: Verdict, only_regressions: bool) -> Table:
    """The suite averages and cells (or only the regressions): baseline, now, delta, p."""
    title = "Regressions against the baseline" if only_regressions else "Run against the baseline"
    table = _table(title, ("task", "length", "baseline", "now", "delta", "p"), text_columns=2)
    for check in verdict.regressions if only_regressions else [*verdict.averages, *verdict.cells]:
        if isinstance(check, AverageCheck):
            task, length, p = "suite average", "all" if check.ctx is None else ctx_label(check.ctx), "-"
        else:
            task, length, p = check.task, ctx_label(check.ctx), f"{check.p:.3g}"
        table.add_row(task, length, fmt_num(check.baseline), fmt_num(check.now), fmt_delta(check.delta), p,
                      style="red" if check.regressed else None)
    return _fit(table)


# ------------------------------------------------------------------------------ bench

# what a narrow terminal loses first: the markdown report keeps every column
BENCH_DROPPABLE = ("eff.", "vs fa2", "vs cudnn", "plan ms", "exec ms", "vs fa3")


def bench_tables(records: list[dict[str, Any]]) -> list[Table]:
    """One table per workload x ctx: plan / execute / total ms, density, error, speedups, efficiency;
    columns of ``BENCH_DROPPABLE`` are left out, in that order, until it fits the terminal."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["workload"], record["ctx"]), []).append(record)
    tables = []
    for (workload, ctx), members in groups.items():
        offset = members[0].get("q_offset") or 0
        chunk = f" · last {ctx_label(ctx - offset)} chunk" if offset else ""
        table = _table(f"{workload} · {ctx_label(ctx)} tokens{chunk} · {members[0]['device']}",
                       ("method", "args", "plan ms", "exec ms", "total ms", "density", "rel L2",
                        *(f"vs {b}" for b in BASELINES), "eff."), text_columns=2, no_wrap=("method",))
        for r in filter(measured, members):
            table.add_row(r["method"], escape(fmt_args(r.get("args"))), operator_ms(r["ms_plan"]),
                          operator_ms(r["ms_execute"]), operator_ms(r["ms_total"]), fmt_num(r["density"], ".3f"),
                          fmt_num(r["rel_l2"], ".2e"), *(fmt_ratio(r["speedup"].get(b)) for b in BASELINES),
                          fmt_num(r.get("efficiency"), ".2f"))
        tables.append(_fit(table, BENCH_DROPPABLE))
    return tables


# ------------------------------------------------------------------------------ methods, tasks

def methods_table() -> Table:
    """Every registered method: whether it runs here (and why not), its parameters, what it is."""
    table = _table(f"attention methods (dense = {resolve_dense()} here)",
                   ("method", "available", "parameters (defaults)", "what"), text_columns=4)
    for name, cls in METHODS.items():
        method = cls()
        reason = method.unavailable_reason()
        params = ", ".join(f"{f.name}={getattr(method, f.name)}" for f in dataclasses.fields(cls)) or "-"
        note = getattr(method, "fallback_note", lambda: None)()
        if reason is not None:
            available = f"[red]no[/]: {escape(reason)}"
        else:
            available = "[green]yes[/]" + (" (PyTorch reference here: correct, slow)" if note else "")
        table.add_row(name, available, escape(params), escape(cls.summary))
    return _fit(table)


def tasks_tables(data_dir: str | None, suite: str | None) -> tuple[list[Table], list[str]]:
    """A table per suite (or for ``suite``): every task, its lm-eval name, whether its data is here; and
    the notes the tables refer to (``[1] ...``: where missing data comes from and where it goes), which
    hold URLs and paths to copy and so are printed whole below the tables."""
    tables, notes = [], []
    for suite_obj in SUITES.values():
        if suite and suite_obj.name != suite:
            continue
        table = _table(f"{suite_obj.name} (run with --task {suite_obj.name} or "
                       f"{suite_obj.name}:TASK,TASK)", ("task", "lm-eval name", "data"), text_columns=3,
                       no_wrap=("task", "lm-eval name"))
        for task in suite_obj.tasks:
            status = suite_obj.data_status(task.name, data_dir)
            if status is not None and status not in notes:
                notes.append(status)
            data = "[green]ready[/]" if status is None else f"[yellow]not here[/] \\[{notes.index(status) + 1}]"
            table.add_row(task.name, suite_obj.lm_eval_name(task.name), data)
        tables.append(_fit(table))
    return tables, [f"[{number}] {note}" for number, note in enumerate(notes, start=1)]
