"""How well S2O's walk forecast (s2o_kernels/s2o/forecast.py) predicts each head's real walk.

S2O routes a query head to the dense kernel when its forecast density reaches ``dense_above``. This
runs S2O with routing off (``dense_above=0``) on a capture, so every head is walked, and sets each
head's forecast beside the density its walk really had, for a few taus. The forecast is meant as a
ranking of heads by how diffuse they look, so the table also gives the rank correlation.

    python scripts/forecast_check.py --capture captures/gemma-16k.pt --ctx 16384 --device cpu \\
        --out reports/bench/forecast-check-cpu-16k

Writes ``forecast_check.json`` and ``forecast_check.md`` under ``--out``. Runs on a GPU (Triton) or,
more slowly, on a CPU (the PyTorch twins).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from s2o_eval.bench.workloads import load_workload
from s2o_eval.methods import AttentionStats, create
from s2o_kernels import forecast_density, knobs


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (ties broken by position: enough for a dozen heads)."""
    ranks = [torch.tensor(x).argsort().argsort().double() for x in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def check(workload, tau: float, args: dict[str, str]) -> dict:
    q, k, v, scale = workload.q, workload.k, workload.v, workload.scale
    method = create("s2o", dict(args, tau=str(tau), dense_above="0"))
    plan = method.plan(q, k, scale=scale)
    block_n = method.block_n or knobs.default_block_n(q.shape[-1])
    forecast = forecast_density(plan.score_histogram, plan.bucket_width, q.shape[2], plan.segment,
                                tau=tau, block_n=block_n, patience=method.patience).mean(0)
    if plan.heads != q.shape[1]:
        forecast = forecast.repeat_interleave(q.shape[1] // plan.heads)
    stats = AttentionStats()
    method.execute(q, k, v, plan, scale=scale, stats=stats)
    forecast = [round(float(x), 4) for x in forecast]
    actual = [round(float(x), 4) for x in stats.per_head]
    return {"tau": tau, "forecast": forecast, "actual": actual, "density": stats.density,
            "ratio_actual_to_forecast": round(sum(actual) / max(sum(forecast), 1e-12), 3),
            "spearman": round(spearman(forecast, actual), 3)}


def markdown(report: dict) -> str:
    lines = [f"# S2O's walk forecast against the real walk\n", f"{report['workload']}; {report['ctx']} tokens; "
             f"device {report['device']}; torch {report['torch']}; {report['date']}.\n",
             "Per query head: forecast density (from the planner's score histogram) / density the walk "
             "really had (routing off). Rank correlation: Spearman's, over the heads.\n"]
    heads = len(report["rows"][0]["actual"])
    lines.append("| tau | " + " | ".join(f"head {h}" for h in range(heads)) + " | real / forecast | rank corr. |")
    lines.append("|---" * (heads + 3) + "|")
    for row in report["rows"]:
        cells = [f"{f:.2f} / {a:.2f}" for f, a in zip(row["forecast"], row["actual"])]
        lines.append(f"| {row['tau']:g} | " + " | ".join(cells) + f" | {row['ratio_actual_to_forecast']:.2f} "
                     f"| {row['spearman']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", required=True, help="a capture file from `s2o-eval capture`")
    parser.add_argument("--ctx", type=int, required=True, help="tokens (the capture's first N)")
    parser.add_argument("--taus", default="0.0003,0.001,0.003,0.01")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--allow-beyond-window", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    workload = load_workload(args.capture, args.ctx, args.device, allow_beyond_window=args.allow_beyond_window)
    workload.q, workload.k, workload.v = (t.to(dtype) for t in (workload.q, workload.k, workload.v))
    rows = [check(workload, float(tau), {}) for tau in args.taus.split(",")]
    report = {"workload": workload.note, "ctx": args.ctx, "device": (torch.cuda.get_device_name()
              if args.device.startswith("cuda") else platform.processor() or "cpu"),
              "torch": torch.__version__, "dtype": str(dtype), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forecast_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "forecast_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
