"""Our methods through transformers' own selector (``s2o_eval.register``): ``from_pretrained(...,
attn_implementation=...)`` and ``set_attn_implementation``; prefill reaches the method, decode stays
dense, and transformers' own names keep transformers' functions."""

import subprocess
import sys

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaForCausalLM
from transformers.integrations.flash_attention import flash_attention_forward
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

import s2o_eval
from s2o_eval.errors import UserError
from s2o_eval.integration.selector import selector_names
from s2o_eval.methods import METHODS, create

from tiny_models import tiny_llama_config

PROMPT = torch.randint(3, 300, (1, 96), generator=torch.Generator().manual_seed(0))
NEW_TOKENS = 4
LAYERS = 2  # the tiny Llama's


def _generate(model):
    with torch.no_grad():
        return model.generate(PROMPT, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(400, 4096)).eval()


def test_from_pretrained_runs_the_method_at_prefill_and_dense_decode(tiny_model):
    recorder = s2o_eval.register()["s2o"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="s2o").eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    assert model.config._attn_implementation == "s2o"
    with torch.no_grad():
        # 96 tokens sit inside S2O's sinks and first segment: exact attention, so SDPA's logits
        torch.testing.assert_close(model(PROMPT).logits, reference(PROMPT).logits, atol=1e-4, rtol=1e-4)
    assert (recorder.method_calls, recorder.fallback_calls) == (LAYERS, 0)
    recorder.reset()
    assert _generate(model).tolist() == _generate(reference).tolist()
    assert recorder.method_calls == LAYERS                         # the prompt, once per layer
    assert recorder.fallback_calls == LAYERS * (NEW_TOKENS - 1)    # each decode step, dense
    assert recorder.stats.density == 1.0


def test_set_attn_implementation_switches_a_loaded_model_to_a_configured_method(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()  # transformers' default attention
    recorder = s2o_eval.register("pbs", threshold=0.5, block=16, segment=32)["pbs"]
    model.set_attn_implementation("pbs")
    assert model.config._attn_implementation == "pbs"
    assert _generate(model).shape == (1, PROMPT.shape[1] + NEW_TOKENS)
    assert (recorder.method_calls, recorder.fallback_calls) == (LAYERS, LAYERS * (NEW_TOKENS - 1))
    # the parameters given are the ones that ran: PBS's default block (128) would cover 96 tokens whole
    assert recorder.stats.density < 0.9
    again = s2o_eval.register("pbs")["pbs"]  # registering again reconfigures the name for every model
    _generate(model)
    assert again.method_calls == LAYERS and again.stats.density == 1.0 and recorder.method_calls == LAYERS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_selectable_where_it_runs_and_says_why_where_it_does_not(name, tiny_llama):
    reason = create(name).unavailable_reason()
    if reason is not None:
        with pytest.raises(UserError, match="cannot run here"):
            s2o_eval.register(name)
        s2o_eval.register()  # all of them: this one then refuses on its first call, saying why
        tiny_llama.set_attn_implementation(selector_names(name)[-1])
        with pytest.raises(UserError, match="cannot run here"), torch.no_grad():
            tiny_llama(PROMPT)
        return
    recorder = s2o_eval.register(name)[name]
    for selected in selector_names(name):
        recorder.reset()
        tiny_llama.set_attn_implementation(selected)
        with torch.no_grad():
            tiny_llama(PROMPT)
        assert recorder.method_calls == LAYERS, selected


def test_transformers_own_names_keep_transformers_functions():
    s2o_eval.register()
    assert selector_names("sdpa") == ["s2o_eval_sdpa"] and selector_names("eager") == ["s2o_eval_eager"]
    assert selector_names("s2o") == ["s2o_eval_s2o", "s2o"] and selector_names("pbs") == ["s2o_eval_pbs", "pbs"]
    assert AttentionInterface._global_mapping["sdpa"] is sdpa_attention_forward
    assert AttentionInterface._global_mapping["flash_attention_2"] is flash_attention_forward
    assert "eager" not in AttentionInterface._global_mapping  # transformers' eager is each model's own code
    assert AttentionMaskInterface._global_mapping["sdpa"] is sdpa_mask
    assert AttentionMaskInterface._global_mapping["eager"] is eager_mask


def test_wrong_names_and_parameters_are_user_errors():
    with pytest.raises(UserError, match="unknown method 'nope'"):
        s2o_eval.register("nope")
    with pytest.raises(UserError, match="has no parameter 'nope'"):
        s2o_eval.register("s2o", nope=1)
    with pytest.raises(UserError, match="not a valid float"):
        s2o_eval.register("s2o", tau="much")
    with pytest.raises(UserError, match="one method"):
        s2o_eval.register(tau=0.001)


def test_import_s2o_eval_loads_neither_torch_nor_transformers():
    code = "import sys, s2o_eval; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
