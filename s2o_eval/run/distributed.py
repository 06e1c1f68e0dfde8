"""Data parallelism over processes: one process per GPU, samples shared out between them.

Processes are started by ``torch.distributed.run`` (torchrun) or ``accelerate launch``, which set
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``s2o-eval run --gpus N`` starts them itself. Each process
evaluates its own share of the samples on its own device; they meet only at barriers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ExitCode, UserError
from . import interruption


@dataclass(frozen=True)
class Place:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> int | None:
        """The samples shard this process appends to; None when it runs alone (the main file)."""
        return self.rank if self.world_size > 1 else None


def place_from_env() -> Place:
    """Rank, world size and local rank as the launcher set them (one process when none did)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Place(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def launched() -> bool:
    """True inside a process started by torchrun / accelerate launch."""
    return "WORLD_SIZE" in os.environ


def device_for(place: Place, requested: str | None) -> str:
    """The device of this process: ``cuda:<local_rank>`` on GPUs, else what was asked (cpu)."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if place.world_size > 1 and requested == "cuda":
        return f"cuda:{place.local_rank}"
    return requested


def init(place: Place, device: str) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPU); nothing to do for one process."""
    if place.world_size <= 1:
        return
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        # ranks wait at the end of a run for the slowest one, which may take hours: no short timeout
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(days=2))


def barrier(place: Place) -> None:
    """Wait until every process got here."""
    if place.world_size <= 1:
        return
    import torch.distributed as dist

    dist.barrier()


def finish(place: Place) -> None:
    if place.world_size <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def relaunch_args(argv: list[str]) -> list[str]:
    """``argv`` without its ``--gpus N`` / ``--gpus=N``: what each launched process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            out.append(arg)
    return out


def relaunch(n: int, device: str | None) -> int:
    """Run this same command again as ``n`` processes through torchrun; returns their exit code (the
    main process's, else the first other one's): torchrun itself ends with 1 whatever theirs were."""
    if device in (None, "cuda") and torch.cuda.is_available() and n > torch.cuda.device_count():
        raise UserError(f"--gpus {n}: this machine has {torch.cuda.device_count()} GPU(s); lower --gpus")
    if device is None and not torch.cuda.is_available():
        raise UserError(f"--gpus {n}: no GPU here; pass --device cpu to run {n} CPU processes (tests)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "s2o_eval", *relaunch_args(sys.argv[1:])]
    stopped = None
    with tempfile.TemporaryDirectory() as folder:
        with subprocess.Popen(command, env=dict(os.environ, **{_EXIT_CODE_DIR: folder})) as launcher:
            try:
                status = launcher.wait()
            except KeyboardInterrupt as stop:  # then each process stops as it would alone, keeping its samples
                stopped = interruption.signal_of(stop)
                # a Ctrl-C in the terminal reached torchrun too; a SIGTERM (docker stop, kill) only this process
                if stopped != signal.SIGINT:
                    launcher.send_signal(stopped)
                status = launcher.wait()
        codes = [int(path.read_text()) for path in sorted(Path(folder).glob("rank*"), key=_rank_of)]
    failed = [code for code in codes if code != 0]
    if failed:
        return failed[0]
    if stopped is not None:
        return 128 + stopped
    return status if status == 0 else ExitCode.INTERNAL  # a process died without a word (killed, crashed)


def share(plans: list, place: Place) -> list:
    """This process's share of the samples to do: round robin over the todo list in its fixed order
    (ctx, then task, then document), which every process built alike."""
    mine = []
    n = 0
    for ctx, ref, task_dict, todo in plans:
        own = []
        for item in todo:
            if n % place.world_size == place.rank:
                own.append(item)
            n += 1
        if own:
            mine.append((ctx, ref, task_dict, own))
    return mine


_EXIT_CODE_DIR = "S2O_EVAL_EXIT_CODE_DIR"


def _rank_of(path: Path) -> int:
    return int(path.name.removeprefix("rank"))


def record_exit_code(code: int) -> None:
    """In a process that ``relaunch`` started, leave its exit code where the launcher reads it."""
    folder = os.environ.get(_EXIT_CODE_DIR)
    if folder and launched():
        Path(folder, f"rank{place_from_env().rank}").write_text(str(int(code)))
