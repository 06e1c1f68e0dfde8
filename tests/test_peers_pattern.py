"""The pattern peers as planners for the shared executor: FlexPrefill (query-aware or vertical-slash
blocks, chosen per head) and MInference (token-granular vertical-slash lists). CPU, fp32, tiny shapes."""

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.methods import AttentionStats, create
from s2o_kernels.reference import exact_reference
from s2o_kernels.peers.flexprefill import flexprefill_decision, flexprefill_plan, js_distance
from s2o_kernels.peers.minference import minference_selection


def _random(batch, hq, hkv, n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, h, n, d, generator=gen) for h in (hq, hkv, hkv)]


def _vertical_slash_like(n, d, hot, seed):
    """Queries all like a few hot keys (vertical lines) and, through many rotary-like frequencies,
    keys close to themselves (a sharp local diagonal): mean pooling blurs both away."""
    gen = torch.Generator().manual_seed(seed)
    angles = torch.arange(n).float()[:, None] * torch.linspace(0.05, 3.0, d // 2)[None, :]
    rotary = torch.cat([angles.cos(), angles.sin()], -1) * 1.6
    hot_direction = torch.zeros(d)
    hot_direction[0] = 1.0
    q = rotary + 0.1 * torch.randn(n, d, generator=gen) + 4.0 * hot_direction
    k = rotary.clone()
    k[hot] += 9.0 * hot_direction
    return q[None, None], k[None, None]


def _block_smooth(n, d, block, seed):
    """Keys constant within each block and similar queries: the pooled estimate is nearly exact."""
    gen = torch.Generator().manual_seed(seed)
    per_block = 0.7 * torch.randn(-(-n // block), d, generator=gen)
    k = per_block.repeat_interleave(block, 0)[:n] + 0.05 * torch.randn(n, d, generator=gen)
    q = torch.randn(1, d, generator=gen) + 0.1 * torch.randn(n, d, generator=gen)
    return q[None, None], k[None, None]


def _mixed_heads(batch, hq, hkv, n, d, block, seed):
    """Even kv heads vertical-slash-like, odd ones block-smooth (each q head: its kv head's queries
    plus a little noise), so one plan holds both of FlexPrefill's patterns."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.empty(batch, hq, n, d), torch.empty(batch, hkv, n, d)
    for b in range(batch):
        for h in range(hkv):
            hot = torch.randperm(n, generator=gen)[:3].tolist()
            one_q, one_k = (_vertical_slash_like(n, d, hot, seed + b) if h % 2 == 0
                            else _block_smooth(n, d, block, seed + b))
            k[b, h] = one_k[0, 0]
            for g in range(hq // hkv):
                q[b, h * (hq // hkv) + g] = one_q[0, 0] + 0.05 * torch.randn(n, d, generator=gen)
    return q, k, torch.randn(batch, hkv, n, d, generator=gen)


def _masked_softmax_from_plan(q, k, v, plan, scale):
    """Attention where row r of query block t sees the sinks, its block's keys up to r, and block t's list."""
    batch, hq, n, _ = q.shape
    group = hq // k.shape[1]
    block = plan.segment
    allowed = torch.zeros(batch, hq, n, n, dtype=torch.bool)
    pos = torch.arange(n)
    same_block = pos[None, :] // block == pos[:, None] // block
    allowed |= (pos[None, :] <= pos[:, None]) & (same_block | (pos[None, :] < plan.sinks))
    for b in range(batch):
        for h in range(hq):
            for t in range(plan.list_len.shape[-1]):
                start, length = int(plan.list_start[b, h, t]), int(plan.list_len[b, h, t])
                keys = plan.key_index[b, h, start:start + length].long()
                allowed[b, h, t * block:(t + 1) * block, keys] = True
    scores = q @ k.repeat_interleave(group, 1).transpose(-1, -2) * scale
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    return probs @ v.repeat_interleave(group, 1)


CONFIGS = [
    ("flexprefill", {"gamma": "0.7", "min_budget": "0"}),                 # per-head choice
    ("flexprefill", {"gamma": "0.6", "min_budget": "32", "tau": "5"}),    # every head query-aware
    ("flexprefill", {"gamma": "0.6", "min_budget": "16", "tau": "0"}),    # every head vertical-slash
    ("minference", {"vertical": "12", "slash": "20", "last_q": "16"}),
    ("minference", {"budget_scale": "0.01"}),                             # 10 columns, 61 diagonals
]


@pytest.mark.parametrize("name,args", CONFIGS)
@pytest.mark.parametrize("batch,hq,hkv,n,d,block", [(1, 4, 2, 200, 16, 32), (2, 2, 1, 97, 32, 16)])
def test_plan_is_valid_and_output_is_the_plans_masked_softmax(name, args, batch, hq, hkv, n, d, block):
    q, k, v = _mixed_heads(batch, hq, hkv, n, d, block, seed=n + hq)
    method = create(name, dict(args, block=str(block)))
    plan = method.plan(q, k, scale=d ** -0.5)
    plan.check(q, k, block_m=block, thorough=True)   # keys in [sinks, t * block), unique per list
    assert plan.heads == hq and plan.segment == block and plan.query_order is None
    assert 0 < int(plan.list_len.sum()) < batch * hq * n * n // 2       # sparse, not empty
    stats = AttentionStats()
    out = method.execute(q, k, v, plan, scale=d ** -0.5, stats=stats)
    expected = _masked_softmax_from_plan(q, k, v, plan, d ** -0.5)  # the diagonal block always included
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
    assert 0 < stats.density < 1


@pytest.mark.parametrize("name,args", [("flexprefill", {"gamma": "1.0", "min_budget": "0", "tau": "5"}),
                                       ("flexprefill", {"gamma": "1.0", "min_budget": "0", "tau": "0"}),
                                       ("minference", {"vertical": "200", "slash": "200"}),
                                       ("minference", {"vertical": "20", "slash": "20", "budget_scale": "9"})])
def test_full_budgets_reproduce_dense_attention(name, args):
    q, k, v = _random(1, 4, 1, 150, 32, seed=3)
    stats = AttentionStats()
    out = create(name, dict(args, block="32")).prefill(q, k, v, scale=32 ** -0.5, stats=stats)
    torch.testing.assert_close(out, exact_reference(q, k, v), atol=2e-5, rtol=2e-5)
    assert stats.density == pytest.approx(1.0)


def test_minference_zero_budgets_compute_only_the_diagonal_blocks():
    q, k, v = _random(1, 2, 1, 128, 16, seed=4)
    plan = create("minference", {"vertical": "0", "slash": "0", "block": "32"}).plan(q, k, scale=0.25)
    assert int(plan.list_len.sum()) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flexprefill_decision_follows_the_shape_of_attention(seed):
    n, d, block = 256, 32, 32
    q, k = _vertical_slash_like(n, d, hot=[5, 70, 150], seed=seed)
    query_aware, distance = flexprefill_decision(q, k, block=block, tau=0.1, scale=d ** -0.5)
    assert not bool(query_aware) and float(distance) > 0.2
    q, k = _block_smooth(n, d, block, seed)
    query_aware, distance = flexprefill_decision(q, k, block=block, tau=0.1, scale=d ** -0.5)
    assert bool(query_aware) and float(distance) < 0.1


def test_js_distance_is_zero_for_equal_and_sqrt_ln2_for_disjoint():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    r = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]])     # unnormalised on purpose
    torch.testing.assert_close(js_distance(p, r), torch.tensor([0.6931471805599453 ** 0.5, 0.0]))


def test_flexprefill_vertical_slash_keeps_hot_columns_for_every_later_block():
    n, d, block = 256, 32, 32
    q, k = _vertical_slash_like(n, d, hot=[5, 70, 150], seed=0)
    v = torch.randn(1, 1, n, d)
    plan, query_aware = flexprefill_plan(q, k, block=block, gamma=0.8, tau=0.1, min_budget=0, scale=d ** -0.5)
    assert not bool(query_aware)
    for t in range(n // block):
        keys = set(plan.key_index[0, 0, int(plan.list_start[0, 0, t]):][: int(plan.list_len[0, 0, t])].tolist())
        for hot in (5, 70, 150):
            assert (hot in keys) == (hot < t * block)
    assert int(plan.list_len.sum()) < n * n // 2 // 2                    # far from dense
    method = create("flexprefill", {"block": "32", "gamma": "0.8", "min_budget": "0"})
    out = method.execute(q, k, v, plan, scale=d ** -0.5)
    err = (out - exact_reference(q, k, v)).norm() / exact_reference(q, k, v).norm()
    assert float(err) < 0.1                                               # the pattern holds the mass


def test_flexprefill_min_budget_and_gamma_set_the_list_sizes():
    q, k, _ = _random(1, 2, 1, 128, 16, seed=5)
    small, _ = flexprefill_plan(q, k, block=16, gamma=0.01, tau=5.0, min_budget=64, scale=0.25)
    blocks = small.list_len[0, 0].long() // 16
    assert torch.all(blocks >= torch.arange(8).clamp(max=3))            # 4 blocks' worth, diagonal counted
    large, _ = flexprefill_plan(q, k, block=16, gamma=0.95, tau=5.0, min_budget=64, scale=0.25)
    assert torch.all(large.list_len >= small.list_len) and large.list_len.sum() > small.list_len.sum()


def test_minference_vertical_columns_include_planted_hot_keys():
    n, d, hot = 256, 32, [5, 70, 150]
    q, k = _vertical_slash_like(n, d, hot=hot, seed=1)
    columns, offsets = minference_selection(q, k, vertical=6, slash=8, last_q=16, scale=d ** -0.5)
    assert set(hot) <= set(columns[0, 0].nonzero().flatten().tolist())
    assert bool(offsets[0, 0, 0])                                         # the main diagonal is a top slash
    method = create("minference", {"vertical": "6", "slash": "8", "last_q": "16", "block": "32"})
    plan = method.plan(q, k, scale=d ** -0.5)
    for t in range(n // 32):
        keys = plan.key_index[0, 0, int(plan.list_start[0, 0, t]):][: int(plan.list_len[0, 0, t])].tolist()
        assert all(h in keys for h in hot if h < t * 32)
        assert keys == sorted(keys)


@pytest.mark.parametrize("name,args", [("flexprefill", {"gamma": "0"}), ("flexprefill", {"gamma": "1.5"}),
                                       ("flexprefill", {"block": "0"}), ("minference", {"vertical": "-1"}),
                                       ("minference", {"budget_scale": "-0.5"}), ("minference", {"last_q": "0"})])
def test_bad_parameters_are_user_errors(name, args):
    with pytest.raises(UserError):
        create(name, args)


def test_flexprefill_chooses_the_pattern_per_head():
    q, k, v = _mixed_heads(1, 4, 2, 256, 32, 32, seed=7)
    plan, query_aware = flexprefill_plan(q, k, block=32, gamma=0.8, tau=0.1, min_budget=0, scale=32 ** -0.5)
    assert query_aware.tolist() == [[False, False, True, True]]      # kv head 0 vertical-slash-like, 1 smooth
    err = (create("flexprefill", {"block": "32", "gamma": "0.8"}).execute(q, k, v, plan, scale=32 ** -0.5)
           - exact_reference(q, k, v)).norm() / exact_reference(q, k, v).norm()
    assert float(err) < 0.2


@pytest.mark.parametrize("name", ["flexprefill", "minference"])
@pytest.mark.parametrize("n", [1, 5, 17, 33])
def test_short_sequences_and_ragged_last_blocks(name, n):
    q, k, v = _random(1, 2, 1, n, 16, seed=n)
    args = {"min_budget": "16"} if name == "flexprefill" else {"vertical": "4", "slash": "4"}
    method = create(name, dict(args, block="16"))
    plan = method.plan(q, k, scale=0.25)
    plan.check(q, k, block_m=16, thorough=True)
    torch.testing.assert_close(method.execute(q, k, v, plan, scale=0.25),
                               _masked_softmax_from_plan(q, k, v, plan, 0.25), atol=2e-5, rtol=2e-5)
