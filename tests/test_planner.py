"""S2O planner (Triton and its PyTorch twin) and the token oracle.

On a CPU-only machine the Triton planner runs under TRITON_INTERPRET=1 (tests/conftest.py sets it
before anything imports triton), so shapes stay tiny. The interpreter's bf16 dot is wrong: bf16
cases need a GPU.
"""

from __future__ import annotations

import pytest
import torch

from s2o_kernels.oracle import segment_key_mass, token_oracle_plan
from s2o_kernels.plan import Plan, plan_layout
from s2o_kernels.planner import (
    _guides_for,
    bucket_scales,
    torch_bucket_ids,
    s2o_plan,
    torch_s2o_plan,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")

# (batch, q_heads, kv_heads, seq_len, head_dim, segment, block_m, sinks): ragged last segments,
# GQA and not, sinks 0, inside the first segment, and longer than a segment.
SHAPES = [
    (1, 2, 1, 200, 32, 64, 32, 8),
    (2, 2, 2, 130, 16, 32, 16, 0),
    (1, 4, 2, 96, 16, 16, 16, 40),
]


def make_qk(seed, batch, q_heads, kv_heads, n_ctx, head_dim, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, n_ctx, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, n_ctx, head_dim, generator=gen)
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype)


def segment_lists(plan: Plan):
    """Yield (batch, plan head, segment, keys as a LongTensor) for every list of the plan."""
    for b in range(plan.key_index.shape[0]):
        for h in range(plan.key_index.shape[1]):
            for s in range(plan.list_len.shape[-1]):
                start, n = int(plan.list_start[b, h, s]), int(plan.list_len[b, h, s])
                yield b, h, s, plan.key_index[b, h, start:start + n].long()


def list_scores(q, k, plan: Plan, guide: str, b: int, h: int, s: int, keys):
    """The twin's ranking score of each listed key (guide . key, fp32)."""
    guides = _guides_for(q, k, plan.segment, guide)[:, :, :, 0, :]
    group = q.shape[1] // k.shape[1]
    kv_head = h // group if guides.shape[1] == q.shape[1] else h
    return k[b, kv_head, keys].float() @ guides[b, h, s]


def check_lists_hold_every_prefix_key(plan: Plan, n_ctx: int):
    lengths, starts = plan_layout(n_ctx, plan.segment, plan.sinks)
    assert plan.key_index.dtype == torch.int32 and plan.list_len.dtype == torch.int32
    assert plan.list_start.dtype == torch.int64
    assert plan.key_index.shape[-1] == int(lengths.sum())
    for b, h, s, keys in segment_lists(plan):
        assert int(plan.list_start[b, h, s]) == int(starts[s])
        expected = torch.arange(plan.sinks, max(plan.sinks, s * plan.segment), device=keys.device)
        assert torch.equal(keys.sort().values, expected), f"list (b {b}, h {h}, s {s}) is not its whole prefix"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("guide", ["mean", "head_mean", "head_mix"])
def test_twin_lists_every_prefix_key_once_in_descending_score(shape, guide):
    batch, q_heads, kv_heads, n_ctx, head_dim, segment, block_m, sinks = shape
    q, k = make_qk(0, batch, q_heads, kv_heads, n_ctx, head_dim)
    plan = torch_s2o_plan(q, k, segment=segment, sinks=sinks, block_m=block_m, guide=guide)
    plan.check(q, k, block_m=block_m, thorough=True)
    assert plan.heads == (q_heads if guide == "head_mean" else kv_heads)
    assert plan.query_order is None
    check_lists_hold_every_prefix_key(plan, n_ctx)
    if guide != "head_mix":
        for b, h, s, keys in segment_lists(plan):
            score = list_scores(q, k, plan, guide, b, h, s, keys)
            assert bool((score[1:] <= score[:-1] + 1e-5).all()), "twin lists must be sorted by score"


def emulated_buckets(score, n_buckets, n_coarse, fine_fraction):
    """Bucket of each score as the Triton planner defines it, from exact statistics, and a mask of the
    scores far enough from every bucket edge that the kernel's own rounding cannot move them."""
    score = score.double()
    top, bottom, mean, std = score.max(), score.min(), score.mean(), score.std(unbiased=False)
    top, threshold, fine_inv, coarse_inv = (x.double() for x in bucket_scales(
        top, bottom, mean, std, n_buckets=n_buckets, n_coarse=n_coarse, fine_fraction=fine_fraction))
    fine_pos = (top - score) * fine_inv
    coarse_pos = (threshold - score) * coarse_inv
    bucket = torch_bucket_ids(score, top, threshold, fine_inv, coarse_inv, n_buckets=n_buckets, n_coarse=n_coarse)
    pos = torch.where(score >= threshold, fine_pos, coarse_pos)
    clear = ((pos - pos.round()).abs() > 1e-3) & ((score - threshold).abs() > 1e-4 * (1 + threshold.abs()))
    return bucket, clear


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("guide", ["mean", "head_mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fine_fraction", [1.0, 0.3])
def test_triton_lists_are_the_twin_sets_in_bucket_order(shape, guide, dtype, fine_fraction):
    batch, q_heads, kv_heads, n_ctx, head_dim, segment, block_m, sinks = shape
    n_buckets, n_coarse = 32, 4
    q, k = make_qk(1, batch, q_heads, kv_heads, n_ctx, head_dim, dtype)
    options = dict(segment=segment, sinks=sinks, block_m=block_m, guide=guide, n_buckets=n_buckets,
                   n_coarse=n_coarse, fine_fraction=fine_fraction)
    plan = s2o_plan(q, k, **options)
    twin = torch_s2o_plan(q, k, **options)
    plan.check(q, k, block_m=block_m, thorough=True)
    assert plan.key_index.shape == twin.key_index.shape
    assert torch.equal(plan.list_start, twin.list_start) and torch.equal(plan.list_len, twin.list_len)
    check_lists_hold_every_prefix_key(plan, n_ctx)
    for (b, h, s, keys), (_, _, _, twin_keys) in zip(segment_lists(plan), segment_lists(twin)):
        if keys.numel() < 2:
            continue
        score = list_scores(q, k, plan, guide, b, h, s, keys)
        bucket, clear = emulated_buckets(score, n_buckets, n_coarse, fine_fraction)
        # Bucket by bucket: along the list a (clear) key's bucket never goes back up.
        assert bool((bucket[clear][1:] >= bucket[clear][:-1]).all())
        # Exact up to one fine bucket at the top: every key clearly in a higher bucket than the
        # list's k-th key is among its first k, as in the twin's exact order.
        top = max(1, keys.numel() // 8)
        kth_bucket = int(bucket[top - 1])
        above = set(keys[clear & (bucket < kth_bucket)].tolist())
        assert above <= set(keys[:top].tolist())
        assert set(twin_keys[:top].tolist()) >= above


def test_triton_order_is_exact_with_one_key_per_bucket():
    # Scores spread evenly over the range: with many buckets each key gets its own bucket, so the
    # Triton list must equal the twin's exact sort.
    n_ctx, dim = 64, 16
    q = torch.zeros(1, 1, n_ctx, dim, device=DEVICE)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, n_ctx, dim, device=DEVICE)
    k[0, 0, :, 0] = torch.randperm(n_ctx, generator=torch.Generator().manual_seed(3)).float().to(DEVICE)
    plan = s2o_plan(q, k, segment=16, sinks=0, block_m=16, n_buckets=1024, fine_fraction=1.0)
    twin = torch_s2o_plan(q, k, segment=16, sinks=0, block_m=16)
    assert torch.equal(plan.key_index, twin.key_index)


@pytest.mark.parametrize("guide", ["mean", "head_mean"])
def test_query_order_permutes_within_segments(guide):
    q, k = make_qk(4, 2, 4, 2, 100, 16)
    plan = s2o_plan(q, k, segment=32, sinks=0, block_m=16, guide=guide, query_permute=True)
    twin = torch_s2o_plan(q, k, segment=32, sinks=0, block_m=16, guide=guide, query_permute=True)
    plan.check(q, k, block_m=16, thorough=True)
    order = plan.query_order.long()
    assert plan.query_order.dtype == torch.int32 and torch.equal(plan.query_order, twin.query_order)
    positions = torch.arange(100, device=order.device)
    assert torch.equal(order // 32, positions.expand_as(order) // 32)
    assert torch.equal(order.sort(-1).values, positions.expand_as(order))
    # Within a segment the queries come by descending alignment with that segment's guide.
    guides = _guides_for(q, k, 32, guide)[:, :, :, 0, :]
    heads_per_plan = q.shape[1] // plan.heads
    align = torch.einsum("bhgnd,bhnd->bhn", q.view(2, plan.heads, heads_per_plan, 100, 16),
                         guides.repeat_interleave(32, 2)[:, :, :100])
    ordered = align.gather(-1, order)
    for s in range(4):
        seg = ordered[..., s * 32:(s + 1) * 32]
        assert bool((seg[..., 1:] <= seg[..., :-1] + 1e-4).all())


def test_planner_rejects_bad_arguments():
    q, k = make_qk(5, 1, 3, 2, 64, 16)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        s2o_plan(q, k, segment=32, block_m=16)
    q, k = make_qk(5, 1, 2, 1, 64, 16)
    with pytest.raises(ValueError, match="multiple of block_m"):
        torch_s2o_plan(q, k, segment=48, block_m=32)
    with pytest.raises(ValueError, match="guide"):
        s2o_plan(q, k, segment=32, block_m=16, guide="median")
    with pytest.raises(ValueError, match="n_buckets"):
        s2o_plan(q, k, segment=32, block_m=16, n_buckets=100)


def brute_force_mass(q, k, scale):
    """(B, Hq, N, N) exact causal softmax probabilities."""
    group = q.shape[1] // k.shape[1]
    scores = (q.float() @ k.float().repeat_interleave(group, 1).transpose(-1, -2)) * scale
    n_ctx = q.shape[2]
    future = torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), -1)


@pytest.mark.parametrize("segment,block_m,sinks", [(16, 16, 4), (32, 16, 0)])
def test_token_oracle_orders_by_true_mass(segment, block_m, sinks):
    q, k = make_qk(6, 1, 4, 2, 90, 16)
    q = q * 3  # peaky attention, so that masses differ clearly
    plan = token_oracle_plan(q, k, segment=segment, sinks=sinks, block_m=block_m, scale=0.25)
    plan.check(q, k, block_m=block_m, thorough=True)
    assert plan.heads == 4
    check_lists_hold_every_prefix_key(plan, 90)
    probs = brute_force_mass(q, k, 0.25)
    for b, h, s, keys in segment_lists(plan):
        if keys.numel() == 0:
            continue
        mass = probs[b, h, s * segment:(s + 1) * segment].sum(0)
        expected = torch.sort(mass[sinks:s * segment], descending=True, stable=True).indices + sinks
        assert torch.equal(keys, expected)


def test_token_oracle_mass_is_the_same_in_row_blocks(monkeypatch):
    import s2o_kernels.oracle as oracle

    q, k = make_qk(7, 1, 1, 1, 70, 16)
    whole = segment_key_mass(q[0, 0], k[0, 0], 16, 0.25)
    monkeypatch.setattr(oracle, "_ROW_BLOCK_ELEMENTS", 16 * 70)  # one segment per block
    blocked = oracle.segment_key_mass(q[0, 0], k[0, 0], 16, 0.25)
    torch.testing.assert_close(blocked, whole)
    probs = brute_force_mass(q, k, 0.25)[0, 0]
    expected = torch.stack([probs[s * 16:(s + 1) * 16].sum(0) for s in range(5)])
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=1e-5)


def test_token_oracle_passes_query_order_through():
    q, k = make_qk(8, 1, 2, 1, 40, 16)
    order = torch.arange(40, dtype=torch.int32, device=DEVICE).flip(0).view(1, 1, 40).expand(1, 2, 40).contiguous()
    order = (order % 20 + torch.arange(40, device=DEVICE) // 20 * 20).to(torch.int32)  # reversed within segments
    plan = token_oracle_plan(q, k, segment=20, sinks=0, block_m=20, query_order=order)
    plan.check(q, k, thorough=True)
    assert torch.equal(plan.query_order, order)
    with pytest.raises(ValueError, match="query_order"):
        token_oracle_plan(q, k, segment=20, sinks=0, block_m=20, query_order=order[:, :1])


@pytest.mark.parametrize("guide", ["mean", "head_mean"])
def test_executor_on_s2o_plan_at_tau_zero_is_dense(guide):
    from s2o_kernels import executor
    from s2o_kernels.reference import torch_dense_causal

    q, k = make_qk(9, 1, 2, 1, 96, 64, torch.float16)
    v = make_qk(10, 1, 1, 1, 96, 64, torch.float16)[0]
    plan = s2o_plan(q, k, segment=32, sinks=8, block_m=16, guide=guide, query_permute=True)
    out = executor.sparse_attention(q, k, v, plan, tau=0.0, block_m=16, block_n=16)
    torch.testing.assert_close(out.float(), torch_dense_causal(q, k, v).float(), atol=3e-3, rtol=3e-3)


@pytest.mark.gpu
@NEEDS_GPU
@pytest.mark.parametrize("guide", ["mean", "head_mean"])
def test_triton_bf16_lists_match_twin_sets(guide):
    q, k = make_qk(11, 2, 8, 2, 3000, 128, torch.bfloat16)
    plan = s2o_plan(q, k, segment=256, sinks=64, block_m=128, guide=guide, query_permute=True)
    twin = torch_s2o_plan(q, k, segment=256, sinks=64, block_m=128, guide=guide, query_permute=True)
    plan.check(q, k, block_m=128, thorough=True)
    check_lists_hold_every_prefix_key(plan, 3000)
    assert torch.equal(plan.query_order, twin.query_order)
