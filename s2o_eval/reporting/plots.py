"""Report figures: one PNG per question, each readable on its own (title, axis units, legend).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing here touches global
backend state or needs a display. Inputs are the row dicts of ``tables``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from ..formatting import ctx_label

_MARKERS = "osD^v<>pX*"
_DPI = 120


def _figure(title: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, 4.2), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("context length (tokens; K = 1024)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _context_axis(ax, lengths: list[int]) -> None:
    """Log2 context axis with a labelled tick at each measured length (4K, 16K, ...)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([ctx_label(c) for c in lengths])
    if len(lengths) == 1:  # a single point would otherwise sit on a zero-width axis
        ax.set_xlim(lengths[0] / 1.6, lengths[0] * 1.6)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def _series_plot(series: Mapping[str, Mapping[int, float]], path: Path, title: str, ylabel: str,
                 *, labels: list[str] | None = None, log_y: bool = False, ylim: tuple[float, float] | None = None,
                 reference: tuple[float, str] | None = None) -> Path:
    """One line per series; ``labels`` (all runs, in report order) fixes each run's colour and marker so
    that a method looks the same in every figure of a report, even where the baseline is left out."""
    fig, ax = _figure(title, ylabel)
    lengths = sorted({c for points in series.values() for c in points})
    order = labels or list(series)
    for label, points in series.items():
        i = order.index(label) if label in order else len(order) + list(series).index(label)
        xs = sorted(c for c, v in points.items() if v is not None)
        ax.plot(xs, [points[c] for c in xs], marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", label=label)
    if reference is not None:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    _context_axis(ax, lengths)
    if log_y:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(title="method", fontsize="small")
    return _save(fig, path)


def plot_scores(averages: list[dict[str, Any]], path: Path) -> Path:
    """Suite-average score vs context length, one line per run (rows of ``tables.suite_averages``)."""
    series = {row["label"]: row["ctx_avg"] for row in averages}
    return _series_plot(series, path, "Accuracy vs context length (average over tasks)",
                        "score (0-100, higher is better)", ylim=(-2, 102))


def plot_prefill(prefill: list[dict[str, Any]], path: Path, labels: list[str] | None = None) -> Path:
    """Mean prefill time vs context length on log-log axes, one line per run (``tables.prefill_by_ctx``)."""
    series: dict[str, dict[int, float]] = {}
    for row in prefill:
        series.setdefault(row["label"], {})[row["ctx"]] = row["mean"]
    return _series_plot(series, path, "Prefill time vs context length (mean per prompt)",
                        "prefill time (ms, log scale)", labels=labels, log_y=True)


def plot_speedup(prefill: list[dict[str, Any]], baseline: str, path: Path, labels: list[str] | None = None) -> Path:
    """Prefill speedup over the baseline vs context length, for every run but the baseline."""
    labels = labels or [baseline, *dict.fromkeys(row["label"] for row in prefill)]
    series: dict[str, dict[int, float]] = {}
    for row in prefill:
        if row["label"] != baseline and row["speedup"] is not None:
            series.setdefault(row["label"], {})[row["ctx"]] = row["speedup"]
    return _series_plot(series, path, f"Prefill speedup over {baseline}",
                        f"speedup (x, {baseline} time / method time)", labels=labels,
                        reference=(1.0, f"{baseline} (1x)"))


def plot_density(density: list[dict[str, Any]], path: Path, labels: list[str] | None = None) -> Path:
    """Mean attention density vs context length for the sparse runs (``tables.density_by_ctx``);
    ``labels``: all runs of the report, so that colours match the other figures."""
    series: dict[str, dict[int, float]] = {}
    for row in density:
        series.setdefault(row["label"], {})[row["ctx"]] = row["density"]
    top = max((row["density"] for row in density), default=1.0)
    return _series_plot(series, path, "Attention density vs context length (sparse methods)",
                        "density (computed / causal QK pairs)", labels=labels, ylim=(0, min(1.02, top * 1.2)))
