"""The official prompts (``prompts/*.txt``, verbatim from THUDM/LongBench ``prompts/``), split around
the part that middle truncation may cut."""

from __future__ import annotations

import functools
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
TEMPLATE_FILES = {"0shot": "0shot.txt", "cot": "0shot_cot.txt", "cot_ans": "0shot_cot_ans.txt"}


@functools.lru_cache(maxsize=None)
def template(variant: str) -> str:
    if variant not in TEMPLATE_FILES:
        raise ValueError(f"unknown LongBench-v2 prompt variant '{variant}': use one of {', '.join(TEMPLATE_FILES)}")
    return (PROMPT_DIR / TEMPLATE_FILES[variant]).read_text(encoding="utf-8")


def prompt_parts(record: dict, variant: str, cot: str | None = None) -> tuple[str, str, str]:
    """``(instruction, body, question)`` whose concatenation is the official prompt.

    The body is the document (``$DOC$``), or for the answer stage the chain of thought (``$COT$``);
    the official scripts strip the document, the question and each choice.
    """
    marker = "$COT$" if variant == "cot_ans" else "$DOC$"
    head, tail = template(variant).split(marker)
    fields = {
        "$Q$": record["question"].strip(),
        "$C_A$": record["choice_A"].strip(),
        "$C_B$": record["choice_B"].strip(),
        "$C_C$": record["choice_C"].strip(),
        "$C_D$": record["choice_D"].strip(),
    }
    for key, value in fields.items():
        head, tail = head.replace(key, value), tail.replace(key, value)
    if variant == "cot_ans":
        if cot is None:
            raise ValueError("the answer stage needs the chain of thought of the first stage")
        return head, cot.strip(), tail
    return head, record["context"].strip(), tail
