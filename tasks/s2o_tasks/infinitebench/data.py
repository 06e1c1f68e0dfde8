"""InfiniteBench's published files, ``<split>.jsonl``: from ``--data-dir`` or the Hugging Face hub."""

from __future__ import annotations

import json
from pathlib import Path

from s2o_tasks.common import DataUnavailable, data_path, offline

HUB_REPO = "xinrongzhang2022/InfiniteBench"
SPLITS = ("passkey", "number_string", "kv_retrieval", "longbook_sum_eng", "longbook_choice_eng",
          "longbook_qa_eng", "longbook_qa_chn", "longdialogue_qa_eng", "math_find", "math_calc",
          "code_run", "code_debug")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown InfiniteBench split '{split}': use one of {', '.join(SPLITS)}")


def missing_hint(split: str, data_dir: str | None) -> str:
    where = Path(data_dir, "infinitebench", f"{split}.jsonl") if data_dir else f"<data-dir>/infinitebench/{split}.jsonl"
    return (f"InfiniteBench {split} data missing: download {split}.jsonl from "
            f"https://huggingface.co/datasets/{HUB_REPO} and put it at {where}")


def data_status(split: str, data_dir: str | None) -> str | None:
    _check_split(split)
    if data_path(data_dir, "infinitebench", f"{split}.jsonl"):
        return None
    if offline():
        return missing_hint(split, data_dir)
    return f"from the hub ({HUB_REPO}, {split}.jsonl)"


def locate(split: str, data_dir: str | None) -> Path:
    """The path of ``<split>.jsonl``: under ``data_dir`` if there, else downloaded (cached) from the hub.

    Only that one file is fetched (the twelve together are about 2.5 GB).
    """
    _check_split(split)
    local = data_path(data_dir, "infinitebench", f"{split}.jsonl")
    if local:
        return local
    if offline():
        raise DataUnavailable(missing_hint(split, data_dir))
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(HUB_REPO, f"{split}.jsonl", repo_type="dataset"))
    except Exception:  # unreachable or gated: say what to do instead
        raise DataUnavailable(missing_hint(split, data_dir) + " (the hub could not be reached)") from None


def count_records(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def read_records(path: Path, indices: list[int]) -> list[dict]:
    """The records at ``indices`` (positions among the file's non-empty lines), parsing only those.

    JSON types are kept as published (some golds are numbers), which the official scorers rely on.
    """
    wanted = set(indices)
    found: dict[int, dict] = {}
    position = 0
    with open(path, encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if position in wanted:
                found[position] = _parse_record(path, line_number, line)
            position += 1
    return [found[i] for i in indices]


def _parse_record(path: Path, line_number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataUnavailable(f"{path} line {line_number} is not valid JSON ({err.msg}): replace the file with the "
                              f"published one from https://huggingface.co/datasets/{HUB_REPO}") from None
    if not isinstance(record, dict):
        raise DataUnavailable(f"{path} line {line_number} is not a JSON object: replace the file with the "
                              f"published one from https://huggingface.co/datasets/{HUB_REPO}")
    return record
