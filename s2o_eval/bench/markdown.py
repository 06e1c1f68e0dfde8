"""The bench report in markdown: one table per workload x ctx (with its Pareto plots), then speed at matched
error, error at matched density, and S2O against the best non-oracle peer.

Reads only records (the JSON's content), so a report can be rebuilt from a stored file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formatting import ctx_label, fmt_args, fmt_num, fmt_ratio, operator_ms
from .pareto import DENSITY_TARGETS, error_at_density_rows, s2o_vs_peers
from .records import BASELINES, ERROR_TARGETS, matched_error_rows, measured

BASELINE_LABELS = {"fa2": "FA2", "cudnn": "cuDNN", "fa3": "FA3"}


def _groups(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["workload"], record["ctx"]), []).append(record)
    return groups


def _group_table(members: list[dict[str, Any]], plots: dict[str, str] | None = None) -> list[str]:
    first = members[0]
    shape = first["shape"]
    chunk = f" · last {ctx_label(first['ctx'] - first['q_offset'])} chunk" if first.get("q_offset") else ""
    lines = [f"## {first['workload']} · {ctx_label(first['ctx'])} tokens{chunk}", "",
             f"Shape: B={shape['B']}, Hq={shape['Hq']}, Hkv={shape['Hkv']}, N={shape['N']}, D={shape['D']}, "
             f"{shape['dtype']}. {first['workload_note'][0].upper() + first['workload_note'][1:]}."]
    if first.get("beyond_window"):
        lines.append("Beyond the captured model's context window (--allow-beyond-window).")
    if first.get("q_offset"):
        offset = first["q_offset"]
        lines.append(f"The last chunk of a chunked prefill (--prefill-chunk): queries {offset} to {shape['N'] - 1} "
                     f"(Nq = {shape['N'] - offset} < N) against all {shape['N']} keys, causal bottom-right; times, "
                     "density and error are that chunk's.")
    efficiency_vs = next((r["efficiency_vs"] for r in members if r.get("efficiency_vs")), None)
    # A P.V column only where some method drops scores it computed (skip-softmax): QK density alone
    # would hide what it saves, P.V density alone what it costs.
    show_pv = any(r.get("pv_density") is not None and r.get("density") is not None
                  and r["pv_density"] != r["density"] for r in members)
    header = ["method", "args", "plan ms", "execute ms", "total ms", "plan share", "density",
              *(["P.V density"] if show_pv else []), "rel L2", "MSE",
              *(f"vs {BASELINE_LABELS[b]}" for b in BASELINES),
              f"efficiency (vs {BASELINE_LABELS.get(efficiency_vs, efficiency_vs)})" if efficiency_vs else "efficiency"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in members:
        if not measured(r):
            continue
        share = None if r.get("plan_share") is None else f"{100 * r['plan_share']:.0f}%"
        row = [r["method"], fmt_args(r.get("args")), operator_ms(r["ms_plan"]), operator_ms(r["ms_execute"]),
               operator_ms(r["ms_total"]), share or "-", fmt_num(r["density"], ".3f"),
               *([fmt_num(r.get("pv_density"), ".3f")] if show_pv else []), fmt_num(r["rel_l2"], ".2e"),
               fmt_num(r["mse"], ".2e"), *(fmt_ratio(r["speedup"].get(b)) for b in BASELINES),
               fmt_num(r.get("efficiency"), ".2f")]
        lines.append("| " + " | ".join(row) + " |")
    skipped = [r for r in members if r.get("skipped")]
    notes = sorted({f"{r['method']}: {r['note']}" for r in members if r.get("note")})
    if skipped:
        seen = dict.fromkeys(f"{r['method']} ({r['skipped']})" for r in skipped)
        lines += ["", "Skipped: " + "; ".join(seen) + "."]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    if plots:
        lines += ["", f"![error vs density]({plots['error-density']}) ![time vs error]({plots['time-error']})"]
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
            cells += [operator_ms(row["ms_total"]), f"{row['density']:.3f}",
                      *(fmt_ratio(row["speedup"].get(b)) for b in BASELINES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _matched_density_table(records: list[dict[str, Any]]) -> list[str]:
    rows = error_at_density_rows(records)
    if not rows:
        return []
    lines = ["## Error at matched density", "",
             "For each sparse method: rel L2 interpolated linearly on its (rel L2, density) Pareto front at the "
             "target density; \"not reached\" outside the densities its sweep produced. \"vs s2o\" = the "
             "method's error / S2O's error at that density.", "",
             "| workload | ctx | density | method | rel L2 | vs s2o |", "|" + "---|" * 6]
    for row in rows:
        if row["rel_l2"] is None:
            low, high = row["density_range"]
            error = f"not reached (sweep: {low:.3f} to {high:.3f})"
        else:
            error = f"{row['rel_l2']:.2e}"
        vs = fmt_ratio(row["vs_s2o"])
        lines.append(f"| {row['workload']} | {ctx_label(row['ctx'])} | {row['density']:.2f} | {row['method']} | "
                     f"{error} | {vs} |")
    return lines + [""]


def _peer_table(records: list[dict[str, Any]]) -> list[str]:
    rows = s2o_vs_peers(records, ERROR_TARGETS, DENSITY_TARGETS)
    if not rows:
        return []
    lines = ["## S2O vs the best non-oracle peer", "",
             "At each matched rel L2: densities on each method's (rel L2, density) Pareto front, \"x lower "
             "density\" = the best peer's density / S2O's. At each matched density: errors, \"x lower error\" "
             "= the best peer's error / S2O's. The best peer is the non-oracle sparse method with the lowest "
             "value that reaches the level; \"-\" where S2O or every peer does not reach it.", "",
             "| workload | ctx | matched | S2O | best peer | peer | S2O's advantage |", "|" + "---|" * 7]
    for row in rows:
        if row["matched"] == "error":
            level, value_spec, unit = f"rel L2 {row['target']:.0%}", ".3f", "x lower density"
        else:
            level, value_spec, unit = f"density {row['target']:.2f}", ".2e", "x lower error"
        s2o = "not reached" if row["s2o"] is None else format(row["s2o"], value_spec)
        peer = fmt_num(row["peer_value"], value_spec)
        lower = "-" if row["lower"] is None else f"{row['lower']:.2f}{unit}"
        lines.append(f"| {row['workload']} | {ctx_label(row['ctx'])} | {level} | {s2o} | {row['peer'] or 'none'} | "
                     f"{peer} | {lower} |")
    return lines + [""]


def render_markdown(records: list[dict[str, Any]], plots: dict[tuple, dict[str, str]] | None = None) -> str:
    """The whole report as markdown text; ``plots``: (workload, ctx) -> {kind: file} of ``write_plots``,
    linked under each group's table."""
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
             "per-pair speed that the method's executor reaches. Oracles (token_oracle, block_oracle) plan from "
             "the dense attention itself: their plan is timed once and their total is plan + execute, a "
             "yardstick, not a method.", ""]
    if any(r["workload_kind"] == "random" for r in records):
        lines += ["> Random inputs give near-uniform attention, the worst case for sparse methods: their "
                  "tables show overhead, never speedup.", ""]
    for key, members in _groups(records).items():
        lines += _group_table(members, (plots or {}).get(key))
    lines += _matched_table(records)
    lines += _matched_density_table(records)
    lines += _peer_table(records)
    return "\n".join(lines)


def write_markdown(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write the report to ``path`` and its Pareto PNGs beside it (``<stem>-<workload>-<ctx>-<kind>.png``)."""
    from .plots import write_plots  # matplotlib loads only when a report is written

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plots = write_plots(records, path.parent, path.stem)
    path.write_text(render_markdown(records, plots))
    return path


def render_report(json_path: Path, out_dir: Path | None = None) -> Path:
    """Rebuild the markdown and plots of a stored ``<name>.json`` without re-running the bench; they go
    to ``out_dir`` (default: beside the JSON). Returns the markdown's path."""
    from .records import read_records

    json_path = Path(json_path)
    records = read_records(json_path)
    return write_markdown(Path(out_dir or json_path.parent) / f"{json_path.stem}.md", records)

