"""Skip-softmax (BLASST) on the shared executor: the rule worked by hand, the Triton kernel against its
PyTorch twin, in-order plans (no lists in memory), and QK / P.V pairs counted apart."""

from __future__ import annotations

import pytest
import torch

from s2o_eval.methods import AttentionStats, create
from s2o_kernels import ExecConfig, dense_plan, execute_plan, sparse_attention
from s2o_kernels.reference import exact_reference

from s2o_kernels.twins import torch_decide_chunks, torch_decide_skips, torch_sparse_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def far_chunks(seed: int, q_heads: int, kv_heads: int, n_ctx: int, dim: int, far: list[int], block: int,
               dtype=torch.float16):
    """q, k, v where every query leans one way and the keys of the blocks in ``far`` lean hard the other
    way: those blocks' scores sit about 12 nats below everything else, every other block is close."""
    gen = torch.Generator().manual_seed(seed)
    q = 0.3 * torch.randn(1, q_heads, n_ctx, dim, generator=gen)
    k = 0.3 * torch.randn(1, kv_heads, n_ctx, dim, generator=gen)
    v = torch.randn(1, kv_heads, n_ctx, dim, generator=gen)
    direction = torch.zeros(dim)
    direction[0] = 1.0
    q = q + 2.0 * direction
    for blk in far:
        k[:, :, blk * block:(blk + 1) * block] -= 6.0 * direction * dim ** 0.5  # 2 x 6 = 12 nats lower
    return (t.to(dtype).to(DEVICE) for t in (q, k, v))


def test_far_chunks_are_skipped_and_left_out_of_the_output():
    # 4 segments of 32 keys, chunks of 16 keys, one tile of 32 per segment; keys 64..79 are far below
    # every other key: the one tile that walks them (they are in the prefix of segment 3) skips them.
    n_ctx, block = 128, 16
    # fp32 where the PyTorch twin runs (exact); the Triton executor takes fp16 / bf16 only
    dtype, tol = (torch.float32, 1e-5) if DEVICE == "cpu" else (torch.float16, 2e-3)
    q, k, v = far_chunks(1, 2, 1, n_ctx, 64, far=[4], block=block, dtype=dtype)
    plan = dense_plan(q, k, 32, 0, 32, per_head=True, in_order=True)
    out, stats = execute_plan(q, k, v, plan, tau=0.0, block_m=32, block_n=block, skip_gap=5.0)
    # By hand: the keys 64..79 are seen by segment 3 (queries 96..127) only, as its list's 5th chunk.
    assert stats.skipped_keys[0, :, 3].tolist() == [16, 16]
    assert stats.skipped_keys[0, :, :3].sum() == 0
    # The output is attention without those keys for queries 96..127, exact attention elsewhere.
    mask = torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=q.device).tril()
    mask[96:, 64:80] = False
    scores = (q.float() @ k.float().transpose(-1, -2)).squeeze(0) * 64 ** -0.5  # (2, N, N), kv head shared
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v.float()[0]
    torch.testing.assert_close(out[0].float(), expected, atol=tol, rtol=tol)
    # QK pairs: everything; P.V pairs: less the 2 heads x 32 queries x 16 skipped keys.
    causal = n_ctx * (n_ctx + 1) // 2
    assert stats.density == pytest.approx(1.0)
    assert stats.pv_density == pytest.approx(1.0 - 32 * 16 / causal)


@pytest.mark.parametrize("q_heads,kv_heads,dim,per_head,block_m", [
    pytest.param(4, 1, 64, True, 32, id="gqa4-per-head"),
    pytest.param(4, 2, 128, False, 16, id="gqa2-shared"),
    pytest.param(2, 2, 256, True, 32, id="mha-d256"),
])
def test_kernel_equals_its_twin(q_heads, kv_heads, dim, per_head, block_m):
    n_ctx, block_n, gap = 200, 16, 5.0  # ragged last tile and chunk
    q, k, v = far_chunks(2, q_heads, kv_heads, n_ctx, dim, far=[3, 5, 8], block=16)
    plan = dense_plan(q, k, 64, 4, block_m, per_head=per_head, in_order=True)
    config = ExecConfig(block_m=block_m, block_n=block_n)
    out, stats = sparse_attention(q, k, v, plan, config=config, skip_gap=gap, return_stats=True)
    skipped, skipped_keys = torch_decide_skips(q, k, plan, gap, block_m=block_m, block_n=block_n)
    assert skipped.any(), "nothing was skipped: the test would not exercise the rule"
    assert torch.equal(stats.skipped_keys.cpu(), skipped_keys)
    chunks = torch_decide_chunks(q, k, plan, 0.0, block_m=block_m, block_n=block_n)
    expected = torch_sparse_attention(q, k, v, plan, chunks=chunks, block_m=block_m, block_n=block_n, skipped=skipped)
    torch.testing.assert_close(out.float().cpu(), expected.cpu(), atol=3e-3, rtol=3e-3)
    assert stats.pv_density < stats.density == pytest.approx(1.0)


def test_an_out_of_reach_gap_is_dense_attention_and_in_order_plans_equal_written_ones():
    q, k, v = far_chunks(3, 4, 2, 150, 64, far=[2], block=16)
    in_order = dense_plan(q, k, 32, 4, 16, in_order=True)
    written = dense_plan(q, k, 32, 4, 16)
    assert in_order.in_order and in_order.key_index.numel() == 0
    config = ExecConfig(block_m=16, block_n=16)
    plain = sparse_attention(q, k, v, written, config=config)
    unread = sparse_attention(q, k, v, in_order, config=config)
    never, stats = sparse_attention(q, k, v, in_order, config=config, skip_gap=1e6, return_stats=True)
    dense = exact_reference(q, k, v)
    for out in (plain, unread, never):
        torch.testing.assert_close(out.float(), dense, atol=3e-3, rtol=3e-3)
    assert int(stats.skipped_keys.sum()) == 0 and stats.pv_density == stats.density


def test_skipping_and_in_order_plans_refuse_a_stopping_walk():
    q, k, v = far_chunks(4, 2, 1, 64, 64, far=[], block=16)
    plan = dense_plan(q, k, 32, 0, 16, in_order=True)
    with pytest.raises(ValueError, match="tau = 0"):
        sparse_attention(q, k, v, plan, tau=0.01, block_m=16, block_n=16)
    written = dense_plan(q, k, 32, 0, 16)
    with pytest.raises(ValueError, match="tau = 0"):
        sparse_attention(q, k, v, written, tau=0.01, skip_gap=5.0, block_m=16, block_n=16)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="skip_gap must be"):
            sparse_attention(q, k, v, written, skip_gap=bad, block_m=16, block_n=16)


def test_the_method_counts_qk_and_pv_apart():
    q, k, v = (t.float().cpu() for t in far_chunks(5, 4, 1, 256, 64, far=[2, 6, 9], block=64))
    stats = AttentionStats()
    method = create("skip_softmax", {"threshold": "5", "segment": "64", "block_m": "64"})
    out = method.prefill(q, k, v, scale=64 ** -0.5, stats=stats)
    assert stats.density == pytest.approx(1.0) and stats.pv_density < 0.95
    ref = exact_reference(q, k, v)
    assert float((out - ref).norm() / ref.norm()) < 1e-3  # the skipped keys carried almost no weight
    loose = AttentionStats()
    create("skip_softmax", {"threshold": "40", "segment": "64", "block_m": "64"}).prefill(
        q, k, v, scale=64 ** -0.5, stats=loose)
    assert loose.pv_density == pytest.approx(1.0)
    with pytest.raises(Exception, match="threshold"):
        create("skip_softmax", {"threshold": "0"})
