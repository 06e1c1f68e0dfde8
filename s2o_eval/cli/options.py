"""Options shared by several commands, defined once so their names and help agree everywhere.

Where lm-evaluation-harness spells an option differently (``--tasks``, ``--output_path``), its spelling
is accepted too; ``run`` and ``bench`` accept the same names (``--method``/``--methods``,
``--out``/``--out-dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError

METHOD_NAMES = ("--method", "--methods", "-m")
OUT_NAMES = ("--out", "--out-dir", "--output_path", "-o")
TASK_NAMES = ("--task", "--tasks", "-t")


def _existing_data_dir(value: Optional[str]) -> Optional[str]:
    # checked for every task: a mistyped folder would otherwise pass silently for the synthetic ones
    if value is not None and not Path(value).is_dir():
        raise UserError(f"--data-dir {value} is not a directory: pass the folder holding ruler/, longbench_v2/ "
                        "or infinitebench/ (layout: README), or leave --data-dir out")
    return value


ModelOpt = Annotated[str, typer.Option("--model", help="gemma-3-270m (embedded default), a hub id, a local dir or a .gguf file")]
MethodOpt = Annotated[str, typer.Option(*METHOD_NAMES, help="attention method (see `s2o-eval methods`), or several: fa2,fa3,s2o (a run each); dense = fastest dense here")]
MethodArgsOpt = Annotated[Optional[str], typer.Option("--method-args", help="method hyper-parameters, e.g. tau=0.01,segment=1024")]
CtxOpt = Annotated[str, typer.Option("--ctx", help="total windows (prompt + generation), e.g. 4k,32k (k = 1024)")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="local copies of the datasets (layout: README)",
                                                   callback=_existing_data_dir)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:1 or cpu (default: cuda if present)")]
# compare, report and regress
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Where method names are looked up.")]
ReportOutOpt = Annotated[Optional[Path], typer.Option("--out", help="Report directory (default: reports/<name>).")]
ReportNameOpt = Annotated[Optional[str], typer.Option("--name", help="Report name (default: derived from the runs).")]
RopeScalingOpt = Annotated[Optional[str], typer.Option(
    "--rope-scaling", help="linear:F: position interpolation on the global (full-attention) layers' RoPE, e.g. "
                           "linear:4; sliding-window layers keep theirs (recorded)")]
