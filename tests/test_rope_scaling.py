"""``--rope-scaling linear:F`` (issue 16): position interpolation reaches the global layers of a tiny Gemma 3
and only those, is recorded in a run's config.json (its own run directory) and in a capture's meta, and
is refused in one line for a model without RoPE, a model whose one RoPE also serves sliding layers, and
a malformed value."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import tiny_runs
from s2o_eval.bench.capture import default_capture_path, read_capture
from s2o_eval.cli import app
from s2o_eval.errors import ExitCode, NotComparable, UserError
from s2o_eval.models import load_model
from s2o_eval.models.rope_scaling import RopeScaling, apply_rope_scaling, parse_rope_scaling
from s2o_eval.reporting import load_runs
from s2o_eval.reporting.regress import baseline_from_run, check_comparable
from s2o_eval.run.rundir import RunDir, config_hash

from tiny_models import TEXT, make_tiny_gemma, make_tiny_gpt2, tiny_llama_config

LAYER_TYPES = ("sliding_attention", "full_attention", "sliding_attention", "full_attention")
GLOBAL_LAYERS, SLIDING_LAYERS = [1, 3], [0, 2]
RUN_ARGS = ["--task", "ruler:vt", "--ctx", "1k", "--limit", "1", "--method", "sdpa", "-q"]


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """A 4-layer random Gemma 3 (sliding window 8; layers 1 and 3 global), window 4096."""
    return make_tiny_gemma(tmp_path_factory.mktemp("rope-gemma") / "gemma", layer_types=LAYER_TYPES)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("rope-gpt2") / "gpt2")


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(result, expected: str) -> str:
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Traceback" not in result.output
    (line,) = tiny_runs.error_lines(result.output)
    assert expected in line, line
    return line


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, factor", [("linear:4", 4.0), ("LINEAR:2.5", 2.5), (" linear:1 ", 1.0)])
def test_linear_factors_parse(text, factor):
    assert parse_rope_scaling(text) == RopeScaling("linear", factor)


def test_no_value_means_no_scaling():
    assert parse_rope_scaling(None) is None and parse_rope_scaling("") is None


@pytest.mark.parametrize("text, reason", [
    ("linear:0", "factor must be a finite number >= 1"),
    ("linear:0.5", "factor must be a finite number >= 1"),
    ("linear:-2", "factor must be a finite number >= 1"),
    ("linear:inf", "factor must be a finite number >= 1"),
    ("linear:nan", "factor must be a finite number >= 1"),
    ("linear:x", "'x' is not a number"),
    ("linear", "'' is not a number"),
    ("cubic:2", "unknown kind 'cubic'"),
    ("yarn:4", "unknown kind 'yarn'"),
])
def test_malformed_values_are_refused(text, reason):
    with pytest.raises(UserError, match=reason) as refused:
        parse_rope_scaling(text)
    assert "linear:F" in str(refused.value)  # the line says what to write instead


@pytest.mark.parametrize("value", ["linear:0", "linear:x", "cubic:2"])
def test_malformed_values_end_run_and_capture_in_one_line_with_the_usage_code(gemma_dir, tmp_path, monkeypatch, value):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad value was found")

    monkeypatch.setattr("s2o_eval.models.load_model", refuse)
    _one_line(_cli("run", "--model", gemma_dir, *RUN_ARGS, "--runs-dir", tmp_path, "--rope-scaling", value),
              f"--rope-scaling {value}")
    _one_line(_cli("capture", "--model", gemma_dir, "--ctx", "256", "--out", tmp_path / "c.pt", "--device", "cpu",
                   "--rope-scaling", value), f"--rope-scaling {value}")


# -- what the scaling reaches -------------------------------------------------------------------

def _position_embeddings(model, n_tokens: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The (cos, sin) each decoder layer receives for a prompt of ``n_tokens`` (positions 0..n-1)."""
    seen = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, i=i: seen.__setitem__(i, tuple(t.detach() for t in kwargs["position_embeddings"])),
        with_kwargs=True) for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(torch.arange(3, 3 + n_tokens)[None])
    for hook in hooks:
        hook.remove()
    return seen


def test_linear_scaling_reaches_only_the_global_layers(gemma_dir):
    """Position p of a global layer rotates as p / F did; a sliding layer's rotation does not change."""
    factor, n_tokens = 4.0, 64
    plain = load_model(str(gemma_dir), device="cpu", dtype="fp32")
    scaled = load_model(str(gemma_dir), device="cpu", dtype="fp32", rope_scaling=RopeScaling("linear", factor))
    assert plain.rope_scaling is None
    assert scaled.rope_scaling["layers"] == GLOBAL_LAYERS and scaled.rope_scaling["factor"] == factor
    before, after = _position_embeddings(plain.model, n_tokens), _position_embeddings(scaled.model, n_tokens)

    positions = torch.arange(n_tokens, dtype=torch.float32)[None]
    probe = torch.zeros(1, dtype=torch.float32)
    # the unscaled global RoPE at the fractional positions p / F
    at_p_over_f = plain.model.model.rotary_emb(probe, positions / factor, layer_type="full_attention")
    for layer in GLOBAL_LAYERS:
        for got, plain_got, expected in zip(after[layer], before[layer], at_p_over_f):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
            assert (got[:, 1:] - plain_got[:, 1:]).abs().max() > 1e-2  # it did change, past position 0
    # positions that are multiples of F land exactly on the unscaled integer positions
    torch.testing.assert_close(after[GLOBAL_LAYERS[0]][0][:, ::4], before[GLOBAL_LAYERS[0]][0][:, :n_tokens // 4],
                               atol=1e-6, rtol=0)
    for layer in SLIDING_LAYERS:
        for got, expected in zip(after[layer], before[layer]):
            assert torch.equal(got, expected)


def test_the_sliding_rope_parameters_are_left_as_they_were(gemma_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gemma_dir)
    sliding_before = dict(config.rope_parameters["sliding_attention"])
    record = apply_rope_scaling(config, RopeScaling("linear", 2.0), "tiny")
    assert config.rope_parameters["sliding_attention"] == sliding_before
    assert config.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0}
    assert record["rope_parameters"] == config.rope_parameters["full_attention"]
    # on top of a model's own linear factor (Gemma 3 4B has 8), the two compose
    again = apply_rope_scaling(config, RopeScaling("linear", 4.0), "tiny")
    assert again["rope_parameters"]["factor"] == 8.0


def test_factor_one_is_the_model_as_it_is(gemma_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gemma_dir)
    before = {k: dict(v) for k, v in config.rope_parameters.items()}
    assert apply_rope_scaling(config, RopeScaling("linear", 1.0), "tiny") is None
    assert config.rope_parameters == before


def test_one_rope_without_sliding_layers_is_scaled_in_every_layer():
    from transformers import LlamaForCausalLM

    config = tiny_llama_config()
    plain_inv_freq = LlamaForCausalLM(config).model.rotary_emb.inv_freq
    record = apply_rope_scaling(config, RopeScaling("linear", 2.0), "llama")
    assert record["layers"] == [0, 1] and record["applies_to"].startswith("every layer")
    torch.testing.assert_close(LlamaForCausalLM(config).model.rotary_emb.inv_freq, plain_inv_freq / 2)


@pytest.mark.parametrize("make_config", [
    lambda: __import__("transformers").MistralConfig(num_hidden_layers=2, sliding_window=8),
    lambda: __import__("transformers").Gemma2Config(num_hidden_layers=2),
], ids=["mistral", "gemma2"])
def test_one_rope_shared_with_sliding_layers_is_refused(make_config):
    with pytest.raises(UserError, match="one RoPE for all its layers, sliding-window ones included"):
        apply_rope_scaling(make_config(), RopeScaling("linear", 2.0), "m")


def test_another_kind_of_scaling_already_in_the_model_is_refused():
    config = tiny_llama_config(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(UserError, match="already uses 'dynamic' RoPE scaling"):
        apply_rope_scaling(config, RopeScaling("linear", 2.0), "m")


def test_a_model_without_rope_is_refused_in_one_line_before_its_weights_load(gpt2_dir, tmp_path, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    line = _one_line(_cli("run", "--model", gpt2_dir, *RUN_ARGS, "--runs-dir", tmp_path, "--rope-scaling", "linear:2"),
                     "has no RoPE to scale")
    assert "leave --rope-scaling out" in line
    _one_line(_cli("capture", "--model", gpt2_dir, "--ctx", "256", "--out", tmp_path / "c.pt", "--device", "cpu",
                   "--rope-scaling", "linear:2"), "has no RoPE to scale")
    assert not list(tmp_path.iterdir())


# -- recorded -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scaled_runs(gemma_dir, tmp_path_factory):
    """The same one-sample run with the model's own RoPE, with linear:2 and with linear:4 (run dirs by name)."""
    root = tmp_path_factory.mktemp("rope-runs")
    runs = {}
    for name, extra in (("plain", []), ("linear2", ["--rope-scaling", "linear:2"]),
                        ("linear4", ["--rope-scaling", "linear:4"])):
        result = _cli("run", "--model", gemma_dir, *RUN_ARGS, "--runs-dir", root / name, *extra)
        assert result.exit_code == 0, result.output
        (path,) = (root / name).iterdir()
        runs[name] = RunDir(path)
    return runs


def test_the_scaling_is_recorded_and_gets_its_own_run_directory(scaled_runs):
    configs = {name: run.config() for name, run in scaled_runs.items()}
    assert "rope_scaling" not in configs["plain"]  # unscaled runs keep the hashes they always had
    for name, factor in (("linear2", 2.0), ("linear4", 4.0)):
        recorded = configs[name]["rope_scaling"]
        assert recorded["type"] == "linear" and recorded["factor"] == factor and recorded["layers"] == GLOBAL_LAYERS
        assert recorded["rope_parameters"]["factor"] == factor
        assert configs[name]["model_window"] == configs["plain"]["model_window"] == 4096  # the window stays
        assert scaled_runs[name].summary()["config"]["rope_scaling"] == recorded
    hashes = {config_hash(config) for config in configs.values()}
    assert len(hashes) == 3
    assert len({run.path.name for run in scaled_runs.values()}) == 3


def test_factor_one_resumes_the_unscaled_run(scaled_runs, gemma_dir):
    plain = scaled_runs["plain"]
    result = _cli("run", "--model", gemma_dir, *RUN_ARGS, "--runs-dir", plain.path.parent, "--rope-scaling", "linear:1")
    assert result.exit_code == 0, result.output
    assert [p.name for p in plain.path.parent.iterdir()] == [plain.path.name]
    assert len(plain.samples()) == 1 and len(plain.sessions()) == 2  # found, nothing redone


def test_reports_label_each_factor_and_regress_refuses_to_mix_them(scaled_runs, tmp_path):
    runs = load_runs([str(scaled_runs[name].path) for name in ("plain", "linear2", "linear4")], tmp_path)
    assert [run.label for run in runs] == ["sdpa", "sdpa-linear2", "sdpa-linear4"]
    check_comparable(baseline_from_run(runs[1]), runs[1])
    with pytest.raises(NotComparable, match=r"RoPE scaling \(linear:4\) is not the baseline's \(none\)"):
        check_comparable(baseline_from_run(runs[0]), runs[2])


def test_ctx_past_the_window_stays_refused_with_scaling(gemma_dir, tmp_path):
    line = _one_line(_cli("run", "--model", gemma_dir, *RUN_ARGS[:2], "--ctx", "8k", "--runs-dir", tmp_path,
                          "--rope-scaling", "linear:2"), "beyond")
    assert "--rope-scaling linear:2 does not lift" in line and "--allow-beyond-window" in line


def test_a_capture_records_the_scaling_in_its_meta(gemma_dir, tmp_path):
    text = tmp_path / "essay.txt"
    text.write_text(TEXT)
    common = ["capture", "--model", gemma_dir, "--text", text, "--ctx", "256", "--device", "cpu"]
    plain = _cli(*common, "--out", tmp_path / "plain.pt")
    scaled = _cli(*common, "--out", tmp_path / "linear4.pt", "--rope-scaling", "linear:4")
    assert plain.exit_code == 0 and scaled.exit_code == 0, plain.output + scaled.output
    plain_capture, scaled_capture = read_capture(tmp_path / "plain.pt"), read_capture(tmp_path / "linear4.pt")
    assert plain_capture["meta"]["rope_scaling"] is None
    recorded = scaled_capture["meta"]["rope_scaling"]
    assert recorded["factor"] == 4.0 and recorded["layers"] == GLOBAL_LAYERS
    # the first global layer sees the same input either way: v (no RoPE) and position 0 (no rotation)
    # agree, the keys further on do not
    first_plain, first_scaled = plain_capture["layers"][0], scaled_capture["layers"][0]
    assert torch.equal(first_plain["v"], first_scaled["v"])
    torch.testing.assert_close(first_plain["k"][:, :, 0], first_scaled["k"][:, :, 0], atol=1e-6, rtol=0)
    assert (first_plain["k"][:, :, 1:] - first_scaled["k"][:, :, 1:]).abs().max() > 1e-3


def test_a_scaled_capture_gets_its_own_default_file_name():
    assert default_capture_path("gemma-3-270m", 131072, None).name == "gemma-3-270m-128k.pt"
    assert default_capture_path("gemma-3-270m", 131072, {"type": "linear", "factor": 4.0}).name == \
        "gemma-3-270m-128k-linear4.pt"
