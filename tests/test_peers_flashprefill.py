"""FlashPrefill's selection (pooled block probe, max-relative threshold) as a planner for the shared
executor: a case worked by hand, the vectorized policy against its loop twin, the threshold's
extremes through the executor, and the registered method. CPU, fp32, tiny shapes."""

from __future__ import annotations

import math

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.methods import AttentionStats, create
from s2o_eval.methods.flashprefill import FlashPrefill
from s2o_kernels import execute_plan
from s2o_kernels.block_plan import blocks_to_plan
from s2o_kernels.peers.flashprefill import (flashprefill_plan, flashprefill_select, flashprefill_select_reference,
                                            probe_scores)
from s2o_kernels.reference import exact_reference

BLOCK = 16
NOTHING_FORCED = dict(sink_blocks=0, window_blocks=1, full_last_blocks=0)  # the diagonal only (pass 1's anyway)


def hot_block_qkv(seed: int, n_ctx: int, *, batch: int = 1, q_heads: int = 4, kv_heads: int = 2, head_dim: int = 64,
                  hot: float = 6.0):
    """Random q, k, v where every query of a kv head's group leans along one direction and each key
    block along it too, by a strength drawn per block in [0, hot] logits: block scores then spread
    over a range the threshold can cut (plain Gaussians pool to near-equal block scores)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, n_ctx, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, n_ctx, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, n_ctx, head_dim, generator=gen)
    lean = torch.nn.functional.normalize(torch.randn(batch, kv_heads, 1, head_dim, generator=gen), dim=-1)
    lean = lean * head_dim ** 0.25                                   # (lean . lean) * head_dim^-0.5 = 1 logit
    strength = torch.rand(batch, kv_heads, -(-n_ctx // BLOCK), 1, generator=gen) * hot
    q = q + lean.repeat_interleave(q_heads // kv_heads, dim=1)
    k = k + strength.repeat_interleave(BLOCK, dim=2)[:, :, :n_ctx] * lean
    return q, k, v


def kept(selected: torch.Tensor, head: int = 0) -> list[list[int]]:
    """Key blocks kept per query block of one (batch 0) head."""
    return [row.nonzero()[:, 0].tolist() for row in selected[0, head]]


def hand_case():
    """8 tokens in blocks of 2 (4 blocks), head dim 2, scale 1; every vector lies on the first axis.

    Pooled keys: block 0 = mean([2, 0], [0, 0]) = 1, block 1 = 0, block 2 = mean(4, 0) = 2, block 3 = 0.
    Row r sees key block j once r >= 2j + 1 (its last slot): row 4 sees 0, 1; row 5 sees 0..2;
    row 6 sees 0..2; row 7 sees 0..3. Query rows 4, 5 are -ln 2; row 6 is 2 ln 2; the rest 0.
    Scores, exp(logit) summed over the block's rows (a common factor: only ratios matter):
      query block 1 (rows 2, 3: logits 0):  block 0: 1 + 1 = 2, block 1: 1
      query block 2 (rows 4, 5):            block 0: 1/2 + 1/2 = 1, block 1: 1 + 1 = 2, block 2: 1/4
      query block 3 (rows 6, 7):            block 0: 4 + 1 = 5, block 1: 1 + 1 = 2, block 2: 16 + 1 = 17,
                                            block 3: 1 (row 7 only)
    """
    ln2 = math.log(2)
    k = torch.zeros(1, 1, 8, 2)
    k[0, 0, 0, 0], k[0, 0, 4, 0] = 2.0, 4.0
    q = torch.zeros(1, 1, 8, 2)
    q[0, 0, 4, 0] = q[0, 0, 5, 0] = -ln2
    q[0, 0, 6, 0] = 2 * ln2
    return q, k


def test_probe_scores_by_hand():
    q, k = hand_case()
    scores = probe_scores(q, k, block=2, scale=1.0)[0, 0]
    # each row divided by its query block's largest exp(logit): 1, 1, 1 and 16
    expected = torch.tensor([[1, 0, 0, 0], [2, 1, 0, 0], [1, 2, 0.25, 0], [5 / 16, 2 / 16, 17 / 16, 1 / 16]])
    torch.testing.assert_close(scores, expected)


def test_selection_by_hand():
    q, k = hand_case()

    def select(**knobs):
        return kept(flashprefill_select(q, k, block=2, scale=1.0, **{**NOTHING_FORCED, **knobs}))

    # alpha 0.6: query block 1 keeps block 0 (2 >= 0.6 x 2); block 2 keeps 1 only (2; 1 < 1.2);
    # block 3 keeps 2 only (17; 5 < 10.2); each keeps its diagonal
    assert select(alpha=0.6) == [[0], [0, 1], [1, 2], [2, 3]]
    # alpha 0.3 on query block 3: 5 < 0.3 x 17 drops block 0. A softmax per row would keep it
    # (row 6: 4/21, row 7: 1/4, summed 0.44 >= 0.3 x 1.01): the shared maximum is theirs
    assert select(alpha=0.3) == [[0], [0, 1], [0, 1, 2], [2, 3]]
    assert select(alpha=0.6, sink_blocks=1) == [[0], [0, 1], [0, 1, 2], [0, 2, 3]]
    assert select(alpha=0.6, window_blocks=2) == [[0], [0, 1], [1, 2], [2, 3]]
    assert select(alpha=0.6, full_last_blocks=1) == [[0], [0, 1], [1, 2], [0, 1, 2, 3]]
    assert select(alpha=0.6, min_blocks=2) == [[0], [0, 1], [0, 1, 2], [0, 2, 3]]  # the two best: 1 and 0; 2 and 0
    assert select(alpha=0.0) == [list(range(t + 1)) for t in range(4)]           # alpha 0: every causal block


def test_ragged_last_block_counts_real_rows_only():
    # 7 tokens: the last query block holds row 6 alone, which sees key blocks 0..2 (row 7 does not exist)
    q, k = hand_case()
    scores = probe_scores(q[:, :, :7], k[:, :, :7], block=2, scale=1.0)[0, 0]
    torch.testing.assert_close(scores[3], torch.tensor([4 / 16, 1 / 16, 16 / 16, 0.0]))


SHAPES = [  # batch, q heads, kv heads, tokens, head dim: MHA and GQA 2 and 4, whole and ragged blocks
    (1, 4, 4, 100, 64),
    (2, 4, 2, 160, 128),
    (1, 8, 2, 150, 256),
    (1, 4, 1, 247, 64),
]
KNOBS = [  # their forced blocks scaled down to sequences of 7-16 blocks (theirs would force them all)
    dict(alpha=0.12, sink_blocks=1, window_blocks=2, full_last_blocks=1),
    dict(alpha=0.3, **NOTHING_FORCED),
    dict(alpha=0.05, min_blocks=3, **NOTHING_FORCED),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_vectorized_selection_equals_the_loop_twin(shape, knobs):
    batch, q_heads, kv_heads, n_ctx, head_dim = shape
    q, k, _ = hot_block_qkv(sum(shape), n_ctx, batch=batch, q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim)
    scale = head_dim ** -0.5
    got = flashprefill_select(q, k, block=BLOCK, scale=scale, **knobs)
    expected, margin = flashprefill_select_reference(q, k, block=BLOCK, scale=scale, **knobs)
    # a score within 1e-5 of the threshold may fall either way under another summation order
    clear = margin.abs() > 1e-5
    assert int((~clear).sum()) <= 2
    assert torch.equal(got & clear, expected & clear)
    causal = torch.ones(got.shape[-1], got.shape[-1], dtype=torch.bool).tril()
    assert not (got & ~causal).any()
    assert 0 < int(got.sum()) < int(causal.sum()) * batch * q_heads  # the rule dropped some blocks, not all


def test_probe_does_not_depend_on_the_query_chunk():
    q, k, _ = hot_block_qkv(3, 200, head_dim=64)
    whole = probe_scores(q, k, block=BLOCK, scale=0.125)
    for chunk in (BLOCK, 3 * BLOCK, 5):  # 5 rounds up to one block
        torch.testing.assert_close(probe_scores(q, k, block=BLOCK, scale=0.125, query_chunk=chunk), whole)


def masked_attention(q, k, v, selected, scale):
    """fp64 causal attention where query block t sees the key blocks ``selected`` keeps, its own block
    always (the executor's pass 1)."""
    n_ctx, group = q.shape[2], q.shape[1] // k.shape[1]
    pos = torch.arange(n_ctx)
    blocks = selected | torch.eye(selected.shape[-1], dtype=torch.bool)
    allowed = blocks[..., pos // BLOCK, :][..., pos // BLOCK] & (pos[None, :] <= pos[:, None])
    kk, vv = (x.double().repeat_interleave(group, dim=1) for x in (k, v))
    scores = (q.double() @ kk.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ vv


def test_alpha_zero_is_dense_attention_through_the_executor():
    q, k, v = hot_block_qkv(4, 150, head_dim=64)
    scale = 0.125
    plan = flashprefill_plan(q, k, block=BLOCK, scale=scale, alpha=0.0, **NOTHING_FORCED)
    plan.check(q, k, thorough=True)
    assert plan.list_len[0, 0].tolist() == [t * BLOCK for t in range(-(-150 // BLOCK))]  # every prefix key
    out, _ = execute_plan(q, k, v, plan, tau=0.0, scale=scale, block_m=BLOCK)
    torch.testing.assert_close(out.float(), exact_reference(q, k, v, scale), atol=1e-5, rtol=1e-5)


def test_alpha_one_keeps_only_each_rows_best_block():
    q, k, v = hot_block_qkv(5, 200, head_dim=64)
    scale = 0.125
    selected = flashprefill_select(q, k, block=BLOCK, scale=scale, alpha=1.0, **NOTHING_FORCED)
    scores = probe_scores(q, k, block=BLOCK, scale=scale)
    off_diagonal = selected & ~torch.eye(selected.shape[-1], dtype=torch.bool)
    best = scores.argmax(-1, keepdim=True)
    assert (off_diagonal.sum(-1) <= 1).all()                      # no ties in random scores
    assert off_diagonal.scatter(-1, best, False).logical_not().all()  # and that block is the best one
    out, _ = execute_plan(q, k, v, blocks_to_plan(selected, BLOCK, 200), tau=0.0, scale=scale, block_m=BLOCK)
    torch.testing.assert_close(out.double(), masked_attention(q, k, v, selected, scale), atol=1e-5, rtol=1e-5)


def test_method_through_the_registry():
    method = create("flashprefill", {"alpha": "0.3", "sink_blocks": "1", "window_blocks": "2",
                                     "full_last_blocks": "1", "min_blocks": "0", "block": "16"})
    assert method == FlashPrefill(alpha=0.3, sink_blocks=1, window_blocks=2, full_last_blocks=1, block=16)
    q, k, v = hot_block_qkv(6, 192, head_dim=64)
    scale = 0.125
    plan = method.plan(q, k, scale=scale)
    plan.check(q, k, block_m=16, thorough=True)
    assert plan.segment == BLOCK and plan.heads == q.shape[1]  # one list per q head and query block
    stats = AttentionStats()
    out = method.prefill(q, k, v, scale=scale, stats=stats)
    selected = flashprefill_select(q, k, block=BLOCK, scale=scale, alpha=0.3, sink_blocks=1, window_blocks=2,
                                   full_last_blocks=1)
    torch.testing.assert_close(out.double(), masked_attention(q, k, v, selected, scale), atol=1e-5, rtol=1e-5)
    assert 0 < stats.density < 1


def test_density_falls_as_alpha_rises():
    q, k, _ = hot_block_qkv(7, 256, head_dim=64)
    listed = [int(FlashPrefill(alpha=a, block=BLOCK, **NOTHING_FORCED).plan(q, k, scale=0.125).list_len.sum())
              for a in (0.0, 0.05, 0.12, 0.3, 0.6, 1.0)]
    assert all(a >= b for a, b in zip(listed, listed[1:])), listed
    assert listed[-1] < listed[0] / 2, listed


def test_defaults_are_the_authors_and_parameters_are_validated():
    assert FlashPrefill() == FlashPrefill(alpha=0.12, sink_blocks=2, window_blocks=4, full_last_blocks=2,
                                          min_blocks=0, block=128)
    for bad in ({"alpha": "1.5"}, {"alpha": "-0.1"}, {"block": "24"}, {"window_blocks": "-1"},
                {"min_blocks": "-2"}, {"alpha": "nan"}, {"gamma": "0.9"}):
        with pytest.raises(UserError):
            create("flashprefill", bad)
