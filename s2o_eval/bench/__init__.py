"""The operator bench (``s2o-eval bench``: workloads, timing, records, Pareto tables, markdown and plots)
and the attention captures it replays (``s2o-eval capture``).

    from s2o_eval.bench import BenchRequest, run_bench
    outcome = run_bench(BenchRequest(workloads=["llama8b-random"], ctx=[32768], methods=["fa2", "s2o"],
                                     sweeps={"s2o": ("tau", ["0.01", "0.003"])}))
"""

from .capture import CaptureRequest, capture_layers, capturing, read_capture, run_capture, write_capture
from s2o_kernels.reference import exact_reference, output_error
from .runner import BenchOutcome, BenchRequest, measure, run_bench
from .workloads import Workload, load_workload

__all__ = [
    "BenchOutcome",
    "BenchRequest",
    "CaptureRequest",
    "Workload",
    "capture_layers",
    "capturing",
    "exact_reference",
    "load_workload",
    "measure",
    "output_error",
    "read_capture",
    "run_bench",
    "run_capture",
    "write_capture",
]
