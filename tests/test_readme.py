"""The README's code runs as written, on the CPU: "In your own code" (transformers' selector, the
operator alone) and "Adding a method" (the planner file, the method file, the registry line; or the entry
point of another package); its Methods table names the built-in methods.

Only a few literals are swapped (a tiny model for the hub model, a short sequence); each must be in
the README's code, so that the README cannot change without this test noticing."""

import re
import sys
import types
from pathlib import Path

import torch
from typer.testing import CliRunner

from s2o_eval.cli import app
from s2o_eval.methods import BUILTIN_METHODS, METHODS, AttentionStats, create

from tiny_models import make_qkv

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str, level: str = "##") -> str:
    """The README's section ``title`` (a heading of ``level``), up to the next heading as high."""
    text = README.read_text()
    heading = f"\n{level} {title}\n"
    body = text.index(heading) + len(heading)
    end = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, body)
    return text[body:end.start() if end else None]


def python_blocks(title: str, level: str = "##") -> list[str]:
    """The ```python blocks of the README section ``title`` (a heading of ``level``), in order."""
    return re.findall(r"```python\n(.*?)```", section(title, level), re.S)


def swapped(code: str, swaps: dict[str, str]) -> str:
    for old, new in swaps.items():
        assert old in code, f"the README's example no longer holds {old!r}: update this test to it"
        code = code.replace(old, new)
    return code


def run(code: str, name: str) -> dict:
    namespace = {"__name__": name}
    exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return namespace


def test_transformers_example(tiny_model):
    with_transformers, _ = python_blocks("In your own code")
    done = run(swapped(with_transformers, {'"meta-llama/Llama-3.1-8B-Instruct"': repr(str(tiny_model))}),
               "with_transformers")
    model, recorder = done["model"], done["recorders"]["s2o"]
    assert model.config._attn_implementation == "s2o"
    assert recorder.method_calls == model.config.num_hidden_layers  # the prompt's prefill went to S2O
    assert 0 < recorder.stats.density <= 1


def test_cached_prefix_example(tiny_model):
    """The chunked-prefill section's transformers code, after the first example's model: the prefix's
    prefill and then the new tokens' (at the prefix's offset) reach the method, once per layer each."""
    with_transformers, _ = python_blocks("In your own code")
    (cached_prefix,) = python_blocks("Chunked prefill and cached prefixes", "###")
    namespace = run(swapped(with_transformers, {'"meta-llama/Llama-3.1-8B-Instruct"': repr(str(tiny_model))}),
                    "with_transformers")
    model, recorder = namespace["model"], namespace["recorders"]["s2o"]
    recorder.reset()
    exec(compile(swapped(cached_prefix, {"max_new_tokens=32": "max_new_tokens=2"}), "README.md (cached prefix)",
                 "exec"), namespace)
    layers = model.config.num_hidden_layers
    assert namespace["out"].shape[1] == namespace["ids"].shape[1] + 2
    # a method without offsets runs the suffix dense, counted apart (S2O's offsets come with the executor's)
    assert recorder.method_calls + recorder.offset_fallback_calls == 2 * layers
    assert recorder.method_calls >= layers


def test_operator_example():
    import s2o_kernels

    assert hasattr(s2o_kernels, "s2o_attention"), "the README calls s2o_kernels.s2o_attention"
    _, operator = python_blocks("In your own code")
    done = run(swapped(operator, {"seq_len = 16384": "seq_len = 256"}), "operator")
    assert done["out"].shape == done["q"].shape and done["out"].dtype == done["q"].dtype
    assert 0 < done["stats"].density <= 1


def _as_module(name: str, code: str, monkeypatch) -> types.ModuleType:
    """``code`` imported as the module ``name``, as if it were the file the README says to write."""
    module = types.ModuleType(name)
    module.__package__ = name.rpartition(".")[0]
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, f"README.md ({name})", "exec"), module.__dict__)
    return module


def test_adding_a_method(monkeypatch):
    import s2o_kernels.peers  # noqa: F401  (the planner's package, for its relative import)

    planner, method = python_blocks("Adding a method")
    _as_module("s2o_kernels.peers.local", planner, monkeypatch)
    local = _as_module("s2o_eval.methods.local", method, monkeypatch).Local
    monkeypatch.setitem(METHODS, local.name, local)  # the registry line

    block, window, n_ctx = 16, 1, 80
    q, k, v = make_qkv(5, n_ctx, hot=4.0)
    stats = AttentionStats()
    out = create("local", {"block": str(block), "window": str(window)}).prefill(q, k, v, scale=0.25, stats=stats)
    # what the docstring promises: query i sees key j <= i when j's block is at most `window` before i's
    key, query = torch.arange(n_ctx)[None, :], torch.arange(n_ctx)[:, None]
    allowed = (key <= query) & (key // block >= query // block - window)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q.double() @ k.double().transpose(-1, -2) * 0.25).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(out, (torch.softmax(scores, -1) @ v.double()).float(), atol=1e-5, rtol=1e-5)
    assert stats.density < 1
    assert "local" in CliRunner().invoke(app, ["methods"]).output


def test_adding_a_method_from_another_package(tmp_path, monkeypatch):
    """The README's entry point, as pip would install it (a dist-info on the path), with the README's
    method file in a package of its own: the registry takes it under its name."""
    import importlib

    from s2o_eval.methods.registry import entry_point_methods

    _, method = python_blocks("Adding a method")
    (toml,) = re.findall(r"```toml\n(.*?)```", section("Adding a method"), re.S)
    group, name, value = re.fullmatch(r'\[project\.entry-points\."(.+)"\]\n(\w+) = "(.+)"\n', toml).groups()
    module, _, cls = value.partition(":")
    package = tmp_path / module.rpartition(".")[0]
    package.mkdir()
    (package / "__init__.py").write_text("")
    own_package = "from s2o_eval.methods.block_sparse import"
    assert own_package in section("Adding a method")
    (package / "local.py").write_text(swapped(method, {"from .block_sparse import": own_package}))
    info = tmp_path / "my_package-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    warnings = []
    found = entry_point_methods(warn=warnings.append)
    assert not warnings and list(found) == [name] and found[name].__name__ == cls
    assert found[name]().params() == {"window": 4, "block": 128}
    for loaded in [m for m in sys.modules if m.partition(".")[0] == module.partition(".")[0]]:
        del sys.modules[loaded]  # a later test's path has no such package


def test_methods_table_names_every_registered_method():
    rows = re.findall(r"^\| (`.+?) \|", section("Methods", "###"), re.M)
    assert {name for row in rows for name in re.findall(r"`(\w+)`", row)} == set(BUILTIN_METHODS)
