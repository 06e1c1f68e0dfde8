"""Run the operator bench: every (workload, ctx, method, sweep point) on the same inputs, one run.

For each workload x ctx the exact fp32 reference is computed once; then each method runs once
untimed (its output scored against the reference, its density read from its stats), and is timed:
sparse methods as plan, execute (on a fixed plan) and plan + execute (oracles: plan once, total =
plan + execute); dense methods as one call.

With ``prefill_chunk`` C (``--prefill-chunk``) each method runs the last chunk of a chunked prefill
instead: the last C queries (at offset N - C) against all N keys, causal bottom-right, as a serving
engine's last chunk attends to the KV cache of the earlier ones; error, density and time are that
chunk's. A method that takes no queries at an offset is skipped, saying so.
Records are rewritten to JSON after every measurement, so an interrupted bench keeps what finished.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..env import collect_env, device_name
from ..errors import UserError
from ..formatting import ctx_label
from ..methods import AttentionMethod, AttentionStats, create, parse_method_args, parse_sweep
from ..methods.base import SparseMethod
from .markdown import write_markdown
from .records import add_ratios, registry_name, write_records
from s2o_kernels.reference import exact_reference, output_error
from .timing import median_ms
from .workloads import Workload, captured_tokens, is_random, load_workload


CUDA_ONLY = ("fa2", "cudnn", "fa3")  # their kernels take CUDA tensors only


@dataclass
class BenchRequest:
    """What ``s2o-eval bench`` was asked.

    methods: labels: registry names, or variants "<name>/<label>" (a second configuration of <name>).
    sweeps: label -> (parameter, values as text), e.g. {"s2o": ("tau", ["0.01", "0.003"])};
    method_args: label -> {parameter: value as text}; ctx None: a capture's full length.
    dtype: of random workloads (captures keep their own).
    """

    workloads: list[str]
    methods: list[str]
    ctx: list[int] | None = None
    sweeps: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    method_args: dict[str, dict[str, str]] = field(default_factory=dict)
    reps: int = 10
    warmup: int = 2
    device: str | None = None
    dtype: str = "bf16"
    seed: int = 0
    allow_beyond_window: bool = False
    name: str | None = None
    out_dir: Path = Path("reports/bench")
    prefill_chunk: int | None = None  # time the last chunk of this many queries (None: the whole prompt)


@dataclass
class BenchOutcome:
    records: list[dict[str, Any]]
    json_path: Path
    markdown_path: Path


# ------------------------------------------------------------------------------ option parsing

def _scoped(text: str, option: str) -> tuple[str, str]:
    method, sep, rest = text.partition(":")
    if not sep or not method.strip() or not rest.strip():
        raise UserError(f"{option} '{text}': name the method first, e.g. {option} s2o:tau=0.01,0.003")
    return method.strip(), rest.strip()


def parse_sweeps(texts: list[str] | None) -> dict[str, tuple[str, list[str]]]:
    """``["s2o:tau=0.01,0.003"]`` -> ``{"s2o": ("tau", ["0.01", "0.003"])}`` (one parameter per method)."""
    sweeps: dict[str, tuple[str, list[str]]] = {}
    for text in texts or []:
        method, rest = _scoped(text, "--sweep")
        parameter_values = parse_sweep(rest, given=text, example="s2o:tau=0.01,0.003")
        if method in sweeps:
            raise UserError(f"--sweep: '{method}' is swept twice; sweep one parameter per method")
        sweeps[method] = parameter_values
    return sweeps


def parse_scoped_method_args(texts: list[str] | None) -> dict[str, dict[str, str]]:
    """``["s2o:segment=512,sinks=64"]`` -> ``{"s2o": {"segment": "512", "sinks": "64"}}``."""
    args: dict[str, dict[str, str]] = {}
    for text in texts or []:
        method, rest = _scoped(text, "--method-args")
        args.setdefault(method, {}).update(parse_method_args(rest))
    return args


def default_name(workloads: list[str], ctx: list[int] | None, prefill_chunk: int | None = None) -> str:
    parts = [w if is_random(w) else Path(w).stem for w in workloads]
    parts += [ctx_label(n).lower() for n in ctx or []]
    parts += [f"chunk{ctx_label(prefill_chunk).lower()}"] if prefill_chunk else []
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-") or "bench"


# ------------------------------------------------------------------------------------ the run

@dataclass
class _Point:
    label: str  # the name in --methods: a registry name, or a variant "<name>/<label>"
    method: AttentionMethod
    args: dict[str, str]
    sweep: dict[str, str] | None


def _points(request: BenchRequest) -> list[_Point]:
    """Every configured method instance the request asks for (validates names and parameters)."""
    if not request.methods:
        raise UserError("no method given: pass e.g. --methods fa2,cudnn,fa3,s2o")
    for option, scoped in (("--sweep", request.sweeps), ("--method-args", request.method_args)):
        stray = [m for m in scoped if m not in request.methods]
        if stray:
            raise UserError(f"{option} names {', '.join(stray)}, not in --methods {','.join(request.methods)}: "
                            "add it to --methods")
    if len(set(request.methods)) < len(request.methods):
        raise UserError(f"--methods {','.join(request.methods)} names a method twice: give each configuration "
                        "its own variant name, e.g. --methods s2o,s2o/gauss --method-args s2o/gauss:score=gauss")
    points = []
    for label in request.methods:
        name = registry_name(label)
        base = dict(request.method_args.get(label, {}))
        if label in request.sweeps:
            key, values = request.sweeps[label]
            for value in values:
                points.append(_Point(label, create(name, {**base, key: value}), {**base, key: value}, {key: value}))
        else:
            points.append(_Point(label, create(name, base), base, None))
    return points


def _lengths(request: BenchRequest, workload: str) -> list[int | None]:
    if request.ctx:
        return list(request.ctx)
    if is_random(workload):
        raise UserError(f"--workload {workload} needs --ctx (e.g. --ctx 32k,128k)")
    captured_tokens(workload)  # checks the file now, before any work
    return [None]


def measure(method: AttentionMethod, workload: Workload, reference: torch.Tensor, *, reps: int,
            warmup: int, q_offset: int = 0) -> dict[str, Any]:
    """Times, density and error of one configured method on one workload; with ``q_offset`` P, of its
    queries from P on against all keys (a chunk after P cached ones; ``reference`` holds those rows)."""
    q, k, v, scale = workload.q, workload.k, workload.v, workload.scale
    if q_offset:  # one contiguous copy, as a serving engine's chunk of queries is (not timed)
        q = q[:, :, q_offset:].contiguous()
    device = q.device
    stats = AttentionStats()
    if isinstance(method, SparseMethod):
        plan = method.plan(q, k, scale=scale)
        out = method.execute(q, k, v, plan, scale=scale, stats=stats)
        rel_l2, mse = output_error(out, reference)
        del out
        ms_execute = median_ms(lambda: method.execute(q, k, v, plan, scale=scale), device=device, reps=reps,
                               warmup=warmup)
        if method.yardstick:  # its plan reads the dense attention: one timed plan says enough
            ms_plan = median_ms(lambda: method.plan(q, k, scale=scale), device=device, reps=1, warmup=0)
            ms_total = ms_plan + ms_execute
        else:
            ms_plan = median_ms(lambda: method.plan(q, k, scale=scale), device=device, reps=reps, warmup=warmup)
            ms_total = median_ms(lambda: method.execute(q, k, v, method.plan(q, k, scale=scale), scale=scale),
                                 device=device, reps=reps, warmup=warmup)
        del plan
    else:
        out = method.prefill(q, k, v, scale=scale, stats=stats)
        rel_l2, mse = output_error(out, reference)
        del out
        ms_plan = None
        ms_execute = ms_total = median_ms(lambda: method.prefill(q, k, v, scale=scale), device=device, reps=reps,
                                          warmup=warmup)
    density = stats.density if stats.calls else (None if method.sparse else 1.0)
    pv_density = stats.pv_density if stats.calls else density
    return {
        "ms_plan": ms_plan, "ms_execute": ms_execute, "ms_total": ms_total,
        "plan_share": ms_plan / ms_total if ms_plan is not None and ms_total else None,
        "density": density, "pv_density": pv_density, "density_per_head": list(stats.per_head) or None,
        "rel_l2": rel_l2, "mse": mse,
    }


def _resolve_device(device: str | None) -> str:
    from ..models.loading import resolve_device

    return resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _run_point(point: _Point, base: dict[str, Any], workload: Workload, reference: torch.Tensor,
               request: BenchRequest, device: str) -> dict[str, Any]:
    """The record of one configured method on one workload (its chunk at ``base["q_offset"]``):
    measured, or skipped with the reason."""
    method = point.method
    record = {**base, "method": point.label, "dense": not method.sparse, "args": point.args,
              "params": method.params(), "sweep": point.sweep, "skipped": None,
              "note": method.fallback_note() if isinstance(method, SparseMethod) else None,
              "ms_plan": None, "ms_execute": None, "ms_total": None, "plan_share": None,
              "density": None, "pv_density": None, "density_per_head": None, "rel_l2": None, "mse": None,
              "efficiency": None, "efficiency_vs": None, "speedup": {}}
    reason = method.unavailable_reason()
    if reason is None and method.name in CUDA_ONLY and not device.startswith("cuda"):
        reason = f"runs on CUDA only, the bench runs on {device}: pass --device cuda"
    if reason is None and base["q_offset"] and not method.takes_offset:
        reason = "takes no queries at an offset (a chunk after cached keys) in this build: bench it without --prefill-chunk"
    if reason is None:
        try:
            record.update(measure(method, workload, reference, reps=request.reps, warmup=request.warmup,
                                  q_offset=base["q_offset"]))
        except torch.cuda.OutOfMemoryError:
            reason = f"out of {device} memory at N={workload.shape['N']}"
            torch.cuda.empty_cache()
    if reason is not None:
        record["skipped"] = reason
    elif not math.isfinite(record["rel_l2"]):
        record["note"] = "; ".join(filter(None, [record["note"], "output holds NaN or Inf"]))
    return record


def run_bench(request: BenchRequest, *, progress: bool = True, console: Console | None = None) -> BenchOutcome:
    """Run every (workload, ctx, method, sweep point); write ``<out_dir>/<name>.json`` and ``.md``."""
    from ..models import resolve_dtype

    console = console or Console(stderr=True)
    if request.reps < 1 or request.warmup < 0:
        raise UserError("--reps must be at least 1 and --warmup at least 0")
    if not request.workloads:
        raise UserError("no workload given: pass --workload llama8b-random or a capture file")
    points = _points(request)
    lengths = {w: _lengths(request, w) for w in request.workloads}
    device = _resolve_device(request.device)
    dtype = resolve_dtype(request.dtype, device)
    name = request.name or default_name(request.workloads, request.ctx, request.prefill_chunk)
    json_path = Path(request.out_dir) / f"{name}.json"
    markdown_path = Path(request.out_dir) / f"{name}.md"
    env = collect_env()
    versions = {key: env["versions"].get(package) for key, package in
                (("torch", "torch"), ("triton", "triton"), ("transformers", "transformers"), ("fa3", "fa3-fwd"))}
    device_label = device_name() if device.startswith("cuda") else "CPU"
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    records: list[dict[str, Any]] = []
    steps = sum(len(n) for n in lengths.values()) * (1 + len(points))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("bench", total=steps)
        for spec in request.workloads:
            for tokens in lengths[spec]:
                try:
                    workload = load_workload(spec, tokens, device, dtype=dtype, seed=request.seed,
                                             allow_beyond_window=request.allow_beyond_window)
                    bar.update(task, description=f"{workload.name} N={workload.shape['N']}: fp32 reference")
                    n_ctx = workload.shape["N"]
                    # the last chunk: a prompt no longer than a chunk is prefilled whole (offset 0)
                    q_offset = n_ctx - min(request.prefill_chunk or n_ctx, n_ctx)
                    # the chunk's rows only (bottom-right): query i of the chunk is query q_offset + i
                    reference = exact_reference(workload.q[:, :, q_offset:], workload.k, workload.v, workload.scale)
                except torch.cuda.OutOfMemoryError:
                    raise UserError(f"{spec} at {tokens or 'full'} tokens does not fit in {device} memory with its "
                                    f"fp32 reference: bench a shorter --ctx (finished records are in {json_path})") from None
                bar.advance(task)
                group: list[dict[str, Any]] = []
                told: set[tuple[str, str]] = set()
                base = {"name": name, "started": started, "workload": workload.name,
                        "workload_kind": workload.kind, "workload_note": workload.note, "source": workload.source,
                        "beyond_window": workload.beyond_window, "ctx": n_ctx, "shape": workload.shape,
                        "device": device_label, "versions": versions, "reps": request.reps,
                        "warmup": request.warmup, "prefill_chunk": request.prefill_chunk, "q_offset": q_offset}
                for point in points:
                    bar.update(task, description=f"{workload.name} N={n_ctx}: {point.label} {point.args or ''}")
                    record = _run_point(point, base, workload, reference, request, device)
                    reason = record["skipped"]
                    if reason and (point.label, reason) not in told:  # once per method, not per sweep point
                        told.add((point.label, reason))
                        console.print(f"[yellow]skipped[/] {escape(f'{point.label} on {workload.name} N={n_ctx}: {reason}')}")
                    group.append(record)
                    write_records(json_path, records + group)
                    bar.advance(task)
                add_ratios(group)
                records.extend(group)
                write_records(json_path, records)
                write_markdown(markdown_path, records)
                del workload, reference
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return BenchOutcome(records=records, json_path=json_path, markdown_path=markdown_path)
