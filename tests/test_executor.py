"""The index-guided executor against its PyTorch twins: dense identity at tau = 0, plan replay, stop rule.

On a CPU-only machine the Triton kernel runs under TRITON_INTERPRET=1 (tests/conftest.py sets it
before anything imports triton) with small pinned tiles; shapes stay tiny because the interpreter is
slow. bf16 needs a GPU (the interpreter's bf16 dot is wrong), so those cases are marked gpu.
"""

from __future__ import annotations

import pytest
import torch

from s2o_kernels import (
    ExecConfig,
    Plan,
    check_stop_rule,
    dense_plan,
    sparse_attention,
    torch_decide_chunks,
    exact_reference,
    torch_sparse_attention,
)

import tiny_models

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GPU = pytest.mark.gpu
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


# ---------------------------------------------------------------------------------------------
# Inputs and plans built by the test itself (the real planners live elsewhere).
# ---------------------------------------------------------------------------------------------
def make_qkv(seed: int, batch: int, q_heads: int, kv_heads: int, n_ctx: int, head_dim: int,
             dtype=torch.float16, heavy: float = 0.0):
    """``tiny_models.make_qkv`` on this file's device; ``heavy`` concentrates attention as on real text,
    so that early stopping has mass to find."""
    q, k, v = tiny_models.make_qkv(seed, n_ctx, batch=batch, q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim,
                                   hot=heavy)
    return (t.to(dtype).to(DEVICE) for t in (q, k, v))


def build_plan(q, k, segment: int, sinks: int, *, seed: int, per_head: bool = False, rank: str = "random",
               keep: float = 1.0, permute_queries: bool = False) -> Plan:
    """Lists over each segment's prefix [sinks, s*S): all keys (keep = 1) or a random subset, ordered
    at random (rank="random") or by a mean-query guide score, highest first (rank="guide")."""
    gen = torch.Generator().manual_seed(seed)
    batch, q_heads, n_ctx, _ = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    h_plan = q_heads if per_head else kv_heads
    n_seg = -(-n_ctx // segment)
    lists, starts, lengths = [], torch.zeros(batch, h_plan, n_seg, dtype=torch.int64), torch.zeros(batch, h_plan, n_seg, dtype=torch.int32)
    for b in range(batch):
        row, offset = [], 0
        for hp in range(h_plan):
            kvh = hp // group if per_head else hp
            heads = [hp] if per_head else list(range(hp * group, (hp + 1) * group))
            for s in range(n_seg):
                prefix = torch.arange(sinks, max(sinks, s * segment))
                if keep < 1.0 and prefix.numel():
                    prefix = prefix[torch.rand(prefix.numel(), generator=gen) < keep]
                if rank == "guide" and prefix.numel():
                    guide = q[b, heads, s * segment:(s + 1) * segment].float().mean(dim=(0, 1)).cpu()
                    prefix = prefix[torch.argsort(k[b, kvh, prefix].float().cpu() @ guide, descending=True)]
                else:
                    prefix = prefix[torch.randperm(prefix.numel(), generator=gen)]
                starts[b, hp, s], lengths[b, hp, s] = offset, prefix.numel()
                row.append(prefix)
                offset += prefix.numel()
        lists.append(torch.cat(row) if row else torch.zeros(0, dtype=torch.int64))
    width = max(x.numel() for x in lists)
    key_index = torch.zeros(batch, h_plan, max(width, 1), dtype=torch.int32)
    # All plan heads of a batch entry share one flat row here, so key_index[b, h] repeats it.
    for b in range(batch):
        key_index[b, :, : lists[b].numel()] = lists[b].to(torch.int32)
    order = None
    if permute_queries:
        order = torch.empty(batch, h_plan, n_ctx, dtype=torch.int32)
        for b in range(batch):
            for hp in range(h_plan):
                for s in range(n_seg):
                    lo, hi = s * segment, min((s + 1) * segment, n_ctx)
                    order[b, hp, lo:hi] = (lo + torch.randperm(hi - lo, generator=gen)).to(torch.int32)
        order = order.to(DEVICE)
    plan = Plan(segment=segment, sinks=sinks, key_index=key_index.to(DEVICE), list_start=starts.to(DEVICE),
                list_len=lengths.to(DEVICE), query_order=order)
    plan.check(q, k, thorough=True)
    return plan


def count_pairs(plan: Plan, chunks: torch.Tensor, q_heads: int, kv_heads: int, n_ctx: int, block_m: int,
                block_n: int) -> torch.Tensor:
    """QK pairs per (batch, q head), counted row by row from the plan (independent of ExecStats)."""
    group = q_heads // kv_heads
    batch = chunks.shape[0]
    pairs = torch.zeros(batch, q_heads, dtype=torch.int64)
    for b in range(batch):
        for h in range(q_heads):
            hp = h if plan.heads == q_heads and plan.heads != kv_heads else h // group
            for p in range(n_ctx):
                seg = p // plan.segment
                tile = (p // block_m)  # tiles never straddle segments, and query_order stays in-segment
                walked = min(int(chunks[b, h, tile]) * block_n, int(plan.list_len[b, hp, seg]))
                pairs[b, h] += min(plan.sinks, seg * plan.segment) + (p - seg * plan.segment + 1) + walked
    return pairs


def full_chunks(plan: Plan, q_heads: int, kv_heads: int, n_ctx: int, block_m: int, block_n: int) -> torch.Tensor:
    """Chunks per (batch, q head, tile) when the walk never stops."""
    tile_seg = torch.arange(-(-n_ctx // block_m)) * block_m // plan.segment
    heads = torch.arange(q_heads)
    plan_head = heads // (q_heads // kv_heads) if plan.heads == kv_heads else heads
    return (plan.list_len.cpu().long()[:, plan_head][:, :, tile_seg] + block_n - 1) // block_n


def run(q, k, v, plan, tau, block_m, block_n, stop_rule="chunk", patience=1, **kwargs):
    return sparse_attention(q, k, v, plan, tau=tau, config=ExecConfig(block_m=block_m, block_n=block_n, **kwargs),
                            stop_rule=stop_rule, patience=patience, return_stats=True)


def assert_close(actual, expected, dtype):
    assert torch.isfinite(actual).all(), "executor produced NaN/inf"
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), **TOL[dtype])


# ---------------------------------------------------------------------------------------------
# tau = 0: every plan holding all prefix keys is dense causal attention.
# ---------------------------------------------------------------------------------------------
DENSE_CASES = [
    # (batch, q_heads, kv_heads, n_ctx, head_dim, segment, sinks, block_m, block_n)
    pytest.param(1, 2, 2, 37, 64, 16, 0, 16, 16, id="mha-N37-d64"),
    pytest.param(1, 2, 1, 20, 64, 32, 0, 16, 16, id="gqa2-N20-one-segment-empty-lists"),
    pytest.param(2, 4, 1, 100, 128, 32, 4, 8, 16, id="gqa4-N100-d128-sinks4-B2"),
    pytest.param(1, 8, 1, 200, 64, 64, 16, 2, 32, id="gqa8-N200-d64-sinks16"),
    pytest.param(1, 6, 2, 77, 256, 32, 3, 16, 16, id="gqa3pad-N77-d256-sinks3"),
]


@pytest.mark.parametrize("batch,q_heads,kv_heads,n_ctx,head_dim,segment,sinks,block_m,block_n", DENSE_CASES)
def test_dense_plan_tau0_is_dense_causal(batch, q_heads, kv_heads, n_ctx, head_dim, segment, sinks, block_m, block_n):
    q, k, v = make_qkv(1000 + n_ctx, batch, q_heads, kv_heads, n_ctx, head_dim)
    plan = dense_plan(q, k, segment, sinks, block_m)
    out, stats = run(q, k, v, plan, 0.0, block_m, block_n)
    assert out.shape == q.shape and out.dtype == q.dtype
    dense = exact_reference(q, k, v)
    assert_close(out, dense, q.dtype)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(q_heads // kv_heads, 1), v.float().repeat_interleave(q_heads // kv_heads, 1),
        is_causal=True)
    assert_close(out, sdpa, q.dtype)
    causal = n_ctx * (n_ctx + 1) // 2
    assert stats.causal_pairs == causal
    assert torch.equal(stats.computed_pairs.cpu(), torch.full((batch, q_heads), causal, dtype=torch.int64))
    assert stats.density == 1.0
    assert torch.equal(stats.density_per_head.cpu(), torch.ones(q_heads, dtype=torch.float64))
    assert stats.chunks.shape == (batch, q_heads, -(-n_ctx // block_m))


@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per-head"])
def test_permuted_lists_and_query_order_tau0_is_dense(per_head):
    batch, q_heads, kv_heads, n_ctx, head_dim, segment, sinks = 2, 4, 2, 150, 64, 32, 5
    q, k, v = make_qkv(7 + per_head, batch, q_heads, kv_heads, n_ctx, head_dim)
    plan = build_plan(q, k, segment, sinks, seed=11, per_head=per_head, permute_queries=True)
    block_m = 8 if not per_head else 16
    out, stats = run(q, k, v, plan, 0.0, block_m, 16)
    assert_close(out, exact_reference(q, k, v), q.dtype)
    assert stats.density == 1.0


# ---------------------------------------------------------------------------------------------
# Plans that select keys (block-sparse peers): executor == reference replay, pairs counted.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,q_heads,kv_heads,n_ctx,head_dim,block_m,block_n", [
    pytest.param(1, 4, 4, 200, 64, 16, 16, id="mha-N200"),
    pytest.param(2, 8, 2, 100, 128, 32, 32, id="gqa4-N100-B2"),
])
def test_subset_lists_per_head_match_reference(batch, q_heads, kv_heads, n_ctx, head_dim, block_m, block_n):
    q, k, v = make_qkv(21 + n_ctx, batch, q_heads, kv_heads, n_ctx, head_dim)
    plan = build_plan(q, k, 32, 2, seed=5, per_head=True, keep=0.4, permute_queries=True)
    out, stats = run(q, k, v, plan, 0.0, block_m, block_n)
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=block_m, block_n=block_n)
    assert_close(out, expected, q.dtype)
    pairs = count_pairs(plan, stats.chunks.cpu(), q_heads, kv_heads, n_ctx, block_m, block_n)
    assert torch.equal(stats.computed_pairs.cpu(), pairs)
    assert 0.3 < stats.density < 0.9
    # Selection changed the result: dense attention is measurably different.
    assert (out.float() - exact_reference(q, k, v)).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# tau > 0: early stopping happens, obeys the rule, and the replay matches.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q_heads,kv_heads,head_dim,per_head,block_m,block_n,launch", [
    pytest.param(4, 1, 64, False, 8, 16, {"stop_burst": 1}, id="gqa4-shared-while"),
    pytest.param(4, 1, 64, False, 8, 16, {"stop_burst": 8}, id="gqa4-shared-burst8"),
    pytest.param(2, 2, 128, True, 16, 16, {"stop_burst": 4}, id="mha-per-head-d128-burst4"),
    pytest.param(6, 2, 64, False, 8, 32, {"stop_burst": 2}, id="gqa3pad-shared-burst2"),
])
def test_early_stop_obeys_rule_and_matches_replay(q_heads, kv_heads, head_dim, per_head, block_m, block_n, launch):
    batch, n_ctx, segment, sinks, tau = 2, 256, 64, 4, 0.05
    q, k, v = make_qkv(300 + q_heads, batch, q_heads, kv_heads, n_ctx, head_dim, heavy=4.0)
    plan = build_plan(q, k, segment, sinks, seed=3, per_head=per_head, rank="guide", permute_queries=True)
    out, stats = run(q, k, v, plan, tau, block_m, block_n, **launch)

    full = full_chunks(plan, q_heads, kv_heads, n_ctx, block_m, block_n)
    chunks = stats.chunks.cpu().long()
    assert (chunks <= full).all()
    assert (chunks < full).any(), "no tile stopped early: the test would not exercise the stop"
    assert (chunks[full > 0] >= 1).all()

    assert check_stop_rule(q, k, v, plan, stats.chunks, tau, block_m=block_m, block_n=block_n) == []
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=block_m, block_n=block_n)
    assert_close(out, expected, q.dtype)
    pairs = count_pairs(plan, stats.chunks.cpu(), q_heads, kv_heads, n_ctx, block_m, block_n)
    assert torch.equal(stats.computed_pairs.cpu(), pairs)
    assert stats.density < 1.0
    assert stats.density == pytest.approx(pairs.double().sum().item() / (batch * q_heads * stats.causal_pairs))


@pytest.mark.parametrize("q_heads,kv_heads,head_dim,per_head,block_m,block_n,launch", [
    pytest.param(4, 1, 64, False, 8, 16, {"stop_burst": 1}, id="gqa4-shared-while"),
    pytest.param(2, 2, 128, True, 16, 16, {"stop_burst": 4}, id="mha-per-head-d128-burst4"),
    pytest.param(6, 2, 64, False, 8, 32, {"stop_burst": 2}, id="gqa3pad-shared-burst2"),
])
def test_tail_stop_obeys_rule_and_matches_replay(q_heads, kv_heads, head_dim, per_head, block_m, block_n, launch):
    # N = 200: a ragged last tile; lists of 60/124/188 keys: a ragged last chunk. heavy = 8 concentrates
    # attention enough that the tail bound (keys left x a chunk's largest mass) falls below tau early.
    batch, n_ctx, segment, sinks, tau = 1, 200, 64, 4, 0.05
    q, k, v = make_qkv(400 + q_heads, batch, q_heads, kv_heads, n_ctx, head_dim, heavy=8.0)
    plan = build_plan(q, k, segment, sinks, seed=3, per_head=per_head, rank="guide", permute_queries=True)
    out, stats = run(q, k, v, plan, tau, block_m, block_n, stop_rule="tail", **launch)

    full = full_chunks(plan, q_heads, kv_heads, n_ctx, block_m, block_n)
    chunks = stats.chunks.cpu().long()
    assert (chunks <= full).all() and (chunks[full > 0] >= 1).all()
    assert (chunks < full).any(), "no tile stopped early: the test would not exercise the tail stop"
    assert check_stop_rule(q, k, v, plan, stats.chunks, tau, block_m=block_m, block_n=block_n, stop_rule="tail") == []
    # The checker can fail: walking every list breaks "stop at the first chunk with a small tail bound".
    walked_all = full.to(stats.chunks)
    assert check_stop_rule(q, k, v, plan, walked_all, tau, block_m=block_m, block_n=block_n, stop_rule="tail")
    decided = torch_decide_chunks(q, k, plan, tau, block_m=block_m, block_n=block_n, stop_rule="tail")
    # The no-GPU path decides in float64: on these fixed inputs no bound lies within fp32 rounding of tau.
    assert torch.equal(decided, stats.chunks.cpu())
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=block_m, block_n=block_n)
    assert_close(out, expected, q.dtype)
    pairs = count_pairs(plan, chunks, q_heads, kv_heads, n_ctx, block_m, block_n)
    assert torch.equal(stats.computed_pairs.cpu(), pairs)
    assert stats.density < 1.0


@pytest.mark.parametrize("q_heads,kv_heads,per_head,block_m,launch,patience", [
    pytest.param(4, 1, False, 8, {"stop_burst": 1}, 2, id="gqa4-shared-while-p2"),
    pytest.param(4, 1, False, 8, {"stop_burst": 2}, 3, id="gqa4-shared-p3"),
    pytest.param(2, 1, True, 16, {"stop_burst": 2}, 3, id="gqa2-per-head-burst2-p3"),
    pytest.param(2, 1, True, 16, {"stop_burst": 2, "interleave_heads": False}, 3, id="gqa2-per-head-head-major-p3"),
    pytest.param(2, 2, True, 16, {"stop_burst": 4}, 2, id="mha-per-head-burst4-p2"),
])
def test_patience_walks_past_dull_chunks_and_obeys_rule(q_heads, kv_heads, per_head, block_m, launch, patience):
    # N = 300: ragged last tile and chunk. The order is random, so dull chunks come before bright ones:
    # what patience is for.
    batch, n_ctx, segment, sinks, tau, block_n = 1, 300, 64, 4, 0.2, 16
    q, k, v = make_qkv(500 + patience, batch, q_heads, kv_heads, n_ctx, 64, heavy=4.0)
    plan = build_plan(q, k, segment, sinks, seed=5, per_head=per_head, rank="random")
    _, eager = run(q, k, v, plan, tau, block_m, block_n, **launch)
    out, stats = run(q, k, v, plan, tau, block_m, block_n, patience=patience, **launch)

    full = full_chunks(plan, q_heads, kv_heads, n_ctx, block_m, block_n)
    chunks, eager_chunks = stats.chunks.cpu().long(), eager.chunks.cpu().long()
    assert (chunks <= full).all() and (chunks >= eager_chunks).all()
    assert (chunks > eager_chunks).any(), "patience never walked further: the test would not exercise it"
    assert (chunks < full).any(), "no tile stopped early: the test would not exercise the stop"
    assert check_stop_rule(q, k, v, plan, stats.chunks, tau, block_m=block_m, block_n=block_n, patience=patience) == []
    # The checker can fail: the impatient counts break the patient rule.
    assert check_stop_rule(q, k, v, plan, eager.chunks, tau, block_m=block_m, block_n=block_n, patience=patience)
    decided = torch_decide_chunks(q, k, plan, tau, block_m=block_m, block_n=block_n, patience=patience)
    assert (decided != stats.chunks.cpu()).float().mean() < 0.05  # float64 vs fp32 decisions near tau
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=block_m, block_n=block_n)
    assert_close(out, expected, q.dtype)
    assert torch.equal(stats.computed_pairs.cpu(), count_pairs(plan, chunks, q_heads, kv_heads, n_ctx, block_m, block_n))


def test_stop_rule_check_catches_wrong_counts():
    q, k, v = make_qkv(9, 1, 2, 1, 128, 64, heavy=4.0)
    plan = build_plan(q, k, 32, 0, seed=1, rank="guide")
    out, stats = run(q, k, v, plan, 0.05, 16, 16)
    assert check_stop_rule(q, k, v, plan, stats.chunks, 0.05, block_m=16, block_n=16) == []
    walked_all = full_chunks(plan, 2, 1, 128, 16, 16).to(stats.chunks)
    # A tile that stopped early, forced to walk everything, breaks "stop at the first small chunk".
    assert not torch.equal(walked_all, stats.chunks)
    assert check_stop_rule(q, k, v, plan, walked_all, 0.05, block_m=16, block_n=16)
    assert check_stop_rule(q, k, v, plan, stats.chunks, 0.0, block_m=16, block_n=16)  # tau 0 walks all


def test_tau_zero_walks_everything_and_large_tau_stops_after_one_chunk():
    q, k, v = make_qkv(17, 1, 2, 2, 96, 64)
    plan = build_plan(q, k, 32, 0, seed=2, per_head=True)
    _, walk_all = run(q, k, v, plan, 0.0, 16, 16)
    _, walk_all_tail = run(q, k, v, plan, 0.0, 16, 16, stop_rule="tail")
    _, stop_soon = run(q, k, v, plan, 1.5, 16, 16)  # gains never reach 1.5: every walk stops at once
    full = full_chunks(plan, 2, 2, 96, 16, 16)
    assert torch.equal(walk_all.chunks.cpu().long(), full)
    assert torch.equal(walk_all_tail.chunks.cpu().long(), full)  # tau 0 never stops, whatever the rule
    assert torch.equal(stop_soon.chunks.cpu().long(), full.clamp(max=1))


# ---------------------------------------------------------------------------------------------
# Validation: clear errors for bad plans and inputs.
# ---------------------------------------------------------------------------------------------
def test_plan_check_rejects_bad_plans():
    q, k, v = make_qkv(0, 1, 2, 1, 64, 64)
    plan = dense_plan(q, k, 32, 4)
    with pytest.raises(ValueError, match="multiple of the tile"):
        plan.check(q, k, block_m=24)
    bad = Plan(32, 4, plan.key_index.long(), plan.list_start, plan.list_len)
    with pytest.raises(ValueError, match="key_index"):
        bad.check(q, k)
    bad = Plan(32, 4, plan.key_index, plan.list_start[..., :1], plan.list_len)
    with pytest.raises(ValueError, match="list_start"):
        bad.check(q, k)
    repeated = plan.key_index.clone()
    repeated[0, 0, 1] = repeated[0, 0, 0]
    with pytest.raises(ValueError, match="repeats a key"):
        Plan(32, 4, repeated, plan.list_start, plan.list_len).check(q, k, thorough=True)
    outside = plan.key_index.clone()
    outside[0, 0, 0] = 2  # a sink
    with pytest.raises(ValueError, match="outside"):
        Plan(32, 4, outside, plan.list_start, plan.list_len).check(q, k, thorough=True)
    order = torch.arange(64, dtype=torch.int32, device=q.device).flip(0).view(1, 1, 64).contiguous()
    with pytest.raises(ValueError, match="same segment"):
        Plan(32, 4, plan.key_index, plan.list_start, plan.list_len, order).check(q, k, thorough=True)


def test_executor_rejects_bad_inputs():
    q, k, v = make_qkv(0, 1, 4, 2, 64, 64)
    plan = dense_plan(q, k, 32, 0)
    cfg = ExecConfig(block_m=16, block_n=16)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        sparse_attention(q.float(), k.float(), v.float(), plan, config=cfg)
    with pytest.raises(ValueError, match="head_dim"):
        sparse_attention(q[..., :48], k[..., :48], v[..., :48], plan, config=cfg)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        sparse_attention(q[:, :3], k, v, plan, config=cfg)
    with pytest.raises(ValueError, match="tau"):
        sparse_attention(q, k, v, plan, tau=-0.1, config=cfg)
    with pytest.raises(ValueError, match="stop_rule must be one of chunk, tail"):
        sparse_attention(q, k, v, plan, tau=0.1, config=cfg, stop_rule="unseen")
    with pytest.raises(ValueError, match="stop_rule"):
        check_stop_rule(q, k, v, plan, torch.zeros(1, 4, 4, dtype=torch.int32), 0.1, block_m=16, block_n=16,
                        stop_rule="unseen")
    with pytest.raises(ValueError, match="block_m"):
        sparse_attention(q, k, v, plan, config=ExecConfig(block_m=64, block_n=16))  # 64 does not divide 32
    with pytest.raises(ValueError, match="plan has 3 heads"):
        sparse_attention(q, k, v, dense_plan(q, torch.zeros(1, 3, 64, 64), 32, 0), config=cfg)


def test_exec_config_from_environment(monkeypatch):
    assert ExecConfig.parse("block_m=16, block_n=32,num_warps=8,stop_burst=1,maxnreg=128") == \
        ExecConfig(16, 32, 8, 2, stop_burst=1, maxnreg=128)
    with pytest.raises(ValueError, match="block_m"):
        ExecConfig.parse("block_n=32")
    q, k, v = make_qkv(4, 1, 2, 2, 40, 64)
    monkeypatch.setenv("S2O_EXEC_CONFIG", "block_m=16,block_n=32")
    out, stats = sparse_attention(q, k, v, dense_plan(q, k, 16, 0), return_stats=True)
    assert (stats.block_m, stats.block_n) == (16, 32)
    assert stats.chunks.shape[-1] == 3
    assert_close(out, exact_reference(q, k, v), q.dtype)


# ---------------------------------------------------------------------------------------------
# bf16 (the CPU interpreter's bf16 dot is wrong, so these need a GPU).
# ---------------------------------------------------------------------------------------------
@GPU
@NEEDS_GPU
@pytest.mark.parametrize("q_heads,kv_heads,head_dim,config", [
    pytest.param(4, 1, 64, ExecConfig(block_m=32, block_n=64, stop_burst=4), id="gqa4-d64-pinned"),
    pytest.param(8, 8, 128, None, id="mha-d128-autotuned"),
    pytest.param(8, 2, 256, ExecConfig(block_m=16, block_n=64, stop_burst=1), id="gqa4-d256-burst1"),
    pytest.param(8, 8, 128, ExecConfig(block_m=128, block_n=64, num_warps=8, maxnreg=128), id="mha-d128-two-programs"),
])
def test_bf16_dense_and_early_stop(q_heads, kv_heads, head_dim, config):
    n_ctx = 1000
    q, k, v = make_qkv(55, 2, q_heads, kv_heads, n_ctx, head_dim, dtype=torch.bfloat16, heavy=4.0)
    out, stats = sparse_attention(q, k, v, dense_plan(q, k, 128, 4), config=config, return_stats=True)
    assert_close(out, exact_reference(q, k, v), q.dtype)
    assert stats.density == 1.0
    plan = build_plan(q, k, 128, 4, seed=8, rank="guide", permute_queries=True)
    out, stats = sparse_attention(q, k, v, plan, tau=0.01, config=config, return_stats=True)
    full = full_chunks(plan, q_heads, kv_heads, n_ctx, stats.block_m, stats.block_n)
    assert (stats.chunks.cpu().long() < full).any()
    assert check_stop_rule(q, k, v, plan, stats.chunks, 0.01, block_m=stats.block_m, block_n=stats.block_n) == []
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=stats.block_m, block_n=stats.block_n)
    assert_close(out, expected, q.dtype)
