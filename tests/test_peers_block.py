"""The block-sparse peers (block oracle, XAttention, PBS-Attn) as planners for the shared executor.

Every planner's plan must be valid, causal and keep each query block's diagonal; the method's output
must be softmax attention restricted to exactly the plan's keys; threshold 1 must give dense
attention; the oracle must be a ceiling for contiguous blocks; lower thresholds must cost less.
CPU, tiny shapes, fp32 through the PyTorch reference (plus fp16 through the Triton interpreter).
"""

from __future__ import annotations

import math

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.methods import AttentionStats, create
from s2o_eval.methods.block_oracle import BlockOracle
from s2o_eval.methods.pbs import PBS
from s2o_eval.methods.xattention import XAttention
from s2o_kernels import ExecConfig, sparse_attention
from s2o_kernels.block_plan import block_mass
from s2o_kernels.peers.block_oracle import block_oracle_select
from s2o_kernels.peers.pbs import pbs_select, permuted_blocks_to_plan, segment_key_order
from s2o_kernels.peers.xattention import xattention_select

BLOCK = 16


def make_qkv(seed: int, n_ctx: int, *, batch: int = 1, q_heads: int = 4, kv_heads: int = 2, head_dim: int = 64,
             hot: float = 0.0, hot_every: int = 0):
    """Random q, k, v; with ``hot`` > 0 some keys lean along a direction every query shares, which
    raises their logits by about ``hot`` (concentrated attention, as on real text). Hot keys are a
    random eighth of the keys, or with ``hot_every`` one key at a random offset in every run of that
    many tokens (heavy keys scattered evenly: contiguous blocks cannot gather them)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, n_ctx, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, n_ctx, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, n_ctx, head_dim, generator=gen)
    if hot:
        direction = torch.randn(head_dim, generator=gen)
        direction = direction / direction.norm() * head_dim**0.5
        q = q + direction
        if hot_every:
            chosen = torch.zeros(batch, kv_heads, n_ctx, 1, dtype=torch.bool)
            for start in range(0, n_ctx, hot_every):
                offset = int(torch.randint(min(hot_every, n_ctx - start), (1,), generator=gen))
                chosen[:, :, start + offset] = True
        else:
            chosen = torch.rand(batch, kv_heads, n_ctx, 1, generator=gen) < 0.125
        k = k + chosen * hot * direction / head_dim**0.5
    return q, k, v


def scale_of(q) -> float:
    return 1.0 / math.sqrt(q.shape[-1])


def allowed_keys(plan, n_ctx: int) -> torch.Tensor:
    """Bool (batch, H_plan, seq_len, seq_len): the keys each query position attends to under the plan
    (sinks and own segment up to the diagonal, plus its segment's list), rebuilt from the raw lists."""
    batch, heads, _ = plan.key_index.shape
    pos = torch.arange(n_ctx)
    seg_start = pos // plan.segment * plan.segment
    pass1 = (pos[None, :] <= pos[:, None]) & ((pos[None, :] >= seg_start[:, None]) | (pos[None, :] < plan.sinks))
    mask = pass1.expand(batch, heads, n_ctx, n_ctx).clone()
    for b in range(batch):
        for h in range(heads):
            for s in range(plan.list_len.shape[-1]):
                lo = int(plan.list_start[b, h, s])
                keys = plan.key_index[b, h, lo:lo + int(plan.list_len[b, h, s])].long()
                rows = slice(s * plan.segment, min((s + 1) * plan.segment, n_ctx))
                mask[b, h, rows, keys] = True
    return mask


def masked_attention(q, k, v, mask, scale):
    """fp32 softmax attention where ``mask (batch, q_heads or kv heads, N, N)`` allows."""
    group = q.shape[1] // k.shape[1]
    kk, vv = (t.float().repeat_interleave(group, dim=1) for t in (k, v))
    if mask.shape[1] != q.shape[1]:
        mask = mask.repeat_interleave(q.shape[1] // mask.shape[1], dim=1)
    scores = (q.float() @ kk.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ vv


def dense(q, k, v):
    n_ctx = q.shape[2]
    causal = torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril().expand(q.shape[0], q.shape[1], -1, -1)
    return masked_attention(q, k, v, causal, scale_of(q))


METHODS = {
    "block_oracle": lambda threshold: BlockOracle(threshold=threshold, block=BLOCK),
    "xattention": lambda threshold: XAttention(threshold=threshold, stride=4, block=BLOCK),
    "pbs": lambda threshold: PBS(threshold=threshold, segment=2 * BLOCK, block=BLOCK),
}


def list_blocks(plan) -> int:
    """Key blocks listed over all lists (every listed set is a whole number of blocks)."""
    return int(plan.list_len.sum()) // BLOCK


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("n_ctx,threshold", [(200, 0.8), (128, 0.5)])
def test_plan_is_valid_and_output_is_attention_over_its_keys(name, n_ctx, threshold):
    q, k, v = make_qkv(1, n_ctx, batch=2, hot=4.0)
    method = METHODS[name](threshold)
    plan = method.plan(q, k, scale=scale_of(q))
    plan.check(q, k, block_m=BLOCK, thorough=True)
    assert plan.segment == BLOCK and plan.sinks == 0 and plan.query_order is None
    assert plan.heads == q.shape[1]  # one selection per query head
    mask = allowed_keys(plan, n_ctx)
    pos = torch.arange(n_ctx)
    assert not (mask & (pos[None, :] > pos[:, None])).any()  # causal
    diagonal_block = (pos[None, :] // BLOCK == pos[:, None] // BLOCK) & (pos[None, :] <= pos[:, None])
    assert (mask | ~diagonal_block).all()  # every query keeps its own block up to itself
    assert mask.sum() < torch.ones(n_ctx, n_ctx).tril().sum() * mask.shape[0] * mask.shape[1]  # it is sparse
    stats = AttentionStats()
    out = method.execute(q, k, v, plan, scale=scale_of(q), stats=stats)
    expected = masked_attention(q, k, v, mask, scale_of(q))
    torch.testing.assert_close(out.float(), expected, atol=1e-5, rtol=1e-5)
    computed = float(mask.sum())
    assert stats.computed == pytest.approx(computed) and stats.density < 1.0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_threshold_one_is_dense_attention(name):
    q, k, v = make_qkv(2, 150, hot=4.0)
    method = METHODS[name](1.0)
    plan = method.plan(q, k, scale=scale_of(q))
    plan.check(q, k, thorough=True)
    n_blocks = -(-150 // BLOCK)
    assert plan.list_len[0, 0].tolist() == [t * BLOCK for t in range(n_blocks)]  # every prefix key listed
    torch.testing.assert_close(method.prefill(q, k, v, scale=scale_of(q)).float(), dense(q, k, v), atol=1e-5, rtol=1e-5)


def test_oracle_top_k_of_all_blocks_is_dense():
    q, k, v = make_qkv(3, 96)
    out = BlockOracle(top_k=96 // BLOCK, block=BLOCK).prefill(q, k, v, scale=scale_of(q))
    torch.testing.assert_close(out.float(), dense(q, k, v), atol=1e-5, rtol=1e-5)


def oracle_mass_at(counts: torch.Tensor, q, k, mass) -> torch.Tensor:
    """Per (batch, head, query block): the mass the oracle keeps with ``counts`` blocks there."""
    best = torch.zeros_like(counts, dtype=torch.float32)
    for n in counts.unique().tolist():
        chosen = block_oracle_select(q, k, block=BLOCK, scale=scale_of(q), top_k=int(n))
        assert (chosen.sum(-1)[counts == n] == n).all()
        best = torch.where(counts == n, (mass * chosen).sum(-1), best)
    return best


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_oracle_keeps_at_least_xattentions_mass_at_equal_blocks(threshold):
    q, k, _ = make_qkv(4, 192, hot=3.0)
    mass = block_mass(q, k, BLOCK, scale_of(q))
    chosen = xattention_select(q, k, block=BLOCK, scale=scale_of(q), stride=4, threshold=threshold)
    counts = chosen.sum(-1)
    assert (counts < torch.arange(1, counts.shape[-1] + 1)).any()  # xattention did drop blocks
    kept = (mass * chosen).sum(-1)
    assert (oracle_mass_at(counts, q, k, mass) >= kept - 1e-6).all()


def test_pbs_permuted_blocks_beat_contiguous_oracle_on_scattered_heavy_keys():
    """PBS's point: with one heavy key in every block, contiguous blocks cannot gather them but
    permuted ones can, so at the same number of blocks PBS's token sets hold more true mass than even
    the block oracle's (the oracle is the ceiling of CONTIGUOUS blocks only)."""
    n_ctx, segment = 256, 4 * BLOCK
    q, k, _ = make_qkv(5, n_ctx, q_heads=2, kv_heads=1, hot=8.0, hot_every=BLOCK)
    scale = scale_of(q)
    order = segment_key_order(q, k, block=BLOCK, segment=segment, scale=scale)
    selected = pbs_select(q, k, order, block=BLOCK, segment=segment, scale=scale, threshold=0.8)
    plan = permuted_blocks_to_plan(selected, order, block=BLOCK, segment=segment, n_ctx=n_ctx)
    plan.check(q, k, thorough=True)
    # true mass per (query block, key token), summed over the block's queries
    probs = torch.softmax((q @ k.repeat_interleave(2, dim=1).transpose(-1, -2) * scale)
                          .masked_fill(torch.ones(n_ctx, n_ctx, dtype=torch.bool).triu(1), float("-inf")), dim=-1)
    mask = allowed_keys(plan, n_ctx)
    rows = torch.arange(n_ctx) // BLOCK
    pbs_mass = torch.zeros(1, 2, n_ctx // BLOCK).index_add_(2, rows, (probs * mask).sum(-1))
    counts = plan.list_len.long() // BLOCK + 1  # blocks per query block: listed ones and the diagonal
    oracle = oracle_mass_at(counts, q, k, block_mass(q, k, BLOCK, scale))
    later = slice(segment // BLOCK, None)  # query blocks past the first segment have permuted prefixes
    assert counts[..., later].float().mean() < n_ctx // BLOCK / 2  # PBS selected sparsely
    assert pbs_mass[..., later].sum() > oracle[..., later].sum() * 1.05


@pytest.mark.parametrize("name", sorted(METHODS))
def test_density_falls_with_threshold_on_concentrated_inputs(name):
    q, k, _ = make_qkv(6, 192, hot=5.0)
    blocks = [list_blocks(METHODS[name](t).plan(q, k, scale=scale_of(q))) for t in (1.0, 0.95, 0.8, 0.5, 0.2)]
    assert all(a >= b for a, b in zip(blocks, blocks[1:])), blocks
    assert blocks[-1] < blocks[0] / 2, blocks


@pytest.mark.parametrize("name", ["pbs", "xattention"])
def test_fp16_through_the_triton_executor(name):
    """The Triton kernel (interpreter on CPU) runs the peers' per-head plans with gathered token lists."""
    q, k, v = (t.half() for t in make_qkv(7, 64, q_heads=2, kv_heads=1, hot=4.0))
    if torch.cuda.is_available():
        q, k, v = q.cuda(), k.cuda(), v.cuda()
    plan = METHODS[name](0.6).plan(q, k, scale=scale_of(q))
    plan.check(q, k, thorough=True)
    out = sparse_attention(q, k, v, plan, tau=0.0, config=ExecConfig(block_m=BLOCK, block_n=BLOCK))
    mask = allowed_keys(plan, 64).to(q.device)
    n = 64  # causal pairs per (batch, head) row set; the plan must keep some but not all of them
    assert int(plan.list_len.sum()) > 0 and int(mask.sum()) < mask.shape[0] * mask.shape[1] * n * (n + 1) // 2
    torch.testing.assert_close(out.float(), masked_attention(q, k, v, mask, scale_of(q)), atol=3e-3, rtol=3e-3)


def test_parameters_are_validated_and_registered():
    for bad in (dict(threshold=0.0), dict(threshold=1.5), dict(block=24)):
        for cls in (BlockOracle, XAttention, PBS):
            with pytest.raises(ValueError):
                cls(**bad)
    with pytest.raises(ValueError):
        BlockOracle(top_k=-1)
    with pytest.raises(ValueError):
        XAttention(stride=3, block=16)
    with pytest.raises(ValueError):
        PBS(segment=48, block=32)
    configured = create("pbs", {"threshold": "0.5", "segment": "64", "block": "32"})
    assert configured == PBS(threshold=0.5, segment=64, block=32)
    assert isinstance(create("xattention"), XAttention) and isinstance(create("block_oracle"), BlockOracle)
    with pytest.raises(UserError):
        create("xattention", {"stride": "5"})


def test_antidiagonal_scores_match_a_direct_sum_and_do_not_depend_on_chunking():
    """Block score = sum over the block's strided rows of softmax over the visible cells of the mean
    antidiagonal logit, computed here cell by cell."""
    from s2o_kernels.peers.xattention import antidiagonal_block_scores

    stride, block, n_ctx = 4, 8, 30  # ragged: 30 tokens pad to 32
    q, k, _ = make_qkv(8, n_ctx, q_heads=2, kv_heads=1)
    scale = scale_of(q)
    got = antidiagonal_block_scores(q, k, block=block, stride=stride, scale=scale)
    chunked = antidiagonal_block_scores(q, k, block=block, stride=stride, scale=scale, query_chunk=block)
    torch.testing.assert_close(chunked, got)
    cells = 32 // stride
    qp = torch.nn.functional.pad(q, (0, 0, 0, 2))
    kp = torch.nn.functional.pad(k, (0, 0, 0, 2))
    for h in range(2):
        logits = torch.full((cells, cells), float("-inf"))
        for a in range(cells):
            for b in range(a + 1):
                if b * stride < n_ctx:
                    logits[a, b] = sum(float(qp[0, h, a * stride + stride - 1 - r] @ kp[0, 0, b * stride + r])
                                       for r in range(stride)) * scale / stride
        probs = torch.softmax(logits, dim=-1)
        probs[torch.arange(cells) * stride >= n_ctx] = 0.0
        expected = probs.reshape(4, 2, 4, 2).sum(dim=(1, 3))
        torch.testing.assert_close(got[0, h], expected, atol=1e-5, rtol=1e-5)
