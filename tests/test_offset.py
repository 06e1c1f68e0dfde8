"""Queries at an offset P into the keys (chunked prefill, prefix caching): q ``(B, Hq, Nq, D)``, k, v
``(B, Hkv, P + Nq, D)``, causal aligned bottom-right (query i sits at key position P + i).

Every method and kernel is checked against the exact bottom-right reference, against its PyTorch twin,
and against the whole prompt it is a chunk of. On a CPU-only machine the Triton kernels run under
TRITON_INTERPRET=1 (tests/conftest.py), so shapes stay tiny; the interpreter's bf16 dot is wrong, so
bf16 cases need a GPU.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from s2o_kernels import (
    ExecConfig,
    Plan,
    check_stop_rule,
    dense_plan,
    execute_plan,
    exact_reference,
    s2o_attention,
    s2o_plan,
    sparse_attention,
    torch_decide_chunks,
    torch_s2o_plan,
    torch_sparse_attention,
)
from s2o_kernels.block_plan import blocks_to_plan, causal_blocks, diagonal_blocks, plan_density
from s2o_kernels.launch import causal_pairs, exec_stats, pass1_pairs
from s2o_kernels.plan import plan_layout
from s2o_eval.methods import AttentionStats, create

import tiny_models

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float16: dict(atol=3e-3, rtol=3e-3),
       torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def make_qkv(seed: int, batch: int, q_heads: int, kv_heads: int, n_q: int, q_offset: int, head_dim: int,
             dtype=torch.float32, heavy: float = 0.0):
    """``tiny_models.make_qkv`` on this file's device: q for ``n_q`` queries, k and v for the
    ``q_offset + n_q`` keys they follow; ``heavy`` concentrates attention as on real text."""
    q, k, v = tiny_models.make_qkv(seed, n_q, batch=batch, q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim,
                                   hot=heavy, q_offset=q_offset)
    return (t.to(DEVICE, dtype) for t in (q, k, v))


def assert_close(actual, expected, dtype):
    assert torch.isfinite(actual).all(), "NaN/inf in the output"
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), **TOL[dtype])


def chunks_of(n_ctx: int, sizes: list[int]) -> list[tuple[int, int]]:
    """(offset, length) of consecutive chunks of the given sizes (the last one takes the rest)."""
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, min(size, n_ctx - start)))
        start += size
    if start < n_ctx:
        bounds.append((start, n_ctx - start))
    return bounds


# ---------------------------------------------------------------------------------------------
# The reference and the dense methods.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q_offset,n_q", [(0, 30), (1, 30), (37, 13), (100, 45)])
def test_exact_reference_is_bottom_right(q_offset, n_q):
    q, k, v = make_qkv(1, 1, 4, 2, n_q, q_offset, 16)
    out = exact_reference(q, k, v)
    # Row by row, the softmax over the P + i + 1 keys the query sees.
    for i in (0, n_q // 2, n_q - 1):
        seen = q_offset + i + 1
        for h in range(4):
            probs = torch.softmax(q[0, h, i].double() @ k[0, h // 2, :seen].double().T * 0.25, dim=-1)
            torch.testing.assert_close(out[0, h, i].double(), probs @ v[0, h // 2, :seen].double(), atol=1e-5, rtol=1e-5)
    # The same rows of the whole prompt (queries for every key), and in small query chunks too.
    whole_q = torch.cat([torch.randn(1, 4, q_offset, 16, device=DEVICE), q], dim=2)
    assert_close(exact_reference(whole_q, k, v)[:, :, q_offset:], out, torch.float32)
    assert_close(exact_reference(q, k, v, chunk_bytes=1), out, torch.float32)
    with pytest.raises(ValueError, match="fewer than"):
        exact_reference(whole_q, k[:, :, 1:], v[:, :, 1:])


@pytest.mark.parametrize("name", ["sdpa", "eager", pytest.param("fa2", marks=pytest.mark.gpu),
                                  pytest.param("cudnn", marks=pytest.mark.gpu), pytest.param("fa3", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("q_heads,kv_heads", [(2, 2), (8, 2)])
def test_dense_methods_align_bottom_right(name, q_heads, kv_heads):
    method = create(name)
    if method.unavailable_reason():
        pytest.skip(method.unavailable_reason())
    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    for q_offset, n_q in [(37, 20), (64, 64), (5, 1)]:
        q, k, v = make_qkv(2 + q_offset, 1, q_heads, kv_heads, n_q, q_offset, 64, dtype)
        out = method.prefill(q, k, v, scale=0.125)
        assert out.shape == q.shape
        assert_close(out, exact_reference(q, k, v, 0.125), dtype)


# ---------------------------------------------------------------------------------------------
# The plan contract and its pair counts.
# ---------------------------------------------------------------------------------------------
def test_plan_knows_its_offset_and_refuses_other_inputs():
    q, k, v = make_qkv(3, 1, 2, 1, 40, 37, 64, torch.float16)
    plan = dense_plan(q, k, 16, 4, 16)
    assert plan.q_offset == 37
    plan.check(q, k, block_m=16, thorough=True)
    assert plan.list_len[0, 0].tolist() == [33, 49, 65]  # [4, 37 + s * 16)
    with pytest.raises(ValueError, match="offset 0"):
        dense_plan(q, k[:, :, 37:], 16, 4).check(q, k)  # a plan for the whole prompt, given the chunk
    with pytest.raises(ValueError, match="offset 37"):
        plan.check(q, k[:, :, 1:])
    with pytest.raises(ValueError, match="q_offset must be an int >= 0"):
        Plan(16, 4, plan.key_index, plan.list_start, plan.list_len, q_offset=-1).check(q, k)
    own = plan.key_index.clone()
    own[0, 0, 0] = 37  # query 0's own position: pass 1's, never a list's
    with pytest.raises(ValueError, match="outside"):
        Plan(16, 4, own, plan.list_start, plan.list_len, q_offset=37).check(q, k, thorough=True)
    longer = plan.list_len.clone()
    longer[0, 0, 0] = 34
    with pytest.raises(ValueError, match="longer than its prefix"):
        Plan(16, 4, plan.key_index, plan.list_start, longer, q_offset=37).check(q, k, thorough=True)
    with pytest.raises(ValueError, match="kv_len >= q's seq_len"):
        execute_plan(q, k[:, :, :39], v[:, :, :39], plan)


def test_pair_counts_by_hand():
    # 3 queries at offset 2, segments of 2, one sink. Causal: 3 + 4 + 5 = 12 pairs.
    # Pass 1: query 0 (key 2): sink 0, itself; query 1 (key 3): sink 0, keys 2-3; query 2 (key 4, segment 1
    # from key 4): sink 0, itself: 2 + 3 + 2 = 7. Lists: segment 0 [1, 2) for 2 rows, segment 1 [1, 4) for
    # 1 row: 2 + 3 = 5, so a dense plan computes all 12.
    assert causal_pairs(3, 2) == 12 and causal_pairs(5) == 15
    assert int(pass1_pairs(3, 2, 1, q_offset=2)) == 7
    assert plan_layout(3, 2, 1, 2)[0].tolist() == [1, 3]
    q, k, v = make_qkv(4, 1, 1, 1, 3, 2, 8)
    out, stats = execute_plan(q, k, v, dense_plan(q, k, 2, 1), block_m=2, block_n=16)
    assert stats.causal_pairs == 12 and stats.computed_pairs.tolist() == [[12]] and stats.density == 1.0
    assert_close(out, exact_reference(q, k, v), torch.float32)
    # A sparse plan: segment 0 lists nothing, segment 1 lists key 3 only: 7 + 0 + 1 = 8 pairs.
    sparse = Plan(2, 1, torch.tensor([[[3]]], dtype=torch.int32, device=DEVICE),
                  torch.zeros(1, 1, 2, dtype=torch.int64, device=DEVICE),
                  torch.tensor([[[0, 1]]], dtype=torch.int32, device=DEVICE), q_offset=2)
    sparse.check(q, k, thorough=True)
    out, stats = execute_plan(q, k, v, sparse, block_m=2, block_n=16)
    assert stats.computed_pairs.tolist() == [[8]] and stats.density == pytest.approx(8 / 12)
    # Query 2 sees its sink (0), its list (3) and itself (4); query 0 sees 0 and itself (2).
    for i, keys in ((0, [0, 2]), (1, [0, 2, 3]), (2, [0, 3, 4])):
        probs = torch.softmax(q[0, 0, i] @ k[0, 0, keys].T * 8 ** -0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, i], probs @ v[0, 0, keys], atol=1e-5, rtol=1e-5)
    # ExecStats from chunk counts: per tile, min(chunks x block_n, list) keys for each of its rows.
    walked = exec_stats(torch.tensor([[[1, 1]]], dtype=torch.int32), dense_plan(q, k, 2, 1), 3, 1, ExecConfig(2, 2))
    assert walked.computed_pairs.tolist() == [[7 + 1 * 2 + 2 * 1]]


def test_block_geometry_and_straddling_lists():
    # 20 queries at offset 21 in blocks of 16: query block 0 sits at keys [21, 36], block 1 at [37, 40];
    # key blocks are [0, 16), [16, 32), [32, 41).
    causal = causal_blocks(20, 41, 16)
    diagonal = diagonal_blocks(20, 41, 16)
    assert causal.tolist() == [[True, True, True], [True, True, True]]
    assert diagonal.tolist() == [[False, True, True], [False, False, True]]
    assert torch.equal(causal_blocks(40, 40, 16), torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(diagonal_blocks(40, 40, 16), torch.eye(3, dtype=torch.bool))
    every = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    plan = blocks_to_plan(every, 16, 20, q_offset=21)
    q, k, _ = make_qkv(5, 1, 1, 1, 20, 21, 16)
    plan.check(q, k, thorough=True)
    assert plan.list_len.tolist() == [[[21, 37]]]  # block 0: keys 0-20 (block 1 up to 20); block 1: 0-36
    only_middle = torch.tensor([[[[False, True, False], [False, True, True]]]])
    plan = blocks_to_plan(only_middle, 16, 20, q_offset=21)
    listed = plan.key_index[0, 0].tolist()
    assert listed[:5] == list(range(16, 21)) and listed[5:5 + 21] == list(range(16, 37))
    # Density by hand: pass 1 (segment = block, no sinks) is 16 x 17 / 2 + 4 x 5 / 2 = 146 pairs;
    # the lists add 5 keys x 16 rows + 21 keys x 4 rows = 164; causal pairs 20 x 21 / 2 + 20 x 21 = 630.
    assert plan_density(only_middle, 16, 20, q_offset=21) == pytest.approx((146 + 164) / 630)
    with pytest.raises(ValueError, match="offset 21"):
        blocks_to_plan(every[..., :2], 16, 20, q_offset=21)


# ---------------------------------------------------------------------------------------------
# S2O: tau = 0 is dense at any offset, chunks equal the whole, Triton equals the twins.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q_offset,n_q,q_heads,kv_heads,head_dim,segment,sinks,score", [
    pytest.param(37, 70, 4, 4, 64, 32, 4, "head_mean", id="P37-mha-d64"),
    pytest.param(100, 45, 4, 1, 128, 16, 8, "mean", id="P100-gqa4-d128-mean"),
    pytest.param(5, 33, 8, 2, 64, 16, 16, "gauss", id="P5-gqa4-sinks-past-offset-gauss"),
    pytest.param(64, 64, 2, 2, 256, 32, 0, "diag", id="P64-d256-diag"),
    pytest.param(1, 1, 2, 1, 64, 16, 4, "head_mean", id="P1-one-query"),
])
def test_s2o_tau0_is_dense_at_any_offset(q_offset, n_q, q_heads, kv_heads, head_dim, segment, sinks, score):
    q, k, v = make_qkv(10 + q_offset, 2, q_heads, kv_heads, n_q, q_offset, head_dim)
    out, stats = s2o_attention(q, k, v, tau=0.0, segment=segment, sinks=sinks, score=score, rank=2,
                               return_stats=True)
    assert_close(out, exact_reference(q, k, v), torch.float32)
    assert stats.density == 1.0 and stats.causal_pairs == causal_pairs(n_q, q_offset)


@pytest.mark.parametrize("q_offset,n_q,q_heads,kv_heads,head_dim,score,per_order", [
    pytest.param(37, 50, 4, 1, 64, "mean", False, id="P37-gqa4-shared"),
    pytest.param(100, 20, 2, 2, 128, "head_mean", True, id="P100-d128-query-order"),
])
def test_triton_s2o_tau0_is_dense_at_offset(q_offset, n_q, q_heads, kv_heads, head_dim, score, per_order):
    q, k, v = make_qkv(20 + q_offset, 1, q_heads, kv_heads, n_q, q_offset, head_dim, torch.float16)
    plan = s2o_plan(q, k, segment=32, sinks=3, block_m=16, score=score, query_permute=per_order)
    assert plan.q_offset == q_offset
    plan.check(q, k, block_m=16, thorough=True)
    out, stats = sparse_attention(q, k, v, plan, config=ExecConfig(16, 16), return_stats=True)
    assert_close(out, exact_reference(q, k, v), torch.float16)
    assert stats.density == 1.0


@pytest.mark.parametrize("sizes", [[37, 50], [64, 32], [100]], ids=["ragged", "aligned", "one-cached-prefix"])
def test_s2o_chunked_equals_whole_at_tau0(sizes):
    q, k, v = make_qkv(30, 1, 4, 2, 120, 0, 64)
    whole = s2o_attention(q, k, v, tau=0.0, segment=32, sinks=4)
    parts = [s2o_attention(q[:, :, p:p + n], k[:, :, :p + n], v[:, :, :p + n], tau=0.0, segment=32, sinks=4)
             for p, n in chunks_of(120, sizes)]
    assert_close(torch.cat(parts, dim=2), whole, torch.float32)
    assert_close(whole, exact_reference(q, k, v), torch.float32)


def test_triton_s2o_chunked_equals_whole_at_tau0():
    q, k, v = make_qkv(31, 1, 2, 1, 90, 0, 64, torch.float16)
    parts = []
    for p, n in chunks_of(90, [37, 30]):
        qc, kc, vc = q[:, :, p:p + n], k[:, :, :p + n], v[:, :, :p + n]
        plan = s2o_plan(qc, kc, segment=16, sinks=4, block_m=16)
        parts.append(sparse_attention(qc, kc, vc, plan, config=ExecConfig(16, 16)))
    assert_close(torch.cat(parts, dim=2), exact_reference(q, k, v), torch.float16)


def test_s2o_final_chunk_is_the_whole_prompts_last_rows_at_tau():
    # At an offset that is a multiple of the segment, the final chunk's segments, lists and stops are
    # those of the whole prompt's last segments: the same output, walking the same keys. (Routing off:
    # a head's forecast is over the segments of the call, so the whole prompt and its last chunk may
    # route a head differently.)
    q, k, v = make_qkv(32, 1, 4, 1, 160, 0, 64, heavy=4.0)
    args = dict(tau=0.05, segment=32, sinks=4, block_n=16, patience=2, dense_above=0.0, return_stats=True)
    whole, whole_stats = s2o_attention(q, k, v, **args)
    chunk, chunk_stats = s2o_attention(q[:, :, 96:], k, v, **args)
    assert_close(chunk, whole[:, :, 96:], torch.float32)
    tiles = whole_stats.chunks.shape[-1] - chunk_stats.chunks.shape[-1]
    assert torch.equal(chunk_stats.chunks, whole_stats.chunks[..., tiles:])
    assert chunk_stats.density < 1.0, "no tile stopped early: the stop is not exercised"


def make_offset_plan(q, k, segment: int, sinks: int, *, per_head: bool) -> Plan:
    """Lists over each segment's prefix [sinks, P + s*S), ordered by a mean-query guide score."""
    batch, q_heads, n_q, _ = q.shape
    q_offset = k.shape[2] - n_q
    group = q_heads // k.shape[1]
    h_plan = q_heads if per_head else k.shape[1]
    n_seg = -(-n_q // segment)
    lengths, starts = plan_layout(n_q, segment, sinks, q_offset)
    key_index = torch.empty(batch, h_plan, int(lengths.sum()), dtype=torch.int32)
    for b in range(batch):
        for hp in range(h_plan):
            heads = [hp] if per_head else list(range(hp * group, (hp + 1) * group))
            kv_head = hp // group if per_head else hp
            for s in range(n_seg):
                prefix = torch.arange(sinks, max(sinks, q_offset + s * segment))
                guide = q[b, heads, s * segment:(s + 1) * segment].float().mean(dim=(0, 1)).cpu()
                ranked = prefix[torch.argsort(k[b, kv_head, prefix].float().cpu() @ guide, descending=True)]
                key_index[b, hp, int(starts[s]):int(starts[s]) + ranked.numel()] = ranked.to(torch.int32)
    plan = Plan(segment, sinks, key_index.to(q.device), starts.to(q.device).expand(batch, h_plan, -1).contiguous(),
                lengths.to(torch.int32).to(q.device).expand(batch, h_plan, -1).contiguous(), q_offset=q_offset)
    plan.check(q, k, thorough=True)
    return plan


@pytest.mark.parametrize("q_offset,q_heads,kv_heads,head_dim,per_head,block_m,stop_rule,patience,launch", [
    pytest.param(37, 4, 1, 64, False, 8, "chunk", 1, {"stop_burst": 2}, id="P37-gqa4-shared-burst2"),
    pytest.param(100, 2, 2, 128, True, 16, "chunk", 2, {}, id="P100-mha-per-head-d128-patience2"),
    pytest.param(64, 4, 1, 64, True, 16, "tail", 1, {"stop_burst": 1}, id="P64-gqa4-per-head-tail"),
])
def test_triton_executor_matches_twin_at_offset_with_early_stop(q_offset, q_heads, kv_heads, head_dim, per_head,
                                                                block_m, stop_rule, patience, launch):
    batch, n_q, segment, sinks, tau, block_n = 1, 90, 32, 4, 0.05, 16
    q, k, v = make_qkv(40 + q_offset, batch, q_heads, kv_heads, n_q, q_offset, head_dim, torch.float16, heavy=8.0)
    plan = make_offset_plan(q, k, segment, sinks, per_head=per_head)
    out, stats = sparse_attention(q, k, v, plan, tau=tau, config=ExecConfig(block_m, block_n, **launch),
                                  stop_rule=stop_rule, patience=patience, return_stats=True)
    tile_seg = torch.arange(-(-n_q // block_m)) * block_m // segment
    plan_head = torch.arange(q_heads) // (q_heads // kv_heads) if not per_head else torch.arange(q_heads)
    full = (plan.list_len.cpu().long()[:, plan_head][:, :, tile_seg] + block_n - 1) // block_n
    chunks = stats.chunks.cpu().long()
    assert (chunks <= full).all() and (chunks < full).any(), "no tile stopped early: the stop is not exercised"
    assert check_stop_rule(q, k, v, plan, stats.chunks, tau, block_m=block_m, block_n=block_n, stop_rule=stop_rule,
                           patience=patience) == []
    decided = torch_decide_chunks(q, k, plan, tau, block_m=block_m, block_n=block_n, stop_rule=stop_rule,
                                  patience=patience)
    assert (decided != stats.chunks.cpu()).float().mean() < 0.05  # float64 against fp32 decisions near tau
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=block_m, block_n=block_n)
    assert_close(out, expected, torch.float16)
    # Pairs counted row by row: sinks before the segment, own segment to the diagonal, walked keys.
    pairs = torch.zeros(batch, q_heads, dtype=torch.int64)
    for h in range(q_heads):
        for i in range(n_q):
            seg_key = q_offset + i // segment * segment
            walked = min(int(chunks[0, h, i // block_m]) * block_n, int(plan.list_len[0, plan_head[h], i // segment]))
            pairs[0, h] += min(sinks, seg_key) + (q_offset + i - seg_key + 1) + walked
    assert torch.equal(stats.computed_pairs.cpu(), pairs)
    assert stats.causal_pairs == causal_pairs(n_q, q_offset) and stats.density < 1.0


def prefix_lists_are_whole(plan: Plan, n_q: int):
    lengths, starts = plan_layout(n_q, plan.segment, plan.sinks, plan.q_offset)
    assert plan.key_index.shape[-1] == int(lengths.sum())
    for b in range(plan.key_index.shape[0]):
        for h in range(plan.heads):
            for s in range(lengths.numel()):
                keys = plan.key_index[b, h, int(starts[s]):int(starts[s]) + int(lengths[s])].long().sort().values
                expected = torch.arange(plan.sinks, max(plan.sinks, plan.q_offset + s * plan.segment), device=keys.device)
                assert torch.equal(keys, expected), f"list (b {b}, h {h}, s {s}) is not its whole prefix"


@pytest.mark.parametrize("q_offset,n_q,q_heads,kv_heads,segment,block_m,sinks", [
    (37, 70, 2, 1, 32, 16, 8), (100, 45, 4, 2, 16, 16, 0), (5, 40, 2, 2, 16, 16, 20)])
@pytest.mark.parametrize("score,rank", [("mean", 1), ("head_mean", 1), ("gauss", 4), ("diag", 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_planner_matches_twin_at_offset(q_offset, n_q, q_heads, kv_heads, segment, block_m, sinks, score, rank,
                                               dtype):
    q, k, _ = make_qkv(50 + q_offset, 1, q_heads, kv_heads, n_q, q_offset, 32, dtype)
    options = dict(segment=segment, sinks=sinks, block_m=block_m, score=score, rank=rank, n_buckets=32, span=3.0,
                   scale=0.25, query_permute=True)
    plan = s2o_plan(q, k, **options)
    twin = torch_s2o_plan(q, k, **options)
    assert plan.q_offset == twin.q_offset == q_offset
    plan.check(q, k, block_m=block_m, thorough=True)
    prefix_lists_are_whole(plan, n_q)
    assert torch.equal(plan.list_start, twin.list_start) and torch.equal(plan.list_len, twin.list_len)
    assert torch.equal(plan.query_order, twin.query_order)
    assert torch.equal(plan.score_histogram, twin.score_histogram) or \
        (plan.score_histogram != twin.score_histogram).float().mean() < 0.03  # keys on bucket edges
    # Away from bucket edges the two are the same stable counting sort: nearly every slot agrees.
    assert (plan.key_index == twin.key_index).float().mean() > 0.97


def test_planner_ranks_the_cache_with_the_chunk():
    # With the twin's exact order, a chunk at an offset that is a multiple of the segment plans its
    # segments exactly as the whole prompt plans its last ones (the prefixes are the same keys).
    q, k, _ = make_qkv(60, 1, 4, 2, 96, 0, 32)
    for score in ("head_mean", "mean", "gauss", "diag"):
        options = dict(segment=16, sinks=4, block_m=16, score=score, rank=2, n_buckets=0, scale=0.25)
        whole = torch_s2o_plan(q, k, **options)
        chunk = torch_s2o_plan(q[:, :, 64:], k, **options)
        first_list = int(whole.list_start[0, 0, 4])
        assert torch.equal(chunk.list_len, whole.list_len[..., 4:])
        if score in ("gauss", "diag"):  # the cache's keys are summed in another order: lists equal up to rounding
            assert (chunk.key_index == whole.key_index[..., first_list:]).float().mean() > 0.9
        else:
            assert torch.equal(chunk.key_index, whole.key_index[..., first_list:]), score


# ---------------------------------------------------------------------------------------------
# Every sparse method: keep-everything settings are dense; sparse ones stay in their prefixes, the
# Triton executor equals the twin on their plans, and the final chunk equals the whole's last rows.
# ---------------------------------------------------------------------------------------------
KEEP_EVERYTHING = [
    ("s2o", {"segment": "32", "sinks": "4", "tau": "0"}),
    ("token_oracle", {"block_m": "16", "sinks": "4", "tau": "0"}),
    ("segment_oracle", {"segment": "32", "block_m": "16", "sinks": "4", "tau": "0"}),
    ("flexprefill", {"block": "16", "gamma": "1", "min_budget": "16"}),
    ("xattention", {"block": "16", "stride": "4", "threshold": "1"}),
    ("pbs", {"block": "16", "segment": "32", "threshold": "1"}),
    ("minference", {"block": "16", "vertical": "100000", "slash": "100000", "last_q": "8"}),
    ("block_oracle", {"block": "16", "threshold": "1"}),
    ("flashprefill", {"block": "16", "alpha": "0"}),
    ("skip_softmax", {"block_m": "16", "segment": "32", "threshold": "1000"}),
]
# Settings that select on these tiny, concentrated inputs (heavy=8): each keeps well under every key.
# FlexPrefill twice: tau 1 forces its query-aware blocks (a JS distance is at most sqrt(ln 2)), tau 0
# its vertical-slash pattern.
SPARSE = [
    ("s2o", {"segment": "32", "sinks": "4", "block_n": "16", "tau": "0.02", "patience": "1", "dense_above": "0"}),
    ("token_oracle", {"block_m": "16", "block_n": "16", "sinks": "4", "tau": "0.02", "patience": "1"}),
    ("segment_oracle", {"segment": "32", "block_m": "16", "block_n": "16", "sinks": "4", "tau": "0.02", "patience": "1"}),
    ("flexprefill", {"block": "16", "gamma": "0.8", "min_budget": "0", "tau": "1"}),
    ("flexprefill", {"block": "16", "gamma": "0.5", "min_budget": "0", "tau": "0"}),
    ("xattention", {"block": "16", "stride": "4", "threshold": "0.8"}),
    ("pbs", {"block": "16", "segment": "32", "threshold": "0.8"}),
    ("minference", {"block": "16", "vertical": "8", "slash": "8", "last_q": "8"}),
    ("block_oracle", {"block": "16", "threshold": "0.8"}),
    ("flashprefill", {"block": "16", "alpha": "0.3", "sink_blocks": "1", "window_blocks": "1", "full_last_blocks": "0"}),
    ("skip_softmax", {"block_m": "16", "block_n": "16", "segment": "32", "threshold": "1"}),
]


def _ids(cases):
    names = [name for name, _ in cases]
    return [f"{name}-{dict(cases[i][1]).get('tau')}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def assert_selected(name: str, stats) -> None:
    """The method left keys out (skip-softmax: P.V products), so the test exercised a selection."""
    density = stats.pv_density if name == "skip_softmax" else stats.density
    assert density < 1.0, f"{name} kept every key: the test would not exercise its selection"


@pytest.mark.parametrize("name,args", KEEP_EVERYTHING, ids=_ids(KEEP_EVERYTHING))
@pytest.mark.parametrize("q_offset,n_q,q_heads,kv_heads,head_dim", [(37, 45, 4, 1, 64), (100, 30, 2, 2, 128)],
                         ids=["P37-gqa4", "P100-d128"])
def test_keep_everything_is_dense_at_offset(name, args, q_offset, n_q, q_heads, kv_heads, head_dim):
    q, k, v = make_qkv(70 + q_offset, 1, q_heads, kv_heads, n_q, q_offset, head_dim)
    method = create(name, args)
    plan = method.plan(q, k, scale=head_dim ** -0.5)
    assert plan.q_offset == q_offset
    plan.check(q, k, thorough=True)
    stats = AttentionStats()
    out = method.execute(q, k, v, plan, scale=head_dim ** -0.5, stats=stats)
    assert_close(out, exact_reference(q, k, v), torch.float32)
    assert stats.density == pytest.approx(1.0)
    assert stats.causal == causal_pairs(n_q, q_offset) * q_heads


@pytest.mark.parametrize("name,args", SPARSE, ids=_ids(SPARSE))
def test_final_chunk_is_the_whole_prompts_last_rows(name, args):
    # At an offset that is a multiple of every block and segment, a method's final chunk sees the same
    # blocks, lists and last queries as the whole prompt's last rows: the same output, sparse or not.
    q, k, v = make_qkv(80, 1, 4, 2, 109, 0, 64, heavy=8.0)
    method = create(name, args)
    whole_stats, chunk_stats = AttentionStats(), AttentionStats()
    whole = method.prefill(q, k, v, scale=0.125, stats=whole_stats)
    chunk = method.prefill(q[:, :, 64:], k, v, scale=0.125, stats=chunk_stats)
    assert_close(chunk, whole[:, :, 64:], torch.float32)
    assert chunk_stats.causal == causal_pairs(45, 64) * 4
    assert_selected(name, chunk_stats)


@pytest.mark.parametrize("name,args", SPARSE, ids=_ids(SPARSE))
@pytest.mark.parametrize("q_offset,n_q", [(37, 45), (100, 20)], ids=["P37", "P100"])
def test_sparse_plans_stay_in_prefix_and_triton_matches_twin(name, args, q_offset, n_q):
    # A ragged offset: the key block a query block starts in straddles its diagonal.
    q, k, v = make_qkv(90 + q_offset, 1, 4, 2, n_q, q_offset, 64, torch.float16, heavy=8.0)
    method = create(name, args)
    plan = method.plan(q, k, scale=0.125)
    assert plan.q_offset == q_offset
    plan.check(q, k, thorough=True)  # every list inside [sinks, P + s * S), no key twice
    block_m = int(args.get("block_m", args.get("block", 16)))
    executor_args = dict(tau=float(args.get("tau", 0)), patience=1, skip_gap=float(args["threshold"]) if name == "skip_softmax" else 0.0)
    out, stats = sparse_attention(q, k, v, plan, scale=0.125, config=ExecConfig(block_m, 16), return_stats=True,
                                  **executor_args)
    if name == "skip_softmax":
        twin, _ = execute_plan(q, k, v, plan, scale=0.125, block_m=block_m, block_n=16, skip_gap=float(args["threshold"]))
    else:
        twin = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, scale=0.125, block_m=block_m, block_n=16)
    assert_close(out, twin, torch.float16)
    assert stats.causal_pairs == causal_pairs(n_q, q_offset)
    assert_selected(name, stats)


# ---------------------------------------------------------------------------------------------
# bf16 on a GPU.
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@NEEDS_GPU
@pytest.mark.parametrize("q_heads,kv_heads,head_dim,score", [(8, 2, 128, "head_mean"), (4, 1, 64, "mean"),
                                                            (4, 4, 256, "diag")])
def test_bf16_offset_on_gpu(q_heads, kv_heads, head_dim, score):
    q, k, v = make_qkv(99, 2, q_heads, kv_heads, 700, 1337, head_dim, torch.bfloat16, heavy=4.0)
    out = s2o_attention(q, k, v, tau=0.0, segment=256, sinks=64, score=score)
    assert_close(out, exact_reference(q, k, v), torch.bfloat16)
    plan = s2o_plan(q, k, segment=256, sinks=64, block_m=128 if score != "mean" else 32, score=score)
    plan.check(q, k, thorough=True)
    twin = torch_s2o_plan(q, k, segment=256, sinks=64, block_m=128 if score != "mean" else 32, score=score)
    assert (plan.key_index == twin.key_index).float().mean() > 0.95
    out, stats = s2o_attention(q, k, v, tau=0.01, segment=256, sinks=64, score=score, return_stats=True)
    expected = torch_sparse_attention(q, k, v, plan, chunks=stats.chunks, block_m=stats.block_m, block_n=stats.block_n)
    assert_close(out, expected, torch.bfloat16)
    assert stats.causal_pairs == causal_pairs(700, 1337) and stats.density < 1.0
    gpu_sizes = {"block": "128", "block_m": "128", "segment": "256"}
    for name, args in KEEP_EVERYTHING:
        method = create(name, {key: gpu_sizes.get(key, value) for key, value in args.items()})
        assert_close(method.prefill(q, k, v, scale=head_dim ** -0.5), exact_reference(q, k, v), torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# P = 0 is today: plans and pair counts fingerprinted from the code before the offset existed
# (commit 30754e9), on integer-valued inputs whose scores are exact on any machine.
# ---------------------------------------------------------------------------------------------
BEFORE_THE_OFFSET = {
    "twin-mean-0": "535e39a710275227",
    "twin-mean-16": "473ba602edeb0f63",
    "triton-mean": "a010abdaad433f14",
    "twin-head_mean-0": "9757246ad56af73f",
    "twin-head_mean-16": "2a3a36901121cea6",
    "triton-head_mean": "ba1abc2a3114e677",
    "dense": "c65f9051358135cc",
    "dense-in-order": "0e364c7bdb0d18db",
    "blocks": "55566cd3a303fc9f",
    "vertical-slash": "ccc14be191a84229",
    "permuted": "8ad70e0c34869a1e",
    "stats": "b159045a6807de01",
}


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _plan_digest(plan: Plan) -> str:
    assert plan.q_offset == 0
    return _digest(plan.key_index, plan.list_start, plan.list_len, plan.query_order, plan.score_histogram)


@pytest.mark.skipif(DEVICE != "cpu", reason="fingerprints of CPU tensors")
def test_offset_zero_plans_and_counts_are_as_before():
    from s2o_kernels.peers.minference import vertical_slash_to_plan
    from s2o_kernels.peers.pbs import permuted_blocks_to_plan

    gen = torch.Generator().manual_seed(24)
    q = torch.randint(-3, 4, (1, 4, 72, 16), generator=gen).float()
    k = torch.randint(-3, 4, (1, 2, 72, 16), generator=gen).float()
    got = {}
    for score in ("mean", "head_mean"):
        for n_buckets in (0, 16):
            got[f"twin-{score}-{n_buckets}"] = _plan_digest(torch_s2o_plan(
                q, k, segment=16, sinks=5, block_m=16, score=score, n_buckets=n_buckets, span=4.0, query_permute=True,
                scale=0.25))
        got[f"triton-{score}"] = _plan_digest(s2o_plan(q, k, segment=16, sinks=5, block_m=16, score=score, n_buckets=16,
                                                       span=4.0, scale=0.25))
    got["dense"] = _plan_digest(dense_plan(q, k, 16, 3, 16))
    got["dense-in-order"] = _plan_digest(dense_plan(q, k, 16, 3, 16, per_head=True, in_order=True))
    selected = torch.rand(2, 3, 5, 5, generator=gen) < 0.5
    got["blocks"] = _plan_digest(blocks_to_plan(selected, 16, 72, sinks=16))
    columns = torch.rand(2, 3, 72, generator=gen) < 0.2
    offsets = torch.rand(2, 3, 72, generator=gen) < 0.1
    got["vertical-slash"] = _plan_digest(vertical_slash_to_plan(columns, offsets, 16, 72, sinks=2))
    order = torch.cat([torch.randperm(32, generator=gen), 32 + torch.randperm(32, generator=gen),
                       64 + torch.randperm(8, generator=gen)])
    got["permuted"] = _plan_digest(permuted_blocks_to_plan(selected, order.expand(2, 3, 72), block=16, segment=32,
                                                           n_ctx=72))
    plan = dense_plan(q, k, 16, 3, 16, per_head=True)
    chunks = torch.randint(0, 4, (1, 4, 5), generator=gen, dtype=torch.int32)
    stats = exec_stats(chunks, plan, 72, 2, ExecConfig(16, 16))
    got["stats"] = _digest(stats.computed_pairs, torch.tensor([stats.causal_pairs]))
    assert got == BEFORE_THE_OFFSET


@pytest.mark.parametrize("scale_q", [0.01, 1.0], ids=["all-heads-flat", "mixed"])
def test_s2o_routes_flat_heads_at_an_offset_and_counts_the_cached_pairs(scale_q):
    # Routing (dense_above) at an offset: a routed head is exact, and its pairs are the chunk's causal
    # pairs, cache included (Nq (Nq + 1) / 2 + Nq P)
    q, k, v = make_qkv(33, 1, 4, 1, 96, 70, 64, heavy=4.0)
    q[:, 1:] *= scale_q * 0.01  # heads 1.. are flat (near-zero queries); head 0 too when scale_q is small
    q[:, :1] *= scale_q
    out, stats = s2o_attention(q, k, v, tau=0.01, segment=32, sinks=4, block_n=16, dense_above=0.5,
                               return_stats=True)
    assert stats.causal_pairs == causal_pairs(96, 70) == 96 * 97 // 2 + 96 * 70
    assert stats.density_per_head[1:].tolist() == [1.0, 1.0, 1.0]
    ref = exact_reference(q, k, v)
    assert_close(out[:, 1:], ref[:, 1:], torch.float32)
    method_stats = AttentionStats()
    by_method = create("s2o", {"tau": "0.01", "segment": "32", "sinks": "4", "block_n": "16",
                               "dense_above": "0.5"}).prefill(q, k, v, scale=64 ** -0.5, stats=method_stats)
    assert torch.equal(by_method, out) and method_stats.causal == stats.causal_pairs * 4
