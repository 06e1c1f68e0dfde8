"""Reports from stored runs: tables (pure functions over sample records), plots, markdown, and the
regression gate against a baseline of per-sample scores.

Nothing here touches a GPU; torch is imported only to ask the methods registry which methods are dense
(``runs.dense_methods``)."""

from .build import compute, write_report
from .content import ReportContent
from .regress import (BASELINE_SCHEMA, Verdict, baseline_from_run, check_comparable, evaluate, load_baseline,
                      save_baseline)
from .runs import LoadedRun, load_runs, resolve_run, restrict_to_common

__all__ = ["BASELINE_SCHEMA", "LoadedRun", "ReportContent", "Verdict", "baseline_from_run", "check_comparable",
           "compute", "evaluate", "load_baseline", "load_runs", "resolve_run", "restrict_to_common",
           "save_baseline", "write_report"]
