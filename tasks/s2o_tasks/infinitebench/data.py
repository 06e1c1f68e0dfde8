"""InfiniteBench's published files, ``<split>.jsonl``: from ``--data-dir`` or the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

from s2o_tasks.common import DataUnavailable, data_path, offline
from s2o_tasks.reading import AnyOf, InputFile

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


#: what the prompts and scorers read of a record (``reading.shape_problem``); golds may be any JSON
RECORD_SHAPE = {"context": str, "input?": str, "answer": object, "options?": AnyOf((None, list))}


def _published_file(path: Path) -> InputFile:
    return InputFile(path, f"replace the file with the published one from https://huggingface.co/datasets/{HUB_REPO}")


def count_records(path: Path) -> int:
    """The file's non-empty lines, none of them parsed (the files reach gigabytes)."""
    return sum(1 for _, line in _published_file(path).lines() if line.strip())


def read_records(path: Path, indices: list[int]) -> list[dict]:
    """The records at ``indices`` (positions among the file's non-empty lines), parsing only those.

    JSON types are kept as published (some golds are numbers), which the official scorers rely on.
    """
    wanted = set(indices)
    found: dict[int, dict] = {}
    position = 0
    data = _published_file(path)
    for line_number, line in data.lines():
        if not line.strip():
            continue
        if position in wanted:
            found[position] = data.parse_line(line_number, line, RECORD_SHAPE, "an InfiniteBench record")
        position += 1
    return [found[i] for i in indices]
