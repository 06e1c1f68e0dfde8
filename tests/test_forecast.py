"""The walk forecast (s2o_kernels/s2o/forecast.py) and S2O's routing of diffuse heads to the dense kernel."""

import importlib.util
import math
import types
from pathlib import Path

import pytest
import torch

from s2o_eval.methods import AttentionStats, create
from s2o_kernels import execute_plan, knobs, s2o_attention
from s2o_kernels.launch import pass1_pairs
from s2o_kernels.reference import exact_reference
from s2o_kernels.s2o.forecast import dense_heads, forecast_density, forecast_walk
from s2o_kernels.s2o.planner import s2o_plan
from s2o_kernels.twins import torch_s2o_plan

WIDTH = 1 / 16  # nats per bucket (span 16 over 256 buckets, the planner's defaults)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the Triton planner: a GPU, else the interpreter


def _histogram(*lists: dict[int, int], n_buckets: int = 256) -> torch.Tensor:
    """(1, 1, n_seg, n_buckets) from {bucket: keys} per segment."""
    hist = torch.zeros(1, 1, len(lists), n_buckets, dtype=torch.int32)
    for s, counts in enumerate(lists):
        for bucket, n in counts.items():
            hist[0, 0, s, bucket] = n
    return hist


def test_equal_scores_are_never_dull_so_the_whole_list_is_walked():
    hist = _histogram({}, {0: 960}, {0: 1984})
    walk = forecast_walk(hist, WIDTH, tau=3e-4, block_n=64, patience=4)
    assert walk.tolist() == [[[0.0, 960.0, 1984.0]]]
    assert forecast_density(hist, WIDTH, 3072, 1024, tau=3e-4, block_n=64, patience=4).item() == pytest.approx(1.0)


def test_one_key_above_the_rest_stops_after_its_patience():
    # one key at the top, 959 in the last bucket (16+ nats below: no mass): the first chunk past the top
    # key is dull, and the walk ends patience chunks later.
    hist = _histogram({}, {0: 1, 255: 959})
    assert forecast_walk(hist, WIDTH, tau=3e-4, block_n=64, patience=4)[0, 0, 1].item() == 1 + 4 * 64


def test_a_hand_worked_two_bucket_list():
    # 100 keys in bucket 0 (mass e^(-w/2) each), 5000 in bucket 3 (e^(-3.5w)); tau 0.01, 16-key chunks.
    # Bucket 0: dull from 16/0.01 - 16 = 1584 keys in, past its 100 keys. Bucket 3: C = 100 e^(-w/2),
    # dull from 1584 - C / e^(-3.5w) = 1584 - 100 e^(3w) keys in; the walk ends 2 chunks (patience) later.
    hist = _histogram({}, {0: 100, 3: 5000})
    expected = 100 + (1584 - 100 * math.exp(3 * WIDTH)) + 2 * 16
    walk = forecast_walk(hist, WIDTH, tau=0.01, block_n=16, patience=2)[0, 0, 1].item()
    assert walk == pytest.approx(expected)
    assert forecast_walk(hist, WIDTH, tau=0.0, block_n=16, patience=2)[0, 0, 1].item() == 5100  # tau 0: all


def test_density_counts_pass_one_and_every_row_of_a_segment():
    # segment 1 (rows 1024..2047) lists keys [64, 1024), segment 2 (rows 2048..2499) keys [64, 2048); each
    # has one key at the top and the rest without mass, so each walks its top key and one more chunk of
    # one key (patience 1): 2 keys for every row, on top of pass 1.
    hist = _histogram({}, {0: 1, 255: 959}, {0: 1, 255: 1983})
    density = forecast_density(hist, WIDTH, 2500, 1024, tau=0.5, block_n=1, patience=1).item()
    assert density * 2500 * 2501 / 2 == pytest.approx(float(pass1_pairs(2500, 1024, 64)) + 1024 * 2 + 452 * 2)


@pytest.mark.parametrize("score,rank", [("head_mean", 1), ("mean", 1), ("gauss", 4)])
def test_the_triton_and_twin_planners_count_the_same_histogram(score, rank):
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 4, 300, 64, generator=gen).to(DEVICE)
    k = torch.randn(1, 2, 300, 64, generator=gen).to(DEVICE)
    options = dict(segment=64, sinks=8, block_m=32, score=score, rank=rank, n_buckets=32, span=3.0)
    plan, twin = s2o_plan(q, k, **options), torch_s2o_plan(q, k, **options)
    assert plan.bucket_width == twin.bucket_width == pytest.approx(3.0 / 32)
    assert torch.equal(plan.score_histogram.sum(-1), plan.list_len.expand_as(plan.score_histogram[..., 0]))
    assert torch.equal(twin.score_histogram.sum(-1), plan.score_histogram.sum(-1))
    moved = (plan.score_histogram - twin.score_histogram).abs().sum() / 2  # keys on the other side of an edge
    assert moved <= 0.03 * plan.list_len.sum()


def _one_sharp_one_diffuse(n: int = 1024, d: int = 64):
    """Head 0: queries that all like a few hot keys; head 1: queries of almost no norm (flat rows)."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, n, d, generator=gen)
    k = torch.randn(1, 1, n, d, generator=gen)
    v = torch.randn(1, 1, n, d, generator=gen)
    direction = torch.randn(d, generator=gen)
    hot = torch.randperm(n, generator=gen)[:8]
    k[:, :, hot] += 4.0 * direction
    q[:, 0] += 2.0 * direction
    q[:, 1] *= 0.01
    return q, k, v


def _routed(method, q, k, scale):
    """The heads S2O's executor front door would route to the dense kernel for ``method``'s settings."""
    plan = method.plan(q, k, scale=scale)
    return dense_heads(plan.score_histogram, plan.bucket_width, q.shape[2], plan.segment, q.shape[1],
                       tau=method.tau, block_n=method.block_n or knobs.default_block_n(q.shape[-1]),
                       patience=method.patience, dense_above=method.dense_above)


def test_s2o_runs_diffuse_heads_on_the_dense_kernel_and_counts_them_dense():
    q, k, v = _one_sharp_one_diffuse()
    ref = exact_reference(q, k, v)
    args = {"segment": "128", "sinks": "4", "block_n": "16", "tau": "0.01", "dense_above": "0.3"}
    routed = create("s2o", args)
    assert _routed(routed, q, k, 64 ** -0.5).tolist() == [False, True]
    stats = AttentionStats()
    out = routed.prefill(q, k, v, scale=64 ** -0.5, stats=stats)
    torch.testing.assert_close(out[:, 1], ref[:, 1], atol=1e-5, rtol=1e-5)  # the dense head is exact
    assert stats.per_head[1] == 1.0 and stats.per_head[0] < 0.9

    walked_stats = AttentionStats()
    walked = create("s2o", dict(args, dense_above="0")).prefill(q, k, v, scale=64 ** -0.5, stats=walked_stats)
    torch.testing.assert_close(out[:, 0], walked[:, 0])  # the sparse head is the same walk either way
    assert walked_stats.per_head[0] == stats.per_head[0]
    assert walked_stats.per_head[1] > 0.9  # the forecast was right: walked, the diffuse head visits nearly all


def test_nothing_is_routed_at_tau_zero_or_when_turned_off():
    q, k, v = _one_sharp_one_diffuse(256)
    q[:, 0] *= 0.01  # both heads flat: at tau > 0 both would be routed
    routed_stats = AttentionStats()
    create("s2o", {"tau": "0.01", "segment": "64", "sinks": "4"}).prefill(q, k, v, scale=0.125, stats=routed_stats)
    assert routed_stats.per_head == [1.0, 1.0]
    for args in ({"tau": "0"}, {"tau": "0.01", "dense_above": "0"}):
        method = create("s2o", dict(args, segment="64", sinks="4"))
        stats = AttentionStats()
        method.prefill(q, k, v, scale=0.125, stats=stats)
        # walked, not routed: the stats are the executor's own counts (pass 1 at least, and for tau
        # 0 every key, which the twin reports pair by pair as the walk's, not as a dense head)
        plan = method.plan(q, k, scale=0.125)
        _, walked = execute_plan(q, k, v, plan, tau=method.tau, scale=0.125, patience=method.patience)
        assert stats.per_head == walked.density_per_head.tolist()
    with pytest.raises(Exception, match="dense_above must be within"):
        create("s2o", {"dense_above": "1.5"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_routing_on_the_gpu_in_bf16():
    # In bf16 the sharp head's forecast sits near the line, so the test follows the forecast's own
    # decision for it; the flat head is diffuse at any precision.
    q, k, v = (t.to("cuda", torch.bfloat16) for t in _one_sharp_one_diffuse(2048))
    ref = exact_reference(q, k, v)
    method = create("s2o", {"segment": "256", "sinks": "4", "tau": "0.01", "dense_above": "0.3"})
    routed = _routed(method, q, k, 64 ** -0.5).tolist()
    assert routed[1]
    stats = AttentionStats()
    out = method.prefill(q, k, v, scale=64 ** -0.5, stats=stats)
    for head in (h for h in range(2) if routed[h]):
        assert stats.per_head[head] == 1.0
        torch.testing.assert_close(out[:, head].float(), ref[:, head].float(), atol=2e-2, rtol=2e-2)
    assert float((out.float() - ref.float()).norm() / ref.float().norm()) < 0.05


def test_all_heads_diffuse_runs_the_dense_kernel_alone():
    gen = torch.Generator().manual_seed(5)
    q = 0.01 * torch.randn(1, 4, 512, 64, generator=gen)
    k, v = torch.randn(2, 1, 2, 512, 64, generator=gen)
    stats = AttentionStats()
    method = create("s2o", {"segment": "128", "sinks": "4", "tau": "0.003"})
    assert _routed(method, q, k, 0.125).all()
    out = method.prefill(q, k, v, scale=0.125, stats=stats)
    torch.testing.assert_close(out, exact_reference(q, k, v, scale=0.125), atol=1e-5, rtol=1e-5)
    assert stats.density == 1.0 and stats.per_head == [1.0] * 4


def _forecast_check_tool():
    path = Path(__file__).resolve().parents[1] / "scripts" / "forecast_check.py"
    spec = importlib.util.spec_from_file_location("forecast_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_forecast_check_sets_each_heads_forecast_beside_its_walk():
    tool = _forecast_check_tool()
    assert tool.spearman([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert tool.spearman([0.1, 0.2, 0.3], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    q, k, v = _one_sharp_one_diffuse(512)
    workload = types.SimpleNamespace(q=q, k=k, v=v, scale=64 ** -0.5)
    row = tool.check(workload, 0.01, {"segment": "128", "sinks": "4", "block_n": "16"})
    assert len(row["forecast"]) == len(row["actual"]) == 2
    assert row["actual"][1] > 0.9 and row["forecast"][1] > 0.9  # the flat head: forecast and walked whole
    assert row["actual"][0] < row["actual"][1]
    text = tool.markdown({"workload": "two heads", "ctx": 512, "device": "cpu", "torch": "x", "date": "d",
                          "rows": [row]})
    assert "| 0.01 |" in text and text.count("/") >= 2


@pytest.mark.parametrize("tau", [0.0, 0.003, 0.03])
def test_the_op_computes_what_the_method_computes_at_the_defaults(tau):
    # s2o_attention (the op users call) and --method s2o run one function: the same plan, the same
    # routing of flat heads to the dense kernel, the same output and pair counts
    q, k, v = _one_sharp_one_diffuse(2048)
    stats = AttentionStats()
    by_method = create("s2o", {"tau": str(tau)}).prefill(q, k, v, scale=0.125, stats=stats)
    by_op, op_stats = s2o_attention(q, k, v, tau=tau, return_stats=True)
    assert torch.equal(by_method, by_op)
    assert stats.per_head == op_stats.density_per_head.tolist()
    assert stats.density == pytest.approx(op_stats.density, rel=1e-12)
