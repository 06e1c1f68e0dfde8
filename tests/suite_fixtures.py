"""Fixture data in the ``--data-dir`` layout, with each dataset's published schema: used by the CPU
tests, and on the GPU machine (which cannot download the real data) to show the path end to end.

    python -c "import sys; sys.path.insert(0, 'tests'); import suite_fixtures as f; f.write('/tmp/fx', scale=40)"
"""

from __future__ import annotations

import json
from pathlib import Path

from test_infinitebench import RECORDS as INFINITEBENCH_RECORDS
from test_longbench_v2 import record as longbench_record


def write(root: str | Path, *, longbench_questions: int = 6, infinitebench_records: int = 2, scale: int = 1) -> Path:
    """LongBench-v2's ``data.json`` and one InfiniteBench ``<split>.jsonl`` per task under ``root``.

    ``scale`` lengthens every context about that many times (LongBench-v2: 3000 words each), so that
    long budgets still truncate."""
    root = Path(root)
    (root / "longbench_v2").mkdir(parents=True, exist_ok=True)
    questions = [longbench_record(i, words=3000 * scale) for i in range(longbench_questions)]
    (root / "longbench_v2" / "data.json").write_text(json.dumps(questions))
    (root / "infinitebench").mkdir(exist_ok=True)
    for split, rec in INFINITEBENCH_RECORDS.items():
        rec = dict(rec, context=" ".join([rec["context"]] * scale)) if scale > 1 else rec
        lines = [json.dumps(dict(rec, id=i), ensure_ascii=False) for i in range(infinitebench_records)]
        (root / "infinitebench" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
