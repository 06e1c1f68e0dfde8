"""The sparse methods as the harness sees them (``s2o``, ``token_oracle``): registry, parameters,
the tau = 0 identity, and early stopping that saves work on attention that is concentrated."""

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.methods import AttentionStats, SparseMethod, create
from s2o_kernels.reference import exact_reference


def _inputs(n, hq, hkv, d, seed, peaky=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, hq, n, d, generator=gen)
    k = torch.randn(1, hkv, n, d, generator=gen)
    v = torch.randn(1, hkv, n, d, generator=gen)
    if peaky:  # a few keys every query likes: the concentrated attention of real models
        hot = torch.randperm(n, generator=gen)[: max(n // 50, 2)]
        direction = torch.randn(d, generator=gen)
        k[:, :, hot] += 3.0 * direction
        q += 1.5 * direction
    return q, k, v


@pytest.mark.parametrize("name,args", [("s2o", {"segment": "64", "sinks": "4"}),
                                       ("s2o", {"segment": "32", "sinks": "0", "block_n": "16",
                                                "query_permute": "true", "score": "mean"}),
                                       ("s2o", {"segment": "32", "score": "head_mean", "patience": "1"}),
                                       ("s2o", {"segment": "32", "score": "diag", "query_permute": "true"}),
                                       ("token_oracle", {"block_m": "32", "sinks": "4"}),
                                       ("segment_oracle", {"segment": "64", "block_m": "32", "sinks": "4"})])
@pytest.mark.parametrize("n,hq,hkv,d", [(150, 4, 1, 64), (97, 4, 4, 128), (130, 8, 1, 256)])
def test_tau_zero_is_dense_attention(name, args, n, hq, hkv, d):
    q, k, v = _inputs(n, hq, hkv, d, seed=n + hq)
    stats = AttentionStats()
    out = create(name, dict(args, tau="0")).prefill(q, k, v, scale=d ** -0.5, stats=stats)
    torch.testing.assert_close(out, exact_reference(q, k, v), atol=2e-5, rtol=2e-5)
    assert stats.density == pytest.approx(1.0)


# (dense_above=0 in the stop-rule tests: they test the walk, so no head is routed to the dense kernel)
@pytest.mark.parametrize("name,args", [("s2o", {"segment": "64", "sinks": "4", "block_n": "16", "dense_above": "0"}),
                                       ("token_oracle", {"block_m": "32", "sinks": "4", "block_n": "16"})])
def test_stopping_trades_density_for_bounded_error(name, args):
    q, k, v = _inputs(256, 4, 1, 64, seed=3, peaky=True)
    ref = exact_reference(q, k, v)
    previous_density = 1.0 + 1e-9
    for tau in ("0.001", "0.01", "0.05"):
        stats = AttentionStats()
        out = create(name, dict(args, tau=tau)).prefill(q, k, v, scale=64 ** -0.5, stats=stats)
        error = float((out - ref).norm() / ref.norm())
        assert stats.density <= previous_density  # a larger tau never walks more
        assert error < 0.1
        previous_density = stats.density
    assert previous_density < 0.9  # concentrated attention lets tiles stop early


def test_tail_rule_keeps_diffuse_attention_accurate_where_chunk_rule_fails():
    # Near-uniform rows (Gaussian q at half scale): each 16-key chunk holds ~16/seen of a row's mass, so
    # at tau 0.01 the "chunk" rule stops after ~1600 keys of 4096 and drops the rest; the "tail" rule
    # bounds the unseen rest by keys left x the chunk's largest mass and keeps walking.
    q, k, v = _inputs(4096, 2, 1, 64, seed=5)
    q = q * 0.5
    ref = exact_reference(q, k, v)
    error, density = {}, {}
    for rule in ("chunk", "tail"):
        stats = AttentionStats()
        method = create("s2o", {"segment": "256", "sinks": "4", "block_n": "16", "tau": "0.01", "stop_rule": rule,
                                "dense_above": "0"})
        out = method.prefill(q, k, v, scale=64 ** -0.5, stats=stats)
        error[rule], density[rule] = float((out - ref).norm() / ref.norm()), stats.density
    assert error["chunk"] > 0.05 and density["chunk"] < 0.95, (error, density)
    assert error["tail"] < 0.05 and density["tail"] > density["chunk"], (error, density)


@pytest.mark.parametrize("name,args", [("s2o", {"segment": "64", "sinks": "4", "block_n": "16", "dense_above": "0"}),
                                       ("token_oracle", {"block_m": "32", "sinks": "4", "block_n": "16"})])
def test_tail_rule_still_stops_early_on_concentrated_attention(name, args):
    q, k, v = _inputs(256, 4, 1, 64, seed=3, peaky=True)
    ref = exact_reference(q, k, v)
    stats = AttentionStats()
    out = create(name, dict(args, tau="0.01", stop_rule="tail")).prefill(q, k, v, scale=64 ** -0.5, stats=stats)
    assert stats.density < 0.9
    assert float((out - ref).norm() / ref.norm()) < 0.05


def test_sparse_methods_are_registered_with_typed_parameters():
    method = create("s2o", {"tau": "0.01", "segment": "512", "query_permute": "yes"})
    assert isinstance(method, SparseMethod) and method.sparse
    assert method.tau == 0.01 and method.segment == 512 and method.query_permute is True
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(UserError, match="tau must be a finite number >= 0"):
            create("s2o", {"tau": bad})
    with pytest.raises(UserError, match="patience must be an int >= 1"):
        create("s2o", {"patience": "0"})
    with pytest.raises(UserError, match="score must be one of"):
        create("s2o", {"score": "median"})
    with pytest.raises(UserError, match="must divide segment"):
        create("s2o", {"segment": "100", "block_m": "64"})
    with pytest.raises(UserError, match="not a valid float"):
        create("s2o", {"tau": "high"})
    assert create("token_oracle").params()["block_m"] == 128
    assert create("s2o").stop_rule == "chunk" and create("token_oracle", {"stop_rule": "tail"}).stop_rule == "tail"
    for name in ("s2o", "token_oracle"):
        with pytest.raises(UserError, match="stop_rule must be one of chunk, tail"):
            create(name, {"stop_rule": "unseen"})
