"""Plain-PyTorch twins of the executor, in fp32 (float64 for the stopping rule), for tests.

``torch_sparse_attention`` computes what ``sparse_attention`` computes from the same plan, REPLAYING
the kernel's per-tile chunk counts (``ExecStats.chunks``) instead of re-deciding the stop, so that a
tile whose gain lands within rounding of tau cannot make the two disagree. ``check_stop_rule``
then checks those chunk counts against the rule itself. Shapes: q (batch, q_heads, seq_len, head_dim),
k, v (batch, kv_heads, seq_len, head_dim). Memory is O(seq_len^2) per head: tests only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .plan import Plan


def torch_dense_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Dense causal attention in fp32 (GQA: kv head h serves q heads [h*G, (h+1)*G))."""
    group = q.shape[1] // k.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = q.float() @ kf.transpose(-1, -2) * scale
    n_ctx = q.shape[2]
    causal = torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ vf


def _plan_head(plan: Plan, q_head: int, group: int, kv_heads: int) -> int:
    return q_head // group if plan.heads == kv_heads else q_head


def _tile_positions(plan: Plan, b: int, hp: int, tile: int, block_m: int, n_ctx: int) -> Tensor:
    lo, hi = tile * block_m, min((tile + 1) * block_m, n_ctx)
    if plan.query_order is None:
        return torch.arange(lo, hi, device=plan.key_index.device)
    return plan.query_order[b, hp, lo:hi].long()


def _pass1_mask(plan: Plan, rows: Tensor, seg_start: int, n_ctx: int) -> Tensor:
    """(rows, N) keys of pass 1: sinks before the segment, own segment up to each row's position."""
    keys = torch.arange(n_ctx, device=rows.device)
    sinks = keys < min(plan.sinks, seg_start)
    own = (keys >= seg_start) & (keys <= rows[:, None])
    return sinks[None, :] | own


def _list_keys(plan: Plan, b: int, hp: int, seg: int) -> Tensor:
    start, length = int(plan.list_start[b, hp, seg]), int(plan.list_len[b, hp, seg])
    return plan.key_index[b, hp, start:start + length].long()


def torch_sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, chunks: Tensor, scale: float | None = None,
                           block_m: int, block_n: int) -> Tensor:
    """fp32 output of the executor's function, with pass 2 walking ``chunks[b, h, t]`` chunks per tile.

    The online softmax is order-free, so each row is one softmax over the union of its pass-1 keys
    and the first ``min(chunks * block_n, list_len)`` keys of its segment's list.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_tiles = -(-n_ctx // block_m)
    if tuple(chunks.shape) != (batch, q_heads, n_tiles):
        raise ValueError(f"chunks must have shape {(batch, q_heads, n_tiles)} for block_m {block_m}; got {tuple(chunks.shape)}")
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    for b in range(batch):
        for h in range(q_heads):
            hp, kvh = _plan_head(plan, h, group, kv_heads), h // group
            scores = q[b, h].float() @ k[b, kvh].float().T * scale  # (N, N)
            for t in range(n_tiles):
                rows = _tile_positions(plan, b, hp, t, block_m, n_ctx)
                seg = t * block_m // plan.segment
                allowed = _pass1_mask(plan, rows, seg * plan.segment, n_ctx)
                keys = _list_keys(plan, b, hp, seg)[: int(chunks[b, h, t]) * block_n]
                allowed[:, keys] = True
                probs = torch.softmax(scores[rows].masked_fill(~allowed, float("-inf")), dim=-1)
                out[b, h, rows] = probs @ v[b, kvh].float()
    return out


def check_stop_rule(q: Tensor, k: Tensor, v: Tensor, plan: Plan, chunks: Tensor, tau: float, *,
                    scale: float | None = None, block_m: int, block_n: int, rtol: float = 2e-3,
                    atol: float = 1e-7) -> list[str]:
    """Recompute each tile's chunk gains in float64 and list every way ``chunks`` breaks the rule.

    A tile's rows are its positions for every query head the program served (the G heads of a kv
    head when lists are shared). gain_i(c) = mass of chunk c / mass of pass 1 and chunks 0..c for
    row i. The rule: a tile with a non-empty list walks >= 1 chunk; every chunk before the last walked
    had max_i gain >= tau; the walk ends at the first chunk with max_i gain < tau or at the list's end
    (tau = 0: always the end). ``rtol`` / ``atol`` absorb fp rounding of gains near tau. Returns a list
    of messages, empty when the counts obey the rule.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    shared = plan.heads == kv_heads
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_tiles = -(-n_ctx // block_m)
    problems: list[str] = []
    for b in range(batch):
        for hp in range(plan.heads):
            heads = list(range(hp * group, (hp + 1) * group)) if shared else [hp]
            kvh = hp if shared else hp // group
            kd = k[b, kvh].double()
            for t in range(n_tiles):
                walked = {int(chunks[b, h, t]) for h in heads}
                where = f"batch {b}, plan head {hp}, tile {t}"
                if len(walked) != 1:
                    problems.append(f"{where}: heads sharing a list walked different chunk counts {sorted(walked)}")
                    continue
                walked_n = walked.pop()
                rows = _tile_positions(plan, b, hp, t, block_m, n_ctx)
                seg = t * block_m // plan.segment
                keys = _list_keys(plan, b, hp, seg)
                n_chunks = -(-keys.numel() // block_n)
                if not (min(n_chunks, 1) <= walked_n <= n_chunks):
                    problems.append(f"{where}: walked {walked_n} chunks of {n_chunks}")
                    continue
                if walked_n == n_chunks and (tau == 0 or n_chunks == 0):
                    continue
                if tau == 0:
                    problems.append(f"{where}: tau = 0 but stopped after {walked_n} of {n_chunks} chunks")
                    continue
                gains = _max_gains(q[b, heads].double(), kd, rows, keys, plan, seg, n_ctx, scale, block_n)
                for c in range(walked_n - 1):
                    if gains[c] < tau * (1 - rtol) - atol:
                        problems.append(f"{where}: walked on after chunk {c} whose max gain {gains[c]:.3g} < tau {tau:g}")
                        break
                last = walked_n - 1
                if walked_n < n_chunks and gains[last] >= tau * (1 + rtol) + atol:
                    problems.append(f"{where}: stopped after chunk {last} whose max gain {gains[last]:.3g} >= tau {tau:g}")
    return problems


def _max_gains(qd: Tensor, kd: Tensor, rows: Tensor, keys: Tensor, plan: Plan, seg: int, n_ctx: int, scale: float,
               block_n: int) -> list[float]:
    """Per chunk of ``keys``: the largest gain over the tile's rows (all heads in ``qd (heads, N, D)``)."""
    scores = qd[:, rows] @ kd.T * scale  # (heads, rows, N)
    pass1 = _pass1_mask(plan, rows, seg * plan.segment, n_ctx)
    # Masses relative to each row's pass-1 maximum: every denominator is then >= 1 (float64 range).
    ref = scores.masked_fill(~pass1, float("-inf")).amax(-1, keepdim=True)
    mass = torch.exp(scores - ref)
    pass1_mass = (mass * pass1).sum(-1)
    n_chunks = -(-keys.numel() // block_n)
    padded = torch.zeros(mass.shape[:2] + (n_chunks * block_n,), dtype=mass.dtype, device=mass.device)
    padded[..., : keys.numel()] = mass[..., keys]
    chunk_mass = padded.view(*mass.shape[:2], n_chunks, block_n).sum(-1)
    gains = chunk_mass / (pass1_mass[..., None] + chunk_mass.cumsum(-1))
    return gains.flatten(0, 1).amax(0).tolist()
