"""``s2o-eval run``: evaluate a model with a swapped prefill attention on the task suites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import NothingEvaluated, UserError
from ..methods import parse_method_args, parse_sweep
from ..models import DEFAULT_MODEL, parse_rope_scaling
from ..run import distributed
from ..run.chunked import parse_prefill_chunk
from ..run.evaluate import run_evaluation
from ..run.request import RunRequest, configured_methods
from ..run.suites import load_named_suite, parse_ctx, parse_tasks
from .options import (OUT_NAMES, TASK_NAMES, CtxOpt, DataDirOpt, DeviceOpt, MethodArgsOpt, MethodOpt, ModelOpt,
                      RopeScalingOpt)
from .tables import run_results_table

COMMAND_KWARGS = {
    "help": "Run (or resume) an evaluation; prints the results table and writes a run directory.",
    "epilog": "Examples:\n\n"
              "  s2o-eval run --task ruler --ctx 4k --limit 2\n\n"
              "  s2o-eval run --task ruler:niah_single_1,vt --ctx 4k,16k --method s2o --method-args tau=0.003\n\n"
              "  s2o-eval run --task longbench-v2 --ctx 128k --method fa2 --model meta-llama/Llama-3.1-8B-Instruct\n\n"
              "  s2o-eval run --suite nightly --method s2o\n\n"
              "  s2o-eval run --task ruler --ctx 16k --method s2o --sweep tau=0.01,0.003,0.001\n\n"
              "  s2o-eval run --task ruler --ctx 4k,32k --method fa2,fa3,s2o --limit 10\n\n"
              "  s2o-eval run --task ruler --ctx 32k --method s2o --gpus 8\n\n"
              "  s2o-eval run --task ruler --ctx 32k --method s2o --prefill-chunk 8k\n\n"
              "  s2o-eval run --task ruler --ctx 64k --method fa2 --rope-scaling linear:2 --allow-beyond-window",
}


def sweep_points(text: str | None) -> list[dict[str, str]] | None:
    """``"tau=0.01,0.003"`` -> ``[{"tau": "0.01"}, {"tau": "0.003"}]``: one run's method args each."""
    if not text:
        return None
    key, values = parse_sweep(text)
    return [{key: value} for value in values]


def print_results(outcomes) -> None:
    console = Console()
    for outcome in outcomes:
        console.print(run_results_table(outcome))
        console.print(f"Run directory: {outcome.run_dir.path}", soft_wrap=True, markup=False, highlight=False)
        if outcome.skipped:
            console.print(f"[yellow]{len(outcome.skipped)} task(s) skipped[/] (reasons above)")


def command(
    task: Annotated[Optional[list[str]], typer.Option(*TASK_NAMES, help="suite or suite:task,task (ruler, longbench-v2, infinitebench)")] = None,
    ctx: CtxOpt = "4k",
    method: MethodOpt = "dense",
    method_args: MethodArgsOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    limit: Annotated[Optional[int], typer.Option("--limit", help="samples per task per length (fixed, seeded)")] = None,
    seed: Annotated[int, typer.Option(help="seed of synthetic documents and sample selection")] = 0,
    chat_template: Annotated[str, typer.Option("--chat-template", help="auto | on | off")] = "auto",
    data_dir: DataDirOpt = None,
    out: Annotated[Optional[Path], typer.Option(*OUT_NAMES, help="run directory (default runs/<model>-<method>-<hash>)")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="where default run directories go")] = Path("runs"),
    suite: Annotated[Optional[str], typer.Option("--suite", help="a named selection, e.g. nightly (its tasks, ctx, limit, seed)")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="one run per value of a method parameter, e.g. tau=0.01,0.003")] = None,
    allow_beyond_window: Annotated[bool, typer.Option("--allow-beyond-window", help="allow --ctx past the model's window (recorded)")] = False,
    rope_scaling: RopeScalingOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")] = "auto",
    decode: Annotated[str, typer.Option("--decode", help="auto (compiled static-cache decode on a GPU) | static | dynamic; decoding is dense for every method")] = "auto",
    prefill_chunk: Annotated[Optional[str], typer.Option("--prefill-chunk", help="prefill every prompt in chunks of this many tokens, e.g. 8k, each after the KV cache of the ones before (as vLLM and SGLang do); 0 or absent: the whole prompt at once")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="one process per GPU, samples shared between them (with --device cpu: CPU processes)")] = None,
) -> None:
    if gpus is not None and gpus < 1:
        raise UserError("--gpus must be at least 1")
    ctx_given = ctx
    if suite:
        named = load_named_suite(suite)
        task = task or named["tasks"]
        ctx = ctx_given if ctx_given != "4k" else named["ctx"]
        limit = limit if limit is not None else named.get("limit")
        seed = seed if seed != 0 else named.get("seed", 0)
    if not task:
        raise UserError("no task given: pass --task ruler (see `s2o-eval tasks`) or --suite nightly")
    request = RunRequest(model=model, method=method, tasks=list(task), ctx=parse_ctx(ctx),
                         method_args=parse_method_args(method_args), limit=limit, seed=seed,
                         chat_template=chat_template, data_dir=data_dir, out=out, runs_dir=runs_dir,
                         allow_beyond_window=allow_beyond_window, device=device, dtype=dtype, suite=suite,
                         decode=decode, rope_scaling=parse_rope_scaling(rope_scaling),
                         prefill_chunk=parse_prefill_chunk(prefill_chunk))
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    sweeps = sweep_points(sweep)
    if gpus is not None and gpus > 1 and not distributed.launched():
        # what every process would refuse, refused once here; then the same command again as one
        # process per GPU: they share the samples and one run directory
        parse_tasks(request.tasks)
        configured_methods(request, sweeps)
        raise typer.Exit(distributed.relaunch(gpus, device))
    outcomes = run_evaluation(request, sweeps, progress=not quiet)
    if distributed.place_from_env().is_main:
        print_results(outcomes)
    empty = [outcome.run_dir.path for outcome in outcomes if not outcome.summary["results"]]
    if empty:
        raise NothingEvaluated(f"nothing was evaluated in {empty[0]}: every task was skipped (the lines above say "
                               "why); fix that, then rerun the same command")
