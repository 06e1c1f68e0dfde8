"""The bench report in markdown: one table per workload x ctx, then speed at matched error.

Reads only records (the JSON's content), so a report can be rebuilt from a stored file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..suites import ctx_label
from .records import BASELINES, matched_error_rows, measured

BASELINE_LABELS = {"fa2": "FA2", "cudnn": "cuDNN", "fa3": "FA3"}


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def fmt_num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fmt_speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_args(args: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (args or {}).items()) or "-"


def _groups(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["workload"], record["ctx"]), []).append(record)
    return groups


def _group_table(members: list[dict[str, Any]]) -> list[str]:
    first = members[0]
    shape = first["shape"]
    lines = [f"## {first['workload']} · {ctx_label(first['ctx'])} tokens", "",
             f"Shape: B={shape['B']}, Hq={shape['Hq']}, Hkv={shape['Hkv']}, N={shape['N']}, D={shape['D']}, "
             f"{shape['dtype']}. {first['workload_note'][0].upper() + first['workload_note'][1:]}."]
    if first.get("beyond_window"):
        lines.append("Beyond the captured model's context window (--allow-beyond-window).")
    efficiency_vs = next((r["efficiency_vs"] for r in members if r.get("efficiency_vs")), None)
    header = ["method", "args", "plan ms", "execute ms", "total ms", "plan share", "density", "rel L2", "MSE",
              *(f"vs {BASELINE_LABELS[b]}" for b in BASELINES),
              f"efficiency (vs {BASELINE_LABELS.get(efficiency_vs, efficiency_vs)})" if efficiency_vs else "efficiency"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in members:
        if not measured(r):
            continue
        share = None if r.get("plan_share") is None else f"{100 * r['plan_share']:.0f}%"
        row = [r["method"], fmt_args(r.get("args")), fmt_ms(r["ms_plan"]), fmt_ms(r["ms_execute"]),
               fmt_ms(r["ms_total"]), share or "-", fmt_num(r["density"], ".3f"), fmt_num(r["rel_l2"], ".2e"),
               fmt_num(r["mse"], ".2e"), *(fmt_speedup(r["speedup"].get(b)) for b in BASELINES),
               fmt_num(r.get("efficiency"), ".2f")]
        lines.append("| " + " | ".join(row) + " |")
    skipped = [r for r in members if r.get("skipped")]
    notes = sorted({f"{r['method']}: {r['note']}" for r in members if r.get("note")})
    if skipped:
        seen = dict.fromkeys(f"{r['method']} ({r['skipped']})" for r in skipped)
        lines += ["", "Skipped: " + "; ".join(seen) + "."]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    return lines + [""]


def _matched_table(records: list[dict[str, Any]]) -> list[str]:
    rows = matched_error_rows(records)
    if not rows:
        return []
    lines = ["## Speed at matched error", "",
             "For each swept sparse method: total time (plan + execute) and density interpolated linearly "
             "between the two sweep points whose rel L2 brackets the target; \"not reached\" when the target "
             "lies outside the errors the sweep produced (no extrapolation).", "",
             "| workload | ctx | method | rel L2 | total ms | density | "
             + " | ".join(f"vs {BASELINE_LABELS[b]}" for b in BASELINES) + " |",
             "|" + "---|" * (6 + len(BASELINES))]
    for row in rows:
        cells = [row["workload"], ctx_label(row["ctx"]), row["method"], f"{row['rel_l2']:.0%}"]
        if row["ms_total"] is None:
            span = row["sweep_range"]
            reach = f"not reached (sweep: {span[0]:.2%} to {span[1]:.2%})" if span else "not reached"
            cells += [reach, "-", *("-" for _ in BASELINES)]
        else:
            cells += [fmt_ms(row["ms_total"]), f"{row['density']:.3f}",
                      *(fmt_speedup(row["speedup"].get(b)) for b in BASELINES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(records: list[dict[str, Any]]) -> str:
    """The whole report as markdown text."""
    if not records:
        return "# Attention operator bench\n\nNo records.\n"
    first = records[0]
    versions = first.get("versions") or {}
    stack = " · ".join(f"{k} {v}" for k, v in versions.items() if v)
    lines = [f"# Attention operator bench: {first['name']}", "",
             f"Device: **{first['device']}** · {stack} · started {first.get('started', '?')}", "",
             f"Times are medians of {first['reps']} timed calls after {first['warmup']} warm-up calls "
             "(CUDA events on a GPU). Speedups compare total time (plan + execute) with the dense baselines "
             "measured in this run on the same inputs; absolute times hold only for the device above. "
             "Density = QK pairs computed / causal pairs; rel L2 and MSE are against an exact fp32 dense "
             "reference. Efficiency = dense ms x density / execute ms: the share of the dense kernel's "
             "per-pair speed that the method's executor reaches.", ""]
    if any(r["workload_kind"] == "random" for r in records):
        lines += ["> Random inputs give near-uniform attention, the worst case for sparse methods: their "
                  "tables show overhead, never speedup.", ""]
    for members in _groups(records).values():
        lines += _group_table(members)
    lines += _matched_table(records)
    return "\n".join(lines)


def write_markdown(path: Path, records: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(records))
    return path

