"""``s2o-eval run --prefill-chunk``: every prompt prefilled in chunks through the method, as a serving
engine does; the same continuation as the whole-prompt run, and per sample the total prefill time, the
time and the density of each chunk; its own run directory, resumed like any other."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from s2o_eval.cli import app
from s2o_eval.errors import UserError
from s2o_eval.methods import METHODS, AttentionMethod, create
from s2o_eval.run.chunked import chunk_bounds, parse_prefill_chunk
from s2o_eval.run.rundir import RunDir

from tiny_runs import error_lines

ARGS = ["--task", "ruler:vt", "--ctx", "1k", "--limit", "2", "-q"]


@dataclass
class HalfSparse(AttentionMethod):
    """Exact attention that reports half of each call's causal pairs as computed: a sparse method of
    known density 0.5, on whole prompts and chunks alike."""

    name: ClassVar[str] = "half_sparse"
    sparse: ClassVar[bool] = True
    takes_offset: ClassVar[bool] = True

    def prefill(self, q, k, v, *, scale, stats=None):
        n, m = q.shape[2], k.shape[2]
        causal = q.shape[0] * q.shape[1] * (n * (m - n) + n * (n + 1) // 2)
        if stats is not None:
            stats.add(computed=causal / 2, causal=causal)
        return create("eager").prefill(q, k, v, scale=scale)


@dataclass
class HalfSparseWholeOnly(HalfSparse):
    """The same, written before chunks existed: it takes no queries at an offset."""

    name: ClassVar[str] = "half_sparse_whole"
    takes_offset: ClassVar[bool] = False


@pytest.fixture
def test_methods(monkeypatch):
    for method in (HalfSparse, HalfSparseWholeOnly):
        monkeypatch.setitem(METHODS, method.name, method)


def _run(model, out, *extra):
    return CliRunner().invoke(app, ["run", "--model", str(model), *ARGS, "--out", str(out), *extra])


def _by_key(run: RunDir):
    return {(r["task"], r["ctx"], r["index"]): r for r in run.samples()}


# -- the option ---------------------------------------------------------------------------------

def test_prefill_chunk_takes_lengths_and_zero_means_whole():
    assert parse_prefill_chunk("8k") == 8192 and parse_prefill_chunk("8192") == 8192
    assert parse_prefill_chunk("1.5k") == 1536 and parse_prefill_chunk(" 16 ") == 16
    assert parse_prefill_chunk("0") is None and parse_prefill_chunk(None) is None
    for bad, said in (("abc", "is not a length"), ("8", "too short"), ("-4k", "too short"), ("infk", "not a length")):
        with pytest.raises(UserError, match=said):
            parse_prefill_chunk(bad)


def test_chunks_cover_the_prompt_in_order():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(8, 4) == [(0, 4), (4, 8)]
    assert chunk_bounds(3, 4) == [(0, 3)]


@pytest.mark.parametrize("value", ["8", "eight", "0.001k"])
def test_a_bad_prefill_chunk_is_one_line_and_exit_4(value, tmp_path):
    result = CliRunner().invoke(app, ["run", *ARGS, "--prefill-chunk", value, "--out", str(tmp_path / "r")])
    assert result.exit_code == 4
    (line,) = error_lines(result.output)
    assert "--prefill-chunk" in line and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


# -- the lm-eval model --------------------------------------------------------------------------

@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_the_lm_class_prefills_in_chunks_and_continues_as_the_whole_prompt_does(tmp_path, decode):
    from lm_eval.api.instance import Instance
    from transformers import AutoTokenizer, LlamaForCausalLM

    from s2o_eval.run.lm import S2OEvalLM
    from tiny_models import make_tiny_llama

    path = make_tiny_llama(tmp_path / "m", max_positions=512)
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    context = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 3
    request = Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 9}), 0, metadata=("t", 0, 1))
    outputs, measured = {}, {}
    for chunk in (None, 16):
        lm = S2OEvalLM(pretrained=model, tokenizer=tok, method=HalfSparse(), decode=decode, max_length=512,
                       device="cpu", prefill_chunk=chunk)
        outputs[chunk] = lm.generate_until([request])
        measured[chunk] = next(iter(lm.measurements.values()))
    assert outputs[16] == outputs[None]
    whole, chunked = measured[None], measured[16]
    assert whole.chunk_ms is None and whole.chunk_density is None
    n_chunks = -(-chunked.prompt_tokens // 16)
    assert n_chunks >= 3 and len(chunked.chunk_ms) == n_chunks
    assert chunked.prefill_ms == pytest.approx(sum(chunked.chunk_ms))
    # every chunk ran through the method (the last one as generate's first pass), each at density 0.5;
    # a one-token last chunk would be a decode step, which no method runs
    expected = [0.5] * n_chunks if chunked.prompt_tokens % 16 != 1 else [0.5] * (n_chunks - 1) + [None]
    assert chunked.chunk_density == expected and chunked.density == 0.5


# -- runs ---------------------------------------------------------------------------------------

def test_a_chunked_run_records_its_chunks_and_scores_as_the_whole_run(tiny_model, tmp_path, test_methods):
    whole = _run(tiny_model, tmp_path / "whole", "--method", "half_sparse")
    chunked = _run(tiny_model, tmp_path / "chunked", "--method", "half_sparse", "--prefill-chunk", "256")
    assert whole.exit_code == 0, whole.output
    assert chunked.exit_code == 0, chunked.output
    assert "prefill in chunks of 256" in chunked.output
    whole_run, chunked_run = RunDir(tmp_path / "whole"), RunDir(tmp_path / "chunked")
    config = chunked_run.config()
    assert config["prefill_chunk"] == 256 and config["later_chunks"] == "method"
    assert "prefill_chunk" not in whole_run.config()  # whole runs keep the configs (and directories) they had
    whole_samples, chunked_samples = _by_key(whole_run), _by_key(chunked_run)
    assert whole_samples.keys() == chunked_samples.keys() and len(whole_samples) == 2
    for key, record in chunked_samples.items():
        assert record["prediction"] == whole_samples[key]["prediction"]
        assert record["score"] == whole_samples[key]["score"]
        assert record["prompt_sha"] == whole_samples[key]["prompt_sha"]
        n_chunks = -(-record["prompt_tokens"] // 256)
        assert len(record["prefill_chunk_ms"]) == n_chunks == 4  # about 1000 tokens
        assert record["prefill_ms"] == pytest.approx(sum(record["prefill_chunk_ms"]))
        assert record["chunk_density"] == [0.5] * n_chunks and record["density"] == 0.5
        assert "prefill_chunk_ms" not in whole_samples[key]
    (row,) = chunked_run.summary()["results"]
    assert row["chunks_mean"] == 4 and row["last_chunk_ms_mean"] > 0
    assert "chunks_mean" not in whole_run.summary()["results"][0]


def test_a_method_without_offsets_is_said_and_recorded_and_its_later_chunks_count_dense(tiny_model, tmp_path,
                                                                                       test_methods):
    result = _run(tiny_model, tmp_path / "r", "--method", "half_sparse_whole", "--prefill-chunk", "256")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("Note:") and "offset" in line]
    assert notes == ["Note: half_sparse_whole takes no queries at an offset: with --prefill-chunk its chunks after "
                     "the first run dense attention (recorded: later_chunks dense)"]
    run = RunDir(tmp_path / "r")
    assert run.config()["later_chunks"] == "dense"
    for record in run.samples():
        assert record["chunk_density"] == [0.5, 1.0, 1.0, 1.0]


def test_a_chunked_run_resumes_and_another_chunk_size_is_another_run(tiny_model, tmp_path):
    args = ["--method", "sdpa", "--prefill-chunk", "512", "--runs-dir", str(tmp_path)]
    first = CliRunner().invoke(app, ["run", "--model", str(tiny_model), *ARGS, *args])
    assert first.exit_code == 0, first.output
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    again = CliRunner().invoke(app, ["run", "--model", str(tiny_model), *ARGS, *args])
    assert again.exit_code == 0 and "resuming: 2 of 2 samples already done" in again.output
    assert len(RunDir(path).samples()) == 2
    other = CliRunner().invoke(app, ["run", "--model", str(tiny_model), *ARGS, "--method", "sdpa",
                                     "--prefill-chunk", "256", "--runs-dir", str(tmp_path)])
    assert other.exit_code == 0, other.output
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    refused = _run(tiny_model, path, "--method", "sdpa", "--prefill-chunk", "256")
    assert refused.exit_code == 4 and "prefill_chunk: 512 there, 256 asked" in refused.output


# -- compare ------------------------------------------------------------------------------------

VT, K4 = "s2o_ruler_vt", 4096


def _write(root, name, samples, **config):
    run = RunDir(root / name)
    run.write_config({"model": "gemma-3-270m", "method": "s2o", "method_resolved": "s2o",
                      "method_args": {"tau": 0.0003}, "tasks": [VT], "ctx": [K4], **config})
    for sample in samples:
        run.append_sample({"task": VT, "ctx": K4, **sample})
    run.write_summary()
    return run


def _chunked_and_whole(tmp_path):
    """The same two prompts (4000 and 3100 tokens), whole and in chunks of 1K."""
    whole = _write(tmp_path, "whole", [
        {"index": 0, "prompt_sha": "a", "prompt_tokens": 4000, "score": 100.0, "prefill_ms": 40.0, "density": 0.4},
        {"index": 1, "prompt_sha": "b", "prompt_tokens": 3100, "score": 0.0, "prefill_ms": 30.0, "density": 0.5}])
    chunked = _write(tmp_path, "chunked", [
        {"index": 0, "prompt_sha": "a", "prompt_tokens": 4000, "score": 100.0, "prefill_ms": 50.0, "density": 0.6,
         "prefill_chunk_ms": [5.0, 10.0, 15.0, 20.0], "chunk_density": [1.0, 0.7, 0.6, 0.5]},
        {"index": 1, "prompt_sha": "b", "prompt_tokens": 3100, "score": 100.0, "prefill_ms": 33.0, "density": 0.7,
         "prefill_chunk_ms": [7.0, 12.0, 14.0, 0.5], "chunk_density": [1.0, 0.8, 0.7, None]}],
        prefill_chunk=1024, later_chunks="method")
    return whole, chunked


def test_chunk_rows_give_each_chunks_time_density_and_offset(tmp_path):
    from s2o_eval.reporting import tables
    from s2o_eval.reporting.runs import load_runs

    whole, chunked = _chunked_and_whole(tmp_path)
    runs = load_runs([str(whole.path), str(chunked.path)], tmp_path)
    assert [r.label for r in runs] == ["s2o", "s2o-chunk1k"]
    rows = tables.chunk_rows({r.label: r.samples for r in runs}, {r.label: r.prefill_chunk for r in runs})
    whole = [r for r in rows if r["label"] == "s2o"]
    assert whole == [{"ctx": K4, "label": "s2o", "chunk": None, "offset": 0, "n": 2, "queries": 3550.0,
                      "ms": 35.0, "density": 0.45}]
    chunked = {r["chunk"]: r for r in rows if r["label"] == "s2o-chunk1k"}
    assert sorted(chunked) == [1, 2, 3, 4]
    assert [chunked[i]["offset"] for i in (1, 2, 3, 4)] == [0, 1024, 2048, 3072]
    assert [chunked[i]["ms"] for i in (1, 2, 3, 4)] == [6.0, 11.0, 14.5, 10.25]
    assert chunked[2]["density"] == pytest.approx(0.75)
    assert chunked[4]["density"] == 0.5  # the one-token last chunk was a decode step: no density
    assert chunked[4]["queries"] == pytest.approx((928 + 28) / 2)
    assert tables.chunk_rows({"s2o": runs[0].samples}, {"s2o": None}) == []  # nothing chunked: no table


def test_compare_shows_a_chunked_run_beside_the_whole_one(tmp_path):
    _chunked_and_whole(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "whole"), str(tmp_path / "chunked"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Prefill per chunk" in result.output
    report = (out / "report.md").read_text()
    chunks = report[report.index("## Prefill in chunks"):report.index("## Density")]
    assert "| 4K | s2o | whole | 0 | 3550 | 2 | 35.0 | 0.450 |" in chunks
    assert "| 4K | s2o-chunk1k | 2 | 1024 | 1024 | 2 | 11.0 | 0.750 |" in chunks
    assert "| 4K | s2o-chunk1k | 4 | 3072 | 478 | 2 | 10.2 | 0.500 |" in chunks
    assert "| s2o-chunk1k | 100.0 (+50.0) | 100.0 (+50.0) |" in report  # scores side by side, as for any two runs
    assert "**config.prefill_chunk**" in report and "**config.later_chunks**" in report
    assert (out / "s2o-chunk1k.summary.json").exists()
