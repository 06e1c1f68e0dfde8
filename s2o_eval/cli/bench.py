"""``s2o-eval bench``: operator speed, density and error of attention methods on one set of inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..bench.markdown import render_report
from ..bench.records import measured
from ..bench.runner import BenchRequest, parse_scoped_method_args, parse_sweeps, run_bench
from ..errors import NothingEvaluated
from ..outputs import check_output
from ..run.chunked import parse_prefill_chunk
from ..run.suites import SHORTEST_OPERATOR_CTX, parse_ctx
from .options import METHOD_NAMES, OUT_NAMES, DeviceOpt
from .tables import bench_tables

COMMAND_KWARGS = {
    "help": "Time attention methods (plan and execute apart) against FA2 / cuDNN / FA3 on the same inputs; "
            "writes reports/bench/<name>.json and .md.",
    "epilog": "Examples:\n\n"
              "  s2o-eval bench --workload llama8b-random --ctx 32k,128k --methods fa2,cudnn,fa3,s2o\n\n"
              "  s2o-eval bench --workload captures/gemma-3-270m-128k.pt --ctx 32k,128k --allow-beyond-window "
              "--methods fa2,cudnn,fa3,s2o,token_oracle --sweep s2o:tau=0.01,0.003,0.001 "
              "--sweep token_oracle:tau=0.01,0.003,0.001 --name gemma-h100\n\n"
              "  s2o-eval bench --workload captures/gemma-3-270m-128k.pt --ctx 128k --allow-beyond-window "
              "--methods fa3,s2o,s2o/gauss --method-args s2o/gauss:score=gauss,rank=8 --sweep s2o:tau=0.003,0.001 "
              "--sweep s2o/gauss:tau=0.003,0.001\n\n"
              "  s2o-eval bench --workload llama8b-random --ctx 32k,128k --methods fa2,fa3,s2o --prefill-chunk 8k\n\n"
              "  s2o-eval bench --render reports/bench/gemma-h100.json --out /tmp/report",
}


def print_records(records: list[dict[str, Any]]) -> None:
    """One rich table per workload x ctx, then the skipped methods."""
    console = Console()
    for table in bench_tables(records):
        console.print(table)
    for line in dict.fromkeys(f"{r['method']}: {r['skipped']}" for r in records if r.get("skipped")):
        console.print(f"[yellow]skipped[/] {escape(line)}", soft_wrap=True)


def command(
    workload: Annotated[Optional[list[str]], typer.Option("--workload", "-w", help="a capture file (s2o-eval capture) or llama8b-random; repeatable")] = None,
    ctx: Annotated[Optional[str], typer.Option("--ctx", help="lengths, e.g. 32k,128k (default for a capture: all it holds)")] = None,
    methods: Annotated[str, typer.Option(*METHOD_NAMES, help="comma-separated methods (see `s2o-eval methods`); NAME/VARIANT runs NAME again under its own --method-args and --sweep, e.g. s2o,s2o/head")] = "fa2,cudnn,fa3,s2o,token_oracle",
    sweep: Annotated[Optional[list[str]], typer.Option("--sweep", help="method:param=v1,v2,... one point per value, e.g. s2o:tau=0.01,0.003; repeatable")] = None,
    method_args: Annotated[Optional[list[str]], typer.Option("--method-args", help="method:key=value,..., e.g. s2o:segment=512; repeatable")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="report name: <out>/<name>.json and .md")] = None,
    reps: Annotated[int, typer.Option("--reps", help="timed calls per measurement (median reported)")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed calls before timing (compilation, autotuning)")] = 2,
    allow_beyond_window: Annotated[bool, typer.Option("--allow-beyond-window", help="allow --ctx past the captured model's window (recorded)")] = False,
    out_dir: Annotated[Path, typer.Option(*OUT_NAMES, help="where the JSON and markdown go")] = Path("reports/bench"),
    device: DeviceOpt = None,
    dtype: Annotated[str, typer.Option(help="dtype of random workloads: bf16 or fp16 (captures keep theirs)")] = "bf16",
    seed: Annotated[int, typer.Option(help="seed of random workloads")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    prefill_chunk: Annotated[Optional[str], typer.Option("--prefill-chunk", help="time the last chunk of a chunked prefill instead of the whole prompt: its queries (e.g. the last 8k) against all --ctx keys, causal bottom-right; 0 or absent: the whole prompt")] = None,
    render: Annotated[Optional[Path], typer.Option("--render", help="rebuild the markdown and plots of a stored bench JSON into --out; runs nothing")] = None,
) -> None:
    check_output(out_dir, "--out")
    if render is not None:
        markdown_path = render_report(render, out_dir)
        Console().print(f"wrote {escape(str(markdown_path))} and its plots", soft_wrap=True)
        return
    request = BenchRequest(
        workloads=list(workload or ["llama8b-random"]),
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        ctx=parse_ctx(ctx, SHORTEST_OPERATOR_CTX) if ctx else None,
        sweeps=parse_sweeps(sweep),
        method_args=parse_scoped_method_args(method_args),
        reps=reps, warmup=warmup, device=device, dtype=dtype, seed=seed,
        allow_beyond_window=allow_beyond_window, name=name, out_dir=out_dir,
        prefill_chunk=parse_prefill_chunk(prefill_chunk),
    )
    outcome = run_bench(request, progress=not quiet)
    print_records(outcome.records)
    Console().print(f"wrote {escape(str(outcome.json_path))} and {escape(str(outcome.markdown_path))}", soft_wrap=True)
    if not any(map(measured, outcome.records)):
        raise NothingEvaluated("no method was measured: every one was skipped (the lines above say why); fix "
                               "that, or choose methods that run here (see `s2o-eval methods`)")
