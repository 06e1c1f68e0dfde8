"""What a report shows, as data: computed by ``build``, rendered by ``markdown`` and the CLI's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .runs import LoadedRun
from .sweep import Sweep


@dataclass
class ReportContent:
    """Everything a report shows, as data (the markdown renderer reads only this)."""

    title: str
    runs: list[LoadedRun]                      # restricted to the common samples
    warnings: list[str]
    lengths: list[int]
    cells: list[dict[str, Any]]                # tables.score_cells
    suites: dict[str, dict[str, Any]]          # label -> tables.suite_table
    averages: list[dict[str, Any]]             # tables.suite_averages
    prefill: list[dict[str, Any]]              # tables.prefill_by_ctx
    density: list[dict[str, Any]]              # tables.density_by_ctx
    groups: dict[str, dict]                    # label -> tables.group_results
    environment: list[dict[str, Any]]          # tables.environment_rows
    chunks: list[dict[str, Any]] = field(default_factory=list)  # tables.chunk_rows (chunked prefill)
    sweep: Sweep | None = None                 # runs of one sparse method varying one knob
    plots: dict[str, str] = field(default_factory=dict)      # key -> PNG file name
    summaries: dict[str, str] = field(default_factory=dict)  # label -> copied summary file name

    @property
    def baseline(self) -> str:
        return self.runs[0].label
