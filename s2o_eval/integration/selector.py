"""Our methods as transformers attention implementations, for your own code.

    import s2o_eval
    s2o_eval.register()                                   # every method, its defaults
    model = AutoModelForCausalLM.from_pretrained(model_id, attn_implementation="s2o")
    model.set_attn_implementation("pbs")                  # or switch a loaded model
    recorders = s2o_eval.register("s2o", tau=0.001)       # one method, configured

Each method is registered under ``s2o_eval_<name>`` and, where transformers neither owns the name nor
reads a meaning into it, under its bare name too: ``s2o``, ``pbs``, ``fa2``, ... but not ``sdpa`` or
``eager``, which stay transformers' own (ours are ``s2o_eval_sdpa``, ``s2o_eval_eager``). The functions
are the harness's (``patching``): prefill of full-causal layers goes to the method, a chunk after a
cached prefix too (its queries at an offset: ``generate`` with ``past_key_values``); decode steps,
sliding-window and soft-capped layers stay dense. A registration is global: the last ``register`` of a
name is what every model selecting that name runs.
"""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from ..errors import UserError
from ..methods import METHODS, create
from .patching import PrefillRecorder, implementation_name, make_attention_function, register_attention

# transformers' own implementations, taken before we register anything
TRANSFORMERS_NAMES = frozenset({"eager", *AttentionInterface._global_mapping, *AttentionMaskInterface._global_mapping})


def selector_names(method: str) -> list[str]:
    """The ``attn_implementation`` names ``method`` is registered under.

    The bare name is left out where transformers owns it, or where it would parse it as something else:
    a name containing "flash" gets FlashAttention's checks, one with "/" or ":" is a hub kernel to download.
    """
    bare_is_free = method not in TRANSFORMERS_NAMES and method.isidentifier() and "flash" not in method
    return [implementation_name(method), method] if bare_is_free else [implementation_name(method)]


def _refusing(method: str, reason: str):
    def attention(*args, **kwargs):
        raise UserError(f"attention method '{method}' cannot run here: {reason}")

    return attention


def register(method: str | None = None, /, **params) -> dict[str, PrefillRecorder]:
    """Make our methods selectable with ``attn_implementation=...`` in transformers.

    ``register()``: every method of ``s2o-eval methods``, with its defaults (one that cannot run on this
    machine is registered to raise, on its first call, why). ``register("s2o", tau=0.001)``: that one
    method with these parameters (their names and defaults: ``s2o-eval methods``); calling it again
    reconfigures it. Raises ``UserError`` for an unknown method or parameter, or a named method that
    cannot run here.

    Returns ``{method: recorder}``: each recorder counts the calls that reached the method
    (``method_calls``, once per layer and prompt or chunk), those that stayed dense (``fallback_calls``;
    ``offset_fallback_calls`` of them are chunks a method without offsets could not take) and, for
    sparse methods, ``stats.density``; ``recorder.reset()`` starts it again.
    """
    if method is None and params:
        raise UserError("parameters go with one method: register('s2o', tau=0.001)")
    recorders = {}
    for name in [method] if method is not None else METHODS:
        configured = create(name, params)
        reason = configured.unavailable_reason()
        if reason is not None and method is not None:
            raise UserError(f"attention method '{name}' cannot run here: {reason}")
        recorder = PrefillRecorder()
        attention = _refusing(name, reason) if reason else make_attention_function(configured, recorder)
        register_attention(selector_names(name), attention)
        recorders[name] = recorder
    return recorders
