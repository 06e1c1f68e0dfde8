"""Options shared by several commands, defined once so their names and help agree everywhere."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ModelOpt = Annotated[str, typer.Option("--model", help="gemma-3-270m (embedded default), a hub id, a local dir or a .gguf file")]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="attention method (see `s2o-eval methods`), or several: fa2,fa3,s2o (a run each); dense = fastest dense here")]
MethodArgsOpt = Annotated[Optional[str], typer.Option("--method-args", help="method hyper-parameters, e.g. tau=0.01,segment=1024")]
CtxOpt = Annotated[str, typer.Option("--ctx", help="total windows (prompt + generation), e.g. 4k,32k (k = 1024)")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="local copies of the datasets (layout: README)")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:1 or cpu (default: cuda if present)")]
