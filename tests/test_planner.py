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
from s2o_kernels.s2o.ranking import covariance_factors, ranking_scores, score_projections
from s2o_kernels.s2o.planner import s2o_plan
from s2o_kernels.reference import exact_reference

from s2o_kernels.twins import torch_s2o_plan

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
SCALE = 0.25

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


def list_scores(q, k, plan: Plan, score: str, rank: int, b: int, h: int, s: int, keys):
    """Each listed key's ranking score, float64, from the projections the planners use (rounded to k's
    dtype, as the kernel's tensor cores see them)."""
    proj = score_projections(q, k, plan.segment, score=score, rank=rank, scale=SCALE)
    vectors, offsets = proj.vectors.to(k.dtype).double()[b, h, s], proj.offsets.double()[b, h, s]
    kv_head = h // (plan.heads // k.shape[1])
    dots = k[b, kv_head, keys].double() @ vectors.T
    score = dots[:, 0] + 0.5 * ((dots[:, 1:] - offsets[1:]) ** 2).sum(-1)
    if proj.squares is not None:
        squared = (k[b, kv_head, keys].float() ** 2).to(k.dtype).double()
        score = score + squared @ proj.squares.to(k.dtype).double()[b, h, s]
    return score


def check_lists_hold_every_prefix_key(plan: Plan, n_ctx: int):
    lengths, starts = plan_layout(n_ctx, plan.segment, plan.sinks)
    assert plan.key_index.dtype == torch.int32 and plan.list_len.dtype == torch.int32
    assert plan.list_start.dtype == torch.int64
    assert plan.key_index.shape[-1] == int(lengths.sum())
    for b, h, s, keys in segment_lists(plan):
        assert int(plan.list_start[b, h, s]) == int(starts[s])
        expected = torch.arange(plan.sinks, max(plan.sinks, s * plan.segment), device=keys.device)
        assert torch.equal(keys.sort().values, expected), f"list (b {b}, h {h}, s {s}) is not its whole prefix"


def check_bucket_order(keys, score, n_buckets, span):
    """Along the list, buckets never go back up and keys of one bucket come in position order; keys
    within 1e-3 of a bucket edge (where fp32 rounding may tip them over) may sit in either bucket."""
    position = (score.max() - score) * (n_buckets / span)
    bucket = position.floor().clamp(0, n_buckets - 1)
    edge = ((position - position.round()).abs() < 1e-3) & (position < n_buckets)
    clear = ~edge
    assert bool((bucket[clear][1:] >= bucket[clear][:-1]).all()), "a bucket came after a lower one"
    for value in bucket[clear].unique():
        inside = keys[clear & (bucket == value)]
        assert bool((inside[1:] > inside[:-1]).all()), "keys of one bucket are not in position order"


SCORE_CASES = [("mean", 1), ("head_mean", 1), ("gauss", 4), ("diag", 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("score,rank", SCORE_CASES)
def test_twin_lists_every_prefix_key_once_by_score(shape, score, rank):
    batch, q_heads, kv_heads, n_ctx, head_dim, segment, block_m, sinks = shape
    q, k = make_qk(0, batch, q_heads, kv_heads, n_ctx, head_dim)
    options = dict(segment=segment, sinks=sinks, block_m=block_m, score=score, rank=rank, scale=SCALE)
    exact = torch_s2o_plan(q, k, n_buckets=0, **options)
    bucketed = torch_s2o_plan(q, k, n_buckets=16, span=2.0, **options)
    for plan in (exact, bucketed):
        plan.check(q, k, block_m=block_m, thorough=True)
        assert plan.heads == (kv_heads if score == "mean" else q_heads)
        assert plan.query_order is None
        check_lists_hold_every_prefix_key(plan, n_ctx)
    for (b, h, s, keys), (_, _, _, bucket_keys) in zip(segment_lists(exact), segment_lists(bucketed)):
        if keys.numel() < 2:
            continue
        ranked = list_scores(q, k, exact, score, rank, b, h, s, keys)
        assert bool((ranked[1:] <= ranked[:-1] + 1e-9).all()), "exact order is not descending"
        check_bucket_order(bucket_keys, list_scores(q, k, exact, score, rank, b, h, s, bucket_keys), 16, 2.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("score,rank", SCORE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_lists_are_the_twin_lists(shape, score, rank, dtype):
    batch, q_heads, kv_heads, n_ctx, head_dim, segment, block_m, sinks = shape
    q, k = make_qk(1, batch, q_heads, kv_heads, n_ctx, head_dim, dtype)
    options = dict(segment=segment, sinks=sinks, block_m=block_m, score=score, rank=rank, n_buckets=32, span=3.0,
                   scale=SCALE)
    plan = s2o_plan(q, k, **options)
    twin = torch_s2o_plan(q, k, **options)
    plan.check(q, k, block_m=block_m, thorough=True)
    assert plan.key_index.shape == twin.key_index.shape
    assert torch.equal(plan.list_start, twin.list_start) and torch.equal(plan.list_len, twin.list_len)
    check_lists_hold_every_prefix_key(plan, n_ctx)
    for b, h, s, keys in segment_lists(plan):
        if keys.numel() > 1:
            check_bucket_order(keys, list_scores(q, k, plan, score, rank, b, h, s, keys), 32, 3.0)
    # Away from bucket edges the two are the same stable counting sort: nearly every slot agrees.
    assert (plan.key_index == twin.key_index).float().mean() > 0.97


def test_triton_order_is_exact_with_one_key_per_bucket():
    # Scores spread evenly over the range: with many buckets each key gets its own bucket, so the
    # Triton list must equal the twin's exact sort.
    n_ctx, dim = 64, 16
    q = torch.zeros(1, 1, n_ctx, dim, device=DEVICE)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, n_ctx, dim, device=DEVICE)
    k[0, 0, :, 0] = torch.randperm(n_ctx, generator=torch.Generator().manual_seed(3)).float().to(DEVICE)
    options = dict(segment=16, sinks=0, block_m=16, score="head_mean", scale=1.0)
    plan = s2o_plan(q, k, n_buckets=1024, span=64.0, **options)
    twin = torch_s2o_plan(q, k, n_buckets=0, **options)
    assert torch.equal(plan.key_index, twin.key_index)


def test_gauss_score_is_mean_logit_plus_half_its_centred_variance():
    # At full rank the score is the mean logit plus half the variance over the segment's (scaled) queries
    # of the logit against k - b, b the softmax(mean query . k)-weighted mean of the keys it sees.
    q, k = make_qk(2, 1, 2, 1, 96, 16)
    q = q + torch.linspace(-1, 1, 96, device=DEVICE)[None, None, :, None] * torch.randn(16, device=DEVICE)
    k = k + 2.0  # a large common part, which the centring takes out
    proj = score_projections(q, k, 32, score="gauss", rank=16, scale=SCALE)
    assert proj.vectors.shape == (1, 2, 3, 17, 16) and proj.offsets.shape == (1, 2, 3, 17)
    for h in range(2):
        for s in range(3):
            rows = q[0, h, s * 32:(s + 1) * 32].double() * SCALE
            seen = k[0, 0, :(s + 1) * 32].double()
            centre = torch.softmax(seen @ rows.mean(0), 0) @ seen
            centred_logits = rows @ (k[0, 0].double() - centre).T  # (32, N)
            expected = rows.mean(0) @ k[0, 0].double().T + 0.5 * centred_logits.var(0, unbiased=False)
            got = ranking_scores(k[0, 0], proj.vectors[0, h, s], proj.offsets[0, h, s])
            torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


def test_diag_score_is_mean_logit_plus_half_its_diagonal_variance():
    # Up to a constant per segment, the score is the mean logit plus half of sum_d var_d (k_d - kbar_d)^2,
    # var the per-dimension variance of the segment's scaled queries, kbar the mean of its prefix keys.
    q, k = make_qk(3, 1, 4, 2, 96, 16)
    q = q * torch.linspace(0.2, 2.0, 16, device=DEVICE)  # dimensions that spread differently
    k = k + 2.0
    proj = score_projections(q, k, 32, score="diag", scale=SCALE)
    assert proj.vectors.shape == (1, 4, 3, 1, 16) and proj.squares.shape == (1, 4, 3, 16)
    for h in range(4):
        for s in (1, 2):
            rows = q[0, h, s * 32:(s + 1) * 32].double() * SCALE
            keys = k[0, h // 2].double()
            kbar = keys[:s * 32].mean(0)
            expected = keys @ rows.mean(0) + 0.5 * ((keys - kbar) ** 2) @ rows.var(0, unbiased=False)
            got = ranking_scores(k[0, h // 2], proj.vectors[0, h, s], proj.offsets[0, h, s], proj.squares[0, h, s])
            shift = (got.double() - expected).mean()
            torch.testing.assert_close(got.double() - shift, expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(proj.guides[0, h, s].double(), rows.mean(0), atol=1e-5, rtol=1e-5)


def test_covariance_factors_find_the_top_directions():
    gen = torch.Generator().manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen))
    spread = torch.cat([torch.tensor([8.0, 6.0, 5.0, 4.0]), torch.full((28,), 0.3)])
    rows = (torch.randn(2, 200, 32, generator=gen) * spread) @ basis.T + 1.0
    counts = torch.tensor([200, 120])
    rows[1, 120:] = 0.0
    mean = rows.sum(1) / counts[:, None]
    factors = covariance_factors(rows, counts, mean, 4)
    for s, n in enumerate(counts.tolist()):
        cov = torch.cov(rows[s, :n].T, correction=0)
        values, vectors = torch.linalg.eigh(cov)
        best = (vectors[:, -4:] * values[-4:]) @ vectors[:, -4:].T
        got = factors[s].T @ factors[s]
        assert float((got - best).norm() / best.norm()) < 1e-3


@pytest.mark.parametrize("score", ["mean", "gauss", "diag"])
def test_query_order_permutes_within_segments(score):
    q, k = make_qk(4, 2, 4, 2, 100, 16)
    options = dict(segment=32, sinks=0, block_m=16, score=score, rank=2, query_permute=True, scale=SCALE)
    plan = s2o_plan(q, k, **options)
    twin = torch_s2o_plan(q, k, **options)
    plan.check(q, k, block_m=16, thorough=True)
    order = plan.query_order.long()
    assert plan.query_order.dtype == torch.int32 and torch.equal(plan.query_order, twin.query_order)
    positions = torch.arange(100, device=order.device)
    assert torch.equal(order // 32, positions.expand_as(order) // 32)
    assert torch.equal(order.sort(-1).values, positions.expand_as(order))
    # Within a segment the queries come by descending alignment with that segment's mean query.
    guides = score_projections(q, k, 32, score=score, rank=2, scale=SCALE).guides
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
    with pytest.raises(ValueError, match="score must be one of"):
        s2o_plan(q, k, segment=32, block_m=16, score="median")
    with pytest.raises(ValueError, match="rank must be"):
        torch_s2o_plan(q, k, segment=32, block_m=16, rank=0)
    with pytest.raises(ValueError, match="n_buckets"):
        s2o_plan(q, k, segment=32, block_m=16, n_buckets=1)
    with pytest.raises(ValueError, match="exact sort"):
        s2o_plan(q, k, segment=32, block_m=16, n_buckets=0)
    with pytest.raises(ValueError, match="span"):
        torch_s2o_plan(q, k, segment=32, block_m=16, span=0.0)


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


@pytest.mark.parametrize("score,rank", SCORE_CASES)
def test_executor_on_s2o_plan_at_tau_zero_is_dense(score, rank):
    from s2o_kernels import executor

    q, k = make_qk(9, 1, 2, 1, 96, 64, torch.float16)
    v = make_qk(10, 1, 1, 1, 96, 64, torch.float16)[0]
    plan = s2o_plan(q, k, segment=32, sinks=8, block_m=16, score=score, rank=rank, query_permute=True)
    out = executor.sparse_attention(q, k, v, plan, tau=0.0, block_m=16, block_n=16)
    torch.testing.assert_close(out.float(), exact_reference(q, k, v).float(), atol=3e-3, rtol=3e-3)


@pytest.mark.gpu
@NEEDS_GPU
@pytest.mark.parametrize("score,rank", SCORE_CASES)
def test_triton_bf16_lists_match_twin_lists(score, rank):
    q, k = make_qk(11, 2, 8, 2, 3000, 128, torch.bfloat16)
    options = dict(segment=256, sinks=64, block_m=128, score=score, rank=rank, query_permute=True)
    plan = s2o_plan(q, k, **options)
    twin = torch_s2o_plan(q, k, **options)
    plan.check(q, k, block_m=128, thorough=True)
    check_lists_hold_every_prefix_key(plan, 3000)
    assert torch.equal(plan.query_order, twin.query_order)
    assert (plan.key_index == twin.key_index).float().mean() > 0.95
