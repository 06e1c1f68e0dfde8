"""Whether prompts go through the model's chat template (``--chat-template``), and what that adds."""

from __future__ import annotations

from ..errors import UserError


def resolve_chat_template(choice: str, has_template: bool) -> bool:
    if choice not in ("auto", "on", "off"):
        raise UserError(f"--chat-template {choice}: use auto, on or off")
    if choice == "on" and not has_template:
        raise UserError("--chat-template on: this model's tokenizer has no chat template; use off")
    return has_template if choice == "auto" else choice == "on"


def template_overhead(tokenizer, use_template: bool) -> int:
    """Tokens the model sees besides the task's prompt text: BOS and the chat template's wrapping.

    Tasks leave room for them, so that prompt + overhead + generation budget fits ``--ctx``.
    """
    probe = "x"
    text = probe
    if use_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False,
                                             add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    # as lm-eval encodes: no second BOS when the rendered text already starts with one
    add_special = not (bos and text.startswith(bos))
    seen = len(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    return max(0, seen - len(tokenizer(probe, add_special_tokens=False)["input_ids"]))
