"""The conversion and metric helpers of scripts/peer_faithfulness.py (no peer code needed).

Numbers worked out by hand on tiny selections: key masks (per q head and query block, the keys
listed before the block's diagonal), their density, Jaccard overlap, and the conversions from each
peer's own selection format (FlexPrefill's flattened block grid, PBS-Attn's permuted blocks,
MInference's vertical-slash indices as its index-conversion kernel expands them, FlashPrefill's
block lists with their counts), and the stand-ins the FlashPrefill check runs their code with.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from s2o_kernels.block_plan import blocks_to_plan, plan_density

from tiny_models import make_qkv

TOOL = Path(__file__).resolve().parents[1] / "scripts" / "peer_faithfulness.py"
_spec = importlib.util.spec_from_file_location("peer_faithfulness", TOOL)
pf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pf)


@triton.jit
def _store_first_n(OUT, n, BLOCK: tl.constexpr):
    # a scalar condition and a vector one in one mask, as FlashPrefill's probe kernel writes its scores
    offs = tl.arange(0, BLOCK)
    tl.store(OUT + offs, offs.to(tl.float32), mask=(tl.program_id(0) < tl.cdiv(n, BLOCK)) & (offs < n))


def key_sets(keys: torch.Tensor) -> list[set[int]]:
    """Listed keys per query block of a (1, 1, n_qblocks, n_ctx) mask."""
    return [set(row.nonzero()[:, 0].tolist()) for row in keys[0, 0]]


def test_block_selection_density_by_hand():
    # 8 tokens in blocks of 4: the diagonal blocks hold 1+2+3+4 pairs each (20 in all) of 36 causal pairs
    full = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)[None, None]
    keys = pf.blocks_to_keys(full, 4, 8)
    assert key_sets(keys) == [set(), {0, 1, 2, 3}]
    assert pf.keys_density(keys, 4, 8) == pytest.approx(1.0)            # (4 keys x 4 rows + 20) / 36
    diagonal_only = pf.blocks_to_keys(torch.eye(2, dtype=torch.bool)[None, None], 4, 8)
    assert pf.keys_density(diagonal_only, 4, 8) == pytest.approx(20 / 36)
    both = torch.cat([keys, diagonal_only], dim=1)                       # two heads: (36 + 20) / 72
    assert pf.keys_density(both, 4, 8) == pytest.approx(56 / 72)
    # a short last block: 6 tokens, rows (4, 2); diagonal pairs 1+2+3+4+1+2 = 13 of 21
    short = pf.blocks_to_keys(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)[None, None], 4, 6)
    assert pf.keys_density(short, 4, 6) == pytest.approx((4 * 2 + 13) / 21)


def test_density_matches_the_projects_plan_density():
    gen = torch.Generator().manual_seed(0)
    selected = torch.rand(2, 3, 5, 5, generator=gen) < 0.4
    for n_ctx in (80, 71):  # whole blocks of 16, and a short last block
        keys = pf.blocks_to_keys(selected, 16, n_ctx)
        assert pf.keys_density(keys, 16, n_ctx) == pytest.approx(plan_density(selected, 16, n_ctx))


def test_jaccard_by_hand():
    a = torch.zeros(1, 1, 2, 8, dtype=torch.bool)
    b = torch.zeros_like(a)
    assert pf.keys_jaccard(a, b) == 1.0                                  # both empty
    a[0, 0, 1, [0, 1]] = True
    b[0, 0, 1, [1, 2]] = True
    assert pf.keys_jaccard(a, b) == pytest.approx(1 / 3)                # {1} of {0, 1, 2}


def test_keys_and_plans_round_trip():
    gen = torch.Generator().manual_seed(1)
    selected = torch.rand(1, 4, 6, 6, generator=gen) < 0.5
    plan = blocks_to_plan(selected, 16, 90)
    keys = pf.plan_to_keys(plan, 90, 4)
    assert torch.equal(keys, pf.blocks_to_keys(selected, 16, 90))
    back = pf.keys_to_plan(keys, 16)
    q = torch.zeros(1, 4, 90, 8)
    back.check(q, q[:, :2], thorough=True)
    assert torch.equal(pf.plan_to_keys(back, 90, 4), keys)
    # lists shared by a GQA group expand to each of its q heads
    shared = blocks_to_plan(selected[:, :2], 16, 90)
    expanded = pf.blocks_to_keys(selected[:, :2], 16, 90).repeat_interleave(2, 1)
    assert torch.equal(pf.plan_to_keys(shared, 90, 4), expanded)


def test_flexprefill_flat_block_grid():
    # 3x3 grid, flattened t * 3 + j; 12 is FlexPrefill's padding (past the grid)
    block_idx = [[torch.tensor([0, 3, 4, 8, 12]), torch.tensor([0, 4, 1])]]
    selected = pf.flat_blocks_to_selection(block_idx, 3, "cpu")
    assert selected[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert pf.selection_checks(selected) == {"diagonal_blocks_missing": 1, "blocks_above_diagonal": 1}
    assert [t.tolist() for t in pf.selection_to_flat_blocks(selected)[0]] == [[0, 3, 4, 8], [0, 1, 4]]


def test_refine_blocks_keeps_the_causal_sub_blocks():
    selected = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)[None, None]
    fine = pf.refine_blocks(selected, 2, 8, 4)
    assert fine[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    sparse = pf.refine_blocks(torch.eye(2, dtype=torch.bool)[None, None], 2, 7, 4)   # 7 tokens: 4 sub-blocks
    assert sparse[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


def test_pbs_permuted_blocks_by_hand():
    # 8 tokens, blocks of 2, segments of 4; the permuted layout holds these positions slot by slot
    key_indices = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])[None, None]
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    own = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    mask[0, 0] = own                 # every block of the query's own segment (as PBS ors in)
    mask[0, 0, 1, 2] = True          # a later segment: their kernel never visits it
    mask[0, 0, 2, 1] = True          # permuted block 1 = slots 2, 3 = positions 3, 2
    mask[0, 0, 3, 0] = True          # permuted block 0 = positions 1, 0
    keys = pf.permuted_selection_to_keys(mask, key_indices, block=2, segment=4, n_ctx=8)
    assert key_sets(keys) == [set(), {0, 1}, {2, 3}, {0, 1, 4, 5}]


def test_minference_index_conversion_by_hand():
    # blocks of 4 rows, 16 tokens; offsets walked 9, 6, 0 per row block [start, end):
    #   end 4:  0 -> [0, 4)                                  listed (< 0): nothing
    #   end 8:  6 -> [0, 4); 0 reaches 8 <= 4 + 4: grow to 8  listed (< 4): 0..3
    #   end 12: 9 -> [0, 4); 6 -> 6 <= 8: grow to 8; 0 -> 12 <= 12: grow to 12   listed (< 8): 0..7
    #   end 16: 9 -> [3, 7); 6 -> 10 <= 11: grow to 11; 0 -> 16 > 15: new [12, 16)  listed: 3..10
    # (the exact diagonals reach 0..1, 0..5 and 3..9: merged ranges grow in whole blocks)
    offsets = torch.tensor([0, 9, 6])[None, None]
    columns = torch.tensor([0])[None, None]
    keys = pf.vertical_slash_kernel_keys(columns, offsets, 16, block=4)
    assert key_sets(keys) == [set(), set(range(4)), set(range(8)), {0} | set(range(3, 11))]


def test_minference_conversion_adds_columns_outside_the_ranges():
    offsets = torch.tensor([0])[None, None]                # the main diagonal only: nothing before a block
    columns = torch.tensor([5, 1, 12])[None, None]
    keys = pf.vertical_slash_kernel_keys(columns, offsets, 16, block=4)
    assert key_sets(keys) == [set(), {1}, {1, 5}, {1, 5}]  # 12 is never before a block's first row


def test_torch_block_mean_averages_real_positions():
    x = torch.arange(10, dtype=torch.float32).view(1, 5, 1, 2)     # (batch, seq_len, heads, dim)
    pooled = pf.torch_block_mean(x, 2)
    assert pooled[0, :, 0].tolist() == [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]


def test_compile_parts_runs_only_the_named_parts(tmp_path):
    source = tmp_path / "their.py"
    source.write_text("import not_installed_anywhere\nfactor = 3\ndef triple(x):\n    return factor * x\n")
    namespace = pf.compile_parts(source, {"factor", "triple"}, {})
    assert namespace["triple"](2) == 6
    with pytest.raises(pf.PeerUnavailable, match="no longer defines missing"):
        pf.compile_parts(source, {"triple", "missing"}, {})


def test_stub_module_imports_and_says_why_when_called():
    stub = pf.stub_module("_faithfulness_test_extension", "a compiled extension")
    from _faithfulness_test_extension import kernel  # noqa: F401 - importing must work

    with pytest.raises(pf.PeerUnavailable, match="a compiled extension"):
        stub.kernel()
    assert not hasattr(stub, "__file__")  # inspect walks sys.modules asking for it


def test_cuda_names_map_to_the_cpu_and_are_restored():
    zeros, to = torch.zeros, torch.Tensor.to
    with pf.cuda_names_on_cpu(True):
        assert torch.zeros(2, device="cuda").device.type == "cpu"
        assert torch.ones(2).to("cuda").device.type == "cpu"
        assert "100" not in torch.cuda.get_device_properties(torch.cuda.current_device()).name
    assert torch.zeros is zeros and torch.Tensor.to is to


def test_random_inputs_are_seeded_and_gemma_shaped():
    q, k, v = pf.random_qkv(96, seed=3, hot=4.0)
    assert (q.shape, k.shape, v.shape) == ((1, 12, 96, 256), (1, 3, 96, 256), (1, 3, 96, 256))
    assert torch.equal(q, pf.random_qkv(96, seed=3, hot=4.0)[0])


def test_compare_our_selection_with_itself():
    q, k, v = make_qkv(2, 64)
    gen = torch.Generator().manual_seed(2)
    problem = pf.Problem(q, k, v, 0.25, {"kind": "test"})
    selected = torch.rand(1, 4, 4, 4, generator=gen) < 0.5
    plan = blocks_to_plan(selected, 16, 64)
    row = pf.compare(problem, pf.blocks_to_keys(selected, 16, 64), plan, 16)
    assert row["jaccard"] == 1.0
    assert row["theirs"]["density"] == pytest.approx(row["ours"]["density"])
    assert row["theirs"]["rel_l2"] == pytest.approx(row["ours"]["rel_l2"], abs=1e-6)
    dense = pf.compare(problem, pf.blocks_to_keys(torch.ones_like(selected), 16, 64), plan, 16)
    assert dense["theirs"]["density"] == 1.0 and dense["theirs"]["rel_l2"] < 1e-5
    assert not math.isnan(dense["ours"]["rel_l2"])


def test_flashprefill_block_lists_by_hand():
    # 3 query blocks x 3 key blocks, 2 heads; their lists: chosen blocks ascending, padded with 3
    head0 = [[0, 3, 3], [0, 1, 3], [0, 2, 3]]
    head1 = [[0, 3, 3], [1, 3, 3], [0, 1, 2]]
    block_index = torch.stack([torch.tensor(head0), torch.tensor(head1)], dim=-1)[None]  # (1, 3, 3, 2)
    counts = torch.tensor([[1, 1], [2, 1], [2, 2]], dtype=torch.int32)[None]               # (1, 3, 2)
    selected = pf.compact_blocks_to_selection(block_index, counts)
    assert selected[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    # head 1, query block 2 lists 0, 1, 2 but its count is 2: their kernel never reads block 2
    assert selected[0, 1].int().tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert pf.selection_checks(selected) == {"diagonal_blocks_missing": 1, "blocks_above_diagonal": 0}


def test_grid_recorder_keeps_each_launchs_arguments():
    recorder = pf.GridRecorder()
    recorder[(4, 2, 1)]("q", "k", 3)
    recorder[lambda meta: (1,)]("q2")
    assert recorder.calls == [("q", "k", 3), ("q2",)]


def test_fla_stand_in_makes_tensor_arguments_contiguous():
    had = {name: sys.modules.get(name) for name in ("fla", "fla.utils")}
    try:
        pf.fla_stand_ins()
        from fla.utils import contiguous

        seen = []
        contiguous(lambda ctx, x, scale: seen.append((x.is_contiguous(), scale)))(None, torch.zeros(3, 4).T, 0.5)
        assert seen == [(True, 0.5)]
    finally:
        for name, module in had.items():
            if module is None:
                sys.modules.pop(name, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's masks only")
def test_interpreter_bool_masks_let_mixed_masks_store():
    from triton.runtime import interpreter

    out = torch.zeros(16)
    store = interpreter.InterpreterBuilder.create_masked_store
    with pf.interpreter_bool_masks(True):
        _store_first_n[(1,)](out, 10, 16)
    assert out.tolist() == [float(i) for i in range(10)] + [0.0] * 6
    assert interpreter.InterpreterBuilder.create_masked_store is store
