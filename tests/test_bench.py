"""``s2o-eval bench``: workloads from capture files, the fp32 reference, records, markdown, the CLI.

Everything runs on tiny shapes on the CPU (timings are never asserted). Sparse methods are stood in
for by two SparseMethods defined here: a torch-only local window (density and error known in closed
form) and the index-guided executor on an all-prefix plan (under TRITON_INTERPRET=1 on a CPU).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from s2o_eval.bench.capture import CapturedLayer, write_capture
from s2o_eval.bench.markdown import render_markdown
from s2o_eval.bench.records import add_ratios, interpolate_at_error, matched_error_rows
from s2o_kernels.reference import exact_reference, output_error
from s2o_eval.bench.runner import BenchRequest, parse_sweeps, run_bench
from s2o_eval.bench.workloads import load_workload, random_workload
from s2o_eval.cli import app
from s2o_eval.errors import UserError
from s2o_eval.methods import METHODS, AttentionStats
from s2o_eval.methods.base import SparseMethod
from s2o_eval.integration.sliding import sliding_window_attention
from s2o_kernels import dense_plan, sparse_attention

RECORD_FIELDS = {"workload", "method", "params", "ctx", "shape", "device", "versions", "ms_plan", "ms_execute",
                 "ms_total", "density", "rel_l2", "mse", "efficiency", "skipped", "speedup", "plan_share"}


# ------------------------------------------------------------------------------ test methods

@dataclass
class LocalWindow(SparseMethod):
    """Each query sees only its last ``window`` keys: plan = the window, execute = sliding attention."""

    name = "test_window"
    window: int = 16

    def plan(self, q, k, *, scale):
        return self.window

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        if stats is not None:
            n = q.shape[2]
            per_query = torch.arange(1, n + 1).clamp(max=plan)
            causal = n * (n + 1) // 2
            stats.add(float(per_query.sum()) * q.shape[0] * q.shape[1], causal * q.shape[0] * q.shape[1],
                      [float(per_query.sum()) / causal] * q.shape[1])
        return sliding_window_attention(q, k, v, plan, scale)


@dataclass
class KernelAllPrefix(SparseMethod):
    """The index-guided executor on lists holding every prefix key in position order."""

    name = "test_kernel"
    tau: float = 0.0
    segment: int = 32

    def plan(self, q, k, *, scale):
        return dense_plan(q, k, self.segment)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        out, exec_stats = sparse_attention(q, k, v, plan, tau=self.tau, scale=scale, block_m=16, block_n=16,
                                           return_stats=True)
        if stats is not None:
            heads = q.shape[0] * q.shape[1]
            stats.add(float(exec_stats.computed_pairs.sum()), exec_stats.causal_pairs * heads,
                      exec_stats.density_per_head.tolist())
        return out


@pytest.fixture
def test_methods(monkeypatch):
    monkeypatch.setitem(METHODS, LocalWindow.name, LocalWindow)
    monkeypatch.setitem(METHODS, KernelAllPrefix.name, KernelAllPrefix)


# ------------------------------------------------------------------------------ capture files

def make_capture(path, *, layers=(2, 5), q_heads=4, kv_heads=2, tokens=64, head_dim=16, dtype=torch.float32,
                 seed=0, scaling=0.25, max_window=4096):
    """A capture file in the real format with random q, k, v per layer; returns the layers written."""
    gen = torch.Generator().manual_seed(seed)
    captured = [CapturedLayer(layer=layer, scaling=scaling,
                              q=torch.randn(1, q_heads, tokens, head_dim, generator=gen).to(dtype),
                              k=torch.randn(1, kv_heads, tokens, head_dim, generator=gen).to(dtype),
                              v=torch.randn(1, kv_heads, tokens, head_dim, generator=gen).to(dtype))
                for layer in layers]
    meta = {"model": {"name": "tiny", "source": "tiny", "revision": None, "max_window": max_window},
            "texts": [], "text_source": "test", "bos": True, "beyond_window": False, "device": "CPU"}
    write_capture(path, captured, meta)
    return captured


def test_capture_workload_stacks_layers_layer_major(tmp_path):
    path = tmp_path / "cap.pt"
    layers = make_capture(path, layers=(3, 7, 9), q_heads=4, kv_heads=2, tokens=40)
    workload = load_workload(str(path), 32, "cpu")
    assert workload.shape == {"B": 1, "Hq": 12, "Hkv": 6, "N": 32, "D": 16, "dtype": "float32"}
    assert workload.scale == 0.25 and workload.kind == "capture" and workload.name == "cap"
    for index, layer in enumerate(layers):
        assert torch.equal(workload.q[:, 4 * index:4 * index + 4], layer.q[:, :, :32])
        assert torch.equal(workload.k[:, 2 * index:2 * index + 2], layer.k[:, :, :32])
        assert torch.equal(workload.v[:, 2 * index:2 * index + 2], layer.v[:, :, :32])
    # GQA on the stacked problem pairs every q head with its own layer's kv heads
    stacked = exact_reference(workload.q, workload.k, workload.v, workload.scale)
    per_layer = torch.cat([exact_reference(l.q[:, :, :32], l.k[:, :, :32], l.v[:, :, :32], 0.25) for l in layers], 1)
    torch.testing.assert_close(stacked, per_layer)


def test_capture_workload_refuses_more_tokens_than_captured_and_beyond_window(tmp_path):
    path = tmp_path / "cap.pt"
    make_capture(path, tokens=64, max_window=48)
    with pytest.raises(UserError, match="longer than the 64 tokens"):
        load_workload(str(path), 65, "cpu", allow_beyond_window=True)
    with pytest.raises(UserError, match="beyond the captured model's window"):
        load_workload(str(path), 64, "cpu")
    assert load_workload(str(path), 64, "cpu", allow_beyond_window=True).beyond_window
    assert not load_workload(str(path), 48, "cpu").beyond_window
    with pytest.raises(UserError, match="not an s2o-eval capture"):
        torch.save({"q": torch.zeros(1)}, tmp_path / "other.pt")
        load_workload(str(tmp_path / "other.pt"), None, "cpu")


def test_random_workload_is_llama_shaped_and_seeded():
    a = random_workload("llama8b-random", 24, "cpu", dtype=torch.float16, seed=3)
    b = random_workload("llama8b-random", 24, "cpu", dtype=torch.float16, seed=3)
    assert a.shape == {"B": 1, "Hq": 32, "Hkv": 8, "N": 24, "D": 128, "dtype": "float16"}
    assert torch.equal(a.q, b.q) and torch.equal(a.v, b.v) and not torch.equal(a.q[:, :8], a.k)
    assert a.scale == 128 ** -0.5 and "worst case" in a.note


# ------------------------------------------------------------------------------ reference

def test_exact_reference_chunked_equals_dense_and_errors():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, h, 50, 16, generator=gen) for h in (6, 2, 2))
    ref = exact_reference(q.half(), k.half(), v.half(), 0.3, chunk_bytes=3 * 2 * 4 * 50 * 7)  # 7-query chunks
    # against an unchunked softmax written out here, GQA by repeated kv heads
    qf, kf, vf = (t.half().double() for t in (q, k, v))
    scores = (qf @ kf.repeat_interleave(3, 1).transpose(-1, -2) * 0.3).masked_fill(
        torch.ones(50, 50, dtype=torch.bool).triu(1), float("-inf"))
    naive = torch.softmax(scores, -1) @ vf.repeat_interleave(3, 1)
    torch.testing.assert_close(ref, naive.float(), atol=1e-6, rtol=1e-5)
    assert ref.dtype == torch.float32
    assert output_error(ref, ref) == (0.0, 0.0)
    rel_l2, mse = output_error(ref * 1.01, ref)
    assert rel_l2 == pytest.approx(0.01, rel=1e-5)  # 1.01 x ref is rounded to fp32
    assert mse == pytest.approx(float((ref.double() * 0.01).pow(2).mean()), rel=1e-5)
    noise = torch.randn(ref.shape, generator=gen)
    rel_l2, _ = output_error(ref + noise, ref)
    assert rel_l2 == pytest.approx(float(noise.double().norm() / ref.double().norm()), rel=1e-6)


# ------------------------------------------------------------------------------ ratios

def _record(method, ms_total, *, dense, density=1.0, ms_execute=None, rel_l2=None, sweep=None):
    return {"workload": "w", "ctx": 1024, "method": method, "dense": dense, "skipped": None, "ms_total": ms_total,
            "ms_execute": ms_execute or ms_total, "ms_plan": None if dense else ms_total - (ms_execute or 0),
            "density": density, "rel_l2": rel_l2, "sweep": sweep, "speedup": {}}


def test_ratios_use_fa3_then_the_fastest_dense():
    group = [_record("fa2", 100.0, dense=True), _record("cudnn", 60.0, dense=True), _record("fa3", 50.0, dense=True),
             _record("s2o", 25.0, dense=False, density=0.2, ms_execute=20.0)]
    add_ratios(group)
    sparse = group[-1]
    assert sparse["speedup"] == {"fa2": 4.0, "cudnn": 2.4, "fa3": 2.0}
    assert sparse["efficiency"] == pytest.approx(0.5) and sparse["efficiency_vs"] == "fa3"
    assert group[0]["efficiency"] == pytest.approx(0.5)  # FA2 runs at half FA3's per-pair speed
    without_fa3 = [r for r in group if r["method"] != "fa3"]
    add_ratios(without_fa3)
    assert without_fa3[-1]["efficiency"] == pytest.approx(60.0 * 0.2 / 20.0) and without_fa3[-1]["efficiency_vs"] == "cudnn"
    assert "fa3" not in without_fa3[-1]["speedup"]


def test_interpolation_at_matched_error():
    points = [(0.1, 5.0, 0.05), (0.005, 50.0, 0.5), (0.02, 20.0, 0.2)]  # any order
    assert interpolate_at_error(points, 0.01) == pytest.approx((40.0, 0.4))
    assert interpolate_at_error(points, 0.03) == pytest.approx((18.125, 0.18125))
    assert interpolate_at_error(points, 0.08) == pytest.approx((8.75, 0.0875))
    assert interpolate_at_error(points, 0.02) == pytest.approx((20.0, 0.2))
    assert interpolate_at_error(points, 0.2) is None and interpolate_at_error(points, 0.001) is None
    records = [_record("fa2", 80.0, dense=True)] + [
        _record("s2o", t, dense=False, density=d, ms_execute=t, rel_l2=e, sweep={"tau": str(e)}) for e, t, d in points]
    rows = {row["rel_l2"]: row for row in matched_error_rows(records)}
    assert set(rows) == {0.01, 0.03, 0.08}
    assert rows[0.01]["ms_total"] == pytest.approx(40.0) and rows[0.01]["speedup"] == {"fa2": pytest.approx(2.0)}
    assert rows[0.08]["density"] == pytest.approx(0.0875)
    text = render_markdown([{**r, "name": "n", "workload_kind": "capture", "workload_note": "real", "device": "D",
                             "reps": 1, "warmup": 0, "shape": {"B": 1, "Hq": 1, "Hkv": 1, "N": 1024, "D": 64,
                                                               "dtype": "bfloat16"}, "args": {}, "mse": 0.0}
                            for r in records])
    assert "## Speed at matched error" in text and "| w | 1K | s2o | 1% | 40.0 | 0.400 | 2.00x | - | - |" in text


def test_sweeps_parse_per_method():
    assert parse_sweeps(["s2o:tau=0.01,0.003", "pbs:threshold=0.9"]) == {"s2o": ("tau", ["0.01", "0.003"]),
                                                                         "pbs": ("threshold", ["0.9"])}
    for bad in (["tau=0.01"], ["s2o:tau"], ["s2o:tau=0.1", "s2o:segment=512"]):
        with pytest.raises(UserError):
            parse_sweeps(bad)


# ------------------------------------------------------------------------------ the run

def test_run_bench_records_and_markdown(tmp_path, test_methods):
    path = tmp_path / "cap.pt"
    make_capture(path, layers=(1, 4), q_heads=4, kv_heads=2, tokens=96, head_dim=16)
    request = BenchRequest(workloads=[str(path)], methods=["sdpa", "eager", "fa2", "test_window"],
                           sweeps={"test_window": ("window", ["64", "24", "8"])}, reps=2, warmup=1,
                           device="cpu", name="tiny", out_dir=tmp_path / "out")
    outcome = run_bench(request, progress=False)
    records = json.loads(outcome.json_path.read_text())
    assert [r["method"] for r in records] == ["sdpa", "eager", "fa2", "test_window", "test_window", "test_window"]
    for record in records:
        assert RECORD_FIELDS <= set(record)
        assert record["shape"] == {"B": 1, "Hq": 8, "Hkv": 4, "N": 96, "D": 16, "dtype": "float32"}
        assert record["ctx"] == 96 and record["device"] == "CPU" and set(record["versions"]) >= {"torch", "triton"}
    sdpa, eager, fa2, *window = records
    assert fa2["skipped"] and "CUDA" in fa2["skipped"] and fa2["ms_total"] is None  # CUDA only; this bench is on cpu
    for dense in (sdpa, eager):
        assert dense["density"] == 1.0 and dense["ms_plan"] is None and dense["rel_l2"] < 1e-5 and dense["ms_total"] > 0
        assert dense["efficiency_vs"] in ("sdpa", "eager")
    n = 96
    for record, size in zip(window, (64, 24, 8)):
        assert record["sweep"] == {"window": "64" if size == 64 else str(size)}
        assert record["params"] == {"window": size}
        expected = sum(min(i + 1, size) for i in range(n)) / (n * (n + 1) / 2)
        assert record["density"] == pytest.approx(expected)
        assert record["ms_plan"] >= 0 and record["ms_execute"] > 0 and record["ms_total"] > 0
        assert 0 <= record["plan_share"] and record["efficiency"] is not None
    errors = [r["rel_l2"] for r in window]
    assert 0 < errors[0] < errors[1] < errors[2]  # a narrower window loses more attention mass
    text = outcome.markdown_path.read_text()
    assert text.startswith("# Attention operator bench: tiny") and "Device: **CPU**" in text
    assert "| method | args | plan ms | execute ms | total ms | plan share | density | rel L2 | MSE |" in text
    assert "| test_window | window=24 |" in text and f"Skipped: fa2 ({fa2['skipped']})" in text
    assert "## Speed at matched error" in text and "never speedup" not in text


def test_variants_run_one_method_under_two_configurations(tmp_path, test_methods):
    path = tmp_path / "cap.pt"
    make_capture(path, layers=(0,), q_heads=4, kv_heads=2, tokens=64, head_dim=16)
    request = BenchRequest(workloads=[str(path)], methods=["test_window", "test_window/narrow"],
                           method_args={"test_window/narrow": {"window": "8"}},
                           sweeps={"test_window": ("window", ["32", "16"])}, reps=1, warmup=0,
                           device="cpu", name="variants", out_dir=tmp_path)
    records = run_bench(request, progress=False).records
    assert [(r["method"], r["params"]["window"]) for r in records] == [
        ("test_window", 32), ("test_window", 16), ("test_window/narrow", 8)]
    assert records[2]["rel_l2"] > records[1]["rel_l2"] > records[0]["rel_l2"]  # its own window, not the sweep's
    with pytest.raises(UserError, match="twice"):
        run_bench(BenchRequest(workloads=[str(path)], methods=["sdpa", "sdpa"], device="cpu", out_dir=tmp_path),
                  progress=False)


def test_s2o_variants_are_not_peers():
    from s2o_eval.bench.pareto import _best_peer

    assert _best_peer({"s2o": 0.2, "s2o/head": 0.1, "token_oracle": 0.05, "pbs": 0.4}) == ("pbs", 0.4)


def test_run_bench_kernel_sparse_method_matches_reference(tmp_path, test_methods):
    path = tmp_path / "cap.pt"
    make_capture(path, layers=(0,), q_heads=2, kv_heads=1, tokens=64, head_dim=64, dtype=torch.float16)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the executor needs CUDA or the interpreter
    request = BenchRequest(workloads=[str(path)], methods=["eager", "test_kernel"], reps=1, warmup=0,
                           device=device, name="kernel", out_dir=tmp_path)
    eager, kernel = run_bench(request, progress=False).records
    assert kernel["density"] == pytest.approx(1.0) and len(kernel["density_per_head"]) == 2
    assert kernel["rel_l2"] < 2e-3 and kernel["ms_plan"] is not None and kernel["params"] == {"tau": 0.0, "segment": 32}
    assert eager["rel_l2"] < 2e-3


# ------------------------------------------------------------------------------ the CLI

def test_cli_bench_writes_json_and_markdown(tmp_path):
    path = tmp_path / "cap.pt"
    make_capture(path, tokens=48)
    result = CliRunner().invoke(app, ["bench", "--workload", str(path), "--methods", "sdpa,eager", "--reps", "1",
                                      "--warmup", "0", "--out-dir", str(tmp_path / "b"), "--name", "cli", "-q"])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "b" / "cli.json").read_text())
    assert [r["method"] for r in records] == ["sdpa", "eager"] and all(r["workload"] == "cap" for r in records)
    assert "| sdpa | - |" in (tmp_path / "b" / "cli.md").read_text()
    assert f"cap · 48 tokens · {records[0]['device']}" in result.output and "cli.md" in result.output


def test_cli_bench_random_workload_is_labelled_worst_case(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--workload", "llama8b-random", "--ctx", "256", "--methods", "sdpa",
                                      "--dtype", "fp32", "--reps", "1", "--warmup", "0", "--out-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "llama8b-random-256.md").read_text()
    assert "never speedup" in text and "Hq=32, Hkv=8, N=256, D=128, float32" in text


def test_cli_bench_user_errors(tmp_path):
    runner = CliRunner()
    cases = [
        (["--workload", "llama8b-random", "--ctx", "1k", "--methods", "sdpa", "--sweep", "s2o:tau=0.1"], "not in --methods"),
        (["--workload", str(tmp_path / "missing.pt"), "--methods", "sdpa"], "neither a capture file"),
        (["--workload", "llama8b-random", "--methods", "sdpa"], "needs --ctx"),
        (["--workload", "llama8b-random", "--ctx", "1k", "--methods", "nope"], "unknown method"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["bench", *args, "--out-dir", str(tmp_path), "-q"])
        assert result.exit_code == 4 and message in result.output, (args, result.output)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_gpu_bench_dense_baselines(tmp_path):
    request = BenchRequest(workloads=["llama8b-random"], ctx=[2048], methods=["fa2", "cudnn", "sdpa"], reps=3,
                           warmup=1, name="gpu", out_dir=tmp_path)
    records = run_bench(request, progress=False).records
    for record in records:
        assert record["skipped"] is None and record["rel_l2"] < 1e-2 and record["shape"]["dtype"] == "bfloat16"
        assert not math.isnan(record["ms_total"]) and record["speedup"]["fa2"] > 0
