"""How long the S2O planner takes on a GPU, next to dense causal attention on the same inputs.

Random bf16 q/k (the planner's work does not depend on the values), one layer. Prints a markdown
table: plan time (median of ``triton.testing.do_bench``), dense FlashAttention time through torch SDPA
on the same shape, and their ratio; with ``--profile`` also the time of each kernel of one plan.

    PYTHONPATH=... python scripts/planner_speed.py --ctx 32768,131072 --shape llama
"""

from __future__ import annotations

import argparse

import torch
import triton

from s2o_kernels.planner import s2o_plan

SHAPES = {"llama": (32, 8, 128), "gemma": (12, 3, 256)}  # q heads, kv heads, head dim


def dense_ms(q, k, v) -> float:
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        return triton.testing.do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ctx", default="32768,131072")
    parser.add_argument("--shape", default="llama", choices=sorted(SHAPES))
    parser.add_argument("--segments", default="1024,512")
    parser.add_argument("--guides", default="mean,head_mean")
    parser.add_argument("--buckets", default="1024")
    parser.add_argument("--fine", default="0.5", help="fine_fraction values")
    parser.add_argument("--coarse", default="4", help="n_coarse values")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    q_heads, kv_heads, dim = SHAPES[args.shape]
    print(f"device: {torch.cuda.get_device_name()}, triton {triton.__version__}, torch {torch.__version__}")
    print("| shape | tokens | S | guide | buckets | fine | coarse | plan ms | dense FA2 ms | plan / dense |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_ctx in (int(n) for n in args.ctx.split(",")):
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = k = v = None  # free the previous length's inputs before allocating
        q = torch.randn(1, q_heads, n_ctx, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, kv_heads, n_ctx, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn_like(k)
        dense = dense_ms(q, k, v)
        for segment in (int(s) for s in args.segments.split(",")):
            for guide in args.guides.split(","):
                variants = [(int(b), float(f), int(c)) for b in args.buckets.split(",") for f in args.fine.split(",")
                            for c in args.coarse.split(",")]
                for n_buckets, fine, coarse in variants:
                    options = dict(segment=segment, guide=guide, n_buckets=n_buckets, fine_fraction=fine, n_coarse=coarse)

                    def plan(q=q, k=k, options=options):
                        return s2o_plan(q, k, **options)
                    ms = triton.testing.do_bench(plan)
                    print(f"| {args.shape} | {n_ctx} | {segment} | {guide} | {n_buckets} | {fine} | {coarse} | {ms:.2f} | {dense:.2f} "
                          f"| {ms / dense:.3f} |", flush=True)
                    if args.profile:
                        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                            plan()
                            torch.cuda.synchronize()
                        for event in prof.events():
                            took = getattr(event, "device_time", None) or getattr(event, "cuda_time", 0.0)
                            if took:
                                print(f"    {event.name[:60]:60s} {took / 1000:8.3f} ms")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
