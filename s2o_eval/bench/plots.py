"""The bench's two Pareto figures per workload x ctx: error vs density, and total time vs error.

Each sparse method is one line through its sweep points (faint) with its Pareto front drawn over it;
dense baselines are a marker at density 1 (error figure) or a horizontal line at their time (time
figure). Drawn on matplotlib's Agg canvas (no pyplot), like ``s2o_eval.reporting.plots``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..formatting import ctx_label
from .pareto import pareto_front, sweep_groups
from .records import measured

_MARKERS = "osD^v<>pX*"
_DPI = 120
PLOT_KINDS = ("error-density", "time-error")


def plot_name(name: str, workload: str, ctx: int, kind: str) -> str:
    """``<name>-<workload>-<ctx>-<kind>.png``, e.g. ``s2o-h100-gemma-128k-32k-error-density.png``."""
    stem = f"{name}-{workload}-{ctx_label(ctx).lower()}-{kind}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem) + ".png"  # safe in a file name and a markdown link


def _series(records: list[dict[str, Any]], workload: str, ctx: int):
    """(sparse method -> its records, dense records) of one workload x ctx, in record order."""
    sparse = {m: members for (w, c, m), members in sweep_groups(records).items() if (w, c) == (workload, ctx)}
    dense = [r for r in records if (r["workload"], r["ctx"]) == (workload, ctx) and measured(r) and r.get("dense")]
    return sparse, dense


def _device(records: list[dict[str, Any]], workload: str, ctx: int) -> str:
    return next((r.get("device") or "?") for r in records if (r["workload"], r["ctx"]) == (workload, ctx))


def _figure(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=(6.4, 4.4), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _draw_method(ax, index: int, method: str, xs: list[float], ys: list[float], front_xy: list[tuple[float, float]]):
    color, marker = f"C{index % 10}", _MARKERS[index % len(_MARKERS)]
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    off_front = len(set(zip(xs, ys))) > len(front_xy)  # only then does the faint sweep line say anything
    ax.plot([xs[i] for i in order], [ys[i] for i in order], color=color, marker=marker, alpha=0.35,
            linestyle=":", label=f"{method} (all sweep points)" if off_front else "_nolegend_")
    fx, fy = zip(*sorted(front_xy))
    ax.plot(fx, fy, color=color, marker=marker, linewidth=2, label=f"{method} (Pareto front)")


def plot_error_density(records: list[dict[str, Any]], workload: str, ctx: int, path: Path) -> Path:
    """rel L2 (log) vs density (linear) for one workload x ctx."""
    sparse, dense = _series(records, workload, ctx)
    device = _device(records, workload, ctx)
    fig, ax = _figure(f"Error vs density: {workload}, {ctx_label(ctx)} tokens\n{device}",
                      "density (computed / causal QK pairs)", "rel L2 error vs fp32 reference (log)")
    for index, (method, members) in enumerate(sparse.items()):
        front = pareto_front((r["rel_l2"], r["density"]) for r in members)
        _draw_method(ax, index, method, [r["density"] for r in members], [r["rel_l2"] for r in members],
                     [(c, e) for e, c in front])
    for index, record in enumerate(dense):
        # hollow markers: the dense kernels' errors nearly coincide, and each must stay visible
        ax.plot([1.0], [record["rel_l2"]], marker=_MARKERS[(len(sparse) + index) % len(_MARKERS)], linestyle="none",
                markersize=9 - 2 * (index % 3), fillstyle="none", color=f"C{(len(sparse) + index) % 10}",
                label=f"{record['method']} (dense)")
    ax.set_yscale("log")
    _plain_log_labels(ax, "y")
    ax.set_xlim(0, 1.05)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_time_error(records: list[dict[str, Any]], workload: str, ctx: int, path: Path) -> Path:
    """Total ms (log) vs rel L2 (log) for one workload x ctx; dense baselines as horizontal lines."""
    sparse, dense = _series(records, workload, ctx)
    device = _device(records, workload, ctx)
    fig, ax = _figure(f"Time vs error: {workload}, {ctx_label(ctx)} tokens\n{device}",
                      "rel L2 error vs fp32 reference (log)", "total time, plan + execute (ms, log)")
    for index, (method, members) in enumerate(sparse.items()):
        front = pareto_front((r["rel_l2"], r["ms_total"]) for r in members)
        _draw_method(ax, index, method, [r["rel_l2"] for r in members], [r["ms_total"] for r in members], front)
    styles = ("--", "-.", ":", (0, (5, 1)))
    for index, record in enumerate(dense):
        ax.axhline(record["ms_total"], color=f"C{(len(sparse) + index) % 10}", linestyle=styles[index % len(styles)],
                   linewidth=1.2, label=f"{record['method']} (dense, {record['ms_total']:.3g} ms)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_labels(ax, "x")
    _plain_log_labels(ax, "y")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _plain_log_labels(ax, which: str) -> None:
    """Log-axis ticks as plain numbers (0.02, 40) instead of 2x10^-2, 4x10^1; minor ticks labelled only
    when the data spans less than a decade (else they crowd). Call after plotting: reads the limits."""
    axis, (low, high) = (ax.xaxis, ax.get_xlim()) if which == "x" else (ax.yaxis, ax.get_ylim())
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if low > 0 and high / low < 10 else NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_plots(records: list[dict[str, Any]], directory: Path, name: str) -> dict[tuple, dict[str, str]]:
    """Both figures for every workload x ctx where a sparse method has at least two sweep points.

    Returns (workload, ctx) -> {kind: file name} (names relative to ``directory``, for markdown links).
    """
    written: dict[tuple, dict[str, str]] = {}
    groups = sweep_groups(records)
    for workload, ctx in dict.fromkeys((w, c) for (w, c, _), members in groups.items() if len(members) >= 2):
        files = {kind: plot_name(name, workload, ctx, kind) for kind in PLOT_KINDS}
        plot_error_density(records, workload, ctx, Path(directory) / files["error-density"])
        plot_time_error(records, workload, ctx, Path(directory) / files["time-error"])
        written[(workload, ctx)] = files
    return written
