"""InfiniteBench (OpenBMB, 12 tasks of 100K+ tokens) under its official protocol.

Short names are the dataset's split names (after ``infinitebench:`` on the CLI); the lm-eval task
is ``"s2o_infinitebench_" + short name``.
"""

from __future__ import annotations

#: tokens to generate per task, from the official ``src/eval_utils.py``
GEN_TOKENS = {
    "passkey": 6,
    "number_string": 12,
    "kv_retrieval": 50,
    "longbook_sum_eng": 1200,
    "longbook_choice_eng": 40,
    "longbook_qa_eng": 40,
    "longbook_qa_chn": 40,
    "longdialogue_qa_eng": 40,
    "math_find": 3,
    "math_calc": 30000,
    "code_run": 5,
    "code_debug": 5,
}

#: run by default, and the members of the lm-eval group ``s2o_infinitebench``
TASKS = [
    "passkey", "number_string", "kv_retrieval",
    "longbook_sum_eng", "longbook_choice_eng", "longbook_qa_eng", "longbook_qa_chn",
    "longdialogue_qa_eng", "math_find", "code_run", "code_debug",
]
#: math_calc asks for 30000 generated tokens and nearly every model scores 0: left out of the group
OPTIONAL_TASKS = ["math_calc"]
GROUP = "s2o_infinitebench"


def task_name(short: str) -> str:
    """lm-eval's name for a split: ``passkey`` -> ``s2o_infinitebench_passkey``."""
    return short if short.startswith("s2o_") else "s2o_infinitebench_" + short


def data_status(task: str, data_dir: str | None) -> str | None:
    """None when ``<split>.jsonl`` is under ``data_dir``; else where it will come from or must go.

    Never touches the network: offline, only ``data_dir`` counts.
    """
    from .data import data_status as _status

    return _status(task.removeprefix("s2o_infinitebench_"), data_dir)
