"""RULER's scores (``scripts/eval/synthetic/constants.py``), per sample in [0, 1].

The harness reads one metric per task, ``score``, and multiplies the mean by 100.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f]")


def clean_prediction(prediction: str) -> str:
    """RULER's post-processing: strip, control characters to newlines, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def _found(golds: list[str], prediction: str) -> list[bool]:
    if not golds:
        raise ValueError("a RULER sample needs at least one gold answer")
    lowered = prediction.lower()
    return [gold.lower() in lowered for gold in golds]


def string_match_all(prediction: str, golds: list[str]) -> float:
    """The fraction of gold strings found in the prediction, ignoring case (NIAH, vt, cwe, fwe)."""
    found = _found(golds, prediction)
    return sum(found) / len(found)


def string_match_part(prediction: str, golds: list[str]) -> float:
    """1.0 when any gold string is found in the prediction, ignoring case (QA), else 0.0."""
    return 1.0 if any(_found(golds, prediction)) else 0.0


def process_results_all(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook for the string_match_all tasks."""
    return {"score": string_match_all(clean_prediction(results[0]), list(doc["outputs"]))}


def process_results_part(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook for the QA tasks (string_match_part)."""
    return {"score": string_match_part(clean_prediction(results[0]), list(doc["outputs"]))}
