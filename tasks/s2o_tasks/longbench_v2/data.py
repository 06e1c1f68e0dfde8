"""LongBench-v2's published file, ``data.json``: from ``--data-dir`` or the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

from s2o_tasks.common import DataUnavailable, data_path, offline
from s2o_tasks.reading import InputFile

#: the dataset moved from THUDM to zai-org; the hub redirects, but ask the new home first
HUB_REPOS = ("zai-org/LongBench-v2", "THUDM/LongBench-v2")
HUB_FILE = "data.json"
LOCAL_PARTS = ("longbench_v2", "data.json")
FIELDS = ("_id", "domain", "sub_domain", "difficulty", "length", "question",
          "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")


def missing_hint(data_dir: str | None) -> str:
    where = Path(data_dir, *LOCAL_PARTS) if data_dir else "<data-dir>/" + "/".join(LOCAL_PARTS)
    return (f"LongBench-v2 data missing: download {HUB_FILE} from "
            f"https://huggingface.co/datasets/{HUB_REPOS[0]} and put it at {where}")


def data_status(task: str, data_dir: str | None) -> str | None:
    """None when ``data.json`` (which every task reads) is under ``data_dir``; else where the data will come
    from or must go. Never touches the network: offline, only ``data_dir`` counts."""
    if data_path(data_dir, *LOCAL_PARTS):
        return None
    if offline():
        return missing_hint(data_dir)
    return f"from the hub ({HUB_REPOS[0]}, {HUB_FILE})"


def locate(data_dir: str | None) -> Path:
    """The path of ``data.json``: under ``data_dir`` if there, else downloaded (cached) from the hub."""
    local = data_path(data_dir, *LOCAL_PARTS)
    if local:
        return local
    if offline():
        raise DataUnavailable(missing_hint(data_dir))
    from huggingface_hub import hf_hub_download

    for repo in HUB_REPOS:
        try:
            return Path(hf_hub_download(repo, HUB_FILE, repo_type="dataset"))
        except Exception:  # unreachable, renamed or gated: try the next home, then say what to do
            continue
    raise DataUnavailable(missing_hint(data_dir) + " (the hub could not be reached)")


def read_records(path: Path) -> list[dict]:
    """All questions of ``data.json``, in the file's order, each with every field a string."""
    source = InputFile(path, f"replace it with the published file from https://huggingface.co/datasets/{HUB_REPOS[0]}")
    return source.read_json([dict.fromkeys(FIELDS, str)], "LongBench-v2's data.json", items="record")
