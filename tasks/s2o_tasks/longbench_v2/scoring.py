"""Answer extraction and accuracy, as in the official ``pred.py`` / ``result.py``."""

from __future__ import annotations

import re

_ANSWER_IN_PARENS = re.compile(r"The correct answer is \(([A-D])\)")
_ANSWER_BARE = re.compile(r"The correct answer is ([A-D])")


def extract_answer(response: str) -> str | None:
    """The chosen letter, or None; markdown bold (``*``) is removed first, as the official code does."""
    response = response.replace("*", "")
    match = _ANSWER_IN_PARENS.search(response) or _ANSWER_BARE.search(response)
    return match.group(1) if match else None


def score(response: str, answer: str) -> float:
    """1.0 when the extracted letter is the gold one; an answer that cannot be extracted scores 0."""
    return 1.0 if extract_answer(response.strip()) == answer else 0.0


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``score`` for every question, and ``score_<label>`` for its difficulty and length labels."""
    value = score(results[0], doc["answer"])
    out = {"score": value}
    for label in doc["groups"]:
        out[f"score_{label}"] = value
    return out
