"""``s2o-eval bench --prefill-chunk``: each method times the last chunk of a chunked prefill, its queries
at offset N - C against all N keys, scored against the exact (bottom-right) rows of those queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from s2o_eval.bench.runner import BenchRequest, run_bench
from s2o_eval.cli import app
from s2o_eval.methods import METHODS, create
from s2o_eval.methods.base import SparseMethod

from test_bench import make_capture
from tiny_runs import error_lines


@dataclass
class HalfChunk(SparseMethod):
    """Exact attention of a chunk that reports half its causal pairs as computed (density 0.5)."""

    name: ClassVar[str] = "test_half_chunk"
    takes_offset: ClassVar[bool] = True

    def plan(self, q, k, *, scale):
        return None

    def execute(self, q, k, v, plan, *, scale, stats=None):
        n, m = q.shape[2], k.shape[2]
        if stats is not None:
            causal = q.shape[0] * q.shape[1] * (n * (m - n) + n * (n + 1) // 2)
            stats.add(causal / 2, causal)
        return create("eager").prefill(q, k, v, scale=scale)


@dataclass
class TopLeft(HalfChunk):
    """Takes the chunk but aligns causal top-left (SDPA's is_causal with q_len < kv_len): wrong rows."""

    name: ClassVar[str] = "test_top_left"

    def execute(self, q, k, v, plan, *, scale, stats=None):
        group = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                              is_causal=True, scale=scale)


@dataclass
class WholeOnlySparse(HalfChunk):
    name: ClassVar[str] = "test_whole_only"
    takes_offset: ClassVar[bool] = False


@pytest.fixture
def chunk_methods(monkeypatch):
    for method in (HalfChunk, TopLeft, WholeOnlySparse):
        monkeypatch.setitem(METHODS, method.name, method)


def _bench(tmp_path, ctx, chunk, methods=("eager", "sdpa", "test_half_chunk", "test_top_left", "test_whole_only")):
    capture = tmp_path / "cap.pt"
    make_capture(capture, tokens=64)
    request = BenchRequest(workloads=[str(capture)], methods=list(methods), ctx=ctx, reps=1, warmup=0,
                           out_dir=tmp_path / "out", prefill_chunk=chunk)
    return run_bench(request, progress=False)


def test_the_last_chunk_is_timed_and_scored_against_its_own_rows(tmp_path, chunk_methods):
    outcome = _bench(tmp_path, [64], 16)
    assert outcome.json_path.name == "cap-64-chunk16.json"
    records = {r["method"]: r for r in json.loads(outcome.json_path.read_text())}
    for record in records.values():
        assert record["ctx"] == 64 and record["shape"]["N"] == 64
        assert record["prefill_chunk"] == 16 and record["q_offset"] == 48
    for name in ("eager", "sdpa", "test_half_chunk"):  # bottom-right: the reference's last 16 rows
        assert records[name]["rel_l2"] < 1e-5 and records[name]["ms_total"] > 0
    assert records["test_top_left"]["rel_l2"] > 0.1  # the same chunk aligned top-left is another attention
    assert records["eager"]["density"] == 1.0 and records["test_half_chunk"]["density"] == 0.5
    assert "offset" in records["test_whole_only"]["skipped"] and records["test_whole_only"]["ms_total"] is None
    text = outcome.markdown_path.read_text()
    assert "## cap · 64 tokens · last 16 chunk" in text
    assert "queries 48 to 63 (Nq = 16 < N) against all 64 keys" in text


def test_a_prompt_no_longer_than_the_chunk_is_one_whole_chunk(tmp_path, chunk_methods):
    outcome = _bench(tmp_path, [32], 32, methods=("eager", "test_whole_only"))
    records = {r["method"]: r for r in outcome.records}
    assert records["eager"]["q_offset"] == 0 and records["eager"]["rel_l2"] < 1e-5
    assert records["test_whole_only"]["skipped"] is None  # a whole prompt needs no offset
    assert "last" not in outcome.markdown_path.read_text()


def test_bench_refuses_a_bad_prefill_chunk_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--ctx", "1k", "--prefill-chunk", "4", "--out", str(tmp_path)])
    assert result.exit_code == 4
    (line,) = error_lines(result.output)
    assert "--prefill-chunk 4 is too short" in line
