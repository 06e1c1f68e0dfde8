"""The harness's own pieces: methods registry, patching, run directories, task/ctx parsing."""

import json

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.methods import METHODS, create, parse_method_args, resolve_dense
from s2o_eval.run.rundir import RunDir, config_hash, summarize
from s2o_eval.formatting import ctx_label
from s2o_eval.run.suites import parse_ctx

from tiny_models import make_qkv, make_tiny_llama, tiny_gemma_config, tiny_llama_config


# -- methods ------------------------------------------------------------------------------------

def test_dense_methods_registered_and_dense_resolves_to_an_available_one():
    for name in ("fa2", "cudnn", "fa3", "sdpa", "eager"):
        assert name in METHODS
    resolved = resolve_dense()
    assert create(resolved).unavailable_reason() is None
    if not torch.cuda.is_available():
        assert resolved == "sdpa"
        assert "GPU" in create("fa2").unavailable_reason()


def test_unknown_method_and_bad_args_are_user_errors():
    with pytest.raises(UserError, match="unknown method 'nope'"):
        create("nope")
    with pytest.raises(UserError, match="has no parameter"):
        create("sdpa", {"tau": "0.1"})
    with pytest.raises(UserError, match="key=value"):
        parse_method_args("tau")
    assert parse_method_args("tau=0.01, segment=1024") == {"tau": "0.01", "segment": "1024"}


@pytest.mark.parametrize("hq,hkv,n,d", [(4, 4, 33, 64), (8, 2, 70, 128), (4, 1, 17, 256)])
def test_sdpa_and_eager_agree_on_random_inputs(hq, hkv, n, d):
    q, k, v = make_qkv(n, n, batch=2, q_heads=hq, kv_heads=hkv, head_dim=d)
    a = create("sdpa").prefill(q, k, v, scale=d ** -0.5)
    b = create("eager").prefill(q, k, v, scale=d ** -0.5)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- patching -----------------------------------------------------------------------------------

def _tiny_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(128, 512)).eval()


def test_patched_prefill_matches_and_decode_stays_dense():
    from s2o_eval.integration.patching import use_method

    model = _tiny_llama()
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
        recorder = use_method(model, create("eager"))
        assert model.config._attn_implementation == "s2o_eval_eager"
        torch.testing.assert_close(model(ids).logits, reference, atol=1e-4, rtol=1e-4)
        assert recorder.method_calls == 2 and recorder.fallback_calls == 0
        recorder.reset()
        model.generate(ids, max_new_tokens=4, do_sample=False)
    assert recorder.method_calls == 2          # the prompt, once per layer
    assert recorder.fallback_calls == 2 * 3    # three decode steps, each layer: dense


def _tiny_gemma():
    """Two sliding-window layers (window 8) and one full layer, as Gemma 3 mixes them."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    return Gemma3ForCausalLM(tiny_gemma_config()).eval()


def test_sliding_window_layers_keep_their_own_attention():
    from s2o_eval.integration.patching import use_method

    model = _tiny_gemma()
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(ids).logits
        recorder = use_method(model, create("eager"))
        out = model(ids).logits
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    assert recorder.method_calls == 1 and recorder.fallback_calls == 2


@pytest.mark.parametrize("prompt_len", [5, 30])  # shorter and longer than the sliding window
def test_static_cache_decode_gives_the_same_tokens_and_the_method_sees_the_prompt(prompt_len):
    """decode=static writes the prompt into a preallocated cache (what lets a GPU compile the decode):
    the method must still get exactly the prompt's keys, and greedy tokens must not change."""
    from transformers import StaticCache

    from s2o_eval.integration.patching import use_method

    model = _tiny_gemma()
    ids = torch.randint(1, 128, (1, prompt_len), generator=torch.Generator().manual_seed(3))  # 0 is the pad id
    with torch.no_grad():
        reference = model.generate(ids, max_new_tokens=12, do_sample=False)
        recorder = use_method(model, create("eager"))
        cache = StaticCache(config=model.config, max_cache_len=64)
        for _ in range(2):  # the second time reuses the emptied cache, as the harness does
            cache.reset()
            recorder.reset()
            out = model.generate(ids, max_new_tokens=12, do_sample=False, past_key_values=cache)
            assert out.tolist() == reference.tolist()
            assert recorder.method_calls == 1  # the full layer's prefill reached the method


def test_static_cache_decode_through_the_lm_class(tmp_path):
    """The harness's lm-eval model, decode=static vs dynamic: same continuation, prefill recorded."""
    from lm_eval.api.instance import Instance
    from transformers import AutoTokenizer, LlamaForCausalLM

    from s2o_eval.run.lm import S2OEvalLM

    path = make_tiny_llama(tmp_path / "m", max_positions=512)
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    request = Instance("generate_until", {}, ("The grass is green. The sky is", {"until": [], "max_gen_toks": 9}),
                       0, metadata=("t", 0, 1))
    outputs = {}
    for decode in ("dynamic", "static"):
        lm = S2OEvalLM(pretrained=model, tokenizer=tok, method=create("sdpa"), decode=decode, max_length=512,
                       device="cpu")
        outputs[decode] = lm.generate_until([request])
        measured = next(iter(lm.measurements.values()))
        assert measured.prompt_tokens > 5 and measured.prefill_ms > 0
        assert lm.recorder.method_calls == 2
    assert outputs["static"] == outputs["dynamic"]


def test_decode_mode_resolves_per_device():
    from s2o_eval.run.decoding import resolve_decode

    assert resolve_decode("auto", "cpu") == "dynamic"
    assert resolve_decode("auto", "cuda") == "static"
    assert resolve_decode("static", "cpu") == "static"
    with pytest.raises(UserError, match="--decode fast"):
        resolve_decode("fast", "cpu")


# -- run directories ----------------------------------------------------------------------------

def test_rundir_appends_resumes_and_ignores_a_torn_line(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_config({"model": "m", "method": "sdpa", "method_resolved": "sdpa"})
    run.append_sample({"task": "t", "ctx": 4096, "index": 0, "score": 100.0, "prefill_ms": 2.0})
    run.append_sample({"task": "t", "ctx": 4096, "index": 1, "score": 0.0, "prefill_ms": 4.0})
    with open(run.samples_path, "a") as fh:
        fh.write('{"task": "t", "ctx": 4096, "ind')  # killed mid-write
    assert run.done_keys() == {("t", 4096, 0), ("t", 4096, 1)}
    summary = run.write_summary()
    (row,) = summary["results"]
    assert row["n"] == 2 and row["score"] == 50.0 and row["prefill_ms_mean"] == 3.0
    assert row["prefill_ms_p50"] == 3.0 and row["method"] == "sdpa"
    assert json.loads(run.summary_path.read_text())["config"]["model"] == "m"


def test_summary_groups_and_percentiles():
    samples = [{"task": "lb", "ctx": 8192, "index": i, "score": s, "prefill_ms": float(i + 1),
                "group": g} for i, (s, g) in enumerate([(100, ["easy", "short"]), (0, ["hard", "short"]),
                                                        (100, ["easy", "long"]), (100, ["hard", "long"])])]
    rows = {r.get("group"): r for r in summarize(samples)}
    assert rows[None]["score"] == 75 and rows[None]["n"] == 4
    assert rows["easy"]["score"] == 100 and rows["hard"]["score"] == 50 and rows["short"]["n"] == 2
    assert rows[None]["prefill_ms_p90"] == pytest.approx(3.7)


def test_config_hash_follows_what_a_run_computes():
    base = {"model": "m", "method": "s2o", "method_args": {"tau": 0.01}, "limit": 1, "git_commit": "a"}
    assert config_hash(base) == config_hash(dict(base, git_commit="b"))  # same samples, newer code
    assert config_hash(base) != config_hash(dict(base, method_args={"tau": 0.001}))
    assert config_hash(base) != config_hash(dict(base, limit=5))  # another sample set


# -- parsing ------------------------------------------------------------------------------------

def test_parse_ctx():
    assert parse_ctx("4k, 32k,4096") == [4096, 32768]
    assert ctx_label(131072) == "128K"
    with pytest.raises(UserError):
        parse_ctx("lots")
