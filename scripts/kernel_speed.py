"""Executor efficiency and planner time on a GPU, beside the dense kernels of the same run.

The executor is timed on lists of a chosen density: every segment's prefix in a random order (the
worst locality a ranking can give), cut to a share of its keys, so that the density is fixed by
construction rather than by a stopping rule; "efficiency" = FA3 ms x density / executor ms, the share
of FA3's per-pair speed the executor keeps. ``--stop-path`` also times the early-stopping walk on the
same lists (tau small enough that it never stops): the cost of the stop test itself. The planner is
timed per score. Inputs are random (this measures speed, never accuracy or a speedup).

    python3 scripts/kernel_speed.py --ctx 32768,131072 --shape gemma --densities 1,0.25 \\
        --configs "block_m=128,block_n=64,num_warps=8,num_stages=2" --out $OUT/kernel-speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from s2o_kernels import ExecConfig, sparse_attention
from s2o_kernels.plan import plan_layout, segment_plan
from s2o_kernels.s2o.ranking import score_projections
from s2o_kernels.s2o.planner import s2o_plan
from s2o_eval.bench.timing import median_ms
from s2o_eval.env import collect_env
from s2o_eval.methods import create

SHAPES = {"gemma": (12, 3, 256), "llama": (32, 8, 128)}


def random_lists(q, k, segment: int, sinks: int, density: float, seed: int = 0):
    """Per-head plan: each segment's prefix in a random order, cut to ``density`` of its keys."""
    batch, q_heads, n_ctx, _ = q.shape
    lengths, _ = plan_layout(n_ctx, segment, sinks)
    gen = torch.Generator(device=q.device).manual_seed(seed)
    pieces = [torch.randperm(int(n), generator=gen, device=q.device)[: int(round(n * density))] + sinks
              for n in lengths.tolist()]
    kept = torch.tensor([p.numel() for p in pieces], dtype=torch.int64)
    keys = torch.cat(pieces).to(torch.int32)
    plan = segment_plan(q, segment, sinks, keys.expand(batch, q_heads, -1).contiguous())
    plan.list_len = kept.to(torch.int32).to(q.device).expand(batch, q_heads, -1).contiguous()
    plan.list_start = (torch.cumsum(kept, 0) - kept).to(q.device).expand(batch, q_heads, -1).contiguous()
    return plan


def top_device_ops(fn, count: int = 8) -> list[tuple[str, float]]:
    """The ``count`` operators with the most device time in one call of ``fn`` (name, ms)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:count]
    return [(row.key[:60], round(row.device_time_total / 1e3, 3)) for row in rows]


def compiled_resources(before: set) -> dict:
    """Registers, spills and shared memory of the executor kernels compiled since ``before`` (cache keys):
    the compiler's own report, read off Triton's kernel cache (pinned launches only)."""
    from s2o_kernels import executor

    found = {}
    for cache in executor._sparse_attention_fwd.device_caches.values():
        for key, kernel in cache[0].items():
            if key in before:
                continue
            kernel._init_handles()
            found = {"n_regs": kernel.n_regs, "n_spills": kernel.n_spills,
                     "shared_bytes": kernel.metadata.shared}
    return found


def cache_keys() -> set:
    from s2o_kernels import executor

    return {key for cache in executor._sparse_attention_fwd.device_caches.values() for key in cache[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", default="32768,131072")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gemma")
    parser.add_argument("--densities", default="1,0.25")
    parser.add_argument("--configs", default="block_m=128,block_n=64,num_warps=8,num_stages=2",
                        help="ExecConfig strings separated by ';' ('auto': the executor's default choice)")
    parser.add_argument("--stop-path", action="store_true", help="also time the early-stopping walk")
    parser.add_argument("--patience", default="4", help="patience values of the early-stopping walk")
    parser.add_argument("--scores", default="gauss:8,head_mean:1", help="planner scores to time, score:rank")
    parser.add_argument("--segment", type=int, default=1024)
    parser.add_argument("--sinks", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only as a smoke test (TRITON_INTERPRET=1)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    q_heads, kv_heads, dim = SHAPES[args.shape]
    records = []
    env = collect_env()
    device = args.device

    def emit(record):
        records.append(record)
        print(json.dumps(record), flush=True)
        with open(args.out, "w") as handle:
            json.dump({"env": env, "records": records}, handle, indent=1)

    for n_ctx in (int(x) for x in args.ctx.split(",")):
        gen = torch.Generator(device=device).manual_seed(n_ctx)
        dtype = torch.bfloat16 if device == "cuda" else torch.float16  # the interpreter's bf16 dot is wrong
        q, k, v = (torch.randn(1, h, n_ctx, dim, device=device, dtype=dtype, generator=gen)
                   for h in (q_heads, kv_heads, kv_heads))
        dense = {}
        for name in ("fa2", "cudnn", "fa3"):
            method = create(name)
            if method.unavailable_reason() is None:
                dense[name] = median_ms(lambda: method.prefill(q, k, v, scale=dim ** -0.5), device=device,
                                        reps=args.reps)
        emit({"what": "dense", "ctx": n_ctx, "shape": args.shape, **{f"{n}_ms": t for n, t in dense.items()}})
        fa3 = dense.get("fa3") or dense.get("cudnn")
        for spec in filter(None, args.scores.split(",")):
            score, rank = spec.split(":")
            options = dict(segment=args.segment, sinks=args.sinks, score=score, rank=int(rank),
                           block_m=min(128, args.segment))
            ms = median_ms(lambda: s2o_plan(q, k, **options), device=device, reps=args.reps)
            proj_ms = median_ms(lambda: score_projections(q, k, args.segment, score=score, rank=int(rank),
                                                          scale=dim ** -0.5), device=device, reps=args.reps)
            emit({"what": "plan", "ctx": n_ctx, "score": score, "rank": int(rank), "plan_ms": ms,
                  "projections_ms": proj_ms, "share_of_fa3": ms / fa3 if fa3 else math.nan,
                  "top_ops": top_device_ops(lambda: s2o_plan(q, k, **options)) if device == "cuda" else None})
        for density in (float(x) for x in filter(None, args.densities.split(","))):
            plan = random_lists(q, k, args.segment, args.sinks, density)
            for text in filter(None, args.configs.split(";")):
                config = None if text == "auto" else ExecConfig.parse(text)  # auto: the executor's own choice
                walks = [(0.0, 1)] + ([(1e-30, int(p)) for p in args.patience.split(",")] if args.stop_path else [])
                for tau, patience in walks:
                    try:
                        def call():
                            return sparse_attention(q, k, v, plan, tau=tau, config=config, patience=patience,
                                                    return_stats=True)

                        before = cache_keys() if device == "cuda" else set()
                        _, stats = call()
                        resources = compiled_resources(before) if device == "cuda" and config is not None else {}
                        ms = median_ms(call, device=device, reps=args.reps)
                    except Exception as err:  # a config that does not fit (shared memory, registers)
                        emit({"what": "exec", "ctx": n_ctx, "config": text, "density_asked": density,
                              "tau": tau, "patience": patience, "error": f"{type(err).__name__}: {str(err)[:200]}"})
                        continue
                    emit({"what": "exec", "ctx": n_ctx, "config": text, "density_asked": density, "tau": tau,
                          "patience": patience,
                          "density": stats.density, "exec_ms": ms,
                          "efficiency_vs_fa3": fa3 * stats.density / ms if fa3 else math.nan,
                          "vs_fa3": fa3 / ms if fa3 else math.nan, "used": str(stats.config), **resources})
        del q, k, v
        if device == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
