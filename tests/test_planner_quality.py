"""scripts/planner_quality.py's replay is the executor's function: same outputs and pair counts as the
PyTorch twin of the executor, for every tau and patience (so its density/error tables mean what the
kernel would do)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from s2o_kernels.launch import stats_from_chunks
from s2o_kernels.twins import torch_decide_chunks, torch_s2o_plan, torch_sparse_attention

TOOL = Path(__file__).resolve().parents[1] / "scripts" / "planner_quality.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("planner_quality", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("patience", [1, 3])
@pytest.mark.parametrize("score", ["gauss", "mean"])
def test_replay_matches_the_executor_twin(patience, score):
    tool = load_tool()
    gen = torch.Generator().manual_seed(patience)
    q, k, v = (torch.randn(1, h, 200, 32, generator=gen) for h in (4, 2, 2))
    direction = torch.randn(32, generator=gen)
    q, k = q + direction, k + 2.0 * (torch.rand(1, 2, 200, 1, generator=gen) < 0.1) * direction
    scale = 32 ** -0.5
    rows = 16 if score != "mean" else 32  # per-head tiles of 16 positions; shared: 16 positions x 2 heads
    block_m = 16
    plan = torch_s2o_plan(q, k, segment=64, sinks=4, block_m=block_m, score=score, rank=2, scale=scale)
    taus = [0.2, 0.02]
    replay = tool.simulate(q, k, v, plan, rows=rows, block_n=8, scale=scale, taus=taus, patience=patience)
    for tau in taus:
        chunks = torch_decide_chunks(q, k, plan, tau, scale=scale, block_m=block_m, block_n=8, patience=patience)
        expected = torch_sparse_attention(q, k, v, plan, chunks=chunks, scale=scale, block_m=block_m, block_n=8)
        stats = stats_from_chunks(chunks, plan, 200, 2, block_m=block_m, block_n=8)
        out, pairs = replay[tau]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert pairs == int(stats.computed_pairs.sum())
    assert replay[0.2][1] < replay[0.02][1]  # the larger tau stops earlier: the test exercises the stop
