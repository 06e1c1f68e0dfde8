"""LongBench-v2 (THUDM, 503 long-context multiple-choice questions) under its official protocol.

Short names (after ``longbench-v2:`` on the CLI); the lm-eval task is ``"s2o_" + short name``.
"""

from __future__ import annotations

#: run by default: the official 0-shot generation protocol
TASKS = ["longbench_v2"]
#: the chain-of-thought protocol, two stages: the CoT, then the answer prompt fed with that CoT
OPTIONAL_TASKS = ["longbench_v2_cot", "longbench_v2_cot_ans"]


def task_name(short: str) -> str:
    """lm-eval's name for a short name: ``longbench_v2`` -> ``s2o_longbench_v2``."""
    return short if short.startswith("s2o_") else "s2o_" + short


def data_status(task: str, data_dir: str | None) -> str | None:
    """None when ``data.json`` is under ``data_dir``; else where the data will come from or must go.

    Never touches the network: offline, only ``data_dir`` counts.
    """
    from .data import data_status as _status

    return _status(data_dir)
