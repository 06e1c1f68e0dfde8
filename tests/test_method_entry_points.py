"""Methods from other packages, through the entry point group ``s2o_eval.methods``: a tiny distribution is
written here (a ``*.dist-info`` with its ``entry_points.txt``, and its module) into a folder put on the
path, so that ``importlib.metadata`` finds it as if pip had installed it. Its good method joins
``s2o-eval methods``, ``run``, ``bench`` and ``s2o_eval.register()``; its broken and clashing entry points
are each one warning line, and the built-ins keep working."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import s2o_eval
from s2o_eval.cli import app
from s2o_eval.methods import BUILTIN_METHODS, ENTRY_POINT_GROUP, METHODS, create
from s2o_eval.methods.registry import entry_point_methods

from tiny_models import make_qkv

PLUGIN_MODULE = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2o_eval.methods import AttentionMethod


@dataclass
class Chunked(AttentionMethod):
    """Dense causal attention, a chunk of queries at a time: a method some other package ships."""

    name = "demo_chunked"
    summary = "dense, queries in chunks (from another package)"

    chunk: int = 32

    def prefill(self, q, k, v, *, scale, stats=None):
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        positions = torch.arange(q.shape[2], device=q.device)
        outs = []
        for start in range(0, q.shape[2], self.chunk):
            end = min(start + self.chunk, q.shape[2])
            causal = positions[None, :end] <= positions[start:end, None]
            outs.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end],
                                                       attn_mask=causal, scale=scale))
        return torch.cat(outs, dim=2)


@dataclass
class Impostor(Chunked):
    name = "fa2"


@dataclass
class Misnamed(Chunked):
    name = "something_else"
'''

ENTRY_POINTS = f"""[{ENTRY_POINT_GROUP}]
demo_chunked = s2o_eval_demo_methods:Chunked
fa2 = s2o_eval_demo_methods:Impostor
demo_misnamed = s2o_eval_demo_methods:Misnamed
demo_broken = s2o_eval_demo_missing_module:Nothing
"""
REFUSED = ("fa2", "demo_misnamed", "demo_broken")


@pytest.fixture
def plugin_site(tmp_path):
    """A folder holding one installed distribution, ``s2o-eval-demo``, with four entry points of ours."""
    site = tmp_path / "site"
    info = site / "s2o_eval_demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: s2o-eval-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "s2o_eval_demo_methods.py").write_text(PLUGIN_MODULE)
    return site


@pytest.fixture
def with_plugin(plugin_site, monkeypatch):
    """The registry as a process started with ``plugin_site`` installed would have it; the warnings."""
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    warnings: list[str] = []
    found = entry_point_methods(warn=warnings.append)
    for name, cls in found.items():
        monkeypatch.setitem(METHODS, name, cls)
    yield found, warnings
    sys.modules.pop("s2o_eval_demo_methods", None)


def test_a_good_entry_point_joins_and_each_bad_one_is_one_warning(with_plugin):
    found, warnings = with_plugin
    assert list(found) == ["demo_chunked"]
    assert len(warnings) == len(REFUSED)
    for name, warning in zip(REFUSED, warnings):
        assert f"'{name}'" in warning and "s2o-eval-demo 1.0" in warning and "\n" not in warning
    assert "built-in" in warnings[0] and "something_else" in warnings[1] and "does not load" in warnings[2]
    assert METHODS["fa2"] is BUILTIN_METHODS["fa2"]  # the clash is refused: the built-in stays


def test_the_method_runs_in_methods_run_bench_and_register(with_plugin, tiny_model, tmp_path):
    q, k, v = make_qkv(3, 80)
    out = create("demo_chunked", {"chunk": "16"}).prefill(q, k, v, scale=0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, dim=1),
                                                                v.repeat_interleave(2, dim=1), is_causal=True,
                                                                scale=0.25)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    runner = CliRunner()
    listed = runner.invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "demo_chunked" in listed.output and "from another package" in listed.output

    ran = runner.invoke(app, ["run", "--model", str(tiny_model), "--task", "ruler:vt", "--ctx", "1k", "--limit", "1",
                              "--method", "demo_chunked", "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert ran.exit_code == 0, ran.output
    assert "demo_chunked" in ran.output

    benched = runner.invoke(app, ["bench", "--workload", "llama8b-random", "--ctx", "256", "--methods",
                                  "sdpa,demo_chunked", "--dtype", "fp32", "--reps", "1", "--warmup", "0",
                                  "--out-dir", str(tmp_path / "bench"), "-q"])
    assert benched.exit_code == 0, benched.output
    assert "| demo_chunked |" in (tmp_path / "bench" / "llama8b-random-256.md").read_text()

    recorders = s2o_eval.register("demo_chunked", chunk=8)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="demo_chunked").eval()
    with torch.no_grad():
        model(torch.randint(3, 300, (1, 40)))
    assert recorders["demo_chunked"].method_calls == model.config.num_hidden_layers


def test_a_fresh_process_finds_the_plugin_and_still_works_with_the_bad_ones(plugin_site):
    """What a user sees: `s2o-eval methods` lists the method; one warning line per bad entry point."""
    path = os.pathsep.join([str(plugin_site), *sys.path])
    result = subprocess.run([sys.executable, "-m", "s2o_eval", "methods"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=path, COLUMNS="200"), cwd=Path(__file__).parents[1],
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "demo_chunked" in result.stdout and "fa2" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert [name for name in REFUSED if any(f"'{name}'" in w for w in warnings)] == list(REFUSED)
    assert len(warnings) == len(REFUSED) and len(result.stderr.strip().splitlines()) == len(REFUSED)
