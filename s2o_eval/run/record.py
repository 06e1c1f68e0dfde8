"""One finished sample as ``samples.jsonl`` keeps it: lm-eval's logged sample plus the prefill measurement."""

from __future__ import annotations

from typing import Any

from .suites import TaskRef


def sample_record(ref: TaskRef, ctx: int, index: int, logged: dict, measurement) -> dict[str, Any]:
    doc = logged.get("doc", {})
    prediction = logged.get("filtered_resps", [""])[0]
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0] if prediction else ""
    golds = doc.get("outputs", doc.get("answer", logged.get("target")))
    groups = doc.get("groups")
    record = {
        "task": ref.lm_eval_name,
        "ctx": ctx,
        "index": index,
        "prompt_tokens": measurement.prompt_tokens if measurement else None,
        "prompt_sha": measurement.prompt_sha if measurement else None,
        "prediction": prediction,
        "golds": golds,
        "score": 100.0 * float(logged["score"]),
        "prefill_ms": measurement.prefill_ms if measurement else None,
        "density": measurement.density if measurement else None,
        "peak_mem_mb": measurement.peak_mem_mb if measurement else None,
    }
    if measurement is not None and measurement.chunk_ms is not None:  # a chunked prefill; whole runs keep their lines
        record["prefill_chunk_ms"] = measurement.chunk_ms
        record["chunk_density"] = measurement.chunk_density
    if groups:
        record["group"] = list(groups) if not isinstance(groups, str) else [groups]
    return record
